#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "pymalloc.h"
#include "remote.h"
#include "sampled.h"

#define MAX_POOL_SIZE 16384

struct pool_state {
	uint32_t size_class; /* PYMALLOC_SIZE_CLASSES: not a pool of ours any more */
	uint32_t in_use;
	bool sample_live;
};

static uint32_t u32_at(const uint8_t *p, size_t off)
{
	uint32_t v;

	memcpy(&v, p + off, sizeof(v));
	return v;
}

static uint64_t u64_at(const uint8_t *p, size_t off)
{
	uint64_t v;

	memcpy(&v, p + off, sizeof(v));
	return v;
}

/* Is `block` on the pool's free list? (Blocks past nextoffset were never
 * handed out since the pool was last set up, and are free too.) */
static int block_is_free(pid_t pid, uint64_t pool, uint32_t pool_size, uint64_t first_free, uint64_t block,
			 uint32_t capacity, bool *is_free)
{
	static uint8_t buf[MAX_POOL_SIZE];
	uint64_t p = first_free;
	int err;

	*is_free = false;
	if ((err = remote_read(pid, pool, buf, pool_size)))
		return err;
	for (uint32_t i = 0; p && i <= capacity; i++) {
		if (p == block) {
			*is_free = true;
			return 0;
		}
		if (p < pool + POOL_OVERHEAD || p + 8 > pool + pool_size)
			return -EINVAL;
		p = u64_at(buf, p - pool);
	}
	/* a list longer than the pool has blocks is not a free list */
	return p ? -EINVAL : 0;
}

/* What the pool holds now, and whether the sample's block is in use. A
 * pool that was emptied and set up again for another size class, or whose
 * arena was given back, no longer speaks for the sample. */
static int read_pool(pid_t pid, uint32_t pool_size, uint64_t pool, uint64_t block, struct pool_state *st)
{
	uint8_t hdr[POOL_OVERHEAD];
	uint32_t szidx, block_size, capacity, nextoffset;
	uint64_t offset = block - pool;
	bool is_free;
	int err;

	st->size_class = PYMALLOC_SIZE_CLASSES;
	st->in_use = 0;
	st->sample_live = false;
	if (remote_read(pid, pool, hdr, sizeof(hdr)))
		return 0; /* the arena was unmapped */
	szidx = u32_at(hdr, POOL_SZIDX);
	if (szidx >= PYMALLOC_SIZE_CLASSES)
		return 0;
	block_size = (szidx + 1) << PYMALLOC_ALIGNMENT_SHIFT;
	capacity = (pool_size - POOL_OVERHEAD) / block_size;
	nextoffset = u32_at(hdr, POOL_NEXTOFFSET);
	if (u32_at(hdr, POOL_MAXNEXTOFFSET) != pool_size - block_size || nextoffset > pool_size ||
	    offset < POOL_OVERHEAD || offset >= pool_size || (offset - POOL_OVERHEAD) % block_size ||
	    u32_at(hdr, POOL_COUNT) > capacity)
		return 0;
	st->size_class = szidx;
	st->in_use = u32_at(hdr, POOL_COUNT);
	if (!st->in_use || offset >= nextoffset)
		return 0;
	if (st->in_use == capacity) {
		st->sample_live = true;
		return 0;
	}
	err = block_is_free(pid, pool, pool_size, u64_at(hdr, POOL_FREEBLOCK), block, capacity, &is_free);
	if (err)
		return err;
	st->sample_live = !is_free;
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
	if (pool_size != 4096 && pool_size != MAX_POOL_SIZE) {
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
