#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "lazyfree.h"
#include "pool.h"

/* What a sweep knows of one live pymalloc block: its place in its pool and
 * the allocation that put it there. */
struct pool_block {
	uint32_t seq;
	uint16_t offset; /* in the pool (pools are 16 KiB at most) */
	uint16_t size;   /* bytes asked for: the size class */
};

struct tracked_pool {
	uint64_t address;
	struct pool_block *blocks;
	uint32_t n, cap;
	uint32_t merged; /* blocks[0, merged) hold one block per offset */
};

/* The pymalloc blocks of the live map, kept pool by pool between sweeps, so
 * that a sweep reads only the journal of allocations since the last one
 * and the pools, not the whole live table (64 MiB for a million blocks of
 * capacity, however few are live). */
struct lazyfree {
	uint32_t pool_size;
	struct tracked_pool *pools;
	uint32_t npools, cap;
	int64_t *index; /* open addressing: pool address -> number; -1 empty */
	size_t slots;
	uint64_t consumed; /* allocation numbers taken from the journal */
	bool primed;       /* the live map was read whole once */
	uint32_t latest[POOL_MAX_SIZE >> PYMALLOC_ALIGNMENT_SHIFT]; /* merge's scratch, kept 0 */
};

struct lazyfree *lazyfree_new(uint32_t pool_size)
{
	struct lazyfree *lf;

	if (pool_size > POOL_MAX_SIZE || !pool_size)
		return NULL;
	lf = calloc(1, sizeof(*lf));
	if (lf)
		lf->pool_size = pool_size;
	return lf;
}

void lazyfree_free(struct lazyfree *lf)
{
	if (!lf)
		return;
	for (uint32_t p = 0; p < lf->npools; p++)
		free(lf->pools[p].blocks);
	free(lf->pools);
	free(lf->index);
	free(lf);
}

static size_t pool_slot(const struct lazyfree *lf, uint64_t pool)
{
	return (size_t)((pool >> 12) * 0x9e3779b97f4a7c15ULL) & (lf->slots - 1);
}

/* The index rebuilt for the pools as they are (after a sweep dropped some,
 * or to grow it): at most half full. */
static int reindex(struct lazyfree *lf)
{
	size_t slots = lf->slots ? lf->slots : 1024;

	while (slots < 2 * ((size_t)lf->npools + 1))
		slots *= 2;
	free(lf->index);
	lf->index = malloc(slots * sizeof(*lf->index));
	lf->slots = lf->index ? slots : 0;
	if (!lf->index)
		return -ENOMEM;
	memset(lf->index, 0xff, slots * sizeof(*lf->index));
	for (uint32_t p = 0; p < lf->npools; p++) {
		size_t h = pool_slot(lf, lf->pools[p].address);

		while (lf->index[h] >= 0)
			h = (h + 1) & (slots - 1);
		lf->index[h] = p;
	}
	return 0;
}

static struct tracked_pool *pool_of(struct lazyfree *lf, uint64_t pool)
{
	struct tracked_pool *tp;
	size_t h;

	if (2 * ((size_t)lf->npools + 1) > lf->slots && reindex(lf))
		return NULL;
	h = pool_slot(lf, pool);
	while (lf->index[h] >= 0) {
		if (lf->pools[lf->index[h]].address == pool)
			return &lf->pools[lf->index[h]];
		h = (h + 1) & (lf->slots - 1);
	}
	if (lf->npools == lf->cap) {
		uint32_t cap = lf->cap ? 2 * lf->cap : 256;
		struct tracked_pool *grown = realloc(lf->pools, cap * sizeof(*grown));

		if (!grown)
			return NULL;
		lf->pools = grown;
		lf->cap = cap;
	}
	lf->index[h] = lf->npools;
	tp = &lf->pools[lf->npools++];
	*tp = (struct tracked_pool){ .address = pool };
	return tp;
}

/* Only what a pool handed out: a pymalloc function's result of 512 bytes
 * or less (larger requests go to the raw domain). */
static bool from_a_pool(uint64_t size)
{
	return size - 1 < PYMALLOC_SMALL_REQUEST_THRESHOLD;
}

static int add_block(struct lazyfree *lf, uint64_t ptr, uint64_t size, uint32_t seq)
{
	uint64_t pool = ptr & ~(uint64_t)(lf->pool_size - 1);
	struct tracked_pool *tp = pool_of(lf, pool);

	if (!tp)
		return -ENOMEM;
	if (tp->n == tp->cap) {
		uint32_t cap = tp->cap ? 2 * tp->cap : 8;
		struct pool_block *grown = realloc(tp->blocks, cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		tp->blocks = grown;
		tp->cap = cap;
	}
	tp->blocks[tp->n++] = (struct pool_block){ seq, (uint16_t)(ptr - pool), (uint16_t)size };
	return 0;
}

static int add_from_map(void *ctx, uint64_t address, const struct tm_block *b)
{
	if (b->domain || !(b->flags & TM_BLOCK_PYMALLOC) || !from_a_pool(b->size))
		return 0;
	return add_block(ctx, address, b->size, b->seq);
}

static bool newer(uint32_t seq, uint32_t than)
{
	return (int32_t)(seq - than) > 0;
}

/* One block per offset, the newest allocation's: the journal brings a
 * block again each time its address is reused. */
static void merge(struct lazyfree *lf, struct tracked_pool *tp)
{
	uint32_t kept = 0;

	if (tp->merged == tp->n)
		return;
	for (uint32_t i = 0; i < tp->n; i++) {
		uint32_t *at = &lf->latest[tp->blocks[i].offset >> PYMALLOC_ALIGNMENT_SHIFT];

		if (!*at || newer(tp->blocks[i].seq, tp->blocks[*at - 1].seq))
			*at = i + 1;
	}
	for (uint32_t i = 0; i < tp->n; i++) {
		uint32_t *at = &lf->latest[tp->blocks[i].offset >> PYMALLOC_ALIGNMENT_SHIFT];

		if (*at == i + 1) {
			tp->blocks[kept++] = tp->blocks[i];
			*at = 0;
		}
	}
	tp->n = tp->merged = kept;
}

/* The allocations numbered since the last sweep, in order, up to the first
 * slot not written yet (its program still running): the rest waits for
 * the next sweep. */
static int take_journal(struct lazyfree *lf, struct loader *l, uint64_t numbered, uint64_t *taken)
{
	uint32_t entries;
	const struct tm_journal_entry *journal = loader_journal(l, &entries);

	while (lf->consumed < numbered) {
		uint32_t seq = (uint32_t)(lf->consumed + 1);
		const struct tm_journal_entry *e = &journal[seq & (entries - 1)];
		uint32_t before = __atomic_load_n(&e->seq, __ATOMIC_ACQUIRE), after, size;
		uint64_t ptr;

		ptr = __atomic_load_n(&e->ptr, __ATOMIC_RELAXED);
		size = __atomic_load_n(&e->size, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		after = __atomic_load_n(&e->seq, __ATOMIC_RELAXED);
		if (before != seq || after != seq)
			break; /* not written yet, or written over (caller's overrun) */
		if (size && from_a_pool(size)) {
			int err = add_block(lf, ptr, size, seq);

			if (err)
				return err;
		}
		lf->consumed++;
		(*taken)++;
	}
	return 0;
}

/* Forgets every pool's blocks and reads the whole live map instead: the
 * first time, and when the journal ran over. */
static int read_whole_map(struct lazyfree *lf, struct loader *l, uint64_t numbered)
{
	for (uint32_t p = 0; p < lf->npools; p++)
		lf->pools[p].n = lf->pools[p].merged = 0;
	/* the allocations numbered meanwhile may come again from the
	 * journal: merge() keeps one of each */
	lf->consumed = numbered;
	lf->primed = true;
	return loader_each_block(l, add_from_map, lf);
}

bool lazyfree_due(const struct lazyfree *lf, const struct loader *l)
{
	uint32_t entries;

	loader_journal(l, &entries);
	return lf->primed && loader_allocations_numbered(l) - lf->consumed > entries / 2;
}

/* Checks a pool's blocks against the pool as read out of the target:
 * those it has free leave the live map. A pool that cannot be read keeps
 * its blocks until a sweep can (counted unsettled); -ESRCH: the target
 * exited. */
static int sweep_pool(struct lazyfree *lf, struct loader *l, pid_t pid, struct tracked_pool *tp,
		      struct lazyfree_sweep *out)
{
	struct pool_view v;
	uint32_t kept = 0;
	int r;

	merge(lf, tp);
	out->blocks += tp->n;
	out->pools++;
	r = pool_view_read(pid, lf->pool_size, tp->address, &v);
	if (r == -ESRCH)
		return r; /* the target exited */
	if (r) {
		out->unsettled++;
		return 0;
	}
	/* a block is in use if its pool, still set up for its size class,
	 * says so; else it was freed (and the pool perhaps emptied and set
	 * up again, or its arena given back) */
	for (uint32_t i = 0; i < tp->n; i++) {
		const struct pool_block *b = &tp->blocks[i];

		if (v.is_pool && v.size_class == (uint32_t)(b->size - 1) >> PYMALLOC_ALIGNMENT_SHIFT &&
		    pool_view_in_use(&v, b->offset)) {
			tp->blocks[kept++] = *b;
			continue;
		}
		/* gone from the map either way: taken at the sweep's end,
		 * freed through a probe, or replaced by a newer allocation
		 * that the journal brings */
		r = loader_forget_freed(l, tp->address + b->offset, b->seq);
		if (r < 0)
			return r;
	}
	tp->n = tp->merged = kept;
	return 0;
}

int lazyfree_sweep(struct lazyfree *lf, struct loader *l, pid_t pid, struct lazyfree_sweep *out)
{
	uint64_t numbered = loader_allocations_numbered(l);
	uint32_t entries, live = 0;
	int64_t gone;
	int err = 0;

	memset(out, 0, sizeof(*out));
	loader_journal(l, &entries);
	if (!lf->primed || numbered - lf->consumed > entries) {
		out->whole_map = true;
		err = read_whole_map(lf, l, numbered);
	} else {
		err = take_journal(lf, l, numbered, &out->journal);
	}
	for (uint32_t p = 0; !err && p < lf->npools; p++)
		err = sweep_pool(lf, l, pid, &lf->pools[p], out);
	/* the blocks found free, queued by sweep_pool(), go now */
	gone = loader_forget_queued(l);
	if (gone > 0)
		out->freed += (uint64_t)gone;
	else if (gone < 0 && !err)
		err = (int)gone;
	if (err == -ESRCH)
		err = 0;
	/* pools with nothing left go; the index is rebuilt for the rest */
	for (uint32_t p = 0; p < lf->npools; p++) {
		if (lf->pools[p].n) {
			lf->pools[live++] = lf->pools[p];
			continue;
		}
		free(lf->pools[p].blocks);
	}
	lf->npools = live;
	if (reindex(lf) && !err)
		err = -ENOMEM;
	return err;
}
