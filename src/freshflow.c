#include <stdlib.h>
#include <string.h>
#include "freshflow.h"
#include "pymalloc.h"

/* The states one proof may visit, and the instructions a forward scan of a
 * cold fragment may read, before it gives up (and the creation stays
 * probed). */
#define FRESH_MAX_STATES 1024
#define COLD_MAX_INSNS 256
/* How far into its block an object may start (a GC object: 16 bytes). */
#define FRESH_MAX_OFFSET 64
#define FRESH_MAX_RANGES 4

/* What a register must hold, just before an instruction runs. */
enum goal {
	GOAL_BLOCK,     /* a block allocated in this call (or a pointer into one) */
	GOAL_POOL,      /* a usedpools[] entry: the pool pymalloc's fast path takes a block from */
	GOAL_ALLOCATOR, /* an allocator function, read from its slot */
};

struct state {
	uint64_t addr;
	uint8_t reg;
	uint8_t goal;
};

struct search {
	struct x86_code *code;
	struct elf_file *ef;
	const struct text_index *ix;
	const struct fresh_sources *src;
	/* the code the proof walks: the site's function, and the fragments
	 * the compiler moved out of it (.cold) that jump back into it */
	struct code_range {
		uint64_t start, end;
	} ranges[FRESH_MAX_RANGES];
	int nranges;
	struct state seen[FRESH_MAX_STATES];
	int nseen;
	struct state todo[FRESH_MAX_STATES];
	int ntodo;
	cs_insn *insn, *scratch;
};

/* The allocators a call reaches by name: the exported ones (a shared
 * build's calls through the PLT) and libc's. A realloc counts: tracemalloc
 * traces its result anew, moved or not. */
static const char *const allocating_names[] = {
	"PyObject_Malloc", "PyObject_Calloc", "PyObject_Realloc", "PyMem_Malloc", "PyMem_Calloc", "PyMem_Realloc",
	"PyMem_RawMalloc", "PyMem_RawCalloc", "PyMem_RawRealloc", "_PyObject_GC_Resize", "malloc", "calloc", "realloc",
};

void fresh_add_function(struct fresh_sources *s, uint64_t vaddr)
{
	if (vaddr && s->nfns < FRESH_MAX_FNS)
		s->fns[s->nfns++] = vaddr;
}

void fresh_add_slot(struct fresh_sources *s, uint64_t slot)
{
	if (slot && s->nslots < FRESH_MAX_SLOTS)
		s->slots[s->nslots++] = slot;
}

static bool is_callee_saved(enum tm_reg r)
{
	return r == TM_REG_BX || r == TM_REG_BP || r == TM_REG_R12 || r == TM_REG_R13 || r == TM_REG_R14 ||
	       r == TM_REG_R15;
}

/* Functions that always return NULL: a NULL given a first reference
 * crashes right after, so no creation runs on that path (`op =
 * PyErr_NoMemory(); if (op != NULL) ...`, which the compiler keeps). */
static const char *const null_names[] = { "PyErr_NoMemory", "_PyErr_NoMemory", "PyErr_Format", "_PyErr_Format" };

static bool named(const char *name, const char *const *names, size_t n)
{
	for (size_t i = 0; name && i < n; i++)
		if (strcmp(name, names[i]) == 0)
			return true;
	return false;
}

/* Does a call of `target` return a block it allocated (or NULL)? */
static bool allocating_function(struct search *s, uint64_t target)
{
	const char *name;
	uint64_t start;

	for (int i = 0; s->src && i < s->src->nfns; i++)
		if (s->src->fns[i] == target)
			return true;
	name = x86_plt_callee(s->code, s->ef, target, s->scratch);
	if (!name && (!(name = elf_symbol_at(s->ef, target, &start)) || start != target))
		return false;
	return named(name, allocating_names, sizeof(allocating_names) / sizeof(allocating_names[0])) ||
	       named(name, null_names, sizeof(null_names) / sizeof(null_names[0]));
}

static bool is_slot(const struct search *s, uint64_t addr)
{
	for (int i = 0; s->src && i < s->src->nslots; i++)
		if (s->src->slots[i] == addr)
			return true;
	return false;
}

/* The absolute address a memory operand reads when it does not depend on
 * a register but perhaps an index: [rip + d], [d], [index * scale + d]. */
static bool absolute_address(const cs_insn *insn, const cs_x86_op *op, bool index_ok, uint64_t *addr)
{
	if (op->type != X86_OP_MEM)
		return false;
	if (op->mem.base == X86_REG_RIP && op->mem.index == X86_REG_INVALID) {
		*addr = insn->address + insn->size + (uint64_t)op->mem.disp;
		return true;
	}
	if (op->mem.base != X86_REG_INVALID || (op->mem.index != X86_REG_INVALID && !index_ok) ||
	    op->mem.segment != X86_REG_INVALID)
		return false;
	*addr = (uint64_t)op->mem.disp;
	return true;
}

static bool push_state(struct search *s, uint64_t addr, enum tm_reg reg, enum goal goal)
{
	struct state st = { .addr = addr, .reg = (uint8_t)reg, .goal = (uint8_t)goal };

	if (reg == TM_REG_NONE || reg == TM_REG_SP)
		return false;
	for (int i = 0; i < s->nseen; i++)
		if (s->seen[i].addr == addr && s->seen[i].reg == st.reg && s->seen[i].goal == st.goal)
			return true; /* proven, or being proven on a path that loops back */
	if (s->nseen == FRESH_MAX_STATES || s->ntodo == FRESH_MAX_STATES)
		return false;
	s->seen[s->nseen++] = st;
	s->todo[s->ntodo++] = st;
	return true;
}

/* A call the value passes backwards through: proven if the call allocates
 * what the goal needs, carried on if the register survives calls. */
static bool through_call(struct search *s, const cs_insn *call, const struct state *st)
{
	const cs_x86_op *op = &call->detail->x86.operands[0];
	uint64_t target;

	if (st->reg != TM_REG_AX || st->goal != GOAL_BLOCK)
		return is_callee_saved(st->reg) && push_state(s, call->address, st->reg, st->goal);
	if (x86_branch_target(call, &target))
		return allocating_function(s, target);
	if (call->detail->x86.op_count != 1)
		return false;
	if (op->type == X86_OP_REG) /* call *%reg: through an allocator's slot? */
		return push_state(s, call->address, x86_gpr(op->reg), GOAL_ALLOCATOR);
	return absolute_address(call, op, false, &target) && is_slot(s, target);
}

/* An instruction that writes the register the state is about. */
static bool through_write(struct search *s, const cs_insn *insn, const struct state *st)
{
	const cs_x86 *x = &insn->detail->x86;
	const cs_x86_op *dst = &x->operands[0], *src = &x->operands[1];
	uint64_t addr;

	/* NULL: dead, as above */
	if (insn->id == X86_INS_XOR && x->op_count == 2 && dst->type == X86_OP_REG && src->type == X86_OP_REG &&
	    dst->reg == src->reg && st->goal == GOAL_BLOCK)
		return true;
	if (x->op_count != 2 || dst->type != X86_OP_REG || dst->size != 8)
		return false;
	if (insn->id == X86_INS_MOV && src->type == X86_OP_REG && src->size == 8)
		return push_state(s, insn->address, x86_gpr(src->reg), st->goal);
	switch (st->goal) {
	case GOAL_BLOCK:
		/* an object a few bytes into its block */
		if (insn->id == X86_INS_LEA && src->mem.base != X86_REG_RIP && src->mem.base != X86_REG_INVALID &&
		    src->mem.index == X86_REG_INVALID && src->mem.disp >= 0 && src->mem.disp <= FRESH_MAX_OFFSET)
			return push_state(s, insn->address, x86_gpr(src->mem.base), GOAL_BLOCK);
		if (insn->id == X86_INS_ADD && src->type == X86_OP_IMM && src->imm >= 0 &&
		    src->imm <= FRESH_MAX_OFFSET)
			return push_state(s, insn->address, st->reg, GOAL_BLOCK);
		/* `op = (char *)mem + presize`, the GC's and managed dicts' header
		 * (16 or 32 bytes, from the type's flags): C's pointer arithmetic
		 * keeps the result inside the block the pointer operand points
		 * into, and the pointer operand must itself be proven a block */
		if (insn->id == X86_INS_ADD && src->type == X86_OP_REG && src->size == 8)
			return push_state(s, insn->address, st->reg, GOAL_BLOCK);
		/* pymalloc's fast path: bp = pool->freeblock */
		if (insn->id == X86_INS_MOV && src->type == X86_OP_MEM && src->size == 8 && s->src &&
		    s->src->usedpools && src->mem.base != X86_REG_RIP && src->mem.base != X86_REG_INVALID &&
		    src->mem.index == X86_REG_INVALID && src->mem.segment == X86_REG_INVALID &&
		    src->mem.disp == POOL_FREEBLOCK)
			return push_state(s, insn->address, x86_gpr(src->mem.base), GOAL_POOL);
		return false;
	case GOAL_POOL:
		return insn->id == X86_INS_MOV && s->src && absolute_address(insn, src, true, &addr) &&
		       addr >= s->src->usedpools && addr < s->src->usedpools + 16 * PYMALLOC_SIZE_CLASSES;
	case GOAL_ALLOCATOR:
		return insn->id == X86_INS_MOV && absolute_address(insn, src, false, &addr) && is_slot(s, addr);
	}
	return false;
}

static bool writes_reg(struct search *s, const cs_insn *insn, enum tm_reg reg)
{
	cs_regs read, written;
	uint8_t nread = 0, nwritten = 0;

	if (cs_regs_access(s->code->cs, insn, read, &nread, written, &nwritten) != CS_ERR_OK)
		return true; /* unknown: as if it did */
	for (int i = 0; i < nwritten; i++)
		if (x86_gpr(written[i]) == reg)
			return true;
	return false;
}

/* Does control reach the end of `insn` and go on to the next one? */
static bool falls_through(const cs_insn *insn)
{
	if (insn->id == X86_INS_CALL || x86_is_jcc(insn))
		return true;
	return !x86_is_branch(insn) && insn->id != X86_INS_UD2 && insn->id != X86_INS_HLT;
}

/* A function's first instruction: a symbol's, or a call's target. */
static bool is_function_entry(const struct search *s, uint64_t addr)
{
	uint64_t start;

	if (elf_symbol_at(s->ef, addr, &start) && start == addr)
		return true;
	for (size_t e = text_first_edge_to(s->ix, addr); e < s->ix->nedges && s->ix->edges[e].to == addr; e++)
		if (s->ix->edges[e].kind == EDGE_CALL)
			return true;
	return false;
}

static int range_of(const struct search *s, uint64_t addr)
{
	for (int r = 0; r < s->nranges; r++)
		if (addr >= s->ranges[r].start && addr < s->ranges[r].end)
			return r;
	return -1;
}

/* A fragment of the function's own, moved away: `from` lies in code that
 * jumps into the proof's code, whose start only the proof's code jumps to.
 * (A separate function that the proof's code tail-calls never jumps back
 * into the middle of its caller.) */
static bool add_fragment(struct search *s, uint64_t from)
{
	struct code_range r;
	bool reached = false;

	if (!s->src || !s->src->cfi || s->nranges == FRESH_MAX_RANGES ||
	    cfi_code_range(s->src->cfi, from, &r.start, &r.end) || is_function_entry(s, r.start))
		return false;
	for (size_t e = text_first_edge_to(s->ix, r.start); e < s->ix->nedges && s->ix->edges[e].to == r.start; e++) {
		if (range_of(s, s->ix->edges[e].from) < 0)
			return false;
		reached = true;
	}
	if (reached)
		s->ranges[s->nranges++] = r;
	return reached;
}

/* Every way into the instruction at st->addr, each a new state to prove. */
static bool step_back(struct search *s, const struct state *st)
{
	size_t at = text_insn_index(s->ix, st->addr);
	int r = range_of(s, st->addr);

	/* a function's entry: the value came from the caller */
	if (r < 0 || at >= s->ix->ninsns || s->ix->insns[at] != st->addr || st->addr == s->ranges[0].start ||
	    is_function_entry(s, st->addr))
		return false;
	for (size_t e = text_first_edge_to(s->ix, st->addr); e < s->ix->nedges && s->ix->edges[e].to == st->addr;
	     e++) {
		const struct edge *br = &s->ix->edges[e];

		/* a jump from code the proof does not see */
		if (range_of(s, br->from) < 0 && !add_fragment(s, br->from))
			return false;
		if (!push_state(s, br->from, (enum tm_reg)st->reg, (enum goal)st->goal))
			return false;
	}
	/* nothing falls into it: reached by the edges above, or by none (padding
	 * after a return; no indirect jump lands here, see no_hidden_entries) */
	if (st->addr == s->ranges[r].start || at == 0 || !x86_decode(s->code, s->ix->insns[at - 1], s->insn) ||
	    s->insn->address + s->insn->size != st->addr || !falls_through(s->insn))
		return true;
	if (s->insn->id == X86_INS_CALL)
		return through_call(s, s->insn, st);
	if (x86_is_jcc(s->insn) || !writes_reg(s, s->insn, (enum tm_reg)st->reg))
		return push_state(s, s->insn->address, (enum tm_reg)st->reg, (enum goal)st->goal);
	return through_write(s, s->insn, st);
}

static bool cold_has_indirect_jump(struct search *s, uint64_t entry)
{
	uint64_t pending[32], addr, target;
	int npending = 0, budget = COLD_MAX_INSNS;

	pending[npending++] = entry;
	while (npending) {
		addr = pending[--npending];
		while (range_of(s, addr) < 0) {
			if (budget-- == 0 || !x86_decode(s->code, addr, s->insn))
				return true;
			if (s->insn->id == X86_INS_JMP && !x86_branch_target(s->insn, &target))
				return true;
			if (s->insn->id == X86_INS_RET || s->insn->id == X86_INS_UD2 || s->insn->id == X86_INS_HLT)
				break;
			if (s->insn->id == X86_INS_JMP) {
				addr = target;
				continue;
			}
			if (x86_is_jcc(s->insn) && x86_branch_target(s->insn, &target)) {
				if (npending == 32)
					return true;
				pending[npending++] = target;
			}
			addr = s->insn->address + s->insn->size;
		}
	}
	return false;
}

/* An indirect jump (a switch's table) may land on any instruction of its
 * function, which the index of direct edges does not show: none may be in
 * the proof's code, nor in the cold fragments it jumps out to. One pass
 * over the code looks for both. */
static bool no_hidden_entries(struct search *s)
{
	uint64_t target;

	for (int r = 0; r < s->nranges; r++) {
		for (size_t i = text_insn_index(s->ix, s->ranges[r].start);
		     i < s->ix->ninsns && s->ix->insns[i] < s->ranges[r].end; i++) {
			if (!x86_decode(s->code, s->ix->insns[i], s->insn))
				return false;
			if (!(s->insn->id == X86_INS_JMP || x86_is_jcc(s->insn)))
				continue;
			if (!x86_branch_target(s->insn, &target))
				return false; /* jmp *%reg, jmp *mem */
			if (range_of(s, target) >= 0 || is_function_entry(s, target))
				continue; /* inside, or a tail call */
			if (cold_has_indirect_jump(s, target))
				return false;
		}
	}
	return true;
}

/* The code around `site` the proof may walk: its FDE's (a stripped
 * binary's static functions have no symbol), else its symbol's. */
static bool function_bounds(struct search *s, uint64_t site)
{
	struct code_range *r = &s->ranges[0];

	s->nranges = 1;
	if (s->src && s->src->cfi && cfi_code_range(s->src->cfi, site, &r->start, &r->end) == 0)
		return true;
	return elf_function_at(s->ef, site, &r->start, &r->end) != NULL;
}

bool fresh_at(struct x86_code *code, struct elf_file *ef, const struct text_index *ix,
	      const struct fresh_sources *sources, uint64_t site, enum tm_reg reg)
{
	struct search *s = calloc(1, sizeof(*s)); /* 32 KiB of states */
	bool proven = s != NULL;

	if (!s)
		return false;
	s->code = code, s->ef = ef, s->ix = ix, s->src = sources;
	s->insn = cs_malloc(code->cs);
	s->scratch = cs_malloc(code->cs);
	if (!s->insn || !s->scratch || !function_bounds(s, site) ||
	    !push_state(s, site, reg, GOAL_BLOCK))
		proven = false;
	while (proven && s->ntodo) {
		struct state st = s->todo[--s->ntodo];

		proven = step_back(s, &st);
	}
	/* last, as it reads the whole function */
	proven = proven && no_hidden_entries(s);
	if (s->insn)
		cs_free(s->insn, 1);
	if (s->scratch)
		cs_free(s->scratch, 1);
	free(s);
	return proven;
}
