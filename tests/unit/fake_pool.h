/* pymalloc pools laid out as Objects/obmalloc.c lays them out (its
 * pool_header), in the test's own memory: the code under test reads them
 * with process_vm_readv() as it reads a target's. */
#ifndef TMTRACE_FAKE_POOL_H
#define TMTRACE_FAKE_POOL_H

#include <stdint.h>
#include <string.h>
#include "pymalloc.h"

#define POOL 16384

struct pool_header {
	uint32_t count;
	uint32_t pad;
	uint64_t freeblock;
	uint64_t nextpool, prevpool;
	uint32_t arenaindex, szidx, nextoffset, maxnextoffset;
};

_Static_assert(sizeof(struct pool_header) == POOL_OVERHEAD, "pool_header layout");

static inline uint64_t fake_block(uint8_t *pool, uint32_t size_class, uint32_t index)
{
	return (uint64_t)(uintptr_t)pool + POOL_OVERHEAD + (uint64_t)index * ((size_class + 1) << PYMALLOC_ALIGNMENT_SHIFT);
}

/* A pool of `size_class` whose first `handed_out` blocks were handed out,
 * `freed` of them (indices) freed again, latest first on the free list. */
static inline void fake_pool(uint8_t *pool, uint32_t size_class, uint32_t handed_out, const uint32_t *freed,
			     int nfreed)
{
	struct pool_header *h = (struct pool_header *)pool;
	uint32_t block_size = (size_class + 1) << PYMALLOC_ALIGNMENT_SHIFT;

	memset(pool, 0xab, POOL);
	memset(h, 0, sizeof(*h));
	h->szidx = size_class;
	h->maxnextoffset = POOL - block_size;
	h->nextoffset = POOL_OVERHEAD + handed_out * block_size;
	h->count = handed_out - (uint32_t)nfreed;
	for (int i = 0; i < nfreed; i++) {
		uint64_t b = fake_block(pool, size_class, freed[i]);

		memcpy((void *)(uintptr_t)b, &h->freeblock, sizeof(h->freeblock));
		h->freeblock = b;
	}
}

#endif
