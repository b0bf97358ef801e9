#!/usr/bin/env python3
"""Kernel check of how nftables base chains and iptables tables share a
hook, and where NAT chains run.

In a private network namespace (kpsim-nf-test-<pid>, deleted at the end),
a UDP datagram to 10.96.0.10:9 leaves through OUTPUT, where:
* iptables' nat table (priority -100) DNATs it to 127.0.0.3;
* an nftables nat chain declared at priority -50 would DNAT it to
  127.0.0.2, but NAT chains all run in the NAT core's one entry (-100),
  in their own priority order, until one binds: it never gets to;
* nftables filter chains at -75 and -40, iptables' mangle (-150) and
  filter (0) count the packet and whether conntrack already holds a DNAT
  binding (`ct status dnat`): every chain after -100 sees it.
Prints one line per fact; the simulator's test
nat_chains_run_in_the_nat_core_whatever_their_priority asserts the same.
Usage: sudo scripts/kernel-check-nft-hooks.py
"""
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernel_check  # noqa: E402

IPTABLES = """*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A OUTPUT -p udp -m udp --dport 9 -m conntrack --ctstate DNAT -m comment --comment mangle-150-dnat
-A OUTPUT -p udp -m udp --dport 9 -m comment --comment mangle-150
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A OUTPUT -d 10.96.0.10/32 -p udp -m udp --dport 9 -j DNAT --to-destination 127.0.0.3
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -p udp -m udp --dport 9 -m conntrack --ctstate DNAT -m comment --comment filter0-dnat
-A OUTPUT -p udp -m udp --dport 9 -d 127.0.0.3/32 -m comment --comment filter0-to-127.0.0.3
COMMIT
"""

NFT = """table ip t {
\tchain nat-50 {
\t\ttype nat hook output priority -50; policy accept;
\t\tudp dport 9 counter packets 0 bytes 0 dnat to 127.0.0.2
\t}

\tchain filter-75 {
\t\ttype filter hook output priority -75; policy accept;
\t\tudp dport 9 ct status dnat counter packets 0 bytes 0
\t}

\tchain filter-40 {
\t\ttype filter hook output priority -40; policy accept;
\t\tudp dport 9 ct status dnat counter packets 0 bytes 0
\t}
}
"""


def nft_counts():
    out = subprocess.run(["nft", "list", "table", "ip", "t"], check=True,
                         capture_output=True, text=True).stdout
    counts = {}
    chain = None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("chain "):
            chain = line.split()[1]
        elif "counter packets" in line:
            counts[chain] = int(line.split("counter packets")[1].split()[0])
    return counts


def inside():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "route", "add", "10.96.0.0/16", "dev", "lo"], check=True)
    subprocess.run(["iptables-restore"], input=IPTABLES, text=True, check=True)
    subprocess.run(["nft", "-f", "-"], input=NFT, text=True, check=True)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", ("10.96.0.10", 9))
    nft = nft_counts()
    ipt = dict(kernel_check.comment_counts("-t", "mangle", "-L", "OUTPUT"))
    ipt.update(dict(kernel_check.comment_counts("-L", "OUTPUT")))
    print("iptables mangle (-150) sees a DNAT binding:", ipt["mangle-150-dnat"] == 1)
    print("nft nat chain at -50 ran:", nft["nat-50"] == 1)
    print("nft filter at -75 sees a DNAT binding:", nft["filter-75"] == 1)
    print("nft filter at -40 sees a DNAT binding:", nft["filter-40"] == 1)
    print("iptables filter (0) sees a DNAT binding:", ipt["filter0-dnat"] == 1)
    print("destination after NAT is 127.0.0.3 (iptables nat):", ipt["filter0-to-127.0.0.3"] == 1)


if __name__ == "__main__":
    kernel_check.main(__file__, inside)
