"""A deterministic allocation workload for fidelity tests.

usage: mix.py plain|tracemalloc [NFRAME]

It prints 'ready' and waits for 'go' on stdin. It then allocates objects,
strings, containers, bytes of many sizes, lists and bytearrays grown by
realloc, blocks freed again, and a second thread's data, all kept alive.
In tracemalloc mode it runs tracemalloc inside itself from 'go' on and
prints 'ref <json>': its own statistics (lineno and traceback) for this
file. In plain mode it prints 'done', for tmtrace attached from outside.
It exits at EOF on stdin."""

import json
import sys
import threading

MODE = sys.argv[1]
NFRAME = int(sys.argv[2]) if len(sys.argv) > 2 else 1
keep = []


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


def freed_again(n):
    tmp = [bytes(300) for _ in range(n)]
    del tmp
    return None


def half_freed(n):
    tmp = [bytes(400) for _ in range(n)]
    del tmp[::2]
    return tmp


def nested_a(n):
    return nested_b(n)


def nested_b(n):
    return [("nested", i) for i in range(n)]


def thread_body(n, out):
    out.append(["%d" % i * 7 for i in range(n)])


def workload():
    keep.append(make_objects(20000))
    keep.append(make_strings(20000))
    keep.append(make_containers(5000))
    keep.append(make_bytes())
    keep.append(grow_list(50000))
    keep.append(grow_bytearray(2000))
    keep.append(freed_again(10000))
    keep.append(half_freed(10000))
    keep.append(nested_a(10000))
    box = []
    t = threading.Thread(target=thread_body, args=(20000, box))
    t.start()
    t.join()
    keep.append(box)


def report_reference():
    import tracemalloc
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    me = __file__
    lineno = [{"lineno": s.traceback[0].lineno, "size": s.size, "count": s.count}
              for s in snap.statistics("lineno") if s.traceback[0].filename == me]
    tracebacks = [{"frames": [[f.filename, f.lineno] for f in reversed(list(s.traceback))],
                   "size": s.size, "count": s.count}
                  for s in snap.statistics("traceback")
                  if s.traceback[-1].filename == me]
    print("ref " + json.dumps({"file": me, "lineno": lineno, "traceback": tracebacks}),
          flush=True)


def main():
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    if MODE == "tracemalloc":
        import tracemalloc
        tracemalloc.start(NFRAME)
    # One call site for both modes: tracebacks must match line for line.
    workload()
    if MODE == "tracemalloc":
        report_reference()
    else:
        print("done", flush=True)
    sys.stdin.read()


main()
