"""A deterministic workload that exercises every way CPython code commonly
allocates, for the completeness tests.

usage: complete.py plain|tracemalloc [DIR|- [FEATURE,...]]

At startup it writes a small module, tmtrace_late_module.py, into DIR (a
fresh temporary directory when none is given), appends DIR to sys.path,
prints 'ready' and waits for 'go' on stdin. It then runs json, re, pickle,
list and dict growth, str.join, generators (a generator expression, a
generator function, a suspended generator), coroutines (tasks and an
async generator under asyncio.run), exceptions whose tracebacks stay
alive, class creation (type() and class statements), and imports done
only now (stdlib modules it did not import before, and the module in
DIR). Everything made is kept alive until the end, so it is live memory
when the snapshot is taken; each feature allocates on lines of its own.
Given FEATUREs (names of the functions in FEATURES), it runs only those,
to tell which feature a difference comes from.

In tracemalloc mode it runs tracemalloc inside itself from 'go' on and
prints 'ref <json>': its lineno statistics for every file (imports put
memory in importlib's frozen files and in the imported modules' own
files) and their totals. In plain mode it prints 'done', for tmtrace
attached from outside, and allocates nothing after it. Either way it then
waits for EOF on stdin and exits.

Both modes must allocate exactly the same after 'go': every module used is
imported before 'ready' in both modes (tracemalloc included), bytecode is
never written (both runs compile DIR's module from source, and a stdlib
module without a .pyc is compiled by both), and the tests run both with
the same PYTHONHASHSEED and the same DIR."""

import asyncio
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
import tracemalloc

MODE = sys.argv[1]
DIR = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] != "-" else None
ONLY = sys.argv[3].split(",") if len(sys.argv) > 3 else None
LATE_STDLIB = ("decimal", "fractions", "statistics", "email.message")
LATE_MODULE = "tmtrace_late_module"
LATE_SOURCE = '''"""Written by complete.py at startup; imported only after 'go'."""

TABLE = {i: "late-%d" % i for i in range(1500)}
ROWS = [[i, str(i), (i, -i)] for i in range(800)]


class Late:
    def __init__(self, n):
        self.n = n
        self.name = "late instance %d" % n


INSTANCES = [Late(i) for i in range(800)]
'''
keep = []


def json_round_trip():
    doc = {"items": [{"id": i, "name": "item-%d" % i, "tags": ["t%d" % (i % 7), "all"],
                      "price": i * 0.25, "ok": i % 3 == 0} for i in range(500)]}
    text = json.dumps(doc)
    back = json.loads(text)
    pretty = json.dumps(back, indent=1, sort_keys=True)
    again = json.loads(pretty)
    return [doc, text, back, pretty, again]


def regex():
    text = " ".join("word%d=%d;" % (i, i * 7) for i in range(2000))
    pattern = re.compile(r"([a-z]+)(\d+)=(\d+);")
    triples = pattern.findall(text)
    words = re.findall(r"[a-z]+\d+", text)
    # A function, not a template like r"\3=\1\2;": 3.10-3.12 look a template's
    # compiler up by a fresh name string, which CPython's type attribute cache
    # may keep alive or not, by address: a block more or less from run to run.
    swapped = pattern.sub(lambda m: "%s=%s%s;" % (m.group(3), m.group(1), m.group(2)), text)
    pieces = re.split(r";\s*", text)
    return [text, pattern, triples, words, swapped, pieces]


def pickle_round_trips():
    data = [{"n": i, "s": "value %d" % i, "t": (i, float(i), None)} for i in range(800)]
    blobs = [pickle.dumps(data, protocol=p) for p in (2, 5)]
    loaded = [pickle.loads(b) for b in blobs]
    return [data, blobs, loaded]


def list_growth():
    grown = []
    for i in range(8000):
        grown.append(i * 1000003)
    return grown


def dict_growth():
    grown = {}
    for i in range(5000):
        grown["key-%d" % i] = i
    return grown


def joined():
    parts = ["part-%05d" % i for i in range(5000)]
    text = "|".join(parts)
    return [parts, text]


def produced(n):
    for i in range(n):
        yield "produced-%d" % i


def suspended(n):
    held = [("held", i) for i in range(n)]
    yield len(held)
    yield held


def generators():
    from_expression = list("expr-%d" % i for i in range(3000))
    from_function = list(produced(3000))
    paused = suspended(2500)
    next(paused)
    return [from_expression, from_function, paused]


async def fetch(i):
    await asyncio.sleep(0)
    return ["fetched-%d-%d" % (i, j) for j in range(800)]


async def stream(n):
    for i in range(n):
        if i % 250 == 0:
            await asyncio.sleep(0)
        yield {"i": i, "s": "streamed-%d" % i}


async def gather_all(out):
    tasks = [asyncio.ensure_future(fetch(i)) for i in range(4)]
    results = await asyncio.gather(*tasks)
    streamed = [item async for item in stream(1000)]
    out.extend((results, streamed))


def coroutines():
    # The main task returns None: on 3.11+ asyncio.run formats repr(task)
    # (for a SIGINT handler's ValueError message), which reprs its result.
    out = []
    asyncio.run(gather_all(out))
    return out


class WorkloadError(Exception):
    pass


def fail(i):
    raise WorkloadError("failure %d" % i, [i] * 16)


def exceptions():
    caught = []
    for i in range(800):
        try:
            fail(i)
        except WorkloadError as e:
            caught.append(e)
    return caught


class Base:
    def method(self):
        return 1


def classes():
    made = []
    for i in range(150):
        made.append(type("Made%d" % i, (Base,), {"value": i, "__doc__": "made %d" % i}))
    for i in range(150):
        class Stated(Base):
            value = i

            def describe(self):
                return "stated %d" % self.value
        made.append(Stated)
    return made


def late_imports():
    import decimal
    import fractions
    import statistics
    import email.message
    import tmtrace_late_module
    return [decimal, fractions, statistics, email.message, tmtrace_late_module]


FEATURES = [json_round_trip, regex, pickle_round_trips, list_growth, dict_growth, joined,
            generators, coroutines, exceptions, classes, late_imports]


def workload():
    for feature in FEATURES:
        if ONLY is None or feature.__name__ in ONLY:
            keep.append(feature())


def report_reference():
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    stats = snap.statistics("lineno")
    lineno = [{"filename": s.traceback[0].filename, "lineno": s.traceback[0].lineno,
               "size": s.size, "count": s.count} for s in stats]
    total = {"size": sum(s.size for s in stats), "count": sum(s.count for s in stats)}
    print("ref " + json.dumps({"file": __file__, "lineno": lineno, "total": total}), flush=True)


def wait_for_eof():
    # Allocates one 1-byte bytes object at most: nothing that shows.
    while os.read(0, 1):
        pass


def main():
    global DIR
    early = [m for m in LATE_STDLIB + (LATE_MODULE,) if m in sys.modules]
    if early:
        sys.exit("complete.py: imported before 'go' already: %s" % ", ".join(early))
    sys.dont_write_bytecode = True
    made_dir = DIR is None
    if made_dir:
        DIR = tempfile.mkdtemp(prefix="tmtrace-complete-")
    with open(os.path.join(DIR, LATE_MODULE + ".py"), "w") as f:
        f.write(LATE_SOURCE)
    shutil.rmtree(os.path.join(DIR, "__pycache__"), ignore_errors=True)
    sys.path.append(DIR)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    if MODE == "tracemalloc":
        tracemalloc.start()
    workload()
    if MODE == "tracemalloc":
        report_reference()
    else:
        print("done", flush=True)
    wait_for_eof()
    if made_dir:
        shutil.rmtree(DIR, ignore_errors=True)


main()
