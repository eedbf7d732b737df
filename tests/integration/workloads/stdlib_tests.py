"""CPython's own test suite as a workload: a few modules of it, in-process.

usage: stdlib_tests.py plain|tracemalloc [LOG] [MODULE...]

It prints 'ready' and waits for 'go' on stdin, then runs the given modules
of the `test` package (default: MODULES below) with unittest, as
`python -m test` would (no optional resources), writing everything the
tests print to LOG (default /dev/null): stdout is the protocol channel.
What the tests leave alive (imported modules, caches, the results) stays
alive. In tracemalloc mode it runs tracemalloc inside itself from 'go' on
(one frame) and prints 'ref <json>': the lineno statistics of every file,
from a snapshot taken right after the tests, and the test results. In plain
mode it prints 'done', for tmtrace attached from outside; nothing allocates
or frees after that until EOF on stdin, when it exits.

Both modes run gc.collect() before the snapshot or 'done', and import the
same modules before 'ready' (tracemalloc included), so that the two agree."""

import gc
import json
import os
import sys
import tracemalloc  # in both modes: its imports (pickle, fnmatch...) are the same
import unittest

import test.support

MODE = sys.argv[1]
LOG = sys.argv[2] if len(sys.argv) > 2 else os.devnull
# Fast (a few seconds in all, without tracing), in-process modules, which
# leave the same things alive run after run (but for ABC caches: see
# test_stdlib.py); none starts a thread, and only excluded tests below a
# subprocess.
MODULES = sys.argv[3:] or ["test_json", "test_re", "test_difflib", "test_textwrap",
                           "test_csv", "test_collections", "test_string",
                           "test_fractions", "test_dataclasses"]
# Test ids starting with these are left out:
EXCLUDE = (
    # runs `python -m json.tool` in subprocesses
    "test.test_json.test_tool.",
    # recursion tens of thousands of frames deep: tracemalloc walks the
    # whole stack at each allocation (total_nframe), minutes under it
    "test.test_json.test_recursion.TestPyRecursion.test_highly_nested_objects_",
    "test.test_json.test_recursion.TestCRecursion.test_highly_nested_objects_",
    # loops that only churn allocations, leaving nothing alive: seconds
    # under tracing each (SequenceMatcher on long inputs, one namedtuple of
    # thousands of fields, every BMP character through json, Counter
    # operations on all pairs of a set of Counters, a regex of 64 KiB of
    # code, worst-case inputs for ReDoS)
    "test.test_difflib.TestSFpatches.test_recursion_limit",
    "test.test_collections.TestNamedTuple.test_odd_sizes",
    "test.test_json.test_unicode.TestPyUnicode.test_unicode_decode",
    "test.test_json.test_unicode.TestCUnicode.test_unicode_decode",
    "test.test_collections.TestCounter.test_multiset_operations",
    "test.test_collections.TestCounter.test_inplace_operations",
    "test.test_re.ReTests.test_big_codesize",
    "test.test_re.PatternReprTests.test_long_pattern",
    "test.test_difflib.TestJunkAPIs.test_is_line_junk_REDOS",
)

keep = []


def without_excluded(suite):
    out = unittest.TestSuite()
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            out.addTest(without_excluded(test))
        elif not test.id().startswith(EXCLUDE):
            out.addTest(test)
    return out


def run_tests(log):
    # As regrtest by default: no optional resources ('cpu', 'network'...).
    # Outside regrtest use_resources is None, which enables them all.
    test.support.use_resources = []
    test.support.verbose = False
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for name in MODULES:
        suite.addTest(loader.loadTestsFromName("test." + name))
    suite = without_excluded(suite)
    runner = unittest.TextTestRunner(stream=log, verbosity=0)
    result = runner.run(suite)
    keep.append((suite, result))
    return result


def report_reference(result, proto):
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    stats = [{"filename": s.traceback[0].filename, "lineno": s.traceback[0].lineno,
              "size": s.size, "count": s.count} for s in snap.statistics("lineno")]
    print("ref " + json.dumps({"lineno": stats, "tests": result.testsRun,
                               "failures": len(result.failures), "errors": len(result.errors),
                               "skipped": len(result.skipped)}),
          file=proto, flush=True)


def main():
    # Made before 'ready', so neither tracemalloc nor tmtrace sees them: the
    # protocol's stdout (fd 1 itself is sent to the log during the tests, as
    # is fd 2), and what waits for EOF without allocating.
    proto = os.fdopen(os.dup(1), "w")
    saved_err = os.dup(2)
    raw_stdin = sys.stdin.buffer.raw
    buf = bytearray(64)
    log = open(LOG, "w")
    print("ready", file=proto, flush=True)
    # 'go' read raw, into the buffer: sys.stdin would keep the decoded line,
    # a block tmtrace (attached already) sees and tracemalloc does not.
    raw_stdin.readinto(buf)
    if not buf.startswith(b"go"):
        return
    if MODE == "tracemalloc":
        tracemalloc.start(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        result = run_tests(log)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        log.flush()
        os.dup2(saved_err, 2)
    gc.collect()
    if MODE == "tracemalloc":
        report_reference(result, proto)
    else:
        os.write(proto.fileno(), b"done\n")  # a constant: allocates nothing
    # Waits for EOF: readinto a buffer made beforehand allocates nothing.
    while raw_stdin.readinto(buf):
        pass


main()
