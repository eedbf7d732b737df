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
#define WRAPPER_MAX_LOADS 48

/* What a register is known to hold while reading a wrapper. */
struct reg_fact {
	uint64_t points_to; /* it holds this address (lea, or a GOT entry's target) */
	uint64_t loaded_from; /* it holds the word read from this address */
};

/* The address a memory operand reads: rip-relative, or base register plus
 * displacement when the base is known to point somewhere. 0 if unknown. */
static uint64_t operand_address(const cs_insn *insn, const cs_x86_op *op, const struct reg_fact *regs)
{
	uint64_t target;

	if (op->type != X86_OP_MEM || op->mem.index != X86_REG_INVALID)
		return 0;
	if (op->mem.base == X86_REG_RIP)
		return x86_rip_target(insn, &target) ? target : 0;
	if (x86_gpr(op->mem.base) == TM_REG_NONE || !regs[x86_gpr(op->mem.base)].points_to)
		return 0;
	return regs[x86_gpr(op->mem.base)].points_to + (uint64_t)op->mem.disp;
}

/* The allocator-struct slot a wrapper calls through. Up to 3.11 the
 * structs are static variables: `jmp *slot(%rip)`, or `mov slot(%rip),%reg`
 * followed by `call *%reg` or, in PGO builds, by the guard
 * `cmp $default,%reg`. From 3.12 they live in _PyRuntime, reached through
 * the GOT in a shared libpython: `mov _PyRuntime@GOT(%rip),%rax;
 * mov ctx(%rax),%rdi; jmp *slot(%rax)`. Either way the ctx load must sit
 * `field` bytes before the slot, which is what makes the slot certain. */
static int wrapper_slot(csh cs, struct elf_file *ef, uint64_t vaddr, unsigned field, uint64_t *slot)
{
	uint8_t code[WRAPPER_MAX_BYTES];
	struct reg_fact regs[TM_REG_COUNT];
	uint64_t loads[WRAPPER_MAX_LOADS], found = 0;
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
	memset(regs, 0, sizeof(regs));
	for (int i = 0; i < WRAPPER_MAX_LOADS && !found && cs_disasm_iter(cs, &p, &left, &addr, insn); i++) {
		const cs_x86 *x = &insn->detail->x86;

		if ((insn->id == X86_INS_MOV || insn->id == X86_INS_LEA) && x->op_count == 2 &&
		    x->operands[0].type == X86_OP_REG && x86_gpr(x->operands[0].reg) != TM_REG_NONE) {
			struct reg_fact *r = &regs[x86_gpr(x->operands[0].reg)];
			uint64_t from = operand_address(insn, &x->operands[1], regs), bound;

			memset(r, 0, sizeof(*r));
			if (!from)
				continue;
			if (insn->id == X86_INS_LEA) {
				r->points_to = from;
				continue;
			}
			r->loaded_from = from;
			loads[nloads++] = from;
			if (elf_got_address(ef, from, &bound) == 0)
				r->points_to = bound;
			continue;
		}
		if ((insn->id == X86_INS_JMP || insn->id == X86_INS_CALL) && x->op_count == 1) {
			if (x->operands[0].type == X86_OP_MEM)
				found = operand_address(insn, &x->operands[0], regs);
			else if (x->operands[0].type == X86_OP_REG && x86_gpr(x->operands[0].reg) != TM_REG_NONE)
				found = regs[x86_gpr(x->operands[0].reg)].loaded_from;
			if (!found && insn->id == X86_INS_JMP && x->operands[0].type != X86_OP_IMM)
				break;
			continue;
		}
		if (insn->id == X86_INS_CMP && x->op_count == 2 && x->operands[0].type == X86_OP_REG &&
		    x->operands[1].type == X86_OP_IMM && x86_gpr(x->operands[0].reg) != TM_REG_NONE)
			found = regs[x86_gpr(x->operands[0].reg)].loaded_from;
		if (insn->id == X86_INS_RET)
			break;
	}
	cs_free(insn, 1);
	for (int i = 0; found && i < nloads; i++) {
		if (loads[i] == found - field) {
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
		if (pid > 0 && remote_read_u64(pid, slot + bias, &live) == 0) {
			f->live = live - bias;
			f->hooked = f->live != fn;
		}
	}
	cs_close(&cs);
	*count = n;
	return err;
}
