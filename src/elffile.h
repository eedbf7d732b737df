/* Symbols, segments and initial data of an ELF file, read with libelf. */
#ifndef TMTRACE_ELFFILE_H
#define TMTRACE_ELFFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <libelf.h>

struct elf_file;

struct elf_section_view {
	uint64_t vaddr;
	uint64_t size;
	const uint8_t *data; /* the section's bytes, owned by the elf_file */
};

int elf_file_open(const char *path, struct elf_file **out);
void elf_file_close(struct elf_file *ef);
Elf *elf_file_handle(struct elf_file *ef);

/* Looks the name up in .symtab, then .dynsym. -ENOENT if absent. */
int elf_find_symbol(struct elf_file *ef, const char *name, uint64_t *vaddr, uint64_t *size);
/* The symbol whose [value, value+size) contains vaddr (function names for --verbose). */
const char *elf_symbol_at(struct elf_file *ef, uint64_t vaddr, uint64_t *start);
/* The same, with the symbol's end: [start, end). */
const char *elf_function_at(struct elf_file *ef, uint64_t vaddr, uint64_t *start, uint64_t *end);
bool elf_is_shared(const struct elf_file *ef); /* ET_DYN: addresses need the load bias */

/* File offset of a virtual address in a PT_LOAD segment (uprobes take offsets). */
int elf_vaddr_to_offset(const struct elf_file *ef, uint64_t vaddr, uint64_t *offset);
/* Reads bytes at a virtual address from the file's initialized data. */
int elf_read(const struct elf_file *ef, uint64_t vaddr, void *buf, size_t len);
/* The value a pointer at vaddr has once relocated, minus the load bias:
 * the file's contents, or the addend of its R_X86_64_RELATIVE relocation. */
int elf_read_pointer(struct elf_file *ef, uint64_t vaddr, uint64_t *value);
/* The symbol a GOT slot is bound to (R_X86_64_JUMP_SLOT or GLOB_DAT
 * relocations), e.g. "malloc" for malloc@plt's slot; NULL if none. */
const char *elf_got_symbol(struct elf_file *ef, uint64_t got_vaddr);
/* How many relocations name a symbol: JUMP_SLOTs (its PLT stubs' GOT
 * slots) and any other kind (its address stored or loaded elsewhere). */
int elf_symbol_relocations(struct elf_file *ef, const char *name, unsigned *jump_slots, unsigned *others);
/* The GOT slot bound to a symbol (its PLT stub jumps through it). */
int elf_got_slot(struct elf_file *ef, const char *name, uint64_t *got_vaddr);
/* The address a GOT slot holds once bound, when its symbol is defined in
 * this file (3.12's `mov _PyRuntime@GOTPCREL(%rip),%rax`). */
int elf_got_address(struct elf_file *ef, uint64_t got_vaddr, uint64_t *value);
/* Executable sections (.text and friends), for disassembly; NULL when done. */
int elf_exec_sections(struct elf_file *ef, struct elf_section_view *views, size_t max);
/* Read-only data sections (.rodata). */
int elf_rodata(struct elf_file *ef, struct elf_section_view *view);
/* The load bias for a mapping of this file that starts at map_start with
 * file offset map_offset. */
uint64_t elf_load_bias(const struct elf_file *ef, uint64_t map_start, uint64_t map_offset);

#endif
