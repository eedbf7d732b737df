/* Inlined copies of CPython's allocator functions in PGO builds, found by
 * their guards and analysed one by one: where to probe, where the operands
 * are, and, for calls whose result is needed, where the result is. */
#ifndef TMTRACE_INLINED_H
#define TMTRACE_INLINED_H

#include <stdbool.h>
#include <stdint.h>
#include "allocsites.h"
#include "cfi.h"
#include "pymalloc.h"
#include "x86.h"

/* Why a copy is not probed. */
enum inlined_verdict {
	INLINED_OK = 0,
	INLINED_NO_CALL,       /* the guard's other path was not followed to its pointer call */
	INLINED_OPERAND,       /* an operand's location could not be proven */
	INLINED_FAST_PATH,     /* the fast path is not the pymalloc pop it should be */
	INLINED_NO_MERGE,      /* where the result joins could not be proven */
	INLINED_STACK,         /* the stack pointer at the join could not be proven */
	INLINED_RAW_ONLY,      /* the size is always large: it goes to the raw domain's copy, probed */
	INLINED_VERDICTS,
};

extern const char *const inlined_verdict_names[INLINED_VERDICTS];

struct inlined_copy {
	int function;           /* index into the alloc_function array */
	uint64_t cmp;           /* the guard's comparison */
	uint64_t site;          /* the branch after it: the probe site */
	enum tm_reg guard_reg;
	struct tm_operand a, b;
	uint64_t return_site;   /* where the result is (calls that need one) */
	struct tm_operand result;
	int32_t sp_delta;       /* stack pointer at return_site minus at site */
	bool return_uretprobe;  /* a tail call: the result is caught by a uretprobe at the guard */
	enum inlined_verdict verdict;
};

struct inlined_set {
	struct inlined_copy *copies;
	int count, cap;
};

/* Finds and analyses every copy of the functions in fns. `pm` (may have
 * usedpools 0) lets pymalloc malloc/calloc copies be verified for
 * prediction; `cfi` proves the stack pointer at return sites. */
int inlined_find(struct x86_code *code, struct elf_file *ef, struct cfi *cfi, const struct alloc_function *fns, int nfns,
		 const struct pymalloc_info *pm, struct inlined_set *out);
void inlined_free(struct inlined_set *s);

/* Does a copy of this function need its result (an ENTRY + RETURN pair)
 * rather than acting at the guard (PREDICT, FREE)? */
bool inlined_needs_result(const struct alloc_function *fn, const struct pymalloc_info *pm);

#endif
