// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* What each kind of work a uprobe's BPF program can do costs, one program
 * per kind, all on the same probe (opcost.c attaches one at a time to its
 * own probed function and times its loop). tmtrace's program is made of
 * these pieces; their prices, against the trap's, bound what any program
 * doing the same job can cost.
 *
 * The probed function is called as probed_site(chain, key, op):
 *   chain  a user pointer to a linked list of nodes on separate cache lines
 *          (a frame chain's stand-in: each node's first word is the next);
 *   key    a block address, never live twice at once;
 *   op     1: the block is allocated, 0: it is freed. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "tmtrace.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile __u32 target_tgid = 0;

/* tmtrace's live map, its value and its default capacity */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64);
	__type(value, struct tm_block);
	__uint(max_entries, 1 << 20);
} live SEC(".maps");

/* the same, its elements allocated as they are inserted (bpf_mem_alloc's
 * per-CPU caches) rather than taken from a preallocated free list */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct tm_block);
	__uint(max_entries, 1 << 20);
} live_noprealloc SEC(".maps");

/* an open-addressed table in an array (lookups the verifier inlines): a
 * key and its value per slot, 0 free, ~0 a deleted key */
struct oa_slot {
	__u64 key;
	struct tm_block blk;
};

#define OA_SLOTS (1u << 21)
#define OA_PROBES 8
#define OA_DELETED (~0ULL)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct oa_slot);
	__uint(max_entries, OA_SLOTS);
} oa_live SEC(".maps");

struct thread_state {
	__u64 tstate;
	__u64 hits;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct thread_state);
} threads SEC(".maps");

/* the process totals, as tmtrace keeps them */
struct tm_totals totals = {};
__u64 block_seq = 0;

#define CHAIN(ctx) ((const void *)PT_REGS_PARM1(ctx))
#define KEY(ctx) ((__u64)PT_REGS_PARM2(ctx))
#define OP(ctx) ((__u64)PT_REGS_PARM3(ctx))

/* the trap alone */
SEC("uprobe")
int empty(struct pt_regs *ctx)
{
	return 0;
}

/* one 8-byte read of the target */
SEC("uprobe")
int read8(struct pt_regs *ctx)
{
	__u64 v = 0;

	bpf_probe_read_user(&v, sizeof(v), CHAIN(ctx));
	return v == 42;
}

/* one 256-byte read: what a read's length costs */
SEC("uprobe")
int read256(struct pt_regs *ctx)
{
	__u64 v[32];

	bpf_probe_read_user(v, sizeof(v), CHAIN(ctx));
	return v[31] == 42;
}

/* four reads, each at the address the one before returned: the thread
 * state, its frame pointer, the frame, the pool, as a predicted allocation
 * on 3.11 makes them */
SEC("uprobe")
int chain4(struct pt_regs *ctx)
{
	const void *p = CHAIN(ctx);

	for (int i = 0; i < 4; i++)
		if (bpf_probe_read_user(&p, sizeof(p), p))
			return 0;
	return p == 0;
}

/* the same four from a sleepable program, which may fault pages in */
SEC("uprobe.s")
int chain4_sleepable(struct pt_regs *ctx)
{
	const void *p = CHAIN(ctx);

	for (int i = 0; i < 4; i++)
		if (bpf_copy_from_user(&p, sizeof(p), p))
			return 0;
	return p == 0;
}

/* the current task, and whether it is the target's: one helper call and
 * a load, as every tmtrace hit starts */
SEC("uprobe")
int task(struct pt_regs *ctx)
{
	struct task_struct *t = bpf_get_current_task_btf();

	return t->tgid == target_tgid;
}

/* that, and the thread's own state */
SEC("uprobe")
int task_storage(struct pt_regs *ctx)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct thread_state *ts;

	if (t->tgid != target_tgid)
		return 0;
	ts = bpf_task_storage_get(&threads, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!ts)
		return 0;
	ts->hits++;
	return 0;
}

/* the live map: an insert per allocation, a lookup and a delete per free */
static __always_inline void hash_op_in(void *map, __u64 key, __u64 op)
{
	struct tm_block blk = { .size = key & 0xff, .traceback_id = 1 };
	struct tm_block *b;

	if (op) {
		bpf_map_update_elem(map, &key, &blk, BPF_NOEXIST);
		return;
	}
	b = bpf_map_lookup_elem(map, &key);
	if (b && b->size != 0x100)
		bpf_map_delete_elem(map, &key);
}

#define hash_op(key, op) hash_op_in(&live, key, op)

SEC("uprobe")
int hash_noprealloc(struct pt_regs *ctx)
{
	hash_op_in(&live_noprealloc, KEY(ctx), OP(ctx));
	return 0;
}

SEC("uprobe")
int hash(struct pt_regs *ctx)
{
	hash_op(KEY(ctx), OP(ctx));
	return 0;
}

/* the atomic adds of an allocation in exact mode: its number, the
 * traceback's size and count, the process's current size and count */
SEC("uprobe")
int atomics(struct pt_regs *ctx)
{
	__s64 size = KEY(ctx) & 0xff;

	__sync_fetch_and_add(&block_seq, 1);
	__sync_fetch_and_add(&totals.peak, size);
	__sync_fetch_and_add(&totals.untracked_frees, 1);
	__sync_fetch_and_add(&totals.current, size);
	__sync_fetch_and_add(&totals.allocs, 1);
	return 0;
}

static __always_inline __u32 oa_hash(__u64 key)
{
	return (__u32)((key * 0x9e3779b97f4a7c15ULL) >> 40);
}

struct oa_walk {
	__u64 key;
	__u64 op;
	__u32 slot;
	struct tm_block blk;
};

static long oa_step(__u32 i, struct oa_walk *w)
{
	__u32 slot = (w->slot + i) & (OA_SLOTS - 1);
	struct oa_slot *s = bpf_map_lookup_elem(&oa_live, &slot);

	if (!s)
		return 1;
	if (w->op) {
		__u64 seen = s->key;

		if ((seen == 0 || seen == OA_DELETED) &&
		    __sync_val_compare_and_swap(&s->key, seen, w->key) == seen) {
			s->blk = w->blk;
			return 1;
		}
		return 0;
	}
	if (s->key == w->key) {
		s->key = OA_DELETED;
		return 1;
	}
	return s->key == 0;
}

/* a cheaper live map, as an estimate: insert by compare-and-swap into the
 * first free slot, delete by marking it (no clean-up of marks, no resize) */
SEC("uprobe")
int open_addressed(struct pt_regs *ctx)
{
	struct oa_walk w = { .key = KEY(ctx), .op = OP(ctx), .blk = { .traceback_id = 1 } };

	w.blk.size = w.key & 0xff;
	w.slot = oa_hash(w.key);
	bpf_loop(OA_PROBES, oa_step, &w, 0);
	return 0;
}

/* the least an exact allocation event does: know the thread, read its
 * frame chain down to the pool (four reads), record or forget the block */
SEC("uprobe")
int minimal(struct pt_regs *ctx)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct thread_state *ts;
	const void *p = CHAIN(ctx);
	__u64 op = OP(ctx);

	if (t->tgid != target_tgid)
		return 0;
	ts = bpf_task_storage_get(&threads, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!ts)
		return 0;
	ts->hits++;
	if (op)
		for (int i = 0; i < 4; i++)
			if (bpf_probe_read_user(&p, sizeof(p), p))
				return 0;
	hash_op(KEY(ctx), op);
	return 0;
}

static __always_inline int oa_walk_inline(__u64 key, __u64 op, __u32 h)
{
	struct tm_block blk = { .traceback_id = 1 };

	blk.size = key & 0xff;
	for (int i = 0; i < OA_PROBES; i++) {
		__u32 slot = (h + i) & (OA_SLOTS - 1);
		struct oa_slot *s = bpf_map_lookup_elem(&oa_live, &slot);
		__u64 seen;

		if (!s)
			return 0;
		seen = s->key;
		if (op) {
			if ((seen == 0 || seen == OA_DELETED) &&
			    __sync_val_compare_and_swap(&s->key, seen, key) == seen) {
				s->blk = blk;
				return 0;
			}
			continue;
		}
		if (seen == key) {
			s->key = OA_DELETED;
			return 0;
		}
		if (seen == 0)
			return 0;
	}
	return 0;
}

/* the same table walked by a bounded loop, no helper called at all: the
 * verifier inlines an array map's lookups */
SEC("uprobe")
int open_addressed_inline(struct pt_regs *ctx)
{
	return oa_walk_inline(KEY(ctx), OP(ctx), oa_hash(KEY(ctx)));
}

/* the same, the slot taken from the address's own bits: blocks next to
 * each other in memory share cache lines and pages in the table */
SEC("uprobe")
int open_addressed_local(struct pt_regs *ctx)
{
	return oa_walk_inline(KEY(ctx), OP(ctx), (__u32)(KEY(ctx) >> 4));
}
