"""Blocks of a foreign domain declared with PyTraceMalloc_Track/_Untrack.

usage: hooks_track.py N

Two phases, each making the same calls through ctypes.pythonapi at
addresses of its own (made-up: BASE + 64 * i):
PyTraceMalloc_Track(12345, address, size) for N addresses with sizes
1000 + i on one line (track_a) and N more of 5000 bytes on another
(track_b); PyTraceMalloc_Untrack for every fourth of the first and every
second of the second, and for addresses never tracked (untrack); then
Track again for a few addresses still tracked, with a new size (retrack:
tracemalloc then updates the size and the traceback).

  'go':     phase 1, tracemalloc not tracing: the calls return -2 and do
            nothing, yet tmtrace must record them as tracemalloc would have;
  'inside': Untrack of every block phase 1 left (still without
            tracemalloc: tmtrace must drop them all), then
            tracemalloc.start(1) and phase 2 (the calls return 0).

After each phase it prints 'ref <json>': the blocks that must be live per
line ({lineno: [size, count]}, computed from the calls made), the calls'
return codes, and after phase 2 the target's own tracemalloc statistics of
domain 12345 (DomainFilter). 'plan <json>' before 'ready'. Exits at EOF."""

import ctypes
import json
import sys
import tracemalloc

N = int(sys.argv[1])
DOMAIN = 12345
track = ctypes.pythonapi.PyTraceMalloc_Track
track.restype = ctypes.c_int
track.argtypes = [ctypes.c_uint, ctypes.c_size_t, ctypes.c_size_t]   # uintptr_t as size_t
untrack = ctypes.pythonapi.PyTraceMalloc_Untrack
untrack.restype = ctypes.c_int
untrack.argtypes = [ctypes.c_uint, ctypes.c_size_t]
BASES = {1: (0x10000000, 0x10100000), 2: (0x11000000, 0x11100000)}


def track_a(a, n):
    codes = [0] * n
    for i in range(n):
        codes[i] = track(DOMAIN, a + 64 * i, 1000 + i)  # track_a
    return codes


def track_b(b, n):
    codes = [0] * n
    for i in range(n):
        codes[i] = track(DOMAIN, b + 64 * i, 5000)  # track_b
    return codes


def untrack_some(a, b, n):
    codes = []
    for addr in [a + 64 * i for i in range(0, n, 4)] + [b + 64 * i for i in range(0, n, 2)]:
        codes.append(untrack(DOMAIN, addr))  # untrack
    for i in range(10):
        codes.append(untrack(DOMAIN, 0x20000000 + 64 * i))  # never tracked
    return codes


def retrack(a, n):
    codes = []
    for i in range(1, n, 10):
        codes.append(track(DOMAIN, a + 64 * i, 7))  # retrack
    return codes


def untrack_all(addresses):
    return [untrack(DOMAIN, addr) for addr in addresses]  # untrack_all


def live_after(a, b, n, lines):
    """address -> (size, line): what tracemalloc holds after a phase."""
    live = {}
    for i in range(n):
        live[a + 64 * i] = (1000 + i, lines["track_a"])
    for i in range(n):
        live[b + 64 * i] = (5000, lines["track_b"])
    for i in range(0, n, 4):
        live.pop(a + 64 * i, None)
    for i in range(0, n, 2):
        live.pop(b + 64 * i, None)
    for i in range(1, n, 10):
        live[a + 64 * i] = (7, lines["retrack"])
    return live


def per_line(live):
    out = {}
    for size, line in live.values():
        s, c = out.get(line, (0, 0))
        out[line] = (s + size, c + 1)
    return out


def phase(k, lines):
    a, b = BASES[k]
    codes = {"track_a": track_a(a, N), "track_b": track_b(b, N), "untrack": untrack_some(a, b, N),
             "retrack": retrack(a, N)}
    live = live_after(a, b, N, lines)
    return live, {"file": __file__, "phase": k, "expected": per_line(live),
                  "codes": {name: sorted(set(v)) for name, v in codes.items()}}


def marker(name):
    with open(__file__, encoding="utf-8") as f:
        for no, text in enumerate(f, 1):
            if text.rstrip().endswith("# " + name):
                return no
    raise LookupError(name)


def prime_free_lists():
    """Fills the tuple free lists, so that no call made later (whose argument
    tuple comes from there, and goes back when the call returns) leaves a
    new tuple alive in a free list, on the line under test, when threads
    or a fresh free list need one more than there is."""
    junk = [tuple(range(k)) + (i,) for k in range(4) for i in range(200)]
    del junk


def main():
    prime_free_lists()
    lines = {name: marker(name) for name in ("track_a", "track_b", "untrack", "retrack", "untrack_all")}
    print("plan " + json.dumps({"file": __file__, "domain": DOMAIN, "lines": lines}), flush=True)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    live, out = phase(1, lines)
    print("ref " + json.dumps(out), flush=True)
    if sys.stdin.readline().strip() != "inside":
        return
    left = untrack_all(sorted(live))
    tracemalloc.start(1)
    live, out = phase(2, lines)
    out["codes"]["untrack_all"] = sorted(set(left))
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, DOMAIN)])
    out["lineno"] = [{"filename": s.traceback[0].filename, "lineno": s.traceback[0].lineno,
                      "size": s.size, "count": s.count} for s in snap.statistics("lineno")]
    del snap
    print("ref " + json.dumps(out), flush=True)
    sys.stdin.read()


main()
