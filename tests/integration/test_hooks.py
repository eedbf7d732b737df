"""Allocator hooks in the target: tracemalloc running inside it (started
before or after tmtrace attached, and stopped while it watches),
PYTHONMALLOC=malloc, and blocks of a foreign domain declared with
PyTraceMalloc_Track/_Untrack. Checked against the target's own tracemalloc
(same run) or tracemalloc inside an identical run, and against the calls
the workload made. One test_* function per build."""

import json
import os
import shutil
import subprocess
import tempfile
import time

from harness import Failure, check, lines_of, require_root
from test_threads import (compare, expect_exact, largest, per_build, python_for, ref_lines,
                          report_problems, traced_run)

MIN_SIZE = 16 * 1024
MIN_COUNT = 100
TOLERANCE = 0.01


def file_total(lines, skip=()):
    return sum(size for line, (size, _) in lines.items() if line not in skip)


def agree_with_tracemalloc(mine, theirs, skip=(), min_lines=8):
    """Problems between tmtrace's and tracemalloc's lines of one file:
    every line over 16 KiB or 100 blocks within 1%, and the file's total
    within 1%."""
    problems = compare("line", mine, theirs, rel=TOLERANCE, skip=skip)
    compared = sum(1 for line, (size, count) in theirs.items()
                   if line not in skip and (size >= MIN_SIZE or count >= MIN_COUNT))
    check(compared >= min_lines, "only %d lines to compare: the workload did not run?" % compared)
    a, b = file_total(mine, skip), file_total(theirs, skip)
    if not (abs(a - b) <= TOLERANCE * max(a, b)):
        problems.append("file total: tmtrace %d B, tracemalloc %d B" % (a, b))
    print("     %d lines compared with tracemalloc; file total %d B, tracemalloc %d B" % (compared, a, b))
    return problems


def counted_window(mine, theirs, lost, skip=()):
    """A stripped binary has no symbols for tracemalloc's hooks: tmtrace
    probes them when PyMem_SetAllocator() installs them, a few ms late.
    Calls through the hook until then are recorded at the default
    functions (tracemalloc's bookkeeping with them), and a call already in
    the hook when its probe went in is not seen whole: each such call is
    counted as one unprobed_hook_call, and can move at most one block, of
    any size. So: every line over 16 KiB or 100 blocks within 1% in bytes
    and blocks, or else off by blocks that the counted calls account for
    (their sum over the file at most unprobed_hook_calls), and the file's
    total within 1%. The window's length is how soon tmtrace gets a CPU
    after the probe on PyMem_SetAllocator() wakes it: 55-240 counted calls
    on an idle machine, 1499 in a CI run on a loaded one (723 blocks moved,
    5% of the file's). Its cap, a fifth of the file's blocks, is there to
    catch a hook that is never probed."""
    problems, moved = [], 0
    for line, (size, count) in theirs.items():
        if line in skip or (size < MIN_SIZE and count < MIN_COUNT):
            continue
        got = mine.get(line, (0, 0))
        if abs(got[0] - size) <= TOLERANCE * size and abs(got[1] - count) <= TOLERANCE * count:
            continue
        if got[1] == count:
            problems.append("line %d: tmtrace %d B in %d blocks, tracemalloc %d B in %d: bytes differ "
                            "with no block moved" % (line, got[0], got[1], size, count))
        moved += abs(got[1] - count)
    unprobed = lost.get("unprobed_hook_calls", 0)
    if moved > unprobed or moved > 0.2 * sum(c for _, c in theirs.values()):
        problems.append("%d blocks moved from tracemalloc's lines, %d calls through the unprobed hook counted"
                        % (moved, unprobed))
    a, b = file_total(mine, skip), file_total(theirs, skip)
    if not (abs(a - b) <= TOLERANCE * max(a, b)):
        problems.append("file total: tmtrace %d B, tracemalloc %d B" % (a, b))
    print("     stripped binary: %d blocks moved beyond 1%%, %d unprobed hook calls counted; file total %d B, "
          "tracemalloc %d B" % (moved, unprobed, a, b))
    return problems


# ---- C1: tracemalloc running inside the target -------------------------------

HOOKS_N = 1000


def tracemalloc_inside(variant, opts=()):
    def body(build):
        require_root()
        python = python_for(build)
        run = traced_run(python, "hooks_tracemalloc.py", [HOOKS_N], opts=opts, mode=variant, reference=False,
                         phases=(("go", "ref "),))
        plan, report, own = run.plan, run.reports[0], run.own[0]
        n = plan["n"]
        mine = lines_of(report["stats"], plan["file"])
        theirs = ref_lines(own)
        problems = []
        # raw-domain blocks (PyMem_RawMalloc through ctypes): known exactly
        raw = plan["lines"]["raw"]
        expected = (777 * n + n * (n - 1) // 2, n)
        if theirs.get(raw) != expected:
            raise Failure("the workload is wrong: tracemalloc saw %r on the raw line" % (theirs.get(raw),))
        problems += expect_exact("raw line %d (%d PyMem_RawMalloc)" % (raw, n), mine.get(raw), expected,
                                 theirs.get(raw))
        skip = set()
        if variant == "mid":
            # made before tracemalloc.start() and after tracemalloc.stop():
            # tracemalloc has none of them, tmtrace all.
            for name, base in (("known_before", 2000), ("known_after", 3000)):
                line = plan["lines"][name]
                skip |= {line, plan["lines"][name + "_list"]}
                problems += expect_exact("%s line %d (%d bytes objects, tracemalloc not running)"
                                         % (name, line, n), mine.get(line),
                                         (n * (33 + base) + n * (n - 1) // 2, n))
        if variant in ("tracemalloc", "mid") and build == "debian-3.11":
            problems += counted_window(mine, theirs, report["lost"], skip=skip)
        else:
            problems += agree_with_tracemalloc(mine, theirs, skip=skip)
        # tracemalloc's own bookkeeping, if counted, would also show as
        # blocks without a line
        unknown = lines_of(report["stats"], "<unknown>").get(0, (0, 0))
        if unknown[1] > 2000:
            problems.append("<unknown>:0 holds %d B in %d blocks (tracemalloc's bookkeeping?)" % unknown)
        if problems:
            problems.append("tmtrace's largest lines: " + largest(report, 6))
        report_problems(problems, report)
    return body


per_build(globals(), "test_tracemalloc_started_inside_after_attach", tracemalloc_inside("tracemalloc"), """
The target starts tracemalloc itself (start(1)) after tmtrace attached,
then allocates objects, strings, containers, bytes of many sizes, grown
lists and bytearrays, half-freed lists, raw-domain blocks and a thread's
data. tmtrace's lines agree within 1% (lines over 16 KiB or 100 blocks,
and the file's total) with the target's own snapshot taken at the end,
tracemalloc still running with its tables full: its bookkeeping (hash
tables, traceback copies, made through the raw allocator inside its
hooks) is not counted. The raw line is exact.""")

per_build(globals(), "test_tracemalloc_already_running_at_attach", tracemalloc_inside("before"), """
tmtrace attaches to a target where tracemalloc is already tracing (its
hooks are the allocator functions); the target clears its traces at 'go'
and allocates the same mix: tmtrace's lines agree with the target's own
tracemalloc within 1%, its bookkeeping not counted; the raw line exact.""")

per_build(globals(), "test_tracemalloc_started_and_stopped_while_attached", tracemalloc_inside("mid"), """
While tmtrace watches, the target allocates known blocks, starts
tracemalloc, allocates the mix, takes its snapshot, stops tracemalloc
(freeing its tables) and allocates more known blocks: the known lines
before and after are exact, the mix agrees with the target's snapshot
within 1%.""")

per_build(globals(), "test_tracemalloc_started_and_stopped_under_lazy_frees",
          tracemalloc_inside("mid", ("--lazy-frees",)), """
The same with --lazy-frees: pymalloc's default free is not probed, the
hook's free is (tracemalloc's own bookkeeping stays out), and the blocks
freed outside the hooks are found in their pools: the same checks hold.""")


# ---- C2: PYTHONMALLOC=malloc -------------------------------------------------

def pythonmalloc_malloc(build):
    require_root()
    python = python_for(build)
    run = traced_run(python, "hooks_tracemalloc.py", [HOOKS_N], env={"PYTHONMALLOC": "malloc"})
    check(run.plan["pythonmalloc"] == "malloc", "PYTHONMALLOC did not reach the target: %r" % run.plan)
    report, ref = run.reports[0], run.refs[0]
    mine = lines_of(report["stats"], ref["file"])
    theirs = ref_lines(ref)
    problems = agree_with_tracemalloc(mine, theirs)
    if problems:
        problems.append("tmtrace's largest lines: " + largest(report, 6))
    report_problems(problems, report)


per_build(globals(), "test_pythonmalloc_malloc", pythonmalloc_malloc, """
PYTHONMALLOC=malloc in the target (every domain on libc's malloc, no
pymalloc): the mix of hooks_tracemalloc.py (mix.py's, plus raw-domain
blocks) agrees within 1% (lines over 16 KiB or 100 blocks, and the file's
total) with tracemalloc inside an identical run with PYTHONMALLOC=malloc.""")


# ---- C3: PyTraceMalloc_Track / PyTraceMalloc_Untrack ---------------------------

TRACK_N = 200
DOMAIN = 12345
_track_runs = {}


def track_run(build):
    """One run of hooks_track.py (phase 1 without tracemalloc, phase 2 with
    it) under `tmtrace --domain 12345 -o X.pickle`, shared by the two tests
    of a build: the reports, the workload's refs, and each phase's pickle
    read by that Python's tracemalloc (traces of domains other than 0)."""
    if build in _track_runs:
        return _track_runs[build]
    python = python_for(build)
    tmp = tempfile.mkdtemp(prefix="tmtrace-track-")
    try:
        pickle = os.path.join(tmp, "snap.pickle")

        def keep_pickle(i, report):
            # tmtrace writes it (atomically) right after printing each
            # report: wait for the one written after this report
            deadline = time.monotonic() + 10
            while not (os.path.exists(pickle) and os.stat(pickle).st_mtime >= report["time"]):
                check(time.monotonic() < deadline, "no snapshot written after the report")
                time.sleep(0.02)
            shutil.copy(pickle, os.path.join(tmp, "phase%d.pickle" % (i + 1)))

        run = traced_run(python, "hooks_track.py", [TRACK_N], mode=None, reference=False,
                         phases=(("go", "ref "), ("inside", "ref ")),
                         opts=("--domain", DOMAIN, "-o", pickle), after_phase=keep_pickle)
        script = ("import json, sys, tracemalloc\n"
                  "snap = tracemalloc.Snapshot.load(sys.argv[1])\n"
                  "print(json.dumps([[t.domain, t.size, t.traceback[0].filename,"
                  " t.traceback[0].lineno] for t in snap.traces if t.domain != 0]))\n")
        run.traces = []
        for k in (1, 2):
            p = subprocess.run([python, "-c", script, os.path.join(tmp, "phase%d.pickle" % k)],
                               capture_output=True, text=True, timeout=60)
            check(p.returncode == 0, "tracemalloc cannot load tmtrace's pickle: %s" % p.stderr[-500:])
            run.traces.append(json.loads(p.stdout))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _track_runs[build] = run
    return run


def track_untrack(phase):
    def body(build):
        require_root()
        run = track_run(build)
        plan, report, own, traces = run.plan, run.reports[phase - 1], run.own[phase - 1], run.traces[phase - 1]
        expected = {int(k): tuple(v) for k, v in own["expected"].items()}
        codes = own["codes"]
        want = [0] if phase == 2 else [-2]
        check(all(c == want for name, c in codes.items() if name != "untrack_all"),
              "PyTraceMalloc_Track/Untrack returned %r, expected %r everywhere" % (codes, want))
        problems = []
        if phase == 2:
            check(codes["untrack_all"] == [-2], "Untrack without tracemalloc returned %r" % codes)
            theirs = {s["lineno"]: (s["size"], s["count"]) for s in own["lineno"]
                      if s["filename"] == plan["file"]}
            if theirs != expected or len(own["lineno"]) != len(theirs):
                raise Failure("the workload is wrong: tracemalloc's domain %d holds %r, expected %r"
                              % (DOMAIN, own["lineno"], expected))
        # JSON, --domain 12345: exactly the blocks tracked, on their lines
        mine = lines_of(report["stats"], plan["file"])
        names = {v: k for k, v in plan["lines"].items()}
        for line in sorted(set(mine) | set(expected)):
            problems += expect_exact("--domain %d, line %d (%s)" % (DOMAIN, line, names.get(line, "?")),
                                     mine.get(line), expected.get(line, (0, 0)))
        others = [s for s in report["stats"] if s["traceback"][0]["filename"] != plan["file"]]
        if others:
            problems.append("--domain %d also shows %s" % (DOMAIN, largest({"stats": others})))
        # the pickle, read by tracemalloc: the traces are in domain 12345
        got = {}
        for domain, size, filename, lineno in traces:
            if domain != DOMAIN or filename != plan["file"]:
                problems.append("pickle: a trace of %d B in domain %d at %s:%d"
                                % (size, domain, filename, lineno))
                continue
            s, c = got.get(lineno, (0, 0))
            got[lineno] = (s + size, c + 1)
        if got != expected:
            problems.append("pickle: domain %d traces per line %r, expected %r" % (DOMAIN, got, expected))
        report_problems(problems[:20], report)
    return body


per_build(globals(), "test_track_untrack_without_tracemalloc", track_untrack(1), """
The target calls PyTraceMalloc_Track(12345, address, size) through
ctypes.pythonapi for 400 made-up addresses on two lines, untracks some
(and some never tracked), and tracks a few again with a new size, while
tracemalloc is not tracing (the calls return -2 and do nothing): tmtrace
records them as tracemalloc would have. With --domain 12345 its JSON holds
exactly those blocks, per line (re-tracked ones on the re-tracking line,
with their new size), and nothing else; in its pickle, read by
tracemalloc, they are traces of domain 12345.""")

per_build(globals(), "test_track_untrack_with_tracemalloc_inside", track_untrack(2), """
The same run goes on: every block left is untracked (still without
tracemalloc: none may remain), tracemalloc starts inside the target and
the same calls are made at other addresses (they return 0): tmtrace's
domain 12345 equals the calls made and the target's own snapshot filtered
with DomainFilter(True, 12345), in JSON and in its pickle.""")
