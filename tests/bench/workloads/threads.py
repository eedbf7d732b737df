"""Multi-threaded: four threads each run the micro-loop's body (lists,
strings, dicts, bytes made and dropped), taking turns on the GIL, as a
threaded server's workers do."""
import sys
import threading

from common import run

N = int(sys.argv[1]) if len(sys.argv) > 1 else 75000
THREADS = 4


def worker(n, out, slot):
    keep = None
    for i in range(n):
        a = [i, i + 1]
        s = str(i)
        d = {"k": a}
        b = bytes(i & 63)
        keep = (s, d, b)
    out[slot] = keep


def work():
    out = [None] * THREADS
    threads = [threading.Thread(target=worker, args=(N, out, k)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


run(work)
