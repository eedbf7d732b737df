/* Snapshot.statistics() and Snapshot.compare_to(): Snapshot._group_by(),
 * _compare_grouped_stats() and the sorts of Lib/tracemalloc.py.
 *
 * Grouping keys are tracebacks interned by content in a table of their own,
 * with filenames made canonical by content, so the keys of two snapshots
 * (compare_to) are the same pointers when they are equal. Each source
 * traceback is turned into its key(s) once, cached by its id: a trace
 * costs an array lookup and two additions. */
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

/* Keys shared by the grouping of one or two snapshots. */
struct key_space {
	struct arena arena;
	struct hashset strings; /* canonical filenames, by content */
	struct hashset keys;    /* key tracebacks, by content */
	uint32_t nkeys;
};

/* One snapshot grouped by key: a statistic per key id. */
struct grouping {
	struct tm_statistic *stats; /* indexed by key id */
	bool *present;
	size_t cap;
	/* source traceback id -> its key ids (one, or one per frame when
	 * cumulative): keys_of[first[id] .. first[id] + nkeys_of_tb[id]] */
	uint32_t *first, *nkeys_of_tb;
	bool *done;
	uint32_t *keys_of;
	size_t nkeys_of, keys_cap;
};

static bool string_eq(const void *e, const void *p)
{
	return strcmp(e, p) == 0;
}

static const char *canonical(struct key_space *ks, const char *s)
{
	size_t len = strlen(s);
	uint64_t h = hash_bytes(s, len);
	char *found = hashset_find(&ks->strings, h, s, string_eq);

	if (found)
		return found;
	found = arena_strdup(&ks->arena, s, len);
	if (!found || hashset_add(&ks->strings, h, found))
		return NULL;
	return found;
}

static const struct tm_traceback *key_of(struct key_space *ks, const struct tm_frame *src, uint32_t n,
					 bool filename_only)
{
	struct tm_frame frames[n ? n : 1];

	for (uint32_t i = 0; i < n; i++) {
		frames[i].filename = canonical(ks, src[i].filename);
		frames[i].lineno = filename_only ? 0 : src[i].lineno;
		if (!frames[i].filename)
			return NULL;
	}
	/* keys carry no total_nframe: Traceback(frames) in _group_by */
	return tm_intern_traceback(&ks->keys, &ks->arena, frames, n, TM_TOTAL_NFRAME_NONE, &ks->nkeys);
}

static int ensure_stat(struct grouping *g, const struct tm_traceback *key)
{
	if (key->id >= g->cap) {
		size_t cap = g->cap ? g->cap : 256;

		while (cap <= key->id)
			cap *= 2;
		struct tm_statistic *s = realloc(g->stats, cap * sizeof(*s));
		if (!s)
			return -ENOMEM;
		g->stats = s;
		bool *p = realloc(g->present, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		g->present = p;
		memset(g->present + g->cap, 0, (cap - g->cap) * sizeof(*p));
		g->cap = cap;
	}
	if (!g->present[key->id]) {
		g->present[key->id] = true;
		g->stats[key->id] = (struct tm_statistic){ key, 0, 0 };
	}
	return 0;
}

static int push_key(struct grouping *g, uint32_t id)
{
	if (g->nkeys_of == g->keys_cap) {
		size_t cap = g->keys_cap ? g->keys_cap * 2 : 1024;
		uint32_t *k = realloc(g->keys_of, cap * sizeof(*k));

		if (!k)
			return -ENOMEM;
		g->keys_of = k;
		g->keys_cap = cap;
	}
	g->keys_of[g->nkeys_of++] = id;
	return 0;
}

/* The key(s) of one source traceback, as _group_by derives them. */
static int keys_for(struct key_space *ks, struct grouping *g, const struct tm_traceback *tb,
		    enum tm_key_type key, bool cumulative)
{
	const struct tm_traceback *k;

	g->first[tb->id] = (uint32_t)g->nkeys_of;
	if (!cumulative) {
		if (key == TM_KEY_TRACEBACK)
			k = key_of(ks, tb->frames, tb->nframe, false);
		else
			k = key_of(ks, tb->frames, tb->nframe ? 1 : 0, key == TM_KEY_FILENAME);
		if (!k || ensure_stat(g, k) || push_key(g, k->id))
			return -ENOMEM;
	} else {
		/* cumulative: every frame counts the trace, repeated frames too */
		for (uint32_t i = 0; i < tb->nframe; i++) {
			k = key_of(ks, &tb->frames[i], 1, key == TM_KEY_FILENAME);
			if (!k || ensure_stat(g, k) || push_key(g, k->id))
				return -ENOMEM;
		}
	}
	g->nkeys_of_tb[tb->id] = (uint32_t)g->nkeys_of - g->first[tb->id];
	return 0;
}

static void grouping_free(struct grouping *g)
{
	free(g->stats);
	free(g->present);
	free(g->first);
	free(g->nkeys_of_tb);
	free(g->keys_of);
	memset(g, 0, sizeof(*g));
}

static int group(struct key_space *ks, const struct tm_snapshot *s, enum tm_key_type key, bool cumulative,
		 struct grouping *g)
{
	size_t ntb = s->ntracebacks ? s->ntracebacks : 1;
	int err = 0;

	memset(g, 0, sizeof(*g));
	if (cumulative && key == TM_KEY_TRACEBACK)
		return -EINVAL; /* as tracemalloc: cumulative needs lineno or filename */
	g->first = malloc(ntb * sizeof(*g->first));
	g->nkeys_of_tb = calloc(ntb, sizeof(*g->nkeys_of_tb));
	g->done = calloc(ntb, sizeof(*g->done));
	if (!g->first || !g->nkeys_of_tb || !g->done)
		err = -ENOMEM;
	for (size_t i = 0; i < s->ntraces && !err; i++) {
		const struct tm_trace *t = &s->traces[i];
		uint32_t id = t->traceback->id;

		if (!g->done[id]) {
			err = keys_for(ks, g, t->traceback, key, cumulative);
			g->done[id] = true;
			if (err)
				break;
		}
		for (uint32_t k = 0; k < g->nkeys_of_tb[id]; k++) {
			struct tm_statistic *st = &g->stats[g->keys_of[g->first[id] + k]];

			st->size += (tm_sum_t)t->size;
			st->count += (int64_t)t->count;
		}
	}
	free(g->done);
	g->done = NULL;
	return err;
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

static void key_space_free(struct key_space *ks)
{
	hashset_free(&ks->strings);
	hashset_free(&ks->keys);
	arena_free(&ks->arena);
}

/* The key tracebacks live in the key space's arena: hand it to the result. */
static void *keep_arena(struct key_space *ks)
{
	struct arena *a = malloc(sizeof(*a));

	if (a) {
		*a = ks->arena;
		ks->arena.head = NULL;
	}
	return a;
}

int tm_snapshot_statistics(const struct tm_snapshot *s, enum tm_key_type key, bool cumulative,
			   struct tm_statistics *out)
{
	struct key_space ks = { 0 };
	struct grouping g;
	int err;

	memset(out, 0, sizeof(*out));
	err = group(&ks, s, key, cumulative, &g);
	if (!err) {
		out->stats = malloc((ks.nkeys ? ks.nkeys : 1) * sizeof(*out->stats));
		if (!out->stats)
			err = -ENOMEM;
	}
	for (uint32_t i = 0; !err && i < ks.nkeys && i < g.cap; i++)
		if (g.present[i])
			out->stats[out->count++] = g.stats[i];
	if (!err) {
		qsort(out->stats, out->count, sizeof(*out->stats), statistic_order);
		out->arena = keep_arena(&ks);
		if (!out->arena)
			err = -ENOMEM;
	}
	grouping_free(&g);
	key_space_free(&ks);
	if (err) {
		free(out->stats);
		memset(out, 0, sizeof(*out));
	}
	return err;
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

static unsigned __int128 abs_sum(tm_sum_t v)
{
	return v < 0 ? (unsigned __int128)0 - (unsigned __int128)v : (unsigned __int128)v;
}

static uint64_t abs64(int64_t v)
{
	return v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
}

/* StatisticDiff._sort_key: (abs(size_diff), size, abs(count_diff), count,
 * traceback); sorted in reverse. */
static int diff_order(const void *pa, const void *pb)
{
	const struct tm_statistic_diff *a = pa, *b = pb;

	if (abs_sum(a->size_diff) != abs_sum(b->size_diff))
		return abs_sum(a->size_diff) > abs_sum(b->size_diff) ? -1 : 1;
	if (a->size != b->size)
		return a->size > b->size ? -1 : 1;
	if (abs64(a->count_diff) != abs64(b->count_diff))
		return abs64(a->count_diff) > abs64(b->count_diff) ? -1 : 1;
	if (a->count != b->count)
		return a->count > b->count ? -1 : 1;
	return -tm_traceback_compare(a->traceback, b->traceback);
}

int tm_snapshot_compare(const struct tm_snapshot *new_snap, const struct tm_snapshot *old_snap,
			enum tm_key_type key, bool cumulative, struct tm_statistic_diffs *out)
{
	struct key_space ks = { 0 };
	struct grouping gn = { 0 }, go = { 0 };
	size_t n = 0;
	int err;

	memset(out, 0, sizeof(*out));
	err = group(&ks, new_snap, key, cumulative, &gn);
	if (!err)
		err = group(&ks, old_snap, key, cumulative, &go);
	if (!err) {
		out->diffs = malloc((ks.nkeys ? ks.nkeys : 1) * sizeof(*out->diffs));
		if (!out->diffs)
			err = -ENOMEM;
	}
	/* _compare_grouped_stats: new keys (with the old figures when
	 * present), then keys only the old snapshot has */
	for (uint32_t i = 0; !err && i < ks.nkeys; i++) {
		bool in_new = i < gn.cap && gn.present[i], in_old = i < go.cap && go.present[i];
		struct tm_statistic_diff *d = &out->diffs[n];

		if (in_new) {
			const struct tm_statistic *s = &gn.stats[i];
			tm_sum_t old_size = in_old ? go.stats[i].size : 0;
			int64_t old_count = in_old ? go.stats[i].count : 0;

			*d = (struct tm_statistic_diff){ s->traceback, s->size, s->size - old_size, s->count,
							 s->count - old_count };
			n++;
		} else if (in_old) {
			const struct tm_statistic *s = &go.stats[i];

			*d = (struct tm_statistic_diff){ s->traceback, 0, -s->size, 0, -s->count };
			n++;
		}
	}
	if (!err) {
		out->count = n;
		qsort(out->diffs, n, sizeof(*out->diffs), diff_order);
		out->arena = keep_arena(&ks);
		if (!out->arena)
			err = -ENOMEM;
	}
	grouping_free(&gn);
	grouping_free(&go);
	key_space_free(&ks);
	if (err) {
		free(out->diffs);
		memset(out, 0, sizeof(*out));
	}
	return err;
}

void tm_statistic_diffs_free(struct tm_statistic_diffs *d)
{
	if (d->arena) {
		arena_free(d->arena);
		free(d->arena);
	}
	free(d->diffs);
	memset(d, 0, sizeof(*d));
}
