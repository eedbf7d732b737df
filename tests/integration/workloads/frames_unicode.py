"""Allocations from modules with non-ASCII file names and function names.

usage: frames_unicode.py plain|tracemalloc DIR N

Imports every *.py in DIR (copies of frames_unicode_mod.py under non-ASCII
names, made by the test) before 'ready'; on 'go' calls each module's 分配
(N bytes objects of 1000 * (k + 1) + i bytes, k the module's rank in
sorted order), größe_ändern and Ünïcödé, and keeps the results. Prints
'plan <json>' (the files, in that order) before 'ready', then 'done'
(plain) or 'ref <json>': tracemalloc's lineno statistics for those files,
each with its str(Statistic). Exits at EOF."""

import importlib.util
import json
import os
import sys
import tracemalloc  # in every mode: both runs then have the same history

MODE, DIR, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
NAMES = sorted(f for f in os.listdir(DIR) if f.endswith(".py"))
MODULES = []
for k, name in enumerate(NAMES):
    spec = importlib.util.spec_from_file_location("unimod%d" % k, os.path.join(DIR, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    MODULES.append(module)
FILES = [m.__file__ for m in MODULES]
keep = []


def reference():
    snap = tracemalloc.take_snapshot()
    stats = [{"filename": s.traceback[0].filename, "lineno": s.traceback[0].lineno,
              "size": s.size, "count": s.count, "text": str(s)}
             for s in snap.statistics("lineno") if s.traceback[0].filename in FILES]
    print("ref " + json.dumps({"files": FILES, "lineno": stats}), flush=True)


def prime_free_lists():
    """Fills the tuple free lists, so that no call made later (whose argument
    tuple comes from there, and goes back when the call returns) leaves a
    new tuple alive in a free list, on the line under test, when threads
    or a fresh free list need one more than there is."""
    junk = [tuple(range(k)) + (i,) for k in range(4) for i in range(200)]
    del junk


def main():
    prime_free_lists()
    print("plan " + json.dumps({"files": FILES, "n": N,
                                "sizes": [1000 * (k + 1) for k in range(len(FILES))]}), flush=True)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    if MODE == "tracemalloc":
        tracemalloc.start(1)
    for k, m in enumerate(MODULES):
        keep.append(m.分配(N, 1000 * (k + 1)))
        keep.append(m.größe_ändern(N))
        keep.append(m.Ünïcödé(N // 4))
    if MODE == "tracemalloc":
        reference()
    else:
        print("done", flush=True)
    sys.stdin.read()


main()
