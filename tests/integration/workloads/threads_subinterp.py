"""Allocations made by code running in sub-interpreters.

usage: threads_subinterp.py plain|tracemalloc N

Interpreter A is created before 'ready'; B and C on 'go' (so after tmtrace
attached). Each gets, through run_string, a module (filename '<string>')
defining keep = [None] * N and fill(n), which stores bytes(BASE + i) in keep
on line OFFSET + 4 of that string, and calls fill(0) to warm up. Then
fill(N) runs in A (in a second thread), C (in a third thread) and B (in
the main thread), A and C at the same time, each called by run_string on
a line of this file of its own (fill_A, fill_B, fill_C). The blocks stay
alive in the sub-interpreters' __main__ until EOF, when the interpreters
are destroyed.

On 3.12 and 3.13 A and C are isolated (their own GIL and obmalloc state),
B shares the main interpreter's; before 3.12 all three share the GIL.

Where tracemalloc puts these blocks depends on the version: from 3.12 on,
on the sub-interpreter's frame ('<string>', OFFSET + 4); before, on the
frame of the calling thread's main-interpreter thread state
(PyGILState_GetThisThreadState), so on the fill_X line of this file.
tracemalloc mode starts tracemalloc on 'go' and prints 'ref <json>': its
lineno statistics for '<string>' and for this file. Before 3.12
tracemalloc deadlocks in Py_NewInterpreter (PyGILState_Ensure from its raw
hooks), so there it starts after B and C are created; from 3.12 on before.
The plan is printed before 'ready' as 'plan <json>'."""

import json
import sys
import threading
import tracemalloc  # in every mode: both runs then have the same history

try:
    import _interpreters as si          # 3.13
except ImportError:
    import _xxsubinterpreters as si     # 3.8-3.12

MODE = sys.argv[1]
N = int(sys.argv[2])
# name: (line offset in its '<string>', size base, isolated on 3.12+)
INTERPS = {"A": (0, 3000, True), "B": (10, 5000, False), "C": (20, 7000, True)}
TEMPLATE = ("keep = [None] * {n}\n"
            "def fill(n):\n"
            "    for i in range(n):\n"
            "        keep[i] = bytes({base} + i)\n"
            "fill(0)\n")
START_BEFORE_SETUP = sys.version_info >= (3, 12)
IDS = {}
ERRORS = []


def create(isolated):
    if sys.version_info >= (3, 13):
        return si.create("isolated" if isolated else "legacy")  # setup
    if sys.version_info >= (3, 12):
        return si.create(isolated=isolated)  # setup
    return si.create()  # setup


def checked(failure):
    if failure is not None:  # 3.13 returns the exception instead of raising
        raise RuntimeError("run_string failed: %r" % (failure,))


def setup(name):
    offset, base, isolated = INTERPS[name]
    iid = create(isolated)  # setup
    checked(si.run_string(iid, "\n" * offset + TEMPLATE.format(n=N, base=base)))  # setup
    return iid


def fill_A():
    checked(si.run_string(IDS["A"], "fill(%d)\n" % N))  # fill_A


def fill_B():
    checked(si.run_string(IDS["B"], "fill(%d)\n" % N))  # fill_B


def fill_C():
    checked(si.run_string(IDS["C"], "fill(%d)\n" % N))  # fill_C


def in_thread(fn):
    def body():
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - reported on stdout
            ERRORS.append("%s: %r" % (fn.__name__, e))
    t = threading.Thread(target=body)
    t.start()
    return t


def marker(name):
    with open(__file__, encoding="utf-8") as f:
        for no, text in enumerate(f, 1):
            if text.rstrip().endswith("# " + name):
                return no
    raise LookupError(name)


def markers(name):
    with open(__file__, encoding="utf-8") as f:
        return [no for no, text in enumerate(f, 1) if text.rstrip().endswith("# " + name)]


def reference():
    snap = tracemalloc.take_snapshot()
    stats = [{"filename": s.traceback[0].filename, "lineno": s.traceback[0].lineno,
              "size": s.size, "count": s.count}
             for s in snap.statistics("lineno") if s.traceback[0].filename in ("<string>", __file__)]
    print("ref " + json.dumps({"lineno": stats}), flush=True)


def main():
    IDS["A"] = setup("A")
    plan = {"file": __file__, "n": N, "tracemalloc_frames": "sub" if sys.version_info >= (3, 12) else "main",
            "interps": {k: {"string_line": off + 4, "call_line": marker("fill_" + k), "base": base}
                        for k, (off, base, _) in INTERPS.items()},
            "setup_lines": markers("setup")}
    print("plan " + json.dumps(plan), flush=True)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    if MODE == "tracemalloc" and START_BEFORE_SETUP:
        tracemalloc.start(1)
    IDS["B"] = setup("B")
    IDS["C"] = setup("C")
    if MODE == "tracemalloc" and not START_BEFORE_SETUP:
        tracemalloc.start(1)
    threads = [in_thread(fill_A), in_thread(fill_C)]
    try:
        fill_B()
    except Exception as e:  # noqa: BLE001 - reported on stdout
        ERRORS.append("fill_B: %r" % (e,))
    for t in threads:
        t.join()
    if ERRORS:
        print("error " + "; ".join(ERRORS), flush=True)
    if MODE == "tracemalloc":
        reference()
    else:
        print("done", flush=True)
    sys.stdin.read()
    if MODE == "tracemalloc":
        tracemalloc.stop()
    for iid in IDS.values():
        si.destroy(iid)


main()
