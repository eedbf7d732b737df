#!/usr/bin/env python3
"""Runs tmtrace's integration tests (test_*.py beside this file).

usage: run.py [-k SUBSTRING]...

Each test_* function is one test. A test that raises harness.Skip is
skipped with its reason outside CI; under CI=true a skip is a failure,
since a missing capability or tool there means the suite did not run."""

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
    passed = failed = skipped = 0
    start = time.monotonic()
    for name, fn in discover(args.k):
        t0 = time.monotonic()
        try:
            fn()
        except harness.Skip as e:
            if harness.CI:
                failed += 1
                print("FAIL %s (%.1fs): required under CI=true but unavailable: %s"
                      % (name, time.monotonic() - t0, e), flush=True)
            else:
                skipped += 1
                print("SKIP %s: %s" % (name, e), flush=True)
            continue
        except Exception as e:  # noqa: BLE001 - report every failure the same way
            failed += 1
            print("FAIL %s (%.1fs): %s" % (name, time.monotonic() - t0, e), flush=True)
            if not isinstance(e, harness.Failure):
                traceback.print_exc()
            continue
        passed += 1
        print("ok   %s (%.1fs)" % (name, time.monotonic() - t0), flush=True)
    print("integration: %.0f s" % (time.monotonic() - start))
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
