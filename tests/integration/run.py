#!/usr/bin/env python3
"""Runs tmtrace's integration tests (test_*.py beside this file).

usage: run.py [-k SUBSTRING]...

Each test_* function is one test; -k keeps those whose name
(module.function) contains one of the SUBSTRINGs. A test that raises
harness.Skip is skipped with its reason outside CI; under CI=true a skip
is a failure, since a missing capability or tool there means the suite
did not run.

A test tied to one CPython build of harness.BUILDS says so with an
attribute, `fn.build = "3.12"` (a name from BUILDS, e.g. "3.8" ... "3.13",
"debian-3.11"); test_fidelity.py generates such tests for every build.
At the end run.py prints a matrix: one row per build with tests among
those run, naming the Python that build actually is ("3.12.1 pyenv
shared", "3.11.2 debian static") or "missing" and why, and the counts of
passed, failed and skipped tests tied to it. Tests tied to no build are
not in the matrix."""

import argparse
import importlib
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402


def discover(patterns):
    tests = []
    for name in sorted(os.listdir(HERE)):
        if not (name.startswith("test_") and name.endswith(".py")):
            continue
        module = importlib.import_module(name[:-3])
        for attr in sorted(vars(module), key=lambda a: getattr(getattr(module, a), "__code__", None)
                           and getattr(module, a).__code__.co_firstlineno or 0):
            fn = getattr(module, attr)
            if attr.startswith("test_") and callable(fn):
                full = "%s.%s" % (name[:-3], attr)
                if not patterns or any(p in full for p in patterns):
                    tests.append((full, fn))
    return tests


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-k", action="append", default=[])
    args = parser.parse_args()
    if not os.access(harness.TMTRACE, os.X_OK):
        print("integration: %s is not built (run make)" % harness.TMTRACE)
        return 1
    tests = discover(args.k)
    known = {b.name for b in harness.BUILDS}
    for name, fn in tests:
        b = getattr(fn, "build", None)
        if b is not None and b not in known:
            print("integration: %s declares build %r, not one of harness.BUILDS %s"
                  % (name, b, sorted(known)))
            return 1
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    per_build = {}  # build name -> counts like the above
    start = time.monotonic()
    for name, fn in tests:
        outcome = run_one(name, fn)
        counts[outcome] += 1
        b = getattr(fn, "build", None)
        if b is not None:
            per_build.setdefault(b, {"passed": 0, "failed": 0, "skipped": 0})[outcome] += 1
    print("integration: %.0f s" % (time.monotonic() - start))
    print("%d passed, %d failed, %d skipped" % (counts["passed"], counts["failed"], counts["skipped"]))
    print_matrix(per_build)
    return 1 if counts["failed"] else 0


def run_one(name, fn):
    """Runs one test, prints its outcome: 'passed', 'failed' or 'skipped'."""
    t0 = time.monotonic()
    try:
        fn()
    except harness.Skip as e:
        if harness.CI:
            print("FAIL %s (%.1fs): required under CI=true but unavailable: %s"
                  % (name, time.monotonic() - t0, e), flush=True)
            return "failed"
        print("SKIP %s: %s" % (name, e), flush=True)
        return "skipped"
    except Exception as e:  # noqa: BLE001 - report every failure the same way
        print("FAIL %s (%.1fs): %s" % (name, time.monotonic() - t0, e), flush=True)
        if not isinstance(e, harness.Failure):
            traceback.print_exc()
        return "failed"
    print("ok   %s (%.1fs)" % (name, time.monotonic() - t0), flush=True)
    return "passed"


def print_matrix(per_build):
    """One row per build that had tests among those run, in BUILDS order."""
    rows = []
    for b in harness.BUILDS:
        if b.name not in per_build:
            continue
        try:
            python, why = harness.describe_build(b.name), ""
        except harness.Skip as e:
            python, why = "MISSING", "  (%s)" % e
        c = per_build[b.name]
        rows.append("%-12s %-22s %6d %6d %7d%s"
                    % (b.name, python, c["passed"], c["failed"], c["skipped"], why))
    if rows:
        print("%-12s %-22s %6s %6s %7s" % ("build", "python", "passed", "failed", "skipped"))
        print("\n".join(rows))


if __name__ == "__main__":
    sys.exit(main())
