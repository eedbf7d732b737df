#include <string.h>
#include "regtrack.h"

void regtrack_init(struct regtrack *t)
{
	memset(t, 0, sizeof(*t));
	for (int r = 1; r < TM_REG_COUNT; r++)
		t->r[r] = (struct prov){ PROV_REG, (uint8_t)r, TM_WIDTH_64, 0 };
}

static struct prov narrow(struct prov p, uint8_t width)
{
	if (p.kind == PROV_CONST) {
		p.value = width == TM_WIDTH_S32 ? (int64_t)(int32_t)p.value : (int64_t)(uint32_t)p.value;
		p.width = TM_WIDTH_64;
		return p;
	}
	if (p.kind == PROV_UNKNOWN)
		return p;
	/* narrowing something already narrowed another way: give up */
	if (p.width != TM_WIDTH_64 && p.width != width)
		return (struct prov){ PROV_UNKNOWN, 0, 0, 0 };
	p.width = width;
	return p;
}

/* A memory source [base + disp] as a start-point location. */
static struct prov mem_source(const struct regtrack *t, const cs_x86_op *op, uint8_t width)
{
	enum tm_reg base = x86_gpr(op->mem.base);
	struct prov p = { PROV_UNKNOWN, 0, 0, 0 };

	if (op->mem.index != X86_REG_INVALID || op->mem.segment != X86_REG_INVALID ||
	    base == TM_REG_NONE)
		return p;
	if (base == TM_REG_SP)
		return (struct prov){ PROV_MEM, TM_REG_SP, width, op->mem.disp + t->sp_delta };
	if (t->r[base].kind == PROV_REG && t->r[base].width == TM_WIDTH_64)
		return (struct prov){ PROV_MEM, t->r[base].reg, width, op->mem.disp };
	return p;
}

static bool writes_memory(const cs_insn *insn)
{
	const cs_x86 *x = &insn->detail->x86;

	for (int i = 0; i < x->op_count; i++)
		if (x->operands[i].type == X86_OP_MEM && (x->operands[i].access & CS_AC_WRITE))
			return true;
	return false;
}

bool regtrack_step(csh cs, const cs_insn *insn, struct regtrack *t)
{
	const cs_x86 *x = &insn->detail->x86;
	const cs_x86_op *dst = &x->operands[0], *src = &x->operands[1];
	cs_regs read, written;
	uint8_t nread = 0, nwritten = 0;
	struct prov value = { PROV_UNKNOWN, 0, 0, 0 };
	enum tm_reg to = TM_REG_NONE;
	bool modeled = false;

	if (cs_regs_access(cs, insn, read, &nread, written, &nwritten) != CS_ERR_OK)
		return false;

	/* The stack pointer: push, pop and add/sub of a constant are followed. */
	switch (insn->id) {
	case X86_INS_PUSH:
		t->sp_delta -= 8;
		return true;
	case X86_INS_POP:
		t->sp_delta += 8;
		if (x->op_count == 1 && dst->type == X86_OP_REG)
			t->r[x86_gpr(dst->reg)] = value;
		return true;
	case X86_INS_SUB:
	case X86_INS_ADD:
		if (x->op_count == 2 && dst->type == X86_OP_REG && x86_gpr(dst->reg) == TM_REG_SP) {
			if (src->type != X86_OP_IMM)
				return false;
			t->sp_delta += insn->id == X86_INS_ADD ? src->imm : -src->imm;
			return true;
		}
		break;
	}
	for (int i = 0; i < nwritten; i++)
		if (x86_gpr(written[i]) == TM_REG_SP)
			return false;

	if (writes_memory(insn)) {
		/* a store may change any memory operand we were following */
		for (int r = 1; r < TM_REG_COUNT; r++)
			if (t->r[r].kind == PROV_MEM)
				t->r[r].kind = PROV_UNKNOWN;
	}

	if (x->op_count == 2 && dst->type == X86_OP_REG) {
		to = x86_gpr(dst->reg);
		uint8_t width = dst->size == 8 ? TM_WIDTH_64 : dst->size == 4 ? TM_WIDTH_32 : 0xff;

		if (insn->id == X86_INS_MOV && width != 0xff) {
			modeled = true;
			if (src->type == X86_OP_REG && x86_gpr(src->reg) != TM_REG_NONE && src->size == dst->size)
				value = t->r[x86_gpr(src->reg)];
			else if (src->type == X86_OP_IMM)
				value = (struct prov){ PROV_CONST, 0, TM_WIDTH_64, src->imm };
			else if (src->type == X86_OP_MEM)
				value = mem_source(t, src, TM_WIDTH_64);
			if (width == TM_WIDTH_32 && src->type != X86_OP_MEM)
				value = narrow(value, TM_WIDTH_32);
			else if (width == TM_WIDTH_32)
				value.width = value.kind == PROV_MEM ? TM_WIDTH_32 : value.width;
		} else if (insn->id == X86_INS_MOVSXD && dst->size == 8 && src->size == 4) {
			modeled = true;
			if (src->type == X86_OP_REG)
				value = narrow(t->r[x86_gpr(src->reg)], TM_WIDTH_S32);
			else if (src->type == X86_OP_MEM)
				value = mem_source(t, src, TM_WIDTH_S32);
		} else if (insn->id == X86_INS_XOR && src->type == X86_OP_REG && src->reg == dst->reg &&
			   dst->size >= 4) {
			modeled = true;
			value = (struct prov){ PROV_CONST, 0, TM_WIDTH_64, 0 };
		}
	}
	for (int i = 0; i < nwritten; i++) {
		enum tm_reg w = x86_gpr(written[i]);

		if (w != TM_REG_NONE && !(modeled && w == to))
			t->r[w] = (struct prov){ PROV_UNKNOWN, 0, 0, 0 };
	}
	if (modeled && to != TM_REG_NONE)
		t->r[to] = value;
	return true;
}

bool prov_operand(const struct prov *p, struct tm_operand *op)
{
	memset(op, 0, sizeof(*op));
	switch (p->kind) {
	case PROV_REG:
		op->type = TM_OPERAND_REG;
		break;
	case PROV_CONST:
		op->type = TM_OPERAND_CONST;
		break;
	case PROV_MEM:
		op->type = TM_OPERAND_MEM;
		break;
	default:
		return false;
	}
	op->reg = p->reg;
	op->width = p->width;
	op->value = p->value;
	return true;
}

bool regtrack_find(const struct regtrack *t, enum tm_reg reg, struct tm_operand *op)
{
	memset(op, 0, sizeof(*op));
	for (int pass = 0; pass < 2; pass++) {
		for (int r = 1; r < TM_REG_COUNT; r++) {
			const struct prov *p = &t->r[r];

			if ((pass == 0) != (r == (int)reg))
				continue;
			if (p->kind == PROV_REG && p->reg == reg && p->width == TM_WIDTH_64 && r != TM_REG_SP) {
				op->type = TM_OPERAND_REG;
				op->reg = (uint8_t)r;
				return true;
			}
		}
	}
	return false;
}
