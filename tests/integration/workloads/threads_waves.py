"""Threads started after tmtrace attached, threads that end, and a second
wave of threads reusing the first wave's thread stacks and states.

usage: threads_waves.py plain|tracemalloc N

One thread ('early') exists before 'ready' and waits; on 'go' it is
released, and a first wave of four threads starts; all five allocate N
bytes objects each, of sizes BASES[k] + i (i = 0..N-1), into preallocated
lists, on a line of their own (one function per thread), and end. A second
wave of four more threads, started after the first ended, does the same,
plus one thread making mixed objects (compared with tracemalloc only;
no type with a free list, so the counts do not depend on timing).
Everything stays alive. Protocol as mix.py: 'ready', 'go', then 'done'
(plain) or 'ref <json>' (tracemalloc started at 'go'), exit at EOF. The
plan (file, N, sizes, lines) is printed before 'ready' as 'plan <json>'."""

import json
import sys
import threading
import tracemalloc  # in every mode: both runs then have the same history

MODE = sys.argv[1]
N = int(sys.argv[2])
BASES = [10, 100, 300, 480, 600, 5000, 10000, 100000, 2000]
SLOTS = [[None] * N for _ in range(len(BASES) + 1)]


def w0(s, n):
    for i in range(n):
        s[i] = bytes(BASES[0] + i)  # w0


def w1(s, n):
    for i in range(n):
        s[i] = bytes(BASES[1] + i)  # w1


def w2(s, n):
    for i in range(n):
        s[i] = bytes(BASES[2] + i)  # w2


def w3(s, n):
    for i in range(n):
        s[i] = bytes(BASES[3] + i)  # w3


def w4(s, n):
    for i in range(n):
        s[i] = bytes(BASES[4] + i)  # w4


def w5(s, n):
    for i in range(n):
        s[i] = bytes(BASES[5] + i)  # w5


def w6(s, n):
    for i in range(n):
        s[i] = bytes(BASES[6] + i)  # w6


def w7(s, n):
    for i in range(n):
        s[i] = bytes(BASES[7] + i)  # w7


def w8(s, n, go):
    go.wait()
    for i in range(n):
        s[i] = bytes(BASES[8] + i)  # w8


class Obj:
    __slots__ = ("num", "text", "set", "buf")

    def __init__(self, num, text, set_, buf):
        self.num, self.text, self.set, self.buf = num, text, set_, buf


def mixed(s, n):
    # No type with a free list here: every block is new, whatever ran before.
    for i in range(n):
        s[i] = Obj(i * 7919, "x%d" % i, {i, i + 1}, bytearray(i % 50))  # mixed


def marker_lines():
    out = {}
    with open(__file__, encoding="utf-8") as f:
        for no, text in enumerate(f, 1):
            for k in range(len(BASES)):
                if text.rstrip().endswith("# w%d" % k):
                    out[k] = no
            if text.rstrip().endswith("# mixed"):
                out["mixed"] = no
    return out


def wave(fns, first):
    threads = [threading.Thread(target=fn, args=(SLOTS[first + k], N))
               for k, fn in enumerate(fns)]
    for t in threads:
        t.start()
    return threads


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
    go = threading.Event()
    early = threading.Thread(target=w8, args=(SLOTS[8], N, go))
    early.start()
    print("plan " + json.dumps({"file": __file__, "n": N, "bases": BASES,
                                "lines": marker_lines()}), flush=True)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        go.set()
        return
    if MODE == "tracemalloc":
        tracemalloc.start(1)
    go.set()
    for t in wave([w0, w1, w2, w3], 0):
        t.join()
    early.join()
    second = wave([w4, w5, w6, w7], 4)
    m = threading.Thread(target=mixed, args=(SLOTS[9], N))
    m.start()
    for t in second + [m]:
        t.join()
    if MODE == "tracemalloc":
        reference()
    else:
        print("done", flush=True)
    sys.stdin.read()


main()
