#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "elffile.h"

struct elf_symbol {
	const char *name;
	uint64_t value, size;
};

struct elf_file {
	int fd;
	Elf *elf;
	GElf_Ehdr ehdr;
	GElf_Phdr *phdrs;
	size_t nphdrs;
	struct elf_symbol *syms; /* .symtab then .dynsym, functions and objects */
	size_t nsyms;
	size_t nsymtab;          /* how many came from .symtab */
	struct elf_symbol **by_addr; /* function symbols sorted by address */
	size_t nby_addr;
};

static int load_symbols(struct elf_file *ef, Elf64_Word type, size_t *added)
{
	Elf_Scn *scn = NULL;
	GElf_Shdr sh;

	*added = 0;
	while ((scn = elf_nextscn(ef->elf, scn))) {
		Elf_Data *data;
		size_t n;

		if (!gelf_getshdr(scn, &sh) || sh.sh_type != type || !sh.sh_entsize)
			continue;
		data = elf_getdata(scn, NULL);
		if (!data)
			continue;
		n = sh.sh_size / sh.sh_entsize;
		struct elf_symbol *grown = realloc(ef->syms, (ef->nsyms + n) * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		ef->syms = grown;
		for (size_t i = 0; i < n; i++) {
			GElf_Sym s;
			const char *name;

			if (!gelf_getsym(data, (int)i, &s) || s.st_shndx == SHN_UNDEF)
				continue;
			if (GELF_ST_TYPE(s.st_info) != STT_FUNC && GELF_ST_TYPE(s.st_info) != STT_OBJECT)
				continue;
			name = elf_strptr(ef->elf, sh.sh_link, s.st_name);
			if (!name || !*name)
				continue;
			ef->syms[ef->nsyms++] = (struct elf_symbol){ name, s.st_value, s.st_size };
			(*added)++;
		}
	}
	return 0;
}

static int by_value(const void *a, const void *b)
{
	const struct elf_symbol *x = *(struct elf_symbol *const *)a, *y = *(struct elf_symbol *const *)b;

	return x->value < y->value ? -1 : x->value > y->value;
}

int elf_file_open(const char *path, struct elf_file **out)
{
	struct elf_file *ef;
	size_t added;
	int err;

	if (elf_version(EV_CURRENT) == EV_NONE)
		return -EINVAL;
	ef = calloc(1, sizeof(*ef));
	if (!ef)
		return -ENOMEM;
	ef->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (ef->fd < 0) {
		err = -errno;
		free(ef);
		return err;
	}
	ef->elf = elf_begin(ef->fd, ELF_C_READ_MMAP, NULL);
	if (!ef->elf || elf_kind(ef->elf) != ELF_K_ELF || !gelf_getehdr(ef->elf, &ef->ehdr) ||
	    ef->ehdr.e_machine != EM_X86_64) {
		err = -ENOEXEC;
		goto fail;
	}
	if (elf_getphdrnum(ef->elf, &ef->nphdrs)) {
		err = -ENOEXEC;
		goto fail;
	}
	ef->phdrs = calloc(ef->nphdrs ? ef->nphdrs : 1, sizeof(*ef->phdrs));
	if (!ef->phdrs) {
		err = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < ef->nphdrs; i++)
		gelf_getphdr(ef->elf, (int)i, &ef->phdrs[i]);
	err = load_symbols(ef, SHT_SYMTAB, &ef->nsymtab);
	if (!err)
		err = load_symbols(ef, SHT_DYNSYM, &added);
	if (err)
		goto fail;
	ef->by_addr = calloc(ef->nsyms ? ef->nsyms : 1, sizeof(*ef->by_addr));
	if (!ef->by_addr) {
		err = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < ef->nsyms; i++)
		if (ef->syms[i].size)
			ef->by_addr[ef->nby_addr++] = &ef->syms[i];
	qsort(ef->by_addr, ef->nby_addr, sizeof(*ef->by_addr), by_value);
	*out = ef;
	return 0;
fail:
	elf_file_close(ef);
	return err;
}

void elf_file_close(struct elf_file *ef)
{
	if (!ef)
		return;
	if (ef->elf)
		elf_end(ef->elf);
	if (ef->fd >= 0)
		close(ef->fd);
	free(ef->phdrs);
	free(ef->syms);
	free(ef->by_addr);
	free(ef);
}

Elf *elf_file_handle(struct elf_file *ef)
{
	return ef->elf;
}

int elf_find_symbol(struct elf_file *ef, const char *name, uint64_t *vaddr, uint64_t *size)
{
	for (size_t i = 0; i < ef->nsyms; i++) {
		if (strcmp(ef->syms[i].name, name) == 0) {
			*vaddr = ef->syms[i].value;
			if (size)
				*size = ef->syms[i].size;
			return 0;
		}
	}
	return -ENOENT;
}

static const struct elf_symbol *symbol_containing(struct elf_file *ef, uint64_t vaddr)
{
	size_t lo = 0, hi = ef->nby_addr;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (ef->by_addr[mid]->value <= vaddr)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; i-- > 0;) {
		const struct elf_symbol *s = ef->by_addr[i];

		if (vaddr < s->value + s->size)
			return s;
		if (s->value + 0x100000 < vaddr)
			break;
	}
	return NULL;
}

const char *elf_symbol_at(struct elf_file *ef, uint64_t vaddr, uint64_t *start)
{
	const struct elf_symbol *s = symbol_containing(ef, vaddr);

	if (s && start)
		*start = s->value;
	return s ? s->name : NULL;
}

const char *elf_function_at(struct elf_file *ef, uint64_t vaddr, uint64_t *start, uint64_t *end)
{
	const struct elf_symbol *s = symbol_containing(ef, vaddr);

	if (!s)
		return NULL;
	*start = s->value;
	*end = s->value + s->size;
	return s->name;
}

bool elf_is_shared(const struct elf_file *ef)
{
	return ef->ehdr.e_type == ET_DYN;
}

int elf_vaddr_to_offset(const struct elf_file *ef, uint64_t vaddr, uint64_t *offset)
{
	for (size_t i = 0; i < ef->nphdrs; i++) {
		const GElf_Phdr *p = &ef->phdrs[i];

		if (p->p_type == PT_LOAD && vaddr >= p->p_vaddr && vaddr < p->p_vaddr + p->p_filesz) {
			*offset = vaddr - p->p_vaddr + p->p_offset;
			return 0;
		}
	}
	return -ERANGE;
}

int elf_read(const struct elf_file *ef, uint64_t vaddr, void *buf, size_t len)
{
	uint64_t off;
	ssize_t got;

	if (elf_vaddr_to_offset(ef, vaddr, &off) || elf_vaddr_to_offset(ef, vaddr + len - 1, &off))
		return -ERANGE;
	elf_vaddr_to_offset(ef, vaddr, &off);
	got = pread(ef->fd, buf, len, (off_t)off);
	if (got < 0)
		return -errno;
	return (size_t)got == len ? 0 : -EIO;
}

int elf_read_pointer(struct elf_file *ef, uint64_t vaddr, uint64_t *value)
{
	Elf_Scn *scn = NULL;
	GElf_Shdr sh;
	int err = elf_read(ef, vaddr, value, sizeof(*value));

	if (err)
		return err;
	while ((scn = elf_nextscn(ef->elf, scn))) {
		Elf_Data *data;

		if (!gelf_getshdr(scn, &sh) || sh.sh_type != SHT_RELA || !sh.sh_entsize)
			continue;
		data = elf_getdata(scn, NULL);
		for (size_t i = 0; data && i < sh.sh_size / sh.sh_entsize; i++) {
			GElf_Rela r;

			if (!gelf_getrela(data, (int)i, &r) || r.r_offset != vaddr)
				continue;
			if (GELF_R_TYPE(r.r_info) == R_X86_64_RELATIVE) {
				*value = (uint64_t)r.r_addend;
				return 0;
			}
			return -ENOTSUP; /* a symbolic relocation: not a fixed function */
		}
	}
	return 0;
}

/* The GLOB_DAT or JUMP_SLOT relocation of a GOT slot, found by the slot's
 * address or, with `want_name`, by its symbol's name: the slot, symbol and
 * name. */
static int got_relocation(struct elf_file *ef, uint64_t got_vaddr, const char *want_name, uint64_t *slot,
			  GElf_Sym *sym, const char **name)
{
	Elf_Scn *scn = NULL;
	GElf_Shdr sh;

	while ((scn = elf_nextscn(ef->elf, scn))) {
		Elf_Data *data, *symdata;
		GElf_Shdr symsh;
		Elf_Scn *symscn;

		if (!gelf_getshdr(scn, &sh) || sh.sh_type != SHT_RELA || !sh.sh_entsize || !sh.sh_link)
			continue;
		data = elf_getdata(scn, NULL);
		symscn = elf_getscn(ef->elf, sh.sh_link);
		if (!data || !symscn || !gelf_getshdr(symscn, &symsh))
			continue;
		symdata = elf_getdata(symscn, NULL);
		for (size_t i = 0; symdata && i < sh.sh_size / sh.sh_entsize; i++) {
			GElf_Rela r;
			unsigned type;

			if (!gelf_getrela(data, (int)i, &r) || (!want_name && r.r_offset != got_vaddr))
				continue;
			type = (unsigned)GELF_R_TYPE(r.r_info);
			if ((type != R_X86_64_JUMP_SLOT && type != R_X86_64_GLOB_DAT) ||
			    !gelf_getsym(symdata, (int)GELF_R_SYM(r.r_info), sym)) {
				if (want_name)
					continue;
				return -ENOENT;
			}
			*name = elf_strptr(ef->elf, symsh.sh_link, sym->st_name);
			if (want_name && (!*name || strcmp(*name, want_name) != 0))
				continue;
			*slot = r.r_offset;
			return 0;
		}
	}
	return -ENOENT;
}

int elf_symbol_relocations(struct elf_file *ef, const char *name, unsigned *jump_slots, unsigned *others)
{
	Elf_Scn *scn = NULL;
	GElf_Shdr sh;

	*jump_slots = *others = 0;
	while ((scn = elf_nextscn(ef->elf, scn))) {
		Elf_Data *data, *symdata;
		GElf_Shdr symsh;
		Elf_Scn *symscn;

		if (!gelf_getshdr(scn, &sh) || sh.sh_type != SHT_RELA || !sh.sh_entsize || !sh.sh_link)
			continue;
		data = elf_getdata(scn, NULL);
		symscn = elf_getscn(ef->elf, sh.sh_link);
		if (!data || !symscn || !gelf_getshdr(symscn, &symsh))
			continue;
		symdata = elf_getdata(symscn, NULL);
		for (size_t i = 0; symdata && i < sh.sh_size / sh.sh_entsize; i++) {
			const char *sym_name;
			GElf_Rela r;
			GElf_Sym sym;

			if (!gelf_getrela(data, (int)i, &r) || !GELF_R_SYM(r.r_info) ||
			    !gelf_getsym(symdata, (int)GELF_R_SYM(r.r_info), &sym))
				continue;
			sym_name = elf_strptr(ef->elf, symsh.sh_link, sym.st_name);
			if (!sym_name || strcmp(sym_name, name) != 0)
				continue;
			if (GELF_R_TYPE(r.r_info) == R_X86_64_JUMP_SLOT)
				(*jump_slots)++;
			else
				(*others)++;
		}
	}
	return 0;
}

int elf_got_slot(struct elf_file *ef, const char *name, uint64_t *got_vaddr)
{
	GElf_Sym sym;
	const char *found;

	return got_relocation(ef, 0, name, got_vaddr, &sym, &found);
}

const char *elf_got_symbol(struct elf_file *ef, uint64_t got_vaddr)
{
	GElf_Sym sym;
	const char *name;
	uint64_t slot;

	return got_relocation(ef, got_vaddr, NULL, &slot, &sym, &name) ? NULL : name;
}

int elf_got_address(struct elf_file *ef, uint64_t got_vaddr, uint64_t *value)
{
	GElf_Sym sym;
	const char *name;
	uint64_t slot;

	if (got_relocation(ef, got_vaddr, NULL, &slot, &sym, &name) || sym.st_shndx == SHN_UNDEF)
		return -ENOENT;
	*value = sym.st_value;
	return 0;
}

int elf_exec_sections(struct elf_file *ef, struct elf_section_view *views, size_t max)
{
	Elf_Scn *scn = NULL;
	GElf_Shdr sh;
	size_t n = 0;

	while ((scn = elf_nextscn(ef->elf, scn)) && n < max) {
		Elf_Data *data;

		if (!gelf_getshdr(scn, &sh) || sh.sh_type != SHT_PROGBITS ||
		    !(sh.sh_flags & SHF_EXECINSTR))
			continue;
		data = elf_getdata(scn, NULL);
		if (!data || !data->d_buf)
			continue;
		views[n++] = (struct elf_section_view){ sh.sh_addr, data->d_size, data->d_buf };
	}
	return (int)n;
}

int elf_rodata(struct elf_file *ef, struct elf_section_view *view)
{
	Elf_Scn *scn = NULL;
	GElf_Shdr sh;
	size_t shstrndx;

	if (elf_getshdrstrndx(ef->elf, &shstrndx))
		return -ENOEXEC;
	while ((scn = elf_nextscn(ef->elf, scn))) {
		const char *name;
		Elf_Data *data;

		if (!gelf_getshdr(scn, &sh))
			continue;
		name = elf_strptr(ef->elf, shstrndx, sh.sh_name);
		if (!name || strcmp(name, ".rodata") != 0)
			continue;
		data = elf_getdata(scn, NULL);
		if (!data || !data->d_buf)
			return -ENOENT;
		*view = (struct elf_section_view){ sh.sh_addr, data->d_size, data->d_buf };
		return 0;
	}
	return -ENOENT;
}

uint64_t elf_load_bias(const struct elf_file *ef, uint64_t map_start, uint64_t map_offset)
{
	if (!elf_is_shared(ef))
		return 0;
	for (size_t i = 0; i < ef->nphdrs; i++) {
		const GElf_Phdr *p = &ef->phdrs[i];
		uint64_t page_off = p->p_offset & ~0xfffULL;

		if (p->p_type == PT_LOAD && page_off == map_offset)
			return map_start - (p->p_vaddr & ~0xfffULL);
	}
	return map_start - map_offset;
}
