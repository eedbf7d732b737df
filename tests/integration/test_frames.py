"""Frames to file and line: non-ASCII file and function names, and code
objects that die right after running while new ones take their addresses.
Checked against tracemalloc inside identical runs and against the blocks
the workloads made themselves. One test_* function per build."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

from harness import TMTRACE, WORKLOADS, Failure, Tmtrace, Workload, check, lines_of, require_root
from test_threads import (compare, expect_exact, largest, per_build, python_for, report_problems,
                          tmtrace_opts, traced_run)


# ---- B1: non-ASCII file names and function names -----------------------------

UNICODE_N = 200
# Latin-1 only, CJK and astral characters: CPython stores these file names
# as str of kind 1 (not ASCII), 2 and 4.
UNICODE_DIR = "dïr"
UNICODE_FILES = ("frames_ünïcödé.py", "frames_名前.py", "frames_🐍.py")


def marker_line(path, marker):
    with open(path, encoding="utf-8") as f:
        for no, text in enumerate(f, 1):
            if text.rstrip().endswith("# " + marker):
                return no, text.strip()
    raise LookupError(marker)


class TextTracer:
    """tmtrace in text mode, its stdout read as bytes (to check it is
    UTF-8 and nothing else)."""

    def __init__(self, pid):
        self.pid = pid
        self.proc = subprocess.Popen([TMTRACE, "-p", str(pid), "-i", "0.2", "-t", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)

    def wait_attached(self):
        first = self.proc.stderr.readline().decode("utf-8", "replace")
        if not first.startswith("tmtrace: attached to %d" % self.pid):
            raise Failure("text tmtrace did not attach: %r" % first)

    def last_report(self):
        """Stops tmtrace; the last complete report, as lines."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=60)
        try:
            text = out.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Failure("tmtrace's text output is not UTF-8: %s (near %r)"
                          % (e, out[max(0, e.start - 40):e.end + 40]))
        reports, cur = [], []
        for line in text.split("\n"):
            if line.startswith("[") and "pid" in line and cur:
                reports.append(cur)
                cur = []
            cur.append(line)
        reports.append(cur)
        complete = [r for r in reports if any(l.startswith("Total allocated size:") for l in r)]
        check(complete, "no complete text report in %r" % text[-500:])
        return complete[-1]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def unicode_names(build):
    require_root()
    python = python_for(build)
    tmp = tempfile.mkdtemp(prefix="tmtrace-frames-")
    text_tracer = None
    workloads = []
    try:
        folder = os.path.join(tmp, UNICODE_DIR)
        os.mkdir(folder)
        template = os.path.join(WORKLOADS, "frames_unicode_mod.py")
        for name in UNICODE_FILES:
            shutil.copy(template, os.path.join(folder, name))
        alloc_line, alloc_source = marker_line(template, "分配")
        args = [folder, UNICODE_N]
        ref_w = Workload(python, "frames_unicode.py", "tracemalloc", *args)
        workloads.append(ref_w)
        ref_w.send("go")
        w = Workload(python, "frames_unicode.py", "plain", *args)
        workloads.append(w)
        text_tracer = TextTracer(w.pid)     # attaches while the JSON one does
        t = Tmtrace(w.pid, *tmtrace_opts())
        try:
            text_tracer.wait_attached()
            w.go()
            report = t.next_json(timeout=30, after=time.time() + 0.2)
            time.sleep(0.4)   # a text report after that one
            text = text_tracer.last_report()
        finally:
            t.stop()
            w.kill()
        ref = json.loads(ref_w.out.wait_for(lambda l: l.startswith("ref "), 60, "the 'ref'")[4:])
        ref_w.kill()
        files = ref["files"]
        check([os.path.basename(f) for f in files] == sorted(UNICODE_FILES),
              "the workload imported %r" % files)
        problems = []
        # JSON: the file names are exactly tracemalloc's strings.
        seen = {s["traceback"][0]["filename"] for s in report["stats"]}
        odd = sorted(f for f in seen if "frames_" in f and f not in files
                     and not f.endswith("frames_unicode.py"))
        if odd:
            problems.append("file names tracemalloc never shows: %r (expected among %r)" % (odd, files))
        for k, f in enumerate(files):
            mine = lines_of(report["stats"], f)
            theirs = {s["lineno"]: (s["size"], s["count"]) for s in ref["lineno"] if s["filename"] == f}
            size = 1000 * (k + 1)
            expected = (UNICODE_N * (33 + size) + UNICODE_N * (UNICODE_N - 1) // 2, UNICODE_N)
            if theirs.get(alloc_line) != expected:
                raise Failure("the workload is wrong: tracemalloc saw %r on %s:%d"
                              % (theirs.get(alloc_line), f, alloc_line))
            problems += expect_exact("%s:%d (分配, %d bytes objects)" % (f, alloc_line, UNICODE_N),
                                     mine.get(alloc_line), expected, theirs.get(alloc_line))
            problems += compare("%s line" % f, mine, theirs, skip={alloc_line})
            # text: '#N: <str(Statistic)>' then the source line, as UTF-8
            stat = [s for s in ref["lineno"] if s["filename"] == f and s["lineno"] == alloc_line][0]
            heads = [i for i, l in enumerate(text) if l.split(": ", 1)[-1] == stat["text"]
                     and l.startswith("#")]
            if not heads:
                near = [l for l in text if os.path.basename(f) in l]
                problems.append("text report has no line '#N: %s' (lines naming the file: %r)"
                                % (stat["text"], near))
            elif heads[0] + 1 >= len(text) or text[heads[0] + 1] != "    " + alloc_source:
                problems.append("text report: source line after %r is %r, expected %r"
                                % (text[heads[0]], text[heads[0] + 1:heads[0] + 2], "    " + alloc_source))
            else:
                print("     text: %s" % text[heads[0]])
        if problems:
            problems.append("tmtrace's largest lines: " + largest(report))
        report_problems(problems, report)
    finally:
        if text_tracer is not None:
            text_tracer.kill()
        for x in workloads:
            x.kill()
        shutil.rmtree(tmp, ignore_errors=True)


per_build(globals(), "test_non_ascii_file_and_function_names", unicode_names, """
Three copies of a module with non-ASCII function names (分配, größe_ändern,
Ünïcödé) under non-ASCII file names (Latin-1, CJK, astral: str kinds 1, 2
and 4) in a non-ASCII directory allocate known blocks. In JSON tmtrace's
file names are exactly tracemalloc's strings and its lines, sizes and
counts agree (the known line exactly, the others within 1%); the text
report prints, in valid UTF-8, tracemalloc's str(Statistic) for the known
line and the stripped source line after it.""")


# ---- B2: code objects dying, their addresses reused --------------------------

CODEGEN_N = 300
_codegen_runs = {}


def codegen_run(build):
    """One traced run (with a pickle snapshot) and its reference, shared by
    the two tests of a build."""
    if build not in _codegen_runs:
        python = python_for(build)
        tmp = tempfile.mkdtemp(prefix="tmtrace-codegen-")
        try:
            pickle = os.path.join(tmp, "snap.pickle")
            run = traced_run(python, "frames_codegen.py", [CODEGEN_N], opts=("-o", pickle))
            # tracemalloc itself reads the snapshot: every block of a size
            # the generated code allocated, with its frame.
            sizes = sorted({e[2] for e in run.plan["expected"]})
            script = ("import json, sys, tracemalloc\n"
                      "sizes = set(json.loads(sys.argv[2]))\n"
                      "snap = tracemalloc.Snapshot.load(sys.argv[1])\n"
                      "print(json.dumps([[t.size, t.traceback[0].filename, t.traceback[0].lineno]\n"
                      "                  for t in snap.traces if t.size in sizes]))\n")
            p = subprocess.run([python, "-c", script, pickle, json.dumps(sizes)],
                               capture_output=True, text=True, timeout=60)
            check(p.returncode == 0, "tracemalloc cannot load tmtrace's pickle: %s" % p.stderr[-500:])
            run.blocks = json.loads(p.stdout)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _codegen_runs[build] = run
    return _codegen_runs[build]


GEN_FILES = ("<gen>", "<gen-0>", "<gen-1>", "<gen-2>", "<fn-gen>")


def codegen_exact(build):
    require_root()
    run = codegen_run(build)
    report, ref = run.reports[0], run.refs[0]
    theirs = {(s["filename"], s["lineno"]): (s["size"], s["count"]) for s in ref["lineno"]}
    expected = {(f, l): (s * c, c) for f, l, s, c in run.plan["expected"]}
    if theirs != expected:
        raise Failure("the workload is wrong: tracemalloc saw %r, expected %r" % (theirs, expected))
    mine = {(s["traceback"][0]["filename"], s["traceback"][0]["lineno"]): (s["size"], s["count"])
            for s in report["stats"] if s["traceback"][0]["filename"] in GEN_FILES}
    problems = []
    for key in sorted(set(mine) | set(expected)):
        if key in expected:
            problems += expect_exact("%s:%d" % key, mine.get(key), expected[key], theirs.get(key))
        else:
            problems.append("%s:%d: tmtrace %d B in %d blocks, where tracemalloc has none"
                            % (key + mine[key]))
    unknown = lines_of(report["stats"], "<unknown>").get(0, (0, 0))
    if problems:
        problems.append("<unknown>:0 holds %d B in %d blocks" % unknown)
    report_problems(problems, report)


per_build(globals(), "test_generated_code_lines_exact", codegen_exact, """
300 rounds each of exec(compile(...)) of generated code whose code object
dies at once, the next one taking its address: "<gen>" with the statement
on lines 1-5, "<gen-0..2>" likewise, and "<fn-gen>" a function called after
its defining module code died. Every block's size is unique to its
(filename, line). tmtrace's (filename, line) -> (size, count) is exactly
tracemalloc's (and the blocks made): no wrong line, no line 0, nothing
missing.""")


def codegen_never_wrong(build):
    require_root()
    run = codegen_run(build)
    report = run.reports[0]
    where = {}        # block size -> (filename, line) that allocated it
    total = 0
    for f, l, s, c in run.plan["expected"]:
        where[s] = (f, l)
        total += c
    right = unresolved = 0
    wrong = {}
    for size, filename, lineno in run.blocks:
        if (filename, lineno) == where[size]:
            right += 1
        elif (filename, lineno) == ("<unknown>", 0):
            unresolved += 1
        else:
            key = "%s:%d -> %s:%d" % (where[size] + (filename, lineno))
            wrong[key] = wrong.get(key, 0) + 1
    lost = report["lost"]
    problems = []
    if wrong:
        problems.append("%d blocks on a wrong line (made at -> shown at: count): %s"
                        % (sum(wrong.values()), ", ".join("%s: %d" % kv for kv in sorted(wrong.items())[:12])))
    if right + unresolved + sum(wrong.values()) < total:
        problems.append("%d of the %d generated blocks are missing from the snapshot"
                        % (total - right - unresolved - sum(wrong.values()), total))
    if unresolved and not lost.get("unresolved_frames"):
        problems.append("%d blocks shown as <unknown>:0 but lost.unresolved_frames is %r"
                        % (unresolved, lost.get("unresolved_frames")))
    print("     %d blocks on their line, %d <unknown>:0 (unresolved_frames=%r)"
          % (right, unresolved, lost.get("unresolved_frames")))
    report_problems(problems, report)


per_build(globals(), "test_generated_code_never_a_wrong_line", codegen_never_wrong, """
The same run, block by block from tmtrace's pickle snapshot (read by
tracemalloc): every block the generated code made is either on the line
that made it or, if its frame could not be resolved, on <unknown>:0 and
counted in lost.unresolved_frames; never on another real line.""")
