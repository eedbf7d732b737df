"""Per-line sizes and counts agree with tracemalloc's own, within 1%, on
every build of harness.BUILDS.

Four tests per build, generated at the end of this module as
test_<what>_<build suffix> (test_lines_agree_with_tracemalloc_3_12,
test_complete_agrees_with_tracemalloc_debian_3_11, ...), each with
`fn.build` set to the build's name for run.py's matrix:

  lines      workloads/mix.py, lineno statistics of mix.py
  tracebacks workloads/mix.py with -n 5, whole tracebacks
  complete   workloads/complete.py (json, re, pickle, growth, generators,
             coroutines, exceptions, classes, imports after 'go'), lineno
             statistics of every file, the files' totals and the grand total
  lazy_frees complete.py again, with --lazy-frees

tracemalloc's side comes from a run of the same workload with tracemalloc
started inside it at 'go'; tmtrace's from a second run it is attached to."""

import ast
import json
import os
import shutil
import tempfile
import time

from harness import (BUILDS, WORKLOADS, Tmtrace, Workload, build_python, check, lines_of,
                     require_root, within)

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


def measure(python, *opts, script="mix.py", args=("plain",), env=None):
    w = Workload(python, script, *args, env=env)
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


def check_no_losses(report):
    lost = report["lost"]
    check(lost["live_map_full"] == 0 and lost["traceback_map_full"] == 0,
          "losses reported: %r" % lost)


def lines_on(python):
    ref = reference(python)
    report = measure(python)
    compare_lines(ref, report)
    check_no_losses(report)


def tracebacks_on(python):
    ref = reference(python, 5)
    report = measure(python, "-n", "5", "-k", "traceback")
    compare_tracebacks(ref, report)


# --- complete.py: every file, every feature ---------------------------------

COMPLETE = os.path.join(WORKLOADS, "complete.py")
LATE_MODULE = "tmtrace_late_module.py"
# What complete.py must have put above the thresholds for the comparison to
# mean anything: each feature's function, the module it imports after 'go'
# and importlib's own frames.
FEATURES = ("json_round_trip", "regex", "pickle_round_trips", "list_growth", "dict_growth",
            "joined", "produced", "suspended", "generators", "fetch", "stream", "fail",
            "exceptions", "classes")
# Both runs: same string hashes, same directory for the module imported late.
COMPLETE_ENV = {"PYTHONHASHSEED": "0"}


def complete_functions():
    """{lineno: name of the innermost function of complete.py holding it}."""
    with open(COMPLETE) as f:
        tree = ast.parse(f.read())
    where = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for n in ast.walk(node):
                lineno = getattr(n, "lineno", None)
                if lineno is not None and (lineno not in where or where[lineno][0] < node.lineno):
                    where[lineno] = (node.lineno, node.name)
    return {lineno: name for lineno, (_, name) in where.items()}


def describe(key, functions):
    filename, lineno = key
    if filename == COMPLETE:
        return "complete.py:%d (%s)" % (lineno, functions.get(lineno, "module level"))
    return "%s:%d" % (filename, lineno)


def complete_reference(python, tmpdir):
    w = Workload(python, "complete.py", "tracemalloc", tmpdir, env=COMPLETE_ENV)
    try:
        line = w.go()
        w.finish()
    finally:
        w.kill()
    check(line.startswith("ref "), "tracemalloc workload printed %r" % line)
    return json.loads(line[4:])


def big(size_count):
    return size_count[0] >= MIN_SIZE or size_count[1] >= MIN_COUNT


def compare_complete(ref, report):
    """Every line of every file at or above the thresholds on either side,
    each file's total (files at or above the thresholds on either side) and
    the grand total, within TOLERANCE for sizes and counts."""
    functions = complete_functions()
    theirs = {(r["filename"], r["lineno"]): (r["size"], r["count"]) for r in ref["lineno"]}
    mine = {}
    for s in report["stats"]:
        frame = s["traceback"][0]
        mine[(frame["filename"], frame["lineno"])] = (s["size"], s["count"])
    problems = []
    compared = set()
    worst = 0.0

    def compare(what, a, b):
        nonlocal worst
        worst = max(worst, deviation(a[0], b[0]), deviation(a[1], b[1]))
        if not (within(a[0], b[0], TOLERANCE) and within(a[1], b[1], TOLERANCE)):
            problems.append("%s: tracemalloc %d B in %d blocks, tmtrace %d B in %d blocks"
                            " (%+d B, %+d blocks)" % (what, a[0], a[1], b[0], b[1],
                                                      b[0] - a[0], b[1] - a[1]))

    for key in sorted(set(theirs) | set(mine), key=lambda k: (k[0], k[1])):
        a, b = theirs.get(key, (0, 0)), mine.get(key, (0, 0))
        if big(a) or big(b):
            compared.add(key)
            compare(describe(key, functions), a, b)
    files = {}
    for side, stats in ((0, theirs), (1, mine)):
        for (filename, _), (size, count) in stats.items():
            totals = files.setdefault(filename, [[0, 0], [0, 0]])
            totals[side][0] += size
            totals[side][1] += count
    for filename, (a, b) in sorted(files.items()):
        if big(a) or big(b):
            compare("file %s, total" % filename, a, b)
    grand = (ref["total"]["size"], ref["total"]["count"])
    compare("grand total", grand, (report["total_size"], report["total_count"]))
    check(sum(s for s, _ in mine.values()) == report["total_size"]
          and sum(c for _, c in mine.values()) == report["total_count"],
          "tmtrace's statistics do not add up to its totals: is -t 0 not all of them?")

    # The workload did what the comparison needs.
    shown = {functions.get(lineno) for filename, lineno in compared if filename == COMPLETE}
    missing = [f for f in FEATURES if f not in shown]
    check(not missing, "complete.py's features %s put nothing above the thresholds" % missing)
    for needle in (LATE_MODULE, "<frozen importlib._bootstrap_external>"):
        check(any(filename.endswith(needle) for filename, _ in compared),
              "nothing from %s above the thresholds: %r" % (needle, sorted(compared)))
    lost = {k: v for k, v in report["lost"].items() if v}
    if problems:
        problems.append("lost counters: %r" % (lost or "all zero"))
    check(not problems, "tmtrace disagrees with tracemalloc on %d of %d lines and totals:\n  %s"
          % (len(problems), len(compared), "\n  ".join(problems)))
    check(not lost, "losses reported: %r" % lost)
    print("     %d lines in %d files compared, largest deviation %.3f%%, total %d B in %d blocks"
          " vs %d B in %d" % (len(compared), len({f for f, _ in compared}), worst * 100,
                              report["total_size"], report["total_count"], grand[0], grand[1]))


def complete_on(python, *opts):
    tmpdir = tempfile.mkdtemp(prefix="tmtrace-complete-")
    try:
        ref = complete_reference(python, tmpdir)
        report = measure(python, *opts, script="complete.py", args=("plain", tmpdir), env=COMPLETE_ENV)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    compare_complete(ref, report)


def lazy_frees_on(python):
    complete_on(python, "--lazy-frees")


# --- one test per build and kind --------------------------------------------

KINDS = [
    ("lines_agree_with_tracemalloc", lines_on,
     "mix.py: objects, strings, containers, bytes of many sizes, realloc-grown lists\n"
     "and bytearrays, freed blocks and a second thread: lineno statistics agree."),
    ("tracebacks_agree_with_tracemalloc", tracebacks_on,
     "mix.py with -n 5: whole tracebacks, not just the last line, agree."),
    ("complete_agrees_with_tracemalloc", complete_on,
     "complete.py: json, re, pickle, list/dict growth, str.join, generators,\n"
     "coroutines, exceptions, classes and imports after 'go': every line of\n"
     "every file, the files' totals and the grand total agree."),
    ("lazy_frees_agree_with_tracemalloc", lazy_frees_on,
     "complete.py under --lazy-frees: pymalloc's frees are not probed but found\n"
     "in the pools' state at each report; every line, file total and the grand\n"
     "total agree as without it."),
]


def what_build(b):
    if b.pyenv:
        return "pyenv's CPython %s (shared libpython)" % b.name
    return ("Debian's static, stripped, PGO python3.%d: most allocations run through\n"
            "inlined copies of the allocator, which tmtrace probes." % b.minor)


def make_test(kind, body, doc, b):
    def test():
        require_root()
        body(build_python(b.name))
    test.__name__ = test.__qualname__ = "test_%s_%s" % (kind, b.suffix)
    test.__doc__ = "%s\nOn %s" % (doc, what_build(b))
    test.build = b.name
    return test


for _b in BUILDS:
    for _kind, _body, _doc in KINDS:
        _test = make_test(_kind, _body, _doc, _b)
        globals()[_test.__name__] = _test
del _b, _kind, _body, _doc, _test
