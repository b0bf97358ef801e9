#!/usr/bin/env python3
"""Run the ipset kernel check inside a private network namespace.

Loads sim/tests/data/kernel/ipset-sets.txt with `ipset restore` and
ipset-rules.txt with `iptables-restore`, sends each packet of
ipset-packets.txt through the raw table's OUTPUT chain (a raw IP socket
into a dummy device) and prints, per packet, the comments of the rules that
counted it. The simulator's test `kernel_check_ipset` prints the same from
the same files; its expected text is this script's output on a real kernel.

Must run as root; it creates the namespace kpsim-nf-test-<pid>, touches
nothing in the calling namespace and deletes the namespace at the end.
Usage: sudo scripts/kernel-check-ipset.py > out.txt
"""
import os
import socket
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernel_check  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sim", "tests", "data", "kernel")
PROTO = {"icmp": 1, "tcp": 6, "udp": 17, "gre": 47, "sctp": 132}


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def packet(proto, src, sport, dst, dport):
    p = PROTO[proto]
    if proto == "tcp":
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    elif proto == "udp":
        l4 = struct.pack("!HHHH", sport, dport, 8, 0)
    elif proto == "sctp":
        l4 = struct.pack("!HHII", sport, dport, 0, 0) + struct.pack("!BBHIIHHI", 1, 0, 20, 1, 65535, 1, 1, 1)
    elif proto == "icmp":
        body = struct.pack("!BBHHH", sport, dport, 0, 7, 1)
        l4 = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    else:
        l4 = struct.pack("!HH", 0, 0x0800)
    total = 20 + len(l4)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0x4000, 64, p, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + l4, dst


def counted():
    return [c for c, n in kernel_check.comment_counts("-t", "raw", "-L", "OUTPUT", "-Z") if n > 0]


def inside():
    sh = lambda *a: subprocess.run(a, check=True)
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
    sh("ip", "link", "set", "d0", "up")
    sh("ip", "addr", "add", "192.0.2.1/24", "dev", "d0")
    sh("ip", "route", "add", "default", "dev", "d0")
    with open(os.path.join(DATA, "ipset-sets.txt")) as f:
        subprocess.run(["ipset", "restore"], stdin=f, check=True)
    with open(os.path.join(DATA, "ipset-rules.txt")) as f:
        subprocess.run(["iptables-restore"], stdin=f, check=True)
    counted()
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with open(os.path.join(DATA, "ipset-packets.txt")) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            name, proto, src, sport, dst, dport = line.split()
            pkt, to = packet(proto, src, int(sport), dst, int(dport))
            s.sendto(pkt, (to, 0))
            print(f"{name}: {' '.join(counted())}".rstrip())


if __name__ == "__main__":
    kernel_check.main(__file__, inside)
