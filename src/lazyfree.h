/* --lazy-frees: pymalloc's frees are not probed. At each report the live
 * map's pymalloc blocks are looked up in their pools, read out of the
 * target (never written), and those found free leave the map. The blocks
 * are kept here pool by pool between sweeps; a sweep adds those the BPF
 * journal numbered since the last, and reads the whole live map only the
 * first time or when the journal ran over. */
#ifndef TMTRACE_LAZYFREE_H
#define TMTRACE_LAZYFREE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "loader.h"

struct lazyfree_sweep {
	uint64_t blocks;     /* pymalloc blocks looked at */
	uint64_t pools;      /* pools read */
	uint64_t freed;      /* blocks found free and taken out */
	uint64_t unsettled;  /* pools that could not be read, or not consistently */
	uint64_t journal;    /* allocations taken from the journal */
	bool whole_map;      /* the live map was read instead */
};

struct lazyfree;

/* pool_size: the target's POOL_SIZE. NULL: out of memory, or a pool size
 * this does not know. */
struct lazyfree *lazyfree_new(uint32_t pool_size);
void lazyfree_free(struct lazyfree *lf);
int lazyfree_sweep(struct lazyfree *lf, struct loader *l, pid_t pid, struct lazyfree_sweep *out);
/* Is the journal half full since the last sweep? (a sweep now keeps it
 * from running over, which would cost a read of the whole map) */
bool lazyfree_due(const struct lazyfree *lf, const struct loader *l);

#endif
