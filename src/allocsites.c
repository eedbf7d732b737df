#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "allocsites.h"
#include "remote.h"
#include "x86.h"

struct wrapper {
	const char *name;
	enum tm_call_kind kind;
	enum tm_family family;
	unsigned field; /* offset of the function pointer in PyMemAllocatorEx */
};

/* PyMemAllocatorEx is {ctx, malloc, calloc, realloc, free}. The mem domain
 * shares pymalloc's functions in release builds; duplicates are merged. */
static const struct wrapper wrappers[] = {
	{ "PyObject_Malloc", TM_CALL_MALLOC, TM_FAMILY_PYMALLOC, 8 },
	{ "PyObject_Calloc", TM_CALL_CALLOC, TM_FAMILY_PYMALLOC, 16 },
	{ "PyObject_Realloc", TM_CALL_REALLOC, TM_FAMILY_PYMALLOC, 24 },
	{ "PyObject_Free", TM_CALL_FREE, TM_FAMILY_PYMALLOC, 32 },
	{ "PyMem_Malloc", TM_CALL_MALLOC, TM_FAMILY_PYMALLOC, 8 },
	{ "PyMem_Calloc", TM_CALL_CALLOC, TM_FAMILY_PYMALLOC, 16 },
	{ "PyMem_Realloc", TM_CALL_REALLOC, TM_FAMILY_PYMALLOC, 24 },
	{ "PyMem_Free", TM_CALL_FREE, TM_FAMILY_PYMALLOC, 32 },
	{ "PyMem_RawMalloc", TM_CALL_MALLOC, TM_FAMILY_RAW, 8 },
	{ "PyMem_RawCalloc", TM_CALL_CALLOC, TM_FAMILY_RAW, 16 },
	{ "PyMem_RawRealloc", TM_CALL_REALLOC, TM_FAMILY_RAW, 24 },
	{ "PyMem_RawFree", TM_CALL_FREE, TM_FAMILY_RAW, 32 },
};

#define WRAPPER_MAX_BYTES 256

/* The allocator-struct slot a wrapper calls through: `jmp *slot(%rip)`, or
 * `mov slot(%rip),%reg` followed by `call *%reg` or, in PGO builds, by the
 * guard `cmp $default,%reg`. The ctx load (`mov base(%rip),%rdi`) must
 * agree with the slot's field offset. */
static int wrapper_slot(csh cs, struct elf_file *ef, uint64_t vaddr, unsigned field, uint64_t *slot)
{
	uint8_t code[WRAPPER_MAX_BYTES];
	uint64_t loaded[TM_REG_COUNT] = { 0 }, rip_loads[48], found = 0;
	int nloads = 0;
	const uint8_t *p = code;
	size_t left = sizeof(code);
	uint64_t addr = vaddr;
	cs_insn *insn = cs_malloc(cs);
	int err = -ENOENT;

	if (!insn)
		return -ENOMEM;
	if (elf_read(ef, vaddr, code, sizeof(code)) && elf_read(ef, vaddr, code, 64)) {
		cs_free(insn, 1);
		return -ERANGE;
	}
	for (int i = 0; i < 48 && !found && cs_disasm_iter(cs, &p, &left, &addr, insn); i++) {
		const cs_x86 *x = &insn->detail->x86;
		uint64_t target;

		if (insn->id == X86_INS_MOV && x->op_count == 2 && x->operands[0].type == X86_OP_REG &&
		    x86_rip_target(insn, &target)) {
			enum tm_reg r = x86_gpr(x->operands[0].reg);

			loaded[r] = target;
			rip_loads[nloads++] = target;
			continue;
		}
		if ((insn->id == X86_INS_JMP || insn->id == X86_INS_CALL) && x->op_count == 1) {
			if (x86_rip_target(insn, &target))
				found = target;
			else if (x->operands[0].type == X86_OP_REG)
				found = loaded[x86_gpr(x->operands[0].reg)];
			if (!found && insn->id == X86_INS_JMP && x->operands[0].type != X86_OP_IMM)
				break;
			continue;
		}
		if (insn->id == X86_INS_CMP && x->op_count == 2 && x->operands[0].type == X86_OP_REG &&
		    x->operands[1].type == X86_OP_IMM)
			found = loaded[x86_gpr(x->operands[0].reg)];
		if (insn->id == X86_INS_RET)
			break;
	}
	cs_free(insn, 1);
	/* The wrapper also loads the struct's ctx field for the call. */
	for (int i = 0; found && i < nloads; i++) {
		if (rip_loads[i] == found - field) {
			*slot = found;
			err = 0;
		}
	}
	return err;
}

int alloc_functions_find(struct elf_file *ef, pid_t pid, uint64_t bias,
			 struct alloc_function *out, int max, int *count)
{
	csh cs;
	int n = 0, err = 0;

	if (x86_open(&cs))
		return -EINVAL;
	for (size_t i = 0; i < sizeof(wrappers) / sizeof(wrappers[0]); i++) {
		const struct wrapper *w = &wrappers[i];
		uint64_t wvaddr, slot, fn, live;
		const char *sym;
		int dup = 0;

		if (elf_find_symbol(ef, w->name, &wvaddr, NULL)) {
			err = -ENOENT;
			break;
		}
		err = wrapper_slot(cs, ef, wvaddr, w->field, &slot);
		if (!err)
			err = elf_read_pointer(ef, slot, &fn);
		if (err)
			break;
		for (int j = 0; j < n; j++)
			dup |= out[j].vaddr == fn;
		if (dup)
			continue;
		if (n == max) {
			err = -E2BIG;
			break;
		}
		struct alloc_function *f = &out[n++];

		memset(f, 0, sizeof(*f));
		f->kind = w->kind;
		f->family = w->family;
		f->vaddr = fn;
		f->slot = slot;
		f->wrapper = w->name;
		sym = elf_symbol_at(ef, fn, NULL);
		if (sym)
			snprintf(f->name, sizeof(f->name), "%s", sym);
		else
			snprintf(f->name, sizeof(f->name), "<default of %s>", w->name);
		if (pid > 0 && remote_read_u64(pid, slot + bias, &live) == 0)
			f->hooked = live - bias != fn;
	}
	cs_close(&cs);
	*count = n;
	return err;
}

/* Which registers hold each original argument register's entry value:
 * holders[arg] is a bit mask over enum tm_reg. */
struct arg_track {
	uint32_t holders[TM_REG_COUNT];
};

static void track_insn(csh cs, const cs_insn *insn, struct arg_track *t)
{
	const cs_x86 *x = &insn->detail->x86;
	cs_regs read, written;
	uint8_t nread = 0, nwritten = 0;
	uint32_t killed = 0;

	if (cs_regs_access(cs, insn, read, &nread, written, &nwritten) != CS_ERR_OK) {
		memset(t, 0, sizeof(*t)); /* unknown effects: trust nothing */
		return;
	}
	for (int i = 0; i < nwritten; i++)
		killed |= 1u << x86_gpr(written[i]);
	killed &= ~1u; /* TM_REG_NONE */

	/* A 64-bit register-to-register move copies the value. */
	if (insn->id == X86_INS_MOV && x->op_count == 2 && x->operands[0].type == X86_OP_REG &&
	    x->operands[1].type == X86_OP_REG && x->operands[0].size == 8) {
		enum tm_reg to = x86_gpr(x->operands[0].reg), from = x86_gpr(x->operands[1].reg);

		for (int a = 1; a < TM_REG_COUNT; a++) {
			bool has = t->holders[a] & (1u << from);

			t->holders[a] &= ~killed;
			if (has && to != TM_REG_NONE)
				t->holders[a] |= 1u << to;
		}
		return;
	}
	for (int a = 1; a < TM_REG_COUNT; a++)
		t->holders[a] &= ~killed;
}

/* A register holding the original `arg`, preferring the original itself. */
static enum tm_reg arg_location(const struct arg_track *t, enum tm_reg arg)
{
	uint32_t m = t->holders[arg];

	if (m & (1u << arg))
		return arg;
	for (int r = 1; r < TM_REG_COUNT; r++)
		if (m & (1u << r))
			return (enum tm_reg)r;
	return TM_REG_NONE;
}

int alloc_site_choose(struct elf_file *ef, const struct alloc_function *fn, struct probe_site *site)
{
	uint8_t code[128];
	const uint8_t *p = code;
	size_t left = sizeof(code);
	uint64_t addr = fn->vaddr;
	struct arg_track track;
	enum tm_reg need_a = TM_REG_SI, need_b = TM_REG_NONE;
	csh cs;
	cs_insn *insn;

	memset(site, 0, sizeof(*site));
	site->kind = fn->kind;
	site->family = fn->family;
	site->function = fn;
	site->retprobe = fn->kind != TM_CALL_FREE;
	if (fn->kind == TM_CALL_CALLOC || fn->kind == TM_CALL_REALLOC)
		need_b = TM_REG_DX;
	if (elf_read(ef, fn->vaddr, code, sizeof(code)) && elf_read(ef, fn->vaddr, code, 32))
		return -ERANGE;
	if (x86_open(&cs))
		return -EINVAL;
	insn = cs_malloc(cs);
	for (int r = 1; r < TM_REG_COUNT; r++)
		track.holders[r] = 1u << r;

	/* Default: the entry, single-stepped, arguments in place. */
	site->vaddr = fn->vaddr;
	site->reg_a = need_a;
	site->reg_b = need_b;
	for (int i = 0; i < 32 && cs_disasm_iter(cs, &p, &left, &addr, insn); i++) {
		enum tm_reg a = arg_location(&track, need_a);
		enum tm_reg b = need_b == TM_REG_NONE ? TM_REG_NONE : arg_location(&track, need_b);

		if (i == 0)
			snprintf(site->insn, sizeof(site->insn), "%s %s", insn->mnemonic, insn->op_str);
		if (a == TM_REG_NONE || (need_b != TM_REG_NONE && b == TM_REG_NONE))
			break;
		if (x86_uprobe_emulated(insn)) {
			site->vaddr = insn->address;
			site->reg_a = a;
			site->reg_b = b;
			site->emulated = true;
			snprintf(site->insn, sizeof(site->insn), "%s %s", insn->mnemonic, insn->op_str);
			break;
		}
		/* Past a branch, a move of the stack pointer or a trap, the path
		 * is no longer the one every call takes, or [rsp] no longer
		 * holds the return address. */
		if (x86_is_branch(insn) || x86_writes_rsp(cs, insn))
			break;
		track_insn(cs, insn, &track);
	}
	cs_free(insn, 1);
	cs_close(&cs);
	site->offset_in_function = (uint32_t)(site->vaddr - fn->vaddr);
	return elf_vaddr_to_offset(ef, site->vaddr, &site->file_offset);
}

/* Does straight-line code at `addr` call or jump through `reg` within a few
 * instructions? That is the not-inlined path of a guard. */
static bool calls_through(csh cs, const struct elf_section_view *views, int nviews, uint64_t addr,
			  enum tm_reg reg, cs_insn *insn)
{
	for (int v = 0; v < nviews; v++) {
		if (addr < views[v].vaddr || addr >= views[v].vaddr + views[v].size)
			continue;
		const uint8_t *p = views[v].data + (addr - views[v].vaddr);
		size_t left = views[v].size - (addr - views[v].vaddr);

		for (int i = 0; i < 12 && cs_disasm_iter(cs, &p, &left, &addr, insn); i++) {
			const cs_x86 *x = &insn->detail->x86;

			if ((insn->id == X86_INS_CALL || insn->id == X86_INS_JMP) && x->op_count == 1 &&
			    x->operands[0].type == X86_OP_REG)
				return x86_gpr(x->operands[0].reg) == reg;
			if (insn->id == X86_INS_RET || insn->id == X86_INS_JMP)
				return false;
		}
	}
	return false;
}

/* A guard compares the allocator pointer with the default function (`cmp
 * $fn,%reg` in a non-PIE binary, `lea fn(%rip),%r1; cmp %r1,%r2` in a PIE
 * one) and branches: one way runs the inlined copy, the other calls
 * through the pointer. Code that only compares (allocator introspection,
 * installing defaults) is not a guard. */
int alloc_count_inlined(struct elf_file *ef, const struct alloc_function *fns, int n,
			unsigned *counts)
{
	struct elf_section_view views[16];
	int nviews = elf_exec_sections(ef, views, 16);
	uint64_t lea_target[TM_REG_COUNT];
	cs_insn *insn, *next, *probe;
	csh cs;

	memset(counts, 0, sizeof(*counts) * (size_t)n);
	if (x86_open(&cs))
		return -EINVAL;
	insn = cs_malloc(cs);
	next = cs_malloc(cs);
	probe = cs_malloc(cs);
	for (int v = 0; v < nviews; v++) {
		const uint8_t *p = views[v].data;
		size_t left = views[v].size;
		uint64_t addr = views[v].vaddr;

		memset(lea_target, 0, sizeof(lea_target));
		while (left > 0) {
			if (!cs_disasm_iter(cs, &p, &left, &addr, insn)) {
				/* data in text, or padding capstone rejects: skip a byte */
				p++, left--, addr++;
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
			if (!target || pointer == TM_REG_NONE)
				continue;
			int match = -1;
			for (int i = 0; i < n; i++)
				if (fns[i].vaddr == target)
					match = i;
			if (match < 0)
				continue;
			/* the next instruction branches; either way may call */
			const uint8_t *q = p;
			size_t qleft = left;
			uint64_t qaddr = addr;

			if (!cs_disasm_iter(cs, &q, &qleft, &qaddr, next) || next->id == X86_INS_JMP ||
			    !x86_is_branch(next) || next->detail->x86.op_count != 1 ||
			    next->detail->x86.operands[0].type != X86_OP_IMM)
				continue;
			if (calls_through(cs, views, nviews, qaddr, pointer, probe) ||
			    calls_through(cs, views, nviews, (uint64_t)next->detail->x86.operands[0].imm,
					  pointer, probe))
				counts[match]++;
		}
	}
	cs_free(insn, 1);
	cs_free(next, 1);
	cs_free(probe, 1);
	cs_close(&cs);
	return 0;
}
