"""Helpers for tmtrace's integration tests: real probes on real processes.

Every test starts its own CPython workload, attaches the real tmtrace to it,
and checks what tmtrace prints against tracemalloc running inside an
identical workload, or against allocations the workload made itself."""

import glob
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TMTRACE = os.path.join(ROOT, "build", "tmtrace")
WORKLOADS = os.path.join(ROOT, "tests", "integration", "workloads")
CI = os.environ.get("CI") == "true"


class Skip(Exception):
    """Raised by a test that cannot run here; under CI=true it is a failure."""


class Failure(AssertionError):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


def pyenv_root():
    root = os.environ.get("PYENV_ROOT")
    if root and os.path.isdir(root):
        return root
    for cand in (os.path.expanduser("~/.pyenv"), "/root/.pyenv"):
        if os.path.isdir(cand):
            return cand
    return None


def find_python(minor, pyenv=True):
    """The newest pyenv build of 3.<minor> (shared libpython), or Debian's
    for pyenv=False. Raises Skip (a failure under CI) when it is missing.
    Patch versions compare as numbers: 3.11.10 is newer than 3.11.9; pyenv
    versions with a suffix (3.13.0t, 3.12-dev) are not considered."""
    if not pyenv:
        path = "/usr/bin/python3.%d" % minor
        if os.access(path, os.X_OK):
            return path
        raise Skip("Debian's %s is not installed" % path)
    root = pyenv_root()
    found = []
    for path in glob.glob(os.path.join(root or "/nonexistent", "versions", "3.%d.*" % minor,
                                       "bin", "python3.%d" % minor)):
        version = os.path.basename(os.path.dirname(os.path.dirname(path)))
        m = re.match(r"3\.%d\.([0-9]+)$" % minor, version)
        if m and os.access(path, os.X_OK):
            found.append((int(m.group(1)), path))
    if not found:
        raise Skip("pyenv's CPython 3.%d is not installed (looked under %s/versions)"
                   % (minor, root))
    return max(found)[1]


class Build:
    """One CPython build the suite must run on."""

    def __init__(self, name, minor, pyenv):
        self.name = name      # as tests declare it: fn.build = "3.12"
        self.minor = minor
        self.pyenv = pyenv

    @property
    def suffix(self):
        """For test names: "3.12" -> "3_12", "debian-3.11" -> "debian_3_11"."""
        return re.sub(r"[^0-9A-Za-z]", "_", self.name)

    def __repr__(self):
        return "Build(%r)" % self.name


# Every supported build: tests parametrized over builds run on each, and
# run.py prints one row of the matrix per build.
BUILDS = [Build("3.%d" % minor, minor, True) for minor in range(8, 14)] + [
    Build("debian-3.11", 11, False),    # /usr/bin/python3.11: static, stripped, PGO
]


def build(name):
    for b in BUILDS:
        if b.name == name:
            return b
    raise KeyError("no build %r in harness.BUILDS" % name)


def build_python(name):
    """The python executable of the build `name` (see BUILDS); raises Skip,
    saying which build and where it was looked for, when it is missing."""
    b = build(name)
    try:
        return find_python(b.minor, pyenv=b.pyenv)
    except Skip as e:
        raise Skip("build %s is missing: %s" % (name, e))


_described = {}


def describe_build(name):
    """What the build `name` actually is, e.g. "3.12.1 pyenv shared" or
    "3.11.2 debian static" (shared: libpython is a shared library the
    executable loads). Raises Skip, saying why, when the build is missing."""
    if name not in _described:
        b = build(name)
        python = find_python(b.minor, pyenv=b.pyenv)
        script = ("import platform\n"
                  "shared = any('libpython' in l for l in open('/proc/self/maps'))\n"
                  "print(platform.python_version(), 'shared' if shared else 'static')\n")
        try:
            p = subprocess.run([python, "-I", "-c", script], capture_output=True, text=True,
                               timeout=60, stdin=subprocess.DEVNULL)
            version, linkage = p.stdout.split()
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            raise Skip("build %s (%s) does not run: %s" % (name, python, e))
        _described[name] = "%s %s %s" % (version, "pyenv" if b.pyenv else "debian", linkage)
    return _described[name]


def require_root():
    if os.geteuid() != 0:
        raise Skip("needs root to load BPF programs and attach uprobes")


class Lines:
    """Reads a stream line by line in a thread, so tests can wait with a
    timeout for a line that matches."""

    def __init__(self, stream, name):
        self.name = name
        self.lines = []
        self.queue = queue.Queue()
        self.closed = False
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for line in iter(stream.readline, ""):
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def next(self, timeout):
        """The next line, or None at EOF; Failure on timeout."""
        if self.closed:
            return None
        try:
            line = self.queue.get(timeout=timeout)
        except queue.Empty:
            raise Failure("%s: no line within %.0f s (so far: %r)"
                          % (self.name, timeout, self.lines[-5:]))
        if line is None:
            self.closed = True
            return None
        self.lines.append(line)
        return line

    def wait_for(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure("%s: timed out waiting for %s (last lines: %r)"
                              % (self.name, what, self.lines[-5:]))
            line = self.next(left)
            if line is None:
                raise Failure("%s: ended while waiting for %s (last lines: %r)"
                              % (self.name, what, self.lines[-5:]))
            if pred(line):
                return line

    def rest(self, timeout=10):
        out = []
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            try:
                line = self.next(max(0.01, deadline - time.monotonic()))
            except Failure:
                break
            if line is not None:
                out.append(line)
        return out


class Workload:
    """A workload script speaking the protocol of workloads/*.py: it prints
    'ready', waits for 'go' on stdin, prints 'done' (or 'ref <json>'), then
    waits for EOF on stdin before it exits."""

    def __init__(self, python, script, *args, env=None, cwd=None):
        full_env = dict(os.environ)
        full_env.pop("PYTHONTRACEMALLOC", None)
        full_env.pop("PYTHONMALLOC", None)
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            [python, os.path.join(WORKLOADS, script)] + [str(a) for a in args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=full_env, cwd=cwd or WORKLOADS)
        self.pid = self.proc.pid
        self.out = Lines(self.proc.stdout, "workload stdout")
        self.err = Lines(self.proc.stderr, "workload stderr")
        self.out.wait_for(lambda l: l == "ready", 30, "the workload's 'ready'")

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def go(self, timeout=120):
        self.send("go")
        return self.out.wait_for(lambda l: l == "done" or l.startswith("ref "), timeout,
                                 "the workload's 'done'")

    def alive(self):
        return self.proc.poll() is None

    def finish(self, timeout=30):
        """Closes stdin and returns (exit code, remaining stdout lines)."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        code = self.proc.wait(timeout=timeout)
        return code, self.out.rest()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Tmtrace:
    """The real tmtrace, attached to a pid; waits for its 'attached' line."""

    def __init__(self, pid, *opts, wait_attached=True, timeout=60, env=None):
        self.proc = subprocess.Popen([TMTRACE, "-p", str(pid)] + [str(o) for o in opts],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True,
                                     env=dict(os.environ, **env) if env else None)
        self.out = Lines(self.proc.stdout, "tmtrace stdout")
        self.err = Lines(self.proc.stderr, "tmtrace stderr")
        self.attached = None
        if wait_attached:
            line = self.err.next(timeout)
            if line is None or not line.startswith("tmtrace: attached to %d" % pid):
                raise Failure("tmtrace's first stderr line is not 'tmtrace: attached to %d ...': "
                              "%r (rest: %r)" % (pid, line, self.err.rest(2)))
            self.attached = line

    def next_json(self, timeout=30, after=None):
        """The next JSON report (whose time is past `after`, if given)."""
        while True:
            line = self.out.wait_for(lambda l: l.startswith("{"), timeout, "a JSON report")
            report = json.loads(line)
            if after is None or report["time"] > after:
                return report

    def stop(self, sig=None, timeout=60):
        import signal as _signal
        if self.proc.poll() is None:
            self.proc.send_signal(sig or _signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_tmtrace(*args, timeout=60):
    """Runs tmtrace to completion: (exit code, stdout, stderr)."""
    p = subprocess.run([TMTRACE] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


def lines_of(stats, filename):
    """{lineno: (size, count)} of the lineno statistics for one file."""
    out = {}
    for s in stats:
        frame = s["traceback"][0]
        if frame["filename"] == filename:
            out[frame["lineno"]] = (s["size"], s["count"])
    return out


def within(a, b, rel):
    return abs(a - b) <= rel * max(abs(a), abs(b))


def run_behave(python, during=None, rounds=100, delay="0.1", timeout=120):
    """Runs workloads/behave.py to the end: (exit code, stdout lines).
    `during(workload)` runs while it does (it must send 'go'). The output
    does not depend on timing: the reference run (no `during`) goes flat
    out, a traced one waits `delay` between rounds to outlive several
    attach/detach cycles."""
    w = Workload(python, "behave.py", rounds, delay if during else "0")
    try:
        if during:
            during(w)
        else:
            w.send("go")
        return w.finish(timeout=timeout)
    finally:
        w.kill()
