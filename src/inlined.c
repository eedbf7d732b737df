#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "inlined.h"
#include "regtrack.h"

const char *const inlined_verdict_names[INLINED_VERDICTS] = {
	[INLINED_OK] = "probed",
	[INLINED_NO_CALL] = "other path not followed to its call",
	[INLINED_OPERAND] = "operand not proven",
	[INLINED_FAST_PATH] = "fast path not recognized",
	[INLINED_NO_MERGE] = "result join not proven",
	[INLINED_STACK] = "stack pointer not proven",
	[INLINED_RAW_ONLY] = "always large: seen through the raw copy it calls",
};

#define SLOW_PATH_MAX 24
#define RESULT_WALK_MAX 16
#define FAST_PATH_MAX 48
#define JUMPS_MAX 4

bool inlined_needs_result(const struct alloc_function *fn, const struct pymalloc_info *pm)
{
	if (fn->kind == TM_CALL_FREE)
		return false;
	/* pymalloc copies: predicted at the guard (malloc, calloc), or
	 * decided there with their nested calls doing the rest (realloc) */
	if (fn->family == TM_FAMILY_PYMALLOC && pm->usedpools)
		return false;
	return true;
}

static int add_copy(struct inlined_set *s, const struct inlined_copy *c)
{
	if (s->count == s->cap) {
		int cap = s->cap ? s->cap * 2 : 256;
		struct inlined_copy *grown = realloc(s->copies, (size_t)cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		s->copies = grown;
		s->cap = cap;
	}
	s->copies[s->count++] = *c;
	return 0;
}

void inlined_free(struct inlined_set *s)
{
	free(s->copies);
	memset(s, 0, sizeof(*s));
}

/* The guard's other path, from its first instruction to the call through
 * the allocator pointer, with registers tracked from the guard: where the
 * call's operands (%rsi, %rdx; %rdi is ctx) were at the guard. *after is
 * the instruction after a `call` (0 for a tail `jmp`). */
static enum inlined_verdict slow_path(struct x86_code *code, uint64_t start, enum tm_reg guard_reg,
				      struct regtrack *t, uint64_t *after, cs_insn *insn)
{
	uint64_t addr = start, target;
	int jumps = 0;

	regtrack_init(t);
	for (int i = 0; i < SLOW_PATH_MAX && x86_decode(code, addr, insn); i++) {
		const cs_x86 *x = &insn->detail->x86;

		addr = insn->address + insn->size;
		if ((insn->id == X86_INS_CALL || insn->id == X86_INS_JMP) && x->op_count == 1 &&
		    x->operands[0].type == X86_OP_REG) {
			const struct prov *p = &t->r[x86_gpr(x->operands[0].reg)];

			if (p->kind != PROV_REG || p->reg != guard_reg || p->width != TM_WIDTH_64)
				return INLINED_NO_CALL;
			*after = insn->id == X86_INS_CALL ? addr : 0;
			return INLINED_OK;
		}
		if (insn->id == X86_INS_JMP && x86_branch_target(insn, &target) && jumps++ < JUMPS_MAX) {
			addr = target;
			continue;
		}
		if (x86_is_branch(insn) || !regtrack_step(code->cs, insn, t))
			return INLINED_NO_CALL;
	}
	return INLINED_NO_CALL;
}

/* After the slow path's call: follow the result (%rax and the registers it
 * is copied to) to where it joins the inlined path: an unconditional jump,
 * or the non-NULL branch of a NULL test. The join register is the last one
 * the result was moved into, as the compiler's phi for both paths. */
static enum inlined_verdict find_join(struct x86_code *code, uint64_t after, uint64_t *join,
				      enum tm_reg *join_reg, cs_insn *insn)
{
	uint32_t holders = 1u << TM_REG_AX;
	enum tm_reg last = TM_REG_AX;
	enum tm_reg tested = TM_REG_NONE;
	uint64_t addr = after, target;

	for (int i = 0; i < RESULT_WALK_MAX && x86_decode(code, addr, insn); i++) {
		const cs_x86 *x = &insn->detail->x86;
		cs_regs read, written;
		uint8_t nread = 0, nwritten = 0;

		addr = insn->address + insn->size;
		if (insn->id == X86_INS_JMP && x86_branch_target(insn, &target)) {
			*join = target;
			*join_reg = last;
			return INLINED_OK;
		}
		if (x86_is_jcc(insn) && tested != TM_REG_NONE && x86_branch_target(insn, &target)) {
			if (insn->id == X86_INS_JNE) {
				*join = target;
				*join_reg = last;
				return INLINED_OK;
			}
			if (insn->id == X86_INS_JE) { /* NULL goes away; non-NULL falls through */
				tested = TM_REG_NONE;
				continue;
			}
			return INLINED_NO_MERGE;
		}
		if (x86_is_branch(insn))
			return INLINED_NO_MERGE;
		if (insn->id == X86_INS_TEST && x->op_count == 2 && x->operands[0].type == X86_OP_REG &&
		    x->operands[1].type == X86_OP_REG && x->operands[0].reg == x->operands[1].reg &&
		    (holders & (1u << x86_gpr(x->operands[0].reg)))) {
			tested = x86_gpr(x->operands[0].reg);
			continue;
		}
		tested = TM_REG_NONE;
		if (insn->id == X86_INS_MOV && x->op_count == 2 && x->operands[0].type == X86_OP_REG &&
		    x->operands[1].type == X86_OP_REG && x->operands[0].size == 8 &&
		    (holders & (1u << x86_gpr(x->operands[1].reg)))) {
			last = x86_gpr(x->operands[0].reg);
			holders |= 1u << last;
			continue;
		}
		if (cs_regs_access(code->cs, insn, read, &nread, written, &nwritten) != CS_ERR_OK)
			return INLINED_NO_MERGE;
		for (int w = 0; w < nwritten; w++) {
			enum tm_reg r = x86_gpr(written[w]);

			if (r == TM_REG_SP)
				return INLINED_NO_MERGE;
			holders &= ~(1u << r);
		}
		if (!(holders & (1u << last)))
			return INLINED_NO_MERGE;
	}
	return INLINED_NO_MERGE;
}

/* From the join, the first instruction the kernel emulates, with the
 * result still in its register and the stack pointer where it was. */
static enum inlined_verdict return_site(struct x86_code *code, uint64_t join, enum tm_reg reg,
					uint64_t *site, cs_insn *insn)
{
	uint64_t addr = join;

	for (int i = 0; i < RESULT_WALK_MAX && x86_decode(code, addr, insn); i++) {
		cs_regs read, written;
		uint8_t nread = 0, nwritten = 0;

		if (x86_uprobe_emulated(insn)) {
			*site = insn->address;
			return INLINED_OK;
		}
		if (x86_is_branch(insn) ||
		    cs_regs_access(code->cs, insn, read, &nread, written, &nwritten) != CS_ERR_OK)
			return INLINED_NO_MERGE;
		for (int w = 0; w < nwritten; w++) {
			enum tm_reg r = x86_gpr(written[w]);

			if (r == reg || r == TM_REG_SP)
				return INLINED_NO_MERGE;
		}
		addr = insn->address + insn->size;
	}
	return INLINED_NO_MERGE;
}

/* The inlined pymalloc fast path: it must load usedpools[2 * class] (the
 * class the size operand gives, when it is a constant), compare the pool
 * with its nextpool, and on an empty list call allocate_from_new_pool. */
static enum inlined_verdict check_fast_path(struct x86_code *code, uint64_t start, const struct tm_operand *size,
					    const struct pymalloc_info *pm, cs_insn *insn)
{
	uint64_t lea[TM_REG_COUNT] = { 0 }, addr = start, target, empty = 0;
	enum tm_reg pool = TM_REG_NONE, next = TM_REG_NONE;
	int jumps = 0;

	for (int i = 0; i < FAST_PATH_MAX && !empty && x86_decode(code, addr, insn); i++) {
		const cs_x86 *x = &insn->detail->x86;
		const cs_x86_op *d = &x->operands[0], *s = &x->operands[1];

		addr = insn->address + insn->size;
		if (insn->id == X86_INS_LEA && x->op_count == 2 && d->type == X86_OP_REG) {
			lea[x86_gpr(d->reg)] = 0;
			x86_rip_target(insn, &lea[x86_gpr(d->reg)]);
			continue;
		}
		if (insn->id == X86_INS_MOV && x->op_count == 2 && d->type == X86_OP_REG && d->size == 8 &&
		    s->type == X86_OP_MEM) {
			uint64_t base = s->mem.base == X86_REG_INVALID ? 0 :
					s->mem.base == X86_REG_RIP ? insn->address + insn->size :
					lea[x86_gpr(s->mem.base)];
			uint64_t slot = base + (uint64_t)s->mem.disp;
			unsigned cls;

			if (pool == TM_REG_NONE && (s->mem.base == X86_REG_INVALID || base) &&
			    (s->mem.index != X86_REG_INVALID ? slot == pm->usedpools :
			     pymalloc_usedpools_slot(pm, slot, &cls))) {
				if (s->mem.index == X86_REG_INVALID && size->type == TM_OPERAND_CONST &&
				    (uint64_t)(size->value - 1) >> PYMALLOC_ALIGNMENT_SHIFT != cls)
					return INLINED_FAST_PATH; /* folded class disagrees */
				pool = x86_gpr(d->reg);
				continue;
			}
			if (pool != TM_REG_NONE && x86_gpr(s->mem.base) == pool && s->mem.disp == POOL_NEXTPOOL &&
			    s->mem.index == X86_REG_INVALID)
				next = x86_gpr(d->reg);
			else if (x86_gpr(d->reg) == pool)
				pool = TM_REG_NONE;
			continue;
		}
		if (insn->id == X86_INS_CMP && pool == TM_REG_NONE && x->op_count == 2 && s->type == X86_OP_IMM &&
		    ((uint64_t)s->imm == pm->raw_fns[0] || (uint64_t)s->imm == pm->raw_fns[1]))
			return INLINED_RAW_ONLY; /* the compiler knew the size was large */
		if (insn->id == X86_INS_CMP && next != TM_REG_NONE && x->op_count == 2 &&
		    d->type == X86_OP_REG && s->type == X86_OP_REG) {
			enum tm_reg r0 = x86_gpr(d->reg), r1 = x86_gpr(s->reg);

			if (!((r0 == pool && r1 == next) || (r0 == next && r1 == pool)))
				continue;
			if (!x86_decode(code, addr, insn) || !x86_branch_target(insn, &target))
				return INLINED_FAST_PATH;
			if (insn->id == X86_INS_JE)
				empty = target;
			else if (insn->id == X86_INS_JNE)
				empty = insn->address + insn->size;
			else
				return INLINED_FAST_PATH;
			break;
		}
		if (insn->id == X86_INS_JMP && x86_branch_target(insn, &target) && jumps++ < JUMPS_MAX) {
			addr = target;
			continue;
		}
		if (insn->id == X86_INS_RET || (x86_is_branch(insn) && !x86_is_jcc(insn)))
			return INLINED_FAST_PATH;
		/* other conditional branches (size checks): the pool path
		 * falls through */
	}
	for (int i = 0; empty && i < 8 && x86_decode(code, empty, insn); i++) {
		empty = insn->address + insn->size;
		if (insn->id == X86_INS_JMP && x86_branch_target(insn, &target)) {
			empty = target;
			continue;
		}
		if (insn->id == X86_INS_CALL && x86_branch_target(insn, &target))
			return target == pm->new_pool_fn ? INLINED_OK : INLINED_FAST_PATH;
		if (x86_is_branch(insn))
			break;
	}
	return INLINED_FAST_PATH;
}

/* Loosely: does either side of the branch call or jump through `reg`
 * within a few instructions? Tells a guard whose slow path could not be
 * followed exactly from a comparison that is no guard at all. */
static bool calls_through(struct x86_code *code, const cs_insn *jcc, enum tm_reg reg, cs_insn *insn)
{
	uint64_t starts[2] = { jcc->address + jcc->size, 0 };

	x86_branch_target(jcc, &starts[1]);
	for (int s = 0; s < 2; s++) {
		uint64_t addr = starts[s];

		for (int i = 0; i < 12 && x86_decode(code, addr, insn); i++) {
			const cs_x86 *x = &insn->detail->x86;

			if ((insn->id == X86_INS_CALL || insn->id == X86_INS_JMP) && x->op_count == 1 &&
			    x->operands[0].type == X86_OP_REG && x86_gpr(x->operands[0].reg) == reg)
				return true;
			if (insn->id == X86_INS_RET || insn->id == X86_INS_JMP)
				break;
			addr = insn->address + insn->size;
		}
	}
	return false;
}

static const char *libc_name(enum tm_call_kind kind)
{
	switch (kind) {
	case TM_CALL_MALLOC: return "malloc";
	case TM_CALL_CALLOC: return "calloc";
	case TM_CALL_REALLOC: return "realloc";
	default: return "free";
	}
}

/* A raw copy's fast path is a direct call of libc's function: its result
 * is in %rax right after the call. The site is the first instruction the
 * kernel emulates from there, with the result (or a copy) intact. A tail
 * jump to it instead sets *tail to the jump (a uretprobe goes there).
 * Conditional branches on the way (a zero-size special case) are passed
 * by their fall-through; a call that takes the other way is counted as
 * abandoned by BPF. */
static enum inlined_verdict raw_fast_call(struct x86_code *code, struct elf_file *ef, uint64_t fast,
					  enum tm_call_kind kind, uint64_t *site, enum tm_reg *reg,
					  uint64_t *tail, cs_insn *insn)
{
	uint64_t addr = fast, target;
	int jumps = 0;
	bool found = false;

	*tail = 0;
	for (int i = 0; i < RESULT_WALK_MAX && !found && x86_decode(code, addr, insn); i++) {
		bool call = insn->id == X86_INS_CALL;
		uint64_t here = insn->address;

		addr = insn->address + insn->size;
		if ((call || insn->id == X86_INS_JMP) && x86_branch_target(insn, &target)) {
			const char *name = x86_plt_callee(code, ef, target, insn);

			if (name && strcmp(name, libc_name(kind)) == 0) {
				if (!call) {
					*tail = here;
					return INLINED_OK;
				}
				found = true;
				continue;
			}
			if (call || jumps++ >= JUMPS_MAX)
				return INLINED_NO_MERGE;
			addr = target;
			continue;
		}
		if (x86_is_jcc(insn))
			continue;
		if (x86_is_branch(insn))
			return INLINED_NO_MERGE;
		/* the tail-jump case may pop its frame first; a call may not */
	}
	if (!found)
		return INLINED_NO_MERGE;
	/* after the call: follow %rax to the first emulated instruction */
	uint32_t holders = 1u << TM_REG_AX;

	for (int i = 0; i < RESULT_WALK_MAX && x86_decode(code, addr, insn); i++) {
		const cs_x86 *x = &insn->detail->x86;
		cs_regs read, written;
		uint8_t nread = 0, nwritten = 0;

		if (x86_uprobe_emulated(insn)) {
			*site = insn->address;
			*reg = (holders & (1u << TM_REG_AX)) ? TM_REG_AX : TM_REG_NONE;
			for (int r = 1; *reg == TM_REG_NONE && r < TM_REG_COUNT; r++)
				if (holders & (1u << r))
					*reg = (enum tm_reg)r;
			return *reg == TM_REG_NONE ? INLINED_NO_MERGE : INLINED_OK;
		}
		if (x86_is_branch(insn) ||
		    cs_regs_access(code->cs, insn, read, &nread, written, &nwritten) != CS_ERR_OK)
			return INLINED_NO_MERGE;
		bool copy = insn->id == X86_INS_MOV && x->op_count == 2 && x->operands[0].type == X86_OP_REG &&
			    x->operands[1].type == X86_OP_REG && x->operands[0].size == 8 &&
			    (holders & (1u << x86_gpr(x->operands[1].reg)));
		for (int w = 0; w < nwritten; w++) {
			enum tm_reg r = x86_gpr(written[w]);

			if (r == TM_REG_SP)
				return INLINED_NO_MERGE;
			holders &= ~(1u << r);
		}
		if (copy)
			holders |= 1u << x86_gpr(x->operands[0].reg);
		if (!holders)
			return INLINED_NO_MERGE;
		addr = insn->address + insn->size;
	}
	return INLINED_NO_MERGE;
}

static enum tm_reg operand_reg(enum tm_call_kind kind, int which)
{
	/* PyMemAllocatorEx functions take (ctx, a, b) */
	if (which == 0)
		return TM_REG_SI;
	return (kind == TM_CALL_CALLOC || kind == TM_CALL_REALLOC) ? TM_REG_DX : TM_REG_NONE;
}

static void analyse(struct x86_code *code, struct elf_file *ef, struct cfi *cfi, const struct alloc_function *fn,
		    const struct pymalloc_info *pm, struct inlined_copy *c, const cs_insn *jcc, cs_insn *insn)
{
	uint64_t target, slow, fast, after = 0, join = 0;
	enum tm_reg need_b = operand_reg(fn->kind, 1), join_reg = TM_REG_NONE;
	struct regtrack t;
	int64_t off_site, off_ret;
	static const struct tm_operand no_constant = { .type = TM_OPERAND_NONE };

	x86_branch_target(jcc, &target);
	slow = jcc->id == X86_INS_JNE ? target : jcc->address + jcc->size;
	fast = jcc->id == X86_INS_JNE ? jcc->address + jcc->size : target;

	c->verdict = slow_path(code, slow, c->guard_reg, &t, &after, insn);
	if (c->verdict)
		return;
	if (!prov_operand(&t.r[TM_REG_SI], &c->a) ||
	    (need_b != TM_REG_NONE && !prov_operand(&t.r[need_b], &c->b))) {
		c->verdict = INLINED_OPERAND;
		return;
	}
	if (!inlined_needs_result(fn, pm)) {
		if (fn->kind == TM_CALL_MALLOC || fn->kind == TM_CALL_CALLOC)
			c->verdict = check_fast_path(code, fast, fn->kind == TM_CALL_MALLOC ? &c->a : &no_constant,
						     pm, insn);
		return;
	}
	if (fn->family == TM_FAMILY_RAW) {
		uint64_t tail;
		enum tm_reg reg = TM_REG_NONE;

		c->verdict = raw_fast_call(code, ef, fast, fn->kind, &c->return_site, &reg, &tail, insn);
		if (c->verdict)
			return;
		if (!tail) {
			c->result = (struct tm_operand){ .type = TM_OPERAND_REG, .reg = reg };
			goto stack;
		}
		/* A tail jump to libc: the result goes to this function's
		 * caller. At the jump the frame is gone and [rsp] is the
		 * return address (CFA offset 8), so a uretprobe there
		 * catches it; the stack pointer then is the CFA. */
		if (!cfi || cfi_sp_offset(cfi, tail, &off_ret) || off_ret != 8 ||
		    cfi_sp_offset(cfi, c->site, &off_site)) {
			c->verdict = INLINED_STACK;
			return;
		}
		c->return_site = tail;
		c->return_uretprobe = true;
		c->result = (struct tm_operand){ .type = TM_OPERAND_REG, .reg = TM_REG_AX };
		c->sp_delta = (int32_t)off_site;
		return;
	}
	if (!after) {
		/* A tail call: the result goes straight to this function's
		 * caller. Where the stack pointer has not moved since the
		 * entry, [rsp] is that caller's return address, and a
		 * uretprobe at the guard itself catches the result. */
		if (!cfi || cfi_sp_offset(cfi, c->site, &off_site) || off_site != 8) {
			c->verdict = INLINED_NO_MERGE;
			return;
		}
		c->return_site = c->site;
		c->return_uretprobe = true;
		c->result = (struct tm_operand){ .type = TM_OPERAND_REG, .reg = TM_REG_AX };
		c->sp_delta = (int32_t)off_site; /* at the return, sp is the CFA */
		return;
	}
	c->verdict = find_join(code, after, &join, &join_reg, insn);
	if (!c->verdict)
		c->verdict = return_site(code, join, join_reg, &c->return_site, insn);
	if (c->verdict)
		return;
	c->result = (struct tm_operand){ .type = TM_OPERAND_REG, .reg = join_reg };
stack:
	/* The stack pointer at the return site against the guard's, from the
	 * call-frame information: both must be known offsets from the CFA. */
	if (!cfi || cfi_sp_offset(cfi, c->site, &off_site) || cfi_sp_offset(cfi, c->return_site, &off_ret)) {
		c->verdict = INLINED_STACK;
		return;
	}
	c->sp_delta = (int32_t)(off_site - off_ret);
}

int inlined_find(struct x86_code *code, struct elf_file *ef, struct cfi *cfi, const struct alloc_function *fns, int nfns,
		 const struct pymalloc_info *pm, struct inlined_set *out)
{
	uint64_t lea_target[TM_REG_COUNT];
	cs_insn *insn = cs_malloc(code->cs), *next = cs_malloc(code->cs), *work = cs_malloc(code->cs);
	int err = 0;

	memset(out, 0, sizeof(*out));
	if (!insn || !next || !work) {
		err = -ENOMEM;
		goto out;
	}
	for (int v = 0; v < code->nviews && !err; v++) {
		const uint8_t *p = code->views[v].data;
		size_t left = code->views[v].size;
		uint64_t addr = code->views[v].vaddr;

		memset(lea_target, 0, sizeof(lea_target));
		while (left > 0 && !err) {
			if (!cs_disasm_iter(code->cs, &p, &left, &addr, insn)) {
				p++, left--, addr++; /* data or padding: resynchronize */
				continue;
			}
			const cs_x86 *x = &insn->detail->x86;
			uint64_t target = 0;
			enum tm_reg pointer = TM_REG_NONE;

			if (insn->id == X86_INS_LEA && x->op_count == 2 && x->operands[0].type == X86_OP_REG) {
				uint64_t t = 0;

				x86_rip_target(insn, &t);
				lea_target[x86_gpr(x->operands[0].reg)] = t;
				continue;
			}
			if (x86_is_branch(insn)) {
				memset(lea_target, 0, sizeof(lea_target));
				continue;
			}
			if (insn->id != X86_INS_CMP || x->op_count != 2 || x->operands[0].type != X86_OP_REG)
				continue;
			/* `cmp $fn,%reg` (non-PIE) or `cmp %lea_fn,%reg` (PIE) */
			if (x->operands[1].type == X86_OP_IMM) {
				target = (uint64_t)x->operands[1].imm;
				pointer = x86_gpr(x->operands[0].reg);
			} else if (x->operands[1].type == X86_OP_REG) {
				enum tm_reg r0 = x86_gpr(x->operands[0].reg), r1 = x86_gpr(x->operands[1].reg);

				if (lea_target[r1])
					target = lea_target[r1], pointer = r0;
				else if (lea_target[r0])
					target = lea_target[r0], pointer = r1;
			}
			if (!target || pointer == TM_REG_NONE || pointer == TM_REG_SP)
				continue;
			int f = -1;
			for (int i = 0; i < nfns; i++)
				if (fns[i].vaddr == target)
					f = i;
			if (f < 0 || !x86_decode(code, addr, next) ||
			    (next->id != X86_INS_JE && next->id != X86_INS_JNE) || !x86_branch_target(next, &target))
				continue;

			struct inlined_copy c = {
				.function = f,
				.cmp = insn->address,
				.site = next->address,
				.guard_reg = pointer,
			};
			analyse(code, ef, cfi, &fns[f], pm, &c, next, work);
			/* comparisons that are not guards (allocator
			 * introspection) never call through the pointer */
			if (c.verdict == INLINED_NO_CALL && !calls_through(code, next, pointer, work))
				continue;
			err = add_copy(out, &c);
		}
	}
out:
	if (insn)
		cs_free(insn, 1);
	if (next)
		cs_free(next, 1);
	if (work)
		cs_free(work, 1);
	return err;
}
