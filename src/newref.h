/* Where CPython gives an object its first reference (_Py_NewReference), in
 * one binary. tracemalloc, while it traces, re-stamps the trace of the
 * object's memory there with the current traceback
 * (_PyTraceMalloc_NewReference, 3.13's _PyTraceMalloc_TraceRef): an object
 * taken from a free list (tuples, lists, dicts, floats, frames...) is
 * reported where it was last created, not where its memory was first
 * allocated. tmtrace probes the same points to say the same. */
#ifndef TMTRACE_NEWREF_H
#define TMTRACE_NEWREF_H

#include <stdbool.h>
#include <stdint.h>
#include "elffile.h"
#include "freshflow.h"
#include "tmtrace.h"
#include "x86.h"

struct newref_site {
	uint64_t vaddr;        /* the probe site: a guard's branch, a call, or inside a function */
	uint64_t call;         /* the re-stamping call it leads to (or the creation call) */
	struct tm_operand op;  /* where the object pointer is there */
	char what[96];
};

struct newref_set {
	struct newref_site *sites;
	int count, cap;
	int missed; /* re-stamping calls whose guard or operand was not proven: not probed */
	int fresh;  /* creations in functions that only create what they just allocated: not probed */
	/* creations of what the same call allocated, proven on every path
	 * (freshflow.h): not probed */
	struct newref_site *proven;
	int nproven, cap_proven;
	int callers; /* sites at calls of a creation function */
	/* creation functions whose callers are probed instead of their own
	 * re-stamp ("" if none): other modules' calls must be probed too */
	char relocated[64];
	/* their own sites, not probed */
#define NEWREF_MAX_BODIES 4
	struct newref_site bodies[NEWREF_MAX_BODIES];
	int nbodies;
	char kept[96]; /* a creation function probed itself: why */
	char why[160]; /* nothing found at all: why */
};

/* Finds the sites in a CPython binary (3.8 to 3.13). With `relocate`,
 * creations of what was just allocated are left out (`sources`: what
 * allocates, see freshflow.h) and a shared build's creation function is
 * probed at its callers (see newref.c). */
int newref_find(struct x86_code *code, struct elf_file *ef, bool relocate, const struct fresh_sources *sources,
		struct newref_set *out);
/* The sites in another module of the target (an extension module): its
 * inlined re-stamps, and with `creation_calls` (the target's creation
 * functions relocated) its calls of them. -ENOTSUP (out->why says why) if
 * those calls cannot all be listed. */
int newref_find_module(struct x86_code *code, struct elf_file *ef, bool creation_calls, struct newref_set *out);
void newref_free(struct newref_set *s);

#endif
