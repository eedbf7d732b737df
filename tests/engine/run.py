#!/usr/bin/env python3
"""Differential tests of tmtrace's snapshot engine against tracemalloc.

usage: /usr/bin/python3 tests/engine/run.py [--seed N] [--snapshots N]
           [--queries N] [--profiles LIST] [--jobs N] [--workers N]
           [-V 3.X]... [--tmtrace PATH | --fake] [-v] [--show N] [--keep-work]

For each CPython 3.8-3.13 installed under `pyenv root`/versions (else
$PYENV_ROOT, else /root/.pyenv; the newest 3.X.N of each), the helper
tests/engine/pyside.py runs under that Python and:

  1. builds random tracemalloc.Snapshot objects from raw traces, (domain,
     size, frames, total_nframe) on 3.9+ and (domain, size, frames) on 3.8,
     frames most recent first: domains mostly 0, some small, some near
     2**32-1; tracebacks of 1-8 frames sharing their oldest frames, with
     recursion (a frame repeated: cumulative statistics count it each time),
     <unknown>:0 frames, non-ASCII, long, .pyc and fnmatch-special file
     names, equal tracebacks as shared and as distinct objects (both pickle
     forms); lineno 0 to 2**32-1; total_nframe ints and None; traceback
     limits 1 to 128; 0 to 2000 traces, a few up to 12000. Each snapshot has
     a size profile: "normal" (0 B to TiB), "ties" (a few sizes: the order
     of equal statistics is tracemalloc's traceback order), "big" (sizes
     past 2**53, sums below 2**63) or "huge" (sizes up to 2**64-1, sums past
     2**64); failures name the big and huge ones. Two snapshots are ones
     tracemalloc really took (tagged "real"), and one has 600 single-frame
     traces of file names over a small alphabet of fnmatch's special
     characters;
  2. dumps them with Snapshot.dump(), single snapshots and (old, new) pairs
     that share most traces;
  3. draws random queries and compares, byte for byte, what
     `build/tmtrace report FILE ... --format tracemalloc` prints with what
     print(stat) prints in that Python after filter_traces(), statistics()
     or compare_to() (families "stats" and "compare"). Filters come from the
     snapshot's file names and from fnmatch syntax (*, ?, [seq], [!seq],
     []], [!]], empty ranges such as [z-a], a trailing [, .pyc), with and
     without :LINE, --all-frames, --domain and --exclude-domain; numbers
     are decimal, a few written with leading zeros. "fnmatch" queries
     filter the alphabet snapshot with -k filename -t 0, which lists
     exactly the names a pattern keeps. A query on which tracemalloc raises
     (cumulative with key traceback) must make tmtrace exit non-zero
     ("refuse"). Python 3.8 and 3.9 raise re.error on a pattern with an
     empty range: those queries are not compared (counted as "skipped");
  4. "pickle-out": `tmtrace report FILE [filters] -o OUT.pickle
     [--python-version 3.X]`, then Snapshot.load(OUT) in that Python must
     hold the filtered traces (sorted raw traces equal, of the right types)
     and give the same statistics; "tmt-roundtrip": `-o OUT.tmt`, then
     `report OUT.tmt` must print what the filtered pickle gives,
     `OUT.tmt -o back.pickle` must load with the same traces, and
     `OUT.tmt --compare OLD.pickle` must print what compare_to gives. What
     tmtrace prints besides writing -o must be nothing or the report;
  5. "json": `--format json` must print one JSON document whose "stats"
     have the size, count (and size_diff, count_diff) of tracemalloc's
     statistics, in its order (the rest of the JSON is not checked), and
     `--format text` must exit 0.

Each query is one test: the last line is `N passed, N failed`. A failure
prints its first mismatching line and the commands to reproduce it; the
files of up to 10 failures per family and size profile (inputs,
expected.txt, actual.txt, repro.sh) are kept under
build/engine-failures/py3.X/QUERY/. By hand, the reference output of any
query is `python3.X tests/engine/pyside.py tmtrace report FILE ...` (the
same options as tmtrace), and a written pickle is checked with
`python3.X tests/engine/pyside.py check-pickle OUT FILE [filters]`.

Randomness is deterministic (--seed, default 1; per version the seed is
seed*1000+minor); --snapshots and --queries set the amount per version
(default 400 and 1500, about 1.5 minutes on 2 CPUs), --profiles the size
profiles drawn. Versions run --jobs at a time (default: the number of
CPUs), each with --workers tmtrace processes in flight (default 2). The
binary under test is a copy of build/tmtrace (or --tmtrace PATH), so a
rebuild meanwhile does not change it.

A missing Python version is skipped, or a failure under CI=true. When
build/tmtrace has no `report` command the comparisons are skipped, saying
why (a failure under CI=true); --fake runs the whole suite against the
reference implementation instead, which checks this harness itself."""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TMTRACE = os.path.join(ROOT, "build", "tmtrace")
PYSIDE = os.path.join(HERE, "pyside.py")
FAILDIR = os.path.join(ROOT, "build", "engine-failures")
WORKDIR = os.path.join(ROOT, "build", "engine-work")
CI = os.environ.get("CI") == "true"
MINORS = (8, 9, 10, 11, 12, 13)
FAMILIES = ("stats", "compare", "refuse", "pickle-out", "tmt-roundtrip", "json", "fnmatch")


def pyenv_root():
    try:
        out = subprocess.run(["pyenv", "root"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             universal_newlines=True, timeout=30).stdout.strip()
        if out and os.path.isdir(out):
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    env = os.environ.get("PYENV_ROOT")
    if env and os.path.isdir(env):
        return env
    return "/root/.pyenv"


def find_python(root, minor):
    """The newest pyenv CPython 3.<minor>.N, or None."""
    best = None
    for path in glob.glob(os.path.join(root, "versions", "3.%d.*" % minor, "bin",
                                       "python3.%d" % minor)):
        m = re.match(r"3\.%d\.([0-9]+)$" % minor, os.path.basename(os.path.dirname(
            os.path.dirname(path))))
        if m and os.access(path, os.X_OK):
            cand = (int(m.group(1)), path)
            best = max(best, cand) if best else cand
    return best[1] if best else None


def shown(path):
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def tmtrace_has_report(tmtrace):
    """None when `tmtrace report` exists, else why not."""
    if not os.access(tmtrace, os.X_OK):
        return "%s is not built (run make)" % shown(tmtrace)
    try:
        p = subprocess.run([tmtrace, "report", "--help"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return "%s report --help: %s" % (tmtrace, e)
    text = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0 or "--compare" not in text or "tracemalloc" not in text:
        return ("%s has no report command yet (`tmtrace report --help` exited %d "
                "without describing --compare and --format tracemalloc)"
                % (shown(tmtrace), p.returncode))
    return None


def run_version(minor, python, args, tmtrace_cmd, workdir):
    tag = "py3.%d" % minor
    work = os.path.join(workdir, tag)
    fail = os.path.join(FAILDIR, tag)
    shutil.rmtree(fail, ignore_errors=True)
    result_path = os.path.join(workdir, tag + ".json")
    cmd = [python, PYSIDE, "run", "--seed", str(args.seed), "--snapshots", str(args.snapshots),
           "--queries", str(args.queries), "--workers", str(args.workers),
           "--profiles", args.profiles, "--workdir", work,
           "--faildir", fail, "--result", result_path]
    if "--shown-as" in tmtrace_cmd:
        i = tmtrace_cmd.index("--shown-as")
        cmd += ["--tmtrace-shown-as", tmtrace_cmd[i + 1]]
        tmtrace_cmd = tmtrace_cmd[:i]
    for a in tmtrace_cmd:
        cmd += ["--tmtrace", a]
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, errors="replace")
    if p.returncode != 0 or not os.path.exists(result_path):
        return {"error": "pyside.py run exited %d:\n%s" % (p.returncode, p.stdout[-4000:]),
                "seconds": time.monotonic() - t0}
    with open(result_path, encoding="utf-8") as f:
        result = json.load(f)
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
        os.unlink(result_path)
    if not result["failures"]:
        shutil.rmtree(fail, ignore_errors=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--snapshots", type=int, default=400, help="per version (default 400)")
    parser.add_argument("--queries", type=int, default=1500, help="per version (default 1500)")
    parser.add_argument("--profiles", default="normal,big,huge",
                        help="size profiles of the snapshots (default normal,big,huge)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2,
                        help="versions at a time")
    parser.add_argument("--workers", type=int, default=2,
                        help="tmtrace processes in flight per version")
    parser.add_argument("-V", "--python", action="append", default=[],
                        help="only these versions (3.X), repeatable")
    parser.add_argument("--fake", action="store_true",
                        help="test the reference implementation instead of build/tmtrace")
    parser.add_argument("--tmtrace", metavar="PATH", default=TMTRACE,
                        help="the tmtrace to test (default build/tmtrace)")
    parser.add_argument("-v", "--verbose", action="store_true", help="timings per version")
    parser.add_argument("--show", type=int, default=5, help="failures shown per version")
    parser.add_argument("--keep-work", action="store_true",
                        help="keep the generated files under build/engine-work")
    args = parser.parse_args()

    start = time.monotonic()
    passed = failed = 0
    minors = MINORS
    if args.python:
        minors = []
        for v in args.python:
            m = re.match(r"3\.([0-9]+)$", v)
            if not m or int(m.group(1)) not in MINORS:
                parser.error("-V %s: the versions are 3.8 to 3.13" % v)
            minors.append(int(m.group(1)))

    if args.fake:
        tmtrace_cmd = None  # each version's own Python runs the reference
        print("engine: --fake: testing the reference implementation (pyside.py), not tmtrace")
    else:
        why = tmtrace_has_report(args.tmtrace)
        if why:
            print("engine: comparisons skipped: %s" % why)
            if CI:
                print("engine: FAIL: required under CI=true")
                failed += 1
            print("%d passed, %d failed" % (passed, failed))
            return 1 if failed else 0
        tmtrace_cmd = [os.path.abspath(args.tmtrace)]

    root = pyenv_root()
    todo = []
    for minor in minors:
        python = find_python(root, minor)
        if python is None:
            msg = "CPython 3.%d is not installed (looked under %s/versions)" % (minor, root)
            if CI:
                print("FAIL py3.%d: %s; required under CI=true" % (minor, msg))
                failed += 1
            else:
                print("SKIP py3.%d: %s" % (minor, msg))
            continue
        todo.append((minor, python))

    workdir = os.path.join(WORKDIR, "run-%d" % os.getpid())
    os.makedirs(workdir, exist_ok=True)
    if tmtrace_cmd:
        # a copy: the binary under test stays the same if make relinks it meanwhile
        copy = os.path.join(workdir, "tmtrace")
        shutil.copy2(tmtrace_cmd[0], copy)
        tmtrace_cmd = [copy, "--shown-as", shown(tmtrace_cmd[0])]

    def job(item):
        minor, python = item
        cmd = tmtrace_cmd if tmtrace_cmd else [python, PYSIDE, "tmtrace"]
        return run_version(minor, python, args, cmd, workdir)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        results = list(ex.map(job, todo))

    for (minor, python), r in zip(todo, results):
        tag = "py3.%d" % minor
        if "error" in r:
            failed += 1
            print("FAIL %s: the harness itself failed (%.0f s): %s" % (tag, r["seconds"], r["error"]))
            continue
        counts = r["counts"]
        vp = sum(c[0] for c in counts.values())
        vf = sum(c[1] for c in counts.values())
        passed += vp
        failed += vf
        fams = ", ".join("%s %d/%d" % (f, counts[f][0], sum(counts[f]))
                         for f in FAMILIES if f in counts)
        print("%s %s (%s): %d snapshots (%d old/new pairs, %d traces), %d queries: %s; "
              "%d skipped (3.8/3.9 fnmatch raises); %.0f s (%d tmtrace runs)"
              % ("ok  " if not vf else "FAIL", tag, r["python"], r["snapshots"], r["pairs"],
                 r["traces"], r["queries"], fams, r["skipped"], r["seconds"], r["tmtrace_runs"]))
        if args.verbose:
            print("     generation %.1f s, harness CPU %.1f s, tmtrace wall %.1f s in all"
                  % (r["generation_seconds"], r["cpu_seconds"], r["tmtrace_seconds"]))
        for e in r["failures"][:args.show]:
            print("  %s %s%s: %s" % (e["id"], e["family"],
                                     " [%s snapshot]" % ",".join(e["tags"]) if e["tags"] else "",
                                     e["why"]))
            for line in e.get("detail", []):
                print("      " + line)
            if e.get("dir"):
                print("    files: %s" % e["dir"])
                for c in e.get("repro", []):
                    print("    $ " + c)
        if len(r["failures"]) > args.show:
            print("  ... %d more failures (the files of up to 10 per family and size profile "
                  "are under %s)" % (len(r["failures"]) - args.show,
                                     os.path.relpath(os.path.join(FAILDIR, tag), ROOT)))
    if not args.keep_work:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print("engine: generated files and results kept under %s" % os.path.relpath(workdir, ROOT))
    print("engine: %.0f s" % (time.monotonic() - start))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
