// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* tmtrace's BPF side: uprobes on CPython's allocators keep, for every live
 * block, its size and an interned traceback of the calling thread's Python
 * frames, with running totals per traceback and per process. Userspace only
 * reads these maps; the steady state sends nothing through the ring buffer
 * except tracebacks never seen before. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "tmtrace.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile struct tm_config cfg = {};

struct tm_totals totals = {};
/* Set by userspace once every probe is armed: nothing is recorded before, so
 * a half-attached tmtrace never shows partial figures. */
volatile __u32 armed = 0;

/* Live blocks: address -> size, traceback. Sized from --max-blocks. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64);
	__type(value, struct tm_block);
	__uint(max_entries, 1);
} live SEC(".maps");

/* Interned tracebacks: frames -> id. The key size is set from -n at load. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(key_size, sizeof(struct tm_raw_stack));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 1);
} traceback_ids SEC(".maps");

/* Running {size, count} per traceback id. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct tm_traceback_stats);
	__uint(max_entries, 1);
} traceback_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* What one thread has in flight: the outermost allocator call's arguments
 * (nested calls only move the depth), and its cached thread state. */
struct tm_thread {
	__u32 depth;
	__u32 kind;
	__u64 arg_a, arg_b;
	__u64 tstate, tstate_fsbase;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tm_thread);
} threads SEC(".maps");

/* Per-CPU scratch: the traceback being built (it is also the ring-buffer
 * event) and the windows read out of the target's frames and code objects. */
struct tm_scratch {
	struct tm_new_traceback ev;
	__u8 frame_window[TM_FRAME_WINDOW];
	__u8 code_window[TM_CODE_WINDOW];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct tm_scratch);
	__uint(max_entries, 1);
} scratch SEC(".maps");

/* Deepest allocator nesting tracked; CPython nests at most three deep
 * (PyObject_Realloc -> PyMem_RawRealloc -> realloc). */
#define TM_MAX_DEPTH 16

static __always_inline void count_lost(enum tm_lost what)
{
	if (what < TM_LOST_COUNT)
		__sync_fetch_and_add(&totals.lost[what], 1);
}

/* pt_regs slot of each enum tm_reg. The registers are copied out of the
 * context first: the verifier rejects a context load at a computed offset,
 * which is what a switch over ctx fields compiles to. */
static __always_inline __u32 reg_slot(__u32 reg)
{
	switch (reg) {
	case TM_REG_DI: return offsetof(struct pt_regs, di) / 8;
	case TM_REG_SI: return offsetof(struct pt_regs, si) / 8;
	case TM_REG_DX: return offsetof(struct pt_regs, dx) / 8;
	case TM_REG_CX: return offsetof(struct pt_regs, cx) / 8;
	case TM_REG_R8: return offsetof(struct pt_regs, r8) / 8;
	case TM_REG_R9: return offsetof(struct pt_regs, r9) / 8;
	case TM_REG_AX: return offsetof(struct pt_regs, ax) / 8;
	case TM_REG_BX: return offsetof(struct pt_regs, bx) / 8;
	case TM_REG_BP: return offsetof(struct pt_regs, bp) / 8;
	case TM_REG_R10: return offsetof(struct pt_regs, r10) / 8;
	case TM_REG_R11: return offsetof(struct pt_regs, r11) / 8;
	case TM_REG_R12: return offsetof(struct pt_regs, r12) / 8;
	case TM_REG_R13: return offsetof(struct pt_regs, r13) / 8;
	case TM_REG_R14: return offsetof(struct pt_regs, r14) / 8;
	case TM_REG_R15: return offsetof(struct pt_regs, r15) / 8;
	}
	return ~0u;
}

#define PT_REGS_WORDS (sizeof(struct pt_regs) / 8)

static __always_inline __u64 reg_value(const __u64 *regs, __u32 reg)
{
	__u32 slot;

	slot = reg_slot(reg);
	if (slot >= PT_REGS_WORDS)
		return 0;
	return regs[slot];
}

static __always_inline __u64 load_u64(const __u8 *window, __u32 off)
{
	return *(const __u64 *)(window + off);
}

/* ---- the caller's thread state ---------------------------------------- */

struct thread_walk {
	__u64 fsbase;
	__u64 interp;
	__u64 tstate;
	__u64 found;
};

/* One step over all interpreters' thread lists: pthread_self(), which
 * CPython stores as tstate->thread_id, is the thread's fs base on x86_64. */
static long thread_walk_step(__u64 index, struct thread_walk *w)
{
	__u64 value = 0;

	if (!w->tstate) {
		if (!w->interp)
			return 1;
		if (bpf_probe_read_user(&w->interp, sizeof(w->interp),
					(void *)(w->interp + cfg.py.interp_next)))
			return 1;
		if (!w->interp)
			return 1;
		if (bpf_probe_read_user(&w->tstate, sizeof(w->tstate),
					(void *)(w->interp + cfg.py.interp_threads_head)))
			return 1;
		return 0;
	}
	if (!bpf_probe_read_user(&value, sizeof(value),
				 (void *)(w->tstate + cfg.py.tstate_thread_id)) &&
	    value == w->fsbase) {
		w->found = w->tstate;
		return 1;
	}
	if (bpf_probe_read_user(&w->tstate, sizeof(w->tstate),
				(void *)(w->tstate + cfg.py.tstate_next)))
		return 1;
	return 0;
}

static __always_inline __u64 current_tstate(struct tm_thread *t)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct thread_walk w = {};
	__u64 value = 0;

	w.fsbase = BPF_CORE_READ(task, thread.fsbase);
	if (t->tstate && t->tstate_fsbase == w.fsbase &&
	    !bpf_probe_read_user(&value, sizeof(value),
				 (void *)(t->tstate + cfg.py.tstate_thread_id)) &&
	    value == w.fsbase)
		return t->tstate;

	if (bpf_probe_read_user(&w.interp, sizeof(w.interp),
				(void *)(cfg.py.runtime_addr + cfg.py.runtime_interpreters_head)) ||
	    !w.interp)
		return 0;
	if (bpf_probe_read_user(&w.tstate, sizeof(w.tstate),
				(void *)(w.interp + cfg.py.interp_threads_head)))
		return 0;
	bpf_loop(TM_MAX_THREAD_WALK, thread_walk_step, &w, 0);
	if (w.found) {
		t->tstate = w.found;
		t->tstate_fsbase = w.fsbase;
	}
	return w.found;
}

/* ---- the caller's Python frames --------------------------------------- */

struct frame_walk {
	__u64 frame;
	__u32 nframe;
	__u32 total;
	__u32 truncated;
};

static __always_inline __u32 code_fingerprint(const __u8 *cw)
{
	return tm_code_fingerprint(load_u64(cw, cfg.py.code_filename), load_u64(cw, cfg.py.code_name),
				   load_u64(cw, cfg.py.code_linetable),
				   *(const __u32 *)(cw + cfg.py.code_firstlineno),
				   load_u64(cw, cfg.py.code_size));
}

static long frame_walk_step(__u64 index, struct frame_walk *w)
{
	__u32 zero = 0;
	struct tm_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	__u64 code, back, instr = 0;
	__s64 lasti;
	__u32 n;

	if (!s || !w->frame)
		return 1;
	n = w->nframe;
	if (bpf_probe_read_user(s->frame_window, cfg.py.frame_window_len & (TM_FRAME_WINDOW - 1),
				(void *)(w->frame + cfg.py.frame_window_start)))
		goto unreadable;
	code = load_u64(s->frame_window, cfg.py.frame_code);
	back = load_u64(s->frame_window, cfg.py.frame_back);
	if (!code ||
	    bpf_probe_read_user(s->code_window, cfg.py.code_window_len & (TM_CODE_WINDOW - 1),
				(void *)(code + cfg.py.code_window_start)))
		goto unreadable;

	if (cfg.py.frame_model == 1) {
		/* PyFrameObject: f_lasti is an int (bytes in 3.8/3.9, code
		 * units in 3.10: the loader's layout says which). */
		lasti = *(__s32 *)(s->frame_window + cfg.py.frame_lasti);
		lasti *= cfg.py.lasti_multiplier;
	} else {
		/* _PyInterpreterFrame: a pointer into the code's own bytecode. */
		__u8 owner = s->frame_window[cfg.py.frame_owner];

		instr = load_u64(s->frame_window, cfg.py.frame_lasti);
		lasti = (__s64)instr - (__s64)(code + cfg.py.code_adaptive);
		if (cfg.py.owned_by_cstack != ~0u && owner == cfg.py.owned_by_cstack)
			goto skip;
		/* An incomplete frame (still in its prologue) is skipped, and
		 * not counted, exactly as tracemalloc does. */
		if (owner != cfg.py.owned_by_generator && cfg.py.code_firsttraceable != ~0u &&
		    lasti < (__s64)*(__s32 *)(s->code_window + cfg.py.code_firsttraceable) * 2)
			goto skip;
	}

	if (n < cfg.nframe && n < TM_MAX_NFRAME) {
		struct tm_raw_frame *f = &s->ev.stack.frames[n];

		f->code = code;
		f->lasti = (__s32)lasti;
		f->fingerprint = code_fingerprint(s->code_window);
		w->nframe = n + 1;
	} else if (!cfg.count_all_frames) {
		w->truncated = 1;
		return 1;
	}
	if (w->total < 0xffff)
		w->total++;
skip:
	w->frame = back;
	return 0;

unreadable:
	/* tracemalloc would have read it; show the frame as <unknown>:0 and
	 * stop, since its link cannot be trusted either. */
	count_lost(TM_LOST_FRAME_UNREADABLE);
	if (n < cfg.nframe && n < TM_MAX_NFRAME) {
		struct tm_raw_frame *f = &s->ev.stack.frames[n];

		f->code = 0;
		f->lasti = 0;
		f->fingerprint = 0;
		w->nframe = n + 1;
		if (w->total < 0xffff)
			w->total++;
	}
	return 1;
}

struct zero_frames {
	__u32 start;
};

static long zero_frame_step(__u64 index, struct zero_frames *z)
{
	__u32 zero = 0, n = z->start + (__u32)index;
	struct tm_scratch *s = bpf_map_lookup_elem(&scratch, &zero);

	if (!s || n >= TM_MAX_NFRAME)
		return 1;
	s->ev.stack.frames[n].code = 0;
	s->ev.stack.frames[n].lasti = 0;
	s->ev.stack.frames[n].fingerprint = 0;
	return 0;
}

/* The interned id of the calling thread's traceback; 0 when it could not be
 * interned (counted), which userspace shows as <unknown>:0. */
static __always_inline __u32 current_traceback(struct tm_thread *t)
{
	__u32 zero = 0, id, used, *known;
	struct tm_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	struct frame_walk w = {};
	__u64 tstate, cframe;
	if (!s)
		return 0;
	tstate = current_tstate(t);
	if (tstate) {
		if (bpf_probe_read_user(&w.frame, sizeof(w.frame),
					(void *)(tstate + cfg.py.tstate_frame)))
			w.frame = 0;
		if (w.frame && cfg.py.frame_model == 2) {
			cframe = w.frame;
			if (bpf_probe_read_user(&w.frame, sizeof(w.frame),
						(void *)(cframe + cfg.py.cframe_current_frame)))
				w.frame = 0;
		}
		if (w.frame)
			bpf_loop(TM_MAX_WALK, frame_walk_step, &w, 0);
	}
	/* The key must be deterministic: clear the frames not filled. */
	if (w.nframe < cfg.nframe) {
		struct zero_frames z = { .start = w.nframe };

		bpf_loop(cfg.nframe - w.nframe, zero_frame_step, &z, 0);
	}
	s->ev.stack.nframe = w.nframe;
	s->ev.stack.total_nframe = w.total;
	s->ev.stack.truncated = w.truncated;

	known = bpf_map_lookup_elem(&traceback_ids, &s->ev.stack);
	if (known)
		return *known;

	id = (__u32)__sync_fetch_and_add(&totals.next_traceback_id, 1) + 1;
	if (id >= cfg.max_tracebacks) {
		count_lost(TM_LOST_TRACEBACK_FULL);
		return 0;
	}
	if (bpf_map_update_elem(&traceback_ids, &s->ev.stack, &id, BPF_NOEXIST)) {
		/* Another CPU interned it first, or the map is full. */
		known = bpf_map_lookup_elem(&traceback_ids, &s->ev.stack);
		if (known)
			return *known;
		count_lost(TM_LOST_TRACEBACK_FULL);
		return 0;
	}
	s->ev.id = id;
	used = w.nframe;
	if (used > TM_MAX_NFRAME)
		used = TM_MAX_NFRAME;
	if (bpf_ringbuf_output(&events, &s->ev,
			       offsetof(struct tm_new_traceback, stack.frames) +
				       (__u64)used * sizeof(struct tm_raw_frame), 0))
		count_lost(TM_LOST_EVENTS);
	return id;
}

/* ---- bookkeeping ------------------------------------------------------- */

static __always_inline void stats_add(__u32 id, __s64 size, __s64 count)
{
	struct tm_traceback_stats *st = bpf_map_lookup_elem(&traceback_stats, &id);

	if (st) {
		__sync_fetch_and_add(&st->size, size);
		__sync_fetch_and_add(&st->count, count);
	}
}

static __always_inline void update_peak(__s64 current)
{
	__s64 peak = totals.peak;

	/* A few tries suffice: losing the race means another CPU raised it. */
	for (int i = 0; i < 4 && current > peak; i++) {
		__s64 seen = __sync_val_compare_and_swap(&totals.peak, peak, current);

		if (seen == peak)
			break;
		peak = seen;
	}
}

static __always_inline void forget_block(__u64 ptr)
{
	struct tm_block *b = bpf_map_lookup_elem(&live, &ptr);
	struct tm_block old;

	if (!b) {
		__sync_fetch_and_add(&totals.untracked_frees, 1);
		return;
	}
	old = *b;
	if (bpf_map_delete_elem(&live, &ptr))
		return;
	stats_add(old.traceback_id, -(__s64)old.size, -1);
	__sync_fetch_and_add(&totals.current, -(__s64)old.size);
	__sync_fetch_and_add(&totals.frees, 1);
}

/* As tracemalloc_add_trace(): a block already traced at this address is
 * replaced, size and traceback. */
static __always_inline void record_block(struct tm_thread *t, __u64 ptr, __u64 size)
{
	struct tm_block blk = { .size = size, .domain = 0 };
	struct tm_block *old;

	blk.traceback_id = current_traceback(t);
	old = bpf_map_lookup_elem(&live, &ptr);
	if (old) {
		stats_add(old->traceback_id, -(__s64)old->size, -1);
		__sync_fetch_and_add(&totals.current, -(__s64)old->size);
		*old = blk;
	} else if (bpf_map_update_elem(&live, &ptr, &blk, BPF_NOEXIST)) {
		count_lost(TM_LOST_LIVE_FULL);
		return;
	}
	stats_add(blk.traceback_id, size, 1);
	update_peak(__sync_add_and_fetch(&totals.current, (__s64)size));
	__sync_fetch_and_add(&totals.allocs, 1);
}

/* ---- probes ------------------------------------------------------------ */

static __always_inline bool is_target(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == cfg.tgid;
}

SEC("uprobe")
int alloc_enter(struct pt_regs *ctx)
{
	__u64 cookie = bpf_get_attach_cookie(ctx);
	__u32 kind = TM_COOKIE_KIND(cookie);
	__u64 regs[PT_REGS_WORDS];
	struct tm_thread *t;

	if (!is_target())
		return 0;
	__builtin_memcpy(regs, ctx, sizeof(regs));
	t = bpf_task_storage_get(&threads, bpf_get_current_task_btf(), 0,
				 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!t)
		return 0;
	if (kind == TM_CALL_FREE) {
		/* A free nested in a realloc is the realloc's business. */
		__u64 ptr = reg_value(regs, TM_COOKIE_REG_A(cookie));

		if (t->depth == 0 && armed && ptr)
			forget_block(ptr);
		return 0;
	}
	if (t->depth == 0) {
		t->kind = kind;
		t->arg_a = reg_value(regs, TM_COOKIE_REG_A(cookie));
		t->arg_b = reg_value(regs, TM_COOKIE_REG_B(cookie));
	}
	if (t->depth < TM_MAX_DEPTH)
		t->depth++;
	else
		count_lost(TM_LOST_NESTING);
	return 0;
}

SEC("uretprobe")
int alloc_return(struct pt_regs *ctx)
{
	__u64 ptr = PT_REGS_RC(ctx);
	struct tm_thread *t;

	if (!is_target())
		return 0;
	t = bpf_task_storage_get(&threads, bpf_get_current_task_btf(), 0, 0);
	if (!t || t->depth == 0)
		return 0;
	if (--t->depth != 0 || !armed || !ptr)
		return 0;	/* nested, not yet armed, or failed: nothing to record */

	switch (t->kind) {
	case TM_CALL_MALLOC:
		record_block(t, ptr, t->arg_a);
		break;
	case TM_CALL_CALLOC:
		record_block(t, ptr, t->arg_a * t->arg_b);
		break;
	case TM_CALL_REALLOC:
		/* tracemalloc_realloc(): the old trace goes, the new one gets
		 * the current traceback even when the block did not move. */
		if (t->arg_a && t->arg_a != ptr)
			forget_block(t->arg_a);
		record_block(t, ptr, t->arg_b);
		break;
	}
	return 0;
}
