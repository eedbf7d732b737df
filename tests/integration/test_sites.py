"""Every probe site tmtrace chooses in Debian's python3.11, checked against
independent tools: objdump's disassembly and readelf's reading of .eh_frame.

A uprobe at an address that is not an instruction boundary would corrupt the
target's code; a wrong operand register would record wrong sizes. This
re-derives, with its own simple logic over objdump's text, what tmtrace
derived with capstone and libdw, and demands they agree."""

import bisect
import re
import shutil
import subprocess

from harness import Skip, TMTRACE, check, find_python

EMULATED = re.compile(r"^(j[a-z]+|call|push|nop)$")
GPR64 = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"] + ["r%d" % i for i in range(8, 16)]
ALIASES = {}
for r in GPR64:
    ALIASES[r] = r
for r, e in (("rax", "eax"), ("rbx", "ebx"), ("rcx", "ecx"), ("rdx", "edx"), ("rsi", "esi"),
             ("rdi", "edi"), ("rbp", "ebp"), ("rsp", "esp")):
    ALIASES[e] = r
for i in range(8, 16):
    ALIASES["r%dd" % i] = "r%d" % i


def sites_of(binary):
    out = subprocess.run([TMTRACE, "sites", binary], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        if line.startswith("#"):
            continue
        f = line.split("\t")
        rows.append({"site": int(f[0]), "addr": int(f[1], 16), "role": f[3], "kind": f[4], "family": f[5],
                     "probe": f[6], "guard_reg": f[7], "guard_value": int(f[8], 16), "a": f[9], "b": f[10],
                     "result": f[11], "entry": int(f[12]), "sp_delta": int(f[13]), "emulated": f[14] == "yes",
                     "insn": f[15], "what": f[16]})
    return rows


def disassembly(binary):
    """addr -> (mnemonic, operands) for every instruction objdump decodes."""
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-M", "suffix", binary],
                          capture_output=True, text=True, check=True).stdout
    insns = {}
    for line in text.splitlines():
        m = re.match(r"\s+([0-9a-f]+):\t(\S+)\s*(.*)$", line)
        if m:
            insns[int(m.group(1), 16)] = (m.group(2), m.group(3).split("#")[0].strip())
    return insns


def cfa_table(binary):
    """(sorted FDE starts, [(start, end, [(loc, cfa rule)])]) from readelf."""
    text = subprocess.run(["readelf", "--debug-dump=frames-interp", binary], capture_output=True, text=True,
                          check=True).stdout
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


def cfa_at(table, addr):
    starts, fdes = table
    i = bisect.bisect_right(starts, addr) - 1
    if i < 0 or not (fdes[i][0] <= addr < fdes[i][1]):
        return None
    rule = None
    for loc, cfa in fdes[i][2]:
        if loc <= addr:
            rule = cfa
    m = re.fullmatch(r"rsp\+(\d+)", rule or "")
    return int(m.group(1)) if m else None


def reg_of(text):
    return ALIASES.get(text.lstrip("%"))


def slow_path_operands(insns, order, start, guard_reg=None, direct_target=None):
    """Independently: where %rsi and %rdx at the pointer call came from, in
    terms of registers at the guard (with direct_target: where %rdi was at a
    direct call or jump to that address). None when this simple model cannot
    tell."""
    prov = {r: ("reg", r) for r in GPR64}
    addr, jumps, sp_moved = start, 0, False
    for _ in range(24):
        if addr not in insns:
            return None
        mnem, ops = insns[addr]
        nxt = order[bisect.bisect_right(order, addr)]
        if direct_target is not None:
            if mnem.startswith(("call", "jmp")) and re.match(r"[0-9a-f]+", ops) and \
                    int(ops.split()[0], 16) == direct_target:
                return prov["rdi"]
        else:
            m = re.fullmatch(r"(call|jmp)q? +\*%(\w+)", mnem + " " + ops) if mnem.startswith(("call", "jmp")) else None
            if m:
                if prov.get(reg_of(m.group(2))) != ("reg", guard_reg):
                    return None
                return prov["rsi"], prov["rdx"]
        if mnem.startswith("jmp") and re.fullmatch(r"[0-9a-f]+ <.*>|[0-9a-f]+", ops) and jumps < 4:
            addr, jumps = int(ops.split()[0], 16), jumps + 1
            continue
        if mnem.startswith("j") or mnem.startswith("call") or mnem.startswith("ret"):
            return None
        parts = [p.strip() for p in re.split(r",(?![^(]*\))", ops)] if ops else []
        if mnem in ("movq", "movl") and len(parts) == 2 and parts[1].startswith("%"):
            dst = reg_of(parts[1])
            src = parts[0]
            if dst is None:
                return None
            if src.startswith("$"):
                prov[dst] = ("const", int(src[1:], 16) & (0xffffffff if mnem == "movl" else (1 << 64) - 1))
            elif src.startswith("%") and reg_of(src):
                p = prov[reg_of(src)]
                prov[dst] = p if mnem == "movq" else (("reg32", p[1]) if p[0] == "reg" else
                                                      p if p[0] == "const" else ("?",))
            else:
                m = re.fullmatch(r"(-?0x[0-9a-f]+)?\(%(\w+)\)", src)
                base = prov.get(reg_of(m.group(2))) if m else None
                if mnem == "movq" and base and base[0] == "reg" and not sp_moved:
                    prov[dst] = ("mem", base[1], int(m.group(1) or "0", 16))
                else:
                    prov[dst] = ("?",)
        elif mnem in ("xorl", "xorq") and len(parts) == 2 and parts[0] == parts[1]:
            prov[reg_of(parts[1])] = ("const", 0)
        elif mnem.startswith("push") or mnem.startswith("pop"):
            sp_moved = True
            if mnem.startswith("pop") and reg_of(parts[0]):
                prov[reg_of(parts[0])] = ("?",)
        elif parts and parts[-1].startswith("%") and reg_of(parts[-1]):
            prov[reg_of(parts[-1])] = ("?",)
        addr = nxt
    return None


def expected_text(p):
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


def restamp_function(insns, order, binary):
    """The function Debian's _Py_NewReference calls (tracemalloc's re-stamp),
    read off objdump: the first direct call after _Py_NewReference's entry."""
    out = subprocess.run(["nm", "-D", binary], capture_output=True, text=True, check=True).stdout
    m = re.search(r"^([0-9a-f]+) T _Py_NewReference$", out, re.M)
    if not m:
        return None
    i = bisect.bisect_left(order, int(m.group(1), 16))
    for addr in order[i:i + 16]:
        mnem, ops = insns[addr]
        if mnem.startswith("call") and re.match(r"[0-9a-f]+ ", ops + " "):
            return int(ops.split()[0], 16)
    return None


def check_newref_sites(rows, insns, order, binary, problems):
    """Each object-creation site is a conditional branch one of whose
    successors runs straight (through jumps) into the re-stamp call, with
    the object in the register tmtrace names. Returns how many agree."""
    nr = restamp_function(insns, order, binary)
    agreed = 0
    for r in rows:
        if r["role"] != "newref":
            continue
        a = r["addr"]
        mnem, ops = insns[a]
        if not mnem.startswith("j") or mnem.startswith("jmp"):
            problems.append("newref site %d at 0x%x is %s, not a conditional branch" % (r["site"], a, mnem))
            continue
        succ = [int(ops.split()[0], 16), order[bisect.bisect_right(order, a)]]
        found = [expected_text(p) for p in (slow_path_operands(insns, order, s, direct_target=nr) for s in succ)
                 if p is not None]
        if r["a"] not in found:
            problems.append("newref site %d at 0x%x: objdump gives the object in %r, tmtrace says %s"
                            % (r["site"], a, found, r["a"]))
            continue
        agreed += 1
    return agreed


def test_every_site_against_objdump_and_readelf():
    for tool in ("objdump", "readelf"):
        if not shutil.which(tool):
            raise Skip("%s (binutils) is not installed" % tool)
    binary = find_python(11, pyenv=False)
    rows = sites_of(binary)
    insns = disassembly(binary)
    order = sorted(insns)
    cfa = cfa_table(binary)
    problems, operands_checked, guards = [], 0, 0
    for r in rows:
        a = r["addr"]
        if a not in insns:
            problems.append("site %d at 0x%x is not an instruction boundary" % (r["site"], a))
            continue
        mnem = insns[a][0]
        if r["emulated"] != bool(EMULATED.match(mnem.rstrip("qlw"))):
            problems.append("site %d at 0x%x: objdump says %s, tmtrace says emulated=%s"
                            % (r["site"], a, mnem, r["emulated"]))
        if r["probe"] == "uretprobe":
            # [rsp] must be the return address, and at the return the stack
            # pointer is the CFA: the entry's was CFA - (its offset)
            entry = rows[r["entry"]]
            if cfa_at(cfa, a) != 8 or cfa_at(cfa, entry["addr"]) != r["sp_delta"]:
                problems.append("uretprobe site %d at 0x%x: CFA offset %r here and %r at its entry per "
                                "readelf, tmtrace sp_delta %d" % (r["site"], a, cfa_at(cfa, a),
                                                                  cfa_at(cfa, entry["addr"]), r["sp_delta"]))
        if r["guard_reg"] != "-":
            guards += 1
            prev = order[bisect.bisect_left(order, a) - 1]
            pm, pops = insns[prev]
            want = "$0x%x,%%%s" % (r["guard_value"], r["guard_reg"])
            if not pm.startswith("cmp") or pops != want:
                problems.append("guard site %d at 0x%x: previous instruction is %s %s, not cmp %s"
                                % (r["site"], a, pm, pops, want))
                continue
            ops = insns[a][1].split()[0]
            target = int(ops, 16)
            slow = target if mnem.startswith("jne") else order[bisect.bisect_right(order, a)]
            got = slow_path_operands(insns, order, slow, r["guard_reg"])
            if got is None:
                continue
            names = [("a", got[0]), ("b", got[1])] if r["b"] != "-" else [("a", got[0])]
            for field, p in names:
                exp = expected_text(p)
                if exp is None:
                    continue
                operands_checked += 1
                if r[field] != exp:
                    problems.append("guard site %d at 0x%x: operand %s is %s per objdump, tmtrace says %s"
                                    % (r["site"], a, field, exp, r[field]))
        if r["role"] == "return" and r["probe"] == "uprobe":
            entry = rows[r["entry"]]
            ce, cr = cfa_at(cfa, entry["addr"]), cfa_at(cfa, a)
            if ce is None or cr is None or ce - cr != r["sp_delta"]:
                problems.append("return site %d at 0x%x: CFA offsets %r (entry) and %r, tmtrace sp_delta %d"
                                % (r["site"], a, ce, cr, r["sp_delta"]))
    newrefs = check_newref_sites(rows, insns, order, binary, problems)
    check(newrefs > 200, "only %d object-creation sites agree with objdump" % newrefs)
    check(guards > 400, "only %d guard sites" % guards)
    check(operands_checked > 0.8 * guards, "only %d operands independently checked for %d guard sites"
          % (operands_checked, guards))
    check(not problems, "%d disagreements:\n  %s" % (len(problems), "\n  ".join(problems[:30])))
    print("     %d sites, %d guards, %d operands, %d object-creation sites checked against objdump, "
          "CFA against readelf" % (len(rows), guards, operands_checked, newrefs))
