#!/usr/bin/env python3
"""Check tmtrace's tracemalloc pickles against each installed CPython.

    scripts/check-pickle-roundtrip.py [--python PY ...] [--bench [--bench-python PY]]

For every interpreter (default: the pyenv 3.8-3.13 ones and /usr/bin/python3.11):

 1. it builds snapshots of many shapes (edge values, shared and unshared
    tracebacks, non-ASCII and surrogate filenames, 64 KiB+ names, batch
    edges, empty, a real take_snapshot(), protocols 2-4, the pure-Python
    pickler) and dumps them the way Snapshot.dump() does;
 2. build/pickle_tool parses each file with the engine and writes it back
    for that interpreter's minor version (and for every other minor, from the
    newest interpreter's files);
 3. the interpreter loads what the engine wrote with Snapshot.load() and
    compares the raw traces, the traceback limit and statistics() for every
    key type, and, for snapshots shaped like take_snapshot()'s (shared
    filenames and tracebacks), the bytes: they must be Python's own.

--bench times Snapshot.load()/dump() (3.11 by default) against the engine on
a 1M-trace, 20k-traceback snapshot: CPU and wall time, best of --repeat runs
in each of --rounds turns the two sides take (on a shared machine, wall time
is at the mercy of whatever else runs; CPU time less so).

build/pickle_tool is rebuilt from tests/unit/pickle_tool.c when it is older
than its sources. Exit status 0 when everything matched. Runs under 3.8+.
"""

import argparse
import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "build", "pickle_tool")
TOOL_SRCS = ["tests/unit/pickle_tool.c", "src/engine/pickle.c", "src/engine/snapshot.c",
             "src/engine/arena.c", "src/engine/hashset.c"]
TOOL_DEPS = TOOL_SRCS + ["src/engine/pickle.h", "src/engine/snapshot_impl.h", "src/engine/arena.h",
                         "src/engine/hashset.h", "include/tmtrace/engine.h"]


def build_tool():
    newest = max(os.path.getmtime(os.path.join(ROOT, f)) for f in TOOL_DEPS)
    if os.path.exists(TOOL) and os.path.getmtime(TOOL) >= newest:
        return
    os.makedirs(os.path.dirname(TOOL), exist_ok=True)
    cmd = ["cc", "-O2", "-Wall", "-Wextra", "-std=gnu11", "-D_GNU_SOURCE", "-Iinclude", "-Isrc"] + \
        TOOL_SRCS + ["-o", TOOL]
    subprocess.run(cmd, cwd=ROOT, check=True)


def default_pythons():
    def version(p):
        return [int(x) for x in p.split("/")[-3].split(".")]
    # Protocol 5, and so the engine's pickles, needs 3.8.
    pys = sorted((p for p in glob.glob("/root/.pyenv/versions/3.*/bin/python3") if version(p) >= [3, 8]),
                 key=version)
    if os.path.exists("/usr/bin/python3.11"):
        pys.append("/usr/bin/python3.11")
    return pys


# --------------------------------------------------------------------------
# Child side: runs under the interpreter being checked.

def raw(domain, size, frames, total, minor):
    return (domain, size, frames, total) if minor >= 9 else (domain, size, frames)


class Builder:
    """Builds raw traces shared the way take_snapshot() shares them: one str
    object per filename, one tuple per distinct (frames, total_nframe),
    fresh frame tuples inside each traceback."""

    def __init__(self, minor):
        self.minor = minor
        self.names = {}
        self.tbs = {}

    def name(self, s):
        return self.names.setdefault(s, s)

    def tb(self, frames, total):
        key = (tuple(frames), total if self.minor >= 9 else None)
        t = self.tbs.get(key)
        if t is None:
            t = tuple((self.name(f), l) for f, l in frames)
            self.tbs[key] = t
        return t

    def trace(self, domain, size, frames, total):
        return raw(domain, size, self.tb(frames, total), total, self.minor)


def random_traces(minor, rng, ntraces, ntbs, nfiles, maxframes):
    b = Builder(minor)
    files = ["/usr/lib/python3/site-packages/pkg%d/mod%d.py" % (i % 37, i) for i in range(nfiles)]
    tbs = []
    for _ in range(ntbs):
        n = rng.randint(1, maxframes)
        frames = [(rng.choice(files), rng.randint(1, 5000)) for _ in range(n)]
        total = rng.choice([n, n, n, n + rng.randint(1, 50), None])
        tbs.append((frames, total))
    traces = []
    for _ in range(ntraces):
        frames, total = rng.choice(tbs)
        size = rng.choice([rng.randint(1, 512), rng.randint(1, 1 << 20), rng.randint(1, 1 << 40)])
        domain = rng.choice([0, 0, 0, 0, 1, 2 ** 31, 2 ** 32 - 1])
        traces.append(b.trace(domain, size, frames, total))
    return traces


def edge_traces(minor):
    b = Builder(minor)
    names = ["a.py", "caf\u00e9.py", "\u65e5\u672c/\u30c6\u30b9\u30c8.py", "emoji\U0001F600.py",
             "lone\udc80surrogate.py", "<unknown>", "<frozen importlib._bootstrap>",
             "/usr/lib/python3.11/x.pyc", "tab\tand\nnewline.py", "x" * 255, "y" * 256]
    values = [0, 1, 255, 256, 65535, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 40,
              2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1]
    totals = [0, 1, 3, 255, 65535, 2 ** 31, 2 ** 32 - 2, None]
    traces = []
    for i, size in enumerate(values):
        domain = [0, 1, 255, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1][i % 7]
        n = 1 + i % 5
        frames = [(names[(i + j) % len(names)], [0, 1, 300, 2 ** 31, 2 ** 32 - 1][(i + j) % 5])
                  for j in range(n)]
        traces.append(b.trace(domain, size, frames, totals[i % len(totals)]))
        traces.append(b.trace(domain, size, frames, totals[i % len(totals)]))  # shared traceback
    traces.append(raw(7, 8, (), None, minor))  # tracebacks can be empty in hand-made snapshots
    traces.append(raw(7, 9, (), 0, minor))
    return traces


def unshared_traces(minor):
    """Equal filenames as distinct str objects, equal tracebacks as distinct
    tuples: Python pickles them again each time; the engine interns them."""
    traces = []
    for i in range(300):
        name = "".join(["mod", str(i % 7), ".py"])
        frames = ((name, i % 11), ("".join(["main", ".py"]), 1))
        traces.append(raw(0, i, frames, 2, minor))
    return traces


def real_snapshot(tracemalloc):
    tracemalloc.start(25)
    keep = []

    def leaf(n):
        keep.append([bytearray(64 * (i % 5 + 1)) for i in range(n)])

    def mid(n):
        for i in range(n):
            leaf(i % 7)
            keep.append({"k%d" % j: str(j) * 20 for j in range(i % 13)})

    mid(200)
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return snap


def child_gen(outdir):
    import pickle
    import tracemalloc
    minor = sys.version_info[1]
    rng = random.Random(20240611)
    cases = []

    def add(name, traces, limit=25, canonical=True, protocol=None, pure=False, snap=None):
        if snap is None:
            snap = tracemalloc.Snapshot(traces, limit)
        path = os.path.join(outdir, name + ".pickle")
        if protocol is None and not pure:
            snap.dump(path)
        else:
            with open(path, "wb") as fp:
                proto = pickle.HIGHEST_PROTOCOL if protocol is None else protocol
                if pure:
                    pickle._Pickler(fp, proto).dump(snap)
                else:
                    pickle.dump(snap, fp, proto)
        cases.append({"name": name, "path": path, "canonical": canonical})

    rnd = random_traces(minor, rng, 6000, 400, 90, 12)
    add("random", rnd)
    add("edges", edge_traces(minor), limit=65535)
    add("empty", [], limit=1)
    add("empty-tuple", (), limit=1, canonical=False)
    add("one", rnd[:1])
    for n in (999, 1000, 1001, 2000, 2001):
        add("batch%d" % n, rnd[:n])
    b = Builder(minor)
    add("bignames", [b.trace(0, 1, [("n" * 70000, 1), ("m" * 300, 2)], 2),
                     b.trace(0, 2, [("n" * 70000, 3)], 1),
                     b.trace(1, 3, [("\u00e9" * 40000, 4)], None)])
    add("unshared", unshared_traces(minor), canonical=False)
    add("tuple", tuple(rnd[:1500]), canonical=False)
    add("real", None, snap=real_snapshot(tracemalloc))
    for proto in (2, 3, 4):
        add("proto%d" % proto, rnd[:1500], protocol=proto, canonical=False)
    add("purepy", rnd[:3000], pure=True, canonical=False)
    json.dump(cases, sys.stdout)


def normalize(traces, minor):
    """Raw traces as tracemalloc 3.<minor> holds them."""
    out = []
    for t in traces:
        total = t[3] if len(t) == 4 else None
        out.append(raw(t[0], t[1], t[2], total, minor))
    return out


def child_check(pairs_json):
    failures = []
    for p in json.loads(pairs_json):
        what = "%s -> %s" % (p["src"], p["out"])
        try:
            check_pair(p, what, failures)
        except Exception as e:
            failures.append("%s: %r" % (what, e))
    json.dump(failures, sys.stdout)


def check_pair(p, what, failures):
    """The engine's rewrite of p["src"] against the source, as this Python sees both."""
    import tracemalloc
    minor = sys.version_info[1]
    src = tracemalloc.Snapshot.load(p["src"])
    out = tracemalloc.Snapshot.load(p["out"])
    want = normalize(src.traces._traces, minor)
    got = list(out.traces._traces)
    if got != want:
        bad = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        failures.append("%s: traces differ at %d of %d/%d: %r vs %r" % (
            what, bad, len(got), len(want), got[bad:bad + 1], want[bad:bad + 1]))
        return
    if out.traceback_limit != src.traceback_limit:
        failures.append("%s: traceback_limit %r != %r" % (what, out.traceback_limit, src.traceback_limit))
    if len(src.traces._traces) and type(src.traces._traces[0]) is tuple and minor == p["src_minor"]:
        for key in ("filename", "lineno", "traceback"):
            for cumulative in ((False, True) if key != "traceback" else (False,)):
                # Some versions cannot group empty tracebacks: then both
                # must fail alike.
                try:
                    a = out.statistics(key, cumulative)
                except Exception as e:
                    a = type(e)
                try:
                    b = src.statistics(key, cumulative)
                except Exception as e:
                    b = type(e)
                if a != b:
                    failures.append("%s: statistics(%s, %s) differ" % (what, key, cumulative))
    if p["same_bytes"]:
        with open(p["src"], "rb") as f1, open(p["out"], "rb") as f2:
            a, b = f1.read(), f2.read()
        if a != b:
            at = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
            failures.append("%s: bytes differ from Python's at offset %d (sizes %d/%d)" % (
                what, at, len(b), len(a)))


def child_bench_gen(path):
    """The benchmark's snapshot: 1M traces over 20k tracebacks of 1-20
    frames in 2000 files, shared as take_snapshot() shares them."""
    import tracemalloc
    traces = random_traces(sys.version_info[1], random.Random(7), 1000000, 20000, 2000, 20)
    tracemalloc.Snapshot(traces, 20).dump(path)
    json.dump({"python": sys.version.split()[0], "traces": len(traces),
               "tracebacks": len({id(t[2]) for t in traces}), "bytes": os.path.getsize(path)}, sys.stdout)


def child_bench_time(path, repeat):
    """Best of `repeat` Snapshot.load()/dump() (and pickle.loads()/dumps()),
    as [CPU seconds, wall seconds]."""
    import gc
    import pickle
    import tracemalloc
    with open(path, "rb") as f:
        data = f.read()
    res = {}

    def timed(name, fn):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        c, w = time.process_time() - c0, time.perf_counter() - w0
        old = res.get(name, [1e9, 1e9])
        res[name] = [min(old[0], c), min(old[1], w)]
        return out

    snap = None
    for _ in range(repeat):
        snap = None
        gc.collect()
        snap = timed("load", lambda: tracemalloc.Snapshot.load(path))
        timed("loads", lambda: pickle.loads(data))
    for _ in range(repeat):
        timed("dump", lambda: snap.dump(path + ".py"))
        timed("dumps", lambda: pickle.dumps(snap, pickle.HIGHEST_PROTOCOL))
    os.unlink(path + ".py")
    json.dump(res, sys.stdout)


# --------------------------------------------------------------------------
# Parent side.

def run_child(py, *args):
    r = subprocess.run([py, os.path.abspath(__file__)] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True)
    if r.returncode:
        raise RuntimeError("%s %s failed:\n%s" % (py, args[0], r.stderr))
    return json.loads(r.stdout)


def py_minor(py):
    out = subprocess.run([py, "-c", "import sys; print(sys.version_info[1], sys.version.split()[0])"],
                         stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout.split()
    return int(out[0]), out[1]


def rewrite(src, out, minor):
    r = subprocess.run([TOOL, "rewrite", src, out, str(minor)], stderr=subprocess.PIPE,
                       universal_newlines=True)
    return r.stderr.strip() if r.returncode else None


def check(pythons, keep):
    tmp = keep or tempfile.mkdtemp(prefix="tmtrace-pickle-")
    failures = 0
    gens = []
    for py in pythons:
        minor, version = py_minor(py)
        d = os.path.join(tmp, "py%s-%s" % (version, abs(hash(py)) % 10000))
        os.makedirs(d, exist_ok=True)
        cases = run_child(py, "--child-gen", d)
        gens.append((py, minor, version, cases))

    newest = max(gens, key=lambda g: g[1])
    for py, minor, version, cases in gens:
        pairs, sizes = [], []
        # This interpreter's own dumps, and the newest interpreter's ones
        # (from 3.8's, when this is the newest: 3-tuples becoming 4-tuples).
        other = newest if newest[0] != py else min(gens, key=lambda g: g[1])
        groups = [(minor, cases)] + ([(other[1], other[3])] if other[0] != py else [])
        for src_minor, group in groups:
            for c in group:
                out = "%s.for%d.%s.out" % (c["path"], minor, os.path.basename(py) + str(abs(hash(py)) % 10000))
                err = rewrite(c["path"], out, minor)
                if err:
                    print("FAIL %s: engine could not read %s: %s" % (version, c["path"], err))
                    failures += 1
                    continue
                same = c["canonical"] and src_minor == minor
                pairs.append({"src": c["path"], "out": out, "same_bytes": same, "src_minor": src_minor})
                if src_minor == minor:
                    sizes.append((c["name"], os.path.getsize(c["path"]), os.path.getsize(out)))
        bad = run_child(py, "--child-check", json.dumps(pairs))
        for b in bad:
            print("FAIL %s: %s" % (version, b))
        failures += len(bad)
        print("%-8s %-28s %d files checked, %d failures" % (version, py, len(pairs), len(bad)))
        for name, a, b in sizes:
            if a != b:
                print("           %-12s Python %8d bytes, engine %8d bytes" % (name, a, b))
    if not keep:
        subprocess.run(["rm", "-rf", tmp])
    return failures


def bench(py, repeat, rounds):
    """Python and the engine take turns, `rounds` times, on one pickle: the
    machine's load changes, and each side keeps its best."""
    minor, _ = py_minor(py)
    py_best, c_best = {}, {}

    def keep(best, res):
        for k, v in res.items():
            if isinstance(v, list):
                old = best.get(k, [1e9, 1e9])
                best[k] = [min(old[0], v[0]), min(old[1], v[1])]

    with tempfile.TemporaryDirectory(prefix="tmtrace-bench-") as d:
        path = os.path.join(d, "big.pickle")
        info = run_child(py, "--child-bench-gen", path)
        for _ in range(rounds):
            keep(py_best, run_child(py, "--child-bench-time", path, str(repeat)))
            out = subprocess.run([TOOL, "bench", path, str(minor), str(repeat)], stdout=subprocess.PIPE,
                                 universal_newlines=True, check=True).stdout
            res = json.loads(out)
            keep(c_best, res)
    print("Python %s: %d traces, %d tracebacks; Snapshot.dump() writes %d bytes, the engine %d" % (
        info["python"], info["traces"], info["tracebacks"], info["bytes"], res["out_bytes"]))
    print("best of %d x %d, seconds as CPU / wall:" % (rounds, repeat))
    rows = [("load", "Snapshot.load", "load", "engine read+parse", "load"),
            ("load", "pickle.loads", "loads", "engine parse", "parse"),
            ("dump", "Snapshot.dump", "dump", "engine write+file", "write_file"),
            ("dump", "pickle.dumps", "dumps", "engine write", "write")]
    for _, pname, pk, cname, ck in rows:
        p, c = py_best[pk], c_best[ck]
        print("  %-14s %6.3f / %6.3f   %-18s %6.3f / %6.3f   -> %4.1fx / %4.1fx" % (
            pname, p[0], p[1], cname, c[0], c[1], p[0] / c[0], p[1] / c[1]))
    return 0


def main():
    if len(sys.argv) > 1 and sys.argv[1].startswith("--child-"):
        mode = sys.argv[1]
        if mode == "--child-gen":
            return child_gen(sys.argv[2])
        if mode == "--child-check":
            return child_check(sys.argv[2])
        if mode == "--child-bench-gen":
            return child_bench_gen(sys.argv[2])
        if mode == "--child-bench-time":
            return child_bench_time(sys.argv[2], int(sys.argv[3]))
        raise SystemExit("unknown mode " + mode)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python", action="append", help="interpreter to check (repeatable)")
    ap.add_argument("--keep", help="directory to keep the pickles in")
    ap.add_argument("--bench", action="store_true", help="time load/dump instead of checking")
    ap.add_argument("--bench-python", default="/root/.pyenv/versions/3.11.7/bin/python3")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per round (best kept)")
    ap.add_argument("--rounds", type=int, default=3, help="turns Python and the engine take")
    args = ap.parse_args()
    build_tool()
    if args.bench:
        return bench(args.bench_python, args.repeat, args.rounds)
    failures = check(args.python or default_pythons(), args.keep)
    print("OK" if not failures else "%d FAILURES" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
