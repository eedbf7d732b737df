#include <dwarf.h>
#include <errno.h>
#include <stdlib.h>
#include <elfutils/libdw.h>
#include "cfi.h"

struct cfi {
	Dwarf_CFI *dw;
};

int cfi_open(struct elf_file *ef, struct cfi **out)
{
	struct cfi *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->dw = dwarf_getcfi_elf(elf_file_handle(ef));
	if (!c->dw) {
		free(c);
		return -ENOENT;
	}
	*out = c;
	return 0;
}

void cfi_close(struct cfi *c)
{
	if (!c)
		return;
	dwarf_cfi_end(c->dw);
	free(c);
}

int cfi_sp_offset(struct cfi *c, uint64_t vaddr, int64_t *offset)
{
	Dwarf_Frame *frame = NULL;
	Dwarf_Op *ops;
	size_t nops;
	int err = 0;

	if (dwarf_cfi_addrframe(c->dw, vaddr, &frame))
		return -ENOENT;
	if (dwarf_frame_cfa(frame, &ops, &nops) || nops != 1)
		err = -ENOTSUP;
	/* x86-64 DWARF register 7 is %rsp */
	else if (ops[0].atom == DW_OP_bregx && ops[0].number == 7)
		*offset = (int64_t)ops[0].number2;
	else if (ops[0].atom == DW_OP_breg7)
		*offset = (int64_t)ops[0].number;
	else
		err = -ENOTSUP;
	free(frame);
	return err;
}
