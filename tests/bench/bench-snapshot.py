#!/usr/bin/env python3
"""What snapshots and the periodic report cost with many live blocks, in
one run per configuration (these machines are noisy: the empty and the
full target are measured side by side, by the same tmtrace, in the same
run; repeat with --rounds).

usage: sudo tests/bench/bench-snapshot.py [--rounds N] [--python PATH] [--blocks N] [--mode M]...
                                          [--depth D] [--nframe N]... [--interval S]
                                          [--intervals K] [--snapshots R] [--tmtrace PATH]

The target (tests/bench/workloads/live.py) waits while tmtrace attaches,
then makes --blocks small live blocks (object()) from one line reached
through a call tree --depth deep: 2**depth distinct tracebacks with
-n 25, a handful with -n 1. Then it idles, holding them.

Per round and nframe, two tmtrace runs (-v, which times every report and
snapshot on stderr):

  report   no -o. tmtrace's CPU time (utime + stime from /proc/PID/stat)
           over --intervals report intervals while nothing is live, then
           the same once the blocks are built: the periodic report's cost
           as % of one core, with the report's own wall time (build the
           aggregated snapshot, group, print). Then --snapshots SIGUSR1
           snapshots (tmtrace's format): time to take one (read the live
           map, resolve, intern) and to write it; then `tmtrace report`
           of that file (load, group, print) timed from outside.
  pickle   -o FILE.pickle: every report also writes a snapshot of every
           live block as tracemalloc's pickle; the same CPU figures, and
           the take and write times of each.
  lazy     as report, with --lazy-frees: every report first looks every
           pymalloc block up in its pool (not run unless asked for)

--tmtrace (repeatable) runs other builds, a copy of an older commit say,
interleaved with each other in every round: a before/after comparison. Figures only: nothing here is an assertion."""

import argparse
import glob
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TMTRACE = os.path.join(ROOT, "build", "tmtrace")
TICK = os.sysconf("SC_CLK_TCK")

REPORT_RE = re.compile(r"report of (\d+) traces: built in ([\d.]+) s, grouped in ([\d.]+) s, printed in ([\d.]+) s")
SNAP_RE = re.compile(r"snapshot of (\d+) blocks: taken in ([\d.]+) s, written in ([\d.]+) s")


def default_python():
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.11.*/bin/python3.11")))
    return found[-1] if found else "/usr/bin/python3.11"


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK   # utime, stime


class Tracer:
    """tmtrace -v on the target; its stderr read in a thread, each report
    and snapshot line recorded with tmtrace's CPU time when it appeared."""

    def __init__(self, tmtrace, pid, nframe, interval, output, cwd, extra=()):
        args = [tmtrace, "-p", str(pid), "-v", "-n", str(nframe), "-i", str(interval)] + list(extra)
        if output:
            args += ["-o", output]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd)
        self.reports, self.snapshots, self.lines = [], [], []
        self.cond = threading.Condition()
        self.attached = False
        threading.Thread(target=self._read, daemon=True).start()
        with self.cond:
            if not self.cond.wait_for(lambda: self.attached or self.proc.poll() is not None, 60):
                raise SystemExit("tmtrace did not attach")
        if not self.attached:
            raise SystemExit("tmtrace did not attach: %s" % "".join(self.lines[-3:]))

    def _read(self):
        for line in self.proc.stderr:
            cpu = cpu_seconds(self.proc.pid) if self.proc.poll() is None else None
            with self.cond:
                self.lines.append(line)
                if "probes on" in line:
                    self.attached = True
                m = REPORT_RE.search(line)
                if m:
                    self.reports.append((cpu, int(m.group(1))) + tuple(float(x) for x in m.group(2, 3, 4)))
                m = SNAP_RE.search(line)
                if m:
                    self.snapshots.append((int(m.group(1)), float(m.group(2)), float(m.group(3))))
                self.cond.notify_all()

    def wait_reports(self, n, timeout):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.reports) >= n, timeout):
                raise SystemExit("tmtrace reported %d times, not %d: %s" % (len(self.reports), n,
                                                                           "".join(self.lines[-3:])))

    def wait_snapshots(self, n, timeout):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.snapshots) >= n, timeout):
                raise SystemExit("tmtrace took %d snapshots, not %d" % (len(self.snapshots), n))

    def cpu_share(self, k, interval):
        """tmtrace's CPU over the next k report intervals, as % of one core,
        and the median report's (traces, built, grouped, printed)."""
        first = len(self.reports)
        self.wait_reports(first + 1, 3 * interval + 60)
        self.wait_reports(first + 1 + k, (k + 2) * interval + 120)
        with self.cond:
            window = self.reports[first:first + 1 + k]
        cpu = window[-1][0] - window[0][0]
        med = [statistics.median(r[i] for r in window[1:]) for i in range(1, 5)]
        return 100.0 * cpu / (k * interval), med

    def stop(self):
        self.proc.send_signal(2)
        self.proc.wait(120)


def run_config(args, tmtrace, nframe, mode, tmp):
    live = os.path.join(HERE, "workloads", "live.py")
    target = subprocess.Popen([args.python, live, str(args.blocks), str(args.depth)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=os.path.join(HERE, "workloads"))
    assert target.stdout.readline().strip() == "ready"
    output = os.path.join(tmp, "live.pickle") if mode == "pickle" else None
    tracer = Tracer(tmtrace, target.pid, nframe, args.interval, output, tmp,
                    ["--lazy-frees"] if mode == "lazy" else [])
    res = {}
    try:
        res["empty_cpu"], res["empty_report"] = tracer.cpu_share(args.intervals, args.interval)
        before = len(tracer.snapshots)
        start = time.monotonic()
        target.stdin.write("go\n")
        target.stdin.flush()
        line = target.stdout.readline()
        if not line.startswith("elapsed"):
            raise SystemExit("target: %r" % line)
        res["build"] = time.monotonic() - start
        res["full_cpu"], res["full_report"] = tracer.cpu_share(args.intervals, args.interval)
        if mode == "pickle":
            with tracer.cond:
                res["snaps"] = tracer.snapshots[before:][-args.intervals:]
        else:
            for i in range(args.snapshots):
                tracer.proc.send_signal(10)   # SIGUSR1: a snapshot to tmtrace-PID-TIME.tmt
                tracer.wait_snapshots(before + i + 1, 120)
            with tracer.cond:
                res["snaps"] = tracer.snapshots[before:]
            files = sorted(glob.glob(os.path.join(tmp, "tmtrace-%d-*.tmt" % target.pid)))
            if files:
                res["file_bytes"] = os.path.getsize(files[-1])
                times = []
                for _ in range(3):
                    t = time.monotonic()
                    subprocess.run([tmtrace, "report", files[-1]], stdout=subprocess.DEVNULL, check=True)
                    times.append(time.monotonic() - t)
                res["report_cmd"] = min(times)
                for f in files:
                    os.unlink(f)
        if output and os.path.exists(output):
            res["file_bytes"] = os.path.getsize(output)
    finally:
        tracer.stop()
        target.stdin.close()
        target.wait()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--python", default=default_python())
    ap.add_argument("--blocks", type=int, default=1000000)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--nframe", type=int, action="append")
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--intervals", type=int, default=3)
    ap.add_argument("--snapshots", type=int, default=3)
    ap.add_argument("--mode", action="append", choices=["report", "pickle", "lazy"])
    ap.add_argument("--tmtrace", action="append")
    args = ap.parse_args()
    nframes = args.nframe or [1, 25]
    modes = args.mode or ["report", "pickle"]
    tracers = [os.path.abspath(t) for t in args.tmtrace] if args.tmtrace else [TMTRACE]
    print("tmtrace snapshots and reports: %s, %d blocks over %d tracebacks, -i %g, %d rounds"
          % (args.python, args.blocks, 1 << args.depth, args.interval, args.rounds), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for nframe in nframes:
                for mode in modes:
                    for tmtrace in tracers:
                        r = run_config(args, tmtrace, nframe, mode, tmp)
                        title = "round %d, -n %d, %s" % (rnd + 1, nframe, mode)
                        print_result(args, title + (", " + tmtrace if len(tracers) > 1 else ""), mode, r)


def print_result(args, title, mode, r):
    snaps = r.get("snaps") or [(0, 0.0, 0.0)]
    print("\n%s (target built its blocks in %.1f s)" % (title, r["build"]))
    for what in ("empty", "full"):
        rep = r[what + "_report"]
        print("  %-5s report: %5.2f%% of a core over %d intervals; median report: %d traces, "
              "built %.4f s, grouped %.4f s, printed %.4f s"
              % (what, r[what + "_cpu"], args.intervals, rep[0], rep[1], rep[2], rep[3]))
    print("  full/empty CPU: %.2fx" % (r["full_cpu"] / r["empty_cpu"] if r["empty_cpu"] else 0))
    print("  snapshot (%s): %d blocks, taken in %s s (median %.3f), written in %s s (median %.3f)"
          % ("pickle, at each report" if mode == "pickle" else "tmtrace format, SIGUSR1",
             snaps[-1][0], " ".join("%.3f" % s[1] for s in snaps), statistics.median(s[1] for s in snaps),
             " ".join("%.3f" % s[2] for s in snaps), statistics.median(s[2] for s in snaps)))
    if "file_bytes" in r:
        print("  file: %.1f MiB" % (r["file_bytes"] / 2**20))
    if "report_cmd" in r:
        print("  tmtrace report FILE (load, group, print): %.3f s" % r["report_cmd"])
    sys.stdout.flush()

if __name__ == "__main__":
    sys.exit(main())
