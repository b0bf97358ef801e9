"""What the kernel-check scripts share: running their `inside()` in a
private network namespace, and reading iptables' per-rule packet counters.

The namespace is named kpsim-nf-test-<pid>; nothing is touched in the
calling namespace, and the namespace is deleted afterwards, also when the
check fails.
"""
import os
import subprocess
import sys


def main(script, inside):
    if len(sys.argv) > 1 and sys.argv[1] == "--inside":
        inside()
        sys.exit(0)
    ns = f"kpsim-nf-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(script), "--inside"])
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
    sys.exit(r.returncode)


def comment_counts(*list_args):
    """Packets counted by each commented rule of `iptables -L ... -v -x -n`
    (extra arguments select the table and chain, `-Z` zeroes after), in rule
    order: a list of (comment, packets)."""
    out = subprocess.run(["iptables", *list_args, "-v", "-x", "-n"], check=True,
                         capture_output=True, text=True).stdout
    counts = []
    for line in out.splitlines()[2:]:
        fields = line.split()
        if fields and fields[0].isdigit() and "/*" in line:
            counts.append((line.split("/*")[1].split("*/")[0].strip(), int(fields[0])))
    return counts
