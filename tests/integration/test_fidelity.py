"""Per-line sizes and counts agree with tracemalloc's own, within 1%."""

import json
import time

from harness import Tmtrace, Workload, check, find_python, lines_of, require_root, within

# Lines below these are noise (a few small objects) and not compared one by
# one; they still count in the file's total.
MIN_SIZE = 16 * 1024
MIN_COUNT = 100
TOLERANCE = 0.01


def reference(python, nframe=1):
    w = Workload(python, "mix.py", "tracemalloc", nframe)
    line = w.go()
    w.finish()
    check(line.startswith("ref "), "tracemalloc workload printed %r" % line)
    return json.loads(line[4:])


def measure(python, *opts):
    w = Workload(python, "mix.py", "plain")
    t = Tmtrace(w.pid, "--format", "json", "-i", "0.5", "-t", "0", *opts)
    try:
        w.go()
        done = time.time()
        report = t.next_json(timeout=30, after=done + 0.2)
    finally:
        t.stop()
        w.finish()
    return report


def compare_lines(ref, report):
    mine = lines_of(report["stats"], ref["file"])
    problems = []
    compared = 0
    worst = 0.0
    for r in ref["lineno"]:
        if r["size"] < MIN_SIZE and r["count"] < MIN_COUNT:
            continue
        compared += 1
        got = mine.get(r["lineno"])
        if got is not None:
            worst = max(worst, deviation(got[0], r["size"]), deviation(got[1], r["count"]))
        if got is None:
            problems.append("line %d: tracemalloc %d B in %d blocks, tmtrace nothing"
                            % (r["lineno"], r["size"], r["count"]))
        elif not (within(got[0], r["size"], TOLERANCE) and within(got[1], r["count"], TOLERANCE)):
            problems.append("line %d: tracemalloc %d B in %d blocks, tmtrace %d B in %d"
                            % (r["lineno"], r["size"], r["count"], got[0], got[1]))
    ref_lines = {r["lineno"] for r in ref["lineno"]}
    for lineno, (size, count) in mine.items():
        if lineno not in ref_lines and (size >= MIN_SIZE or count >= MIN_COUNT):
            problems.append("line %d: tmtrace %d B in %d blocks, tracemalloc nothing"
                            % (lineno, size, count))
    ref_total = sum(r["size"] for r in ref["lineno"])
    my_total = sum(size for size, _ in mine.values())
    if not within(ref_total, my_total, TOLERANCE):
        problems.append("file total: tracemalloc %d B, tmtrace %d B" % (ref_total, my_total))
    check(compared >= 10, "only %d lines compared: the workload did not run?" % compared)
    check(not problems, "tmtrace disagrees with tracemalloc:\n  " + "\n  ".join(problems))
    print("     %d lines compared, largest deviation %.3f%%, file total %d B vs %d B"
          % (compared, worst * 100, my_total, ref_total))


def deviation(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1)


def test_lines_agree_with_tracemalloc_311():
    """Objects, strings, containers, bytes of many sizes, realloc-grown
    lists and bytearrays, freed blocks and a second thread on pyenv's 3.11."""
    require_root()
    python = find_python(11)
    ref = reference(python)
    report = measure(python)
    compare_lines(ref, report)
    lost = report["lost"]
    check(lost["live_map_full"] == 0 and lost["traceback_map_full"] == 0,
          "losses reported: %r" % lost)


def test_tracebacks_agree_with_tracemalloc_311():
    """-n 5: whole tracebacks, not just the last line, agree."""
    require_root()
    python = find_python(11)
    ref = reference(python, 5)
    report = measure(python, "-n", "5", "-k", "traceback")
    compare_tracebacks(ref, report)


def compare_tracebacks(ref, report):
    mine = {}
    for s in report["stats"]:
        key = tuple((f["filename"], f["lineno"]) for f in s["traceback"])
        mine[key] = (s["size"], s["count"])
    problems = []
    compared = 0
    for r in ref["traceback"]:
        if r["size"] < MIN_SIZE and r["count"] < MIN_COUNT:
            continue
        compared += 1
        key = tuple(tuple(f) for f in r["frames"])
        got = mine.get(key)
        if got is None:
            problems.append("traceback %r: tracemalloc %d B/%d, tmtrace nothing"
                            % (key, r["size"], r["count"]))
        elif not (within(got[0], r["size"], TOLERANCE) and within(got[1], r["count"], TOLERANCE)):
            problems.append("traceback %r: tracemalloc %d B/%d, tmtrace %d B/%d"
                            % (key, r["size"], r["count"], got[0], got[1]))
    check(compared >= 10, "only %d tracebacks compared" % compared)
    check(not problems, "tmtrace disagrees with tracemalloc:\n  " + "\n  ".join(problems))


def test_lines_agree_with_tracemalloc_debian_pgo():
    """Debian's static, stripped, PGO python3.11: most allocations run
    through inlined copies of the allocator, which tmtrace probes."""
    require_root()
    python = find_python(11, pyenv=False)
    ref = reference(python)
    report = measure(python)
    compare_lines(ref, report)


def test_tracebacks_agree_with_tracemalloc_debian_pgo():
    require_root()
    python = find_python(11, pyenv=False)
    ref = reference(python, 5)
    report = measure(python, "-n", "5", "-k", "traceback")
    compare_tracebacks(ref, report)
