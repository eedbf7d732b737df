/* pymalloc's state as a probe needs it: where usedpools[] is, and the
 * out-of-line allocate_from_new_pool() that refills an empty size class. */
#ifndef TMTRACE_PYMALLOC_H
#define TMTRACE_PYMALLOC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "x86.h"

/* pool_header in Objects/obmalloc.c, the same from 3.8 to 3.13 */
#define POOL_COUNT 0 /* blocks in use (ref.count) */
#define POOL_FREEBLOCK 8
#define POOL_NEXTPOOL 16
#define POOL_PREVPOOL 24
#define POOL_SZIDX 36
#define POOL_NEXTOFFSET 40    /* bytes from the pool to its first never-used block */
#define POOL_MAXNEXTOFFSET 44 /* POOL_SIZE minus the block size */
#define POOL_OVERHEAD 48      /* the header, rounded up to the alignment */
#define PYMALLOC_SMALL_REQUEST_THRESHOLD 512
#define PYMALLOC_ALIGNMENT_SHIFT 4
#define PYMALLOC_SIZE_CLASSES (PYMALLOC_SMALL_REQUEST_THRESHOLD >> PYMALLOC_ALIGNMENT_SHIFT)

struct pymalloc_info {
	uint64_t usedpools;   /* file address of usedpools[] */
	/* 3.12+: usedpools[] live in each interpreter's obmalloc state; BPF
	 * finds the calling thread's (its interpreter's, or the main one's) */
	bool per_interp;
	uint64_t new_pool_fn; /* file address of allocate_from_new_pool() */
	uint64_t raw_fns[2];  /* the raw domain's malloc and calloc, for copies that go straight there */
};

/* Reads both out of the default _PyObject_Malloc: the scaled load of
 * usedpools[2 * size class], and the call on the branch taken when the
 * pool list is empty (pool == pool->nextpool). */
int pymalloc_find(struct x86_code *code, uint64_t obj_malloc, struct pymalloc_info *out);

/* Checks usedpools[] in the live target: every size class is either an
 * empty list (pointing at its own header) or a pool of that size class. */
int pymalloc_check_live(pid_t pid, uint64_t usedpools_addr);

/* Is `addr` a usedpools[] entry? Its size class through *size_class. */
bool pymalloc_usedpools_slot(const struct pymalloc_info *pm, uint64_t addr, unsigned *size_class);

#endif
