"""Many live blocks, then idle: the load for timing snapshots and reports.

After 'go' it builds N small objects (object(), one 16-byte block each)
that stay alive, from a handful of lines, reached through a binary tree of
calls DEPTH deep whose branches are taken on separate lines, so that with
enough frames (-n 25) there are 2**DEPTH distinct tracebacks. Then it
prints 'elapsed <seconds>' (common.run) and sleeps until stdin closes (or a line 'free'
arrives: it drops everything, prints 'freed', and sleeps again), so that
the tracer reports on a target that holds the blocks and does nothing else.

usage: live.py [N] [DEPTH]"""
import sys

from common import run

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
DEPTH = int(sys.argv[2]) if len(sys.argv) > 2 else 12
KEEP = []
PER_LEAF = max(1, N // (1 << DEPTH))


def leaf():
    KEEP.append([object() for _ in range(PER_LEAF)])


def descend(path, depth):
    if depth == 0:
        leaf()
    elif path & 1:
        descend(path >> 1, depth - 1)   # branch one
    else:
        descend(path >> 1, depth - 1)   # branch zero


def work():
    for path in range(1 << DEPTH):
        descend(path, DEPTH)


def idle():
    run(work)
    for line in sys.stdin:
        if line.strip() == "free":
            KEEP.clear()
            print("freed", flush=True)


idle()
