/*
 * lazyfree_sweep(): --lazy-frees' sweep, which learns the blocks allocated
 * since the last one from BPF's journal and takes those its pools have free
 * out of the live map. Here the loader is the test's (the journal, the live
 * map, the allocation count) and the pools are laid out in the test's own
 * memory, read back with process_vm_readv() as a target's are.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_pool.h"
#include "lazyfree.h"
#include "unit.h"

#define ENTRIES 16
#define MAX_LIVE 64
#define CLASS 1 /* 32-byte blocks */

/* What the loader's maps would hold. */
struct loader {
	struct tm_journal_entry journal[ENTRIES];
	uint64_t numbered;
	struct {
		uint64_t ptr;
		struct tm_block b;
	} live[MAX_LIVE];
	int nlive;
	int whole_reads;
	int forgets;           /* calls */
	uint32_t forgot_seq;   /* the last call's number */
	struct {
		uint64_t ptr;
		uint32_t seq;
	} queued[MAX_LIVE];    /* loader_forget_freed()'s, until flushed */
	int nqueued;
	int flushes;           /* loader_forget_queued() calls: one per sweep */
};

static struct loader L;
static uint8_t *pool;

const struct tm_journal_entry *loader_journal(const struct loader *l, uint32_t *entries)
{
	*entries = ENTRIES;
	return l->journal;
}

uint64_t loader_allocations_numbered(const struct loader *l)
{
	return l->numbered;
}

int loader_each_block(struct loader *l, loader_block_fn fn, void *ctx)
{
	l->whole_reads++;
	for (int i = 0; i < l->nlive; i++) {
		int err = fn(ctx, l->live[i].ptr, &l->live[i].b);

		if (err)
			return err;
	}
	return 0;
}

static int live_index(uint64_t ptr)
{
	for (int i = 0; i < L.nlive; i++)
		if (L.live[i].ptr == ptr)
			return i;
	return -1;
}

static void live_remove(int i)
{
	L.live[i] = L.live[--L.nlive];
}

/* As loader.c's: queued, for loader_forget_queued(). */
int loader_forget_freed(struct loader *l, uint64_t ptr, uint32_t seq)
{
	l->forgets++;
	l->forgot_seq = seq;
	if (l->nqueued == MAX_LIVE)
		return -ENOMEM;
	l->queued[l->nqueued].ptr = ptr;
	l->queued[l->nqueued++].seq = seq;
	return 0;
}

/* As loader.c's: a queued block goes only if it is still the allocation
 * seen free; how many went. */
int64_t loader_forget_queued(struct loader *l)
{
	int64_t gone = 0;

	l->flushes++;
	for (int q = 0; q < l->nqueued; q++) {
		int i = live_index(l->queued[q].ptr);

		if (i >= 0 && l->live[i].b.seq == l->queued[q].seq) {
			live_remove(i);
			gone++;
		}
	}
	l->nqueued = 0;
	return gone;
}

/* What BPF's record_block() does in this mode: number the allocation,
 * store it (replacing any block at that address), and journal it unless
 * the test holds the slot back (a program still running). */
static uint32_t allocate(uint32_t index, bool journal)
{
	uint64_t ptr = fake_block(pool, CLASS, index);
	uint32_t seq = (uint32_t)++L.numbered;
	int i = live_index(ptr);

	if (i < 0) {
		i = L.nlive++;
		L.live[i].ptr = ptr;
	}
	L.live[i].b = (struct tm_block){ .size = 32, .flags = TM_BLOCK_PYMALLOC, .seq = seq };
	if (journal)
		L.journal[seq & (ENTRIES - 1)] = (struct tm_journal_entry){ ptr, 32, seq };
	return seq;
}

static void write_slot(uint32_t seq, uint32_t index)
{
	L.journal[seq & (ENTRIES - 1)] = (struct tm_journal_entry){ fake_block(pool, CLASS, index), 32, seq };
}

static struct lazyfree_sweep sweep(struct lazyfree *lf)
{
	struct lazyfree_sweep sw;
	int flushes = L.flushes;

	CU_ASSERT_EQUAL(lazyfree_sweep(lf, &L, getpid(), &sw), 0);
	/* what a sweep found free is forgotten before it returns */
	CU_ASSERT_EQUAL(L.flushes, flushes + 1);
	return sw;
}

static struct lazyfree *fresh(void)
{
	memset(&L, 0, sizeof(L));
	fake_pool(pool, CLASS, 0, NULL, 0);
	return lazyfree_new(POOL);
}

static void test_journal_serves_every_sweep_but_the_first(void)
{
	struct lazyfree *lf = fresh();
	const uint32_t freed[] = { 1 };
	struct lazyfree_sweep sw;

	for (uint32_t i = 0; i < 4; i++)
		allocate(i, true);
	fake_pool(pool, CLASS, 4, NULL, 0);
	sw = sweep(lf);
	CU_ASSERT(sw.whole_map);
	CU_ASSERT_EQUAL(sw.blocks, 4);
	CU_ASSERT_EQUAL(sw.freed, 0);

	allocate(4, true);
	allocate(5, true);
	fake_pool(pool, CLASS, 6, freed, 1);
	sw = sweep(lf);
	CU_ASSERT(!sw.whole_map);
	CU_ASSERT_EQUAL(sw.journal, 2);
	CU_ASSERT_EQUAL(sw.blocks, 6);
	CU_ASSERT_EQUAL(sw.freed, 1);
	CU_ASSERT_EQUAL(L.forgot_seq, 2); /* block 1, the second allocation */
	CU_ASSERT_EQUAL(L.nlive, 5);
	CU_ASSERT_EQUAL(L.whole_reads, 1);
	lazyfree_free(lf);
}

static void test_a_slot_not_written_yet_waits(void)
{
	struct lazyfree *lf = fresh();
	const uint32_t freed[] = { 0, 1 };
	struct lazyfree_sweep sw;
	uint32_t held;

	sweep(lf); /* the first: the whole (empty) map */
	held = allocate(0, false);
	allocate(1, true);
	fake_pool(pool, CLASS, 2, freed, 2);
	sw = sweep(lf);
	/* the journal stops at the unwritten slot: neither block is known */
	CU_ASSERT_EQUAL(sw.journal, 0);
	CU_ASSERT_EQUAL(sw.freed, 0);
	CU_ASSERT_EQUAL(L.nlive, 2);

	write_slot(held, 0);
	sw = sweep(lf);
	CU_ASSERT_EQUAL(sw.journal, 2);
	CU_ASSERT_EQUAL(sw.freed, 2);
	CU_ASSERT_EQUAL(L.nlive, 0);
	CU_ASSERT_EQUAL(L.whole_reads, 1);
	lazyfree_free(lf);
}

static void test_a_journal_run_over_reads_the_whole_map(void)
{
	struct lazyfree *lf = fresh();
	const uint32_t freed[] = { 3 };
	struct lazyfree_sweep sw;

	sweep(lf);
	for (uint32_t i = 0; i < ENTRIES + 4; i++)
		allocate(i, true);
	fake_pool(pool, CLASS, ENTRIES + 4, freed, 1);
	CU_ASSERT(lazyfree_due(lf, &L));
	sw = sweep(lf);
	CU_ASSERT(sw.whole_map);
	CU_ASSERT_EQUAL(sw.blocks, ENTRIES + 4);
	CU_ASSERT_EQUAL(sw.freed, 1);
	CU_ASSERT_EQUAL(L.whole_reads, 2);
	CU_ASSERT(!lazyfree_due(lf, &L));
	lazyfree_free(lf);
}

static void test_an_address_reused_is_checked_once_for_its_newest_allocation(void)
{
	struct lazyfree *lf = fresh();
	const uint32_t freed[] = { 2 };
	struct lazyfree_sweep sw;
	uint32_t newest;

	sweep(lf);
	allocate(2, true);
	allocate(2, true);
	newest = allocate(2, true);
	fake_pool(pool, CLASS, 3, freed, 1);
	sw = sweep(lf);
	CU_ASSERT_EQUAL(sw.blocks, 1);
	CU_ASSERT_EQUAL(sw.freed, 1);
	CU_ASSERT_EQUAL(L.forgets, 1);
	CU_ASSERT_EQUAL(L.forgot_seq, newest);
	lazyfree_free(lf);
}

static void test_blocks_of_a_pool_set_up_for_another_class_are_freed(void)
{
	struct lazyfree *lf = fresh();
	struct lazyfree_sweep sw;

	sweep(lf);
	for (uint32_t i = 0; i < 5; i++)
		allocate(i, true);
	fake_pool(pool, CLASS, 5, NULL, 0);
	CU_ASSERT_EQUAL(sweep(lf).freed, 0);
	/* emptied and set up again for 64-byte blocks, all handed out */
	fake_pool(pool, 3, 5, NULL, 0);
	sw = sweep(lf);
	CU_ASSERT_EQUAL(sw.freed, 5);
	CU_ASSERT_EQUAL(L.nlive, 0);
	/* nothing is left to look at */
	CU_ASSERT_EQUAL(sweep(lf).blocks, 0);
	lazyfree_free(lf);
}

static void test_a_block_freed_through_a_probe_is_dropped(void)
{
	struct lazyfree *lf = fresh();
	const uint32_t freed[] = { 0 };
	struct lazyfree_sweep sw;

	sweep(lf);
	allocate(0, true);
	allocate(1, true);
	fake_pool(pool, CLASS, 2, NULL, 0);
	sweep(lf);
	live_remove(live_index(fake_block(pool, CLASS, 0))); /* a realloc's probe took it */
	fake_pool(pool, CLASS, 2, freed, 1);
	sw = sweep(lf);
	CU_ASSERT_EQUAL(sw.freed, 0);
	CU_ASSERT_EQUAL(L.forgets, 1);
	CU_ASSERT_EQUAL(sweep(lf).blocks, 1);
	CU_ASSERT_EQUAL(L.forgets, 1);
	lazyfree_free(lf);
}

void register_lazyfree_tests(void)
{
	CU_pSuite s = CU_add_suite("lazyfree", NULL, NULL);

	pool = aligned_alloc(POOL, POOL);
	CU_add_test(s, "journal serves every sweep but the first", test_journal_serves_every_sweep_but_the_first);
	CU_add_test(s, "a slot not written yet waits", test_a_slot_not_written_yet_waits);
	CU_add_test(s, "a journal run over reads the whole map", test_a_journal_run_over_reads_the_whole_map);
	CU_add_test(s, "an address reused is checked once, for its newest allocation",
		    test_an_address_reused_is_checked_once_for_its_newest_allocation);
	CU_add_test(s, "blocks of a pool set up for another class are freed",
		    test_blocks_of_a_pool_set_up_for_another_class_are_freed);
	CU_add_test(s, "a block freed through a probe is dropped", test_a_block_freed_through_a_probe_is_dropped);
}
