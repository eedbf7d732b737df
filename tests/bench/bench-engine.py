#!/usr/bin/env python3
"""The snapshot engine against CPython's tracemalloc on the same data: a
snapshot of 1M traces over 20k tracebacks (and an older one sharing most
tracebacks), timed for load, statistics of each key type, cumulative,
compare_to, filter_traces and dump, plus `tmtrace report` end to end
against Python's load + the same query. Best of 3 each side.

usage: tests/bench/bench-engine.py [--traces N] [--tracebacks N] [--python PATH]"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

GENERATE = r'''
import random, sys, tracemalloc
traces, tracebacks, path, seed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rng = random.Random(seed)
files = ["/srv/app/mod%d.py" % i for i in range(400)] + ["/usr/lib/python3.11/lib%d.py" % i for i in range(100)]
tbs = []
for _ in range(tracebacks):
    depth = rng.randint(1, 5)
    tbs.append(tuple((rng.choice(files), rng.randint(1, 3000)) for _ in range(depth)))
raw = [(0, rng.randint(16, 4096), tbs[rng.randrange(tracebacks)], 5) for _ in range(traces)]
tracemalloc.Snapshot(raw, 5).dump(path)
'''

QUERIES = r'''
import json, sys, time, tracemalloc
new, old = sys.argv[1], sys.argv[2]
res = {}
def timed(name, fn):
    best = 1e9
    for _ in range(3):
        t = time.perf_counter(); out = fn(); best = min(best, time.perf_counter() - t)
    res[name] = best
    return out
snap = timed("load", lambda: tracemalloc.Snapshot.load(new))
old_snap = tracemalloc.Snapshot.load(old)
timed("statistics_lineno", lambda: snap.statistics("lineno"))
timed("statistics_filename", lambda: snap.statistics("filename"))
timed("statistics_traceback", lambda: snap.statistics("traceback"))
timed("statistics_lineno_cumulative", lambda: snap.statistics("lineno", cumulative=True))
timed("compare_to_lineno", lambda: snap.compare_to(old_snap, "lineno"))
filters = [tracemalloc.Filter(True, "/srv/app/mod1*.py"), tracemalloc.Filter(False, "*/lib*/x*.py")]
timed("filter_traces", lambda: snap.filter_traces(filters))
timed("dump_pickle", lambda: snap.dump(sys.argv[3]))
print(json.dumps(res))
'''


def best_of(cmd, n=3):
    best = 1e9
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", type=int, default=1000000)
    ap.add_argument("--tracebacks", type=int, default=20000)
    ap.add_argument("--python")
    args = ap.parse_args()
    python = args.python or sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.11.*/bin/python3.11")))[-1]
    build = os.path.join(ROOT, "build")
    tool = os.path.join(build, "engine_bench")
    subprocess.run(["cc", "-O2", "-Iinclude", os.path.join(HERE, "engine_bench.c"), os.path.join(build, "libtmtrace.a"),
                    "-lz", "-o", tool], check=True, cwd=ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        new, old = os.path.join(tmp, "new.pickle"), os.path.join(tmp, "old.pickle")
        subprocess.run([python, "-c", GENERATE, str(args.traces), str(args.tracebacks), new, "1"], check=True)
        subprocess.run([python, "-c", GENERATE, str(args.traces), str(args.tracebacks), old, "2"], check=True)
        py = json.loads(subprocess.run([python, "-c", QUERIES, new, old, os.path.join(tmp, "py.pickle")],
                                       check=True, capture_output=True, text=True).stdout)
        c = json.loads(subprocess.run([tool, new, old, "/srv/app/mod1*.py", tmp], check=True,
                                      capture_output=True, text=True).stdout)
        tmtrace = os.path.join(build, "tmtrace")
        e2e_c = best_of([tmtrace, "report", new, "-k", "lineno", "--format", "tracemalloc"])
        e2e_py = best_of([python, "-c", "import sys, tracemalloc\n"
                          "for s in tracemalloc.Snapshot.load(sys.argv[1]).statistics('lineno')[:10]: print(s)", new])
    print("engine vs tracemalloc (%s), %d traces, %d tracebacks, best of 3" % (python, args.traces, args.tracebacks))
    print("%-32s %12s %12s %10s" % ("operation", "tracemalloc", "tmtrace", "speed-up"))
    for name in py:
        print("%-32s %11.3fs %11.4fs %9.1fx" % (name, py[name], c[name], py[name] / c[name]))
    for name in ("dump_tmtrace", "load_tmtrace"):
        print("%-32s %12s %11.4fs" % (name, "-", c[name]))
    print("%-32s %11.3fs %11.4fs %9.1fx" % ("report end to end (load+lineno)", e2e_py, e2e_c, e2e_py / e2e_c))


if __name__ == "__main__":
    sys.exit(main())
