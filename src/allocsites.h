/* CPython's allocator functions in one binary, and where to probe them. */
#ifndef TMTRACE_ALLOCSITES_H
#define TMTRACE_ALLOCSITES_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "elffile.h"
#include "tmtrace.h"

#define ALLOC_MAX_FUNCTIONS 12

/* A function an allocator struct (PyMemAllocatorEx) points to by default. */
struct alloc_function {
	enum tm_call_kind kind;
	enum tm_family family;
	uint64_t vaddr;       /* in the file's address space */
	uint64_t slot;        /* the struct field that points to it */
	const char *wrapper;  /* the exported function that reads the slot */
	char name[64];        /* symbol, or "<default of WRAPPER>" when stripped */
	bool hooked;          /* the live slot points elsewhere (a hook is installed) */
};

struct probe_site {
	uint64_t vaddr;       /* the probed instruction, file address space */
	uint64_t file_offset;
	uint32_t offset_in_function;
	enum tm_call_kind kind;
	enum tm_family family;
	enum tm_reg reg_a, reg_b;
	bool emulated;        /* false: the kernel single-steps it (~10 us a hit) */
	bool retprobe;        /* a uretprobe sits there too */
	char insn[192];        /* "push %rbx", for --verbose */
	const struct alloc_function *function;
};

/* Finds the default allocator functions through the exported wrappers
 * (PyObject_Malloc, PyMem_RawFree, ...): reads each wrapper's slot in the
 * allocator struct, and its initial (relocated) value from the file. The
 * live slot, read from the target at bias + slot, tells whether a hook is
 * installed. */
int alloc_functions_find(struct elf_file *ef, pid_t pid, uint64_t bias,
			 struct alloc_function *out, int max, int *count);

/* The probe site for one function: the first instruction the kernel
 * emulates on the straight-line path from the entry, with the stack pointer
 * untouched (so a uretprobe there still finds the return address at [rsp])
 * and the operands still in registers. Falls back to the entry itself
 * (single-stepped) when there is none. */
int alloc_site_choose(struct elf_file *ef, const struct alloc_function *fn, struct probe_site *site);

/* How many inlined copies of each function the binary has: PGO builds
 * compare the allocator pointer with the default function's address before
 * running an inlined fast path. counts[i] is for fns[i]. */
int alloc_count_inlined(struct elf_file *ef, const struct alloc_function *fns, int n,
			unsigned *counts);

#endif
