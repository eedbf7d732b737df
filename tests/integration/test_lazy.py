"""--lazy-frees: pymalloc's frees are not probed; at each report tmtrace
reads the pools of the blocks it holds out of the target and takes those
found free out of its map. Userspace does that while the target keeps
allocating at the same addresses, without its GIL, so the race between a
sweep and a new allocation must lose nothing: a block reallocated after its
pool was read stays (its allocation number changed), a block freed stays
until the next sweep. The peak between reports is what it gives up: its
peak is the highest current a report saw, printed against tracemalloc's.

workloads/churn.py frees and reuses blocks at a high rate while tmtrace
sweeps ten times a second; once it is done, every line must agree with
tracemalloc's run of the same workload, within 1%, short-lived lines
included. (test_fidelity runs complete.py with --lazy-frees too.)

Between sweeps tmtrace learns the blocks allocated meanwhile from a journal
BPF writes, and reads the whole live map only the first time and when the
journal ran over. The default journal must never run over here; a journal
of 32768 allocations (TMTRACE_JOURNAL_ENTRIES) runs over now and then,
which must cost reads of the whole map, not a block."""

import json
import re
import time

from harness import Tmtrace, Workload, build_python, check, lines_of, require_root, within
from test_threads import per_build

WORKLOAD = "churn.py"
TOLERANCE = 0.01
MIN_SIZE, MIN_COUNT = 16 * 1024, 100
# sweeps that must have run (and freed something) while the workload churned
MIN_SWEEPS = 5
SWEEP = re.compile(r"tmtrace: (\d+) pymalloc blocks in (\d+) pools looked at in [\d.]+ s: (\d+) freed, "
                   r"(\d+) pools unsettled \((?:(\d+) new from the journal|(the live map read whole))\)")
SMALL_JOURNAL = 32768


def reference(python):
    w = Workload(python, WORKLOAD, "tracemalloc")
    line = w.go()
    w.finish()
    check(line.startswith("ref "), "tracemalloc workload printed %r" % line)
    ref = json.loads(line[4:])
    return {r["lineno"]: (r["size"], r["count"]) for r in ref["lineno"]}, ref["peak"]


def check_lazy(build, journal=None):
    require_root()
    python = build_python(build)
    ref, ref_peak = reference(python)
    w = Workload(python, WORKLOAD, "plain")
    t = Tmtrace(w.pid, "--lazy-frees", "-v", "--format", "json", "-i", "0.1", "-t", "0",
                env={"TMTRACE_JOURNAL_ENTRIES": str(journal)} if journal else None)
    try:
        w.go()
        report = t.next_json(timeout=30, after=time.time() + 0.2)
    finally:
        t.stop()
        w.finish()
    # the sweeps -v timed: all but the last two or three ran during the churn
    t.err.rest()  # (which appends to t.err.lines)
    during = [m for m in (SWEEP.search(l) for l in t.err.lines) if m]
    mine = lines_of(report["stats"], w.proc.args[1])
    problems = []
    for lineno in sorted(set(ref) | set(mine)):
        a, b = ref.get(lineno, (0, 0)), mine.get(lineno, (0, 0))
        if max(a[0], b[0]) < MIN_SIZE and max(a[1], b[1]) < MIN_COUNT:
            continue
        print("     line %d: tracemalloc %d B in %d blocks, tmtrace %d B in %d" % (lineno, a[0], a[1], b[0], b[1]))
        if not (within(a[0], b[0], TOLERANCE) and within(a[1], b[1], TOLERANCE)):
            problems.append("line %d: tracemalloc %d B in %d blocks, tmtrace --lazy-frees %d B in %d"
                            % (lineno, a[0], a[1], b[0], b[1]))
    freed = [int(m.group(3)) for m in during]
    whole = sum(1 for m in during if m.group(6))
    print("     %d sweeps, %d blocks found freed, %d pools unsettled at most; %d read the live map whole, "
          "%d allocations taken from the journal"
          % (len(during), sum(freed), max((int(m.group(4)) for m in during), default=0), whole,
             sum(int(m.group(5) or 0) for m in during)))
    if journal:
        check(whole >= 2 and any(m.group(5) and int(m.group(5)) for m in during),
              "%s: a journal of %d entries must run over now and then, not always: %d of %d sweeps "
              "read the live map whole" % (build, journal, whole, len(during)))
    else:
        check(whole == 1 and during and during[0].group(6),
              "%s: the first sweep and no other must read the live map whole: %d of %d did"
              % (build, whole, len(during)))
    check(sum(1 for f in freed if f) >= MIN_SWEEPS,
          "%s: only %d sweeps freed anything (the workload churned too briefly?): %r" % (build, len(freed), freed))
    # What --lazy-frees costs in peak accuracy: its peak is the highest
    # current a report saw (ten a second here), never above the real one.
    traced = report["traced_memory"]
    print("     peak: tracemalloc %d B, tmtrace --lazy-frees %d B (%.1f%%); current %d B"
          % (ref_peak, traced["peak"], 100.0 * traced["peak"] / ref_peak, traced["current"]))
    check(traced["current"] <= traced["peak"] <= ref_peak * (1 + TOLERANCE),
          "%s: traced memory %r: the peak must lie between the current and tracemalloc's peak %d"
          % (build, traced, ref_peak))
    check(report["lost"]["live_map_full"] == 0, "%s: losses %r" % (build, report["lost"]))
    check(not problems, "%s: %s" % (build, "; ".join(problems)))


per_build(globals(), "test_lazy_frees_under_churn", check_lazy, """
--lazy-frees sweeping ten times a second while blocks are freed and reused:
every line agrees with tracemalloc, the peak lies between the current and
tracemalloc's.""")


per_build(globals(), "test_lazy_frees_with_a_journal_that_runs_over",
          lambda build: check_lazy(build, SMALL_JOURNAL), """
--lazy-frees as above with a journal of 32768 allocations, which runs over
now and then: the sweeps that read the whole live map instead, and those
that follow them from the journal, lose nothing either.""",
          builds=("3.11", "debian-3.11"))
