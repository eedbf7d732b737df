"""Memory for --sample's test: lines whose blocks are known.

usage: sampled.py plain|tracemalloc

Protocol as freelist.py. After 'go': STRS keeps 20000 strs of 320-330
bytes (pymalloc, a size class no other line of the loop uses), TUPLES keeps
30000 3-tuples (pymalloc's 64-byte class, shared with the loop's
short-lived objects), BLOBS keeps 400 bytes objects of 6000 bytes (the raw
domain, which --sample traces exactly)."""

import json
import sys
import tracemalloc

MODE = sys.argv[1]
STRS, TUPLES, BLOBS = [], [], []


def main():
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    if MODE == "tracemalloc":
        tracemalloc.start(1)
    for i in range(30000):
        scratch = {"i": i, "s": str(i)}          # short-lived, in the tuples' class and others
        if i < 20000:
            STRS.append("s" * 300 + str(i) * 2)
        TUPLES.append((i, -i, scratch["i"]))
        if i % 75 == 0:
            BLOBS.append(bytes(6000))
    if MODE == "tracemalloc":
        snap = tracemalloc.take_snapshot()
        tracemalloc.stop()
        lines = [{"lineno": s.traceback[0].lineno, "size": s.size, "count": s.count}
                 for s in snap.statistics("lineno") if s.traceback[0].filename == __file__]
        print("ref " + json.dumps({"file": __file__, "lineno": lines}), flush=True)
    else:
        print("done", flush=True)
    sys.stdin.read()


main()
