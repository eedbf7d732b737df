"""tracemalloc running inside the target while tmtrace watches it.

usage: hooks_tracemalloc.py plain|tracemalloc|before|mid N

  plain:       no tracemalloc; prints 'done' instead of 'ref <json>' (the
               run tmtrace watches when tracemalloc runs in another one);
  tracemalloc: tracemalloc.start(1) on 'go' (tmtrace attached before it);
  before:      tracemalloc.start(1) before 'ready' (tmtrace attaches to a
               process already tracing), tracemalloc.clear_traces() on 'go';
  mid:         on 'go', known blocks are allocated before
               tracemalloc.start(1) and after tracemalloc.stop(), the rest
               in between.

Then it allocates objects, strings, containers, bytes of many sizes, lists
and bytearrays grown by realloc, blocks freed again, raw-domain blocks
(PyMem_RawMalloc through ctypes) and a second thread's data, all kept
alive, and prints 'ref <json>': its own tracemalloc's lineno statistics for
this file, from a snapshot taken at the end (tracemalloc, before: it keeps
running, with its tables full, until EOF) or before stop() (mid).
'plan <json>' before 'ready' gives the lines of the known blocks.
Exits at EOF."""

import ctypes
import json
import os
import sys
import threading
import tracemalloc

VARIANT, N = sys.argv[1], int(sys.argv[2])
keep = []
RAW = ctypes.pythonapi.PyMem_RawMalloc
RAW.restype = ctypes.c_void_p
RAW.argtypes = [ctypes.c_size_t]
RAW_PTRS = (ctypes.c_void_p * N)()


class Point:
    def __init__(self, x):
        self.x = x
        self.neighbours = [x, x + 1]


def make_objects(n):
    return [Point(i) for i in range(n)]


def make_strings(n):
    return ["%d-%s" % (i, "x" * (i % 97)) for i in range(n)]


def make_containers(n):
    return [{"key": i, "pair": (i, i + 1), "set": {i}} for i in range(n)]


def make_bytes():
    sizes = [1, 7, 8, 16, 100, 255, 256, 511, 512, 513, 1000, 4096, 10000,
             65536, 100000, 262144, 1048576]
    return [bytes(size) for size in sizes for _ in range(20)]


def grow_list(n):
    out = []
    for i in range(n):
        out.append(i * 1000003)
    return out


def grow_bytearray(n):
    buf = bytearray()
    for _ in range(n):
        buf += b"abcdefgh" * 16
    return buf


def half_freed(n):
    tmp = [bytes(400) for _ in range(n)]
    del tmp[::2]
    return tmp


def raw_blocks(n):
    for i in range(n):
        RAW_PTRS[i] = RAW(777 + i)  # raw


def thread_body(n, out):
    out.append(["%d" % i * 7 for i in range(n)])


def known_before(n):
    out = [None] * n  # known_before_list
    for i in range(n):
        out[i] = bytes(2000 + i)  # known_before
    return out


def known_after(n):
    out = [None] * n  # known_after_list
    for i in range(n):
        out[i] = bytes(3000 + i)  # known_after
    return out


def work():
    keep.append(make_objects(N))
    keep.append(make_strings(N))
    keep.append(make_containers(N // 4))
    keep.append(make_bytes())
    keep.append(grow_list(N * 2))
    keep.append(grow_bytearray(N // 10))
    keep.append(half_freed(N // 2))
    raw_blocks(N)
    box = []
    t = threading.Thread(target=thread_body, args=(N, box))
    t.start()
    t.join()
    keep.append(box)


def snapshot_stats():
    snap = tracemalloc.take_snapshot()
    return [{"lineno": s.traceback[0].lineno, "size": s.size, "count": s.count}
            for s in snap.statistics("lineno") if s.traceback[0].filename == __file__]


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
    if VARIANT == "before":
        tracemalloc.start(1)
    print("plan " + json.dumps({"file": __file__, "n": N, "pythonmalloc": os.environ.get("PYTHONMALLOC"),
                                "lines": {
            name: marker(name) for name in ("raw", "known_before", "known_after",
                                            "known_before_list", "known_after_list")}}), flush=True)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    if VARIANT == "tracemalloc":
        tracemalloc.start(1)
    elif VARIANT == "before":
        tracemalloc.clear_traces()
    elif VARIANT == "mid":
        keep.append(known_before(N))
        tracemalloc.start(1)
    work()
    if VARIANT == "plain":
        print("done", flush=True)
        sys.stdin.read()
        return
    stats = snapshot_stats()
    if VARIANT == "mid":
        tracemalloc.stop()
        keep.append(known_after(N))
    print("ref " + json.dumps({"file": __file__, "lineno": stats,
                               "tracing": tracemalloc.is_tracing()}), flush=True)
    del stats
    sys.stdin.read()


main()
