"""Objects reused from CPython's free lists, for the re-stamp test.

usage: freelist.py plain|tracemalloc

Protocol as mix.py. tracemalloc re-stamps an object's memory with the
current traceback when the object gets its first reference
(_PyTraceMalloc_NewReference), so a dict, list, tuple or float taken from
a free list is reported where it was last created, not where its memory
was first allocated. first() fills the free lists, second() and the lines
after it empty them again: they must own every object. The future
iterators come from _asyncio's own free list, in an extension module: its
re-stamps are in that module's code, not in libpython's. resized() makes
objects that a realloc moved or grew and that get a first reference again
right after it, which tmtrace does not probe (the realloc recorded them
with the current traceback already)."""

import asyncio
import json
import sys
import tracemalloc  # in both modes: the import fills the free lists too

MODE = sys.argv[1]
keep = []


def first():
    return ([{} for _ in range(40)], [[] for _ in range(40)], [float(i) + 0.5 for i in range(60)],
            [(i, -i) for i in range(40)])


def second():
    return ([{} for _ in range(40)], [[] for _ in range(40)], [float(i) + 0.25 for i in range(60)],
            [(-i, i) for i in range(40)])


def resized():
    # a realloc, then the object's first reference again: resize_compact()
    # giving back str.format()'s over-allocation, _PyTuple_Resize() fitting
    # a tuple built from an iterator of unknown length
    strs = ["{}-{}".format("x" * (i % 7 + 20), i) for i in range(60)]
    tuples = [tuple(j for j in range(i % 5 + 12)) for i in range(40)]
    return strs, tuples


def first_iterators(futures):
    return [f.__await__() for f in futures]


def second_iterators(futures):
    return [f.__await__() for f in futures]


def main():
    # before tmtrace attaches and tracemalloc starts: both see the same
    loop = asyncio.new_event_loop()
    futures = [loop.create_future() for _ in range(100)]
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    if MODE == "tracemalloc":
        tracemalloc.start(1)
    made = first()
    del made
    keep.append(second())
    iterators = first_iterators(futures)
    del iterators
    keep.append(second_iterators(futures))
    keep.append(resized())
    # the same block straight back, with no allocation in between
    for _ in range(100):
        one = {}
        del one
        keep.append({})
    if MODE == "tracemalloc":
        snap = tracemalloc.take_snapshot()
        tracemalloc.stop()
        lines = [{"lineno": s.traceback[0].lineno, "size": s.size, "count": s.count}
                 for s in snap.statistics("lineno") if s.traceback[0].filename == __file__]
        print("ref " + json.dumps({"file": __file__, "lineno": lines}), flush=True)
    else:
        print("done", flush=True)
    sys.stdin.read()


main()
