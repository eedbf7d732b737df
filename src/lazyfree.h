/* --lazy-frees: pymalloc's frees are not probed. At each report the live
 * map's pymalloc blocks are looked up in their pools, read out of the
 * target (never written), and those found free leave the map. */
#ifndef TMTRACE_LAZYFREE_H
#define TMTRACE_LAZYFREE_H

#include <stdint.h>
#include <sys/types.h>
#include "loader.h"

struct lazyfree_sweep {
	uint64_t blocks;     /* pymalloc blocks looked at */
	uint64_t pools;      /* pools read */
	uint64_t freed;      /* blocks found free and taken out */
	uint64_t unsettled;  /* pools that could not be read, or not consistently */
};

int lazyfree_sweep(struct loader *l, pid_t pid, struct lazyfree_sweep *out);

#endif
