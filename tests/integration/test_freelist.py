"""Objects reused from free lists are reported where they were last
created, as tracemalloc re-stamps them (_PyTraceMalloc_NewReference)."""

import json
import time

from harness import BUILDS, Tmtrace, Workload, build_python, check, lines_of, require_root

def workload_lines():
    """{what: lineno} of the lines compared, read from workloads/freelist.py."""
    import os
    from harness import WORKLOADS
    marks = {"first dicts": "return ([{} for _ in range(40)], [[] for _ in range(40)], [float(i) + 0.5",
             "first tuples": "[(i, -i) for i in range(40)]",
             "second dicts": "return ([{} for _ in range(40)], [[] for _ in range(40)], [float(i) + 0.25",
             "second tuples": "[(-i, i) for i in range(40)]",
             "one = {}": "one = {}",
             "keep.append({})": "keep.append({})",
             "first iterators": "def first_iterators",
             "second iterators": "def second_iterators",
             "resized strs": "strs = [\"{}-{}\".format(",
             "resized tuples": "tuples = [tuple(j for j in range("}
    with open(os.path.join(WORKLOADS, "freelist.py")) as f:
        text = f.read().splitlines()
    lines = {what: next(i + 1 for i, l in enumerate(text) if mark in l) for what, mark in marks.items()}
    # the comprehension's line, after the def
    for what in ("first iterators", "second iterators"):
        lines[what] += 1
    return lines


LINES = workload_lines()


def run(python, mode):
    w = Workload(python, "freelist.py", mode)
    t = None if mode == "tracemalloc" else Tmtrace(w.pid, "--format", "json", "-i", "0.5", "-t", "0")
    try:
        line = w.go()
        if t:
            report = t.next_json(timeout=30, after=time.time() + 0.2)
    finally:
        if t:
            t.stop()
        w.finish()
    if t:
        return lines_of(report["stats"], w.proc.args[1])
    check(line.startswith("ref "), "tracemalloc workload printed %r" % line)
    return {r["lineno"]: (r["size"], r["count"]) for r in json.loads(line[4:])["lineno"]}


def check_freelist(build):
    require_root()
    python = build_python(build)
    ref = run(python, "tracemalloc")
    mine = run(python, "plain")
    for what, lineno in LINES.items():
        got, want = mine.get(lineno, (0, 0)), ref.get(lineno, (0, 0))
        check(got == want, "%s: line %d (%s): tracemalloc %d B in %d blocks, tmtrace %d B in %d"
              % (build, lineno, what, want[0], want[1], got[0], got[1]))
    check(ref.get(LINES["second dicts"], (0, 0))[1] >= 100 and ref.get(LINES["second tuples"], (0, 0))[1] >= 40
          and ref.get(LINES["keep.append({})"], (0, 0))[1] >= 90
          and ref.get(LINES["second iterators"], (0, 0))[1] >= 100
          and ref.get(LINES["resized strs"], (0, 0))[1] >= 60 and ref.get(LINES["resized tuples"], (0, 0))[1] >= 40,
          "%s: the workload did not reuse its objects as expected: %r" % (build, ref))


def _make(build):
    def test():
        check_freelist(build)
    test.__name__ = "test_freelist_reuse_%s" % build.replace(".", "_").replace("-", "_")
    test.__doc__ = "%s: free-list objects belong to the line that last created them" % build
    test.build = build
    return test


for _build in BUILDS:
    _t = _make(_build.name)
    globals()[_t.__name__] = _t
