/* Was the object a creation gives its first reference to allocated earlier
 * in the same call of the same function, on every path? Then tracemalloc's
 * re-stamp there writes the traceback the allocation's trace already has
 * (the Python frames cannot change under a C function but for code that
 * runs and returns, a collection's finalizers), and tmtrace need not trap
 * there. Proven by walking the machine code backwards from the creation,
 * over every path that reaches it. */
#ifndef TMTRACE_FRESHFLOW_H
#define TMTRACE_FRESHFLOW_H

#include <stdbool.h>
#include <stdint.h>
#include "cfi.h"
#include "elffile.h"
#include "textindex.h"
#include "x86.h"

#define FRESH_MAX_FNS 24
#define FRESH_MAX_SLOTS 8

/* What allocates, in one binary (file addresses). */
struct fresh_sources {
	uint64_t fns[FRESH_MAX_FNS]; /* functions whose result a call of them just allocated */
	int nfns;
	uint64_t slots[FRESH_MAX_SLOTS]; /* allocator pointers: a call through one allocates */
	int nslots;
	uint64_t usedpools; /* pymalloc's usedpools[] (0: not known): inlined fast paths */
	struct cfi *cfi;    /* the bounds of functions without a symbol (NULL: symbols only) */
};

/* Adds a function or slot (ignores 0 and overflow: a source left out only
 * leaves a creation probed). */
void fresh_add_function(struct fresh_sources *s, uint64_t vaddr);
void fresh_add_slot(struct fresh_sources *s, uint64_t slot);

/* Is the value of `reg` at `site` (before its instruction runs) a block
 * allocated earlier in this call of the function, or a pointer at most 64
 * bytes into one (a GC object after its header), on every path from the
 * function's entry? `sources` may be NULL (then only calls of the exported
 * allocators, by name, count). */
bool fresh_at(struct x86_code *code, struct elf_file *ef, const struct text_index *ix,
	      const struct fresh_sources *sources, uint64_t site, enum tm_reg reg);

#endif
