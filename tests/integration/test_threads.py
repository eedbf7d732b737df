"""Threads and interpreters: raw-domain blocks allocated without the GIL
from several threads, threads started after tmtrace attached and threads
that end (with a second wave reusing their stacks), and code running in
sub-interpreters. Every figure is checked against the allocations the
workload made itself and against tracemalloc inside an identical run.

Each test runs on every build where it applies: one module-level test_*
function per build, with the build in its name and in `fn.build`.

The helpers at the top (BUILDS, per_build, traced_run, compare, ...) are
also used by test_frames.py and test_hooks.py."""

import json
import os
import time

import harness
from harness import Failure, Tmtrace, Workload, check, lines_of, require_root, within

BUILDS = tuple(b.name for b in harness.BUILDS)   # "3.8" ... "3.13", "debian-3.11"
INTERVAL = "0.2"
# Lines below both are not compared one by one against tracemalloc (a few
# small objects whose count depends on the interpreter's history).
MIN_SIZE = 16 * 1024
MIN_COUNT = 100


# ---- helpers shared with test_frames.py and test_hooks.py -------------------

def python_for(build):
    """The python of a build of harness.BUILDS (Skip when it is missing)."""
    return harness.build_python(build)


def minor_of(build):
    return harness.build(build).minor


def per_build(namespace, name, body, doc, builds=BUILDS):
    """Defines one module-level test `name_<build>` per build, calling
    body(build); run.py discovers them, the version matrix reads fn.build."""
    for build in builds:
        def test(build=build):
            body(build)
        test.__name__ = test.__qualname__ = "%s_%s" % (name, harness.build(build).suffix)
        test.__doc__ = "%s\n\nBuild: %s." % (doc.strip(), build)
        test.build = build
        namespace[test.__name__] = test


def json_line(workload, prefix):
    """The JSON after `prefix` on a line the workload printed (before 'ready'
    for 'plan ')."""
    for line in workload.out.lines:
        if line.startswith(prefix):
            return json.loads(line[len(prefix):])
    raise Failure("the workload printed no %r line: %r" % (prefix, workload.out.lines[-5:]))


def tmtrace_opts(*extra):
    return ("--format", "json", "-i", INTERVAL, "-t", "0") + tuple(extra)


class Run:
    pass


def traced_run(python, script, args=(), opts=(), env=None, reference=True,
               phases=(("go", "done"),), cwd=None, mode="plain", after_phase=None):
    """Runs `script MODE ARGS` (MODE: "plain" unless told; None: no MODE)
    with tmtrace attached before 'go' and, when `reference`, `script
    tracemalloc ARGS` beside it (at the same time, to save time). For each
    phase (command, reply) it sends the command to both, waits for the
    traced run's reply (a line equal to it, or starting with it if it ends
    with a space), takes tmtrace's next report, calls after_phase(index,
    report) if given, and reads the reference's 'ref <json>'.
    Returns a Run: .plan (the 'plan <json>' printed before 'ready', or
    None), .reports (one per phase), .refs (one per phase, or None), .own
    (the traced run's own 'ref <json>' per phase, for replies 'ref '),
    .lines (the traced run's stdout), .attached (tmtrace's attach line)."""
    w = Workload(python, script, *([mode] if mode else []), *args, env=env, cwd=cwd)
    r = None
    t = None
    try:
        if reference:
            r = Workload(python, script, "tracemalloc", *args, env=env, cwd=cwd)
            r.send(phases[0][0])        # runs while tmtrace attaches
        t = Tmtrace(w.pid, *(tmtrace_opts() + tuple(opts)))
        run = Run()
        run.reports, run.refs, run.own = [], [], []
        for i, (command, reply) in enumerate(phases):
            w.send(command)
            line = w.out.wait_for(lambda l, reply=reply: l == reply or
                                  (reply.endswith(" ") and l.startswith(reply)),
                                  120, "the workload's %r" % reply)
            if line.startswith("ref "):
                run.own.append(json.loads(line[4:]))
            run.reports.append(t.next_json(timeout=30, after=time.time() + 0.2))
            if after_phase is not None:
                after_phase(i, run.reports[-1])
            if r is not None:
                if i:
                    r.send(command)
                run.refs.append(json.loads(r.out.wait_for(lambda l: l.startswith("ref "), 120,
                                                          "the reference's 'ref'")[4:]))
        if r is None:
            run.refs = None
        run.plan = json_line(w, "plan ") if any(l.startswith("plan ") for l in w.out.lines) else None
        run.lines, run.attached = list(w.out.lines), t.attached
        if t.proc.poll() is not None:
            raise Failure("tmtrace exited early: %r" % t.err.rest(1))
        return run
    finally:
        if t is not None:
            t.stop()
        for x in (w, r):
            if x is not None:
                x.kill()


def ref_lines(ref):
    """{lineno: (size, count)} of a workload's 'ref' statistics."""
    return {s["lineno"]: (s["size"], s["count"]) for s in ref["lineno"]}


def compare(what, mine, ref, rel=0.01, min_size=MIN_SIZE, min_count=MIN_COUNT, skip=()):
    """Problems between tmtrace's {key: (size, count)} and tracemalloc's:
    every key holding at least min_size bytes or min_count blocks in either
    must agree within `rel` (0: exactly)."""
    problems = []
    for key in sorted(set(mine) | set(ref), key=str):
        if key in skip:
            continue
        a, b = mine.get(key, (0, 0)), ref.get(key, (0, 0))
        if max(a[0], b[0]) < min_size and max(a[1], b[1]) < min_count:
            continue
        if not (within(a[0], b[0], rel) and within(a[1], b[1], rel)):
            problems.append("%s %s: tmtrace %d B in %d blocks, tracemalloc %d B in %d"
                            % (what, key, a[0], a[1], b[0], b[1]))
    return problems


def expect_exact(what, mine, expected, ref=None):
    """A problem unless tmtrace's (size, count) is exactly `expected` (and
    says what tracemalloc saw, for the message)."""
    got = mine if mine is not None else (0, 0)
    if tuple(got) == tuple(expected):
        return []
    tm = "" if ref is None else ", tracemalloc %d B in %d" % tuple(ref)
    return ["%s: tmtrace %d B in %d blocks, expected %d B in %d%s"
            % (what, got[0], got[1], expected[0], expected[1], tm)]


def largest(report, n=4, skip_file=None):
    """tmtrace's n largest lines (outside skip_file), for failure messages."""
    stats = [s for s in report["stats"] if s["traceback"][0]["filename"] != skip_file]
    stats.sort(key=lambda s: -s["size"])
    return ", ".join("%s:%d %d B/%d" % (s["traceback"][0]["filename"], s["traceback"][0]["lineno"],
                                        s["size"], s["count"]) for s in stats[:n])


def report_problems(problems, report=None):
    lost = ""
    if report is not None:
        lost = "\n  lost: %s" % json.dumps({k: v for k, v in report["lost"].items() if v})
    check(not problems, "%d problem(s):\n  %s%s" % (len(problems), "\n  ".join(problems), lost))


# ---- A1: raw-domain blocks allocated without the GIL -------------------------

RAW_N = 300


def raw_without_gil(build):
    require_root()
    python = python_for(build)
    run = traced_run(python, "threads_raw.py", [RAW_N], phases=(("go", "done"), ("free", "freed")))
    plan, reports, refs = run.plan, run.reports, run.refs
    problems = []
    kept = {"allocated": RAW_N, "after freeing every other block": RAW_N // 2}
    for phase, report, ref in zip(kept, reports, refs):
        n = kept[phase]
        mine = lines_of(report["stats"], plan["file"])
        theirs = ref_lines(ref)
        known = set()
        for k, size in enumerate(plan["sizes"]):
            line = plan["lines"][str(k)]
            known.add(line)
            what = "%s, thread %d's line %d (%d x PyMem_RawMalloc(%d))" % (phase, k, line, n, size)
            if theirs.get(line) != (n * size, n):
                raise Failure("the workload is wrong: tracemalloc saw %r on %s" % (theirs.get(line), what))
            problems += expect_exact(what, mine.get(line), (n * size, n), theirs.get(line))
        problems += compare(phase + ", line", mine, theirs, skip=known)
    report_problems(problems, reports[-1])


per_build(globals(), "test_raw_blocks_allocated_without_the_gil", raw_without_gil, """
Four threads call PyMem_RawMalloc through ctypes.CDLL, which releases the
GIL around the call, 300 times each with a size of their own (24, 333,
4103, 150000 B) on a line of their own; then every thread frees every other
block of its own the same way. tmtrace's size and count on each line equal
exactly what the threads allocated (and what tracemalloc saw in an
identical run), before and after the frees.""")


# ---- A2: threads started after attaching, threads that end -------------------

WAVES_N = 200


def thread_waves(build):
    require_root()
    python = python_for(build)
    run = traced_run(python, "threads_waves.py", [WAVES_N])
    plan, (report,), (ref,) = run.plan, run.reports, run.refs
    n = plan["n"]
    mine = lines_of(report["stats"], plan["file"])
    theirs = ref_lines(ref)
    problems = []
    known = set()
    for k, base in enumerate(plan["bases"]):
        line = plan["lines"][str(k)]
        known.add(line)
        expected = (n * (33 + base) + n * (n - 1) // 2, n)
        who = "the early thread" if k == 8 else "wave %d thread w%d" % (1 + k // 4, k)
        what = "%s's line %d (%d bytes objects of %d..%d B)" % (who, line, n, 33 + base, 32 + base + n)
        if theirs.get(line) != expected:
            raise Failure("the workload is wrong: tracemalloc saw %r on %s" % (theirs.get(line), what))
        problems += expect_exact(what, mine.get(line), expected, theirs.get(line))
    problems += compare("line", mine, theirs, skip=known)
    mixed = plan["lines"]["mixed"]
    check(theirs.get(mixed, (0, 0))[1] >= 5 * n, "the workload is wrong: mixed line %r" % (theirs.get(mixed),))
    report_problems(problems, report)


per_build(globals(), "test_threads_started_after_attach_and_ended", thread_waves, """
A thread waiting since before tmtrace attached, then two waves of four
threads started after it attached (the second after the first ended, so
reusing its thread stacks and states), each thread storing 200 bytes
objects of known sizes on its own line, plus a thread making objects of
several types: every thread's line equals the known size and count exactly
and tracemalloc's in an identical run; the mixed line agrees within 1%.""")


# ---- A3: sub-interpreters ----------------------------------------------------

SUB_N = 200
# Before 3.12 tracemalloc takes the frames of the calling thread's
# main-interpreter thread state (PyGILState_GetThisThreadState), so it puts
# what sub-interpreter code allocates on the line that called run_string;
# from 3.12 on, on the sub-interpreter's own code. tmtrace (README, "What
# it sees") attributes sub-interpreter code to its own frames on every
# version, so these tests expect '<string>' lines everywhere, with the sizes
# and counts tracemalloc gives (wherever it puts them). True holds tmtrace
# to tracemalloc's own attribution before 3.12 instead.
SUBINTERP_AS_TRACEMALLOC_BEFORE_312 = True


def subinterpreters(build):
    require_root()
    python = python_for(build)
    run = traced_run(python, "threads_subinterp.py", [SUB_N])
    plan, (report,), (ref,) = run.plan, run.reports, run.refs
    errors = [l for l in run.lines if l.startswith("error ")]
    check(not errors, "the workload failed: %r" % errors)
    n, me = plan["n"], plan["file"]
    # where tracemalloc puts a sub-interpreter's blocks: its own frame from
    # 3.12 on, before that the frame of the calling thread's main-interpreter
    # thread state (PyGILState_GetThisThreadState)
    sub = plan["tracemalloc_frames"] == "sub"

    def key(s):
        return (s["traceback"][0]["filename"], s["traceback"][0]["lineno"])
    mine = {key(s): (s["size"], s["count"]) for s in report["stats"]
            if s["traceback"][0]["filename"] in ("<string>", me)}
    theirs = {(s["filename"], s["lineno"]): (s["size"], s["count"]) for s in ref["lineno"]}
    problems = []
    skip = set()
    for name, info in sorted(plan["interps"].items()):
        own, caller = ("<string>", info["string_line"]), (me, info["call_line"])
        where_ref = own if sub else caller
        where = caller if (not sub and SUBINTERP_AS_TRACEMALLOC_BEFORE_312) else own
        other = caller if where == own else own
        skip |= {own, caller}
        size = n * (33 + info["base"]) + n * (n - 1) // 2
        t = theirs.get(where_ref, (0, 0))
        if not (t[0] >= size and t[1] >= n):
            raise Failure("the workload is wrong: tracemalloc has %r on %s:%d for interpreter %s"
                          % (t, where_ref[0], where_ref[1], name))
        got = mine.get(where, (0, 0))
        what = ("interpreter %s's %d bytes objects (%d B), on %s:%d (tracemalloc: on %s:%d)"
                % (name, n, size, os.path.basename(where[0]), where[1],
                   os.path.basename(where_ref[0]), where_ref[1]))
        # before 3.12 the reference run starts tracemalloc after B and C
        # exist (else it deadlocks): objects of their free lists, made while
        # B and C were set up and re-stamped on this line when fill() reuses
        # them, are traced by one run and not the other: a few dozen small
        # blocks either way. A, made before either run traced, has free lists
        # of its own from 3.9; on 3.8 the free lists are the process's, so A
        # (running beside C) can reuse objects made while B and C were set up:
        # A's line had 5 blocks (264 B) more than tracemalloc's in 2 runs of
        # 14, with builds of before and after --lazy-frees alike.
        if sub or (name == "A" and harness.build(build).minor >= 9):
            ok = got == t
        else:
            ok = abs(got[0] - t[0]) <= 4096 and abs(got[1] - t[1]) <= 32
        o = mine.get(other, (0, 0))
        if not ok or o[0] >= 3000:
            problems.append("%s: tmtrace %d B in %d blocks, tracemalloc %d B in %d (tmtrace has %d B in "
                            "%d on %s:%d)" % (what, got[0], got[1], t[0], t[1], o[0], o[1],
                                              os.path.basename(other[0]), other[1]))
    if not sub:
        # B and C are made before the reference's tracemalloc starts
        skip |= {(me, line) for line in plan["setup_lines"]}
        skip |= {k for k in mine if k[0] == "<string>"}
    problems += compare("line", mine, theirs, skip=skip)
    if problems:
        problems.append("tmtrace's largest lines: " + largest(report))
    report_problems(problems, report)


per_build(globals(), "test_subinterpreter_allocations", subinterpreters, """
Three sub-interpreters (one created before tmtrace attached, two after;
isolated with their own GIL and obmalloc on 3.12+ except one legacy one)
run code from run_string that keeps 200 bytes objects of known sizes in
their __main__, two of them at the same time in two threads. tmtrace puts
them on '<string>' and the line of each interpreter's code, nothing of
them on the line that called run_string, with the sizes and counts of
tracemalloc inside an identical run (which hold the known blocks).
tracemalloc itself puts them there from 3.12 on; before 3.12 on the line
that called run_string (the frame of the thread's main-interpreter thread
state), and there the reference starts tracemalloc after the interpreters
exist, as it deadlocks in Py_NewInterpreter otherwise. See
SUBINTERP_AS_TRACEMALLOC_BEFORE_312.""")
