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
