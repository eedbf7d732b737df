#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "pool.h"
#include "remote.h"
#include "sampled.h"

struct pool_state {
	uint32_t size_class; /* PYMALLOC_SIZE_CLASSES: not a pool of ours any more */
	uint32_t in_use;
	bool sample_live;
};

/* What the pool holds now, and whether the sample's block is in use. A
 * pool that was emptied and set up again for another size class, or whose
 * arena was given back, no longer speaks for the sample. */
static int read_pool(pid_t pid, uint32_t pool_size, uint64_t pool, uint64_t block, struct pool_state *st)
{
	uint64_t offset = block - pool;
	struct pool_view v;
	int err = pool_view_read(pid, pool_size, pool, &v);

	st->size_class = PYMALLOC_SIZE_CLASSES;
	st->in_use = 0;
	st->sample_live = false;
	if (err)
		return err;
	if (!v.is_pool || offset < POOL_OVERHEAD || offset >= pool_size || (offset - POOL_OVERHEAD) % v.block_size)
		return 0;
	st->size_class = v.size_class;
	st->in_use = v.in_use;
	st->sample_live = pool_view_in_use(&v, offset);
	return 0;
}

static int by_traceback(const void *a, const void *b)
{
	const struct sampled_line *x = a, *y = b;

	return x->traceback_id < y->traceback_id ? -1 : x->traceback_id > y->traceback_id;
}

/* Adds `count` blocks of `block_size` to traceback `id`. */
static int add_line(struct sampled_estimate *e, size_t *cap, uint32_t id, uint64_t count, uint32_t block_size)
{
	if (!count)
		return 0;
	if (e->nlines == *cap) {
		size_t ncap = *cap ? 2 * *cap : 64;
		struct sampled_line *grown = realloc(e->lines, ncap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		e->lines = grown;
		*cap = ncap;
	}
	e->lines[e->nlines++] = (struct sampled_line){ id, count * block_size, count };
	return 0;
}

/* Merges the lines of one traceback (a traceback has lines in several size
 * classes). */
static void merge_lines(struct sampled_estimate *e)
{
	size_t out = 0;

	if (e->nlines < 2)
		return;
	qsort(e->lines, e->nlines, sizeof(*e->lines), by_traceback);
	for (size_t i = 0; i < e->nlines; i++) {
		if (out && e->lines[out - 1].traceback_id == e->lines[i].traceback_id) {
			e->lines[out - 1].size += e->lines[i].size;
			e->lines[out - 1].count += e->lines[i].count;
		} else {
			e->lines[out++] = e->lines[i];
		}
	}
	e->nlines = out;
}

int sampled_estimate(pid_t pid, uint32_t pool_size, struct sampled_input *in, size_t n,
		     struct sampled_estimate *out)
{
	uint64_t in_use[PYMALLOC_SIZE_CLASSES] = { 0 }, live[PYMALLOC_SIZE_CLASSES] = { 0 },
		 any[PYMALLOC_SIZE_CLASSES] = { 0 };
	struct pool_state *st = calloc(n ? n : 1, sizeof(*st));
	size_t cap = 0;
	int err = 0;

	memset(out, 0, sizeof(*out));
	if (!st)
		return -ENOMEM;
	if (pool_size != 4096 && pool_size != POOL_MAX_SIZE) {
		free(st);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		if (read_pool(pid, pool_size, in[i].pool, in[i].sample.block, &st[i])) {
			out->unreadable++;
			continue;
		}
		in[i].drop = st[i].size_class == PYMALLOC_SIZE_CLASSES || !st[i].in_use;
		if (in[i].drop)
			continue;
		in_use[st[i].size_class] += st[i].in_use;
		live[st[i].size_class] += st[i].sample_live;
		any[st[i].size_class]++;
		out->pools++;
		out->live_samples += st[i].sample_live;
	}
	/* Share each class's blocks in use out among its live samples; a class
	 * whose samples all died (their blocks reused or freed) falls back on
	 * the pools' latest refills. Largest remainders keep the class total. */
	for (uint32_t c = 0; c < PYMALLOC_SIZE_CLASSES && !err; c++) {
		uint64_t votes = live[c] ? live[c] : any[c], given = 0;
		uint32_t block_size = (c + 1) << PYMALLOC_ALIGNMENT_SHIFT;
		size_t first = out->nlines;

		if (!votes)
			continue;
		for (size_t i = 0; i < n && !err; i++) {
			if (in[i].drop || st[i].size_class != c || (live[c] && !st[i].sample_live))
				continue;
			err = add_line(out, &cap, in[i].sample.traceback_id, in_use[c] / votes, block_size);
			given += in_use[c] / votes;
		}
		/* the remainder, one block each, to the first samples */
		for (size_t i = first; i < out->nlines && given < in_use[c]; i++, given++) {
			out->lines[i].count++;
			out->lines[i].size += block_size;
		}
		if (given < in_use[c] && !err) {
			/* fewer lines than the remainder only when in_use < votes */
			for (size_t i = 0; i < n && given < in_use[c] && !err; i++) {
				if (in[i].drop || st[i].size_class != c || (live[c] && !st[i].sample_live))
					continue;
				err = add_line(out, &cap, in[i].sample.traceback_id, 1, block_size);
				given++;
			}
		}
		out->blocks += in_use[c];
		out->bytes += in_use[c] * block_size;
	}
	free(st);
	if (err) {
		sampled_estimate_free(out);
		return err;
	}
	merge_lines(out);
	return 0;
}

void sampled_estimate_free(struct sampled_estimate *e)
{
	free(e->lines);
	memset(e, 0, sizeof(*e));
}
