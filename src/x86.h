/* x86-64 instruction facts tmtrace relies on, over capstone. */
#ifndef TMTRACE_X86_H
#define TMTRACE_X86_H

#include <capstone/capstone.h>
#include <stdbool.h>
#include <stdint.h>
#include "elffile.h"
#include "tmtrace.h"

int x86_open(csh *handle); /* detail on */

/* The 64-bit register an x86 register (any width) is part of, as enum
 * tm_reg (TM_REG_SP for the stack pointer), or TM_REG_NONE for rip and
 * non-GPRs. */
enum tm_reg x86_gpr(x86_reg reg);
bool x86_writes_rsp(csh handle, const cs_insn *insn);
/* Does the kernel emulate this instruction when a uprobe sits on it (rather
 * than single-stepping it out of line at ~10x the cost)? push reg, nop,
 * jmp/call rel, jcc rel. */
bool x86_uprobe_emulated(const cs_insn *insn);
/* Control transfer of any kind (ends straight-line code). */
bool x86_is_branch(const cs_insn *insn);
/* RIP-relative memory operand's absolute address, if the insn has one. */
bool x86_rip_target(const cs_insn *insn, uint64_t *addr);

/* Random access to a binary's code, one instruction at a time. */
struct x86_code {
	csh cs;
	struct elf_section_view views[16];
	int nviews;
};

int x86_code_open(struct x86_code *c, struct elf_file *ef);
void x86_code_close(struct x86_code *c);
/* Decodes the instruction at addr into insn (from cs_malloc): true on success. */
bool x86_decode(struct x86_code *c, uint64_t addr, cs_insn *insn);
/* The target of a direct jmp/jcc/call, if it is one. */
bool x86_branch_target(const cs_insn *insn, uint64_t *target);
bool x86_is_jcc(const cs_insn *insn);
/* The function a direct call or jump to `target` reaches through its PLT
 * stub (`jmp *GOT(%rip)`, after an endbr64), by the GOT slot's
 * relocation; NULL if target is no PLT stub. */
const char *x86_plt_callee(struct x86_code *code, struct elf_file *ef, uint64_t target, cs_insn *insn);

#endif
