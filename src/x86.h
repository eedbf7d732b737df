/* x86-64 instruction facts tmtrace relies on, over capstone. */
#ifndef TMTRACE_X86_H
#define TMTRACE_X86_H

#include <capstone/capstone.h>
#include <stdbool.h>
#include <stdint.h>
#include "tmtrace.h"

int x86_open(csh *handle); /* detail on */

/* The 64-bit register an x86 register (any width) is part of, as enum
 * tm_reg, or TM_REG_NONE for rsp, rip and non-GPRs. */
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

#endif
