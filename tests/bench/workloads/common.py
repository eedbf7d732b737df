"""The benchmark protocol: print 'ready', wait for 'go' on stdin (tmtrace
attaches in between), run the work, print 'elapsed <seconds>', exit.

TRACEMALLOC=N in the environment starts tracemalloc inside with N frames
right before the work, the configuration tmtrace is compared with."""

import os
import sys
import time


def run(work):
    frames = int(os.environ.get("TRACEMALLOC", "0"))
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    if frames:
        import tracemalloc
        tracemalloc.start(frames)
    start = time.perf_counter()
    work()
    elapsed = time.perf_counter() - start
    print("elapsed %.6f" % elapsed, flush=True)
