"""A workload whose output and exit status must not change under tmtrace.

It prints 'ready', waits for 'go', then for ROUNDS rounds allocates and frees
a deterministic mix (objects, strings, dicts, bytes, lists grown by
realloc), in two threads, printing a checksum per round; it exits with
status 7 after the last round so tests can check the status too."""

import hashlib
import sys
import threading
import time

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 40
DELAY = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05


def round_(r):
    h = hashlib.sha256()
    data = [{"r": r, "i": i, "s": "v%d" % (i * r)} for i in range(3000)]
    blobs = [bytes([i % 251]) * (i % 700 + 1) for i in range(2000)]
    grown = []
    for i in range(5000):
        grown.append((i, str(i)))
    for d in data:
        h.update(d["s"].encode())
    for b in blobs:
        h.update(b)
    h.update(repr(grown[-10:]).encode())
    return h.hexdigest()[:16]


def side(results):
    for r in range(ROUNDS):
        results.append(round_(r + 1000))


def main():
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    other = []
    t = threading.Thread(target=side, args=(other,))
    t.start()
    for r in range(ROUNDS):
        print("round %d %s" % (r, round_(r)), flush=True)
        time.sleep(DELAY)
    t.join()
    print("side %s" % hashlib.sha256("".join(other).encode()).hexdigest()[:16], flush=True)
    print("done", flush=True)
    sys.exit(7)


main()
