"""The CPython side of tests/engine/run.py; runs under each CPython 3.8-3.13.

Modes (the first argument):

  run --workdir DIR --result FILE [--seed N] [--snapshots N] [--queries N]
      [--workers N] [--faildir DIR] [--tmtrace CMD]...
      Generates random tracemalloc snapshots in this Python, dumps them with
      Snapshot.dump(), runs `tmtrace report` on them and compares what it
      prints with what tracemalloc computes here. Writes a JSON summary to
      FILE. --tmtrace (repeatable: a command and its first arguments) is how
      tmtrace is started; `report ...` follows it.

  tmtrace report FILE [options]
      The reference: `tmtrace report` done by this Python's tracemalloc, for
      pickle files only (its "tmtrace format" files are pickles too), same
      options, same output for --format tracemalloc (and text; json prints
      only {"stats": [...]}). Used to reproduce a failure by hand, and as the
      fake tmtrace (run.py --fake) that checks this harness itself.

  check-pickle OUT FILE [filter options]
      Loads OUT (a pickle that `tmtrace report FILE [filters] -o OUT` wrote)
      with tracemalloc.Snapshot.load and checks that it holds the traces of
      FILE after those filters. Exit status 0 when it does.

Written for Python 3.8: no syntax or library newer than that."""

import json
import os
import pickle
import random
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

MINOR = sys.version_info[1]
HAS_TOTAL_NFRAME = sys.version_info >= (3, 9)  # 3.8's raw traces are 3-tuples
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# ---------------------------------------------------------------------------
# The reference `tmtrace report`, on tracemalloc.

KEYS = ("filename", "lineno", "traceback")
VALUE_OPTS = {
    "--compare": "compare", "-k": "key", "--key-type": "key", "-t": "top", "--top": "top",
    "--include": "includes", "--exclude": "excludes", "--domain": "domains",
    "--exclude-domain": "xdomains", "--address": "address", "--format": "format",
    "-o": "output", "--output": "output", "--python-version": "python_version",
}
FLAG_OPTS = {"--cumulative": "cumulative", "--all-frames": "all_frames"}
LINENO_RE = re.compile(r"\A(.*):([0-9]+)\Z", re.S)


class UsageError(Exception):
    pass


def parse_report(argv):
    """The options of `tmtrace report`, as a dict; raises UsageError."""
    o = {"file": None, "compare": None, "key": "lineno", "top": 10, "includes": [],
         "excludes": [], "domains": [], "xdomains": [], "address": None, "format": "text",
         "output": None, "python_version": "3.11", "cumulative": False, "all_frames": False}
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        name, value = a, None
        if a.startswith("--") and "=" in a:
            name, value = a.split("=", 1)
        if name in VALUE_OPTS:
            if value is None:
                if i >= len(argv):
                    raise UsageError("%s needs a value" % a)
                value = argv[i]
                i += 1
            dest = VALUE_OPTS[name]
            if isinstance(o[dest], list):
                o[dest].append(value)
            else:
                o[dest] = value
        elif a in FLAG_OPTS:
            o[FLAG_OPTS[a]] = True
        elif a.startswith("-") and a != "-":
            raise UsageError("unknown option %s" % a)
        elif o["file"] is None:
            o["file"] = a
        else:
            raise UsageError("extra argument %r" % a)
    if o["file"] is None:
        raise UsageError("no snapshot file")
    if o["key"] not in KEYS:
        raise UsageError("invalid key type %r" % o["key"])
    if not re.match(r"\A[0-9]+\Z", str(o["top"])):
        raise UsageError("invalid -t %r" % o["top"])
    o["top"] = int(o["top"])
    for dest in ("domains", "xdomains"):  # decimal, as DomainFilter(inclusive, int(N))
        for d in o[dest]:
            if not re.match(r"\A[0-9]+\Z", d):
                raise UsageError("invalid domain %r" % d)
        o[dest] = [int(d) for d in o[dest]]
    return o


def split_lineno(arg):
    """PATTERN[:LINE]: the last ':' followed by digits only starts LINE."""
    m = LINENO_RE.match(arg)
    if m:
        return m.group(1), int(m.group(2))
    return arg, None


def build_filters(o):
    filters = []
    for inclusive, args in ((True, o["includes"]), (False, o["excludes"])):
        for arg in args:
            pattern, lineno = split_lineno(arg)
            filters.append(tracemalloc.Filter(inclusive, pattern, lineno, o["all_frames"]))
    filters += [tracemalloc.DomainFilter(True, d) for d in o["domains"]]
    filters += [tracemalloc.DomainFilter(False, d) for d in o["xdomains"]]
    return filters


def filter_traces(snap, filters):
    """snap.filter_traces(filters), evaluated once per distinct (domain,
    frames): whether tracemalloc keeps a trace depends on nothing else, and
    its filters are slow on large snapshots. The filters still run through
    the public API, on a snapshot of one trace per distinct pair."""
    if not filters:
        return snap.filter_traces(filters)
    reps = {}
    for t in snap.traces._traces:
        reps.setdefault((t[0], t[2]), t)
    small = tracemalloc.Snapshot(list(reps.values()), snap.traceback_limit)
    kept = {(t[0], t[2]) for t in small.filter_traces(filters).traces._traces}
    return tracemalloc.Snapshot([t for t in snap.traces._traces if (t[0], t[2]) in kept],
                                snap.traceback_limit)


def format_stats(stats, top):
    if top:
        stats = stats[:top]
    return "".join("%s\n" % st for st in stats)


def report_output(o, load):
    """What `print(stat)` prints for the options `o`; raises what
    tracemalloc raises. `load` maps a path to a Snapshot."""
    filters = build_filters(o)
    snap = filter_traces(load(o["file"]), filters)
    if o["compare"] is not None:
        old = filter_traces(load(o["compare"]), filters)
        stats = snap.compare_to(old, o["key"], o["cumulative"])
    else:
        stats = snap.statistics(o["key"], o["cumulative"])
    if o["format"] == "json":  # the fake's JSON: only what run.py checks
        fields = ("size", "count", "size_diff", "count_diff")
        doc = {"stats": [dict([("traceback", [{"filename": f.filename, "lineno": f.lineno}
                                               for f in st.traceback])] +
                              [(f, getattr(st, f)) for f in fields if hasattr(st, f)])
                         for st in (stats[:o["top"]] if o["top"] else stats)]}
        return json.dumps(doc) + "\n", snap
    return format_stats(stats, o["top"]), snap


def to_this_python(trace):
    """A raw trace of another version's pickle in this version's shape."""
    if HAS_TOTAL_NFRAME and len(trace) == 3:
        return trace + (None,)
    if not HAS_TOTAL_NFRAME and len(trace) == 4:
        return trace[:3]
    return trace


def load_any(path):
    snap = tracemalloc.Snapshot.load(path)
    snap.traces._traces = [to_this_python(t) for t in snap.traces._traces]
    return snap


def write_pickle(snap, path, minor):
    traces = []
    for t in snap.traces._traces:
        t = tuple(t[:3]) + ((t[3] if len(t) > 3 else None),)
        traces.append(t[:3] if minor == 8 else t)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(tracemalloc.Snapshot(traces, snap.traceback_limit), f, pickle.HIGHEST_PROTOCOL)
    os.rename(tmp, path)


def cmd_tmtrace(argv):
    """The fake tmtrace: `report` only."""
    if not argv or argv[0] != "report":
        sys.stderr.write("fake tmtrace: only `report` is implemented\n")
        return 2
    if "-h" in argv or "--help" in argv:
        print("usage: pyside.py tmtrace report FILE [--compare OLDFILE] [-k KEY] [--cumulative] "
              "[-t N] [--include PATTERN[:LINE]]... [--exclude PATTERN[:LINE]]... [--all-frames] "
              "[--domain N] [--exclude-domain N] [--format text|json|tracemalloc] [-o OUTFILE] "
              "[--python-version 3.X]\n(tracemalloc's output whatever the --format)")
        return 0
    try:
        o = parse_report(argv[1:])
    except (UsageError, ValueError) as e:
        sys.stderr.write("tmtrace report: %s\n" % e)
        return 2
    try:
        text, snap = report_output(o, load_any)
    except Exception as e:  # what tracemalloc raises: refused
        sys.stderr.write("tmtrace report: %s: %s\n" % (type(e).__name__, e))
        return 1
    if o["output"]:
        m = re.match(r"\A3\.([0-9]+)\Z", o["python_version"])
        if not m or not 8 <= int(m.group(1)) <= 13:
            sys.stderr.write("tmtrace report: invalid --python-version\n")
            return 2
        write_pickle(snap, o["output"], int(m.group(1)) if o["output"].endswith(".pickle") else MINOR)
    sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape"))
    return 0


def trace_key(t):
    return (t[0], t[1], t[2], -1 if len(t) < 4 or t[3] is None else t[3])


def check_loaded(path, expected, limit):
    """Problems (a list of strings) of the pickle `path` that should hold
    the Snapshot of raw traces `expected` with traceback_limit `limit`."""
    try:
        with open(path, "rb") as f:
            snap = pickle.load(f)
    except Exception as e:
        return ["Snapshot.load(%r) raised %s: %s" % (path, type(e).__name__, e)]
    if type(snap) is not tracemalloc.Snapshot:
        return ["loaded a %s, not a tracemalloc.Snapshot" % type(snap).__name__]
    errors = []
    if snap.traceback_limit != limit or type(snap.traceback_limit) is not int:
        errors.append("traceback_limit %r, expected %r" % (snap.traceback_limit, limit))
    traces = getattr(snap.traces, "_traces", None)
    if type(snap.traces) is not tracemalloc._Traces or type(traces) is not list:
        return errors + ["traces: %s holding %s, expected _Traces holding a list"
                         % (type(snap.traces).__name__, type(traces).__name__)]
    arity = 4 if HAS_TOTAL_NFRAME else 3
    for t in traces:
        ok = (type(t) is tuple and len(t) == arity and type(t[0]) is int and type(t[1]) is int
              and type(t[2]) is tuple
              and all(type(f) is tuple and len(f) == 2 and type(f[0]) is str and type(f[1]) is int
                      for f in t[2])
              and (arity == 3 or t[3] is None or type(t[3]) is int))
        if not ok:
            errors.append("malformed raw trace %r (expected a %d-tuple of int, int, frames%s)"
                          % (t, arity, ", int or None" if arity == 4 else ""))
            return errors
    got = sorted(traces, key=trace_key)
    want = sorted(expected, key=trace_key)
    if got != want:
        errors.append("raw traces differ: %d loaded, %d expected" % (len(got), len(want)))
        gs, ws = set(got), set(want)
        for t in want:
            if t not in gs:
                errors.append("  missing: %r" % (t,))
                break
        for t in got:
            if t not in ws:
                errors.append("  unexpected: %r" % (t,))
                break
        if gs == ws:
            errors.append("  same distinct traces, different multiplicities")
        return errors
    # the same raw traces give the same statistics: this checks that the
    # loaded snapshot works with tracemalloc's API as a dumped one does
    try:
        a = format_stats(snap.filter_traces([]).statistics("traceback"), 0)
        b = format_stats(tracemalloc.Snapshot(list(expected), limit).statistics("traceback"), 0)
        if a != b:
            errors.append("statistics('traceback') differ after load")
    except Exception as e:
        errors.append("statistics on the loaded snapshot raised %s: %s" % (type(e).__name__, e))
    return errors


def cmd_check_pickle(argv):
    if len(argv) < 2:
        sys.stderr.write("usage: pyside.py check-pickle OUT FILE [filter options]\n")
        return 2
    o = parse_report(argv[1:])
    snap = filter_traces(load_any(o["file"]), build_filters(o))
    errors = check_loaded(argv[0], snap.traces._traces, snap.traceback_limit)
    for e in errors:
        print(e)
    print("ok" if not errors else "FAILED")
    return 1 if errors else 0


# ---------------------------------------------------------------------------
# Random snapshots.

SPECIAL_FILES = ["<unknown>", "<string>", "<stdin>", "<frozen importlib._bootstrap>",
                 "<frozen importlib._bootstrap_external>", "<frozen runpy>"]
DIRS = ["", "", "", "/usr/lib/python3.11/", "/usr/lib/python3.11/asyncio/",
        "/usr/local/lib/python3.8/site-packages/numpy/core/", "lib/", "/home/user/proj/src/",
        "./", "../up/", "/tmp/dír/", "/opt/日本/", "/srv/[x]/", "/a-b/c-d/", "/w*/", "/q?/",
        "/x!/", "/n/a/b/c/d/e/", "/sp ace/", "/emoji🐍/", "/back\\slash/", "/br]ack/",
        "/br[ack/", "/^/", "/--/", "/ok.py/", "/Ωμέγα/",
        "/long/" + "sub-directory/" * 20, "/longer/" + "répertoire-日本/" * 12]
STEMS = ["main", "util", "app", "models", "views", "módulo", "日本", "naïve", "café", "ünïcödé",
         "Ωmega", "straße", "x", "a", "b", "ab", "abc", "a-b", "a_b", "we[ir]d", "[", "]", "[]",
         "[!]", "st*r", "*", "q?", "?", "bang!", "!x", "^caret", "back\\slash", "sp ace",
         "amp&&x", "tilde~~x", "pipe||x", "col:on", "col:12", "dot.ted", "UPPER", "Mixed", "❤️",
         "🐍", "🎉party", "e\u0301", "\u00e9", "paren(s)", "plus+", "dollar$", "brace{1}",
         "tab\there", "new\nline", "z-a", "[z-a]", "-dash", "%percent", "hash#", "a.b.c",
         "ΑΒΓ", "αβγ", "z", "Z", "0", "9lives", "__init__", "\u00a0nbsp", "ÿ", "Ā"]
EXTS = [".py"] * 12 + [".pyc", ".pyc", ".pyx", "", ".so", ".PY", ".py.pyc", ".pyc.py",
                       ".pyo", ".pycc", ".pyw", ".c", ".Pyc"]


def weighted(rng, pairs):
    total = sum(w for w, _ in pairs)
    r = rng.random() * total
    for w, v in pairs:
        r -= w
        if r < 0:
            return v
    return pairs[-1][1]


def copy_str(s):
    """An equal str that is another object (so pickle does not memoize it)."""
    return (s + ".")[:-1]


def random_filename(rng):
    if rng.random() < 0.05:
        return rng.choice(SPECIAL_FILES)
    stem = rng.choice(STEMS)
    r = rng.random()
    if r < 0.25:
        stem += rng.choice("_-. ") + rng.choice(STEMS)
    elif r < 0.35:
        stem += str(rng.randrange(100))
    return rng.choice(DIRS) + stem + rng.choice(EXTS)


def random_lineno(rng):
    r = rng.random() * 93
    if r < 8:
        return 0
    if r < 58:
        return rng.randint(1, 120)
    if r < 83:
        return rng.randint(120, 10000)
    if r < 88:
        return rng.randint(10000, 2 ** 31 - 1)
    if r < 90:
        return rng.choice([2 ** 31, 2 ** 32 - 2, 2 ** 32 - 1])
    return 1


SIZE_EDGES = [1, 99, 100, 101, 1023, 1024, 10239, 10240, 102400, 10485759]


def random_size(rng, profile):
    r = rng.random()
    if profile == "ties":  # few sizes: many statistics tie on size and count
        return rng.choice([0, 8, 8, 16, 32, 32, 64])
    if profile == "huge" and r < 0.25:
        return rng.choice([2 ** 64 - 1, 2 ** 64 - 2, 2 ** 63, 2 ** 63 - 1, 2 ** 63 + 1,
                           rng.randint(2 ** 62, 2 ** 64 - 1)])
    if profile == "big" and r < 0.25:
        return rng.choice([2 ** 53 + 1, 2 ** 53 - 1, 2 ** 53 + 3, 10 ** 15 + 7,
                           rng.randint(2 ** 50, 2 ** 56), 123456789012345])
    r = rng.random() * 100
    if r < 5:
        return 0
    if r < 45:
        return rng.randint(1, 64)
    if r < 80:
        return rng.randint(64, 4096)
    if r < 92:
        return rng.randint(4096, 2 ** 20)
    if r < 97:
        return rng.randint(2 ** 20, 2 ** 32)
    if r < 99:
        return rng.randint(2 ** 32, 2 ** 41)
    return rng.choice(SIZE_EDGES)


def random_domains(rng):
    kind = weighted(rng, [(55, "zero"), (30, "small"), (15, "wide")])
    if kind == "zero":
        return [0]
    if kind == "small":
        return [0, 0, 0, 0, 1, 2, rng.randint(3, 100)]
    return [0, 0, 0, 1, 2 ** 32 - 1, 2 ** 32 - 2, 2 ** 31, 2 ** 31 - 1, 65536]


class Snap:
    """A generated snapshot: the tracemalloc object and what queries need."""

    def __init__(self, name, snapshot, profile, filenames, linenos, domains):
        self.name = name
        self.snapshot = snapshot
        self.profile = profile
        self.filenames = filenames  # list, the files its frames use
        self.linenos = linenos      # filename -> linenos used
        self.domains = domains
        self.path = None
        self.size = len(snapshot.traces._traces)


def make_tracebacks(rng, limit, frames):
    depth_max = min(limit, 8)
    tbs = []
    for _ in range(rng.randint(1, 80)):
        depth = rng.randint(1, depth_max)
        if rng.random() < 0.03:
            tb = [("<unknown>", 0)]
        else:
            if tbs and rng.random() < 0.45:  # shares its oldest frames
                base = rng.choice(tbs)[0]
                k = rng.randint(1, len(base))
                tb = [rng.choice(frames) for _ in range(max(0, depth - k))] + list(base[-k:])
            else:
                tb = [rng.choice(frames) for _ in range(depth)]
            if rng.random() < 0.25 and len(tb) < 8:  # recursion
                i = rng.randrange(len(tb))
                run = tb[i:i + rng.randint(1, 2)]
                tb[i:i] = run * rng.randint(1, 3)
            if rng.random() < 0.05:
                tb.insert(rng.randint(0, len(tb)), ("<unknown>", 0))
            tb = tb[:max(depth_max, 1)]
        mode = weighted(rng, [(60, "exact"), (15, "more"), (15, "none"), (10, "any")])
        if mode == "exact":
            total = len(tb)
        elif mode == "more":
            total = rng.randint(len(tb), 65535)
        elif mode == "none":
            total = None
        else:
            total = rng.randint(0, 65535)
        tbs.append((tuple(tb), total))
    return tbs


PROFILES = [(72, "normal"), (12, "ties"), (8, "big"), (8, "huge")]


def make_snapshot(rng, name, ntraces=None, profiles=None):
    profile = weighted(rng, [p for p in PROFILES if profiles is None or p[1] in profiles])
    limit = weighted(rng, [(15, 1), (10, 2), (10, 3), (8, 4), (6, 5), (6, 6), (5, 7),
                           (15, 8), (3, 10), (3, 25), (2, 128)])
    files = []
    for _ in range(rng.randint(1, 30)):
        f = random_filename(rng)
        if f not in files:
            files.append(f)
    frames, linenos = [], {}
    for f in files:
        for _ in range(1 if f == "<unknown>" else rng.randint(1, 5)):
            ln = 0 if f == "<unknown>" else random_lineno(rng)
            frames.append((f, ln))
            linenos.setdefault(f, []).append(ln)
    tbs = make_tracebacks(rng, limit, frames)
    domains = random_domains(rng)
    if ntraces is None:
        ntraces = weighted(rng, [(4, 0), (30, rng.randint(1, 20)), (40, rng.randint(20, 300)),
                                 (24, rng.randint(300, 2000)), (1, rng.randint(4000, 12000))])
    traces = fit_sizes([random_trace(rng, tbs, domains, profile) for _ in range(ntraces)], profile)
    snap = tracemalloc.Snapshot(traces, limit)
    return Snap(name, snap, profile, files, linenos, domains)


def random_trace(rng, tbs, domains, profile):
    frames, total = tbs[int(len(tbs) * rng.random() ** 2)]
    if rng.random() < 0.2:  # an equal traceback, not the same objects
        frames = tuple(tuple([copy_str(f), ln]) for f, ln in frames)
    size = random_size(rng, profile)
    domain = rng.choice(domains)
    if HAS_TOTAL_NFRAME:
        return (domain, size, frames, total)
    return (domain, size, frames)


def _real_workload(depth, keep):
    if depth:
        return _real_workload(depth - 1, keep)
    keep.append([str(i) * (i % 7) for i in range(300)])
    keep.append({i: (i, "x" * (i % 50)) for i in range(200)})
    keep.append(bytearray(100000))


def make_real_snapshots(rng, name):
    """Two snapshots tracemalloc really took (an old/new pair), of imports
    and allocations at several depths: real pickles, real tracebacks."""
    import importlib
    limit = rng.choice([1, 3, 8, 25])
    keep = []
    tracemalloc.start(limit)
    try:
        for mod in ("difflib", "email.parser", "xml.dom.minidom"):
            importlib.import_module(mod)
        _real_workload(rng.randint(0, 12), keep)
        old = tracemalloc.take_snapshot()
        for mod in ("textwrap", "html.parser", "fractions"):
            importlib.import_module(mod)
        _real_workload(rng.randint(0, 12), keep)
        del keep[0]
        new = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    snaps = []
    for suffix, snap in (("", old), ("-new", new)):
        linenos = {}
        for t in snap.traces._traces:
            for f, ln in t[2]:
                linenos.setdefault(f, set()).add(ln)
        files = sorted(linenos)
        domains = sorted({t[0] for t in snap.traces._traces}) or [0]
        snaps.append(Snap(name + suffix, snap, "real", files,
                          {f: sorted(v) for f, v in linenos.items()}, domains))
    return snaps


def fit_sizes(traces, profile):
    """The "big" profile has sizes past 2**53 but sums, even cumulative
    ones (8 frames), below 2**63: what int64 sums hold."""
    if profile != "big":
        return traces
    total = sum(t[1] for t in traces)
    out = []
    for t in traces:
        if total * 8 >= 2 ** 63 and t[1] > 2 ** 32:
            total -= t[1] - 4096
            t = (t[0], 4096) + tuple(t[2:])
        out.append(t)
    return out


def derive_new(rng, old, name):
    """A "new" snapshot sharing most traces and tracebacks with `old`."""
    traces = list(old.snapshot.traces._traces)
    tbs = list({(t[2], t[3] if HAS_TOTAL_NFRAME else None) for t in traces}) or \
        [((("<unknown>", 0),), 1)]
    tbs.sort(key=lambda x: (x[0], -1 if x[1] is None else x[1]))
    keep = rng.random()
    out = []
    for t in traces:
        r = rng.random()
        if r < 0.2 * keep:
            continue  # freed
        if r < 0.3:
            t = (t[0], random_size(rng, old.profile)) + tuple(t[2:])
        out.append(t)
    frames = [(f, ln) for f in old.filenames for ln in old.linenos[f]]
    newtbs = make_tracebacks(rng, old.snapshot.traceback_limit, frames)
    for _ in range(rng.randint(0, max(1, len(traces) // 3))):
        out.append(random_trace(rng, tbs if rng.random() < 0.6 else newtbs, old.domains,
                                old.profile))
    rng.shuffle(out)
    snap = tracemalloc.Snapshot(fit_sizes(out, old.profile), old.snapshot.traceback_limit)
    return Snap(name, snap, old.profile, old.filenames, old.linenos, old.domains)


FN_ALPHABET = "ab-!]^[*?\\é日/.:"


def fn_string(rng, alphabet, nmax):
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, nmax)))


def make_fnmatch_snapshot(rng, name):
    """One trace per file name, one frame each, distinct sizes: `-k filename
    -t 0` then lists exactly the names a filter keeps."""
    names = set()
    while len(names) < 600:
        r = rng.random()
        if r < 0.6:
            n = fn_string(rng, FN_ALPHABET, 6)
        elif r < 0.8:
            n = fn_string(rng, FN_ALPHABET, 3) + rng.choice([".py", ".pyc", ".pyc.py", ".PY"])
        else:
            n = random_filename(rng)
        names.add(n)
    names = sorted(names)
    traces = []
    for i, n in enumerate(names):
        ln = rng.choice([0, 1, 2])
        t = (0, 1000 + i, ((n, ln),))
        traces.append(t + (1,) if HAS_TOTAL_NFRAME else t)
    snap = tracemalloc.Snapshot(traces, 1)
    return Snap(name, snap, "normal", names, {n: [0, 1, 2] for n in names}, [0])


def fnmatch_pattern(rng, snap):
    r = rng.random()
    if r < 0.55:
        p = fn_string(rng, FN_ALPHABET.replace("/", "").replace(":", ""), 7) or "["
    elif r < 0.7:
        p = fn_string(rng, FN_ALPHABET, 3) + rng.choice(["*.py", "*.pyc", ".pyc", "?.py", "*"])
    else:
        p = random_pattern(rng, snap)
        return p
    if rng.random() < 0.15:
        p += ":%d" % rng.choice([0, 1, 2])
    return p


# ---------------------------------------------------------------------------
# Random queries.

FIXED_PATTERNS = ["*", "?", "*.py", "*.pyc", "*/*", "[]]*", "*[!]]", "[!]]*", "*[]]*", "*[",
                  "[", "[!", "[]", "[!]", "*[z-a]*", "[z-a]", "[a-z]*", "*[]-]*", "*[!a-z]*",
                  "<unknown>", "<*>", "*日本*", "*\\*", "[[]*", "*[*]*", "*[?]*", "[-]*",
                  "*[a-]*", "*[-a]*", "[--0]*", "*[^a]*", "[!-]*", "**", "***.py", "*?*",
                  "?*?", "*[!/]", "/*", "*/*/*", "*.py?", "*.PY", "*[.]py", "*[!.]py",
                  "*[a-c-e]*", "*[z-a-c]*", "*[α-ω]*", "*[ -~]", "*[!\x01-\x7f]*", "*[]a-]*",
                  "*[!]a]*", "*[[]*", "*[\\]*", "*\\", "*[&&]*", "*[~~]*", "*[||]*", "*.pyc.py",
                  "*.py.pyc", "*.pyo", "*.pyc*", "<frozen *>", "*[!!]*", "*[!^]*", "*[^]*",
                  "*[e\u0301]*", "*\u00e9*", "*🐍*", "*❤*", "*❤️*", "?.py", "??.py",
                  "*/[!_]*.py", "[!/]*", "*(*", "*+*", "*$*", "*{*", "*.*", "*.", ".*"]


def mutate_char(rng, name):
    """`name` with one of its characters replaced by a pattern for it."""
    if not name:
        return "*"
    i = rng.randrange(len(name))
    c = name[i]
    o = ord(c)
    kind = rng.randrange(6)
    if kind == 0:
        rep = "?"
    elif kind == 1:
        rep = "[" + c + "]"
    elif kind == 2:
        other = chr(max(32, o + rng.choice([-1, 1])))
        rep = "[!" + other + "]" if rng.random() < 0.7 else "[!" + c + "]"
    elif kind == 3:
        lo, hi = max(32, o - rng.randint(0, 3)), o + rng.randint(0, 3)
        if 0xD800 <= lo <= 0xDFFF or 0xD800 <= hi <= 0xDFFF:
            lo, hi = o, o
        a, b = chr(lo), chr(hi)
        rep = "[" + (b + "-" + a if rng.random() < 0.2 else a + "-" + b) + "]"
    elif kind == 4:
        rep = "*"
    else:
        rep = "[" + c + rng.choice("abz-!]^") + "]"
    return name[:i] + rep + name[i + 1:]


def random_pattern(rng, snap):
    names = snap.filenames
    name = rng.choice(names)
    kind = rng.randrange(14)
    if kind == 0:
        p = name
    elif kind == 1:
        p = name[:-3] + ".pyc" if name.endswith(".py") else name + rng.choice(["c", ".pyc", ""])
    elif kind == 2:
        p = name[:rng.randint(0, len(name))] + "*"
    elif kind == 3:
        p = "*" + name[rng.randint(0, len(name)):]
    elif kind == 4:
        i = rng.randint(0, len(name))
        p = "*" + name[i:rng.randint(i, len(name))] + "*"
    elif kind in (5, 6, 7):
        p = mutate_char(rng, name)
        if rng.random() < 0.3:
            p = mutate_char(rng, p)
    elif kind == 8:
        p = (name.rsplit("/", 1)[0] + "/*") if "/" in name else "*" + name[-2:]
    elif kind == 9:
        p = "*/" + name.rsplit("/", 1)[-1]
    elif kind in (10, 11):
        p = rng.choice(FIXED_PATTERNS)
    elif kind == 12:
        p = random_filename(rng)
    else:  # special characters of the name escaped as [c]
        p = "".join("[%s]" % c if c in "[*?" else c for c in name)
    if rng.random() < 0.04:
        p = p + rng.choice(["[", "[!", "*[", "]", "-"])
    if not p:
        p = "*"
    r = rng.random()
    # LINE is decimal: now and then written with leading zeros
    fmt = "%s:%d" if rng.random() < 0.97 else "%s:0%d"
    if r < 0.25:
        lns = snap.linenos.get(name) or [0]
        return fmt % (p, rng.choice(lns))
    if r < 0.3:
        return fmt % (p, rng.choice([0, 1, random_lineno(rng)]))
    return p


def random_filter_opts(rng, snap):
    """Options for filters, as a list of option groups (lists of argv)."""
    groups = []
    nmax = weighted(rng, [(35, 0), (30, 1), (20, 2), (10, 3), (5, 5)])
    for _ in range(nmax):
        groups.append([rng.choice(["--include", "--exclude"]), random_pattern(rng, snap)])
    if groups and rng.random() < 0.35:
        groups.append(["--all-frames"])
    elif not groups and rng.random() < 0.03:
        groups.append(["--all-frames"])
    for opt in ("--domain", "--exclude-domain"):
        if rng.random() < 0.12:
            for _ in range(rng.choice([1, 1, 2])):
                d = rng.choice(snap.domains + [0, 1, 7, 2 ** 32 - 1])
                groups.append([opt, ("%d" if rng.random() < 0.95 else "0%d") % d])
    return groups


def random_stat_opts(rng):
    """-k, --cumulative (never with -k traceback) and -t, as option groups."""
    groups = []
    key = weighted(rng, [(25, None), (25, "lineno"), (25, "filename"), (25, "traceback")])
    if key is not None:
        groups.append(["-k", key])
    cumulative = key != "traceback" and rng.random() < 0.35
    if cumulative:
        groups.append(["--cumulative"])
    top = weighted(rng, [(25, None), (20, 0), (8, 1), (5, 2), (8, 3), (5, 10),
                         (15, rng.randint(4, 60)), (5, 100000)])
    if top is not None:
        groups.append(["-t", ("%d" if rng.random() < 0.97 else "0%d") % top])
    return groups


def flatten(groups):
    out = []
    for g in groups:
        out += g
    return out


# ---------------------------------------------------------------------------
# The run.


class Runner:
    def __init__(self, args):
        self.args = args
        self.workdir = args.workdir
        self.tmtrace = args.tmtrace
        self.tmtrace_shown = ([args.tmtrace_shown_as] if args.tmtrace_shown_as
                              else [self.rel(a) for a in args.tmtrace])
        self.lock = threading.Lock()
        self.counts = {}
        self.failures = []
        self.snaps = {}   # path -> Snapshot (for the reference)
        self.skipped = []
        self.tmtrace_runs = 0
        self.tmtrace_seconds = 0.0
        self.kept = {}  # failures whose files are kept, by family and size profile

    def count(self, family, ok):
        with self.lock:
            c = self.counts.setdefault(family, [0, 0])
            c[0 if ok else 1] += 1

    def load(self, path):
        return self.snaps[path]

    def rel(self, path):
        return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path

    # -- checks run in worker threads

    def run_tmtrace(self, argv):
        t0 = time.monotonic()
        try:
            # close_fds=False lets 3.8 and 3.9 posix_spawn() instead of fork()ing
            # this large process (Python's own fds are not inheritable anyway)
            p = subprocess.run(self.tmtrace + ["report"] + argv, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=self.args.timeout,
                               close_fds=False)
            return p.returncode, p.stdout, p.stderr, time.monotonic() - t0
        except subprocess.TimeoutExpired as e:
            return "timeout", e.stdout or b"", e.stderr or b"", time.monotonic() - t0

    def run_case(self, case):
        try:
            problem = self._run_case(case)
        except Exception as e:  # a harness bug must not pass silently
            import traceback
            problem = {"why": "harness error: %s: %s\n%s" % (type(e).__name__, e,
                                                            traceback.format_exc())}
        self.count(case["family"], problem is None)
        if problem is not None:
            self.record_failure(case, problem)

    def _run_case(self, case):
        for n, step in enumerate(case["steps"]):
            rc, out, err, took = self.run_tmtrace(step["argv"])
            with self.lock:
                self.tmtrace_runs += 1
                self.tmtrace_seconds += took
            problem = None
            kind = step["check"]
            if kind == "refuse":
                if rc == 0 or rc == "timeout" or rc < 0:
                    problem = "expected tmtrace to refuse (tracemalloc raises: %s); exit status %s" % (
                        step["raises"], rc)
            elif rc != 0:
                problem = "exit status %s" % rc
            elif kind == "json":
                problem = check_json(out, step["numbers"])
            elif kind == "output":
                if out != step["expected"].encode("utf-8"):
                    problem = "output differs from tracemalloc's"
            elif kind == "write":
                if not os.path.isfile(step["output"]):
                    problem = "no file written at %s" % step["output"]
                else:
                    errs = []
                    if step.get("pickle"):
                        errs = check_loaded(step["output"], step["traces"], step["limit"])
                    if errs:
                        problem = "the written pickle, loaded by tracemalloc:\n    " + \
                            "\n    ".join(errs)
                    elif out and out != step["expected"].encode("utf-8"):
                        problem = "output (printed besides -o) differs from tracemalloc's"
            if problem:
                return {"why": problem, "step": n, "rc": rc, "stdout": out, "stderr": err}
        return None

    def record_failure(self, case, problem):
        sig = (case["family"], tuple(case.get("tags", [])))
        with self.lock:
            kept = self.kept.get(sig, 0)
            keep = kept < self.args.keep_failures
            if keep:
                self.kept[sig] = kept + 1
        step = case["steps"][problem.get("step", 0)]
        entry = {"id": case["id"], "family": case["family"], "why": problem["why"],
                 "tags": case.get("tags", []), "argv": step["argv"]}
        if keep:
            d = os.path.join(self.args.faildir, case["id"])
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            mapping = {}
            for f in case["inputs"]:
                dst = os.path.join(d, os.path.basename(f))
                shutil.copyfile(f, dst)
                mapping[f] = self.rel(dst)
            for s in case["steps"]:
                for f in s.get("outputs", []):
                    mapping[f] = self.rel(os.path.join(d, os.path.basename(f)))
                    if os.path.exists(f):
                        shutil.copyfile(f, os.path.join(d, "got-" + os.path.basename(f)))
            script = ["#!/bin/sh", "# %s (%s) under Python %s: %s" % (
                case["id"], case["family"], sys.version.split()[0], problem["why"].split("\n")[0]),
                "cd %s || exit 1" % shlex.quote(ROOT)]
            cmds = []
            for n, s in enumerate(case["steps"]):
                argv = [mapping.get(a, a) for a in s["argv"]]
                cmd = " ".join(shlex.quote(a) for a in self.tmtrace_shown + ["report"] + argv)
                script.append(cmd)
                if n == problem.get("step", 0):
                    ref = " ".join(shlex.quote(a) for a in
                                   [sys.executable, "tests/engine/pyside.py", "tmtrace", "report"] + argv)
                    if s["check"] == "output" and argv[0].endswith(".pickle"):
                        script.append("# expected (tracemalloc): " + ref)
                        cmds.append("diff <(%s) <(%s)" % (cmd, ref))
                    elif s["check"] == "output":  # a file tmtrace wrote: expected.txt
                        exp = shlex.quote(self.rel(os.path.join(d, "expected.txt")))
                        script.append("# expected (tracemalloc): " + exp)
                        cmds.append("%s | diff - %s" % (cmd, exp))
                    elif s.get("pickle"):
                        src = [mapping.get(a, a) for a in s["source_argv"]]
                        chk = " ".join(shlex.quote(a) for a in
                                       [sys.executable, "tests/engine/pyside.py", "check-pickle",
                                        mapping[s["output"]]] + src)
                        script.append(chk)
                        cmds.append(cmd + " && " + chk)
                    else:
                        cmds.append(cmd + "; echo exit status $?")
                    break
                cmds.append(cmd)
            with open(os.path.join(d, "repro.sh"), "w", encoding="utf-8") as f:
                f.write("\n".join(script) + "\n")
            if step.get("expected") is not None:
                with open(os.path.join(d, "expected.txt"), "wb") as f:
                    f.write(step["expected"].encode("utf-8"))
            with open(os.path.join(d, "actual.txt"), "wb") as f:
                f.write(problem.get("stdout") or b"")
            with open(os.path.join(d, "stderr.txt"), "wb") as f:
                f.write(problem.get("stderr") or b"")
            entry["dir"] = self.rel(d)
            entry["repro"] = cmds
            entry["detail"] = describe(step, problem)
        with self.lock:
            self.failures.append(entry)

    # -- generation, in the main thread

    def dump(self, snap):
        snap.path = os.path.join(self.workdir, snap.name + ".pickle")
        snap.snapshot.dump(snap.path)
        # the reference computes on what the file holds, as tmtrace reads it
        self.snaps[snap.path] = snap.snapshot

    def expect(self, argv):
        """('output', text) or ('raises', what), for the reference on argv."""
        o = parse_report(argv)
        try:
            text, _ = report_output(o, self.load)
        except re.error as e:  # fnmatch of 3.8/3.9 on an empty range: not comparable
            return "skip", "re.error: %s" % e
        except Exception as e:
            return "raises", "%s: %s" % (type(e).__name__, e)
        return "output", text

    @staticmethod
    def pick(rng, items):
        """A random snapshot (or pair), the large ones a quarter as often:
        tracemalloc's Python code takes its time on them."""
        while True:
            item = rng.choice(items)
            size = item[1].size if isinstance(item, tuple) else item.size
            if size <= 1000 or rng.random() < 0.25:
                return item

    def make_case(self, rng, qid, groups, pairs):
        family = weighted(rng, [(40, "stats"), (22 if pairs else 0, "compare"), (2, "refuse"),
                                (10, "pickle-out"), (10, "tmt-roundtrip"), (5, "json"),
                                (12, "fnmatch")])
        if family == "fnmatch":
            snap = self.fn_snap
            opts = [[rng.choice(["--include", "--include", "--exclude"]),
                     fnmatch_pattern(rng, snap)] for _ in range(rng.choice([1, 1, 1, 2]))]
            opts += [["-k", "filename"], ["-t", "0"], ["--format", "tracemalloc"]]
            if rng.random() < 0.2:
                opts.append(["--all-frames"])
            rng.shuffle(opts)
            argv = [snap.path] + flatten(opts)
            kind, value = self.expect(argv)
            if kind == "skip":
                self.skipped.append(value)
                return None
            return {"id": qid, "family": family, "inputs": [snap.path], "tags": [],
                    "steps": [{"argv": argv, "check": "output", "expected": value}]}
        if family == "compare" or (family in ("refuse", "json") and pairs and rng.random() < 0.5):
            old, new = self.pick(rng, pairs)
            r = rng.random()
            if r < 0.05:  # against an unrelated snapshot, or itself
                old = rng.choice([rng.choice(groups), new])
            elif r < 0.08:  # from or to nothing
                if rng.random() < 0.5:
                    old = groups[0]
                else:
                    new = groups[0]
        else:
            old, new = None, self.pick(rng, groups)
        if rng.random() < 0.02:  # the snapshots tracemalloc took (large ones)
            old, new = (self.real[0] if old is not None else None), self.real[1]
        inputs = [new.path] + ([old.path] if old is not None else [])
        tags = sorted({new.profile, old.profile if old else new.profile} - {"normal", "ties"})
        filt = random_filter_opts(rng, new)
        case = {"id": qid, "family": family, "inputs": inputs, "tags": tags, "steps": []}
        outdir = self.workdir
        fmt = [["--format", "tracemalloc"]]

        if family == "json":
            opts = random_stat_opts(rng) + filt + [["--format", "json"]] + \
                ([["--compare", old.path]] if old is not None else [])
            rng.shuffle(opts)
            argv = [new.path] + flatten(opts)
            o = parse_report(argv)
            try:
                filters = build_filters(o)
                snap = filter_traces(new.snapshot, filters)
                if old is not None:
                    stats = snap.compare_to(filter_traces(old.snapshot, filters), o["key"],
                                            o["cumulative"])
                    numbers = [[s.size, s.count, s.size_diff, s.count_diff] for s in stats]
                else:
                    stats = snap.statistics(o["key"], o["cumulative"])
                    numbers = [[s.size, s.count] for s in stats]
            except re.error as e:
                self.skipped.append("re.error: %s" % e)
                return None
            if o["top"]:
                numbers = numbers[:o["top"]]
            i = argv.index("--format")
            text_argv = argv[:i + 1] + ["text"] + argv[i + 2:]
            case["steps"].append({"argv": argv, "check": "json", "numbers": numbers})
            case["steps"].append({"argv": text_argv, "check": "exit0"})
            return case

        if family in ("stats", "compare", "refuse"):
            if family == "refuse":
                groups_ = [["-k", "traceback"], ["--cumulative"]] + \
                    ([["-t", str(rng.randint(0, 20))]] if rng.random() < 0.5 else [])
            else:
                groups_ = random_stat_opts(rng)
            opts = groups_ + filt + fmt + ([["--compare", old.path]] if old is not None else [])
            rng.shuffle(opts)
            argv = [new.path] + flatten(opts)
            kind, value = self.expect(argv)
            if kind == "skip":
                self.skipped.append(value)
                return None
            if kind == "raises":
                case["family"] = "refuse"
                case["steps"].append({"argv": argv, "check": "refuse", "raises": value})
            else:
                case["steps"].append({"argv": argv, "check": "output", "expected": value})
            return case

        o = parse_report([new.path] + flatten(filt))
        try:
            filtered = filter_traces(new.snapshot, build_filters(o))
            default_out, _ = report_output(parse_report([new.path] + flatten(filt)), self.load)
        except re.error as e:
            self.skipped.append("re.error: %s" % e)
            return None
        traces, limit = filtered.traces._traces, filtered.traceback_limit
        if family == "pickle-out":
            out = os.path.join(outdir, qid + ".pickle")
            pyver = []
            if MINOR == 8 or rng.random() < 0.7:
                pyver = [["--python-version", "3.%d" % MINOR]]
            opts = filt + pyver + [["-o", out]] + fmt
            rng.shuffle(opts)
            case["steps"].append({"argv": [new.path] + flatten(opts), "check": "write",
                                  "output": out, "outputs": [out], "expected": default_out,
                                  "pickle": True, "traces": traces, "limit": limit,
                                  "source_argv": [new.path] + flatten(filt)})
            return case

        # tmt-roundtrip: FILE [filters] -o a.tmt; report a.tmt [options];
        # a.tmt -o b.pickle (checked by tracemalloc); maybe a.tmt --compare OLD.
        tmt = os.path.join(outdir, qid + ".tmt")
        opts = filt + [["-o", tmt]] + fmt
        rng.shuffle(opts)
        case["steps"].append({"argv": [new.path] + flatten(opts), "check": "write",
                              "output": tmt, "outputs": [tmt], "expected": default_out})
        stat_opts = random_stat_opts(rng)
        argv = [new.path] + flatten(filt + stat_opts)
        kind, value = self.expect(argv)
        if kind != "output":
            stat_opts = [["-k", "lineno"]]
            kind, value = self.expect([new.path] + flatten(filt + stat_opts))
        opts = stat_opts + fmt
        rng.shuffle(opts)
        case["steps"].append({"argv": [tmt] + flatten(opts), "check": "output", "expected": value})
        back = os.path.join(outdir, qid + "-back.pickle")
        case["steps"].append({"argv": [tmt, "-o", back, "--python-version", "3.%d" % MINOR,
                                       "--format", "tracemalloc"],
                              "check": "write", "output": back, "outputs": [back],
                              "expected": format_stats(filtered.statistics("lineno"), 10),
                              "pickle": True, "traces": traces, "limit": limit,
                              "source_argv": [new.path] + flatten(filt)})
        pair = [p for p in pairs if p[1] is new]
        if pair:
            oldp = pair[0][0]
            case["inputs"].append(oldp.path)
            stat_opts = random_stat_opts(rng)
            kind, value = self.expect([new.path, "--compare", oldp.path] + flatten(filt + stat_opts))
            if kind == "output":
                opts = stat_opts + filt + fmt + [["--compare", oldp.path]]
                rng.shuffle(opts)
                case["steps"].append({"argv": [tmt] + flatten(opts), "check": "output",
                                      "expected": value})
        return case

    def run(self):
        a = self.args
        rng = random.Random(a.seed * 1000 + MINOR)
        t0 = time.monotonic()
        groups, pairs = [], []
        # a few fixed shapes first: empty, one trace, a larger one
        fixed = [0, 1, 5000]
        n = 0
        while len(groups) < a.snapshots:
            name = "s%05d" % n
            snap = make_snapshot(rng, name, fixed[n] if n < len(fixed) else None,
                                 a.profiles.split(","))
            n += 1
            self.dump(snap)
            groups.append(snap)
            if rng.random() < 0.4 and len(groups) < a.snapshots:
                new = derive_new(rng, snap, name + "-new")
                self.dump(new)
                groups.append(new)
                pairs.append((snap, new))
        real = make_real_snapshots(rng, "real")
        for snap in real:
            self.dump(snap)
        groups += real
        self.real = real
        pairs.append(tuple(real))
        self.fn_snap = make_fnmatch_snapshot(rng, "fnmatch")
        self.dump(self.fn_snap)
        t_gen = time.monotonic() - t0
        futures = []
        made = 0
        with ThreadPoolExecutor(max_workers=a.workers) as ex:
            q = 0
            while made < a.queries:
                case = self.make_case(rng, "q%05d" % q, groups, pairs)
                q += 1
                if case is None:
                    continue
                made += 1
                if a.dry_run:
                    continue
                futures.append(ex.submit(self.run_case, case))
            for f in futures:
                f.result()
        self.failures.sort(key=lambda e: e["id"])
        return {
            "python": sys.version.split()[0], "executable": sys.executable,
            "snapshots": len(groups), "pairs": len(pairs),
            "traces": sum(g.size for g in groups), "queries": made,
            "counts": self.counts, "failures": self.failures,
            "skipped": len(self.skipped), "skipped_examples": sorted(set(self.skipped))[:3],
            "seconds": time.monotonic() - t0, "generation_seconds": t_gen,
            "tmtrace_runs": self.tmtrace_runs, "tmtrace_seconds": self.tmtrace_seconds,
            "cpu_seconds": time.process_time(),
        }


def check_json(out, numbers):
    """None if `out` is JSON whose "stats" have tracemalloc's numbers
    (size, count[, size_diff, count_diff]) in tracemalloc's order; the
    JSON's other fields are not checked."""
    try:
        doc = json.loads(out.decode("utf-8"))
    except ValueError as e:
        return "--format json printed no JSON document: %s" % e
    stats = doc.get("stats") if isinstance(doc, dict) else None
    if not isinstance(stats, list):
        return "--format json: no \"stats\" list"
    fields = ("size", "count", "size_diff", "count_diff")
    got = []
    for st in stats:
        if not isinstance(st, dict):
            return "--format json: a statistic is not an object"
        got.append([st.get(f) for f in fields[:len(numbers[0])]] if numbers else [])
    if got != numbers:
        for i in range(max(len(got), len(numbers))):
            g = got[i] if i < len(got) else "<none>"
            w = numbers[i] if i < len(numbers) else "<none>"
            if g != w:
                return ("--format json: statistic #%d has %s %s, tracemalloc %s (%d statistics, "
                        "tracemalloc %d)" % (i + 1, "/".join(fields[:len(w) if w != "<none>"
                                                                    else len(g)]), g, w,
                                             len(got), len(numbers)))
    return None


def describe(step, problem):
    """A short account of a mismatch: the first differing lines."""
    lines = []
    if step["check"] == "output" and problem.get("rc") == 0:
        exp = step["expected"].encode("utf-8").split(b"\n")
        got = (problem.get("stdout") or b"").split(b"\n")
        for i in range(max(len(exp), len(got))):
            e = exp[i] if i < len(exp) else None
            g = got[i] if i < len(got) else None
            if e != g:
                lines.append("line %d: expected %r" % (i + 1, e.decode("utf-8", "replace")
                                                       if e is not None else "<end>"))
                lines.append("line %d:      got %r" % (i + 1, g.decode("utf-8", "replace")
                                                       if g is not None else "<end>"))
                break
        lines.append("%d lines expected, %d printed" % (len(exp) - 1, max(0, len(got) - 1)))
    err = (problem.get("stderr") or b"").decode("utf-8", "replace").strip()
    if err:
        lines.append("stderr: " + err[:500])
    return lines


def cmd_run(argv):
    import argparse
    p = argparse.ArgumentParser(prog="pyside.py run")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--snapshots", type=int, default=300)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--profiles", default="normal,big,huge")
    p.add_argument("--workdir", required=True)
    p.add_argument("--faildir", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--keep-failures", type=int, default=10,
                   help="failures whose files are kept, per family and size profile")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--tmtrace", action="append", default=[])
    p.add_argument("--tmtrace-shown-as", help="how repro commands name tmtrace")
    p.add_argument("--dry-run", action="store_true",
                   help="generate and compute the expected outputs, run nothing")
    a = p.parse_args(argv)
    if not a.tmtrace:
        a.tmtrace = [os.path.join(ROOT, "build", "tmtrace")]
    a.workdir = os.path.abspath(a.workdir)
    a.faildir = os.path.abspath(a.faildir)
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    result = Runner(a).run()
    with open(a.result, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    return 0


def main():
    if len(sys.argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "run":
        return cmd_run(rest)
    if mode == "tmtrace":
        return cmd_tmtrace(rest)
    if mode == "check-pickle":
        return cmd_check_pickle(rest)
    sys.stderr.write("unknown mode %r\n" % mode)
    return 2


if __name__ == "__main__":
    sys.exit(main())
