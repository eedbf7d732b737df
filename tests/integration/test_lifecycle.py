"""Attaching, detaching, being killed: the target keeps its behaviour."""

import signal
import subprocess
import time

from harness import TMTRACE, Tmtrace, Workload, check, find_python, require_root, run_behave


ROUNDS = 100


def behave_output(python, during=None):
    return run_behave(python, during, ROUNDS, "0.1", timeout=120)


def test_kill_9_leaves_target_unchanged():
    require_root()
    python = find_python(11)
    ref_code, ref_lines = behave_output(python)
    check(ref_code == 7 and ref_lines and ref_lines[-1] == "done",
          "the workload itself misbehaves: %d %r" % (ref_code, ref_lines[-3:]))

    def attach_and_kill(w):
        t = Tmtrace(w.pid, "-i", "0.3")
        w.send("go")
        time.sleep(0.7)
        t.proc.send_signal(signal.SIGKILL)
        t.proc.wait()
        check(w.alive(), "the target died when tmtrace was killed")
        # and again, mid-run
        t = Tmtrace(w.pid, "-i", "0.3")
        time.sleep(0.5)
        t.kill()
        check(w.alive(), "the target died when tmtrace was killed a second time")

    code, lines = behave_output(python, attach_and_kill)
    check(code == ref_code, "exit status %d under tmtrace, %d without" % (code, ref_code))
    check(lines == ref_lines, "output differs under tmtrace:\n%r\nvs\n%r" % (lines[-5:], ref_lines[-5:]))


def test_attach_detach_repeatedly():
    require_root()
    python = find_python(11)
    ref_code, ref_lines = behave_output(python)

    def cycles(w):
        w.send("go")
        for i in range(3):
            t = Tmtrace(w.pid, "-i", "0.2", "--format", "json")
            t.next_json(timeout=10)
            code = t.stop(signal.SIGTERM if i % 2 else signal.SIGINT)
            check(code == 0, "tmtrace exited %d on a signal" % code)

    code, lines = behave_output(python, cycles)
    check(code == ref_code and lines == ref_lines,
          "behaviour changed by attach/detach cycles: %d %r" % (code, lines[-3:]))


def test_target_exit_is_reported():
    require_root()
    w = Workload(find_python(11), "idle.py", "eof")
    t = Tmtrace(w.pid, "-i", "0.5")
    status, _ = w.finish()
    code = t.proc.wait(timeout=30)
    rest = t.err.rest(5)
    check(status == 0, "the target exited %d" % status)
    check(code == 0, "tmtrace exited %d when the target exited" % code)
    check(any(("process %d exited" % w.pid) in l for l in rest),
          "tmtrace did not say the target exited: %r" % rest)


def test_target_killed_while_attaching():
    """Killed at any moment of attaching (planning takes most of a second):
    one line saying so, whether tmtrace had attached or not."""
    require_root()
    for delay in (0.1, 0.4, 0.8):
        w = Workload(find_python(11), "idle.py")
        t = Tmtrace(w.pid, "-i", "0.5", wait_attached=False)
        time.sleep(delay)
        w.proc.send_signal(signal.SIGKILL)
        code = t.proc.wait(timeout=30)
        lines = t.err.rest(5)
        said = [l for l in lines if ("process %d exited" % w.pid) in l]
        check(len(said) == 1, "killed %.1f s in: tmtrace did not say the target exited: %r" % (delay, lines))
        check(code == (0 if any(l.startswith("tmtrace: attached") for l in lines) else 1),
              "killed %.1f s in: tmtrace exited %d: %r" % (delay, code, lines))
        check(not [l for l in lines if "cannot" in l or "error" in l],
              "killed %.1f s in: an error beside the exit: %r" % (delay, lines))
        print("     killed %.1f s in: %s (exit %d)" % (delay, said[0], code))


def test_count_and_duration_stop_tmtrace():
    require_root()
    w = Workload(find_python(11), "idle.py")
    try:
        start = time.monotonic()
        t = Tmtrace(w.pid, "-i", "0.3", "--count", "3", "--format", "json")
        code = t.proc.wait(timeout=30)
        reports = [l for l in t.out.rest(5) if l.startswith("{")]
        check(code == 0 and len(reports) == 3, "--count 3: exit %d, %d reports" % (code, len(reports)))
        start = time.monotonic()
        t = Tmtrace(w.pid, "-i", "10", "-d", "1")
        code = t.proc.wait(timeout=30)
        check(code == 0, "-d 1: exit %d" % code)
        check(time.monotonic() - start < 8, "-d 1 took %.1f s" % (time.monotonic() - start))
        check(w.alive(), "the target died")
    finally:
        w.kill()


def test_perf_event_fallback():
    """Kernels before 6.6 have no uprobe_multi: one perf event per probe.
    The same figures must come out of that path."""
    require_root()
    import os
    w = Workload(find_python(11), "mix.py", "plain")
    env = dict(os.environ, TMTRACE_NO_UPROBE_MULTI="1")
    p = subprocess.Popen([TMTRACE, "-p", str(w.pid), "--format", "json", "-i", "0.5", "-t", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = p.stderr.readline()
        check(first.startswith("tmtrace: attached"), "did not attach: %r" % first)
        # the notes up to the probe count's
        notes = []
        while not notes or ("probes on" not in notes[-1] and notes[-1] and len(notes) < 10):
            notes.append(p.stderr.readline())
        check(any("on perf events" in n for n in notes), "not the perf-event path: %r" % notes)
        w.go()
        done = time.time()
        while True:
            import json
            r = json.loads(p.stdout.readline())
            if r["time"] > done + 0.2:
                break
        p.send_signal(signal.SIGINT)
        check(p.wait(timeout=60) == 0, "tmtrace exited %d" % p.returncode)
    finally:
        if p.poll() is None:
            p.kill()
        w.finish()
    mine = {s["traceback"][0]["lineno"]: s["size"] for s in r["stats"]
            if s["traceback"][0]["filename"].endswith("mix.py")}
    check(sum(mine.values()) > 40 * 1024 * 1024, "the workload's 46 MB not seen: %r" % mine)
