/*
 * --sample's estimator against pools laid out as pymalloc lays them out
 * (Objects/obmalloc.c's pool_header), in this very process: sampled_estimate()
 * reads them with process_vm_readv() as it reads a target's.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fake_pool.h"
#include "sampled.h"
#include "unit.h"

static uint8_t *pools;

static uint64_t block_at(int pool, uint32_t size_class, uint32_t index)
{
	return fake_block(pools + pool * POOL, size_class, index);
}

static void make_pool(int pool, uint32_t size_class, uint32_t handed_out, const uint32_t *freed, int nfreed)
{
	fake_pool(pools + pool * POOL, size_class, handed_out, freed, nfreed);
}

static struct sampled_input sample(int pool, uint32_t size_class, uint32_t index, uint32_t traceback_id)
{
	struct sampled_input in = { .pool = (uint64_t)(uintptr_t)(pools + pool * POOL) };

	in.sample.block = block_at(pool, size_class, index);
	in.sample.traceback_id = traceback_id;
	in.sample.time = (uint64_t)pool + 1;
	return in;
}

static const struct sampled_line *line_of(const struct sampled_estimate *e, uint32_t id)
{
	for (size_t i = 0; i < e->nlines; i++)
		if (e->lines[i].traceback_id == id)
			return &e->lines[i];
	return NULL;
}

static void test_shares_class_among_live_samples(void)
{
	const uint32_t capacity = (POOL - POOL_OVERHEAD) / 48, freed[] = { 5, 7 };
	struct sampled_input in[4];
	struct sampled_estimate e;
	const struct sampled_line *l;

	make_pool(0, 2, 100, freed, 2);     /* 98 in use; its sample (block 7) was freed */
	make_pool(1, 2, capacity, NULL, 0); /* full */
	make_pool(2, 2, 50, NULL, 0);       /* 50 in use */
	make_pool(3, 10, 0, NULL, 0);       /* set up, nothing in use */
	in[0] = sample(0, 2, 7, 1);
	in[1] = sample(1, 2, 0, 2);
	in[2] = sample(2, 2, 3, 3);
	in[3] = sample(3, 10, 0, 4);
	CU_ASSERT_EQUAL_FATAL(sampled_estimate(getpid(), POOL, in, 4, &e), 0);
	CU_ASSERT_EQUAL(e.pools, 3);
	CU_ASSERT_EQUAL(e.live_samples, 2);
	CU_ASSERT_EQUAL(e.blocks, 98 + capacity + 50);
	CU_ASSERT_EQUAL(e.bytes, (98 + capacity + 50) * 48ULL);
	CU_ASSERT_FALSE(in[0].drop); /* its pool still has blocks in use */
	CU_ASSERT_TRUE(in[3].drop);  /* an empty pool speaks for nothing */
	CU_ASSERT_PTR_NULL(line_of(&e, 1));
	CU_ASSERT_PTR_NULL(line_of(&e, 4));
	l = line_of(&e, 2);
	CU_ASSERT_PTR_NOT_NULL_FATAL(l);
	CU_ASSERT(l->count == (98 + capacity + 50) / 2 || l->count == (98 + capacity + 50 + 1) / 2);
	CU_ASSERT_EQUAL(l->size, l->count * 48);
	CU_ASSERT_EQUAL(line_of(&e, 2)->count + line_of(&e, 3)->count, 98 + capacity + 50);
	sampled_estimate_free(&e);
}

static void test_class_without_live_sample_falls_back(void)
{
	const uint32_t freed[] = { 0 };
	struct sampled_input in[1];
	struct sampled_estimate e;

	make_pool(0, 4, 30, freed, 1); /* the sampled block 0 freed, 29 others in use */
	in[0] = sample(0, 4, 0, 9);
	CU_ASSERT_EQUAL_FATAL(sampled_estimate(getpid(), POOL, in, 1, &e), 0);
	CU_ASSERT_EQUAL(e.live_samples, 0);
	CU_ASSERT_EQUAL_FATAL(e.nlines, 1);
	CU_ASSERT_EQUAL(e.lines[0].traceback_id, 9);
	CU_ASSERT_EQUAL(e.lines[0].count, 29);
	CU_ASSERT_EQUAL(e.lines[0].size, 29 * 80);
	sampled_estimate_free(&e);
}

static void test_stale_pools_are_dropped(void)
{
	struct sampled_input in[3];
	struct sampled_estimate e;
	void *gone = mmap(NULL, POOL, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	CU_ASSERT_NOT_EQUAL_FATAL(gone, MAP_FAILED);
	munmap(gone, POOL);
	/* set up again for class 5 (96 B): block 1 of class 2 (offset 48 + 48)
	 * is not a block boundary of class 5 */
	make_pool(0, 5, 10, NULL, 0);
	in[0] = sample(0, 2, 1, 1);
	/* a free list that loops is not a free list: the pool is unreadable */
	make_pool(1, 3, 20, (const uint32_t[]){ 4, 6 }, 2);
	memcpy((void *)(uintptr_t)block_at(1, 3, 6), &(uint64_t){ block_at(1, 3, 6) }, 8);
	in[1] = sample(1, 3, 9, 2);
	in[2] = (struct sampled_input){ .pool = (uint64_t)(uintptr_t)gone };
	in[2].sample.block = (uint64_t)(uintptr_t)gone + POOL_OVERHEAD;
	CU_ASSERT_EQUAL_FATAL(sampled_estimate(getpid(), POOL, in, 3, &e), 0);
	CU_ASSERT_TRUE(in[0].drop);
	CU_ASSERT_TRUE(in[2].drop);
	CU_ASSERT_EQUAL(e.unreadable, 1);
	CU_ASSERT_EQUAL(e.pools, 0);
	CU_ASSERT_EQUAL(e.nlines, 0);
	sampled_estimate_free(&e);
}

void register_sampled_tests(void)
{
	CU_pSuite s = CU_add_suite("sampled", NULL, NULL);

	pools = aligned_alloc(POOL, 4 * POOL);
	CU_add_test(s, "shares a class among its live samples", test_shares_class_among_live_samples);
	CU_add_test(s, "a class without live sample falls back", test_class_without_live_sample_falls_back);
	CU_add_test(s, "stale pools are dropped", test_stale_pools_are_dropped);
}
