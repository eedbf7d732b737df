#include <errno.h>
#include <string.h>
#include "remote.h"
#include "tlsvar.h"

#define GETTER_MAX_INSNS 12

/* Is `target` __tls_get_addr's PLT stub (or __tls_get_addr itself)? */
static bool calls_tls_get_addr(struct x86_code *code, struct elf_file *ef, uint64_t target)
{
	cs_insn *insn = cs_malloc(code->cs);
	const char *name = elf_symbol_at(ef, target, NULL);
	bool yes = name && strcmp(name, "__tls_get_addr") == 0;

	if (!yes && insn) {
		name = x86_plt_callee(code, ef, target, insn);
		yes = name && strcmp(name, "__tls_get_addr") == 0;
	}
	if (insn)
		cs_free(insn, 1);
	return yes;
}

int tlsvar_find(struct x86_code *code, struct elf_file *ef, pid_t pid, uint64_t bias, const char *getter,
		struct tm_tls_var *out)
{
	uint64_t addr, got = 0, lea = 0, to;
	cs_insn *insn;
	int err = -ENOENT;

	memset(out, 0, sizeof(*out));
	if (elf_find_symbol(ef, getter, &addr, NULL))
		return -ENOENT;
	insn = cs_malloc(code->cs);
	if (!insn)
		return -ENOMEM;
	for (int i = 0; i < GETTER_MAX_INSNS && err == -ENOENT && x86_decode(code, addr, insn); i++) {
		const cs_x86 *x = &insn->detail->x86;
		const cs_x86_op *src = x->op_count == 2 ? &x->operands[1] : NULL;

		addr = insn->address + insn->size;
		if (insn->id == X86_INS_MOV && src && src->type == X86_OP_MEM && src->mem.segment == X86_REG_FS) {
			if (src->mem.base == X86_REG_INVALID && src->mem.index == X86_REG_INVALID) {
				/* local-exec: mov %fs:DISP,%reg */
				out->mode = TM_TLS_FS_OFFSET;
				out->offset = src->mem.disp;
				err = 0;
			} else if (got && src->mem.index == X86_REG_INVALID) {
				/* initial-exec: mov GOT(%rip),%reg; mov %fs:(%reg),%reg */
				uint64_t tpoff;

				err = remote_read_u64(pid, got + bias, &tpoff);
				out->mode = TM_TLS_FS_OFFSET;
				out->offset = (int64_t)tpoff + src->mem.disp;
			}
			continue;
		}
		if (insn->id == X86_INS_MOV && src && x86_rip_target(insn, &got))
			continue;
		if (insn->id == X86_INS_LEA && x86_rip_target(insn, &lea))
			continue;
		if (insn->id == X86_INS_CALL && lea && x86_branch_target(insn, &to) && calls_tls_get_addr(code, ef, to)) {
			/* general-dynamic: lea tls_index(%rip),%rdi; call __tls_get_addr */
			uint64_t ti[2];

			err = remote_read(pid, lea + bias, ti, sizeof(ti));
			out->mode = TM_TLS_DTV;
			out->module = ti[0];
			out->offset = (int64_t)ti[1];
			continue;
		}
		if (x86_is_branch(insn))
			break;
	}
	cs_free(insn, 1);
	if (err)
		memset(out, 0, sizeof(*out));
	return err;
}
