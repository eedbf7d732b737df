/*
 * pool_view_read(): which blocks of a pymalloc pool are in use, read out of
 * a process (this one) while it may be changing the pool.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fake_pool.h"
#include "pool.h"
#include "unit.h"

static uint8_t *pool;

static uint64_t addr(void)
{
	return (uint64_t)(uintptr_t)pool;
}

static void test_free_list_and_untouched_blocks(void)
{
	const uint32_t freed[] = { 3, 0, 9 }, capacity = (POOL - POOL_OVERHEAD) / 32;
	struct pool_view v;

	fake_pool(pool, 1, 10, freed, 3); /* 32-byte blocks, 10 handed out, 3 freed */
	CU_ASSERT_EQUAL_FATAL(pool_view_read(getpid(), POOL, addr(), &v), 0);
	CU_ASSERT(v.is_pool);
	CU_ASSERT_EQUAL(v.size_class, 1);
	CU_ASSERT_EQUAL(v.capacity, capacity);
	CU_ASSERT_EQUAL(v.in_use, 7);
	for (uint32_t i = 0; i < capacity; i++) {
		bool want = i < 10 && i != 0 && i != 3 && i != 9;

		if (pool_view_in_use(&v, fake_block(pool, 1, i) - addr()) != want)
			unit_fail(__FILE__, __LINE__, "block %u: in use %d, expected %d", i, !want, want);
	}
	/* not a block boundary, and the header */
	CU_ASSERT_FALSE(pool_view_in_use(&v, fake_block(pool, 1, 1) - addr() + 16));
	CU_ASSERT_FALSE(pool_view_in_use(&v, 8));
}

static void test_empty_pool_has_nothing_in_use(void)
{
	const uint32_t freed[] = { 0, 1 };
	struct pool_view v;

	fake_pool(pool, 4, 2, freed, 2);
	CU_ASSERT_EQUAL_FATAL(pool_view_read(getpid(), POOL, addr(), &v), 0);
	CU_ASSERT(v.is_pool);
	CU_ASSERT_EQUAL(v.in_use, 0);
	CU_ASSERT_FALSE(pool_view_in_use(&v, fake_block(pool, 4, 1) - addr()));
}

/* A full pool is decided from its header; one whose header says full but
 * has a free list does not add up. */
static void test_full_pool(void)
{
	const uint32_t capacity = (POOL - POOL_OVERHEAD) / 48;
	struct pool_header *h = (struct pool_header *)pool;
	struct pool_view v;

	fake_pool(pool, 2, capacity, NULL, 0);
	CU_ASSERT_EQUAL_FATAL(pool_view_read(getpid(), POOL, addr(), &v), 0);
	CU_ASSERT(v.is_pool);
	CU_ASSERT_EQUAL(v.in_use, capacity);
	CU_ASSERT(pool_view_in_use(&v, fake_block(pool, 2, 0) - addr()));
	CU_ASSERT(pool_view_in_use(&v, fake_block(pool, 2, capacity - 1) - addr()));
	h->freeblock = fake_block(pool, 2, 4);
	CU_ASSERT_EQUAL(pool_view_read(getpid(), POOL, addr(), &v), -EAGAIN);
}

/* A free list that does not add up (the target changed the pool while it
 * was copied) is never taken for the truth: its blocks stay as they were. */
static void test_inconsistent_pool_is_not_settled(void)
{
	const uint32_t freed[] = { 2, 5 };
	struct pool_header *h = (struct pool_header *)pool;
	struct pool_view v;

	fake_pool(pool, 2, 8, freed, 2);
	h->count = 7; /* says 7 in use, but 2 of 8 are free */
	CU_ASSERT_EQUAL(pool_view_read(getpid(), POOL, addr(), &v), -EAGAIN);
	fake_pool(pool, 2, 8, freed, 2);
	/* a link out of the pool */
	memcpy((void *)(uintptr_t)fake_block(pool, 2, 2), &(uint64_t){ addr() + 2 * POOL }, 8);
	CU_ASSERT_EQUAL(pool_view_read(getpid(), POOL, addr(), &v), -EAGAIN);
	fake_pool(pool, 2, 8, freed, 2);
	/* a cycle */
	memcpy((void *)(uintptr_t)fake_block(pool, 2, 2), &(uint64_t){ fake_block(pool, 2, 5) }, 8);
	CU_ASSERT_EQUAL(pool_view_read(getpid(), POOL, addr(), &v), -EAGAIN);
}

/* Memory given back (an arena unmapped), or no pool header: nothing there is
 * in use. */
static void test_gone_or_foreign_memory_is_no_pool(void)
{
	void *gone = mmap(NULL, POOL, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct pool_view v;

	CU_ASSERT_FATAL(gone != MAP_FAILED);
	munmap(gone, POOL);
	CU_ASSERT_EQUAL(pool_view_read(getpid(), POOL, (uint64_t)(uintptr_t)gone, &v), 0);
	CU_ASSERT_FALSE(v.is_pool);
	memset(pool, 0x5a, POOL);
	CU_ASSERT_EQUAL(pool_view_read(getpid(), POOL, addr(), &v), 0);
	CU_ASSERT_FALSE(v.is_pool);
	CU_ASSERT_FALSE(pool_view_in_use(&v, POOL_OVERHEAD));
	CU_ASSERT_EQUAL(pool_view_read(getpid(), 8192, addr(), &v), -EINVAL);
}

void register_pool_tests(void)
{
	CU_pSuite s = CU_add_suite("pool", NULL, NULL);

	pool = aligned_alloc(POOL, POOL);
	CU_add_test(s, "free list and untouched blocks", test_free_list_and_untouched_blocks);
	CU_add_test(s, "empty pool has nothing in use", test_empty_pool_has_nothing_in_use);
	CU_add_test(s, "full pool", test_full_pool);
	CU_add_test(s, "inconsistent pool is not settled", test_inconsistent_pool_is_not_settled);
	CU_add_test(s, "gone or foreign memory is no pool", test_gone_or_foreign_memory_is_no_pool);
}
