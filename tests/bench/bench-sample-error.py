#!/usr/bin/env python3
"""--sample's statistical error on the leak workload, measured: the same
workload run under tracemalloc (inside, 1 frame) and under tmtrace --sample,
round after round; for each round, how many of tracemalloc's top-10 lines
are in --sample's top 10, and each of those lines' estimate against
tracemalloc's size.

usage: sudo tests/bench/bench-sample-error.py [--rounds N] [--python PATH]...
                                              [--requests N]"""

import argparse
import json
import os
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
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        p = start(python, requests, {"TRACEMALLOC": "1", "STATS": f.name})
        p.stdin.write("go\n")
        p.stdin.close()
        p.stdout.read()
        p.wait()
        return {short(fn, ln): size for fn, ln, size, _ in json.load(open(f.name))}


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
    args = ap.parse_args()
    for python in args.python or overhead.default_pythons():
        overlaps, errors = [], {}
        print("\n%s, leak workload, %d requests, %d rounds" % (python, args.requests, args.rounds))
        for _ in range(args.rounds):
            ref = reference(python, args.requests)
            est, info = sampled(python, args.requests)
            want, got = top(ref), top(est)
            overlaps.append(len(set(want) & set(got)))
            for line in want:
                errors.setdefault(line, []).append((est.get(line, 0) - ref[line]) / ref[line])
            print("  round: %d of tracemalloc's top 10 in --sample's top 10 (%s); missing %s, instead %s"
                  % (overlaps[-1], info, sorted(set(want) - set(got)), sorted(set(got) - set(want))), flush=True)
        print("  top-10 overlap: median %d, min %d, max %d of 10" % (statistics.median(overlaps), min(overlaps),
                                                                     max(overlaps)))
        print("  %-28s %10s %10s %10s" % ("tracemalloc's top-10 line", "mean err", "min err", "max err"))
        for line, errs in sorted(errors.items(), key=lambda kv: -abs(statistics.mean(kv[1]))):
            print("  %-28s %+9.0f%% %+9.0f%% %+9.0f%%" % (line, 100 * statistics.mean(errs), 100 * min(errs),
                                                         100 * max(errs)))


if __name__ == "__main__":
    sys.exit(main())
