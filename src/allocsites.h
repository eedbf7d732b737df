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
	uint64_t live;        /* the live slot's value minus the bias, when read */
};

/* Finds the default allocator functions through the exported wrappers
 * (PyObject_Malloc, PyMem_RawFree, ...): reads each wrapper's slot in the
 * allocator struct, and its initial (relocated) value from the file. The
 * live slot, read from the target at bias + slot, tells whether a hook is
 * installed. */
int alloc_functions_find(struct elf_file *ef, pid_t pid, uint64_t bias,
			 struct alloc_function *out, int max, int *count);

#endif
