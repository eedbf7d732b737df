"""Debian's /usr/bin/python3.11: static, stripped, PGO. tmtrace attaches and
runs correctly, and says loudly how many inlined allocator copies it does
not probe (they are the next issue's work)."""

import re
import time

from harness import Tmtrace, Workload, check, find_python, require_root


def test_debian_python_attaches_and_warns():
    require_root()
    python = find_python(11, pyenv=False)
    w = Workload(python, "mix.py", "plain")
    t = Tmtrace(w.pid, "--format", "json", "-i", "0.5")
    try:
        check("CPython 3.11" in t.attached and python in t.attached, "attached line %r" % t.attached)
        notes = []
        while True:
            line = t.err.next(10)
            notes.append(line)
            if line is None or "inlined" in line:
                break
        m = re.search(r"found (\d+) inlined copies", notes[-1] or "")
        check(m and int(m.group(1)) > 100, "no loud inlined-copies warning: %r" % notes)
        w.go()
        r = t.next_json(after=time.time() + 0.2)
        check(set(r["lost"]) and r["python"].startswith("3.11"), "report %r" % r)
        check(w.alive(), "the target died")
    finally:
        t.stop()
        code, _ = w.finish()
    check(code == 0, "the target exited %d" % code)
