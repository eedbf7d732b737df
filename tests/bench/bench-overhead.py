#!/usr/bin/env python3
"""tmtrace's overhead on a traced Python program, side by side with
tracemalloc's and with the floor of its probes, in one run (these machines
are noisy: ratios against a baseline measured in the same round, medians
over rounds).

usage: sudo tests/bench/bench-overhead.py [--rounds N] [--python PATH]...
                                          [--workload NAME]... [--config NAME]...
                                          [--tmtrace PATH]...

Workloads (tests/bench/workloads): micro (allocation-heavy loop), mix
(json, regex and dataclass processing), threads (four threads of the
micro-loop), leak (a busy service loop with a slow leak).

Configurations, interleaved per round:
  none          no tracing
  tm1, tm25     tracemalloc started inside with 1 or 25 frames
  floor         tmtrace's probes, every one running an empty BPF program
                (TMTRACE_EMPTY_PROBES=1): the cost of the traps alone
  tmt1, tmt25   tmtrace attached from outside, -n 1 or -n 25
  smp1, smp25   tmtrace --sample -n 1 or -n 25: raw domain exact, pymalloc
                estimated from pool refills
  sfloor        the floor of --sample's probes (the raw domain's calls and
                pool refills): what --sample cannot go below
  lfloor        the floor of --lazy-frees' probes (pymalloc's frees unprobed)
  lzy1, lzy25   tmtrace --lazy-frees -n 1 or -n 25: pymalloc's frees found
                in the pools at each report (-i 1 here, so that the sweeps
                count)

For each it prints the median time and the slowdown against `none`; for
tmtrace runs also tmtrace's own CPU time, its peak RSS, and the kernel
memory its maps take per live block; and `added/floor`: the time tmtrace
adds over no tracing, divided by the time the empty probes add (1.0 means
the BPF program costs nothing beyond its traps; lzy* against lfloor, smp*
against sfloor: a floor's program is empty whatever -n).

--tmtrace (repeatable) runs every tmtrace configuration with each build
given, a copy of an older commit say, interleaved in every round: the
configurations are then named config@1, config@2 ... in that order, and
each build's added/floor is against its own floor."""

import argparse
import glob
import os
import re
import statistics
import sys

from driver import TMTRACE, WORKLOADS, attach, finish, go, seconds_of, start_workload

CONFIGS = ["none", "tm1", "tm25", "floor", "tmt1", "tmt25", "smp1", "smp25", "lfloor", "lzy1", "lzy25",
           "sfloor"]
TRACED = ("floor", "tmt1", "tmt25", "smp1", "smp25", "lfloor", "lzy1", "lzy25", "sfloor")
# each traced configuration's floor: the same plan's probes, empty
FLOOR_OF = {"tmt1": "floor", "tmt25": "floor", "lzy1": "lfloor", "lzy25": "lfloor", "smp1": "sfloor",
            "smp25": "sfloor"}
# the mode's options of each traced configuration
MODE_OF = {"smp": ["--sample"], "sfl": ["--sample"], "lfl": ["--lazy-frees"], "lzy": ["--lazy-frees"]}


def default_pythons():
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.11.*/bin/python3.11")))
    return [p for p in ["/usr/bin/python3.11"] + found[-1:] if os.access(p, os.X_OK)]


class Result:
    def __init__(self, seconds, cpu=None, rss_kib=None, kmem_per_block=None):
        self.seconds, self.cpu, self.rss_kib, self.kmem_per_block = seconds, cpu, rss_kib, kmem_per_block


def kernel_memory_per_block(attach_lines):
    """Bytes of kernel memory per live block, from tmtrace's attach note
    ('live-block capacity N blocks, ...: about X MiB of kernel memory')."""
    for line in attach_lines:
        m = re.search(r"live-block capacity (\d+) blocks.*about ([\d.]+) (KiB|MiB|GiB)", line)
        if m:
            unit = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m.group(3)]
            return float(m.group(2)) * unit / int(m.group(1))
    return None


def run_once(python, workload, config, tmtrace=TMTRACE):
    env = dict(os.environ)
    if config.startswith("tm") and not config.startswith("tmt"):
        env["TRACEMALLOC"] = config[2:]
    p = start_workload(python, workload, env=env)
    tracer, notes = None, []
    if config in TRACED:
        tenv = dict(os.environ)
        if config in ("floor", "lfloor", "sfloor"):
            tenv["TMTRACE_EMPTY_PROBES"] = "1"
        nframe = "25" if config.endswith("25") else "1"
        mode = MODE_OF.get(config[:3], [])
        # a report every second under --lazy-frees: its sweeps are its cost
        interval = "1" if config.startswith("lzy") else "3600"
        tracer, notes = attach(tmtrace, p.pid, ["-i", interval, "-n", nframe] + mode, env=tenv)
    line = go(p)
    finish(p)
    result = Result(None)
    if tracer:
        tracer.send_signal(2)
        tracer.stderr.close()
        _, _, usage = os.wait4(tracer.pid, 0)
        result.cpu = usage.ru_utime + usage.ru_stime
        result.rss_kib = usage.ru_maxrss
        result.kmem_per_block = kernel_memory_per_block(notes)
    result.seconds = seconds_of(line)
    if result.seconds is None:
        raise SystemExit("%s %s %s: no timing (%r)" % (python, workload, config, line))
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--python", action="append")
    ap.add_argument("--workload", action="append", choices=sorted(WORKLOADS))
    ap.add_argument("--config", action="append", choices=CONFIGS)
    ap.add_argument("--tmtrace", action="append")
    args = ap.parse_args()
    pythons = args.python or default_pythons()
    workloads = args.workload or ["micro", "mix", "threads", "leak"]
    configs = args.config or CONFIGS
    if "none" not in configs:
        configs = ["none"] + configs
    tracers = [os.path.abspath(t) for t in args.tmtrace] if args.tmtrace else [TMTRACE]
    # (label, config, build): one per build for tmtrace's configurations
    labels = []
    for c in configs:
        if c in TRACED and len(tracers) > 1:
            labels += [("%s@%d" % (c, i + 1), c, t) for i, t in enumerate(tracers)]
        else:
            labels.append((c, c, tracers[0]))
    print("tmtrace overhead: %d rounds, medians; slowdown against no tracing" % args.rounds)
    if len(tracers) > 1:
        for i, t in enumerate(tracers):
            print("  @%d: %s" % (i + 1, t))
    for python in pythons:
        for workload in workloads:
            runs = {label: [] for label, _, _ in labels}
            for _ in range(args.rounds):
                for label, c, t in labels:
                    runs[label].append(run_once(python, workload, c, t))
            base = statistics.median(r.seconds for r in runs["none"])
            times = {label: statistics.median(r.seconds for r in runs[label]) for label in runs}
            print("\n%s, %s: no tracing %.3f s" % (python, workload, base))
            print("  %-9s %9s %9s %12s %9s %9s %11s" % ("config", "seconds", "slowdown", "added/floor",
                                                        "cpu s", "rss MiB", "kmem/block"))
            for label, c, _ in labels:
                if c == "none":
                    continue
                t = times[label]
                floor = times.get(label.replace(c, FLOOR_OF[c], 1)) if c in FLOOR_OF else None
                # a floor within a tenth of untraced is noise, not a cost to divide by
                added = ("%11.2fx" % ((t - base) / (floor - base))
                         if floor and floor > 1.1 * base else "%12s" % "")
                cpu = [r.cpu for r in runs[label] if r.cpu is not None]
                rss = [r.rss_kib for r in runs[label] if r.rss_kib is not None]
                kmem = [r.kmem_per_block for r in runs[label] if r.kmem_per_block is not None]
                print("  %-9s %9.3f %8.2fx %s %9s %9s %11s" % (
                    label, t, t / base, added,
                    "%.2f" % statistics.median(cpu) if cpu else "",
                    "%.1f" % (statistics.median(rss) / 1024) if rss else "",
                    "%.0f B" % statistics.median(kmem) if kmem else ""), flush=True)

if __name__ == "__main__":
    sys.exit(main())
