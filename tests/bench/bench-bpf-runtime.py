#!/usr/bin/env python3
"""The BPF program's own time per probe hit, builds interleaved.

usage: sudo tests/bench/bench-bpf-runtime.py [--rounds N] [--python P]...
                                             [--workload W]... [--tmtrace BIN]...

Runs each workload under each tmtrace build in turn, round after round,
with kernel.bpf_stats_enabled=1, and prints the kernel's run time per run
of tmtrace's program (run_time_ns / run_cnt, as `bpftool prog show` gives
them), read after the work and before tmtrace detaches, with the workload's
own time. The kernel times every run while the sysctl is on (two clock
reads), so the figures are a little above the program's cost in the other
benchmarks; compare builds within one run. The sysctl is put back after."""

import argparse
import json
import os
import statistics
import subprocess
import sys

from driver import TMTRACE, WORKLOADS, attach, finish, go, seconds_of, start_workload

# half bench-overhead.py's mix: with the sysctl on, a traced run is slow
ARGS = {"mix": "1000"}
STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


def program_stats(name="tm_probe"):
    """(run_cnt, run_time_ns) summed over the loaded programs of that name."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], check=True, capture_output=True, text=True).stdout
    cnt = ns = 0
    for prog in json.loads(out):
        if prog.get("name") == name:
            cnt += prog.get("run_cnt", 0)
            ns += prog.get("run_time_ns", 0)
    return cnt, ns


def run_once(python, workload, tmtrace):
    p = start_workload(python, workload, arg=ARGS.get(workload))
    tracer, _ = attach(tmtrace, p.pid, ["-i", "3600"])
    before = program_stats()
    line = go(p)
    # before tmtrace sees the workload exit and detaches
    after = program_stats()
    finish(p)
    tracer.send_signal(2)
    tracer.stderr.close()
    tracer.wait()
    seconds = seconds_of(line)
    if seconds is None:
        raise SystemExit("%s %s: no timing (%r)" % (python, workload, line))
    runs, ns = after[0] - before[0], after[1] - before[1]
    return seconds, runs, (ns / runs if runs else 0.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--python", action="append")
    ap.add_argument("--workload", action="append", choices=sorted(WORKLOADS))
    ap.add_argument("--tmtrace", action="append")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench-bpf-runtime: needs root (BPF, and the bpf_stats_enabled sysctl)")
    pythons = args.python or ["/usr/bin/python3.11"]
    workloads = args.workload or ["mix"]
    builds = args.tmtrace or [TMTRACE]
    with open(STATS_SYSCTL) as f:
        saved = f.read().strip()
    results = {}
    try:
        with open(STATS_SYSCTL, "w") as f:
            f.write("1")
        for r in range(args.rounds):
            for py in pythons:
                for w in workloads:
                    for i, b in enumerate(builds):
                        res = run_once(py, w, b)
                        results.setdefault((py, w, i), []).append(res)
                        print("round %d %s %s build %d: %.3f s, %d runs, %.0f ns/run" % ((r + 1, py, w, i + 1) + res),
                              file=sys.stderr, flush=True)
    finally:
        with open(STATS_SYSCTL, "w") as f:
            f.write(saved)
    print("BPF run time per program run, %d rounds (each round's figure, then the median)" % args.rounds)
    for py in pythons:
        for w in workloads:
            print("\n%s, %s" % (py, w))
            for i, b in enumerate(builds):
                rs = results[(py, w, i)]
                print("  build %d (%s): ns/run %s, median %.0f; workload s %s, median %.3f" % (
                    i + 1, b, "/".join("%.0f" % x[2] for x in rs), statistics.median(x[2] for x in rs),
                    "/".join("%.2f" % x[0] for x in rs), statistics.median(x[0] for x in rs)))


if __name__ == "__main__":
    main()
