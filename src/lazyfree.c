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

/* The candidates grouped by pool without sorting them (a sort of a million
 * was half a sweep): pools numbered through an open-addressing table, then
 * a counting sort of candidate indices by pool number. */
struct pool_groups {
	uint64_t *pools;   /* by number */
	uint32_t npools;
	uint32_t *first;   /* npools + 1 offsets into order[] */
	uint32_t *order;   /* candidate indices, pool by pool */
};

static uint64_t hash_pool(uint64_t pool)
{
	return (pool >> 12) * 0x9e3779b97f4a7c15ULL;
}

static int group_by_pool(const struct candidates *cs, uint64_t pool_size, struct pool_groups *g)
{
	size_t slots = 1024;
	uint32_t *number = NULL, *slot = NULL;
	int64_t *table;
	int err = -ENOMEM;

	memset(g, 0, sizeof(*g));
	while (slots < 2 * cs->n)
		slots *= 2;
	table = malloc(slots * sizeof(*table));
	number = malloc((cs->n ? cs->n : 1) * sizeof(*number));
	g->pools = malloc((cs->n ? cs->n : 1) * sizeof(*g->pools));
	if (!table || !number || !g->pools)
		goto out;
	memset(table, 0xff, slots * sizeof(*table)); /* -1: empty */
	for (size_t i = 0; i < cs->n; i++) {
		uint64_t pool = cs->c[i].ptr & ~(pool_size - 1);
		size_t h = hash_pool(pool) & (slots - 1);

		while (table[h] >= 0 && g->pools[table[h]] != pool)
			h = (h + 1) & (slots - 1);
		if (table[h] < 0) {
			table[h] = g->npools;
			g->pools[g->npools++] = pool;
		}
		number[i] = (uint32_t)table[h];
	}
	g->first = calloc((size_t)g->npools + 1, sizeof(*g->first));
	g->order = malloc((cs->n ? cs->n : 1) * sizeof(*g->order));
	slot = malloc(((size_t)g->npools + 1) * sizeof(*slot));
	if (!g->first || !g->order || !slot)
		goto out;
	for (size_t i = 0; i < cs->n; i++)
		g->first[number[i] + 1]++;
	for (uint32_t p = 0; p < g->npools; p++)
		g->first[p + 1] += g->first[p];
	memcpy(slot, g->first, ((size_t)g->npools + 1) * sizeof(*slot));
	for (size_t i = 0; i < cs->n; i++)
		g->order[slot[number[i]]++] = (uint32_t)i;
	err = 0;
out:
	free(table);
	free(number);
	free(slot);
	return err;
}

static void pool_groups_free(struct pool_groups *g)
{
	free(g->pools);
	free(g->first);
	free(g->order);
}

int lazyfree_sweep(struct loader *l, pid_t pid, struct lazyfree_sweep *out)
{
	uint64_t pool_size = loader_pool_size(l);
	struct candidates cs = { 0 };
	struct pool_groups groups;
	struct pool_view v;
	int err;

	memset(out, 0, sizeof(*out));
	err = loader_each_block(l, collect, &cs);
	if (err) {
		free(cs.c);
		return err;
	}
	out->blocks = cs.n;
	err = group_by_pool(&cs, pool_size, &groups);
	/* pool by pool: each pool read once for all its blocks */
	for (uint32_t p = 0; !err && p < groups.npools; p++) {
		uint64_t pool = groups.pools[p];
		int r;

		out->pools++;
		r = pool_view_read(pid, (uint32_t)pool_size, pool, &v);
		if (r == -ESRCH)
			break; /* the target exited */
		if (r) {
			/* left in the map: the next sweep tells */
			out->unsettled++;
			continue;
		}
		/* a block is in use if its pool, still set up for its size
		 * class, says so; else it was freed (and the pool perhaps
		 * emptied and set up again, or its arena given back) */
		for (uint32_t j = groups.first[p]; j < groups.first[p + 1]; j++) {
			const struct candidate *c = &cs.c[groups.order[j]];

			if (v.is_pool && v.size_class == (c->seen.size - 1) >> PYMALLOC_ALIGNMENT_SHIFT &&
			    pool_view_in_use(&v, c->ptr - pool))
				continue;
			out->freed += loader_forget_freed(l, c->ptr, &c->seen) > 0;
		}
	}
	pool_groups_free(&groups);
	free(cs.c);
	return err;
}
