#!/usr/bin/env python3
"""Generate src/pyoffsets_table.c: struct py_offsets (src/pyoffsets.h) for every
supported CPython minor version.

For each version it compiles, with the C compiler, a small program against that
version's own headers (public and internal, Py_BUILD_CORE defined) and runs it:
offsets come from offsetof(), sizes from sizeof(), enum values are the enum
constants themselves, and the positions of the PyASCIIObject state bitfields
are found by setting each bitfield in a zeroed struct and looking at which bits
of the 32-bit state word changed.  Every field's size is checked too (a pointer
is 8 bytes, f_lasti an int, owner a char, ...) so that a header change that
turns a field into something else fails here rather than in the BPF program.

The headers come from pyenv installs: $PYENV_ROOT/versions/3.X.Y/include/python3.X
(and .../internal).  If a version is missing the script fails, unless the
versions to use are given with --versions.

  scripts/gen-pyoffsets.py                      all of 3.8 .. 3.13, write the table
  scripts/gen-pyoffsets.py --versions 3.11,3.12 only these
  scripts/gen-pyoffsets.py --check              exit 1 if the table is not up to date
  scripts/gen-pyoffsets.py --dwarf              also cross-check every value
                                                against the DWARF of libpython3.X.so
                                                (with gdb), exit 1 on a mismatch
  scripts/gen-pyoffsets.py --dump               print all values, including the
                                                proposed fields not yet in the header
  scripts/gen-pyoffsets.py --debug-offsets      print 3.13's _Py_DebugOffsets (at
                                                _PyRuntime+0) as libpython3.13 holds
                                                it, and compare the fields it shares
                                                with struct py_offsets (exit 1 on a
                                                difference)
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ALL_VERSIONS = [(3, 8), (3, 9), (3, 10), (3, 11), (3, 12), (3, 13)]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HEADER = os.path.join(ROOT, "src", "pyoffsets.h")
OUTPUT = os.path.join(ROOT, "src", "pyoffsets_table.c")

FRAME_MODEL = {
    (3, 8): "PY_FRAMES_FRAMEOBJECT",
    (3, 9): "PY_FRAMES_FRAMEOBJECT",
    (3, 10): "PY_FRAMES_FRAMEOBJECT",
    (3, 11): "PY_FRAMES_CFRAME",
    (3, 12): "PY_FRAMES_CFRAME",
    (3, 13): "PY_FRAMES_TSTATE",
}

# Headers each version's program includes (after Python.h), found through
# -I include/python3.X/internal.
INCLUDES = {
    (3, 8): ["frameobject.h", "pycore_pystate.h"],
    (3, 9): ["frameobject.h", "pycore_interp.h", "pycore_runtime.h", "pycore_pystate.h"],
    (3, 10): ["frameobject.h", "pycore_interp.h", "pycore_runtime.h", "pycore_pystate.h"],
    (3, 11): ["pycore_code.h", "pycore_frame.h", "pycore_interp.h", "pycore_runtime.h",
              "pycore_pystate.h"],
    (3, 12): ["pycore_code.h", "pycore_frame.h", "pycore_interp.h", "pycore_runtime.h",
              "pycore_pystate.h"],
    (3, 13): ["pycore_code.h", "pycore_frame.h", "pycore_interp.h", "pycore_runtime.h",
              "pycore_pystate.h"],
}

R_ALL = ((3, 8), (3, 13))
R_OLD = ((3, 8), (3, 10))     # PyFrameObject chain
R_NEW = ((3, 11), (3, 13))    # _PyInterpreterFrame chain


def M(first, last, ctype, member, size):
    """Member `member` of `ctype` in versions first..last: offsetof, checked
    to be `size` bytes wide."""
    return ("member", first, last, ctype, member, size)


def S(first, last, ctype):
    """sizeof(ctype)."""
    return ("sizeof", first, last, ctype)


def E(first, last, const):
    """Value of an enum constant."""
    return ("enum", first, last, const)


def D(first, last, const):
    """Value of a #define (not in DWARF without -g3: not cross-checked)."""
    return ("macro", first, last, const)


def B(first, last, ctype, member, what):
    """Bitfield `member` of `ctype`.state, or of `ctype`.X for a member
    written "X.member": what = 'shift' | 'bits'."""
    return ("bit", first, last, ctype, member, what)


# struct py_offsets field -> list of rules.  A field with no rule for a
# version is PYOFF_NONE (0xff for the uint8_t state_* fields).
SPEC = {
    "runtime_interpreters_head": [M(*R_ALL, "_PyRuntimeState", "interpreters.head", 8)],
    "interp_next": [M(*R_ALL, "PyInterpreterState", "next", 8)],
    "interp_threads_head": [M(*R_OLD, "PyInterpreterState", "tstate_head", 8),
                            M(*R_NEW, "PyInterpreterState", "threads.head", 8)],
    "tstate_next": [M(*R_ALL, "PyThreadState", "next", 8)],
    # Which of a thread's thread states (one per interpreter it entered)
    # tracemalloc takes: up to 3.11 PyGILState_GetThisThreadState(), the
    # first one the thread made (the main interpreter's, for a thread that
    # calls into a sub-interpreter); from 3.12 the current one, and where
    # the thread has none current (GIL released) the active one.
    "runtime_interpreters_main": [M(*R_ALL, "_PyRuntimeState", "interpreters.main", 8)],
    "tstate_status": [M((3, 12), (3, 13), "PyThreadState", "_status", 4)],
    "tstate_active_bit": [B((3, 12), (3, 13), "PyThreadState", "_status.active", "shift")],
    "tstate_interp": [M(*R_ALL, "PyThreadState", "interp", 8)],
    # Where pymalloc's usedpools[] are from 3.12: in the interpreter's
    # obmalloc state (the main interpreter's, for one made with
    # Py_RTFLAGS_USE_MAIN_OBMALLOC), embedded in 3.12, behind a pointer in 3.13.
    "interp_obmalloc": [M((3, 12), (3, 12), "PyInterpreterState", "obmalloc.pools.used", 512),
                        M((3, 13), (3, 13), "PyInterpreterState", "obmalloc", 8)],
    "obmalloc_used": [M((3, 13), (3, 13), "struct _obmalloc_state", "pools.used", 512)],
    "interp_feature_flags": [M((3, 12), (3, 13), "PyInterpreterState", "feature_flags", 8)],
    "rtflags_use_main_obmalloc": [D((3, 12), (3, 13), "Py_RTFLAGS_USE_MAIN_OBMALLOC")],
    "tstate_thread_id": [M(*R_ALL, "PyThreadState", "thread_id", 8)],
    "tstate_native_thread_id": [M(*R_NEW, "PyThreadState", "native_thread_id", 8)],
    "tstate_frame": [M(*R_OLD, "PyThreadState", "frame", 8),
                     M((3, 11), (3, 12), "PyThreadState", "cframe", 8),
                     M((3, 13), (3, 13), "PyThreadState", "current_frame", 8)],
    "cframe_current_frame": [M((3, 11), (3, 12), "_PyCFrame", "current_frame", 8)],
    "frame_back": [M(*R_OLD, "PyFrameObject", "f_back", 8),
                   M(*R_NEW, "_PyInterpreterFrame", "previous", 8)],
    "frame_code": [M(*R_OLD, "PyFrameObject", "f_code", 8),
                   M((3, 11), (3, 12), "_PyInterpreterFrame", "f_code", 8),
                   M((3, 13), (3, 13), "_PyInterpreterFrame", "f_executable", 8)],
    "frame_lasti": [M(*R_OLD, "PyFrameObject", "f_lasti", 4),
                    M((3, 11), (3, 12), "_PyInterpreterFrame", "prev_instr", 8),
                    M((3, 13), (3, 13), "_PyInterpreterFrame", "instr_ptr", 8)],
    "frame_owner": [M(*R_NEW, "_PyInterpreterFrame", "owner", 1)],
    "frame_owned_by_generator": [E(*R_NEW, "FRAME_OWNED_BY_GENERATOR")],
    "frame_owned_by_cstack": [E((3, 12), (3, 13), "FRAME_OWNED_BY_CSTACK")],
    "code_filename": [M(*R_ALL, "PyCodeObject", "co_filename", 8)],
    "code_name": [M(*R_ALL, "PyCodeObject", "co_name", 8)],
    "code_qualname": [M(*R_NEW, "PyCodeObject", "co_qualname", 8)],
    "code_firstlineno": [M(*R_ALL, "PyCodeObject", "co_firstlineno", 4)],
    "code_linetable": [M((3, 8), (3, 9), "PyCodeObject", "co_lnotab", 8),
                       M((3, 10), (3, 13), "PyCodeObject", "co_linetable", 8)],
    "code_code": [M(*R_OLD, "PyCodeObject", "co_code", 8)],
    "code_adaptive": [M(*R_NEW, "PyCodeObject", "co_code_adaptive", 1)],
    "code_firsttraceable": [M(*R_NEW, "PyCodeObject", "_co_firsttraceable", 4)],
    "object_type": [M(*R_ALL, "PyObject", "ob_type", 8)],
    "type_flags": [M(*R_ALL, "PyTypeObject", "tp_flags", 8)],
    "varobject_size": [M(*R_ALL, "PyVarObject", "ob_size", 8)],
    "bytes_sval": [M(*R_ALL, "PyBytesObject", "ob_sval", 1)],
    "unicode_length": [M(*R_ALL, "PyASCIIObject", "length", 8)],
    "unicode_state": [M(*R_ALL, "PyASCIIObject", "state", 4)],
    "unicode_ascii_size": [S(*R_ALL, "PyASCIIObject")],
    "unicode_compact_size": [S(*R_ALL, "PyCompactUnicodeObject")],
    "unicode_data_any": [M(*R_ALL, "PyUnicodeObject", "data.any", 8)],
    "state_kind_shift": [B(*R_ALL, "PyASCIIObject", "kind", "shift")],
    "state_kind_bits": [B(*R_ALL, "PyASCIIObject", "kind", "bits")],
    "state_compact_bit": [B(*R_ALL, "PyASCIIObject", "compact", "shift")],
    "state_ascii_bit": [B(*R_ALL, "PyASCIIObject", "ascii", "shift")],
    "state_ready_bit": [B((3, 8), (3, 11), "PyASCIIObject", "ready", "shift")],

    # PyFrame_GetLineNumber() returns f_lineno when f_trace != NULL (3.8, 3.9)
    # or when f_lineno != 0 (3.10), so an exact walker needs both.
    "frame_trace": [M((3, 8), (3, 9), "PyFrameObject", "f_trace", 8)],
    "frame_lineno": [M(*R_OLD, "PyFrameObject", "f_lineno", 4)],
}

# SPEC fields that src/pyoffsets.h may lack.
OPTIONAL = set()

# Single-bit flags must be 1 bit wide: checked as well.
ONE_BIT = {"compact", "ascii", "ready", "_status.active"}

# The struct py_offsets field holding each bitfield container's offset.
BIT_CONTAINERS = {("PyASCIIObject", "state"): "unicode_state", ("PyThreadState", "_status"): "tstate_status"}


def die(msg):
    sys.stderr.write("gen-pyoffsets: error: %s\n" % msg)
    sys.exit(1)


def vstr(v):
    return "%d.%d" % v


def rule_for(field, v):
    for r in SPEC[field]:
        if r[1] <= v <= r[2]:
            return r
    return None


def header_fields():
    """The uint32_t/uint8_t fields of struct py_offsets, in order."""
    text = open(HEADER).read()
    m = re.search(r"struct py_offsets \{(.*?)\n\};", text, re.S)
    if not m:
        die("cannot find struct py_offsets in %s" % HEADER)
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    fields = []
    for decl in body.split(";"):
        decl = decl.strip()
        if not decl:
            continue
        mm = re.match(r"(int|enum py_frame_model|uint32_t|uint8_t)\s+(.*)$", decl, re.S)
        if not mm:
            die("unexpected declaration in struct py_offsets: %r" % decl)
        for name in mm.group(2).split(","):
            fields.append((mm.group(1), name.strip()))
    return fields


def find_install(root, v):
    """The prefix of the newest pyenv install (highest patch) of version v, or None."""
    cands = []
    for d in glob.glob(os.path.join(root, "versions", "%d.%d.*" % v)):
        m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", os.path.basename(d))
        if m and os.path.isdir(os.path.join(d, "include", "python%d.%d" % v, "internal")):
            cands.append((int(m.group(3)), d))
    if not cands:
        return None
    cands.sort()
    return cands[-1][1]


def c_program(v):
    out = ["#define Py_BUILD_CORE 1",
           "#include <Python.h>"]
    out += ["#include <%s>" % h for h in INCLUDES[v]]
    out += [
        "#include <stddef.h>",
        "#include <stdio.h>",
        "#include <string.h>",
        "#include <stdint.h>",
        "",
        "#define MEMBER(name, type, member) \\",
        "\tprintf(\"member %s %zu %zu\\n\", name, offsetof(type, member), \\",
        "\t       sizeof(((type *)0)->member))",
        "",
        "static int lowbit(uint32_t w) { int i; for (i = 0; i < 32; i++) if (w & (1u << i)) return i; return -1; }",
        "static int nbits(uint32_t w) { int n = 0; while (w) { n += w & 1; w >>= 1; } return n; }",
        "static int contiguous(uint32_t w) { return w && ((w >> lowbit(w)) & ((w >> lowbit(w)) + 1)) == 0; }",
        "",
        "/* Set one bitfield of a zeroed object to all ones and see which bits of",
        " * the 32-bit state word changed. */",
        "#define BIT(name, type, container, member) do { \\",
        "\ttype o; uint32_t w; \\",
        "\tmemset(&o, 0, sizeof o); \\",
        "\to.container.member = (unsigned)-1; \\",
        "\tmemcpy(&w, (char *)&o + offsetof(type, container), sizeof w); \\",
        "\tprintf(\"bit %s %d %d %d\\n\", name, lowbit(w), nbits(w), contiguous(w)); \\",
        "} while (0)",
        "",
        "int main(void)",
        "{",
        "\tprintf(\"version %s\\n\", PY_VERSION);",
        "\tprintf(\"hex %lu\\n\", (unsigned long)PY_VERSION_HEX);",
        "\tprintf(\"statesize %zu\\n\", sizeof(((PyASCIIObject *)0)->state));",
    ]
    for field in SPEC:
        r = rule_for(field, v)
        if r is None:
            continue
        kind = r[0]
        if kind == "member":
            out.append("\tMEMBER(\"%s\", %s, %s);" % (field, r[3], r[4]))
        elif kind == "sizeof":
            out.append("\tprintf(\"sizeof %s %%zu\\n\", sizeof(%s));" % (field, r[3]))
        elif kind in ("enum", "macro"):
            out.append("\tprintf(\"enum %s %%ld\\n\", (long)(%s));" % (field, r[3]))
        elif kind == "bit":
            container, member = r[4].split(".", 1) if "." in r[4] else ("state", r[4])
            out.append("\tBIT(\"%s\", %s, %s, %s);" % (field, r[3], container, member))
    out += ["\treturn 0;", "}", ""]
    return "\n".join(out)


def generate_version(v, prefix, cc, tmpdir):
    inc = os.path.join(prefix, "include", "python%d.%d" % v)
    src = os.path.join(tmpdir, "off%d%d.c" % v)
    exe = os.path.join(tmpdir, "off%d%d" % v)
    with open(src, "w") as f:
        f.write(c_program(v))
    cmd = [cc, "-std=gnu11", "-O0", "-w", "-I", inc, "-I", os.path.join(inc, "internal"),
           src, "-o", exe]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True)
    if p.returncode != 0:
        die("compiling against %s failed:\n  %s\n%s" % (inc, " ".join(cmd), p.stdout))
    p = subprocess.run([exe], stdout=subprocess.PIPE, universal_newlines=True)
    if p.returncode != 0:
        die("%s exited with %d" % (exe, p.returncode))

    vals = {}
    patch = None
    hexv = None
    statesize = None
    for line in p.stdout.splitlines():
        w = line.split()
        if w[0] == "version":
            patch = w[1]
        elif w[0] == "hex":
            hexv = int(w[1])
        elif w[0] == "statesize":
            statesize = int(w[1])
        elif w[0] == "member":
            name, off, size = w[1], int(w[2]), int(w[3])
            want = rule_for(name, v)[5]
            if size != want:
                die("%s: %s (%s.%s) is %d bytes wide, expected %d" %
                    (vstr(v), name, rule_for(name, v)[3], rule_for(name, v)[4], size, want))
            vals[name] = off
        elif w[0] in ("sizeof", "enum"):
            vals[w[1]] = int(w[2])
        elif w[0] == "bit":
            name, low, n, contig = w[1], int(w[2]), int(w[3]), int(w[4])
            member, what = rule_for(name, v)[4], rule_for(name, v)[5]
            if low < 0 or not contig:
                die("%s: bitfield state.%s not found in the state word" % (vstr(v), member))
            if member in ONE_BIT and n != 1:
                die("%s: bitfield state.%s is %d bits wide, expected 1" % (vstr(v), member, n))
            vals[name] = low if what == "shift" else n
        else:
            die("unexpected output line %r" % line)
    if (hexv >> 24, (hexv >> 16) & 0xff) != v:
        die("headers in %s are for %s, not %s" % (inc, patch, vstr(v)))
    if statesize != 4:
        die("%s: PyASCIIObject.state is %d bytes, expected 4" % (vstr(v), statesize))
    return patch, vals


def describe(field, v):
    r = rule_for(field, v)
    if r is None:
        return "not in %s" % vstr(v)
    if r[0] == "member":
        return "%s.%s" % (r[3], r[4])
    if r[0] == "sizeof":
        return "sizeof(%s)" % r[3]
    if r[0] in ("enum", "macro"):
        return r[3]
    return "%s of %s.%s" % ("width" if r[5] == "bits" else "bit position", r[3],
                           r[4] if "." in r[4] else "state." + r[4])


def render_debug_checks(layout, vals):
    """The C table of 3.13's _Py_DebugOffsets fields that tmtrace checks
    against its own values when it attaches."""
    lines = [
        "/* 3.13: where _PyRuntime.debug_offsets (at the start of _PyRuntime) holds",
        " * a value this table also has; checked against the live target. */",
        "static const struct py_debug_check py_debug_checks_313[] = {",
    ]
    n = 0
    for line in layout:
        w = line.split()
        if w[0] == "@" or w[0] not in DEBUG_OFFSETS_OVERLAP:
            continue
        ours = DEBUG_OFFSETS_OVERLAP[w[0]]
        if int(w[2]) != vals[ours]:
            die("_Py_DebugOffsets.%s = %s but the headers give %s = %s" % (w[0], w[2], ours, vals[ours]))
        lines.append("\t{ %s, offsetof(struct py_offsets, %s), \"%s\" }," % (w[1], ours, w[0]))
        n += 1
    if n != len(DEBUG_OFFSETS_OVERLAP):
        die("only %d of %d _Py_DebugOffsets fields found" % (n, len(DEBUG_OFFSETS_OVERLAP)))
    lines += [
        "};",
        "",
        "const struct py_debug_check *py_debug_checks_for(int major, int minor, size_t *count)",
        "{",
        "\tif (major != 3 || minor != 13) {",
        "\t\t*count = 0;",
        "\t\treturn NULL;",
        "\t}",
        "\t*count = sizeof(py_debug_checks_313) / sizeof(py_debug_checks_313[0]);",
        "\treturn py_debug_checks_313;",
        "}",
        "",
    ]
    return lines


def render(results, fields, regen, debug_lines=None):
    lines = [
        "/* GENERATED FILE - DO NOT EDIT.",
        " *",
        " * Generated by scripts/gen-pyoffsets.py from the CPython headers (public and",
        " * internal, Py_BUILD_CORE) of %s." % ", ".join(p for _, p, _ in results),
        " * Regenerate with: %s" % regen,
        " */",
        "",
        "#include <stddef.h>",
        "",
        "#include \"pyoffsets.h\"",
        "",
        "static const struct py_offsets py_offsets_table[] = {",
    ]
    for v, patch, vals in results:
        lines.append("\t/* %s: generated from the headers of CPython %s */" % (vstr(v), patch))
        lines.append("\t{")
        for ctype, name in fields:
            if name == "major":
                val, note = str(v[0]), None
            elif name == "minor":
                val, note = str(v[1]), None
            elif name == "frame_model":
                val, note = FRAME_MODEL[v], None
            else:
                if name in vals:
                    val = str(vals[name])
                else:
                    val = "0xff" if ctype == "uint8_t" else "PYOFF_NONE"
                note = describe(name, v)
            s = ".%s = %s," % (name, val)
            if note:
                s = "%-40s /* %s */" % (s, note)
            lines.append("\t\t" + s)
        lines.append("\t},")
    lines += [
        "};",
        "",
        "const struct py_offsets *py_offsets_for(int major, int minor)",
        "{",
        "\tfor (size_t i = 0; i < sizeof(py_offsets_table) / sizeof(py_offsets_table[0]); i++)",
        "\t\tif (py_offsets_table[i].major == major && py_offsets_table[i].minor == minor)",
        "\t\t\treturn &py_offsets_table[i];",
        "\treturn NULL;",
        "}",
        "",
    ]
    if debug_lines:
        lines += debug_lines
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# DWARF cross-check with gdb

def gdb_eval(lib, exprs):
    cmd = ["gdb", "-nx", "-batch"]
    for e in exprs:
        cmd += ["-ex", e]
    p = subprocess.run(cmd + [lib], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True)
    return p.stdout


def dwarf_check(v, prefix, vals):
    lib = os.path.join(prefix, "lib", "libpython%d.%d.so.1.0" % v)
    if not os.path.exists(lib):
        die("%s not found" % lib)
    names, exprs = [], []
    for field in SPEC:
        r = rule_for(field, v)
        if r is None or r[0] in ("bit", "macro"):
            continue
        if r[0] == "member":
            e = "print/d (long)&((%s *)0)->%s" % (r[3], r[4])
        elif r[0] == "sizeof":
            e = "print/d sizeof(%s)" % r[3]
        else:
            e = "print/d (long)%s" % r[3]
        names.append(field)
        exprs.append("echo @@%s\\n" % field)
        exprs.append(e)
    bit_types = sorted({r[3] for r in (rule_for(f, v) for f in SPEC) if r and r[0] == "bit"})
    for t in bit_types:
        exprs.append("echo @@ptype %s\\n" % t)
        exprs.append("ptype /o %s" % t)
    out = gdb_eval(lib, exprs)
    got = {}
    cur = None
    ptype = {}
    for line in out.splitlines():
        if line.startswith("@@"):
            cur = line[2:]
            continue
        if cur and cur.startswith("ptype "):
            ptype.setdefault(cur[6:], []).append(line)
        elif cur is not None:
            m = re.match(r"\$\d+ = (-?\d+)$", line.strip())
            if m:
                got[cur] = int(m.group(1))
            else:
                got.setdefault(cur, line.strip())
    # bitfields from ptype /o: "/*     32: 2   |       4 */        unsigned int kind : 3;"
    bits = {}
    for t, lines in ptype.items():
        for line in lines:
            m = re.match(r"/\*\s+(\d+):\s*(\d+)\s*\|\s*\d+\s*\*/\s+.*?(\w+)\s*:\s*(\d+);", line)
            if m:
                bits[(t, m.group(3))] = (int(m.group(1)), int(m.group(2)), int(m.group(4)))
    for field in SPEC:
        r = rule_for(field, v)
        if r is None or r[0] != "bit":
            continue
        container, member = r[4].split(".", 1) if "." in r[4] else ("state", r[4])
        b = bits.get((r[3], member))
        if b is None:
            got[field] = "bitfield %s not in ptype output" % r[4]
            continue
        byte, bit, width = b
        pos = (byte - vals[BIT_CONTAINERS[(r[3], container)]]) * 8 + bit
        got[field] = pos if r[5] == "shift" else width
    bad = 0
    checked = [f for f in SPEC if rule_for(f, v) is not None and rule_for(f, v)[0] != "macro"]
    for field in checked:
        if got.get(field) != vals[field]:
            bad += 1
            sys.stderr.write("DWARF MISMATCH %s %s (%s): headers %s, DWARF %r\n" %
                             (vstr(v), field, describe(field, v), vals[field], got.get(field)))
    n = len(checked)
    print("%s: DWARF of %s: %d/%d values agree (#defines are not in DWARF)" % (vstr(v), lib, n - bad, n))
    return bad


# ---------------------------------------------------------------------------
# 3.13 _Py_DebugOffsets layout

# Fields of 3.13's _Py_DebugOffsets that duplicate a struct py_offsets field.
DEBUG_OFFSETS_OVERLAP = {
    "runtime_state.interpreters_head": "runtime_interpreters_head",
    "interpreter_state.next": "interp_next",
    "interpreter_state.threads_head": "interp_threads_head",
    "thread_state.next": "tstate_next",
    "thread_state.interp": "tstate_interp",
    "thread_state.current_frame": "tstate_frame",
    "thread_state.thread_id": "tstate_thread_id",
    "thread_state.native_thread_id": "tstate_native_thread_id",
    "interpreter_frame.previous": "frame_back",
    "interpreter_frame.executable": "frame_code",
    "interpreter_frame.instr_ptr": "frame_lasti",
    "interpreter_frame.owner": "frame_owner",
    "code_object.filename": "code_filename",
    "code_object.name": "code_name",
    "code_object.qualname": "code_qualname",
    "code_object.linetable": "code_linetable",
    "code_object.firstlineno": "code_firstlineno",
    "code_object.co_code_adaptive": "code_adaptive",
    "pyobject.ob_type": "object_type",
    "bytes_object.ob_size": "varobject_size",
    "bytes_object.ob_sval": "bytes_sval",
    "unicode_object.state": "unicode_state",
    "unicode_object.length": "unicode_length",
    "unicode_object.asciiobject_size": "unicode_ascii_size",
}


def debug_offsets_layout(prefix, cc, tmpdir):
    """3.13's _Py_DebugOffsets: the program's output lines, one per field
    ('NAME OFFSET VALUE', '@ ...' for the struct's own facts), from the
    headers and from libpython3.13's own _PyRuntime initializer (read by
    linking a program against it)."""
    v = (3, 13)
    inc = os.path.join(prefix, "include", "python3.13")
    text = open(os.path.join(inc, "internal", "pycore_runtime.h")).read()
    m = re.search(r"typedef struct _Py_DebugOffsets \{(.*?)\n\} _Py_DebugOffsets;", text, re.S)
    if not m:
        die("no _Py_DebugOffsets in %s" % inc)
    body = re.sub(r"//.*", "", m.group(1))
    paths = []
    group = None
    for line in body.splitlines():
        line = line.strip()
        if re.match(r"struct \w+\s*\{", line):
            group = []
            continue
        me = re.match(r"\}\s*(\w+);", line)
        if me:
            paths += ["%s.%s" % (me.group(1), f) for f in group]
            group = None
            continue
        mf = re.match(r"(?:char|uint64_t|size_t)\s+(\w+)(\[\d+\])?;", line)
        if mf:
            (group if group is not None else paths).append(mf.group(1))
    src = os.path.join(tmpdir, "dbg.c")
    exe = os.path.join(tmpdir, "dbg")
    prog = ["#define Py_BUILD_CORE 1", "#include <Python.h>"]
    prog += ["#include <%s>" % h for h in INCLUDES[v]]
    prog += ["#include <stdio.h>", "#include <stddef.h>",
             "int main(void) {",
             "\tconst _Py_DebugOffsets *d = &_PyRuntime.debug_offsets;",
             "\tprintf(\"@ debug_offsets %zu %zu\\n\", offsetof(_PyRuntimeState, debug_offsets), "
             "sizeof(_Py_DebugOffsets));",
             "\tprintf(\"@ Py_Version %lu\\n\", (unsigned long)Py_Version);"]
    for pth in paths:
        if pth == "cookie":
            prog.append("\tprintf(\"cookie %zu %.8s\\n\", offsetof(_Py_DebugOffsets, cookie), d->cookie);")
        else:
            prog.append("\tprintf(\"%s %%zu %%llu\\n\", offsetof(_Py_DebugOffsets, %s), "
                        "(unsigned long long)d->%s);" % (pth, pth, pth))
    prog += ["\treturn 0;", "}", ""]
    with open(src, "w") as f:
        f.write("\n".join(prog))
    lib = os.path.join(prefix, "lib")
    cmd = [cc, "-std=gnu11", "-w", "-I", inc, "-I", os.path.join(inc, "internal"), src, "-o", exe,
           "-L", lib, "-Wl,-rpath," + lib, "-lpython3.13"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if p.returncode != 0:
        die("compiling the _Py_DebugOffsets program failed:\n%s" % p.stdout)
    p = subprocess.run([exe], stdout=subprocess.PIPE, universal_newlines=True)
    if p.returncode != 0:
        die("%s exited with %d" % (exe, p.returncode))
    return p.stdout.splitlines()


def debug_offsets(prefix, cc, tmpdir):
    """Print the layout of 3.13's _Py_DebugOffsets (offset of each field from
    the start of _PyRuntime) and the values libpython3.13 holds there, and
    compare the fields that duplicate struct py_offsets fields with the
    values generated from the headers."""
    v = (3, 13)
    lib = os.path.join(prefix, "lib")
    out = debug_offsets_layout(prefix, cc, tmpdir)
    _, vals = generate_version(v, prefix, cc, tmpdir)
    bad = 0
    print("CPython %s (%s): _PyRuntime.debug_offsets" % (os.path.basename(prefix), lib))
    print("%-6s %-44s %-12s %s" % ("offset", "field", "value", "struct py_offsets"))
    for line in out:
        w = line.split()
        if w[0] == "@":
            if w[1] == "debug_offsets":
                print("# offsetof(_PyRuntimeState, debug_offsets) = %s, "
                      "sizeof(_Py_DebugOffsets) = %s" % (w[2], w[3]))
            else:
                print("# Py_Version = 0x%08x" % int(w[2]))
            continue
        name, off, val = w[0], int(w[1]), w[2]
        if name == "cookie":
            print("%6d %-44s %-12s" % (off, name, '"%s"' % val))
            continue
        val = int(val)
        shown = "0x%x" % val if name in ("version",) else str(val)
        ours = DEBUG_OFFSETS_OVERLAP.get(name)
        note = ""
        if ours:
            note = "%s = %s" % (ours, vals[ours])
            if vals[ours] != val:
                note += "  MISMATCH"
                bad += 1
        print("%6d %-44s %-12s %s" % (off, name, shown, note))
    if bad:
        die("%d _Py_DebugOffsets values differ from the generated table" % bad)


# ---------------------------------------------------------------------------

def parse_versions(arg):
    out = []
    for s in re.split(r"[,\s]+", arg.strip()):
        if not s:
            continue
        m = re.fullmatch(r"(\d+)\.(\d+)", s)
        if not m:
            die("bad version %r (want e.g. 3.11)" % s)
        v = (int(m.group(1)), int(m.group(2)))
        if v not in FRAME_MODEL:
            die("no rules for CPython %s (supported: %s)" %
                (s, ", ".join(vstr(x) for x in ALL_VERSIONS)))
        if v not in out:
            out.append(v)
    return sorted(out)


def main():
    ap = argparse.ArgumentParser(
        description="Generate src/pyoffsets_table.c from the headers of each supported "
                    "CPython version (see the top of this script).")
    ap.add_argument("--versions", help="comma-separated minor versions (default: all of %s)"
                    % ",".join(vstr(v) for v in ALL_VERSIONS))
    ap.add_argument("--pyenv-root", default=os.environ.get("PYENV_ROOT",
                                                           os.path.expanduser("~/.pyenv")))
    ap.add_argument("--cc", default=os.environ.get("CC", "gcc"))
    ap.add_argument("-o", "--output", default=OUTPUT, help="output file ('-': stdout)")
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 if the output file differs")
    ap.add_argument("--dwarf", action="store_true",
                    help="cross-check every value against libpython's DWARF with gdb")
    ap.add_argument("--dump", action="store_true",
                    help="print every value (also the proposed fields not in the header) "
                         "as a table instead of writing the C file")
    ap.add_argument("--debug-offsets", action="store_true",
                    help="print 3.13's _Py_DebugOffsets layout and values, then exit")
    args = ap.parse_args()

    versions = parse_versions(args.versions) if args.versions else list(ALL_VERSIONS)
    if not shutil.which(args.cc):
        die("C compiler %r not found" % args.cc)

    with tempfile.TemporaryDirectory(prefix="gen-pyoffsets.") as tmp:
        if args.debug_offsets:
            prefix = find_install(args.pyenv_root, (3, 13))
            if not prefix:
                die("CPython 3.13 not found under %s/versions" % args.pyenv_root)
            debug_offsets(prefix, args.cc, tmp)
            return 0

        fields = header_fields()
        names = [n for _, n in fields if n not in ("major", "minor", "frame_model")]
        unknown = sorted(set(names) - set(SPEC))
        missing_rules = sorted(set(SPEC) - set(names) - OPTIONAL)
        if unknown or missing_rules:
            die("src/pyoffsets.h and this script disagree on the fields: header only: %s; "
                "script only: %s" % (unknown or "-", missing_rules or "-"))

        prefixes = {}
        missing = []
        for v in versions:
            p = find_install(args.pyenv_root, v)
            if p is None:
                missing.append(vstr(v))
            prefixes[v] = p
        if missing:
            die("CPython %s not found under %s/versions (install it, or pass --versions "
                "to generate a table without it)" % (", ".join(missing), args.pyenv_root))

        results = []
        bad = 0
        debug_lines = None
        for v in versions:
            patch, vals = generate_version(v, prefixes[v], args.cc, tmp)
            results.append((v, patch, vals))
            if v == (3, 13):
                debug_lines = render_debug_checks(debug_offsets_layout(prefixes[v], args.cc, tmp), vals)
            if args.dwarf:
                if not shutil.which("gdb"):
                    die("--dwarf needs gdb")
                bad += dwarf_check(v, prefixes[v], vals)

    if args.dump:
        print("%-26s %s" % ("field", " ".join("%8s" % vstr(v) for v, _, _ in results)))
        for field in SPEC:
            row = []
            for v, _, vals in results:
                row.append("%8s" % (vals[field] if field in vals else "-"))
            print("%-26s %s%s" % (field, " ".join(row),
                                  "   (proposed)" if field not in names else ""))
        return 1 if bad else 0
    regen = "scripts/gen-pyoffsets.py"
    if versions != ALL_VERSIONS:
        regen += " --versions " + ",".join(vstr(v) for v in versions)
    text = render(results, fields, regen, debug_lines)
    if args.check:
        try:
            old = open(args.output).read()
        except OSError:
            old = None
        if old != text:
            sys.stderr.write("gen-pyoffsets: %s is not up to date\n" % args.output)
            return 1
        print("%s is up to date" % args.output)
    elif args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w") as f:
            f.write(text)
        print("wrote %s (%s)" % (os.path.relpath(args.output),
                                 ", ".join(p for _, p, _ in results)))
    if bad:
        sys.stderr.write("gen-pyoffsets: %d DWARF mismatches\n" % bad)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
