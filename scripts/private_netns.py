"""Run a kernel-check script's `inside()` in a private network namespace.

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
