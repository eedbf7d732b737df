"""Raw-domain blocks allocated WITHOUT the GIL, from several threads.

usage: threads_raw.py plain|tracemalloc N

Each of four threads calls libpython's PyMem_RawMalloc through ctypes.CDLL
(which releases the GIL around the call) N times, with a size of its own,
on a line of its own (one function per thread), and keeps the addresses in
a preallocated ctypes array (so nothing else stays alive on that line).
Protocol: 'ready'; on 'go' it allocates and prints 'done' (plain) or
'ref <json>' (tracemalloc, started at 'go': its lineno statistics for this
file); on 'free' every thread frees every other block of its own, again
without the GIL, and it prints 'freed' or 'ref <json>'; it exits at EOF.
The sizes, lines and counts are printed on 'ready' as 'plan <json>'."""

import ctypes
import json
import sys
import threading
import tracemalloc  # in every mode: both runs then have the same history

MODE = sys.argv[1]
N = int(sys.argv[2])
SIZES = [24, 333, 4103, 150000]   # one per thread: tiny, small, page-ish, mmap-sized


def libpython():
    """The library holding PyMem_RawMalloc: pyenv's shared libpython, or the
    executable itself (Debian's static python3.11)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "/libpython3" in path:
                return ctypes.CDLL(path)
    return ctypes.CDLL(None)


LIB = libpython()
raw_malloc = LIB.PyMem_RawMalloc
raw_malloc.restype = ctypes.c_void_p
raw_malloc.argtypes = [ctypes.c_size_t]
raw_free = LIB.PyMem_RawFree
raw_free.restype = None
raw_free.argtypes = [ctypes.c_void_p]
PTRS = [(ctypes.c_void_p * N)() for _ in SIZES]


def alloc0(p, n):
    for i in range(n):
        p[i] = raw_malloc(SIZES[0])  # alloc0


def alloc1(p, n):
    for i in range(n):
        p[i] = raw_malloc(SIZES[1])  # alloc1


def alloc2(p, n):
    for i in range(n):
        p[i] = raw_malloc(SIZES[2])  # alloc2


def alloc3(p, n):
    for i in range(n):
        p[i] = raw_malloc(SIZES[3])  # alloc3


def free_half(p, n):
    for i in range(0, n, 2):
        raw_free(p[i])  # free_half
        p[i] = None


ALLOCS = [alloc0, alloc1, alloc2, alloc3]


def marker_lines():
    """Line numbers of the '# allocK' comments, found by reading this file."""
    out = {}
    with open(__file__, encoding="utf-8") as f:
        for no, text in enumerate(f, 1):
            for k in range(len(SIZES)):
                if text.rstrip().endswith("# alloc%d" % k):
                    out[k] = no
    return out


def in_threads(fns):
    threads = [threading.Thread(target=fn, args=(PTRS[k], N)) for k, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def reference():
    snap = tracemalloc.take_snapshot()
    stats = [{"lineno": s.traceback[0].lineno, "size": s.size, "count": s.count}
             for s in snap.statistics("lineno") if s.traceback[0].filename == __file__]
    print("ref " + json.dumps({"file": __file__, "lineno": stats}), flush=True)


def prime_free_lists():
    """Fills the tuple free lists, so that no call made later (whose argument
    tuple comes from there, and goes back when the call returns) leaves a
    new tuple alive in a free list, on the line under test, when threads
    or a fresh free list need one more than there is."""
    junk = [tuple(range(k)) + (i,) for k in range(4) for i in range(200)]
    del junk


def main():
    prime_free_lists()
    # Warm up ctypes' call path on another line (lazily created state).
    raw_free(raw_malloc(16))
    print("plan " + json.dumps({"file": __file__, "n": N, "sizes": SIZES,
                                "lines": marker_lines()}), flush=True)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    if MODE == "tracemalloc":
        tracemalloc.start(1)
    in_threads(ALLOCS)
    if MODE == "tracemalloc":
        reference()
    else:
        print("done", flush=True)
    if sys.stdin.readline().strip() != "free":
        return
    in_threads([free_half] * len(SIZES))
    if MODE == "tracemalloc":
        reference()
    else:
        print("freed", flush=True)
    sys.stdin.read()


main()
