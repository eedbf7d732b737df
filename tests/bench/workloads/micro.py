"""Allocation-heavy micro-loop: small lists, strings, dicts, bytes, made and
dropped at once (about 5 allocations and frees per iteration)."""
import sys

from common import run

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300000


def work():
    keep = None
    for i in range(N):
        a = [i, i + 1]
        s = str(i)
        d = {"k": a}
        b = bytes(i & 63)
        keep = (s, d, b)
    return keep


run(work)
