"""Debian's /usr/bin/python3.11: static, stripped, PGO. Its allocator's fast
paths are inlined into hundreds of callers; tmtrace finds and probes them,
reports what it found, and leaves the target's behaviour unchanged."""

import re
import signal
import time

from harness import Tmtrace, Workload, check, find_python, require_root, run_behave


def test_debian_python_reports_inlined_copies():
    require_root()
    python = find_python(11, pyenv=False)
    w = Workload(python, "idle.py")
    t = Tmtrace(w.pid, "--format", "json", "-i", "0.5")
    try:
        check("CPython 3.11" in t.attached and python in t.attached, "attached line %r" % t.attached)
        notes = []
        while True:
            line = t.err.next(10)
            notes.append(line)
            if line is None or "probes on" in line:
                break
        found = [re.search(r"inlined allocator copies \(PGO build\): (\d+) found, (\d+) probed", l or "")
                 for l in notes]
        found = [m for m in found if m]
        check(found, "no report of the inlined copies: %r" % notes)
        n, probed = int(found[0].group(1)), int(found[0].group(2))
        check(n > 400 and probed >= 0.95 * n, "%d copies found, %d probed: %r" % (n, probed, notes))
        check(not any("WARNING" in (l or "") for l in notes), "copies left unprobed: %r" % notes)
        t.next_json()
        check(w.alive(), "the target died")
    finally:
        t.stop()
        w.kill()


def behave(python, during=None, rounds=300):
    return run_behave(python, during, rounds, "0.05", timeout=180)


def test_debian_behaviour_unchanged_across_attach_detach():
    """A long mixed two-thread workload under attach, detach, attach, kill -9,
    attach, detach: same output, same exit status as without tmtrace."""
    require_root()
    python = find_python(11, pyenv=False)
    ref = behave(python)
    check(ref[0] == 7 and ref[1][-1] == "done", "the workload misbehaves on its own: %r" % (ref,))

    def cycles(w):
        w.send("go")
        for i in range(5):
            t = Tmtrace(w.pid, "-i", "0.2", "--format", "json")
            t.next_json(timeout=10)
            if i == 3:
                t.proc.kill()
                t.proc.wait()
            else:
                check(t.stop(signal.SIGINT) == 0, "tmtrace did not exit 0 on SIGINT")
            check(w.alive(), "the target died in cycle %d" % i)
            time.sleep(0.1)

    got = behave(python, cycles)
    check(got == ref, "behaviour changed under tmtrace: exit %d vs %d, last lines %r vs %r"
          % (got[0], ref[0], got[1][-3:], ref[1][-3:]))
