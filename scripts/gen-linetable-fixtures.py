#!/usr/bin/env python3
"""Write tests/unit/fixtures/linetable-3.X.txt.gz for the running interpreter.

Run it once with every supported CPython (3.8 .. 3.13):

    for v in 3.8.18 3.9.18 3.10.13 3.11.7 3.12.1 3.13.0; do
        /root/.pyenv/versions/$v/bin/python3 scripts/gen-linetable-fixtures.py
    done

The expected values come from CPython itself: PyCode_Addr2Line() called
through ctypes on real code objects. The corpus is a few dozen modules of the
interpreter's own Lib/, generated sources with awkward line tables (long
lines, line jumps past 127/255/varint limits in both directions, bytecode
ranges past 255 bytes, every statement kind), and random but well-formed line
tables grafted onto code objects with code.replace().

Every byte offset from -2 to len(co_code) + 3 is recorded, odd ones included.
Offsets past the end are safe to ask CPython about in these (NDEBUG) builds:
every version stops at the end of its table (3.8/3.9 with the last line,
3.10+ with -1). The exceptions would be 3.11's _co_linearray and 3.12+'s
instrumentation line arrays, which only exist once tracing or sys.monitoring
touched the code object; this script never traces.

Fixture format (gzip-compressed text):
    # comment (first line names the interpreter and this script)
    minor <X>
    c <firstlineno> <first addrq> <table hex, or - when empty> <label>
    e <line>[*<repeat>] ...      expected values for consecutive addrq
"""

import ctypes
import dis
import gzip
import io
import os
import random
import sys

MINOR = sys.version_info[1]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "unit", "fixtures",
                   "linetable-3.%d.txt.gz" % MINOR)

addr2line = ctypes.pythonapi.PyCode_Addr2Line
addr2line.argtypes = (ctypes.py_object, ctypes.c_int)
addr2line.restype = ctypes.c_int

# Modules of the interpreter's Lib/ (X.py, or X/__init__.py where X became a
# package); missing ones are skipped.
STDLIB = [
    "abc", "base64", "bisect", "calendar", "codecs", "collections",
    "contextlib", "copy", "csv", "dataclasses", "difflib", "dis", "enum",
    "fnmatch", "fractions", "functools", "gettext", "heapq", "json/decoder",
    "json/encoder", "logging", "ntpath", "pathlib", "pprint", "queue",
    "random", "re", "shutil", "string", "tempfile", "textwrap", "threading",
    "tokenize", "tracemalloc", "warnings", "weakref",
]

FIRST_ADDR = -2
PAST_END = 4


def table_of(co):
    return co.co_lnotab if MINOR <= 9 else co.co_linetable


def walk(co):
    yield co
    for c in co.co_consts:
        if hasattr(c, "co_code"):
            yield from walk(c)


def stdlib_sources():
    lib = os.path.dirname(os.__file__)
    for name in STDLIB:
        for rel in (name + ".py", os.path.join(name, "__init__.py")):
            path = os.path.join(lib, rel)
            if os.path.exists(path):
                with open(path, "rb") as f:
                    yield rel, f.read()
                break


def blank(n):
    return "\n" * n


def generated_sources():
    """Sources chosen for their line tables, not their meaning."""
    long_list = "x = [" + ", ".join(str(i) for i in range(300)) + "]\n"
    long_call = ("y = f(" + ", ".join("a%d.b" % i for i in range(120)) +
                 ")\n")
    deep_attr = "z = " + ".".join(["o"] * 150) + "\n"
    yield "long_lines", long_list + long_call + deep_attr + "\n".join(
        "w%d = %s + g(%s)" % (i, " + ".join(["v"] * (i * 7)), "u" * (40 * i))
        for i in range(1, 12)) + "\n"

    gaps = [1, 2, 31, 32, 33, 127, 128, 129, 255, 256, 257, 1023, 1024,
            1025, 5000, 70000]
    src = "def jumps(a, b, f):\n    v = a\n"
    for g in gaps:
        src += blank(g) + "    v = v + %d\n" % g
    # Calls whose callee sits far above its last argument: the call
    # instruction jumps back up by the gap.
    for g in gaps:
        src += "    v = f(\n" + blank(g) + "        v)\n"
    src += "    for i in range(3):\n" + blank(300) + "        v += i\n"
    src += "    return (a,\n" + blank(400) + "            b)\n"
    yield "jumps", src

    # One line with far more than 255 bytes of bytecode, and a function whose
    # bytecode is thousands of bytes long.
    yield "one_long_line", "def f(a):\n    " + "; ".join(
        "a = a + %d" % i for i in range(400)) + "\n    return a\n"
    yield "huge_function", "def big(a, b):\n" + "".join(
        "    a%d = a * %d + b[%d] - (a if b else %d)\n" % (i, i, i, i)
        for i in range(250)) + "    return a\n"

    yield "statements", '''\
import os
from functools import wraps

def deco(arg):
    def wrap(fn):
        @wraps(fn)
        def inner(*a, **k):
            return fn(*a, **k)
        return inner
    return wrap

@deco(
    1,
)
@deco(2)
class C(object):
    """doc"""
    x = [i * 2 for i in range(10) if i % 3]
    y = {k: v for k, v in zip("ab", (1, 2))}
    z = {s for s in "abc"}
    g = (q
         for q in range(3)
         if q)
    f = lambda self, n=3: (
        n +
        1)

    @staticmethod
    def m(a, *args, b=1, **kw):
        try:
            a = 1 / a
        except ZeroDivisionError as e:
            raise ValueError(
                "bad"
            ) from e
        except (TypeError,
                KeyError):
            pass
        else:
            a += 1
        finally:
            print("done")
        with open(os.devnull) as fp, \\
                open(os.devnull) as fq:
            fp.read(); fq.read()
        while a:
            a -= 1
            if a == 5:
                continue
            elif a < 2:
                break
        else:
            a = None
        assert a is None, (
            "a")
        del a
        return [x
                for x in args
                if x], {
            **kw}

    async def am(self, it):
        async with it as v:
            async for w in v:
                await w
        return [z async for z in it]

def gen():
    x = yield 1
    yield from range(x)
    if (n := len("abc")) > 2:
        return n
    return (f"{x!r:>{n}}"
            f"{x}")

def closure():
    a = 1
    def inner():
        nonlocal a
        a += 1
        return a
    return inner

if 0:
    unreachable()

try:
    pass
finally:
    pass

global_v = [[y for y in range(x)] for x in range(3)]
'''

    if MINOR >= 10:
        yield "match", '''\
def m(cmd):
    match cmd:
        case [x, y, *rest] if x > y:
            return rest
        case {"k": v, **kw}:
            return v
        case Point(x=0,
                   y=0):
            return "origin"
        case str() | bytes():
            return "s"
        case _:
            return None
'''
    if MINOR >= 11:
        yield "except_star", '''\
def es():
    try:
        raise ExceptionGroup("g", [ValueError()])
    except* ValueError:
        pass
    except* TypeError as e:
        raise
'''
    if MINOR >= 12:
        yield "type_params", '''\
type Alias[T] = list[T]
def gf[T: int](x: T) -> T:
    return x
class GC[T]:
    def m(self) -> T: ...
'''

    # Code with no lines at all, or almost none.
    yield "empty", ""
    yield "comment_only", "# nothing\n\n\n"
    yield "docstring_only", '"""doc"""\n'
    yield "pass_only", blank(40) + "pass\n"


# Random well-formed tables, grafted onto a real code object with replace().

def random_lnotab(rng, code_len):
    """3.8/3.9: any byte pairs are well-formed; sometimes an odd tail."""
    out = bytearray()
    addr = 0
    while addr < code_len + 8 and len(out) < 400:
        incr = rng.choice([0, 0, 2, 2, 4, 6, 8, rng.randrange(256), 255])
        out += bytes([incr, rng.randrange(256)])
        addr += incr
    if rng.random() < 0.2:
        out.append(rng.randrange(256))
    return bytes(out)


def random_310(rng, code_len):
    """3.10: pairs; zero-length ones allowed but never last (CPython would
    read past the table), -128 = no line."""
    out = bytearray()
    addr = 0
    while addr < code_len + 8 and len(out) < 400:
        bd = rng.choice([0, 2, 2, 4, 6, 254, 255, rng.randrange(256)])
        ld = rng.choice([0, 1, -1, 127, -127, -128, rng.randrange(-128, 128)])
        out += bytes([bd, ld & 0xff])
        addr += bd
    if out and out[-2] == 0:
        out[-2] = 2
    return bytes(out)


def varint(v):
    out = bytearray()
    while v >= 64:
        out.append(64 | (v & 63))
        v >>= 6
    out.append(v)
    return out


def svarint(v):
    return varint((-v << 1) | 1 if v < 0 else v << 1)


def random_locations(rng, code_len):
    """3.11+: entries of every code of Objects/locations.md."""
    out = bytearray()
    units = 0
    # Random tables do not compress: cover at most 600 code units.
    target = min(code_len // 2, 600) + rng.choice([0, 0, 0, -3, 5])
    line = 0
    while units < target:
        n = rng.randrange(1, 9)
        code = rng.randrange(16)
        out.append(0x80 | (code << 3) | (n - 1))
        if code <= 9:
            out.append(rng.randrange(128))
        elif code <= 12:
            out += bytes([rng.randrange(128), rng.randrange(128)])
        elif code in (13, 14):
            delta = rng.choice([0, 1, -1, 31, -32, 33, 1000, -1000,
                                rng.randrange(-70000, 70000)])
            # Keep the running line comfortably positive.
            if line + delta < -50:
                delta = -delta
            line += delta
            out += svarint(delta)
            if code == 14:
                out += varint(rng.choice([0, 1, 300]))
                out += varint(rng.randrange(200))
                out += varint(rng.randrange(200))
        if code in (11, 12):
            line += code - 10
        units += n
    return bytes(out)


def crafted_codes(rng, bases):
    maker = (random_lnotab if MINOR <= 9 else
             random_310 if MINOR == 10 else random_locations)
    field = "co_lnotab" if MINOR <= 9 else "co_linetable"
    for i in range(120):
        base = bases[i % len(bases)]
        table = maker(rng, len(base.co_code))
        firstlineno = rng.choice([1, 1, 7, 300, 100000])
        yield "crafted%d" % i, base.replace(co_firstlineno=firstlineno,
                                            **{field: table})
    for base in bases:
        yield "crafted_empty", base.replace(**{field: b""})


def cross_check(co, expected):
    """The interpreter's own Python-level decoders must agree with ctypes."""
    def at(addr):
        # Crafted tables may describe more code than there is.
        if addr - FIRST_ADDR < len(expected):
            return expected[addr - FIRST_ADDR]
        return addr2line(co, addr)

    if MINOR >= 11:
        for i, pos in enumerate(co.co_positions()):
            want = -1 if pos[0] is None else pos[0]
            assert at(2 * i) == want and at(2 * i + 1) == want, (co, i)
    if MINOR >= 10:
        # co_lines() reports every negative line (crafted tables have
        # some) as None, like the "no line" entries.
        for start, end, line in co.co_lines():
            for a in range(start, end):
                got = at(a)
                assert got < 0 if line is None else got == line, (co, a)
    else:
        for addr, line in dis.findlinestarts(co):
            assert at(addr) == line, (co, addr)


def rle(values):
    out = []
    prev, count = values[0], 0
    for v in values + [None]:
        if v == prev:
            count += 1
            continue
        out.append(str(prev) if count == 1 else "%d*%d" % (prev, count))
        prev, count = v, 1
    return " ".join(out)


def main():
    assert sys.gettrace() is None, "tracing would switch CPython's line lookup"
    rng = random.Random(0x7417ace + MINOR)
    codes = []
    for label, src in list(stdlib_sources()) + list(generated_sources()):
        top = compile(src, label, "exec", dont_inherit=True)
        codes += [(label, co) for co in walk(top)]
    bases = sorted((co for _, co in codes), key=lambda c: len(c.co_code))
    bases = [bases[0], bases[len(bases) // 2], bases[-1],
             bases[len(bases) * 9 // 10]]
    codes += list(crafted_codes(rng, bases))

    buf = io.StringIO()
    buf.write("# linetable fixture: CPython %s (%s), written by "
              "scripts/gen-linetable-fixtures.py\n"
              % (sys.version.split()[0], sys.executable))
    buf.write("minor %d\n" % MINOR)
    seen = set()
    checked = 0
    for label, co in codes:
        table = table_of(co)
        key = (co.co_firstlineno, table, len(co.co_code))
        if key in seen:
            continue
        seen.add(key)
        expected = [addr2line(co, a) for a in
                    range(FIRST_ADDR, len(co.co_code) + PAST_END)]
        cross_check(co, expected)
        name = "".join(ch if ch.isalnum() or ch in "<>._-" else "_"
                       for ch in "%s:%s" % (label, co.co_name))
        buf.write("c %d %d %s %s\n" % (co.co_firstlineno, FIRST_ADDR,
                                       table.hex() or "-", name))
        buf.write("e %s\n" % rle(expected))
        checked += len(expected)

    with open(OUT, "wb") as f:
        # mtime=0 and no file name: the output depends on the input only.
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
            gz.write(buf.getvalue().encode())
    print("%s: %d code objects, %d values, %d bytes"
          % (os.path.relpath(OUT, ROOT), len(seen), checked,
             os.path.getsize(OUT)))


if __name__ == "__main__":
    main()
