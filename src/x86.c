#include <string.h>
#include "x86.h"

int x86_open(csh *handle)
{
	if (cs_open(CS_ARCH_X86, CS_MODE_64, handle) != CS_ERR_OK)
		return -1;
	cs_option(*handle, CS_OPT_DETAIL, CS_OPT_ON);
	return 0;
}

enum tm_reg x86_gpr(x86_reg reg)
{
	switch (reg) {
	case X86_REG_RDI: case X86_REG_EDI: case X86_REG_DI: case X86_REG_DIL: return TM_REG_DI;
	case X86_REG_RSI: case X86_REG_ESI: case X86_REG_SI: case X86_REG_SIL: return TM_REG_SI;
	case X86_REG_RDX: case X86_REG_EDX: case X86_REG_DX: case X86_REG_DL: case X86_REG_DH: return TM_REG_DX;
	case X86_REG_RCX: case X86_REG_ECX: case X86_REG_CX: case X86_REG_CL: case X86_REG_CH: return TM_REG_CX;
	case X86_REG_RAX: case X86_REG_EAX: case X86_REG_AX: case X86_REG_AL: case X86_REG_AH: return TM_REG_AX;
	case X86_REG_RBX: case X86_REG_EBX: case X86_REG_BX: case X86_REG_BL: case X86_REG_BH: return TM_REG_BX;
	case X86_REG_RBP: case X86_REG_EBP: case X86_REG_BP: case X86_REG_BPL: return TM_REG_BP;
	case X86_REG_R8: case X86_REG_R8D: case X86_REG_R8W: case X86_REG_R8B: return TM_REG_R8;
	case X86_REG_R9: case X86_REG_R9D: case X86_REG_R9W: case X86_REG_R9B: return TM_REG_R9;
	case X86_REG_R10: case X86_REG_R10D: case X86_REG_R10W: case X86_REG_R10B: return TM_REG_R10;
	case X86_REG_R11: case X86_REG_R11D: case X86_REG_R11W: case X86_REG_R11B: return TM_REG_R11;
	case X86_REG_R12: case X86_REG_R12D: case X86_REG_R12W: case X86_REG_R12B: return TM_REG_R12;
	case X86_REG_R13: case X86_REG_R13D: case X86_REG_R13W: case X86_REG_R13B: return TM_REG_R13;
	case X86_REG_R14: case X86_REG_R14D: case X86_REG_R14W: case X86_REG_R14B: return TM_REG_R14;
	case X86_REG_R15: case X86_REG_R15D: case X86_REG_R15W: case X86_REG_R15B: return TM_REG_R15;
	case X86_REG_RSP: case X86_REG_ESP: case X86_REG_SP: case X86_REG_SPL: return TM_REG_SP;
	default: return TM_REG_NONE;
	}
}

bool x86_writes_rsp(csh handle, const cs_insn *insn)
{
	cs_regs read, written;
	uint8_t nread = 0, nwritten = 0;

	if (cs_regs_access(handle, insn, read, &nread, written, &nwritten) != CS_ERR_OK)
		return true; /* unknown: assume the worst */
	for (int i = 0; i < nwritten; i++)
		if (written[i] == X86_REG_RSP || written[i] == X86_REG_ESP || written[i] == X86_REG_SP)
			return true;
	return false;
}

bool x86_uprobe_emulated(const cs_insn *insn)
{
	const uint8_t *b = insn->bytes;

	switch (insn->size) {
	case 1:
		/* push %reg (0x50-0x57), nop, jcc rel8 and jmp rel8 are 2 bytes */
		return (b[0] >= 0x50 && b[0] <= 0x57) || b[0] == 0x90;
	case 2:
		if (b[0] == 0x41 && b[1] >= 0x50 && b[1] <= 0x57)
			return true; /* push %r8-%r15 */
		return (b[0] >= 0x70 && b[0] <= 0x7f) || b[0] == 0xeb;
	case 5:
		return b[0] == 0xe8 || b[0] == 0xe9;
	case 6:
		return b[0] == 0x0f && b[1] >= 0x80 && b[1] <= 0x8f;
	}
	return false;
}

bool x86_is_branch(const cs_insn *insn)
{
	const cs_detail *d = insn->detail;

	for (int i = 0; d && i < d->groups_count; i++) {
		switch (d->groups[i]) {
		case X86_GRP_JUMP: case X86_GRP_CALL: case X86_GRP_RET:
		case X86_GRP_INT: case X86_GRP_IRET: case X86_GRP_BRANCH_RELATIVE:
			return true;
		}
	}
	return insn->id == X86_INS_HLT || insn->id == X86_INS_UD2 || insn->id == X86_INS_SYSCALL;
}

bool x86_rip_target(const cs_insn *insn, uint64_t *addr)
{
	const cs_x86 *x = &insn->detail->x86;

	for (int i = 0; i < x->op_count; i++) {
		const cs_x86_op *op = &x->operands[i];

		if (op->type == X86_OP_MEM && op->mem.base == X86_REG_RIP && op->mem.index == X86_REG_INVALID) {
			*addr = insn->address + insn->size + (int64_t)op->mem.disp;
			return true;
		}
	}
	return false;
}

int x86_code_open(struct x86_code *c, struct elf_file *ef)
{
	memset(c, 0, sizeof(*c));
	if (x86_open(&c->cs))
		return -1;
	c->nviews = elf_exec_sections(ef, c->views, 16);
	return 0;
}

void x86_code_close(struct x86_code *c)
{
	cs_close(&c->cs);
}

bool x86_decode(struct x86_code *c, uint64_t addr, cs_insn *insn)
{
	for (int v = 0; v < c->nviews; v++) {
		const struct elf_section_view *view = &c->views[v];

		if (addr < view->vaddr || addr >= view->vaddr + view->size)
			continue;
		const uint8_t *p = view->data + (addr - view->vaddr);
		size_t left = view->size - (addr - view->vaddr);

		return cs_disasm_iter(c->cs, &p, &left, &addr, insn);
	}
	return false;
}

bool x86_branch_target(const cs_insn *insn, uint64_t *target)
{
	const cs_x86 *x = &insn->detail->x86;

	if (!x86_is_branch(insn) || x->op_count != 1 || x->operands[0].type != X86_OP_IMM)
		return false;
	*target = (uint64_t)x->operands[0].imm;
	return true;
}

bool x86_is_jcc(const cs_insn *insn)
{
	switch (insn->id) {
	case X86_INS_JAE: case X86_INS_JA: case X86_INS_JBE: case X86_INS_JB: case X86_INS_JE:
	case X86_INS_JGE: case X86_INS_JG: case X86_INS_JLE: case X86_INS_JL: case X86_INS_JNE:
	case X86_INS_JNO: case X86_INS_JNP: case X86_INS_JNS: case X86_INS_JO: case X86_INS_JP:
	case X86_INS_JS:
		return true;
	default:
		return false;
	}
}

const char *x86_plt_callee(struct x86_code *code, struct elf_file *ef, uint64_t target, cs_insn *insn)
{
	for (int i = 0; i < 2 && x86_decode(code, target, insn); i++) {
		uint64_t got;

		if (insn->id == X86_INS_ENDBR64) {
			target = insn->address + insn->size;
			continue;
		}
		if (insn->id == X86_INS_JMP && x86_rip_target(insn, &got))
			return elf_got_symbol(ef, got);
		return NULL;
	}
	return NULL;
}
