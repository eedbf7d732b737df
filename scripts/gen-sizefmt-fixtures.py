#!/usr/bin/env python3
"""Write tests/unit/fixtures/sizefmt.txt from the real Lib/tracemalloc.py.

    /root/.pyenv/versions/3.11.7/bin/python3 scripts/gen-sizefmt-fixtures.py

Lines (fields separated by tabs; the first line is a comment naming the
interpreter and this script):

    f <float repr> <_format_size(x, False)> <_format_size(x, True)>
    i <int>        <_format_size(n, False)> <_format_size(n, True)>
    s <filename> <lineno> <size> <count> <str(Statistic)>
    d <filename> <lineno> <size> <size_diff> <count> <count_diff> <str(StatisticDiff)>

repr() of a float reads back to the same double (strtod is exact too).
"i" lines pass a Python int, as tracemalloc does for sizes; the C side
converts it to double, and must still agree. For s/d lines, filename and
lineno are those of the traceback's frame that str(Traceback) prints.
"""

import math
from fractions import Fraction
import os
import random
import sys
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "unit", "fixtures", "sizefmt.txt")

KIB = 1024
# Where _format_size changes unit or precision: abs(x) < 100 (scaled) and
# abs(x) < 10 KiB (scaled), for every unit; TiB is the catch-all.
THRESHOLDS = [100 * KIB ** k for k in range(1, 6)] + \
             [10 * KIB ** (k + 1) for k in range(0, 6)]


def neighbours(x, n=3):
    """x and the n doubles on each side of it."""
    out = [x]
    lo = hi = x
    for _ in range(n):
        lo = math.nextafter(lo, -math.inf)
        hi = math.nextafter(hi, math.inf)
        out += [lo, hi]
    return out


def float_values(rng):
    vals = [0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, 2.2e-308,
            1e-300, 0.05, 0.5, 1.5, 2.5, 1e15, 1e300, sys.float_info.max]
    for t in THRESHOLDS:
        vals += neighbours(float(t))
        vals += [t - 1, t + 1, t - 0.5, t + 0.5, t - 0.05, t + 0.05]
    for k in range(0, 6):
        scale = float(KIB ** k)
        # Ties and near-ties of "%.1f" and "%.0f" at each unit, e.g. 99.95
        # KiB, which rounds up to "100.0 KiB" in the 3-digit branch.
        for base in (99.95, 99.949999, 99.950001, 9.95, 9.05, 0.05, 0.15,
                     0.25, 10239.5, 10238.5, 1000.5, 99.5, 100.5):
            vals += neighbours(base * scale, 1)
        for _ in range(100):
            tenths = rng.randrange(0, 1000)
            vals += neighbours((tenths + 0.5) / 10 * scale, 1)
        for _ in range(60):
            vals.append((rng.randrange(0, 10240) + 0.5) * scale)
    # Averages: size / count as tracemalloc computes them.
    for _ in range(2500):
        size = int(10 ** rng.uniform(0, 16))
        count = rng.choice([1, 2, 3, 7, rng.randrange(1, 1000),
                            int(10 ** rng.uniform(0, 9)) + 1])
        vals.append(size / count)
    for _ in range(1000):
        vals.append(10 ** rng.uniform(-3, 20))
    vals += [-v for v in vals]
    return vals


def int_values(rng):
    vals = [0, 1, 99, 100, 101, 1023, 1024, 10239, 10240, 10241,
            2 ** 53 - 1, 2 ** 53, 2 ** 53 + 1, 2 ** 63 - 1]
    for t in THRESHOLDS:
        vals += [t + d for d in (-2, -1, 0, 1, 2) if t + d < 2 ** 63]
    for k in range(1, 5):
        # Round-half cases of "%.1f"/"%.0f" reachable with whole bytes.
        for _ in range(200):
            vals.append(rng.randrange(0, 10240 * KIB) * KIB ** (k - 1) // 2)
    for _ in range(3000):
        vals.append(int(10 ** rng.uniform(0, 18.9)))
    for _ in range(300):
        vals.append(rng.randrange(2 ** 53, 2 ** 63))
    vals += [-v for v in vals if v] + [-2 ** 63]
    return vals


FILENAMES = ["a.py", "json/decoder.py", "<unknown>",
             "<frozen importlib._bootstrap>", "dir with spaces/f.py",
             "caf\u00e9.py"]


def random_traceback(rng):
    frames = tuple((rng.choice(FILENAMES),
                    rng.choice([0, 1, 42, rng.randrange(1, 100000),
                                2 ** 32 - 1]))
                   for _ in range(rng.randrange(1, 6)))
    return tracemalloc.Traceback(frames)


def random_size(rng):
    return rng.choice([0, 1, 100, 10240, 2 ** 53 + 1, 2 ** 63 - 1,
                       int(10 ** rng.uniform(0, 12)),
                       int(10 ** rng.uniform(0, 18.9)),
                       rng.randrange(2 ** 53, 2 ** 63)])


def random_count(rng):
    return rng.choice([0, 1, 2, 3, rng.randrange(1, 100),
                       int(10 ** rng.uniform(0, 9)),
                       rng.randrange(2 ** 53, 2 ** 63)])


def hard_divisions(rng, n):
    """Huge (size, count) pairs where float(size) / float(count) rounds
    differently from Python's exactly rounded size / count."""
    out = []
    while len(out) < n:
        size = rng.randrange(2 ** 54, 2 ** 63)
        count = rng.randrange(3, 2 ** rng.randrange(2, 63))
        if float(size) / float(count) != size / count:
            out.append((size, count))
    return out


def printed_divisions(rng, n):
    """Like hard_divisions, but only pairs where the double rounding also
    changes the printed average: near a "%.0f" tie or a unit threshold."""
    fmt = tracemalloc._format_size
    targets = [Fraction(1, 2), Fraction(5, 2), Fraction(21, 2),
               Fraction(10240), Fraction(100 * KIB), Fraction(10240 * KIB)]
    out = []
    while len(out) < n:
        count = rng.randrange(2 ** 20, 2 ** 62)
        size = int(rng.choice(targets) * count) + rng.randrange(-3, 4)
        if not 0 < size < 2 ** 63:
            continue
        naive = float(size) / float(count)
        if fmt(naive, False) != fmt(size / count, False):
            out.append((size, count))
    return out


def frame_of(tb):
    frame = tb[0]   # the frame str(Traceback) prints
    assert str(tb) == "%s:%s" % (frame.filename, frame.lineno)
    return frame


def main():
    rng = random.Random(0x5172e)
    fmt = tracemalloc._format_size
    lines = ["# sizefmt fixture: CPython %s (%s), written by "
             "scripts/gen-sizefmt-fixtures.py" %
             (sys.version.split()[0], sys.executable)]
    for v in float_values(rng):
        lines.append("f\t%r\t%s\t%s" % (v, fmt(v, False), fmt(v, True)))
    for v in int_values(rng):
        lines.append("i\t%d\t%s\t%s" % (v, fmt(v, False), fmt(v, True)))

    pairs = [(random_size(rng), random_count(rng)) for _ in range(1500)]
    pairs += hard_divisions(rng, 200) + printed_divisions(rng, 100)
    # tracemalloc never builds these, but the classes take them.
    pairs += [(-size, count) for size, count in pairs[:60]]
    pairs += [(size, -count) for size, count in pairs[:60]]
    for size, count in pairs:
        tb = random_traceback(rng)
        f = frame_of(tb)
        st = tracemalloc.Statistic(tb, size, count)
        lines.append("s\t%s\t%d\t%d\t%d\t%s"
                     % (f.filename, f.lineno, size, count, st))
    for size, count in pairs:
        tb = random_traceback(rng)
        f = frame_of(tb)
        size_diff = rng.choice([0, size, -size, random_size(rng),
                                -random_size(rng)])
        count_diff = rng.choice([0, count, -count, random_count(rng),
                                 -random_count(rng)])
        st = tracemalloc.StatisticDiff(tb, size, size_diff, count,
                                       count_diff)
        lines.append("d\t%s\t%d\t%d\t%d\t%d\t%d\t%s"
                     % (f.filename, f.lineno, size, size_diff, count,
                        count_diff, st))

    for line in lines:
        assert line.count("\n") == 0
    with open(OUT, "w", encoding="utf-8", newline="\n") as fp:
        fp.write("\n".join(lines) + "\n")
    print("%s: %d lines, %d bytes" % (os.path.relpath(OUT, ROOT),
                                      len(lines) - 1, os.path.getsize(OUT)))


if __name__ == "__main__":
    main()
