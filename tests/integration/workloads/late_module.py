"""An extension module loaded after tmtrace attached, whose own free list
gives objects their first reference: _asyncio's future iterators.

usage: late_module.py plain|tracemalloc DIR|-

Protocol: 'ready'; on 'go' it imports asyncio (with DIR first on sys.path:
a copy of _asyncio there is then the one loaded, from a file tmtrace could
not know of when it attached) and prints 'loaded <file>'; on the next line
it fills _asyncio's free list from first_iterators(), empties it again
from second_iterators(), then prints 'ref <json>' (tracemalloc: its
lineno statistics of this file), or 'done' and pauses until killed
(plain: tmtrace reports then)."""

import gc
import json
import os
import signal
import sys
import tracemalloc

MODE, DIR = sys.argv[1], sys.argv[2]
keep = []


def first_iterators(futures):
    return [f.__await__() for f in futures]


def second_iterators(futures):
    return [f.__await__() for f in futures]


def main():
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    if DIR != "-":
        sys.path.insert(0, DIR)
    import asyncio
    import _asyncio
    print("loaded " + _asyncio.__file__, flush=True)
    sys.stdin.readline()
    loop = asyncio.new_event_loop()
    futures = [loop.create_future() for _ in range(100)]
    # the core free lists emptied: else an object made since tmtrace
    # attached and before tracemalloc starts may come back from them on the
    # lines compared, traced by tmtrace and not by tracemalloc
    gc.collect()
    if MODE == "tracemalloc":
        tracemalloc.start(1)
    iterators = first_iterators(futures)
    del iterators
    keep.append(second_iterators(futures))
    if MODE == "tracemalloc":
        snap = tracemalloc.take_snapshot()
        tracemalloc.stop()
        lines = [{"lineno": s.traceback[0].lineno, "size": s.size, "count": s.count}
                 for s in snap.statistics("lineno") if s.traceback[0].filename == __file__]
        print("ref " + json.dumps({"file": __file__, "lineno": lines}), flush=True)
        sys.stdin.read()
    else:
        # nothing more made or taken from a free list until tmtrace's
        # report (as tracemalloc's snapshot right after the work): no
        # print(), no read() (killed at the end)
        os.write(1, b"done\n")
        signal.pause()


main()
