/* Where CPython gives an object its first reference (_Py_NewReference), in
 * one binary. tracemalloc, while it traces, re-stamps the trace of the
 * object's memory there with the current traceback
 * (_PyTraceMalloc_NewReference, 3.13's _PyTraceMalloc_TraceRef): an object
 * taken from a free list (tuples, lists, dicts, floats, frames...) is
 * reported where it was last created, not where its memory was first
 * allocated. tmtrace probes the same points to say the same. */
#ifndef TMTRACE_NEWREF_H
#define TMTRACE_NEWREF_H

#include <stdint.h>
#include "elffile.h"
#include "tmtrace.h"
#include "x86.h"

struct newref_site {
	uint64_t vaddr;        /* the probe site: a guard's branch, or inside a function */
	struct tm_operand op;  /* where the object pointer is there */
	char what[96];
};

struct newref_set {
	struct newref_site *sites;
	int count, cap;
	int missed; /* re-stamping calls whose guard or operand was not proven: not probed */
	char why[160]; /* nothing found at all: why */
};

/* Finds the sites in a CPython binary (3.8 to 3.13). */
int newref_find(struct x86_code *code, struct elf_file *ef, struct newref_set *out);
void newref_free(struct newref_set *s);

#endif
