#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "lazyfree.h"
#include "pool.h"

struct candidate {
	uint64_t ptr;
	struct tm_block seen;
};

struct candidates {
	struct candidate *c;
	size_t n, cap;
};

static int collect(void *ctx, uint64_t address, const struct tm_block *b)
{
	struct candidates *cs = ctx;

	/* only what a pool handed out: a pymalloc function's result of 512
	 * bytes or less (larger requests go to the raw domain) */
	if (b->domain || !(b->flags & TM_BLOCK_PYMALLOC) || b->size - 1 >= PYMALLOC_SMALL_REQUEST_THRESHOLD)
		return 0;
	if (cs->n == cs->cap) {
		size_t cap = cs->cap ? 2 * cs->cap : 4096;
		struct candidate *grown = realloc(cs->c, cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		cs->c = grown;
		cs->cap = cap;
	}
	cs->c[cs->n++] = (struct candidate){ address, *b };
	return 0;
}

static int by_address(const void *a, const void *b)
{
	const struct candidate *x = a, *y = b;

	return x->ptr < y->ptr ? -1 : x->ptr > y->ptr;
}

int lazyfree_sweep(struct loader *l, pid_t pid, struct lazyfree_sweep *out)
{
	uint64_t pool_size = loader_pool_size(l);
	struct candidates cs = { 0 };
	struct pool_view v;
	int err;

	memset(out, 0, sizeof(*out));
	err = loader_each_block(l, collect, &cs);
	if (err) {
		free(cs.c);
		return err;
	}
	out->blocks = cs.n;
	/* pool by pool: each pool read once for all its blocks */
	qsort(cs.c, cs.n, sizeof(*cs.c), by_address);
	for (size_t i = 0, next; i < cs.n; i = next) {
		uint64_t pool = cs.c[i].ptr & ~(pool_size - 1);

		for (next = i + 1; next < cs.n && (cs.c[next].ptr & ~(pool_size - 1)) == pool; next++)
			;
		out->pools++;
		err = pool_view_read(pid, (uint32_t)pool_size, pool, &v);
		if (err == -ESRCH)
			break; /* the target exited */
		if (err) {
			/* left in the map: the next sweep tells */
			out->unsettled++;
			err = 0;
			continue;
		}
		/* a block is in use if its pool, still set up for its size
		 * class, says so; else it was freed (and the pool perhaps
		 * emptied and set up again, or its arena given back) */
		for (size_t j = i; j < next; j++) {
			const struct candidate *c = &cs.c[j];

			if (v.is_pool && v.size_class == (c->seen.size - 1) >> PYMALLOC_ALIGNMENT_SHIFT &&
			    pool_view_in_use(&v, c->ptr - pool))
				continue;
			out->freed += loader_forget_freed(l, c->ptr, &c->seen) > 0;
		}
	}
	free(cs.c);
	return err;
}
