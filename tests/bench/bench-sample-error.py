#!/usr/bin/env python3
"""--sample's statistical error on the leak workload, measured: the same
workload run under tracemalloc (inside, 1 frame) and under tmtrace --sample,
round after round; for each round, how many of tracemalloc's top-10 lines
are in --sample's top 10, and each of those lines' estimate against
tracemalloc's size.

Then what an unbiased sampler could do with the same budget: from every
live block tracemalloc saw (its size and line), it draws at random, size
class by size class, as many blocks as --sample has samples (one per pool
the class fills) or a multiple of that, shares each class's exact block
count out among the drawn blocks' lines as --sample does, and counts how
often its top 10 is tracemalloc's. That separates what the number of
samples allows from the bias of where --sample takes them.

usage: sudo tests/bench/bench-sample-error.py [--rounds N] [--python PATH]...
                                              [--requests N] [--trials N]"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from importlib import import_module  # noqa: E402

overhead = import_module("bench-overhead")
WORKLOADS = os.path.join(HERE, "workloads")


def start(python, requests, env):
    full = dict(os.environ)
    full.pop("PYTHONTRACEMALLOC", None)
    full.update(env)
    p = subprocess.Popen([python, os.path.join(WORKLOADS, "leak.py"), str(requests)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=full, cwd=WORKLOADS)
    assert p.stdout.readline().strip() == "ready"
    return p


def short(filename, lineno):
    return "%s:%d" % (os.path.basename(filename), lineno)


def reference(python, requests):
    """tracemalloc's size per line, and every live block as (line, size)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        p = start(python, requests, {"TRACEMALLOC": "1", "TRACES": f.name})
        p.stdin.write("go\n")
        p.stdin.close()
        p.stdout.read()
        p.wait()
        blocks = [(short(fn, ln), size) for fn, ln, size in json.load(open(f.name))]
    lines = {}
    for line, size in blocks:
        lines[line] = lines.get(line, 0) + size
    return lines, blocks


# pymalloc (3.8+ on 64 bits): 16-byte size classes up to 512 bytes; a pool
# is 16 KiB from 3.10 (4 KiB before) less its 48-byte header. Larger
# blocks, and requests of 0 bytes, go to the raw domain, which --sample
# traces exactly.
ALIGNMENT, SMALL_MAX, POOL_OVERHEAD = 16, 512, 48


def pool_size_of(python):
    minor = int(subprocess.check_output([python, "-c", "import sys; print(sys.version_info[1])"]))
    return 16384 if minor >= 10 else 4096


def ideal_overlaps(want, blocks, pool_size, per_pool, trials, rng):
    """Top-10 overlaps of an unbiased sampler drawing per_pool blocks per
    pool a class fills (None: every block, the sampler's own ceiling), and
    the samples it drew in all."""
    classes, exact = {}, {}
    for line, size in blocks:
        if 0 < size <= SMALL_MAX:
            classes.setdefault((size + ALIGNMENT - 1) // ALIGNMENT, []).append(line)
        else:
            exact[line] = exact.get(line, 0) + size
    overlaps, drawn = [], 0
    for _ in range(trials):
        est, drawn = dict(exact), 0
        for c, lines in classes.items():
            block = c * ALIGNMENT
            pools = -(-len(lines) // ((pool_size - POOL_OVERHEAD) // block))
            k = len(lines) if per_pool is None else min(len(lines), per_pool * pools)
            drawn += k
            for line in rng.sample(lines, k):
                est[line] = est.get(line, 0) + len(lines) * block / k
        overlaps.append(len(set(want) & set(top(est))))
    return overlaps, drawn


def sampled(python, requests):
    p = start(python, requests, {"HOLD": "1"})
    t = subprocess.Popen([overhead.TMTRACE, "-p", str(p.pid), "--sample", "--format", "json", "-i", "0.5",
                          "-t", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = t.stderr.readline()
    if not line.startswith("tmtrace: attached"):
        raise SystemExit("tmtrace did not attach: %r" % line)
    p.stdin.write("go\n")
    p.stdin.flush()
    assert p.stdout.readline().startswith("elapsed")
    done = time.time()
    report = None
    for out in t.stdout:
        r = json.loads(out)
        if r["time"] > done + 0.1:
            report = r
            break
    t.send_signal(2)
    t.wait()
    p.stdin.close()
    p.wait()
    return {short(s["traceback"][0]["filename"], s["traceback"][0]["lineno"]): s["size"]
            for s in report["stats"]}, report.get("sampled")


def top(d, n=10):
    return [k for k, _ in sorted(d.items(), key=lambda kv: -kv[1])[:n]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--python", action="append")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--trials", type=int, default=200, help="draws of the unbiased sampler per round")
    args = ap.parse_args()
    rng = random.Random(1)
    budgets = (1, 4, 16, 64, None)
    for python in args.python or overhead.default_pythons():
        overlaps, errors, ideal = [], {}, {b: [] for b in budgets}
        pool_size = pool_size_of(python)
        print("\n%s, leak workload, %d requests, %d rounds" % (python, args.requests, args.rounds))
        for _ in range(args.rounds):
            ref, blocks = reference(python, args.requests)
            est, info = sampled(python, args.requests)
            want, got = top(ref), top(est)
            overlaps.append(len(set(want) & set(got)))
            for line in want:
                errors.setdefault(line, []).append((est.get(line, 0) - ref[line]) / ref[line])
            print("  round: %d of tracemalloc's top 10 in --sample's top 10 (%s); missing %s, instead %s"
                  % (overlaps[-1], info, sorted(set(want) - set(got)), sorted(set(got) - set(want))), flush=True)
            for b in budgets:
                got_ideal, drawn = ideal_overlaps(want, blocks, pool_size, b, args.trials, rng)
                ideal[b].extend(got_ideal)
                print("    unbiased sampler, %s: %d samples, top 10 exact in %d%% of %d draws, overlap median %d, "
                      "min %d" % ("%d a pool" % b if b else "every block", drawn,
                                  100 * sum(o == 10 for o in got_ideal) // len(got_ideal), len(got_ideal),
                                  statistics.median(got_ideal), min(got_ideal)), flush=True)
        print("  top-10 overlap: median %d, min %d, max %d of 10" % (statistics.median(overlaps), min(overlaps),
                                                                     max(overlaps)))
        for b in budgets:
            print("  unbiased sampler, %-12s top 10 exact in %3d%% of draws, overlap median %d, 10th percentile %d"
                  % (("%d a pool:" % b) if b else "every block:", 100 * sum(o == 10 for o in ideal[b]) // len(ideal[b]),
                     statistics.median(ideal[b]), sorted(ideal[b])[len(ideal[b]) // 10]))
        print("  %-28s %10s %10s %10s" % ("tracemalloc's top-10 line", "mean err", "min err", "max err"))
        for line, errs in sorted(errors.items(), key=lambda kv: -abs(statistics.mean(kv[1]))):
            print("  %-28s %+9.0f%% %+9.0f%% %+9.0f%%" % (line, 100 * statistics.mean(errs), 100 * min(errs),
                                                         100 * max(errs)))


if __name__ == "__main__":
    sys.exit(main())
