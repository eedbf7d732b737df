"""Frames a tracer saw: on 3.8-3.10 their line is f_lineno, as tracemalloc's
PyFrame_GetLineNumber() says, not the line of their instruction."""

import json
import time

from harness import Tmtrace, Workload, check, find_python, lines_of, require_root, within


def reference(python):
    w = Workload(python, "traced.py", "tracemalloc")
    line = w.go()
    w.finish()
    check(line.startswith("ref "), "tracemalloc workload printed %r" % line)
    return json.loads(line[4:])


def measure(python):
    w = Workload(python, "traced.py", "plain")
    t = Tmtrace(w.pid, "--format", "json", "-i", "0.5", "-t", "0")
    try:
        w.go()
        report = t.next_json(timeout=30, after=time.time() + 0.2)
    finally:
        t.stop()
        w.finish()
    return report


def check_traced_lines(minor):
    require_root()
    python = find_python(minor)
    ref = reference(python)
    mine = lines_of(measure(python)["stats"], ref["file"])
    compared = 0
    for r in ref["lineno"]:
        if r["size"] < 100000:
            continue
        compared += 1
        got = mine.get(r["lineno"], (0, 0))
        check(within(got[0], r["size"], 0.01) and within(got[1], r["count"], 0.01),
              "3.%d line %d: tracemalloc %d B in %d blocks, tmtrace %d B in %d"
              % (minor, r["lineno"], r["size"], r["count"], got[0], got[1]))
    check(compared >= 4, "only %d lines compared" % compared)
    print("     3.%d: %d lines agree with tracemalloc" % (minor, compared))


def _make(minor):
    def test():
        check_traced_lines(minor)
    test.__name__ = "test_traced_frame_lines_3_%d" % minor
    test.__doc__ = ("3.%d: a frame that outlived its tracer (stale f_lineno on 3.8-3.10) "
                    "gets tracemalloc's line" % minor)
    test.build = "3.%d" % minor
    return test


for _minor in range(8, 14):
    globals()["test_traced_frame_lines_3_%d" % _minor] = _make(_minor)
