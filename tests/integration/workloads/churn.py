"""Memory for --lazy-frees' test: pymalloc blocks freed and reused at a high
rate while tmtrace sweeps the pools several times a second.

usage: churn.py plain|tracemalloc

Protocol as freelist.py. After 'go', 100000 rounds. Each round makes a
short-lived dict, str and list, freed within the round (the list's items
take 320 to 792 bytes: over pymalloc's 512 half the time, when pymalloc
hands them to the raw domain). KEPT keeps a 2-tuple every 4th round and
drops its oldest every 12th; PAIRS keeps a list of 3 every 10th round; BIG
keeps a bytes of 400 to 1299 bytes every 20th round; SHRUNK keeps a
bytearray every 25th round whose buffer, made over 512 bytes (the raw
domain's), a realloc cuts to 101 bytes, which stays in the raw domain
(never in a pool, whatever its size). Every 2000th round
BATCH's 300 strs of about 400 bytes are replaced, the old ones freed after
the new ones are made, so their blocks stay free a while. Round 50000
makes 200000 strs and drops them at once: a spike of the peak. Every block a
report should show is known: KEPT's, PAIRS', BATCH's, BIG's and
SHRUNK's lines, and nothing on the short-lived lines."""

import json
import sys
import tracemalloc

MODE = sys.argv[1]
KEPT, PAIRS, BATCH, BIG, SHRUNK = [], [], [], [], []


def main():
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    if MODE == "tracemalloc":
        tracemalloc.start(1)
    for i in range(100000):
        scratch = {"i": i, "s": "x" * (i % 200)}    # short-lived, many size classes
        wide = [i] * (40 + i % 60)                  # short-lived, 320-792 B: pymalloc's and the raw domain's
        if i % 4 == 0:
            KEPT.append((i, scratch["i"] + 1))
        if i % 12 == 0:
            KEPT.pop(0)
        if i % 10 == 0:
            PAIRS.append([i, i, i])
        if i % 20 == 0:
            BIG.append(bytes(400 + i % 900))        # kept, both sides of the 512-byte threshold
        if i % 25 == 0:
            buf = bytearray(900 + i % 100)          # the raw domain's
            del buf[100:]                           # realloc'd to 101 bytes, still the raw domain's
            SHRUNK.append(buf)
        if i == 50000:
            # a spike in the middle, gone at once: tracemalloc's peak has
            # it, --lazy-frees' only if a report came while it lived
            spike = [str(j) * 4 for j in range(200000)]
            del spike
        if i % 2000 == 0:
            # the old batch goes after the new one is made: its blocks
            # stay free until the next batch, for the sweeps to find
            BATCH[:] = ["b" * 380 + str(j) for j in range(i, i + 300)]
    if MODE == "tracemalloc":
        snap = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        lines = [{"lineno": s.traceback[0].lineno, "size": s.size, "count": s.count}
                 for s in snap.statistics("lineno") if s.traceback[0].filename == __file__]
        print("ref " + json.dumps({"file": __file__, "lineno": lines, "current": current, "peak": peak}),
              flush=True)
    else:
        print("done", flush=True)
    sys.stdin.read()


main()
