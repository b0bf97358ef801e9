#!/usr/bin/env python3
"""Kernel check of RELATED ICMP errors and their NAT translation.

In a private network namespace (kpsim-nf-test-<pid>, deleted at the end):
a UDP socket connected to the service address 10.96.0.10:53, DNATed in
OUTPUT to a local port nobody listens on, gets ECONNREFUSED only if the
kernel's port unreachable was un-DNATed inside (its quote must name the
socket's own addresses); INPUT counters show the error arrived RELATED
and from the service address. A forged error quoting an unknown flow
counts as INVALID. Prints one line per fact; the simulator's tests
icmp_error_* assert the same behaviour.
Usage: sudo scripts/kernel-check-related.py
"""
import os
import socket
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernel_check  # noqa: E402


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip(proto, src, dst, payload):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:] + payload


def counters():
    return dict(kernel_check.comment_counts("-L", "INPUT"))


def inside():
    sh = lambda *a: subprocess.run(a, check=True)
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
    sh("ip", "link", "set", "d0", "up")
    sh("ip", "link", "set", "d1", "up")
    sh("ip", "addr", "add", "192.168.77.1/24", "dev", "d0")
    sh("ip", "route", "add", "10.96.0.0/16", "dev", "d0")
    rules = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A OUTPUT -d 10.96.0.10/32 -p udp -m udp --dport 53 -j DNAT --to-destination 192.168.77.1:5353
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p icmp -m conntrack --ctstate RELATED -s 10.96.0.10/32 -m comment --comment related-from-service
-A INPUT -p icmp -m conntrack --ctstate RELATED -m comment --comment related
-A INPUT -p icmp -m conntrack --ctstate INVALID -m comment --comment invalid
-A INPUT -p icmp -m conntrack --ctstate NEW -m comment --comment new
COMMIT
"""
    subprocess.run(["iptables-restore"], input=rules, text=True, check=True)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.connect(("10.96.0.10", 53))
    s.send(b"q")
    try:
        s.recv(100)
        print("connected socket: got data?!")
    except ConnectionRefusedError:
        print("connected socket: ECONNREFUSED (quote un-DNATed to 10.96.0.10:53)")
    except socket.timeout:
        print("connected socket: timeout (error not delivered to the socket)")
    print("after port unreachable:", counters())
    # A forged port unreachable quoting a flow conntrack never saw.
    quoted = ip(17, "192.168.77.1", "192.168.77.9", struct.pack("!HHHH", 41000, 9999, 8, 0))
    body = struct.pack("!BBHI", 3, 3, 0, 0) + quoted[:28]
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    r.sendto(ip(1, "192.168.77.9", "192.168.77.1", body), ("192.168.77.1", 0))
    print("after forged error:", counters())


if __name__ == "__main__":
    kernel_check.main(__file__, inside)
