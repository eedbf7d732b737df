"""Allocations in frames a tracer (sys.settrace) saw, for the line-number test.

usage: traced.py plain|tracemalloc

Protocol as mix.py. On 3.8-3.10 tracemalloc takes a traced frame's line
from f_lineno (PyFrame_GetLineNumber), not from its instruction: a frame
whose tracer was removed while it ran keeps f_trace and a stale f_lineno,
the line of sys.settrace(None), for everything it allocates afterwards.
tmtrace must say the same. On 3.11+ the instruction decides."""

import json
import sys

MODE = sys.argv[1]
keep = []


def tracer(frame, event, arg):
    return tracer


def traced_work(n):
    sys.settrace(None)
    out = []
    for i in range(n):
        out.append(bytes(1000 + i % 7))
    out.append([bytearray(64) for _ in range(n)])
    return out


def still_traced_work(n):
    return [bytes(1500) for _ in range(n)]


def untraced_work(n):
    return [bytes(2000) for _ in range(n)]


def main():
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    if MODE == "tracemalloc":
        import tracemalloc
        tracemalloc.start(1)
    sys.settrace(tracer)
    keep.append(still_traced_work(3000))
    keep.append(traced_work(3000))
    keep.append(untraced_work(3000))
    if MODE == "tracemalloc":
        snap = tracemalloc.take_snapshot()
        tracemalloc.stop()
        lines = [{"lineno": s.traceback[0].lineno, "size": s.size, "count": s.count}
                 for s in snap.statistics("lineno") if s.traceback[0].filename == __file__]
        print("ref " + json.dumps({"file": __file__, "lineno": lines, "traceback": []}), flush=True)
    else:
        print("done", flush=True)
    sys.stdin.read()


main()
