#!/usr/bin/env python3
"""Write tests/unit/fixtures/pickle-3.X-NAME.{pickle,json} with this Python.

    for v in 3.8.18 3.9.18 3.10.13 3.11.7 3.12.1 3.13.0; do
        /root/.pyenv/versions/$v/bin/python3 scripts/gen-pickle-fixtures.py
    done

Each .pickle is what tracemalloc.Snapshot.dump() (or pickle.dump() with an
older protocol) of this version writes; the .json sidecar says what
test_pickle.c must read from it:

    {"python": "3.11.7", "py_minor": 11, "protocol": 5,
     "canonical": true,            # shared like take_snapshot(): the engine
                                   # must write these very bytes back
     "traceback_limit": 25,
     "tracebacks": [[[filename, lineno], ...], ...],   # most recent first
     "traces": [[domain, size, traceback index, total_nframe or null], ...]}

Filenames are JSON strings with \\u escapes (ensure_ascii), lone surrogates
included: the pickle stores them as UTF-8 with 'surrogatepass'.

Everything is deterministic but "real", which takes a true take_snapshot()
(filtered to this file, so it stays small); its line numbers follow this
file's. Keep the files small: tens of KB per version.
"""

import json
import os
import pickle
import sys
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "unit", "fixtures")
MINOR = sys.version_info[1]


def raw(domain, size, frames, total):
    return (domain, size, frames, total) if MINOR >= 9 else (domain, size, frames)


class Builder:
    """Traces shared as take_snapshot() shares them: one str per filename,
    one tuple per (frames, total_nframe), fresh frame tuples in each."""

    def __init__(self):
        self.names = {}
        self.tbs = {}

    def trace(self, domain, size, frames, total):
        key = (tuple(frames), total if MINOR >= 9 else None)
        tb = self.tbs.get(key)
        if tb is None:
            tb = tuple((self.names.setdefault(f, f), l) for f, l in frames)
            self.tbs[key] = tb
        return raw(domain, size, tb, total)


def shared():
    b = Builder()
    u = ("<unknown>", 0)
    app = [("/srv/app/models.py", 120), ("/srv/app/views.py", 45), ("/srv/app/main.py", 7)]
    lib = [("/usr/lib/python3/json/decoder.pyc", 353), ("/srv/app/views.py", 61)]
    traces = [
        b.trace(0, 64, app, 3),
        b.trace(0, 128, app, 3),            # the same traceback
        b.trace(0, 32, app, 12),            # same frames, other total_nframe
        b.trace(0, 4096, app[:2], None),
        b.trace(0, 1, [u], 1),
        b.trace(0, 2, [u], None),
        b.trace(1, 256, lib, 2),
        b.trace(2 ** 31, 65536, lib, 2),
        b.trace(2 ** 32 - 1, 2 ** 32, lib, 2),
        b.trace(7, 2 ** 40 + 3, [u, u], 65535),
        b.trace(0, 2 ** 64 - 1, app[1:], 2 ** 16 - 1),
        b.trace(0, 0, [("/srv/app/main.py", 2 ** 32 - 1)], 1),
        b.trace(3, 255, [("/srv/app/models.py", 2 ** 31)], 2 ** 31),
        raw(0, 9, (), 0),                    # hand-made: no frames at all
    ]
    return traces, 25


def unicode():
    b = Builder()
    names = ["caf\u00e9.py", "/home/j\u00fcrgen/\u65e5\u672c\u8a9e.py", "emoji\U0001F40D.py",
             "lone\udc80surrogate.py", "quote\"back\\slash.py", "tab\tnewline\n.py", "x" * 300]
    traces = [b.trace(i, 100 + i, [(n, i + 1), (names[0], 1)], 2) for i, n in enumerate(names)]
    return traces, 10


def many():
    """Over 1000 traces (APPENDS batches) and 256 memo entries (LONG_BINGET)."""
    b = Builder()
    files = ["/srv/app/m%d.py" % i for i in range(8)]
    tbs = [[(files[(i * 7 + j) % 8], (i * 31 + j * 17) % 400 + 1) for j in range(1 + i % 3)]
           for i in range(50)]
    traces = [b.trace(i % 3, (i * 7919) % 5000, tbs[(i * 13) % 50], 1 + (i * 13) % 50 % 3)
              for i in range(1003)]
    return traces, 3


def real():
    tracemalloc.start(10)
    keep = []

    def leaf(n):
        keep.append([bytearray(100 + i) for i in range(n)])

    def branch():
        for i in range(4):
            leaf(i)

    branch()
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return snap.filter_traces([tracemalloc.Filter(True, __file__)])


def sidecar(snap, protocol, canonical):
    tbs, index, traces = [], {}, []
    for t in snap.traces._traces:
        frames = [list(f) for f in t[2]]
        key = json.dumps(frames)
        if key not in index:
            index[key] = len(tbs)
            tbs.append(frames)
        traces.append([t[0], t[1], index[key], t[3] if len(t) == 4 else None])
    return {"python": sys.version.split()[0], "py_minor": MINOR, "protocol": protocol,
            "canonical": canonical, "traceback_limit": snap.traceback_limit,
            "tracebacks": tbs, "traces": traces}


def write(name, snap, protocol=None, canonical=True):
    base = os.path.join(OUT, "pickle-3.%d-%s" % (MINOR, name))
    if protocol is None:
        snap.dump(base + ".pickle")
    else:
        with open(base + ".pickle", "wb") as fp:
            pickle.dump(snap, fp, protocol)
    with open(base + ".json", "w") as fp:
        json.dump(sidecar(snap, protocol or pickle.HIGHEST_PROTOCOL, canonical), fp, separators=(",", ":"))
        fp.write("\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    traces, limit = shared()
    snap = tracemalloc.Snapshot(traces, limit)
    write("shared", snap)
    write("proto2", snap, protocol=2, canonical=False)
    write("proto4", snap, protocol=4, canonical=False)
    # A snapshot built from a tuple keeps it; the engine writes a list.
    write("tuple", tracemalloc.Snapshot(tuple(traces), limit), canonical=False)
    traces, limit = unicode()
    write("unicode", tracemalloc.Snapshot(traces, limit))
    traces, limit = many()
    write("many", tracemalloc.Snapshot(traces, limit))
    write("empty", tracemalloc.Snapshot([], 1))
    write("real", real())


if __name__ == "__main__":
    main()
