"""Object creations in extension modules: _asyncio takes its future
iterators from a free list of its own and gives them their first reference
itself (calling _Py_NewReference through its own GOT, or inlining the
re-stamp in 3.8), so tracemalloc re-stamps them there. tmtrace probes
those calls in every module that makes them: the interpreter's own
extension modules from the start (by file, loaded or not), any other as it
is loaded."""

import os
import shutil
import tempfile
import time

from harness import BUILDS, Tmtrace, Workload, build, build_python, check, lines_of, require_root


def marked_lines():
    from harness import WORKLOADS
    with open(os.path.join(WORKLOADS, "late_module.py")) as f:
        text = f.read().splitlines()
    # the comprehension's line, after each def
    return {what: next(i + 2 for i, l in enumerate(text) if l.startswith("def " + what))
            for what in ("first_iterators", "second_iterators")}


LINES = marked_lines()


def asyncio_module(python):
    """The _asyncio extension module file of this python, or None (built in)."""
    import subprocess
    out = subprocess.run([python, "-c", "import _asyncio; print(getattr(_asyncio, '__file__', ''))"],
                         capture_output=True, text=True, timeout=60).stdout.strip()
    return out or None


def run(python, mode, directory, note):
    w = Workload(python, "late_module.py", mode, directory)
    t = None if mode == "tracemalloc" else Tmtrace(w.pid, "--format", "json", "-i", "0.5", "-t", "0")
    try:
        w.send("go")
        loaded = w.out.wait_for(lambda l: l.startswith("loaded "), 60, "the workload's 'loaded'")
        if t and note:
            # a module tmtrace could not know of: probed once it sees it mapped
            t.err.wait_for(lambda l: "was loaded after attaching" in l, 30,
                           "tmtrace's note on the module loaded after attaching")
        w.send("")
        line = w.out.wait_for(lambda l: l == "done" or l.startswith("ref "), 60, "the workload's 'done'")
        if t:
            report = t.next_json(timeout=30, after=time.time() + 0.2)
    finally:
        if t:
            t.stop()
        w.kill()
    if t:
        return loaded, lines_of(report["stats"], w.proc.args[1])
    import json
    return loaded, {r["lineno"]: (r["size"], r["count"]) for r in json.loads(line[4:])["lineno"]}


def check_module(name, copy):
    require_root()
    python = build_python(name)
    original = asyncio_module(python)
    check(original, "%s: _asyncio is no extension module here" % name)
    with tempfile.TemporaryDirectory() as tmp:
        directory = "-"
        if copy:
            os.chmod(tmp, 0o755)
            shutil.copy(original, tmp)
            directory = tmp
        # 3.13 probes its creation functions themselves: no module's call needs a probe
        note = copy and build(name).minor < 13
        loaded, ref = run(python, "tracemalloc", directory, False)
        loaded_too, mine = run(python, "plain", directory, note)
    check(loaded == loaded_too and (tmp in loaded) == copy,
          "%s: the workload loaded %s and %s" % (name, loaded, loaded_too))
    for what, lineno in LINES.items():
        got, want = mine.get(lineno, (0, 0)), ref.get(lineno, (0, 0))
        check(got == want, "%s: line %d (%s): tracemalloc %d B in %d blocks, tmtrace %d B in %d"
              % (name, lineno, what, want[0], want[1], got[0], got[1]))
    check(ref.get(LINES["second_iterators"], (0, 0))[1] >= 100,
          "%s: the iterators did not come from the free list as expected: %r" % (name, ref))


def _make(name, copy):
    def test():
        check_module(name, copy)
    kind = "copy" if copy else "stdlib"
    test.__name__ = "test_module_%s_%s" % (kind, name.replace(".", "_").replace("-", "_"))
    test.__doc__ = ("%s: _asyncio's free-list iterators, %s" %
                    (name, "from a copy loaded after attaching" if copy else "imported after attaching"))
    test.build = name
    return test


for _build in BUILDS:
    for _copy in (False, True):
        _t = _make(_build.name, _copy)
        globals()[_t.__name__] = _t
