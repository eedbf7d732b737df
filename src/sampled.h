/* --sample: pymalloc's live memory estimated from pool refills.
 *
 * Only allocate_from_new_pool() is probed on pymalloc's side. Each pool
 * refilled since attach keeps its latest sample: the block handed out and
 * the traceback of the allocation that needed the pool. At report time the
 * pools are read out of the target (never written): a pool's header says
 * how many of its blocks are in use, which is exact, and whether the
 * sample's block is still in use. Within a size class, the pools' blocks in
 * use are shared out among the tracebacks of the live samples of that class
 * (a ratio estimate: a line's share of the surviving samples stands for its
 * share of the class's live blocks). */
#ifndef TMTRACE_SAMPLED_H
#define TMTRACE_SAMPLED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "tmtrace.h"

struct sampled_input {
	uint64_t pool;
	struct tm_pool_sample sample;
	bool drop; /* out: the pool is gone, empty or in another size class */
};

struct sampled_line {
	uint32_t traceback_id;
	uint64_t size;  /* estimated bytes (block sizes) */
	uint64_t count; /* estimated blocks */
};

struct sampled_estimate {
	struct sampled_line *lines; /* one per traceback id with an estimate */
	size_t nlines;
	uint64_t pools;        /* sampled pools with blocks in use */
	uint64_t live_samples; /* samples whose block is still in use */
	uint64_t blocks;       /* blocks in use in those pools */
	uint64_t bytes;
	uint64_t unreadable;   /* pools whose state could not be read */
};

/* Reads the pools of `in` from process `pid` (pool_size: 4 or 16 KiB) and
 * estimates the live blocks of each traceback. */
int sampled_estimate(pid_t pid, uint32_t pool_size, struct sampled_input *in, size_t n,
		     struct sampled_estimate *out);
void sampled_estimate_free(struct sampled_estimate *e);

#endif
