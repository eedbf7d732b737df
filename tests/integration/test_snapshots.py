"""Snapshots from a live session (-o, SIGUSR1, the terminal keys), read back
by `tmtrace report` and by tracemalloc itself, and the live comparison that
finds a leak."""

import json
import os
import pty
import re
import select
import signal
import subprocess
import tempfile
import time

from harness import (TMTRACE, Tmtrace, Workload, WORKLOADS, check, find_python, lines_of, require_root,
                     run_tmtrace)


def test_output_file_written_atomically_and_readable():
    require_root()
    python = find_python(11)
    w = Workload(python, "mix.py", "plain")
    with tempfile.TemporaryDirectory() as tmp:
        tmt, pick = os.path.join(tmp, "s.tmt"), os.path.join(tmp, "s.pickle")
        t1 = Tmtrace(w.pid, "-i", "0.4", "-o", tmt, "--format", "json", "-t", "0")
        t2 = Tmtrace(w.pid, "-i", "0.4", "-o", pick, "--format", "json", "-t", "0")
        try:
            w.go()
            done = time.time()
            live = t1.next_json(after=done + 0.3)
            t2.next_json(after=done + 0.3)
        finally:
            check(t1.stop() == 0 and t2.stop() == 0, "tmtrace did not exit 0")
            w.finish()
        # our own format: per-line figures equal the live ones
        code, out, err = run_tmtrace("report", tmt, "--format", "json", "-t", "0")
        check(code == 0, "report failed: %s" % err)
        rep = json.loads(out)
        mix = os.path.join(WORKLOADS, "mix.py")
        check(lines_of(rep["stats"], mix) == lines_of(live["stats"], mix),
              "snapshot file differs from the live report:\n%r\n%r" % (lines_of(rep["stats"], mix),
                                                                        lines_of(live["stats"], mix)))
        check(rep["pid"] == w.pid and rep["python"].startswith("3.11"), "snapshot info: %r" % rep)
        # the pickle: tracemalloc itself loads it and agrees
        script = ("import sys, tracemalloc\n"
                  "s = tracemalloc.Snapshot.load(sys.argv[1])\n"
                  "for st in s.statistics('lineno'):\n"
                  "    if st.traceback[0].filename == sys.argv[2]: print(st.traceback[0].lineno, st.size, st.count)\n")
        p = subprocess.run([python, "-c", script, pick, mix], capture_output=True, text=True)
        check(p.returncode == 0, "tracemalloc cannot load tmtrace's pickle: %s" % p.stderr)
        got = {int(l.split()[0]): (int(l.split()[1]), int(l.split()[2])) for l in p.stdout.splitlines()}
        check(got == lines_of(live["stats"], mix), "tracemalloc reads other figures from the pickle:\n%r\n%r"
              % (got, lines_of(live["stats"], mix)))
        leftovers = [f for f in os.listdir(tmp) if f not in ("s.tmt", "s.pickle")]
        check(not leftovers, "temporary files left behind: %r" % leftovers)


def test_sigusr1_snapshot_and_sigusr2_peak():
    require_root()
    python = find_python(11)
    w = Workload(python, "mix.py", "plain")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "now.tmt")
        t = Tmtrace(w.pid, "-i", "0.3", "-o", path, "--format", "json")
        try:
            w.go()
            first = t.next_json(after=time.time() + 0.2)
            os.unlink(path)
            t.proc.send_signal(signal.SIGUSR1)
            t.err.wait_for(lambda l: "snapshot written to" in l, 10, "the snapshot message")
            check(os.path.exists(path), "SIGUSR1 wrote nothing")
            t.proc.send_signal(signal.SIGUSR2)
            time.sleep(0.1)
            after = t.next_json(after=time.time() + 0.1)
            tm = after["traced_memory"]
            check(tm["peak"] == tm["current"] or tm["peak"] < first["traced_memory"]["peak"],
                  "SIGUSR2 did not reset the peak: %r then %r" % (first["traced_memory"], tm))
        finally:
            t.stop()
            w.finish()


def test_terminal_keys():
    """On a terminal: s writes a snapshot, r resets the peak, q quits."""
    require_root()
    python = find_python(11)
    w = Workload(python, "idle.py")
    with tempfile.TemporaryDirectory() as tmp:
        pid, fd = pty.fork()
        if pid == 0:
            os.chdir(tmp)
            os.execv(TMTRACE, [TMTRACE, "-p", str(w.pid), "-i", "0.5"])
        out = b""

        def read_until(needle, timeout=20):
            nonlocal out
            deadline = time.time() + timeout
            while needle not in out and time.time() < deadline:
                r, _, _ = select.select([fd], [], [], 0.2)
                if r:
                    try:
                        out += os.read(fd, 4096)
                    except OSError:
                        break
            return needle in out

        try:
            check(read_until(b"attached to"), "tmtrace did not attach on a terminal: %r" % out)
            check(read_until(b"Total allocated size"), "no report: %r" % out[-300:])
            os.write(fd, b"s")
            check(read_until(b"snapshot written to"), "s wrote no snapshot: %r" % out[-300:])
            snaps = [f for f in os.listdir(tmp) if re.fullmatch(r"tmtrace-%d-\d+\.tmt" % w.pid, f)]
            check(snaps, "no tmtrace-PID-TIME.tmt in the cwd: %r" % os.listdir(tmp))
            os.write(fd, b"r")
            check(read_until(b"peak reset"), "r did not reset the peak")
            os.write(fd, b"q")
            _, status = os.waitpid(pid, 0)
            check(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "q: exit status %r" % status)
        finally:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            w.kill()


def test_compare_first_finds_the_leak():
    require_root()
    python = find_python(11)
    p = subprocess.Popen([python, os.path.join(WORKLOADS, "leaky.py"), "--wait"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, cwd=WORKLOADS)
    try:
        check(p.stdout.readline().strip() == "ready", "leaky.py did not start")
        t = Tmtrace(p.pid, "-i", "1", "--compare", "first", "--format", "json", "-t", "3")
        p.stdin.write("go\n")
        p.stdin.flush()
        reports = [t.next_json(timeout=15) for _ in range(4)]
        t.stop()
    finally:
        p.kill()
        p.wait()
    last = reports[-1]
    check(all("size_diff" in s and "count_diff" in s for s in last["stats"]), "no diffs in JSON: %r" % last)
    growing = [s for s in last["stats"] if s["size_diff"] > 0]
    check(growing, "no growth against the first snapshot: %r" % last["stats"])


def test_address_lookup():
    """report --address: the traceback of the block containing an address,
    as get_object_traceback() gives it."""
    require_root()
    python = find_python(11)
    w = Workload(python, "blob.py")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.tmt")
        t = Tmtrace(w.pid, "-i", "0.3", "-o", path, "--format", "json")
        try:
            w.send("go")
            line = w.out.wait_for(lambda l: l.startswith("blob "), 30, "the blob's address")
            address = int(line.split()[1])
            t.next_json(after=time.time() + 0.2)
        finally:
            t.stop()
            w.finish()
        code, out, err = run_tmtrace("report", path, "--address", hex(address + 5000))
        check(code == 0, "--address failed: %s" % err)
        check("blob.py\", line 7" in out and "bytes(100000)" in out, "wrong traceback: %r" % out)
        code, out, err = run_tmtrace("report", path, "--address", "0x10")
        check(code == 1 and "no traced block" in err, "an address in no block: %d %r" % (code, err))
