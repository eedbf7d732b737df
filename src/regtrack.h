/* Symbolic register tracking over straight-line x86-64 code: where each
 * register's value came from, in terms of the registers at the start point
 * (a probe site). Used to prove where a call's operands are at a site. */
#ifndef TMTRACE_REGTRACK_H
#define TMTRACE_REGTRACK_H

#include <stdbool.h>
#include <stdint.h>
#include "x86.h"

enum prov_kind {
	PROV_UNKNOWN = 0,
	PROV_REG,   /* register `reg` at the start point */
	PROV_CONST, /* the constant `value` */
	PROV_MEM,   /* 8 (or 4) bytes at start-register `reg` + `value` */
};

struct prov {
	uint8_t kind;  /* enum prov_kind */
	uint8_t reg;   /* enum tm_reg */
	uint8_t width; /* TM_WIDTH_* */
	int64_t value;
};

struct regtrack {
	struct prov r[TM_REG_COUNT];
	int64_t sp_delta; /* %rsp now minus %rsp at the start */
};

void regtrack_init(struct regtrack *t);
/* Applies one non-branching instruction. False when its effect cannot be
 * modeled (the stack pointer set from elsewhere): stop there. */
bool regtrack_step(csh cs, const cs_insn *insn, struct regtrack *t);
/* Where the start point's value of register `reg` is now: the register
 * itself while unchanged, else a register it was copied to. */
bool regtrack_find(const struct regtrack *t, enum tm_reg reg, struct tm_operand *op);
/* The operand for BPF, when the value is known at the start point. */
bool prov_operand(const struct prov *p, struct tm_operand *op);

#endif
