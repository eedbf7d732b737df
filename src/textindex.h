/* The whole text of a binary, disassembled once: instruction boundaries,
 * direct calls and jumps by target, RIP-relative operands by address. The
 * proofs about object creations (newref.c, freshflow.c) ask it which
 * instructions lead to which. */
#ifndef TMTRACE_TEXTINDEX_H
#define TMTRACE_TEXTINDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "x86.h"

enum edge_kind { EDGE_CALL, EDGE_JMP, EDGE_JCC };

/* A direct call or jump. */
struct edge {
	uint64_t from, to;
	enum edge_kind kind;
};

/* A RIP-relative operand: a GOT slot read, a function's address taken. */
struct rip_ref {
	uint64_t from, slot;
	bool jump;        /* jmp *slot(%rip): a PLT stub, when it reads a GOT slot */
	bool after_endbr; /* right after an endbr64 (the stub starts there) */
};

/* The whole text, disassembled once and asked about each function after. */
struct text_index {
	uint64_t *insns; /* instruction addresses, ascending */
	size_t ninsns, cap_insns;
	struct edge *edges; /* by target, then source */
	size_t nedges, cap_edges;
	struct rip_ref *refs; /* by slot, then source */
	size_t nrefs, cap_refs;
};

int text_index_build(struct x86_code *code, struct text_index *ix);
void text_index_free(struct text_index *ix);
/* The first edge (or RIP-relative reference) to `to`, or nedges (nrefs). */
size_t text_first_edge_to(const struct text_index *ix, uint64_t to);
size_t text_first_ref_to(const struct text_index *ix, uint64_t slot);
/* The index of the first instruction at or after addr. */
size_t text_insn_index(const struct text_index *ix, uint64_t addr);

/* Appends `item` to a growing array (-ENOMEM). */
int array_push(void **array, size_t *n, size_t *cap, const void *item, size_t size);
int cmp_addr(const void *a, const void *b); /* qsort of uint64_t */

#endif
