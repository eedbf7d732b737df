#include <errno.h>
#include <string.h>
#include "pymalloc.h"
#include "remote.h"

#define WALK_MAX 48

int pymalloc_find(struct x86_code *code, uint64_t obj_malloc, struct pymalloc_info *out)
{
	uint64_t lea[TM_REG_COUNT] = { 0 }, addr = obj_malloc, empty = 0;
	enum tm_reg pool = TM_REG_NONE, next = TM_REG_NONE;
	cs_insn *insn = cs_malloc(code->cs);
	int err = -ENOENT;

	memset(out, 0, sizeof(*out));
	if (!insn)
		return -ENOMEM;
	for (int i = 0; i < WALK_MAX && !empty && x86_decode(code, addr, insn); i++) {
		const cs_x86 *x = &insn->detail->x86;
		const cs_x86_op *d = &x->operands[0], *s = &x->operands[1];

		addr = insn->address + insn->size;
		if (insn->id == X86_INS_LEA && x->op_count == 2 && d->type == X86_OP_REG) {
			x86_rip_target(insn, &lea[x86_gpr(d->reg)]);
			continue;
		}
		if (insn->id == X86_INS_MOV && x->op_count == 2 && d->type == X86_OP_REG &&
		    s->type == X86_OP_MEM && d->size == 8) {
			/* usedpools[idx + idx]: scaled by 8, off an absolute
			 * address (non-PIE) or an address lea'd first (PIE) */
			if (!out->usedpools && s->mem.scale == 8 && s->mem.index != X86_REG_INVALID) {
				uint64_t base = s->mem.base == X86_REG_INVALID ? 0 : lea[x86_gpr(s->mem.base)];

				if (s->mem.base != X86_REG_INVALID && !base)
					continue;
				out->usedpools = base + (uint64_t)s->mem.disp;
				pool = x86_gpr(d->reg);
				continue;
			}
			if (out->usedpools && pool != TM_REG_NONE && x86_gpr(s->mem.base) == pool &&
			    s->mem.disp == POOL_NEXTPOOL && s->mem.index == X86_REG_INVALID) {
				next = x86_gpr(d->reg);
				continue;
			}
		}
		if (insn->id == X86_INS_CMP && next != TM_REG_NONE && x->op_count == 2 &&
		    d->type == X86_OP_REG && s->type == X86_OP_REG) {
			enum tm_reg r0 = x86_gpr(d->reg), r1 = x86_gpr(s->reg);
			cs_insn *j = cs_malloc(code->cs);
			uint64_t target;

			if ((r0 == pool && r1 == next) || (r0 == next && r1 == pool)) {
				if (j && x86_decode(code, addr, j) && x86_branch_target(j, &target)) {
					if (j->id == X86_INS_JE)
						empty = target;
					else if (j->id == X86_INS_JNE)
						empty = j->address + j->size;
				}
			}
			if (j)
				cs_free(j, 1);
			if (!empty)
				break;
			continue;
		}
		if (insn->id == X86_INS_JA && !out->usedpools)
			continue; /* the large-size branch: the small path falls through */
		if (x86_is_branch(insn) && !x86_is_jcc(insn))
			break;
	}
	/* the empty-pool branch calls allocate_from_new_pool within a few
	 * instructions (after saving live registers) */
	for (int i = 0; empty && i < 8 && x86_decode(code, empty, insn); i++) {
		uint64_t target;

		empty = insn->address + insn->size;
		if (insn->id == X86_INS_CALL && x86_branch_target(insn, &target)) {
			out->new_pool_fn = target;
			err = 0;
			break;
		}
		if (x86_is_branch(insn))
			break;
	}
	cs_free(insn, 1);
	if (err)
		memset(out, 0, sizeof(*out));
	return err;
}

int pymalloc_check_live(pid_t pid, uint64_t usedpools_addr)
{
	uint64_t slots[2 * PYMALLOC_SIZE_CLASSES];
	int used = 0, err;

	err = remote_read(pid, usedpools_addr, slots, sizeof(slots));
	if (err)
		return err;
	for (unsigned c = 0; c < PYMALLOC_SIZE_CLASSES; c++) {
		uint64_t header = usedpools_addr + 16 * c - 16; /* the list head's fake header */
		uint32_t szidx;

		if (slots[2 * c] == header && slots[2 * c + 1] == header)
			continue; /* empty list */
		if (remote_read(pid, slots[2 * c] + POOL_SZIDX, &szidx, sizeof(szidx)) || szidx != c)
			return -EINVAL;
		used++;
	}
	return used > 0 ? 0 : -EINVAL;
}

bool pymalloc_usedpools_slot(const struct pymalloc_info *pm, uint64_t addr, unsigned *size_class)
{
	if (!pm->usedpools || addr < pm->usedpools || addr >= pm->usedpools + 16 * PYMALLOC_SIZE_CLASSES ||
	    (addr - pm->usedpools) % 16)
		return false;
	*size_class = (unsigned)((addr - pm->usedpools) / 16);
	return true;
}
