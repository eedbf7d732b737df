#include <errno.h>
#include <string.h>
#include "pool.h"
#include "remote.h"

#define READ_TRIES 4

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

/* What the header alone says. true: the free blocks need the free list
 * (some blocks in use, not all); else the view is complete: no pool,
 * an empty one, or a full one. */
static bool parse_header(const uint8_t *buf, uint32_t pool_size, struct pool_view *v)
{
	uint32_t szidx = u32_at(buf, POOL_SZIDX), nextoffset = u32_at(buf, POOL_NEXTOFFSET);

	memset(v, 0, sizeof(*v));
	if (szidx >= PYMALLOC_SIZE_CLASSES)
		return false;
	v->size_class = szidx;
	v->block_size = (szidx + 1) << PYMALLOC_ALIGNMENT_SHIFT;
	v->capacity = (pool_size - POOL_OVERHEAD) / v->block_size;
	v->in_use = u32_at(buf, POOL_COUNT);
	if (u32_at(buf, POOL_MAXNEXTOFFSET) != pool_size - v->block_size || nextoffset > pool_size ||
	    nextoffset < POOL_OVERHEAD || v->in_use > v->capacity)
		return false;
	v->is_pool = true;
	if (v->in_use == 0) {
		memset(v->free, 0xff, sizeof(v->free));
		return false;
	}
	/* full, and saying so three ways (what the free list would add up to) */
	return !(v->in_use == v->capacity && !u64_at(buf, POOL_FREEBLOCK) &&
		 (nextoffset - POOL_OVERHEAD + v->block_size - 1) / v->block_size >= v->capacity);
}

/* The free blocks of a whole pool's reading, its header parsed. -EAGAIN:
 * the reading is not self-consistent (a free list torn by the target
 * running during the copy). */
static int parse_free(const uint8_t *buf, uint32_t pool_size, uint64_t pool, struct pool_view *v)
{
	uint32_t nextoffset = u32_at(buf, POOL_NEXTOFFSET), nfree = 0;
	uint64_t p;

	/* never handed out since the pool was set up */
	for (uint32_t i = (nextoffset - POOL_OVERHEAD + v->block_size - 1) / v->block_size; i < v->capacity; i++) {
		v->free[i / 8] |= (uint8_t)(1u << (i % 8));
		nfree++;
	}
	p = u64_at(buf, POOL_FREEBLOCK);
	for (uint32_t n = 0; p; n++) {
		uint64_t off = p - pool;
		uint32_t i;

		if (n > v->capacity || p < pool + POOL_OVERHEAD || off + v->block_size > pool_size ||
		    (off - POOL_OVERHEAD) % v->block_size)
			return -EAGAIN;
		i = (uint32_t)((off - POOL_OVERHEAD) / v->block_size);
		if (!(v->free[i / 8] & (1u << (i % 8)))) {
			v->free[i / 8] |= (uint8_t)(1u << (i % 8));
			nfree++;
		}
		p = u64_at(buf, off);
	}
	return v->in_use + nfree == v->capacity ? 0 : -EAGAIN;
}

int pool_view_read(pid_t pid, uint32_t pool_size, uint64_t pool, struct pool_view *v)
{
	static uint8_t buf[POOL_MAX_SIZE];
	struct pool_view last = { 0 };
	int err = 0, last_err = -EAGAIN;

	if (pool_size != 4096 && pool_size != POOL_MAX_SIZE)
		return -EINVAL;
	for (int i = 0; i < READ_TRIES; i++) {
		/* the header first: a pool with none or all of its blocks in
		 * use (most pools of a sweep) needs nothing more; else the
		 * whole pool, its free list walked with the header it came with */
		err = remote_read(pid, pool, buf, POOL_OVERHEAD);
		if (!err && parse_header(buf, pool_size, v)) {
			err = remote_read(pid, pool, buf, pool_size);
			if (!err && parse_header(buf, pool_size, v))
				err = parse_free(buf, pool_size, pool, v);
		}
		if (err == -EFAULT) {
			/* unmapped: the arena went back to the system */
			memset(v, 0, sizeof(*v));
			return 0;
		}
		if (err && err != -EAGAIN)
			return err;
		if (!err && !last_err && !memcmp(&last, v, sizeof(*v)))
			return 0;
		last = *v;
		last_err = err;
	}
	return -EAGAIN;
}

bool pool_view_in_use(const struct pool_view *v, uint64_t offset)
{
	uint64_t i;

	if (!v->is_pool || offset < POOL_OVERHEAD || (offset - POOL_OVERHEAD) % v->block_size)
		return false;
	i = (offset - POOL_OVERHEAD) / v->block_size;
	return i < v->capacity && !(v->free[i / 8] & (1u << (i % 8)));
}
