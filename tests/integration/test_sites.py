"""Every probe site tmtrace chooses, in every supported build (the libpython
of each pyenv 3.8-3.13 and Debian's static python3.11), checked against
independent tools: objdump's disassembly, readelf's program headers and its
reading of .eh_frame, nm's symbols, the bytes of the file, and the rules of
the kernel's arch/x86/kernel/uprobes.c.

A uprobe at an address that is not an instruction boundary corrupts the
target's code; a wrong operand records wrong sizes; a uretprobe where the
stack pointer has moved takes something else for the return address. This
re-derives, with its own simple logic over objdump's text, what tmtrace
derived with capstone and libdw, and demands they agree. Per site:

- boundary: the address starts an instruction in objdump's disassembly of
  the whole file, and the file offset the uprobe is attached at is that
  address's offset in an executable PT_LOAD segment (readelf -l): the site
  is in the CPython binary itself, never in libc (tmtrace probes no other
  file: `tmtrace sites libc.so.6` must refuse);
- emulation: the kernel accepts a uprobe there at all (no ES/CS/SS/DS or
  LOCK prefix, not an opcode uprobes refuse), and tmtrace's "emulated" is
  exactly what kernel 6.18 does with those bytes: branch_setup_xol_ops
  emulates jmp rel8/rel32, call rel32, jcc rel8/rel32 (none with a 0x66
  prefix), any `prefix* 0x90` and the 1- to 8-byte nops of x86_nops[];
  push_setup_xol_ops emulates push %reg (0x50-0x57, or 0x41 0x50-0x57);
  everything else is single-stepped out of line (a multi-byte nop tmtrace
  calls single-stepped is no disagreement: kernels without the x86_nops[]
  comparison step it);
- function sites (out-of-line allocators, hooks, Track/Untrack, the code
  deallocator, PyMem_SetAllocator, allocate_from_new_pool): the function
  starts where readelf's .eh_frame says a function (FDE) starts, at the
  symbol of that name when the binary has one; every instruction from the
  entry to the site is straight-line (no branch, call or return) and no
  direct branch anywhere in the file lands after the entry up to the site,
  so every call of the function and nothing else passes the site; and the
  operand registers tmtrace reads hold, at the site, the arguments the
  function was called with (%rsi/%rdx; %rdi for the code deallocator and,
  as the domain, for Track/Untrack), by a forward scan of that straight
  line that treats every instruction as writing its last register operand
  (and the implicit ones of cltq, mul, rep stos...) unless it is a compare,
  test, nop or push, and follows only whole-register mov and xor;
- uretprobes: readelf's CFA is %rsp+8 at the site ([rsp] is the return
  address), and %rsp+sp_delta at the entry site it completes; at function
  sites the forward scan also sees no push, pop or other %rsp write;
- inlined copies (PGO builds): a guard site follows `cmp $<default
  function>,%reg`, and the guard's other path, which calls through the
  allocator pointer, puts in %rsi/%rdx what tmtrace names; a result site
  follows, on a straight line that leaves %rax alone, a direct call of
  libc's function of that kind, every other branch joining that line being
  the return of the hooked path's indirect call (where BPF, whose guard
  failed, awaits no result), and readelf's CFA offsets at the guard and the
  result differ by sp_delta; objdump's own count of guards (a compare with
  a default allocator's address before a branch whose other side calls
  through the compared register) equals tmtrace's guard sites plus the
  copies it reports as not probed; where a build has
  no guard, objdump must find no comparison with a default allocator's
  address either (indirect-call promotion needs PGO), and the test says so;
- object-creation sites: a conditional branch one of whose successors runs
  (through jumps) into the re-stamp with the object in %rdi taken from the
  register tmtrace names: a direct call of _PyTraceMalloc_NewReference (by
  symbol, PLT stub, or on a stripped binary the direct call in the
  exported _Py_NewReference), or on 3.13 the reference tracer called
  through the register the branch tests, inside _Py_NewReference,
  _Py_NewReferenceNoTotal or _Py_ResurrectReference.

Anything the simple model cannot decide is a failure that says so, not a
pass. Known limit: jump-table (indirect) branch targets are not resolved,
so "no branch enters" is proven for direct branches only."""

import bisect
import os
import re
import shutil
import subprocess
import tempfile

from harness import Failure, Skip, TMTRACE, build, build_python, check
from test_threads import per_build

GPR64 = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"] + ["r%d" % i for i in range(8, 16)]
ALIASES = {r: r for r in GPR64}
for _r, _e, _w, _b in (("rax", "eax", "ax", "al"), ("rbx", "ebx", "bx", "bl"), ("rcx", "ecx", "cx", "cl"),
                       ("rdx", "edx", "dx", "dl"), ("rsi", "esi", "si", "sil"), ("rdi", "edi", "di", "dil"),
                       ("rbp", "ebp", "bp", "bpl"), ("rsp", "esp", "sp", "spl")):
    ALIASES.update({_e: _r, _w: _r, _b: _r})
for _r, _h in (("rax", "ah"), ("rbx", "bh"), ("rcx", "ch"), ("rdx", "dh")):
    ALIASES[_h] = _r
for _i in range(8, 16):
    ALIASES.update({"r%dd" % _i: "r%d" % _i, "r%dw" % _i: "r%d" % _i, "r%db" % _i: "r%d" % _i})
FULL32 = {"e" + r[1:]: r for r in GPR64[:8]}
FULL32.update({"r%dd" % i: "r%d" % i for i in range(8, 16)})

PREFIX_WORDS = {"bnd", "notrack", "lock", "rep", "repz", "repnz", "repe", "repne", "data16", "addr32",
                "cs", "ds", "es", "ss", "fs", "gs"}
# Instructions that write registers their operands do not name.
IMPLICIT_WRITES = {"cltq": ["rax"], "cwtl": ["rax"], "cbtw": ["rax"], "cqto": ["rdx"], "cltd": ["rdx"],
                   "cwtd": ["rdx"], "cpuid": ["rax", "rbx", "rcx", "rdx"], "rdtsc": ["rax", "rdx"],
                   "rdtscp": ["rax", "rcx", "rdx"], "syscall": ["rax", "rcx", "r11"], "xgetbv": ["rax", "rdx"],
                   "lahf": ["rax"], "leave": ["rbp", "rsp"], "leaveq": ["rbp", "rsp"]}
STRING_OPS = re.compile(r"^(stos|movs|lods|scas|cmps)[bwlq]?$")
# Instructions that write no general register (push moves %rsp, counted apart).
READ_ONLY = re.compile(r"^(cmp[bwlq]?|test[bwlq]?|bt[bwlq]?|v?u?comis[sd]|v?ptest|nop[wlq]?|endbr64|prefetch\w*"
                       r"|push[wlq]?|cmc|clc|stc|cld|std|pause|[lsm]fence|vzeroupper)$")
# with an AT&T size suffix: mulq -> mul
SUFFIXED = {"mul", "imul", "div", "idiv", "xchg", "xadd", "cmpxchg", "xor"}

# x86_nops[] of a 64-bit kernel (arch/x86/include/asm/nops.h), 1 to ASM_NOP_MAX = 8
# bytes; longer ones (cs-prefixed) are refused before this is looked at.
KERNEL_NOPS = {bytes.fromhex(h) for h in ("90", "6690", "0f1f00", "0f1f4000", "0f1f440000", "660f1f440000",
                                          "0f1f8000000000", "0f1f840000000000")}
LEGACY_PREFIXES = {0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x66, 0x67, 0xf0, 0xf2, 0xf3}
BAD_PREFIXES = {0x26: "es", 0x2e: "cs", 0x36: "ss", 0x3e: "ds", 0xf0: "lock"}
# opcodes good_insns_64 refuses (0x0f itself is good, so two-byte opcodes pass)
BAD_OPCODES = {0x06, 0x07, 0x0e, 0x16, 0x17, 0x1e, 0x1f, 0x27, 0x2f, 0x37, 0x3f, 0x60, 0x61, 0x62, 0x6c, 0x6d,
               0x6e, 0x6f, 0x82, 0x9a, 0xcc, 0xcd, 0xce, 0xcf, 0xd4, 0xd5, 0xd6, 0xe4, 0xe5, 0xe6, 0xe7, 0xea,
               0xec, 0xed, 0xee, 0xef, 0xf1, 0xf4, 0xfa, 0xfb}


def kernel_verdict(code):
    """What arch_uprobe_analyze_insn (kernel 6.18) does with one instruction's
    bytes: "emulated", "single-stepped" or "refused: why"."""
    i, prefixes = 0, []
    while i < len(code) and code[i] in LEGACY_PREFIXES:
        prefixes.append(code[i])
        i += 1
    bad = [BAD_PREFIXES[p] for p in prefixes if p in BAD_PREFIXES]
    if bad:
        return "refused: %s prefix (is_prefix_bad)" % bad[0]
    rex = code[i] if i < len(code) and 0x40 <= code[i] <= 0x4f else None
    if rex is not None:
        i += 1
    if i >= len(code):
        return "refused: no opcode"
    op = code[i]
    if op in BAD_OPCODES:
        return "refused: opcode 0x%02x is not in good_insns_64" % op
    # branch_setup_xol_ops: `prefix* 0x90` in every kernel tmtrace supports;
    # the multi-byte x86_nops[] only where branch_setup_xol_ops compares
    # with them (the 6.18 source, the kernel here)
    if op == 0x90:
        return "emulated"
    if bytes(code) in KERNEL_NOPS:
        return "emulated (x86_nops)"
    cond = 0x70 <= op <= 0x7f or (op == 0x0f and i + 1 < len(code) and 0x80 <= code[i + 1] <= 0x8f)
    if op in (0xeb, 0xe9, 0xe8) or cond:
        return "single-stepped" if 0x66 in prefixes else "emulated"
    # push_setup_xol_ops
    if 0x50 <= op <= 0x57 and (len(code) == 1 or (len(code) == 2 and code[0] == 0x41)):
        return "emulated"
    return "single-stepped"


# --- the independent tools' views of a binary -----------------------------


def run(*argv):
    return subprocess.run(list(argv), capture_output=True, text=True, check=True).stdout


def run_all(*commands):
    """Runs the commands at once (2 cores: objdump and tmtrace overlap);
    their outputs, in order."""
    procs = []
    for argv in commands:
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        procs.append((argv, subprocess.Popen(list(argv), stdout=out, stderr=err, stdin=subprocess.DEVNULL),
                      out, err))
    texts = []
    for argv, proc, out, err in procs:
        code = proc.wait()
        out.seek(0)
        err.seek(0)
        if code:
            raise Failure("%s exited with %d: %s" % (" ".join(argv), code, err.read().decode()[-300:]))
        texts.append(out.read().decode(errors="replace"))
    return texts


def runtime_of(build_name):
    """(the file holding CPython's runtime, libc) as the build's python maps
    them: libpython for a shared build, the executable for a static one."""
    python = build_python(build_name)
    script = ("import sys\n"
              "paths = [l.split()[-1] for l in open('/proc/self/maps') if len(l.split()) > 5]\n"
              "lib = [p for p in paths if '/libpython3' in p]\n"
              "libc = [p for p in paths if p.rsplit('/', 1)[-1].startswith(('libc.so', 'libc-'))]\n"
              "print(lib[0] if lib else sys.executable)\n"
              "print(libc[0] if libc else '-')\n")
    out = subprocess.run([python, "-I", "-c", script], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    lines = out.stdout.split()
    if out.returncode or len(lines) != 2:
        raise Failure("%s cannot tell where its runtime is: %s" % (python, out.stderr.strip()[-300:]))
    return os.path.realpath(lines[0]), (None if lines[1] == "-" else lines[1])


def sites_of(out):
    """The rows of `tmtrace sites` and its comment lines."""
    rows, notes = [], []
    for line in out.splitlines():
        if line.startswith("#"):
            notes.append(line)
            continue
        f = line.split("\t")
        rows.append({"site": int(f[0]), "addr": int(f[1], 16), "offset": int(f[2], 16), "role": f[3],
                     "kind": f[4], "family": f[5], "probe": f[6], "guard_reg": f[7], "guard_value": int(f[8], 16),
                     "a": f[9], "b": f[10], "result": f[11], "entry": int(f[12]), "sp_delta": int(f[13]),
                     "emulated": f[14] == "yes", "insn": f[15], "what": f[16]})
    return rows, notes


class Disassembly:
    """objdump -d of the whole file: every instruction (mnemonic without
    prefixes, operands, whether a rep prefix came first), every direct
    branch target, every rip-relative lea's target, the PLT stubs by name."""

    LINE = re.compile(r"^ +([0-9a-f]+):\t([^\n]*)", re.M)
    BRANCH = re.compile(r"^ +([0-9a-f]+):\t(?:(?:bnd|notrack|cs|ds) )*(?:j|call|loop|xbegin)\S*\s+([0-9a-f]+) <",
                        re.M)
    # a compare and the conditional branch right after it
    CMP_JCC = re.compile(r"^ +([0-9a-f]+):\tcmp\S*\s+([^\n#]*?)\s*\n +([0-9a-f]+):\tj(?!mp)\S*\s+([0-9a-f]+) <",
                         re.M)
    LEA = re.compile(r"^ +([0-9a-f]+):\tlea\S*\s+\S*\(%rip\),%(\w+)\s+# ([0-9a-f]+)", re.M)
    PLT = re.compile(r"^([0-9a-f]+) <([^>@]+)@plt>:$", re.M)
    DIRECT = re.compile(r"^([0-9a-f]+) <")

    def __init__(self, text):
        self._lines = {int(a, 16): rest for a, rest in self.LINE.findall(text)}
        self._decoded = {}
        self.order = sorted(self._lines)
        self.sources = {}  # direct branch target -> the branches
        for a, t in self.BRANCH.findall(text):
            self.sources.setdefault(int(t, 16), []).append(int(a, 16))
        self.targets = sorted(self.sources)
        self.compares = [(int(a, 16), ops, int(j, 16), int(t, 16)) for a, ops, j, t in self.CMP_JCC.findall(text)]
        self.lea = {int(a, 16): (int(t, 16), reg_of(r)) for a, r, t in self.LEA.findall(text)}
        self.plt = {}
        for m in self.PLT.finditer(text):
            self.plt.setdefault(m.group(2), set()).add(int(m.group(1), 16))

    def __contains__(self, addr):
        return addr in self._lines

    def insn(self, addr):
        """(mnemonic, operands without objdump's comment, rep prefix?)"""
        if addr not in self._decoded:
            mnem, _, rest = self._lines[addr].partition(" ")
            ops = rest.partition("#")[0].strip()
            rep = False
            while mnem in PREFIX_WORDS and ops:
                rep |= mnem.startswith("rep")
                parts = ops.split(None, 1)
                mnem, ops = parts[0], parts[1] if len(parts) > 1 else ""
            self._decoded[addr] = (mnem, ops, rep)
        return self._decoded[addr]

    def next(self, addr):
        i = bisect.bisect_right(self.order, addr)
        return self.order[i] if i < len(self.order) else None

    def prev(self, addr):
        i = bisect.bisect_left(self.order, addr)
        return self.order[i - 1] if i > 0 else None

    def entered_between(self, lo, hi):
        """A direct branch target in (lo, hi]."""
        i = bisect.bisect_right(self.targets, lo)
        return self.targets[i] if i < len(self.targets) and self.targets[i] <= hi else None


def load_segments(binary):
    """[(vaddr, memsz, offset, filesz, executable)] of the PT_LOAD headers."""
    segs = []
    for m in re.finditer(r"^\s+LOAD\s+0x([0-9a-f]+) 0x([0-9a-f]+) 0x[0-9a-f]+ 0x([0-9a-f]+) 0x([0-9a-f]+) "
                         r"([RWE ]+?)\s+0x", run("readelf", "-lW", binary), re.M):
        segs.append((int(m.group(2), 16), int(m.group(4), 16), int(m.group(1), 16), int(m.group(3), 16),
                     "E" in m.group(5)))
    return segs


def file_offset(segs, addr):
    for vaddr, memsz, offset, filesz, execu in segs:
        if vaddr <= addr < vaddr + filesz:
            return offset + addr - vaddr, execu
    return None, False


def symbols(binary):
    """address -> names (nm's .symtab, or .dynsym for a stripped file)."""
    out = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True).stdout
    if not out.strip():
        out = subprocess.run(["nm", "-D", "--defined-only", binary], capture_output=True, text=True).stdout
    syms = {}
    for m in re.finditer(r"^([0-9a-f]+) [tTwWiI] (\S+)$", out, re.M):
        syms.setdefault(int(m.group(1), 16), set()).add(m.group(2).split("@")[0])
    return syms


def cfa_table(text):
    """(sorted FDE starts, [(start, end, [(loc, cfa rule)])]) from readelf
    --debug-dump=frames-interp."""
    fdes, cies = [], {}
    for block in text.split("\n\n"):
        block = block.strip("\n")
        rows = [(int(r.group(1), 16), r.group(2)) for r in
                re.finditer(r"^([0-9a-f]{16}) (\S+)", block, re.M)]
        c = re.match(r"([0-9a-f]{8}) \S+ \S+ CIE", block)
        if c:
            cies[c.group(1)] = rows[0][1] if rows else None
            continue
        m = re.search(r"FDE cie=(\S+) pc=([0-9a-f]+)\.\.([0-9a-f]+)", block)
        if not m:
            continue
        start = int(m.group(2), 16)
        if not rows or rows[0][0] > start:  # no row yet: the CIE's initial rule
            rows.insert(0, (start, cies.get(m.group(1))))
        fdes.append((start, int(m.group(3), 16), rows))
    fdes.sort()
    return [f[0] for f in fdes], fdes


def fde_of(table, addr):
    starts, fdes = table
    i = bisect.bisect_right(starts, addr) - 1
    if i < 0 or not (fdes[i][0] <= addr < fdes[i][1]):
        return None
    return fdes[i]


def cfa_at(table, addr):
    fde = fde_of(table, addr)
    if fde is None:
        return None
    rule = None
    for loc, cfa in fde[2]:
        if loc <= addr:
            rule = cfa
    m = re.fullmatch(r"rsp\+(\d+)", rule or "")
    return int(m.group(1)) if m else None


# --- register provenance over objdump's text ----------------------------


def reg_of(text):
    return ALIASES.get(text.strip().lstrip("%"))


def operands(ops):
    return [p.strip() for p in re.split(r",(?![^(]*\))", ops)] if ops else []


def is_branch(mnem):
    return mnem.startswith(("j", "call", "ret", "loop", "xbegin", "ud", "hlt", "int", "iret", "sys"))


def step(prov, mnem, ops, rep, sp):
    """Applies one non-branch instruction to `prov` (register -> where its
    value came from: ("reg", r) the value r had at the start, ("reg32", r)
    its low half zero-extended, ("const", v), ("mem", r, off), ("?",)).
    Returns the new stack-pointer offset from the start (None: unknown)."""
    parts = operands(ops)
    base = mnem[:-1] if mnem[-1:] in ("b", "w", "l", "q") and mnem[:-1] in SUFFIXED else mnem
    if READ_ONLY.match(mnem):
        return sp - 8 if mnem.startswith("push") and sp is not None else sp
    if mnem.startswith("pop"):
        if parts and reg_of(parts[0]):
            prov[reg_of(parts[0])] = ("?",)
        return sp + 8 if sp is not None else None
    written = list(IMPLICIT_WRITES.get(mnem, []))
    if rep or STRING_OPS.match(mnem):
        written += ["rdi", "rsi", "rcx", "rax"]
    if base in ("mul", "div", "idiv") or (base == "imul" and len(parts) == 1):
        written += ["rax", "rdx"]
    if base in ("xchg", "xadd", "cmpxchg"):
        written += [reg_of(p) for p in parts if reg_of(p)] + (["rax"] if base == "cmpxchg" else [])
    dst = reg_of(parts[-1]) if parts else None
    if dst == "rsp":
        m = re.fullmatch(r"\$(0x[0-9a-f]+)", parts[0]) if len(parts) == 2 else None
        if mnem == "subq" and m and sp is not None:
            return sp - int(m.group(1), 16)
        if mnem == "addq" and m and sp is not None:
            return sp + int(m.group(1), 16)
        return None
    if "rsp" in written:
        sp = None
    if mnem in ("movq", "movl") and len(parts) == 2 and dst:
        src, full = parts[0], parts[1].lstrip("%") in GPR64 or parts[1].lstrip("%") in FULL32
        if not full:
            prov[dst] = ("?",)
        elif src.startswith("$"):
            prov[dst] = ("const", int(src[1:], 16) & (0xffffffff if mnem == "movl" else (1 << 64) - 1))
        elif reg_of(src):
            p = prov[reg_of(src)]
            prov[dst] = p if mnem == "movq" else (("reg32", p[1]) if p[0] in ("reg", "reg32") else
                                                  p if p[0] == "const" else ("?",))
        else:
            m = re.fullmatch(r"(-?0x[0-9a-f]+)?\(%(\w+)\)", src)
            b = prov.get(reg_of(m.group(2))) if m else None
            prov[dst] = ("mem", b[1], int(m.group(1) or "0", 16)) if mnem == "movq" and b and b[0] == "reg" \
                else ("?",)
    elif base == "xor" and len(parts) == 2 and parts[0] == parts[1] and dst and \
            (parts[1].lstrip("%") in GPR64 or parts[1].lstrip("%") in FULL32):
        prov[dst] = ("const", 0)
    elif dst:
        prov[dst] = ("?",)
    for r in written:
        prov[r] = ("?",)
    return sp


def operand_text(p):
    if p[0] == "reg":
        return "reg:" + p[1]
    if p[0] == "reg32":
        return "reg32:" + p[1]
    if p[0] == "mem":
        return "mem:%s%+d" % (p[1], p[2])
    if p[0] == "const":
        v = p[1] - (1 << 64) if p[1] >= 1 << 63 else p[1]
        return "const:%d" % v
    return None


def forward(dis, start, guard_reg=None, targets=None, tracer_reg=None, limit=24):
    """Runs straight on from `start` (following direct jmps) with registers
    named by their values at `start`. Stops at, and returns the provenance
    there:
    - guard_reg: the first `call/jmp *%reg` holding guard_reg's value;
    - targets: the first direct call/jmp to one of `targets`;
    - tracer_reg: the first `call/jmp *%reg` holding tracer_reg's value.
    None when this simple model cannot tell."""
    prov = {r: ("reg", r) for r in GPR64}
    addr, jumps, sp = start, 0, 0
    for _ in range(limit):
        if addr not in dis:
            return None
        mnem, ops, rep = dis.insn(addr)
        if mnem.startswith(("call", "jmp")):
            d = Disassembly.DIRECT.match(ops)
            m = re.fullmatch(r"\*%(\w+)", ops)
            if targets is not None and d and int(d.group(1), 16) in targets:
                return prov
            want = guard_reg or tracer_reg
            if want and m and prov.get(reg_of(m.group(1))) == ("reg", want):
                return prov
            if mnem.startswith("jmp") and d and jumps < 4:
                addr, jumps = int(d.group(1), 16), jumps + 1
                continue
            return None
        if is_branch(mnem):
            return None
        sp = step(prov, mnem, ops, rep, sp)
        if sp != 0:
            # once %rsp moved, its slots are not the ones named at the start
            prov["rsp"] = ("?",)
            for r, p in prov.items():
                if p[0] == "mem" and p[1] == "rsp":
                    prov[r] = ("?",)
        addr = dis.next(addr)
    return None


# --- the audit --------------------------------------------------------------

FUNCTION_ROLES = {"entry", "predict", "free", "newpool", "track", "untrack", "code-dealloc", "set-allocator"}
# the argument each operand must still be, by role: a, b, and what BPF reads directly
ARGS = {"track": ("rsi", "rdx", "rdi"), "untrack": ("rsi", None, "rdi"), "code-dealloc": ("rdi", None, None),
        "set-allocator": (None, None, None), "newpool": (None, None, None)}
NEEDS = {"malloc": (True, False), "calloc": (True, True), "realloc": (True, True), "free": (True, False)}
NEWREF_FUNCTIONS_313 = {"_Py_NewReference", "_Py_NewReferenceNoTotal", "_Py_ResurrectReference"}
# 3.8-3.12's out-of-line creation functions, which tmtrace may probe at
# their calls instead of inside
CREATION_FUNCTIONS = ("_Py_NewReference", "_Py_NewReferenceNoTotal")
# functions that only give a first reference to what they just allocated
# (CPython's source, 3.8-3.12): their creations need no probe
FRESH_CREATORS = {"_PyObject_New", "_PyObject_NewVar", "_PyObject_GC_New", "_PyObject_GC_NewVar",
                  "PyType_GenericAlloc", "_PyType_AllocNoTrack", "PyUnicode_New", "_PyLong_New",
                  "PyBytes_FromStringAndSize", "PyBytes_FromString", "_PyBytes_FromSize"}
# calls whose result that call allocated, by name, which tracemalloc traced
# with the traceback of the moment (a realloc's too, moved or not), or NULL
# (a NULL given a first reference crashes right after): an object from one
# of them on every path to a creation needs no probe there
ALLOCATING = ("PyObject_Malloc", "PyObject_Calloc", "PyObject_Realloc", "_PyObject_GC_Resize", "PyMem_Malloc",
              "PyMem_Calloc", "PyMem_Realloc", "PyMem_RawMalloc", "PyMem_RawCalloc", "PyMem_RawRealloc", "malloc",
              "calloc", "realloc", "PyErr_NoMemory", "_PyErr_NoMemory", "PyErr_Format", "_PyErr_Format")
CALLEE_SAVED = {"rbx", "rbp", "r12", "r13", "r14", "r15"}
# instructions that write no register but their last operand (AT&T)
PLAIN_WRITES = re.compile(r"(mov[bwlq]?|movz[bw][wlq]|movs[bwl][wlq]|lea[lq]?|add[bwlq]?|sub[bwlq]?|and[bwlq]?|or[bwlq]?"
                          r"|xor[bwlq]?|test[bwlq]?|cmp[bwlq]?|nop[wl]?)")
# ... and the arithmetic that also writes nothing but its last operand
LAST_WRITES = re.compile(r"(movabs[bwlq]?|movslq|(adc|sbb|sar|shl|shr|sal|rol|ror|neg|not|inc|dec|imul)[bwlq]?"
                         r"|cmov\w+|set\w+|bswap[lq]?)")


class Audit:
    def __init__(self, binary, minor, mode=()):
        self.binary, self.minor = binary, minor
        sites, dis, frames = run_all((TMTRACE, "sites") + tuple(mode) + (binary,),
                                     ("objdump", "-d", "--no-show-raw-insn", "-M", "suffix", binary),
                                     ("readelf", "--debug-dump=frames-interp", binary))
        self.rows, self.notes = sites_of(sites)
        self.dis = Disassembly(dis)
        self.cfa = cfa_table(frames)
        self.segs = load_segments(binary)
        self.syms = symbols(binary)
        self.names = {}  # name -> addresses
        for a, names in self.syms.items():
            for n in names:
                self.names.setdefault(n, set()).add(a)
        self.raw = open(binary, "rb").read()
        self.problems = []
        self.count = {"sites": len(self.rows), "emulated": 0, "single-stepped": 0, "uretprobes": 0,
                      "result sites": 0, "function sites": 0, "args": 0, "guards": 0, "guard operands": 0,
                      "newref": 0}

    def problem(self, r, text):
        self.problems.append("site %d at 0x%x (%s, %s): %s" % (r["site"], r["addr"], r["insn"], r["what"], text))

    def insn_bytes(self, addr):
        nxt = self.dis.next(addr)
        off, _ = file_offset(self.segs, addr)
        if nxt is None or off is None:
            return None
        return self.raw[off:off + (nxt - addr)]

    def run(self):
        for r in self.rows:
            if self.boundary(r):
                self.emulation(r)
                self.by_role(r)
        self.guard_census()
        self.creation_census()
        self.allocated_census()
        return self

    def boundary(self, r):
        a = r["addr"]
        off, execu = file_offset(self.segs, a)
        if off is None or not execu:
            self.problem(r, "not in an executable PT_LOAD segment of %s" % self.binary)
            return False
        if off != r["offset"]:
            self.problem(r, "the uprobe goes to file offset 0x%x, readelf maps 0x%x to 0x%x"
                         % (r["offset"], a, off))
            return False
        if a not in self.dis:
            self.problem(r, "not an instruction boundary in objdump's disassembly")
            return False
        return True

    def emulation(self, r):
        code = self.insn_bytes(r["addr"])
        verdict = kernel_verdict(code) if code else "refused: no bytes"
        if verdict.startswith("refused"):
            self.problem(r, "the kernel refuses a uprobe on %s: %s" % (code.hex() if code else "-", verdict))
        elif verdict == "emulated (x86_nops)" and not r["emulated"]:
            # single-stepped before 6.18: tmtrace's claim holds on every kernel
            self.count["nops emulated only by newer kernels"] = self.count.get("nops emulated only by newer "
                                                                               "kernels", 0) + 1
        elif verdict.startswith("emulated") != r["emulated"]:
            self.problem(r, "bytes %s are %s by the kernel, tmtrace says emulated=%s"
                         % (code.hex(), verdict, r["emulated"]))
        self.count["emulated" if verdict.startswith("emulated") else "single-stepped"] += 1

    def by_role(self, r):
        if r["probe"] == "uretprobe":
            self.uretprobe(r)
        elif r["role"] == "return":
            self.result_site(r)
        if r["role"] == "newref":
            self.newref(r)
        elif r["guard_reg"] != "-":
            self.guard(r)
        elif r["role"] in FUNCTION_ROLES or (r["probe"] == "uretprobe" and self.rows[r["entry"]]["guard_reg"] == "-"):
            self.function_site(r)

    # out-of-line functions -------------------------------------------------

    def function_entry(self, r):
        m = re.fullmatch(r"(.*)\+0x([0-9a-f]+)", r["what"])
        name, off = (m.group(1), int(m.group(2), 16)) if m else (r["what"], 0)
        return name, r["addr"] - off

    def function_site(self, r):
        name, entry = self.function_entry(r)
        self.count["function sites"] += 1
        fde = fde_of(self.cfa, r["addr"])
        if fde is None or fde[0] != entry:
            self.problem(r, "readelf's .eh_frame puts the function containing the site at %s, tmtrace at 0x%x"
                         % ("0x%x" % fde[0] if fde else "none", entry))
            return
        if not name.startswith("<") and name in self.names and entry not in self.names[name]:
            self.problem(r, "nm puts %s at %s, tmtrace at 0x%x"
                         % (name, ", ".join("0x%x" % x for x in sorted(self.names[name])), entry))
        elif not name.startswith("<") and len(self.syms) > 1000 and name not in self.names:
            self.problem(r, "nm knows no function %s in a binary with a symbol table" % name)
        if r["addr"] > entry:
            t = self.dis.entered_between(entry, r["addr"])
            if t is not None:
                self.problem(r, "a direct branch lands at 0x%x, between the entry 0x%x and the site" % (t, entry))
        prov = {x: ("reg", x) for x in GPR64}
        addr, sp = entry, 0
        while addr != r["addr"]:
            if addr is None or addr > r["addr"] or addr not in self.dis:
                self.problem(r, "no straight line of instructions from the entry 0x%x" % entry)
                return
            mnem, ops, rep = self.dis.insn(addr)
            if is_branch(mnem):
                self.problem(r, "%s %s at 0x%x: a branch between the entry and the site" % (mnem, ops, addr))
                return
            sp = step(prov, mnem, ops, rep, sp)
            addr = self.dis.next(addr)
        kind = r["kind"] if r["role"] not in ARGS else None
        if kind:
            want_a, want_b, implicit = ("rsi" if NEEDS[kind][0] else None, "rdx" if NEEDS[kind][1] else None, None)
        else:
            want_a, want_b, implicit = ARGS[r["role"]]
        if r["probe"] == "uretprobe":
            want_a = want_b = None
        for field, want in (("a", want_a), ("b", want_b)):
            got = r[field]
            if want is None:
                if got != "-":
                    self.problem(r, "operand %s is %s where the role reads none" % (field, got))
                continue
            m = re.fullmatch(r"reg(32)?:(\w+)", got)
            held = prov.get(m.group(2)) if m else None
            if not m or held not in (("reg", want), ("reg32", want) if m.group(1) else None):
                self.problem(r, "operand %s is %s, but at the site that register holds %s, not the argument "
                             "%%%s (forward scan from 0x%x)" % (field, got, held, want, entry))
                continue
            self.count["args"] += 1
        if implicit and prov[implicit] not in (("reg", implicit), ("reg32", implicit)):
            self.problem(r, "BPF reads the domain from %%%s, which holds %s at the site"
                         % (implicit, prov[implicit]))
        if r["probe"] == "uretprobe" and sp != 0:
            self.problem(r, "the stack pointer moved by %s between the entry and the uretprobe" % sp)

    # uretprobes and results --------------------------------------------------

    def uretprobe(self, r):
        self.count["uretprobes"] += 1
        entry = self.rows[r["entry"]]
        here, there = cfa_at(self.cfa, r["addr"]), cfa_at(self.cfa, entry["addr"])
        if here != 8 or there != r["sp_delta"]:
            self.problem(r, "uretprobe: readelf's CFA is rsp+%r here (must be 8: [rsp] is the return address) "
                         "and rsp+%r at its entry site 0x%x, tmtrace sp_delta %d"
                         % (here, there, entry["addr"], r["sp_delta"]))
        if r["result"] != "reg:rax":
            self.problem(r, "a uretprobe's result is in %%rax, tmtrace reads %s" % r["result"])

    def result_site(self, r):
        """An inlined copy's result: straight after its direct call of libc's
        function, %rax untouched, nothing else entering."""
        self.count["result sites"] += 1
        entry = self.rows[r["entry"]]
        ce, cr = cfa_at(self.cfa, entry["addr"]), cfa_at(self.cfa, r["addr"])
        if ce is None or cr is None or ce - cr != r["sp_delta"]:
            self.problem(r, "result site: CFA offsets %r (at its guard 0x%x) and %r here, tmtrace sp_delta %d"
                         % (ce, entry["addr"], cr, r["sp_delta"]))
        addr = self.dis.prev(r["addr"])
        for _ in range(8):
            mnem, ops, rep = self.dis.insn(addr)
            if mnem.startswith("call"):
                break
            if is_branch(mnem):
                addr = None
                break
            prov = {"rax": ("reg", "rax")}
            step(prov, mnem, ops, rep, 0)
            if prov["rax"] != ("reg", "rax"):
                self.problem(r, "%s %s at 0x%x writes %%rax between the call and the result site" % (mnem, ops, addr))
                return
            addr = self.dis.prev(addr)
        else:
            addr = None
        d = Disassembly.DIRECT.match(self.dis.insn(addr)[1]) if addr else None
        callee = int(d.group(1), 16) if d else None
        if callee is None or callee not in self.dis.plt.get(r["kind"], ()):
            self.problem(r, "no direct call of %s@plt on the straight line before the result site"
                         % r["kind"])
            return
        # Other paths may join here only from the hook side: the return of
        # the guard's indirect call, where BPF pushed nothing to complete
        # (a failed guard returns at once).
        lo = addr
        while True:
            t = self.dis.entered_between(lo, r["addr"])
            if t is None:
                break
            for src in self.dis.sources[t]:
                if not self.after_indirect_call(src):
                    self.problem(r, "%s at 0x%x joins at 0x%x, between the call at 0x%x and the result site, "
                                 "and is not the return of an indirect call" % (self.dis.insn(src)[0], src, t, addr))
                    return
            self.count["joins"] = self.count.get("joins", 0) + 1
            lo = t
        if r["result"] != "reg:rax":
            self.problem(r, "%s returns in %%rax, tmtrace reads %s" % (r["kind"], r["result"]))

    def after_indirect_call(self, src):
        """The branch at src ends a straight line that starts right after a
        `call *...` (the hooked path's call through the allocator pointer)."""
        addr = self.dis.prev(src)
        for _ in range(12):
            if addr is None:
                return False
            mnem, ops, _ = self.dis.insn(addr)
            if mnem.startswith("call"):
                return ops.startswith("*")
            if is_branch(mnem) or self.dis.entered_between(addr, self.dis.next(addr)) == self.dis.next(addr):
                return False
            addr = self.dis.prev(addr)
        return False

    # inlined copies (PGO) ----------------------------------------------------

    def guard(self, r):
        self.count["guards"] += 1
        a = r["addr"]
        mnem, ops, _ = self.dis.insn(a)
        prev = self.dis.prev(a)
        pm, pops, _ = self.dis.insn(prev)
        want = "$0x%x,%%%s" % (r["guard_value"], r["guard_reg"])
        if not pm.startswith("cmp") or pops != want:
            self.problem(r, "guard: previous instruction is %s %s, not cmp %s" % (pm, pops, want))
            return
        if not (mnem.startswith("j") and not mnem.startswith("jmp")):
            self.problem(r, "guard: %s is not a conditional branch" % mnem)
            return
        target = int(ops.split()[0], 16)
        slow = target if mnem.startswith("jne") else self.dis.next(a)
        got = forward(self.dis, slow, guard_reg=r["guard_reg"])
        if got is None:
            self.problem(r, "guard: no call through %%%s within 24 straight instructions of its other path at "
                         "0x%x (beyond this test's simple model)" % (r["guard_reg"], slow))
            return
        fields = [("a", got["rsi"]), ("b", got["rdx"])] if r["b"] != "-" else [("a", got["rsi"])]
        for field, p in fields:
            exp = operand_text(p)
            if exp is None:
                self.problem(r, "guard: operand %s (%s) has no value this test can name at the indirect call"
                             % (field, r[field]))
                continue
            self.count["guard operands"] += 1
            if r[field] != exp:
                self.problem(r, "guard: operand %s is %s per objdump, tmtrace says %s" % (field, exp, r[field]))

    def default_functions(self):
        """The default allocator functions, as the function sites' entries
        (the out-of-line copies every guard compares with)."""
        out = set()
        for r in self.rows:
            if r["role"] in ("entry", "predict", "free") and r["guard_reg"] == "-" and r["family"] in ("raw", "pymalloc"):
                out.add(self.function_entry(r)[1])
        return out

    def guard_census(self):
        """Guards as objdump shows them, counted without tmtrace: a compare of
        a register with a default allocator's address (`cmp $<address>,%reg`
        in a static executable, or with a register a rip-relative lea loaded
        it into within the last four instructions, in PIC code), then a
        conditional branch one of whose successors calls or jumps through
        that register (the promoted indirect call)."""
        defaults, dis = self.default_functions(), self.dis
        compares = 0
        for addr, ops, jcc, target in dis.compares:
            parts = operands(ops)
            if len(parts) != 2:
                continue
            m = re.fullmatch(r"\$0x([0-9a-f]+)", parts[0])
            if m and int(m.group(1), 16) in defaults and reg_of(parts[1]):
                pointer = reg_of(parts[1])
            else:
                regs = {reg_of(p) for p in parts if reg_of(p)}
                i = bisect.bisect_left(dis.order, addr)
                loaded = [dis.lea[b][1] for b in dis.order[max(0, i - 4):i]
                          if b in dis.lea and dis.lea[b][0] in defaults and dis.lea[b][1] in regs]
                other = regs - set(loaded)
                if not loaded or len(other) != 1:
                    continue
                pointer = other.pop()
            if any(forward(dis, s, guard_reg=pointer) is not None for s in (target, dis.next(jcc))):
                compares += 1
        self.count["guard compares"] = compares
        self.count["not probed"] = sum(1 for n in self.notes if n.startswith("# not probed: inlined"))

    # object creation -----------------------------------------------------------

    def restamp_targets(self):
        """_PyTraceMalloc_NewReference: by symbol or PLT stub; in a stripped
        binary, the direct call in the exported _Py_NewReference's body
        (within its FDE). Empty on 3.13, which has a reference tracer."""
        t = set(self.dis.plt.get("_PyTraceMalloc_NewReference", ()))
        t |= self.names.get("_PyTraceMalloc_NewReference", set())
        if not t and len(self.names.get("_Py_NewReference", ())) == 1:
            fde = fde_of(self.cfa, min(self.names["_Py_NewReference"]))
            addr = fde[0] if fde else None
            while addr is not None and addr < fde[1]:
                mnem, ops, _ = self.dis.insn(addr)
                d = Disassembly.DIRECT.match(ops)
                if mnem.startswith("call") and d:
                    t.add(int(d.group(1), 16))
                    break
                addr = self.dis.next(addr)
        return t

    def creation_targets(self):
        """{address: name} of the creation functions and their PLT stubs."""
        out = {}
        for name in CREATION_FUNCTIONS:
            for a in self.names.get(name, set()) | self.dis.plt.get(name, set()):
                out[a] = name
        return out

    def function_of(self, addr):
        """The names of the nearest symbol at or before addr."""
        if not hasattr(self, "_starts"):
            self._starts = sorted(self.syms)
        i = bisect.bisect_right(self._starts, addr)
        return self.syms[self._starts[i - 1]] if i else set()

    def creation_call(self, r, target):
        if r["a"] != "reg:rdi":
            self.problem(r, "a call of %s takes the object in %%rdi, tmtrace says %s" % (target, r["a"]))
            return
        self.count["newref calls"] = self.count.get("newref calls", 0) + 1
        self.count["newref"] += 1

    def creation_census(self):
        """Every direct call of a creation function that tmtrace does not
        probe lies in a fresh creator, when tmtrace says it probes the
        creation function at its calls."""
        relocated = [n for n in self.notes if "(the calls here are;" in n]
        if not relocated:
            return
        probed = {r["addr"] for r in self.rows if r["role"] == "newref"}
        for target, name in self.creation_targets().items():
            for src in self.dis.sources.get(target, []):
                mnem, _, _ = self.dis.insn(src)
                owner = self.function_of(src)
                if src in probed:
                    continue
                if not (mnem.startswith("call") or mnem.startswith("jmp")):
                    self.problems.append("0x%x: %s to %s, which tmtrace says it probes at its calls"
                                         % (src, mnem, name))
                elif owner & FRESH_CREATORS:
                    self.count["fresh calls"] = self.count.get("fresh calls", 0) + 1
                elif self.allocated_in_call(src, "rdi"):
                    self.count["allocated calls"] = self.count.get("allocated calls", 0) + 1
                elif not owner & set(CREATION_FUNCTIONS):
                    self.problems.append("0x%x: a call of %s in %s is not probed" % (src, name, sorted(owner)))

    def allocating_targets(self):
        if not hasattr(self, "_allocating"):
            self._allocating = set(self.default_functions())
            for name in ALLOCATING:
                self._allocating |= self.names.get(name, set()) | self.dis.plt.get(name, set())
            for r in self.rows:
                if r["role"] == "newpool":
                    self._allocating.add(self.function_entry(r)[1])
        return self._allocating

    def is_entry(self, addr):
        return addr in self.syms or any(self.dis.insn(s)[0].startswith("call") for s in self.dis.sources.get(addr, ()))

    def allocator_slots(self):
        """The allocator slots, as the exported wrappers read them (the first
        RIP-relative load of each), and usedpools[], as the default pymalloc
        functions index it (`mov ABS(,%reg,8),%reg`)."""
        if not hasattr(self, "_slots"):
            self._slots, self._pools = set(), set()
            for name in ("PyObject_Malloc", "PyObject_Calloc", "PyObject_Realloc", "PyMem_Malloc", "PyMem_Calloc",
                         "PyMem_Realloc", "PyMem_RawMalloc", "PyMem_RawCalloc", "PyMem_RawRealloc"):
                # the wrapper loads its struct's ctx (first field) and the slot
                field = 8 if name.endswith("Malloc") else 16 if name.endswith("Calloc") else 24
                for a in self.names.get(name, ()):
                    loads = set()
                    for _ in range(16):
                        m = re.search(r"\(%rip\),%\w+\s+# ([0-9a-f]+)", self.dis._lines.get(a, ""))
                        if m:
                            loads.add(int(m.group(1), 16))
                        a = self.dis.next(a)
                    # (a tail jump through the slot may not decode: objdump
                    # shows bytes where a symbol starts inside it)
                    pairs = {t for t in loads if t - field in loads}
                    self._slots |= pairs or ({min(loads) + field} if loads else set())
            for entry in self.default_functions():
                fde = fde_of(self.cfa, entry)
                a = fde[0] if fde else None
                while a is not None and a < fde[1]:
                    mnem, ops, _ = self.dis.insn(a)
                    m = re.fullmatch(r"(0x[0-9a-f]+)\(,%\w+,8\),%\w+", ops)
                    if mnem.startswith("mov") and m:
                        self._pools.add(int(m.group(1), 16))
                    a = self.dis.next(a)
        return self._slots, self._pools

    def stop(self, addr, reg, why):
        """A proof that fails: where, and why, for the problem's message."""
        self._stopped = "at 0x%x%s: %s" % (addr, " (%%%s)" % reg if reg else "", why)
        return False

    def allocated_in_call(self, site, reg):
        """Is the value of `reg` at `site` a block allocated earlier in the
        same call of the function, or a few bytes into one, on every path?
        A block comes from a call of an ALLOCATING function or a default
        allocator, from a call through an allocator slot, or from
        pymalloc's inlined fast path (`bp = pool->freeblock`, the pool from
        usedpools[]). Walked back over every path within the site's FDE and
        the fragments (.cold) whose start only it jumps to: a function
        entry fails (the value is the caller's), a value passes a call only
        in a callee-saved register, and is carried by 64-bit register
        moves, `lea d(%reg)` and `add` of up to 64 bytes or of a register;
        the FDEs hold no indirect jump, nor does code they jump out to."""
        fde = fde_of(self.cfa, site)
        if not fde:
            return False
        ranges, allocating, dis = [(fde[0], fde[1])], self.allocating_targets(), self.dis
        slots, pools = self.allocator_slots()

        def range_of(a):
            return next((i for i, (lo, hi) in enumerate(ranges) if lo <= a < hi), None)

        def add_fragment(src):
            f = fde_of(self.cfa, src)
            if not f or len(ranges) == 4 or self.is_entry(f[0]):
                return False
            into = dis.sources.get(f[0], [])
            if not into or any(range_of(x) is None for x in into):
                return False
            ranges.append((f[0], f[1]))
            return True

        seen, todo = {(site, reg, "block")}, [(site, reg, "block")]

        def push(a, r, goal):
            if r in (None, "rsp") or len(seen) > 1024:
                return False
            if (a, r, goal) not in seen:
                seen.add((a, r, goal))
                todo.append((a, r, goal))
            return True

        def loaded_from(addr, ops, table):
            """Does this load read one of `table`'s addresses?"""
            m = re.search(r"# ([0-9a-f]+)", dis._lines[addr])
            if ops.split(",")[0].endswith("(%rip)") and m:
                return int(m.group(1), 16) in table
            m = re.fullmatch(r"(0x[0-9a-f]+)(\(,%\w+,\d\))?,%\w+", ops)
            return bool(m) and int(m.group(1), 16) in table

        while todo:
            a, r, goal = todo.pop()
            k = range_of(a)
            if k is None or a not in dis or a == ranges[0][0] or self.is_entry(a):
                return self.stop(a, r, "an entry, or outside the function")
            for src in dis.sources.get(a, ()):
                if range_of(src) is None and not add_fragment(src):
                    return self.stop(a, r, "entered from 0x%x, outside" % src)
                if not push(src, r, goal):
                    return self.stop(a, r, "too many states")
            p = dis.prev(a)
            if a == ranges[k][0] or p is None:
                continue
            mnem, ops, rep = dis.insn(p)
            parts = operands(ops)
            if mnem.startswith(("jmp", "ret", "ud", "hlt")):
                continue  # nothing falls in
            if mnem.startswith("call"):
                d = Disassembly.DIRECT.match(ops)
                if r == "rax" and goal == "block":
                    m = re.fullmatch(r"\*%(\w+)", ops)
                    if m:
                        ok = push(p, reg_of(m.group(1)), "slot")
                    elif ops.startswith("*"):
                        ok = loaded_from(p, ops.lstrip("*") + ",%rax", slots)
                    else:
                        ok = bool(d) and int(d.group(1), 16) in allocating
                else:
                    ok = r in CALLEE_SAVED and push(p, r, goal)
                if not ok:
                    return self.stop(p, r, "%s %s" % (mnem, ops))
                continue
            base = mnem[:-1] if mnem[-1:] in ("b", "w", "l", "q") and mnem[:-1] in SUFFIXED else mnem
            # a store to memory, or vector work: no general register written
            stores = parts and not reg_of(parts[-1]) and not rep and not STRING_OPS.match(mnem) and \
                base not in SUFFIXED and mnem not in IMPLICIT_WRITES and not mnem.startswith(("push", "pop"))
            if mnem.startswith("j") or READ_ONLY.match(mnem) or stores:
                if not push(p, r, goal):
                    return self.stop(p, r, "too many states")
                continue
            implicit = ["rax", "rdx"] if base in ("mul", "div", "idiv") or (base == "imul" and len(parts) == 1) \
                else [reg_of(x) for x in parts] if base in ("xchg", "xadd") \
                else IMPLICIT_WRITES[mnem] if mnem in IMPLICIT_WRITES and not parts else None
            if implicit is not None:
                if r in implicit or not push(p, r, goal):
                    return self.stop(p, r, "%s %s" % (mnem, ops))
                continue
            if rep or STRING_OPS.match(mnem) or not (PLAIN_WRITES.fullmatch(mnem) or LAST_WRITES.fullmatch(mnem)):
                if mnem.startswith("pop") and parts and reg_of(parts[0]) != r and push(p, r, goal):
                    continue
                return self.stop(p, r, "%s %s" % (mnem, ops))
            if not parts or reg_of(parts[-1]) != r:
                if not push(p, r, goal):
                    return self.stop(p, r, "too many states")
                continue
            src = parts[0] if len(parts) == 2 else ""
            full = parts[-1].lstrip("%") in GPR64
            m_lea = re.fullmatch(r"(0x[0-9a-f]+)?\(%(\w+)\)", src)
            m_imm = re.fullmatch(r"\$(0x[0-9a-f]+)", src)
            is_reg = src.startswith("%") and src.lstrip("%") in GPR64
            if mnem.startswith("xor") and src == parts[-1] and goal == "block":
                continue  # NULL: no creation follows
            if not full:
                return self.stop(p, r, "%s %s" % (mnem, ops))
            if mnem in ("mov", "movq") and is_reg:
                ok = push(p, src.lstrip("%"), goal)
            elif goal == "slot":
                ok = mnem in ("mov", "movq") and loaded_from(p, ops, slots)
            elif goal == "pool":
                ok = mnem in ("mov", "movq") and any(loaded_from(p, ops, range(t, t + 1024)) for t in pools)
            elif mnem in ("mov", "movq") and m_lea and int(m_lea.group(1) or "0", 16) == 8 and pools:
                ok = push(p, reg_of(m_lea.group(2)), "pool")  # bp = pool->freeblock
            elif mnem.startswith("lea") and m_lea and int(m_lea.group(1) or "0", 16) <= 64:
                ok = push(p, reg_of(m_lea.group(2)), goal)
            elif mnem.startswith("add") and ((m_imm and int(m_imm.group(1), 16) <= 64) or is_reg):
                ok = push(p, r, goal)
            else:
                ok = False
            if not ok:
                return self.stop(p, r + " (" + goal + ")", "%s %s" % (mnem, ops))
        for lo, hi in ranges:
            a = lo
            while a is not None and a < hi:
                mnem, ops, _ = dis.insn(a)
                if mnem.startswith("jmp") and ops.startswith("*"):
                    return self.stop(a, "", "an indirect jump")
                d = Disassembly.DIRECT.match(ops)
                if mnem.startswith("j") and d:
                    t = int(d.group(1), 16)
                    if range_of(t) is None and not self.is_entry(t) and self.jumps_indirectly(t, range_of):
                        return self.stop(t, "", "an indirect jump, or too long, after it")
                a = dis.next(a)
        return True

    def allocated_census(self):
        """Each creation tmtrace leaves unprobed as the same call allocated
        its object is proven so here too."""
        listed = [(int(m.group(1), 16), m.group(2)) for m in
                  (re.match(r"# allocated in the same call: 0x([0-9a-f]+)\s+reg:(\w+)$", n) for n in self.notes)
                  if m]
        for addr, reg in listed:
            if not self.allocated_in_call(addr, reg):
                self.problems.append("0x%x: tmtrace says the same call allocated the object in %%%s, objdump "
                                     "does not show it (the walk stops %s)" % (addr, reg, self._stopped))
        self.count["allocated"] = len(listed)

    def jumps_indirectly(self, start, range_of):
        """Code reached from `start` (outside the proof's ranges, following
        branches until it returns or comes back) holds an indirect jump, or
        more than 256 instructions."""
        pending, budget = [start], 256
        while pending:
            a = pending.pop()
            while a is not None and range_of(a) is None:
                budget -= 1
                if budget < 0 or a not in self.dis:
                    return True
                mnem, ops, _ = self.dis.insn(a)
                d = Disassembly.DIRECT.match(ops)
                if mnem.startswith("jmp") and not d:
                    return True
                if mnem.startswith(("ret", "ud", "hlt")):
                    break
                if mnem.startswith("jmp"):
                    a = int(d.group(1), 16)
                    continue
                if mnem.startswith("j") and d:
                    pending.append(int(d.group(1), 16))
                a = self.dis.next(a)
        return False

    def newref(self, r):
        if not hasattr(self, "_restamp"):
            self._restamp = self.restamp_targets()
            self._creation = self.creation_targets()
        a = r["addr"]
        mnem, ops, _ = self.dis.insn(a)
        d = Disassembly.DIRECT.match(ops)
        if (mnem.startswith("call") or mnem.startswith("jmp")) and d and int(d.group(1), 16) in self._creation:
            self.creation_call(r, self._creation[int(d.group(1), 16)])
            return
        if not mnem.startswith("j") or mnem.startswith("jmp") or not d:
            self.problem(r, "object-creation site is %s, not a conditional branch" % mnem)
            return
        succ = [int(d.group(1), 16), self.dis.next(a)]
        found = []
        if self._restamp:
            found = [operand_text(p["rdi"]) for p in (forward(self.dis, s, targets=self._restamp) for s in succ)
                     if p is not None]
        elif self.minor >= 13:
            # tracer = _PyRuntime.ref_tracer.tracer_func; if (tracer) tracer(op, event, data)
            pm, pops, _ = self.dis.insn(self.dis.prev(a))
            m = re.fullmatch(r"%(\w+),%(\w+)", pops)
            fde = fde_of(self.cfa, a)
            owner = self.syms.get(fde[0], set()) if fde else set()
            if not (pm.startswith("test") and m and m.group(1) == m.group(2) and reg_of(m.group(1))):
                self.problem(r, "3.13 object-creation site: %s %s before it is not a test of the tracer" % (pm, pops))
                return
            if not owner & NEWREF_FUNCTIONS_313:
                self.problem(r, "3.13 object-creation site in %s, not in %s" % (sorted(owner) or "an unnamed "
                             "function", sorted(NEWREF_FUNCTIONS_313)))
                return
            found = [operand_text(p["rdi"]) for p in
                     (forward(self.dis, s, tracer_reg=reg_of(m.group(1))) for s in succ) if p is not None]
        else:
            self.problem(r, "no re-stamp function (_PyTraceMalloc_NewReference) found by symbol, PLT or "
                         "_Py_NewReference's body")
            return
        if r["a"] not in found:
            self.problem(r, "objdump gives the object in %r on the path to the re-stamp, tmtrace says %s"
                         % (found, r["a"]))
            return
        self.count["newref"] += 1


def audit_build(name):
    for tool in ("objdump", "readelf", "nm"):
        if not shutil.which(tool):
            raise Skip("%s (binutils) is not installed" % tool)
    b = build(name)
    binary, libc = runtime_of(name)
    audit = Audit(binary, b.minor).run()
    c, problems = audit.count, audit.problems
    said = ["%s: %d sites (%d emulated, %d single-stepped), %d uretprobes, %d result uprobes"
            % (binary, c["sites"], c["emulated"], c["single-stepped"], c["uretprobes"], c["result sites"]),
            "%d function sites (%d argument operands proven intact)" % (c["function sites"], c["args"])]
    check(c["function sites"] >= 10, "only %d out-of-line function sites" % c["function sites"])
    check(c["newref"] > 0, "no object-creation site agrees with objdump")
    said.append("%d object-creation sites (%d at calls of the creation function, %d such calls in fresh "
                "creators and %d of what the same call allocated not probed)"
                % (c["newref"], c.get("newref calls", 0), c.get("fresh calls", 0), c.get("allocated calls", 0)))
    allocated = sum(int(m.group(1)) for m in (re.match(r"# not probed: (\d+) object creations of what the same "
                                                       r"call", n) for n in audit.notes) if m)
    check(allocated == c["allocated"] and c.get("allocated calls", 0) <= allocated,
          "tmtrace leaves %d creations of what the same call allocated unprobed, lists %d, and %d calls are"
          % (allocated, c["allocated"], c.get("allocated calls", 0)))
    said.append("%d creations of what the same call allocated not probed, each proven here" % allocated)
    if c["guards"]:
        check(c["guards"] > 400, "only %d guard sites in a PGO build" % c["guards"])
        if c["guard compares"] != c["guards"] + c["not probed"]:
            problems.append("objdump finds %d guards, tmtrace %d guard sites and %d copies not probed"
                            % (c["guard compares"], c["guards"], c["not probed"]))
        said.append("%d guard sites, %d operands checked; objdump finds %d guards = sites + %d not probed"
                    % (c["guards"], c["guard operands"], c["guard compares"], c["not probed"]))
        said.append("%d result sites straight after their libc call (%d joined only by the hooked path's "
                    "return)" % (c["result sites"], c.get("joins", 0)))
    else:
        if c["guard compares"] or c["result sites"]:
            problems.append("tmtrace chose no guard site, yet objdump finds %d guards (and there are %d "
                            "result sites)" % (c["guard compares"], c["result sites"]))
        said.append("guard and result-site checks do not apply: no inlined allocator copy (objdump finds no "
                    "compare with a default allocator's address; indirect-call promotion needs PGO)")
    # tmtrace probes only the CPython runtime: the plan of libc is refused
    if libc:
        p = subprocess.run([TMTRACE, "sites", libc], capture_output=True, text=True)
        check(p.returncode == 1 and "cannot find CPython's allocator functions" in p.stderr,
              "`tmtrace sites %s` did not refuse: %d %r" % (libc, p.returncode, p.stderr[-200:]))
        said.append("no site in libc (%s: every site is in %s, and tmtrace refuses to plan libc)"
                    % (libc, os.path.basename(binary)))
    else:
        problems.append("the build maps no libc.so: cannot show that libc is not probed")
    # --sample's plan: a subset of the sites above, plus allocate_from_new_pool
    # found by symbol where the exact plan does not probe it (3.12+)
    if b.minor >= 9:
        sampled = Audit(binary, b.minor, ("--sample",)).run()
        roles = {r["role"] for r in sampled.rows}
        problems += ["--sample: " + p for p in sampled.problems]
        if "newpool" not in roles or roles & {"predict", "newref", "realloc"}:
            problems.append("--sample's plan has roles %s: it needs newpool and no per-allocation "
                            "pymalloc site" % sorted(roles))
        said.append("--sample: %d sites (%d emulated), roles %s" % (sampled.count["sites"],
                    sampled.count["emulated"], ", ".join(sorted(roles))))
    # --lazy-frees' plan: exactly the sites above but pymalloc's own frees
    lazy = Audit(binary, b.minor, ("--lazy-frees",)).run()
    problems += ["--lazy-frees: " + p for p in lazy.problems]
    ident = lambda r: (r["addr"], r["role"], r["kind"], r["family"], r["probe"], r["what"])
    dropped = {ident(r) for r in audit.rows} - {ident(r) for r in lazy.rows}
    added = {ident(r) for r in lazy.rows} - {ident(r) for r in audit.rows}
    wrong = [d for d in dropped if d[1] != "free" or d[3] != "pymalloc"]
    kept = [r for r in lazy.rows if r["role"] == "free" and r["family"] == "pymalloc"]
    if added or wrong or kept or not dropped:
        problems.append("--lazy-frees' plan is not the exact plan less pymalloc's frees: %d sites added, "
                        "%d other sites dropped, %d pymalloc frees kept, %d dropped"
                        % (len(added), len(wrong), len(kept), len(dropped)))
    said.append("--lazy-frees: %d sites, the exact plan less its %d pymalloc free sites"
                % (lazy.count["sites"], len(dropped)))
    check(not problems, "%d disagreements:\n  %s" % (len(problems), "\n  ".join(problems[:40])))
    print("     " + "\n     ".join(said))


per_build(globals(), "test_sites_agree_with_objdump_and_readelf", audit_build, """
Every probe site tmtrace chooses in the build's CPython runtime (libpython,
or the static executable) agrees with objdump, readelf, nm, the file's bytes
and the kernel's uprobe rules, as this module's docstring lists.""")
