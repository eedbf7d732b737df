"""Bad input: one clear line on stderr, exit 2 for usage and 1 for the rest,
and the target keeps running untouched."""

import os
import shutil
import subprocess
import sys

from harness import (Skip, TMTRACE, Workload, check, find_python, require_root, run_tmtrace,
                     pyenv_root)


def one_error_line(code, out, err, want_code, *needles):
    lines = err.splitlines()
    check(code == want_code, "exit code %d, expected %d (stderr %r)" % (code, want_code, err))
    check(len(lines) == 1, "expected exactly one stderr line, got %r" % lines)
    check(lines[0].startswith("tmtrace: "), "error line does not start with 'tmtrace: ': %r" % lines[0])
    for n in needles:
        check(n in lines[0], "error line %r does not mention %r" % (lines[0], n))
    check(out == "", "nothing on stdout expected, got %r" % out)


def test_usage_errors():
    for args, needle in [((), "-p PID"), (("-p", "abc"), "invalid pid"), (("-p", "1", "--bogus"), "--bogus"),
                         (("-p", "1", "-n", "0"), "nframe"), (("-p", "1", "-n", "1000"), "nframe"),
                         (("-p", "1", "--format", "xml"), "format"), (("-p", "1", "-i", "0"), "interval"),
                         (("-p", "1", "-t", "-3"), "top"), (("-p", "1", "extra"), "extra"),
                         (("-p",), "needs a value"), (("-p", "1", "-k", "bogus"), "key type"),
                         (("-p", "1", "--sample", "--lazy-frees"), "do not go together")]:
        code, out, err = run_tmtrace(*args)
        one_error_line(code, out, err, 2, needle)


def test_help_and_version():
    code, out, err = run_tmtrace("--help")
    check(code == 0 and "Usage: tmtrace -p PID" in out and err == "", "--help: %d %r %r" % (code, out, err))
    for opt in ("--interval", "--top", "--count", "--duration", "--nframe", "--format",
                "--max-blocks", "--verbose", "--version", "--sample", "--lazy-frees"):
        check(opt in out, "--help does not document %s" % opt)
    code, out, err = run_tmtrace("--version")
    check(code == 0 and out.startswith("tmtrace "), "--version: %d %r" % (code, out))


def free_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_no_such_pid():
    require_root()
    pid = free_pid()
    code, out, err = run_tmtrace("-p", pid)
    one_error_line(code, out, err, 1, "no such process", str(pid))


def test_not_python():
    require_root()
    p = subprocess.Popen(["sleep", "60"])
    try:
        code, out, err = run_tmtrace("-p", p.pid)
        one_error_line(code, out, err, 1, "not a CPython process")
        check(p.poll() is None, "the target died")
    finally:
        p.kill()
        p.wait()


def test_unsupported_versions():
    require_root()
    root = pyenv_root()
    tried = 0
    for version, needle in (("3.7", "3.7"), ("3.6", "not supported"), ("2.7", "Python 2")):
        import glob
        found = glob.glob(os.path.join(root or "/nonexistent", "versions", version + ".*", "bin",
                                       "python" + version))
        if not found:
            continue
        tried += 1
        w = Workload(found[0], "idle.py")
        try:
            code, out, err = run_tmtrace("-p", w.pid)
            one_error_line(code, out, err, 1, needle)
            check(w.alive(), "the target died")
        finally:
            w.kill()
    if not tried:
        raise Skip("no CPython 2.7, 3.6 or 3.7 under pyenv to check the unsupported-version error")


# A process that looks like a CPython build tmtrace must refuse: the
# extension suffix a build compiles in (its ABI flags), a _PyRuntime, and for
# 3.13 the _Py_DebugOffsets header at _PyRuntime's start.
FAKE_BUILD = r"""
#include <string.h>
#include <unistd.h>
const char suffix[] = ".cpython-3%(minor)d%(flags)s-x86_64-linux-gnu.so";
unsigned long long _PyRuntime[512] = { 0 };
int main(void)
{
	const char *p = suffix;
	memcpy(_PyRuntime, "xdebugpy", 8);
	_PyRuntime[1] = 0x030d00f0ULL;        /* version */
	_PyRuntime[2] = %(free_threaded)d;    /* free_threaded */
	_PyRuntime[5] = %(interpreters_head)d; /* runtime_state.interpreters_head */
	__asm__ volatile("" : : "r"(p) : "memory");
	pause();
	return 0;
}
"""


def run_fake_build(minor, flags="", free_threaded=0, interpreters_head=632):
    """tmtrace's one-line answer to a fake CPython 3.<minor> build."""
    if not shutil.which("gcc"):
        raise Skip("gcc is needed to build the fake CPython processes")
    import tempfile
    with tempfile.TemporaryDirectory(prefix="tmtrace-fake.") as tmp:
        src = os.path.join(tmp, "fake.c")
        exe = os.path.join(tmp, "python3.%d" % minor)
        with open(src, "w") as f:
            f.write(FAKE_BUILD % {"minor": minor, "flags": flags, "free_threaded": free_threaded,
                                  "interpreters_head": interpreters_head})
        subprocess.run(["gcc", "-O1", "-o", exe, src], check=True)
        p = subprocess.Popen([exe])
        try:
            code, out, err = run_tmtrace("-p", p.pid)
            check(p.poll() is None, "the fake target died")
            return code, out, err
        finally:
            p.kill()
            p.wait()


def test_debug_build_refused():
    """A debug build (ABI flags 'd') has other structure layouts: refused."""
    require_root()
    code, out, err = run_fake_build(12, "d")
    one_error_line(code, out, err, 1, "debug build", "3.12", "not supported")


def test_free_threaded_build_refused():
    """3.13t (ABI flags 't'), and a 3.13 whose _Py_DebugOffsets say
    free-threaded: refused."""
    require_root()
    code, out, err = run_fake_build(13, "t")
    one_error_line(code, out, err, 1, "free-threaded build", "not supported")
    code, out, err = run_fake_build(13, "", free_threaded=1)
    one_error_line(code, out, err, 1, "free-threaded build", "not supported")


def test_debug_offsets_disagree_refused():
    """3.13: a _Py_DebugOffsets value that differs from tmtrace's generated
    table stops the attach, naming the field."""
    require_root()
    code, out, err = run_fake_build(13, "", interpreters_head=640)
    one_error_line(code, out, err, 1, "runtime_state.interpreters_head = 640", "not supported")


def test_missing_capabilities():
    """Capabilities are checked, not the uid: drop them and keep uid 0."""
    require_root()
    if not shutil.which("setpriv"):
        raise Skip("setpriv (util-linux) is not installed")
    w = Workload(find_python(11), "idle.py")
    try:
        p = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--",
                            TMTRACE, "-p", str(w.pid)], capture_output=True, text=True, timeout=30)
        one_error_line(p.returncode, p.stdout, p.stderr, 1, "CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE")
        check(w.alive(), "the target died")
    finally:
        w.kill()


def hide_and_run(mountpoint, pid):
    """Runs tmtrace in a private mount namespace where `mountpoint` is an
    empty tmpfs: the kernel feature behind it is invisible, as on a kernel
    built without it."""
    if not shutil.which("unshare"):
        raise Skip("unshare (util-linux) is not installed")
    script = 'mount -t tmpfs none "$1" && exec "$2" -p "$3"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                           mountpoint, TMTRACE, str(pid)], capture_output=True, text=True, timeout=30)


def check_hidden(mountpoint, needle):
    require_root()
    w = Workload(find_python(11), "idle.py")
    try:
        p = hide_and_run(mountpoint, w.pid)
        one_error_line(p.returncode, p.stdout, p.stderr, 1, needle)
        check(w.alive(), "the target died")
    finally:
        w.kill()


def test_kernel_without_btf():
    check_hidden("/sys/kernel/btf", "BTF")


def test_kernel_without_uprobes():
    check_hidden("/sys/bus/event_source/devices", "uprobe")
