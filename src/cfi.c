#include <dwarf.h>
#include <errno.h>
#include <gelf.h>
#include <stdlib.h>
#include <string.h>
#include <elfutils/libdw.h>
#include "cfi.h"

struct code_range {
	uint64_t start, end;
};

struct cfi {
	Dwarf_CFI *dw;
	Elf *elf;
	struct code_range *ranges; /* every FDE's, by start; read on first use */
	size_t nranges;
	bool ranges_read;
};

int cfi_open(struct elf_file *ef, struct cfi **out)
{
	struct cfi *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->elf = elf_file_handle(ef);
	c->dw = dwarf_getcfi_elf(c->elf);
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
	free(c->ranges);
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

/* An FDE's pc_begin and pc_range, in the pointer encoding its CIE's "zR"
 * augmentation names: GCC's and clang's pc-relative (or absolute) 4 or 8
 * bytes. Other encodings: false (that code has no known bounds). */
static bool fde_range(const Dwarf_CIE *cie, const Dwarf_FDE *fde, uint64_t field_vaddr, struct code_range *r)
{
	uint8_t enc;
	int64_t begin;
	uint64_t length;
	size_t width;

	if (!cie->augmentation || strcmp(cie->augmentation, "zR") != 0 || cie->augmentation_data_size != 1)
		return false;
	enc = cie->augmentation_data[0];
	switch (enc & 0x0f) {
	case DW_EH_PE_sdata4: case DW_EH_PE_udata4: width = 4; break;
	case DW_EH_PE_sdata8: case DW_EH_PE_udata8: case DW_EH_PE_absptr: width = 8; break;
	default: return false;
	}
	if ((const uint8_t *)fde->start + 2 * width > (const uint8_t *)fde->end)
		return false;
	if (width == 4) {
		int32_t b;
		uint32_t l;

		memcpy(&b, fde->start, 4);
		memcpy(&l, (const uint8_t *)fde->start + 4, 4);
		begin = (enc & 0x0f) == DW_EH_PE_udata4 ? (int64_t)(uint32_t)b : b;
		length = l;
	} else {
		memcpy(&begin, fde->start, 8);
		memcpy(&length, (const uint8_t *)fde->start + 8, 8);
	}
	switch (enc & 0x70) {
	case DW_EH_PE_absptr: r->start = (uint64_t)begin; break;
	case DW_EH_PE_pcrel: r->start = field_vaddr + (uint64_t)begin; break;
	default: return false;
	}
	r->end = r->start + length;
	return true;
}

static int cmp_range(const void *a, const void *b)
{
	const struct code_range *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

static int read_ranges(struct cfi *c)
{
	Elf_Scn *scn = NULL;
	size_t shstrndx;
	int err = 0;

	if (elf_getshdrstrndx(c->elf, &shstrndx))
		return -EINVAL;
	while ((scn = elf_nextscn(c->elf, scn))) {
		GElf_Shdr sh;
		const char *name;
		Elf_Data *data;
		Dwarf_Off off = 0, next;
		Dwarf_CFI_Entry entry, cie;

		if (!gelf_getshdr(scn, &sh) || !(name = elf_strptr(c->elf, shstrndx, sh.sh_name)) ||
		    strcmp(name, ".eh_frame") != 0 || !(data = elf_getdata(scn, NULL)))
			continue;
		while (!err && dwarf_next_cfi((const unsigned char *)elf_getident(c->elf, NULL), data, true, off, &next, &entry) == 0) {
			struct code_range r;
			Dwarf_Off cie_next;

			if (!dwarf_cfi_cie_p(&entry) &&
			    dwarf_next_cfi((const unsigned char *)elf_getident(c->elf, NULL), data, true, entry.fde.CIE_pointer, &cie_next,
					   &cie) == 0 && dwarf_cfi_cie_p(&cie) &&
			    fde_range(&cie.cie, &entry.fde,
				      sh.sh_addr + (uint64_t)((const uint8_t *)entry.fde.start - (const uint8_t *)data->d_buf),
				      &r)) {
				if (c->nranges % 1024 == 0) {
					struct code_range *grown = realloc(c->ranges, (c->nranges + 1024) * sizeof(r));

					if (!grown) {
						err = -ENOMEM;
						break;
					}
					c->ranges = grown;
				}
				c->ranges[c->nranges++] = r;
			}
			off = next;
		}
	}
	qsort(c->ranges, c->nranges, sizeof(c->ranges[0]), cmp_range);
	return err;
}

int cfi_code_range(struct cfi *c, uint64_t vaddr, uint64_t *start, uint64_t *end)
{
	size_t lo = 0, hi;

	if (!c->ranges_read) {
		c->ranges_read = true;
		if (read_ranges(c))
			c->nranges = 0;
	}
	hi = c->nranges;
	while (lo < hi) { /* the last range starting at or before vaddr */
		size_t mid = (lo + hi) / 2;

		if (c->ranges[mid].start <= vaddr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0 || vaddr >= c->ranges[lo - 1].end)
		return -ENOENT;
	*start = c->ranges[lo - 1].start;
	*end = c->ranges[lo - 1].end;
	return 0;
}
