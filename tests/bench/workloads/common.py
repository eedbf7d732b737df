"""The benchmark protocol: print 'ready', wait for 'go' on stdin (tmtrace
attaches in between), run the work, print 'elapsed <seconds>', exit.

TRACEMALLOC=N in the environment starts tracemalloc inside with N frames
right before the work, the configuration tmtrace is compared with; with
STATS=FILE its lineno statistics after the work go to FILE (JSON), with
TRACES=FILE every live block's size and line (JSON). HOLD=1
keeps the process (and its memory) until stdin closes, for a last report."""

import json
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
    if frames and (os.environ.get("STATS") or os.environ.get("TRACES")):
        import tracemalloc
        snapshot = tracemalloc.take_snapshot()
        if os.environ.get("STATS"):
            with open(os.environ["STATS"], "w") as f:
                json.dump([[s.traceback[0].filename, s.traceback[0].lineno, s.size, s.count]
                           for s in snapshot.statistics("lineno")], f)
        if os.environ.get("TRACES"):
            with open(os.environ["TRACES"], "w") as f:
                json.dump([[t.traceback[0].filename, t.traceback[0].lineno, t.size] for t in snapshot.traces], f)
    print("elapsed %.6f" % elapsed, flush=True)
    if os.environ.get("HOLD") == "1":
        sys.stdin.read()
