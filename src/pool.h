/* One pymalloc pool read out of the target, and which of its blocks are
 * free: on its free list, or past nextoffset (never handed out since the
 * pool was set up). */
#ifndef TMTRACE_POOL_H
#define TMTRACE_POOL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "pymalloc.h"

#define POOL_MAX_SIZE 16384
#define POOL_MAX_BLOCKS ((POOL_MAX_SIZE - POOL_OVERHEAD) / 16)

struct pool_view {
	/* false: not a pool (its arena was given back, or the header makes no
	 * sense): none of the blocks once there is in use */
	bool is_pool;
	uint32_t size_class, block_size, capacity, in_use;
	uint8_t free[(POOL_MAX_BLOCKS + 7) / 8]; /* bit i: block i is free */
};

/* Reads the pool at `pool` (pool_size: 4 or 16 KiB) in process `pid`.
 * The target runs meanwhile: the pool is read until two readings agree on
 * its header and free blocks, and the blocks add up (in use plus free is
 * the capacity). -EAGAIN: no two readings agreed; -ESRCH, ...: unreadable. */
int pool_view_read(pid_t pid, uint32_t pool_size, uint64_t pool, struct pool_view *v);
/* Is the block at `offset` bytes into the pool in use? false when the
 * offset is no block boundary of the pool's size class. */
bool pool_view_in_use(const struct pool_view *v, uint64_t offset);

#endif
