#!/usr/bin/env python3
"""tmtrace's overhead on a traced Python program, side by side with
tracemalloc's, in one run (these machines are noisy: ratios against a
baseline measured in the same round, medians over rounds).

usage: sudo tests/bench/bench-overhead.py [--rounds N] [--python PATH]...

For each Python and workload it runs, interleaved per round:
  none          no tracing
  tracemalloc   tracemalloc started inside, nframe 1
  tmtrace       tmtrace attached from outside, nframe 1
and prints the median time of each and its slowdown against `none`."""

import argparse
import glob
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TMTRACE = os.path.join(ROOT, "build", "tmtrace")
WORKLOADS = {"micro": ("micro.py", "300000"), "mix": ("mix.py", "2000")}


def default_pythons():
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.11.*/bin/python3.11")))
    return [p for p in ["/usr/bin/python3.11"] + found[-1:] if os.access(p, os.X_OK)]


def run_once(python, workload, config, nframe=1):
    script, arg = WORKLOADS[workload]
    env = dict(os.environ)
    env.pop("PYTHONTRACEMALLOC", None)
    if config == "tracemalloc":
        env["TRACEMALLOC"] = str(nframe)
    p = subprocess.Popen([python, os.path.join(HERE, "workloads", script), arg], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env, cwd=os.path.join(HERE, "workloads"))
    assert p.stdout.readline().strip() == "ready"
    tracer = None
    if config == "tmtrace":
        tracer = subprocess.Popen([TMTRACE, "-p", str(p.pid), "-i", "3600", "-n", str(nframe)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = tracer.stderr.readline()
        if not line.startswith("tmtrace: attached"):
            raise SystemExit("tmtrace did not attach: %r" % line)
    p.stdin.write("go\n")
    p.stdin.flush()
    line = p.stdout.readline()
    p.stdin.close()
    p.wait()
    if tracer:
        tracer.send_signal(2)
        tracer.wait()
    if not line.startswith("elapsed "):
        raise SystemExit("%s %s %s: no timing (%r)" % (python, workload, config, line))
    return float(line.split()[1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--python", action="append")
    ap.add_argument("--workload", action="append", choices=sorted(WORKLOADS))
    args = ap.parse_args()
    pythons = args.python or default_pythons()
    workloads = args.workload or sorted(WORKLOADS)
    configs = ["none", "tracemalloc", "tmtrace"]
    print("tmtrace overhead, %d rounds, median seconds and slowdown against no tracing" % args.rounds)
    print("%-44s %-6s %12s %12s %12s %9s %9s" % ("python", "work", "none", "tracemalloc", "tmtrace",
                                                 "tm ratio", "tmt ratio"))
    for python in pythons:
        for workload in workloads:
            times = {c: [] for c in configs}
            for _ in range(args.rounds):
                for c in configs:
                    times[c].append(run_once(python, workload, c))
            med = {c: statistics.median(v) for c, v in times.items()}
            print("%-44s %-6s %12.3f %12.3f %12.3f %8.2fx %8.2fx" % (
                python, workload, med["none"], med["tracemalloc"], med["tmtrace"],
                med["tracemalloc"] / med["none"], med["tmtrace"] / med["none"]), flush=True)


if __name__ == "__main__":
    sys.exit(main())
