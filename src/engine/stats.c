/* Snapshot.statistics(): Snapshot._group_by() and the sort of Lib/tracemalloc.py. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "tmtrace/engine.h"
#include "snapshot_impl.h"

int tm_traceback_compare(const struct tm_traceback *a, const struct tm_traceback *b)
{
	/* Traceback._frames is oldest first: compare from the end of our
	 * most-recent-first arrays, as tuples of (filename, lineno). */
	uint32_t n = a->nframe < b->nframe ? a->nframe : b->nframe;

	for (uint32_t i = 0; i < n; i++) {
		const struct tm_frame *fa = &a->frames[a->nframe - 1 - i];
		const struct tm_frame *fb = &b->frames[b->nframe - 1 - i];

		if (fa->filename != fb->filename) {
			/* UTF-8 byte order is code point order, as str compares */
			int c = strcmp(fa->filename, fb->filename);

			if (c)
				return c;
		}
		if (fa->lineno != fb->lineno)
			return fa->lineno < fb->lineno ? -1 : 1;
	}
	return (a->nframe > n) - (b->nframe > n);
}

/* Statistic._sort_key is (size, count, traceback); sorted in reverse. */
static int statistic_order(const void *pa, const void *pb)
{
	const struct tm_statistic *a = pa, *b = pb;

	if (a->size != b->size)
		return a->size > b->size ? -1 : 1;
	if (a->count != b->count)
		return a->count > b->count ? -1 : 1;
	return -tm_traceback_compare(a->traceback, b->traceback);
}

struct group {
	const struct tm_traceback *key;
	size_t index; /* into the statistics array */
};

struct grouping {
	struct hashset keys; /* struct group, by key traceback identity */
	struct hashset tracebacks;
	struct arena arena;
	struct tm_statistic *stats;
	size_t count, cap;
};

static bool group_eq(const void *entry, const void *probe)
{
	return ((const struct group *)entry)->key == probe;
}

static int add_to(struct grouping *g, const struct tm_frame *frames, uint32_t nframe, int64_t size,
		  int64_t count)
{
	/* Keys carry no total_nframe (Traceback(frames) in _group_by). */
	const struct tm_traceback *key = tm_intern_traceback(&g->tracebacks, &g->arena, frames, nframe, 0);
	uint64_t h;
	struct group *grp;

	if (!key)
		return -ENOMEM;
	h = hash_mix((uintptr_t)key, 0);
	grp = hashset_find(&g->keys, h, key, group_eq);
	if (!grp) {
		if (g->count == g->cap) {
			size_t cap = g->cap ? g->cap * 2 : 256;
			struct tm_statistic *grown = realloc(g->stats, cap * sizeof(*grown));

			if (!grown)
				return -ENOMEM;
			g->stats = grown;
			g->cap = cap;
		}
		grp = arena_alloc(&g->arena, sizeof(*grp));
		if (!grp)
			return -ENOMEM;
		grp->key = key;
		grp->index = g->count;
		g->stats[g->count++] = (struct tm_statistic){ key, 0, 0 };
		if (hashset_add(&g->keys, h, grp))
			return -ENOMEM;
	}
	g->stats[grp->index].size += size;
	g->stats[grp->index].count += count;
	return 0;
}

static int group_trace(struct grouping *g, const struct tm_trace *t, enum tm_key_type key, bool cumulative)
{
	const struct tm_traceback *tb = t->traceback;
	struct tm_frame frame;
	int err = 0;

	if (!cumulative) {
		switch (key) {
		case TM_KEY_TRACEBACK:
			return add_to(g, tb->frames, tb->nframe, (int64_t)t->size, (int64_t)t->count);
		case TM_KEY_LINENO:
			return add_to(g, tb->frames, tb->nframe ? 1 : 0, (int64_t)t->size, (int64_t)t->count);
		case TM_KEY_FILENAME:
			if (!tb->nframe)
				return add_to(g, NULL, 0, (int64_t)t->size, (int64_t)t->count);
			frame = (struct tm_frame){ tb->frames[0].filename, 0 };
			return add_to(g, &frame, 1, (int64_t)t->size, (int64_t)t->count);
		}
		return -EINVAL;
	}
	/* Cumulative: every frame counts the trace, repeated frames too. */
	for (uint32_t i = 0; i < tb->nframe && !err; i++) {
		frame = tb->frames[i];
		if (key == TM_KEY_FILENAME)
			frame.lineno = 0;
		err = add_to(g, &frame, 1, (int64_t)t->size, (int64_t)t->count);
	}
	return err;
}

int tm_snapshot_statistics(const struct tm_snapshot *s, enum tm_key_type key, bool cumulative,
			   struct tm_statistics *out)
{
	struct grouping g = { 0 };
	int err = 0;

	memset(out, 0, sizeof(*out));
	if (cumulative && key == TM_KEY_TRACEBACK)
		return -EINVAL; /* as tracemalloc: cumulative needs lineno or filename */
	for (size_t i = 0; i < s->ntraces && !err; i++)
		err = group_trace(&g, &s->traces[i], key, cumulative);
	hashset_free(&g.keys);
	hashset_free(&g.tracebacks);
	if (err) {
		free(g.stats);
		arena_free(&g.arena);
		return err;
	}
	qsort(g.stats, g.count, sizeof(*g.stats), statistic_order);
	out->stats = g.stats;
	out->count = g.count;
	out->arena = malloc(sizeof(struct arena));
	if (!out->arena) {
		free(g.stats);
		arena_free(&g.arena);
		return -ENOMEM;
	}
	*(struct arena *)out->arena = g.arena;
	return 0;
}

void tm_statistics_free(struct tm_statistics *st)
{
	if (st->arena) {
		arena_free(st->arena);
		free(st->arena);
	}
	free(st->stats);
	memset(st, 0, sizeof(*st));
}
