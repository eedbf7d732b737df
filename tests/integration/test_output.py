"""What tmtrace prints: the JSON schema, the text report, source lines."""

import json
import linecache
import os
import re
import time

from harness import (Tmtrace, Workload, WORKLOADS, check, find_python, require_root)

LOST_COUNTERS = {"live_map_full", "traceback_map_full", "unreadable_frames", "lost_events",
                 "nesting_overflow", "abandoned_calls", "unreadable_pools", "unprobed_hook_calls",
                 "code_generations_full", "sample_map_full", "live_slot_busy", "unresolved_frames"}


def sort_key(stat):
    """Statistic._sort_key, with Traceback ordering (oldest frame first)."""
    frames = tuple((f["filename"], f["lineno"]) for f in reversed(stat["traceback"]))
    return (stat["size"], stat["count"], frames)


def test_json_schema_and_order():
    require_root()
    w = Workload(find_python(11), "mix.py", "plain")
    t = Tmtrace(w.pid, "--format", "json", "-i", "0.5", "-t", "0", "-n", "3")
    try:
        w.go()
        done = time.time()
        r = t.next_json(after=done + 0.2)
    finally:
        t.stop()
        w.finish()
    check(set(r) == {"time", "pid", "python", "traced_memory", "key_type", "stats", "total_size",
                     "total_count", "lost"}, "JSON keys: %r" % sorted(r))
    check(r["pid"] == w.pid and r["python"].startswith("3.11.") and r["key_type"] == "lineno",
          "header fields: %r" % {k: r[k] for k in ("pid", "python", "key_type")})
    check(isinstance(r["time"], float) and abs(r["time"] - time.time()) < 60, "time %r" % r["time"])
    check(set(r["lost"]) == LOST_COUNTERS, "lost counters: %r" % r["lost"])
    tm = r["traced_memory"]
    check(tm["peak"] >= tm["current"] > 0, "traced memory %r" % tm)
    check(r["total_size"] == sum(s["size"] for s in r["stats"]), "total_size is not the sum")
    check(r["total_count"] == sum(s["count"] for s in r["stats"]), "total_count is not the sum")
    check(r["total_size"] == tm["current"], "with -t 0 the total (%d) must equal current traced "
          "memory (%d)" % (r["total_size"], tm["current"]))
    keys = [sort_key(s) for s in r["stats"]]
    check(keys == sorted(keys, reverse=True), "stats not sorted as Snapshot.statistics() sorts")
    # -n 3: the lineno key is the most recent frame; frames most recent first
    nested = [s for s in r["stats"] if s["traceback"][0]["filename"].endswith("mix.py")
              and linecache.getline(s["traceback"][0]["filename"],
                                    s["traceback"][0]["lineno"]).strip().startswith("return [(\"nested\"")]
    check(nested, "no statistic for nested_b's line")
    check(len(nested[0]["traceback"]) == 1, "lineno statistics carry one frame")


def test_text_report():
    require_root()
    w = Workload(find_python(11), "mix.py", "plain")
    t = Tmtrace(w.pid, "-i", "0.7", "-t", "5")
    try:
        w.go()
        done = time.time()
        header = t.out.wait_for(lambda l: l.startswith("["), 30, "a report header")
        while True:
            stamp = time.mktime(time.strptime(header[1:20], "%Y-%m-%d %H:%M:%S"))
            if stamp >= int(done) + 1:
                break
            header = t.out.wait_for(lambda l: l.startswith("["), 30, "a report header")
        block = [header]
        while True:
            line = t.out.next(10)
            block.append(line)
            if line.startswith("Total allocated size: "):
                break
    finally:
        t.stop()
        w.finish()
    size = r"-?\d+(\.\d)? (B|KiB|MiB|GiB|TiB)"
    check(re.fullmatch(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] pid %d, CPython 3\.11\.\d+: traced memory "
                       r"current=%s, peak=%s" % (w.pid, size, size), block[0]), "header %r" % block[0])
    check(block[1] == "Top 5 lines", "second line %r" % block[1])
    stat = re.compile(r"#(\d+): (.+):(\d+): size=%s, count=(\d+), average=%s" % (size, size))
    ranks = []
    for i, line in enumerate(block[2:-1], 2):
        m = stat.fullmatch(line)
        if m:
            ranks.append(int(m.group(1)))
            filename, lineno = m.group(2), int(m.group(3))
            expected = linecache.getline(filename, lineno).strip()
            if expected:
                check(block[i + 1] == "    " + expected,
                      "source line after %r is %r, expected %r" % (line, block[i + 1], expected))
        elif not line.startswith("    "):
            check(re.fullmatch(r"\d+ other: %s" % size, line), "unexpected line %r" % line)
    check(ranks == [1, 2, 3, 4, 5], "ranks %r" % ranks)
    check(re.fullmatch(r"Total allocated size: %s" % size, block[-1]), "last line %r" % block[-1])


def test_relative_filename_source_lines():
    """co_filename relative to the target's cwd: source lines still found."""
    require_root()
    python = find_python(11)
    import subprocess
    p = subprocess.Popen([python, "relative.py", "--wait"], cwd=WORKLOADS, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        check(p.stdout.readline().strip() == "ready", "leaky.py did not start")
        t = Tmtrace(p.pid, "-i", "1", "--count", "2", "-t", "4")
        p.stdin.write("go\n")
        p.stdin.flush()
        t.proc.wait(timeout=30)
        text = t.out.rest(5)
    finally:
        p.kill()
        p.wait()
    check(sum(1 for l in text if re.match(r"#\d+: ", l)) == 8, "-t 4 with --count 2: %r" % text)
    found = [i for i, l in enumerate(text) if re.match(r"#\d+: leaky\.py:\d+: ", l)]
    check(found, "no statistic for the relative file name leaky.py in %r" % text)
    for i in found:
        lineno = int(text[i].split(":")[2])
        expected = linecache.getline(os.path.join(WORKLOADS, "leaky.py"), lineno).strip()
        check(text[i + 1] == "    " + expected, "source line %r, expected %r" % (text[i + 1], expected))
