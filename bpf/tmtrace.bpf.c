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

#ifndef barrier_var
#define barrier_var(var) asm volatile("" : "+r"(var))
#endif

/* x86-64 user pages; the probes only read, so a smaller guess is safe */
#define TM_PAGE_SIZE 4096ULL

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile struct tm_config cfg = {};

struct tm_totals totals = {};
/* Set by userspace once every probe is armed: nothing is recorded before, so
 * a half-attached tmtrace never shows partial figures. */
volatile __u32 armed = 0;
/* Set once a hook was seen (by a hook site firing, or by userspace reading
 * the allocator slots): from then on default-allocator calls check their
 * slot, which costs a read each. */
volatile __u32 hooks_seen = 0;
/* Set once a code object died: from then on frames look their code
 * address's generation up. */
volatile __u32 code_deaths = 0;
/* Code objects that died so far: a thread's cached reading of a code
 * object is good while this has not moved. */
volatile __u64 code_death_count = 0;
/* Allocations recorded so far, the source of tm_block.seq (a random number
 * instead measured no faster: bench-overhead, Debian's threads and mix, two
 * alternating runs) */
__u64 block_seq = 0;
/* --lazy-frees: the journal of allocations, a ring indexed by allocation
 * number. Sized from --max-blocks; mmapped by userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct tm_journal_entry);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
} journal SEC(".maps");

/* Hook functions (addresses in the target) that have probes. */
volatile __u64 hook_fns[TM_MAX_HOOKS] = {};

/* Live blocks: the live table (tmtrace.h). Sized from --max-blocks;
 * userspace maps it to read it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct tm_live_slot);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
} live SEC(".maps");

/* Blocks PyTraceMalloc_Track() put in domains other than 0. They are not
 * in traceback_stats (which knows no domain): userspace reads them here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct tm_tracked_key);
	__type(value, struct tm_block);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
} tracked SEC(".maps");

/* --sample: pool address -> its latest refill. Sized from --max-blocks. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64);
	__type(value, struct tm_pool_sample);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
} pool_samples SEC(".maps");

/* Code addresses where a code object died -> how many died there. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64);
	__type(value, __u64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
} code_generations SEC(".maps");

/* Code objects (address, fingerprint) whose lines userspace was sent. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct tm_raw_frame);
	__type(value, __u8);
	__uint(max_entries, 65536);
} codes_sent SEC(".maps");

/* One code event per CPU, indexed by CPU: a per-CPU array's values are
 * limited to 32 KiB, and the event carries up to 64 KiB of line table.
 * Sized to the possible CPUs by userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct tm_code_event);
	__uint(max_entries, 1);
} code_scratch SEC(".maps");

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
	__uint(max_entries, 4 << 20); /* room for bursts of new code objects (imports) */
} events SEC(".maps");

/* Calls a thread has in flight, innermost last. An entry is finished when
 * its result arrives; entries of frames that returned (stack pointer below
 * the current one) are dropped; an inlined copy nested in another shares its
 * frame, so entries at the current stack pointer are outer calls. */
#define TM_PENDING 8

struct tm_pending {
	__u64 sp;
	__u64 a, b;
	__u64 since;  /* ktime, to drop calls whose result never came */
	__u32 site;
	__u32 awaiting_pool; /* a PREDICT that found its pool empty */
};

struct tm_thread {
	__u32 depth;
	__u32 pad;
	struct tm_pending stack[TM_PENDING];
	__u64 tstate, tstate_fsbase;
	/* The last code object this thread's frames read, and what its
	 * window gave: a loop allocates from one code object again and again.
	 * Good while code_death_count is what it was (a dead code object's
	 * address may be reused), and only when code deaths are probed. */
	__u64 last_code, last_code_epoch;
	__u32 last_fingerprint;  /* generation folded in */
	__s32 last_firsttraceable;
	/* The last traceback this thread interned (one frame), and its id:
	 * ids are never taken back. */
	struct tm_raw_frame last_frame;
	__u32 last_id;
	__u16 last_nframe, last_total;
	__u32 last_truncated;
	/* the thread state found during this probe hit (3.12+ prediction and
	 * the traceback both need it); hit_tstate_known is cleared per hit */
	__u32 hit_tstate_known;
	__u64 hit_tstate;
	__u64 hit_fsbase; /* the thread's fs base (pthread_self()), set per hit */
	/* what this hit read of thread state hit_window_tstate's window
	 * (read_tstate_window); hit_window_tstate is cleared per hit */
	__u32 hit_status;
	__u32 pad1;
	__u64 hit_window_tstate, hit_thread_id, hit_frame, hit_interp;
	/* Probe hits on this thread (a running count), and the block its
	 * last allocation recorded, at which hit, with which number: the
	 * re-stamp that initializes that object next changes nothing. */
	__u32 hits;
	__u32 fresh_hit;
	__u64 fresh_ptr, fresh_size;
	__u32 fresh_seq;
	__u32 pad2;
};

/* Hits per probe site, for --verbose and the benchmarks. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} site_hits SEC(".maps");

/* What each probe site does; the BPF cookie is the index. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct tm_site);
	__uint(max_entries, 1);
} sites SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tm_thread);
} threads SEC(".maps");

/* Per-CPU scratch: the traceback being built (it is also the ring-buffer
 * event) and the windows read out of the target's thread states, frames
 * and code objects. */
struct tm_scratch {
	struct tm_new_traceback ev;
	__u8 frame_window[TM_FRAME_WINDOW];
	__u8 code_window[TM_CODE_WINDOW];
	__u8 tstate_window[TM_TSTATE_WINDOW];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct tm_scratch);
	__uint(max_entries, 1);
} scratch SEC(".maps");

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
	case TM_REG_SP: return offsetof(struct pt_regs, sp) / 8;
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
	__u64 main;  /* the main interpreter */
	__u64 tstate;
	__u64 found;
	__u64 first; /* the first of this thread's states met, if none is better */
};

/* 3.12+: is this thread state the one its thread runs under now? */
static __always_inline bool status_active(__u32 status)
{
	return (status >> (cfg.py.tstate_active_bit & 31)) & 1;
}

static __always_inline bool tstate_active(__u64 tstate)
{
	__u32 status = 0;

	return !bpf_probe_read_user(&status, sizeof(status), (void *)(tstate + cfg.py.tstate_status)) &&
	       status_active(status);
}

/* One step over all interpreters' thread lists: pthread_self(), which
 * CPython stores as tstate->thread_id, is the thread's fs base on x86_64.
 * A thread may have a thread state in several interpreters: from 3.12 the
 * active one is taken; up to 3.11 (PyGILState_GetThisThreadState(): the
 * thread's first) the main interpreter's; else the first met. */
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
		if (cfg.py.tstate_status == ~0u ? w->interp == w->main : tstate_active(w->tstate)) {
			w->found = w->tstate;
			return 1;
		}
		if (!w->first)
			w->first = w->tstate;
	}
	if (bpf_probe_read_user(&w->tstate, sizeof(w->tstate),
				(void *)(w->tstate + cfg.py.tstate_next)))
		return 1;
	return 0;
}

/* The fields of a thread state a hit needs (thread id, frame, status,
 * interpreter) in one read: each read of user memory costs about a tenth
 * of a trap whatever its length. At most once per hit and thread state. */
static __always_inline int read_tstate_window(struct tm_thread *t, __u64 tstate)
{
	__u32 zero = 0;
	struct tm_scratch *s;
	const __u8 *w;

	if (tstate && t->hit_window_tstate == tstate)
		return 0;
	s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s || !tstate ||
	    bpf_probe_read_user(s->tstate_window, cfg.py.tstate_window_len & (TM_TSTATE_WINDOW - 1),
				(void *)(tstate + cfg.py.tstate_window_start)))
		return -1;
	w = s->tstate_window;
	t->hit_thread_id = load_u64(w, cfg.py.tstate_window_thread_id);
	t->hit_frame = load_u64(w, cfg.py.tstate_window_frame);
	t->hit_interp = load_u64(w, cfg.py.tstate_window_interp);
	t->hit_status = cfg.py.tstate_window_status != ~0u
				? *(const __u32 *)(w + (cfg.py.tstate_window_status & (TM_TSTATE_WINDOW - 4)))
				: 0;
	t->hit_window_tstate = tstate;
	return 0;
}

/* _Py_tss_tstate for the current thread (cfg is read field by field: a
 * pointer that drops its volatile lets the compiler fold in the zeros of
 * its initializer). */
static __always_inline __u64 tss_tstate(__u64 fsbase)
{
	__u64 addr = 0, dtv = 0, block = 0, value = 0;

	if (cfg.py.tss_tstate.mode == TM_TLS_FS_OFFSET) {
		addr = fsbase + cfg.py.tss_tstate.offset;
	} else if (cfg.py.tss_tstate.mode == TM_TLS_DTV) {
		/* tcbhead_t.dtv; dtv_t entries are 16 bytes, pointer first */
		if (bpf_probe_read_user(&dtv, sizeof(dtv), (void *)(fsbase + 8)) ||
		    bpf_probe_read_user(&block, sizeof(block), (void *)(dtv + cfg.py.tss_tstate.module * 16)) ||
		    !block || block == ~0ULL)
			return 0;
		addr = block + cfg.py.tss_tstate.offset;
	} else {
		return 0;
	}
	if (bpf_probe_read_user(&value, sizeof(value), (void *)addr))
		return 0;
	return value;
}

/* The thread state tracemalloc would take the calling thread's frames
 * from: the current one, _Py_tss_tstate, from 3.12; up to 3.11 the
 * thread's PyGILState one, its first (the main interpreter's, when the
 * thread calls into sub-interpreters). Cached per thread. */
static __always_inline __u64 current_tstate(struct tm_thread *t)
{
	struct thread_walk w = {};
	__u64 current;

	w.fsbase = t->hit_fsbase;
	if (cfg.py.tss_tstate.mode != TM_TLS_NONE) {
		current = tss_tstate(w.fsbase);
		if (current)
			return current;
	}
	/* the cached state is checked with the same read that gives its frame */
	if (t->tstate_fsbase == w.fsbase && !read_tstate_window(t, t->tstate) && t->hit_thread_id == w.fsbase &&
	    (cfg.py.tstate_status == ~0u || cfg.py.tss_tstate.mode != TM_TLS_NONE || status_active(t->hit_status)))
		return t->tstate;

	if (bpf_probe_read_user(&w.interp, sizeof(w.interp),
				(void *)(cfg.py.runtime_addr + cfg.py.runtime_interpreters_head)) ||
	    !w.interp ||
	    bpf_probe_read_user(&w.main, sizeof(w.main),
				(void *)(cfg.py.runtime_addr + cfg.py.runtime_interpreters_main)))
		return 0;
	if (bpf_probe_read_user(&w.tstate, sizeof(w.tstate),
				(void *)(w.interp + cfg.py.interp_threads_head)))
		return 0;
	bpf_loop(TM_MAX_THREAD_WALK, thread_walk_step, &w, 0);
	if (!w.found)
		w.found = w.first;
	if (w.found) {
		t->tstate = w.found;
		t->tstate_fsbase = w.fsbase;
	}
	return w.found;
}

/* current_tstate(), read at most once per probe hit. */
static __always_inline __u64 hit_tstate(struct tm_thread *t)
{
	if (!t->hit_tstate_known) {
		t->hit_tstate = current_tstate(t);
		t->hit_tstate_known = 1;
	}
	return t->hit_tstate;
}

/* ---- the caller's Python frames --------------------------------------- */

struct frame_walk {
	__u64 frame;
	struct tm_thread *t;
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
	__u64 code, back, instr = 0, epoch;
	struct tm_thread *t;
	__u32 n, fingerprint;
	__s32 firsttraceable;
	__s64 lasti;

	if (!s || !w->frame)
		return 1;
	n = w->nframe;
	/* Without --total-nframe nothing needs the frames past the nframe
	 * kept (total_nframe is then the frames kept): reading the next
	 * frame and its code only to say that it exists cost two user reads
	 * a hit, and evicted this thread's cached code object. */
	if (n >= cfg.nframe && !cfg.count_all_frames) {
		w->truncated = 1;
		return 1;
	}
	if (bpf_probe_read_user(s->frame_window, cfg.py.frame_window_len & (TM_FRAME_WINDOW - 1),
				(void *)(w->frame + cfg.py.frame_window_start)))
		goto unreadable;
	code = load_u64(s->frame_window, cfg.py.frame_code);
	back = load_u64(s->frame_window, cfg.py.frame_back);
	if (!code)
		goto unreadable;
	t = w->t;
	if (t && cfg.code_deaths_probed && code == t->last_code && t->last_code_epoch == code_death_count) {
		fingerprint = t->last_fingerprint;
		firsttraceable = t->last_firsttraceable;
	} else {
		/* the count before the reading: a death meanwhile is seen next time */
		epoch = code_death_count;
		if (bpf_probe_read_user(s->code_window, cfg.py.code_window_len & (TM_CODE_WINDOW - 1),
					(void *)(code + cfg.py.code_window_start)))
			goto unreadable;
		fingerprint = code_fingerprint(s->code_window);
		if (code_deaths) {
			__u64 *gen = bpf_map_lookup_elem(&code_generations, &code);

			if (gen)
				fingerprint = tm_fingerprint_with_generation(fingerprint, *gen);
		}
		firsttraceable = cfg.py.code_firsttraceable != ~0u
					 ? *(__s32 *)(s->code_window + (cfg.py.code_firsttraceable & (TM_CODE_WINDOW - 4)))
					 : 0;
		if (t) {
			t->last_code = code;
			t->last_code_epoch = epoch;
			t->last_fingerprint = fingerprint;
			t->last_firsttraceable = firsttraceable;
		}
	}

	if (cfg.py.frame_model == 1) {
		/* PyFrameObject: f_lasti is an int (bytes in 3.8/3.9, code
		 * units in 3.10: the loader's layout says which). */
		lasti = *(__s32 *)(s->frame_window + cfg.py.frame_lasti);
		lasti *= cfg.py.lasti_multiplier;
		/* PyFrame_GetLineNumber(): under a tracer, f_lineno */
		if (cfg.py.frame_lineno != ~0u && cfg.py.frame_lineno < TM_FRAME_WINDOW - 4) {
			__s32 lineno = *(__s32 *)(s->frame_window + cfg.py.frame_lineno);
			bool traced = cfg.py.frame_trace != ~0u && cfg.py.frame_trace < TM_FRAME_WINDOW - 8
					      ? load_u64(s->frame_window, cfg.py.frame_trace) != 0
					      : lineno != 0;

			if (traced && lineno >= 0 && lineno < TM_LASTI_IS_LINENO)
				lasti = TM_LASTI_IS_LINENO | lineno;
		}
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
		    lasti < (__s64)firsttraceable * 2)
			goto skip;
	}

	if (n < cfg.nframe && n < TM_MAX_NFRAME) {
		struct tm_raw_frame *f = &s->ev.stack.frames[n];

		f->code = code;
		f->lasti = (__s32)lasti;
		f->fingerprint = fingerprint;
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

/* Sends the lines of one frame's code object, the first time it is seen. */
static long send_code_step(__u64 index, void *unused)
{
	__u32 zero = 0, n = (__u32)index;
	struct tm_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	__u32 cpu = bpf_get_smp_processor_id();
	struct tm_code_event *ev = bpf_map_lookup_elem(&code_scratch, &cpu);
	struct tm_raw_frame key = {};
	__u64 linetable, total = 0, len;
	__u8 one = 1;

	if (!s || !ev || n >= s->ev.stack.nframe)
		return 1;
	/* one register for the check and the index, or the verifier loses the bound */
	barrier_var(n);
	if (n >= TM_MAX_NFRAME)
		return 1;
	key.code = s->ev.stack.frames[n].code;
	key.fingerprint = s->ev.stack.frames[n].fingerprint;
	if (!key.code || bpf_map_lookup_elem(&codes_sent, &key))
		return 0;
	if (bpf_probe_read_user(s->code_window, cfg.py.code_window_len & (TM_CODE_WINDOW - 1),
				(void *)(key.code + cfg.py.code_window_start)))
		return 0;
	ev->type = TM_EVENT_CODE;
	ev->code = key.code;
	ev->fingerprint = key.fingerprint;
	ev->firstlineno = *(const __u32 *)(s->code_window + cfg.py.code_firstlineno);
	ev->filename_addr = load_u64(s->code_window, cfg.py.code_filename);
	linetable = load_u64(s->code_window, cfg.py.code_linetable);
	/* The page after a short str may not be present (a fresh arena page, or
	 * the end of a mapping) and a probe cannot fault it in: then copy to the
	 * end of the str's page; the str's own bytes are there, having been
	 * written. */
	ev->filename_len = TM_CODE_FILENAME_BYTES;
	if (bpf_probe_read_user(ev->filename, TM_CODE_FILENAME_BYTES, (void *)ev->filename_addr)) {
		len = TM_PAGE_SIZE - (ev->filename_addr & (TM_PAGE_SIZE - 1));
		if (len > TM_CODE_FILENAME_BYTES)
			len = TM_CODE_FILENAME_BYTES;
		barrier_var(len);
		if (len > TM_CODE_FILENAME_BYTES || !len ||
		    bpf_probe_read_user(ev->filename, len, (void *)ev->filename_addr))
			len = 0;
		ev->filename_len = (__u32)len;
	}
	if (bpf_probe_read_user(&total, sizeof(total), (void *)(linetable + cfg.py.bytes_size)))
		total = 0;
	len = total < TM_CODE_LINETABLE_BYTES ? total : TM_CODE_LINETABLE_BYTES;
	barrier_var(len);
	if (len > TM_CODE_LINETABLE_BYTES)
		return 0;
	if (len && bpf_probe_read_user(ev->linetable, len, (void *)(linetable + cfg.py.bytes_sval)))
		len = 0;
	ev->linetable_len = (__u32)len;
	ev->linetable_total = (__u32)total;
	barrier_var(len);
	if (len > TM_CODE_LINETABLE_BYTES)
		return 0;
	if (bpf_ringbuf_output(&events, ev, offsetof(struct tm_code_event, linetable) + len, 0))
		count_lost(TM_LOST_EVENTS);
	else
		bpf_map_update_elem(&codes_sent, &key, &one, BPF_ANY);
	return 0;
}

static __always_inline void remember_traceback(struct tm_thread *t, const struct tm_scratch *s, __u32 id)
{
	t->last_id = s->ev.stack.nframe == 1 ? id : 0;
	t->last_nframe = s->ev.stack.nframe;
	t->last_total = s->ev.stack.total_nframe;
	t->last_truncated = s->ev.stack.truncated;
	t->last_frame = s->ev.stack.frames[0];
}

/* The interned id of the calling thread's traceback; 0 when it could not be
 * interned (counted), which userspace shows as <unknown>:0. */
static __always_inline __u32 current_traceback(struct tm_thread *t)
{
	__u32 zero = 0, id, used, *known;
	struct tm_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	struct frame_walk w = { .t = t };
	__u64 tstate, cframe;
	if (!s)
		return 0;
	tstate = hit_tstate(t);
	if (tstate && !read_tstate_window(t, tstate)) {
		w.frame = t->hit_frame;
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

	/* the same one-frame traceback as this thread's last: its id */
	if (w.nframe == 1 && t->last_id && t->last_nframe == 1 && t->last_total == w.total &&
	    t->last_truncated == w.truncated && t->last_frame.code == s->ev.stack.frames[0].code &&
	    t->last_frame.lasti == s->ev.stack.frames[0].lasti &&
	    t->last_frame.fingerprint == s->ev.stack.frames[0].fingerprint)
		return t->last_id;
	known = bpf_map_lookup_elem(&traceback_ids, &s->ev.stack);
	if (known) {
		remember_traceback(t, s, *known);
		return *known;
	}

	id = (__u32)__sync_fetch_and_add(&totals.next_traceback_id, 1) + 1;
	if (id >= cfg.max_tracebacks) {
		count_lost(TM_LOST_TRACEBACK_FULL);
		return 0;
	}
	if (bpf_map_update_elem(&traceback_ids, &s->ev.stack, &id, BPF_NOEXIST)) {
		/* Another CPU interned it first, or the map is full. */
		known = bpf_map_lookup_elem(&traceback_ids, &s->ev.stack);
		if (known) {
			remember_traceback(t, s, *known);
			return *known;
		}
		count_lost(TM_LOST_TRACEBACK_FULL);
		return 0;
	}
	remember_traceback(t, s, id);
	/* the code objects' lines first: the traceback event refers to them */
	bpf_loop(w.nframe, send_code_step, NULL, 0);
	s->ev.type = TM_EVENT_TRACEBACK;
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

/* ---- the live table (tmtrace.h says how it works) ---------------------- */

enum live_found {
	LIVE_FOUND,   /* the block's slot, taken */
	LIVE_CLAIMED, /* not there: a free slot on its way, taken for it */
	LIVE_ABSENT,  /* not there, nothing taken */
	LIVE_FULL,    /* not there, and no free slot within reach */
	LIVE_BUSY,    /* there, but someone else holds it */
};

static __always_inline struct tm_live_slot *live_slot(__u32 home, __u32 i)
{
	__u32 idx = (home + i) & cfg.live_mask;

	return bpf_map_lookup_elem(&live, &idx);
}

/* ptr's slot for a look at its value, not taken: the value may be in the
 * middle of a change (only flags and seq are read this way, and only of a
 * block this thread's own calls order). */
static __always_inline struct tm_live_slot *live_peek(__u64 ptr)
{
	__u32 home = tm_live_home(ptr, cfg.live_mask);

	if (!ptr)
		return NULL;
	for (__u32 i = 0; i < TM_LIVE_PROBES; i++) {
		struct tm_live_slot *s = live_slot(home, i);
		__u64 key;

		if (!s)
			return NULL;
		key = *(volatile __u64 *)&s->key;
		if ((key & ~TM_SLOT_BUSY) == ptr)
			return s;
		if (key == TM_SLOT_EMPTY)
			return NULL;
	}
	return NULL;
}

/* Takes ptr's slot (its key becomes ptr | BUSY until live_give() puts a
 * key back), or with `claim`, the first free slot on its way when ptr is
 * not there. Nothing moves a key once stored, and a free slot is taken by
 * compare-and-swap, so two CPUs never hold one slot; ptr itself is never
 * inserted twice at once (an allocator hands an address out once). */
static __always_inline struct tm_live_slot *live_take(__u64 ptr, bool claim, enum live_found *how)
{
	__u32 home = tm_live_home(ptr, cfg.live_mask);
	struct tm_live_slot *free_slot = NULL;
	__u64 free_key = 0;

	*how = LIVE_ABSENT;
	if (!ptr)
		return NULL;
	for (__u32 i = 0; i < TM_LIVE_PROBES; i++) {
		struct tm_live_slot *s = live_slot(home, i);
		__u64 key;

		if (!s)
			return NULL;
		key = *(volatile __u64 *)&s->key;
		if (key == ptr) {
			key = __sync_val_compare_and_swap(&s->key, ptr, ptr | TM_SLOT_BUSY);
			if (key == ptr) {
				*how = LIVE_FOUND;
				return s;
			}
			/* the sweep deleted it this instant (key now DELETED) */
		}
		if (key == (ptr | TM_SLOT_BUSY)) {
			*how = LIVE_BUSY;
			return NULL;
		}
		if ((key == TM_SLOT_EMPTY || key == TM_SLOT_DELETED) && !free_slot) {
			free_slot = s;
			free_key = key;
		}
		if (key == TM_SLOT_EMPTY)
			break;
	}
	if (!claim)
		return NULL;
	if (!free_slot) {
		*how = LIVE_FULL;
		return NULL;
	}
	if (__sync_val_compare_and_swap(&free_slot->key, free_key, ptr | TM_SLOT_BUSY) != free_key) {
		/* another CPU's block took it this instant */
		*how = LIVE_BUSY;
		return NULL;
	}
	*how = LIVE_CLAIMED;
	return free_slot;
}

/* Gives a taken slot back with its new key: the value is written before
 * (x86 keeps stores in order; the barrier keeps the compiler from moving
 * them). */
static __always_inline void live_give(struct tm_live_slot *s, __u64 key)
{
	asm volatile("" ::: "memory");
	*(volatile __u64 *)&s->key = key;
}

/* Writes a block into a taken slot. Its seq is 0 while the other fields
 * change, and written last: userspace, reading the slot without taking
 * it, keeps a copy only if it saw the same non-zero seq before and after
 * (the key alone cannot tell: a slot taken and given back with the same
 * key looks unchanged). */
static __always_inline void live_write(struct tm_live_slot *s, const struct tm_block *blk)
{
	*(volatile __u32 *)&s->blk.seq = 0;
	asm volatile("" ::: "memory");
	/* traceback_id too: the sweep's compare-and-swap covers it */
	s->blk.traceback_id = blk->traceback_id;
	s->blk.size = blk->size;
	s->blk.domain = blk->domain;
	s->blk.flags = blk->flags;
	asm volatile("" ::: "memory");
	*(volatile __u32 *)&s->blk.seq = blk->seq;
}

static __always_inline void forget_block(__u64 ptr)
{
	enum live_found how;
	struct tm_live_slot *s = live_take(ptr, false, &how);
	struct tm_block old;

	if (!s) {
		if (how == LIVE_BUSY)
			count_lost(TM_LOST_LIVE_BUSY);
		else
			__sync_fetch_and_add(&totals.untracked_frees, 1);
		return;
	}
	old = s->blk;
	live_give(s, TM_SLOT_DELETED);
	stats_add(old.traceback_id, -(__s64)old.size, -1);
	__sync_fetch_and_add(&totals.current, -(__s64)old.size);
	__sync_fetch_and_add(&totals.frees, 1);
}

/* Stores a block, replacing (and taking off the totals) the one traced at
 * that address before, as tracemalloc_add_trace() does. */
static __always_inline bool store_block(__u64 ptr, const struct tm_block *blk)
{
	enum live_found how;
	struct tm_live_slot *s = live_take(ptr, true, &how);

	if (!s) {
		count_lost(how == LIVE_BUSY ? TM_LOST_LIVE_BUSY : TM_LOST_LIVE_FULL);
		return false;
	}
	if (how == LIVE_FOUND) {
		stats_add(s->blk.traceback_id, -(__s64)s->blk.size, -1);
		__sync_fetch_and_add(&totals.current, -(__s64)s->blk.size);
	}
	live_write(s, blk);
	live_give(s, ptr);
	return true;
}

/* --lazy-frees: the allocation numbered seq, for the next sweep. */
static __always_inline void journal_add(__u64 ptr, __u32 size, __u32 seq)
{
	__u32 slot = seq & cfg.journal_mask;
	struct tm_journal_entry *e = bpf_map_lookup_elem(&journal, &slot);

	if (!e)
		return;
	e->ptr = ptr;
	e->size = size;
	/* the slot is whole once seq is there (x86 keeps stores in order) */
	asm volatile("" ::: "memory");
	*(volatile __u32 *)&e->seq = seq;
}

/* As tracemalloc_add_trace(): a block already traced at this address is
 * replaced, size and traceback. */
static __always_inline void record_block(struct tm_thread *t, __u64 ptr, __u64 size, __u32 flags)
{
	struct tm_block blk = { .size = size, .domain = 0, .flags = flags };
	bool stored;

	blk.traceback_id = current_traceback(t);
	blk.seq = (__u32)__sync_fetch_and_add(&block_seq, 1) + 1;
	stored = store_block(ptr, &blk);
	/* --lazy-frees: every number gets its slot, stored or not: a sweep
	 * reads the journal in order and waits at a slot not yet written */
	if (cfg.lazy_frees)
		journal_add(ptr, stored && (flags & TM_BLOCK_PYMALLOC) && size <= 0xffff ? (__u32)size : 0, blk.seq);
	if (!stored)
		return;
	stats_add(blk.traceback_id, size, 1);
	t->fresh_ptr = ptr;
	t->fresh_size = size;
	t->fresh_seq = blk.seq;
	t->fresh_hit = t->hits;
	/* --lazy-frees: current counts freed blocks until a sweep, so the
	 * peak is userspace's (the highest current after a sweep) */
	if (cfg.lazy_frees)
		__sync_fetch_and_add(&totals.current, (__s64)size);
	else
		update_peak(__sync_add_and_fetch(&totals.current, (__s64)size));
	__sync_fetch_and_add(&totals.allocs, 1);
}

/* --sample: a refill of `block`'s pool, by the current traceback. */
static __always_inline void record_sample(struct tm_thread *t, __u64 block)
{
	struct tm_pool_sample smp = { .block = block };
	__u64 pool = block & ~(__u64)(cfg.pymalloc.pool_size - 1);

	smp.traceback_id = current_traceback(t);
	smp.time = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&pool_samples, &pool, &smp, BPF_ANY))
		count_lost(TM_LOST_SAMPLES_FULL);
}

/* _PyTraceMalloc_NewReference(): the object's memory, if traced, takes the
 * current traceback. (Skipping the block this thread recorded last would
 * be wrong: `a = {}; del a; b = {}` reuses that very block from the free
 * list on another line with no allocation in between.) */
static __always_inline void restamp(struct tm_thread *t, __u64 op)
{
	__u64 type = 0, flags = 0, ptr = op, fresh = t->fresh_ptr;
	struct tm_live_slot *s;
	enum live_found how;
	__u32 id;

	/* The first re-stamp after this thread's last allocation, at the
	 * very next hit, of an object inside that block: the object being
	 * initialized right after its allocation (by far the most common
	 * case), in the frames that allocated it, so the traceback is the
	 * one just recorded. Its entry must still hold that allocation's
	 * number: else another thread's allocation took the address since
	 * (and the object may come from a free list). Only when every
	 * creation is probed: else the object allocated last may have been
	 * created unprobed, died into a free list and be taken from it now. */
	t->fresh_ptr = 0;
	if (cfg.every_creation_probed && fresh && t->fresh_hit + 1 == t->hits && op - fresh < t->fresh_size) {
		s = live_peek(fresh);
		if (s && s->blk.seq == t->fresh_seq)
			return;
	}
	if (bpf_probe_read_user(&type, sizeof(type), (void *)(op + cfg.py.object_type)) ||
	    bpf_probe_read_user(&flags, sizeof(flags), (void *)(type + cfg.py.type_flags)))
		return;
	if (flags & cfg.py.gc_flag)
		ptr -= cfg.py.gc_header_size;
	if (flags & cfg.py.preheader_flags)
		ptr -= cfg.py.preheader_size;
	if (!live_peek(ptr))
		return;
	id = current_traceback(t);
	/* the block may have gone meanwhile: take it now */
	s = live_take(ptr, false, &how);
	if (!s) {
		if (how == LIVE_BUSY)
			count_lost(TM_LOST_LIVE_BUSY);
		return;
	}
	if (s->blk.traceback_id != id) {
		stats_add(s->blk.traceback_id, -(__s64)s->blk.size, -1);
		stats_add(id, (__s64)s->blk.size, 1);
		s->blk.traceback_id = id;
	}
	live_give(s, ptr);
}

/* PyTraceMalloc_Track(): tracemalloc_add_trace() in that domain. */
static __always_inline void track_block(struct tm_thread *t, __u32 domain, __u64 ptr, __u64 size)
{
	struct tm_tracked_key key = { .ptr = ptr, .domain = domain };
	struct tm_block blk = { .size = size, .domain = domain };
	struct tm_block *old;

	if (domain == 0) {
		record_block(t, ptr, size, 0);
		return;
	}
	blk.traceback_id = current_traceback(t);
	old = bpf_map_lookup_elem(&tracked, &key);
	if (old) {
		__sync_fetch_and_add(&totals.current, -(__s64)old->size);
		*old = blk;
	} else if (bpf_map_update_elem(&tracked, &key, &blk, BPF_NOEXIST)) {
		count_lost(TM_LOST_LIVE_FULL);
		return;
	}
	update_peak(__sync_add_and_fetch(&totals.current, (__s64)size));
	__sync_fetch_and_add(&totals.allocs, 1);
}

static __always_inline void untrack_block(__u32 domain, __u64 ptr)
{
	struct tm_tracked_key key = { .ptr = ptr, .domain = domain };
	struct tm_block *b;
	__u64 size;

	if (domain == 0) {
		forget_block(ptr);
		return;
	}
	b = bpf_map_lookup_elem(&tracked, &key);
	if (!b)
		return;
	size = b->size;
	if (bpf_map_delete_elem(&tracked, &key))
		return;
	__sync_fetch_and_add(&totals.current, -(__s64)size);
	__sync_fetch_and_add(&totals.frees, 1);
}

/* A code object dies: its address starts a new generation. */
static __always_inline void code_died(__u64 code)
{
	__u64 one = 1, *gen = bpf_map_lookup_elem(&code_generations, &code);

	if (gen)
		__sync_fetch_and_add(gen, 1);
	else if (bpf_map_update_elem(&code_generations, &code, &one, BPF_NOEXIST) &&
		 !bpf_map_lookup_elem(&code_generations, &code))
		count_lost(TM_LOST_CODE_GENERATIONS);
	__sync_fetch_and_add(&code_death_count, 1);
	if (!code_deaths)
		code_deaths = 1;
}

/* ---- probes ------------------------------------------------------------ */

static __always_inline __u64 operand_value(const __u64 *regs, const struct tm_operand *op, bool *ok)
{
	__u64 v = 0;

	switch (op->type) {
	case TM_OPERAND_REG:
		v = reg_value(regs, op->reg);
		break;
	case TM_OPERAND_CONST:
		v = (__u64)op->value;
		break;
	case TM_OPERAND_MEM:
		if (bpf_probe_read_user(&v, sizeof(v), (void *)(reg_value(regs, op->reg) + op->value)))
			*ok = false;
		break;
	default:
		return 0;
	}
	if (op->width == TM_WIDTH_32)
		v &= 0xffffffffULL;
	else if (op->width == TM_WIDTH_S32)
		v = (__u64)(__s64)(__s32)v;
	return v;
}

/* Drops the entries of frames that have returned: their stack pointer is
 * below ours. Entries at our stack pointer are outer inlined calls. */
static __always_inline void drop_returned(struct tm_thread *t, __u64 sp)
{
	for (int i = 0; i < TM_PENDING; i++) {
		__u32 idx = t->depth - 1;
		struct tm_pending *top;

		/* one register for the check and the index, or the verifier
		 * loses the bound */
		barrier_var(idx);
		if (idx >= TM_PENDING)
			break;
		top = &t->stack[idx];
		if (top->sp >= sp && bpf_ktime_get_ns() - top->since < cfg.abandon_ns)
			break;
		if (top->sp >= sp)
			count_lost(TM_LOST_ABANDONED);
		t->depth = idx;
	}
}

static __always_inline void push_pending(struct tm_thread *t, __u32 site, __u64 sp, __u64 a, __u64 b,
					 __u32 awaiting_pool, bool refill)
{
	struct tm_pending *p;
	__u32 d = t->depth, top = d - 1;

	/* The same inlined site again in the same frame: the earlier call
	 * took a path around its return site (an error); and a pool refill
	 * that another call follows never happened. */
	barrier_var(top);
	if (top < TM_PENDING) {
		p = &t->stack[top];
		if ((p->site == site && p->sp == sp) || (p->awaiting_pool && !refill)) {
			count_lost(TM_LOST_ABANDONED);
			d = top;
		}
	}
	barrier_var(d);
	if (d >= TM_PENDING) {
		count_lost(TM_LOST_NESTING);
		return;
	}
	p = &t->stack[d];
	p->sp = sp;
	p->a = a;
	p->b = b;
	p->since = bpf_ktime_get_ns();
	p->site = site;
	p->awaiting_pool = awaiting_pool;
	t->depth = d + 1;
}

/* The block pymalloc's fast path will pop for this size: the first free
 * block of the size class's first used pool. Exact under the GIL, which
 * every pymalloc allocation holds. 0: the pool list is empty (a new pool
 * comes from allocate_from_new_pool), or the state was unreadable. */
static __always_inline __u64 usedpools_now(struct tm_thread *t)
{
	__u64 tstate, interp = 0, flags = 0, state = 0;

	if (cfg.pymalloc.usedpools)
		return cfg.pymalloc.usedpools;
	/* 3.12+: get_state() of Objects/obmalloc.c, for the thread holding
	 * the GIL (_Py_tss_tstate) */
	tstate = hit_tstate(t);
	if (!tstate || read_tstate_window(t, tstate))
		return 0;
	interp = t->hit_interp;
	if (!interp)
		return 0;
	if (cfg.pymalloc.per_interp == 12) {
		if (bpf_probe_read_user(&flags, sizeof(flags), (void *)(interp + cfg.pymalloc.interp_feature_flags)))
			return 0;
		if ((flags & cfg.pymalloc.use_main_obmalloc) &&
		    bpf_probe_read_user(&interp, sizeof(interp),
					(void *)(cfg.py.runtime_addr + cfg.py.runtime_interpreters_main)))
			return 0;
		return interp + cfg.pymalloc.interp_obmalloc;
	}
	if (bpf_probe_read_user(&state, sizeof(state), (void *)(interp + cfg.pymalloc.interp_obmalloc)) || !state)
		return 0;
	return state + cfg.pymalloc.obmalloc_used;
}

/* Each size class's first used pool as last read: a guess, checked
 * against the pool's own header before use (is_first_pool()). */
__u64 first_pools[TM_SIZE_CLASSES] = {};

/* Is this pool, as its header reads now, the first of size class
 * `index`'s used pools (whose list head is `head`)? A pool leaves the list
 * only when full (freeblock NULL: pymalloc unlinks it then) or empty (count
 * 0: it goes to freepools), and any pool put back in front of a list
 * becomes its first's prevpool; so a pool in use, with a free block, of
 * this size class, whose prevpool is the list head, is in the list and
 * first. Under the GIL, which every pymalloc call holds. */
static __always_inline bool is_first_pool(const struct tm_pool_head *h, __u64 index, __u64 head)
{
	return h->count && h->freeblock && h->szidx == index && h->prevpool == head;
}

/* The block pymalloc's fast path will pop for this size: the first free
 * block of the size class's first used pool. Exact under the GIL, which
 * every pymalloc allocation holds. 0: the pool list is empty (a new pool
 * comes from allocate_from_new_pool), or the state was unreadable. One
 * read of the target while the size class's first pool stays first (each
 * read costs its checks, about a tenth of a trap), two when it changed. */
static __always_inline __u64 predict_block(struct tm_thread *t, __u64 size, bool *empty)
{
	__u64 index = ((size - 1) >> cfg.pymalloc.alignment_shift) & (TM_SIZE_CLASSES - 1);
	__u64 pool, usedpools = usedpools_now(t);
	/* usedpools[2i] and [2i+1] are the nextpool and prevpool of a
	 * pool_header that would start two words earlier: the list's head */
	__u64 head = usedpools + index * 16 - 16;
	struct tm_pool_head h = {};

	*empty = false;
	if (!usedpools) {
		count_lost(TM_LOST_POOL_UNREADABLE);
		return 0;
	}
	pool = first_pools[index];
	if (pool && !bpf_probe_read_user(&h, sizeof(h), (void *)pool) && is_first_pool(&h, index, head))
		return h.freeblock;
	if (bpf_probe_read_user(&pool, sizeof(pool), (void *)(usedpools + index * 16))) {
		count_lost(TM_LOST_POOL_UNREADABLE);
		return 0;
	}
	if (pool == head) {
		*empty = true; /* the list's own head: no pool of this size class */
		return 0;
	}
	if (bpf_probe_read_user(&h, sizeof(h), (void *)pool) || !h.freeblock) {
		count_lost(TM_LOST_POOL_UNREADABLE);
		return 0;
	}
	first_pools[index] = pool;
	return h.freeblock;
}

/* pymalloc_realloc(): a pool block whose new size fits its size class
 * (not shrinking below 3/4 of it) stays where it is, and tracemalloc
 * records it again with the new size and the current traceback. Any other
 * outcome runs the nested calls the copy makes (malloc + free, or a raw
 * realloc), which record themselves; the old block goes first, so that
 * the peak never counts both, as tracemalloc_realloc() removes it first. */
static __always_inline void realloc_in_place(struct tm_thread *t, __u64 ptr, __u64 nbytes)
{
	struct tm_live_slot *s = live_peek(ptr);
	__u64 pool = ptr & ~((__u64)cfg.pymalloc.pool_size - 1);
	__u32 szidx = 0;
	__u64 size;

	if (!s || !(s->blk.flags & TM_BLOCK_PYMALLOC))
		return; /* not pymalloc's, or traced before tmtrace: the nested calls tell */
	if (bpf_probe_read_user(&szidx, sizeof(szidx), (void *)(pool + offsetof(struct tm_pool_head, szidx)))) {
		count_lost(TM_LOST_POOL_UNREADABLE);
		return;
	}
	size = ((__u64)szidx + 1) << cfg.pymalloc.alignment_shift;
	if (nbytes <= size && 4 * nbytes > 3 * size)
		record_block(t, ptr, nbytes, TM_BLOCK_PYMALLOC);
	else
		forget_block(ptr);
}

/* Does a pymalloc function's result come from a pool? Only a small size
 * does, and a realloc of a block pymalloc does not own stays in the raw
 * domain whatever its new size (pymalloc_realloc() hands it to
 * PyMem_RawRealloc): --lazy-frees looks for pool blocks in their pools,
 * and would take such a block for freed. (A block traced before tmtrace
 * is unknown here, and taken for pymalloc's.) */
static __always_inline __u32 result_flags(const struct tm_site *entry_site, const struct tm_pending *call,
					  __u64 size)
{
	struct tm_live_slot *old;

	if (entry_site->family != TM_FAMILY_PYMALLOC || size - 1 >= cfg.pymalloc.small_threshold)
		return 0;
	if (entry_site->kind == TM_CALL_REALLOC && call->a) {
		old = live_peek(call->a);
		if (old && !(old->blk.flags & TM_BLOCK_PYMALLOC))
			return 0;
	}
	return TM_BLOCK_PYMALLOC;
}

static __always_inline void complete(struct tm_thread *t, const struct tm_site *entry_site,
				     const struct tm_pending *call, __u64 result)
{
	__u64 size;

	if (!armed || !result)
		return;	/* not yet armed, or failed: nothing to record */
	switch (entry_site->kind) {
	case TM_CALL_MALLOC:
		record_block(t, result, call->a, result_flags(entry_site, call, call->a));
		break;
	case TM_CALL_CALLOC:
		size = call->a * call->b;
		record_block(t, result, size, result_flags(entry_site, call, size));
		break;
	case TM_CALL_REALLOC:
		/* tracemalloc_realloc(): the old trace goes, the new one gets
		 * the current traceback even when the block did not move. */
		size = call->b;
		__u32 flags = result_flags(entry_site, call, size);

		if (call->a && call->a != result)
			forget_block(call->a);
		record_block(t, result, size, flags);
		break;
	}
}

static __always_inline int on_call(struct pt_regs *ctx, __u32 id, const struct tm_site *site,
				   struct tm_thread *t, const __u64 *regs)
{
	bool ok = true, empty;
	__u64 a, b, block;

	a = operand_value(regs, &site->a, &ok);
	b = operand_value(regs, &site->b, &ok);
	drop_returned(t, ctx->sp);
	if (!ok) {
		count_lost(TM_LOST_FRAME_UNREADABLE);
		return 0;
	}
	switch (site->role) {
	case TM_ROLE_TRACK:
		if (armed && t->depth == 0)
			track_block(t, (__u32)reg_value(regs, TM_REG_DI), a, b);
		return 0;
	case TM_ROLE_UNTRACK:
		if (armed && t->depth == 0)
			untrack_block((__u32)reg_value(regs, TM_REG_DI), a);
		return 0;
	case TM_ROLE_CODE_DEALLOC:
		if (a)
			code_died(a);
		return 0;
	case TM_ROLE_SET_ALLOCATOR: {
		__u32 type = TM_EVENT_ALLOCATOR_SET;

		/* from now on default calls check their slot, and count the
		 * calls of a hook not probed yet */
		if (!hooks_seen)
			hooks_seen = 1;
		bpf_ringbuf_output(&events, &type, sizeof(type), BPF_RB_FORCE_WAKEUP);
		return 0;
	}
	case TM_ROLE_NEWREF:
		if (armed && a && t->depth == 0)
			restamp(t, a);
		return 0;
	case TM_ROLE_ENTRY:
	case TM_ROLE_NEWPOOL:
		push_pending(t, id, ctx->sp, a, b, 0, site->role == TM_ROLE_NEWPOOL);
		return 0;
	case TM_ROLE_FREE:
		/* a thread state freed by its own thread (PyGILState_Release of
		 * a C thread): the next one may be elsewhere, and the freed
		 * memory may still look like it */
		if (a && a == t->tstate)
			t->tstate = 0;
		if (t->depth == 0 && armed && a)
			forget_block(a); /* a free nested in a realloc is the realloc's */
		return 0;
	case TM_ROLE_REALLOC:
		if (t->depth == 0 && armed && a)
			realloc_in_place(t, a, b);
		return 0;
	case TM_ROLE_PREDICT:
		if (t->depth)
			return 0;	/* nested in a realloc: the realloc records */
		if (site->kind == TM_CALL_CALLOC)
			a *= b;
		/* 0 and large sizes go to the raw domain, which records them */
		if (a - 1 >= cfg.pymalloc.small_threshold)
			return 0;
		block = predict_block(t, a, &empty);
		if (empty)
			push_pending(t, id, ctx->sp, a, 1, 1, false);
		else if (block && armed)
			record_block(t, block, a, TM_BLOCK_PYMALLOC);
		return 0;
	}
	return 0;
}

static __always_inline int on_result(struct pt_regs *ctx, const struct tm_site *site, struct tm_thread *t,
				     const __u64 *regs)
{
	__u64 sp = ctx->sp - site->sp_delta;
	bool ok = true;
	__u64 result = operand_value(regs, &site->result, &ok);
	__u32 entry_id = site->entry;
	const struct tm_site *entry_site;
	struct tm_pending call;
	int found = -1;

	/* Our entry: the innermost with this site and stack pointer. */
	for (int i = TM_PENDING - 1; i >= 0; i--) {
		if (found < 0 && (__u32)i < t->depth && t->stack[i].site == entry_id && t->stack[i].sp == sp)
			found = i;
	}
	barrier_var(found);
	if (found < 0 || found >= TM_PENDING)
		return 0;	/* its call started before tmtrace, or took the hooked path */
	call = t->stack[found];
	t->depth = (__u32)found;	/* anything above it is over too */
	entry_site = bpf_map_lookup_elem(&sites, &entry_id);
	if (!entry_site || !ok)
		return 0;
	if (entry_site->role == TM_ROLE_NEWPOOL) {
		/* completes the PREDICT below it that found its pool empty */
		__u32 below = t->depth - 1;

		if (cfg.sample) {
			/* no PREDICT below: pymalloc's allocations are sampled here */
			if (armed && result && cfg.pymalloc.pool_size)
				record_sample(t, result);
			return 0;
		}

		barrier_var(below);
		if (below >= TM_PENDING || !t->stack[below].awaiting_pool)
			return 0;
		call = t->stack[below];
		t->depth = below;
		if (below == 0 && armed && result)
			record_block(t, result, call.a, TM_BLOCK_PYMALLOC);
		return 0;
	}
	if (t->depth == 0)
		complete(t, entry_site, &call, result);
	return 0;
}

/* Is a default allocator's slot hooked right now? Then a call of it that is
 * not nested in a probed hook is not the workload's: tracemalloc (or any
 * hook) sees the workload's allocations pass through itself, and calls the
 * default functions directly only for its own bookkeeping. A hook tmtrace
 * has not probed yet (userspace attaches it within a moment) leaves the
 * call recorded, and counted as such. */
static __always_inline bool hooked_now(const struct tm_site *site)
{
	__u64 live = 0;

	if (bpf_probe_read_user(&live, sizeof(live), (void *)site->slot) || !live ||
	    live == site->slot_default)
		return false;
	for (__u32 i = 0; i < TM_MAX_HOOKS; i++) {
		if (hook_fns[i] == live)
			return true;
	}
	count_lost(TM_LOST_UNPROBED_HOOK);
	return false;
}

static __always_inline int on_probe(struct pt_regs *ctx)
{
	__u32 id = (__u32)bpf_get_attach_cookie(ctx);
	struct task_struct *task;
	const struct tm_site *site;
	__u64 regs[PT_REGS_WORDS];
	struct tm_thread *t;
	__u64 *hits;

	if (cfg.empty_probes)
		return 0; /* the benchmark's floor: the cost of the traps alone */
	/* plain loads from the trusted task pointer, which the thread's
	 * storage needs anyway: each helper call costs its call and return */
	task = bpf_get_current_task_btf();
	if (task->tgid != cfg.tgid)
		return 0;
	site = bpf_map_lookup_elem(&sites, &id);
	if (!site)
		return 0;
	hits = bpf_map_lookup_elem(&site_hits, &id);
	if (hits)
		(*hits)++;
	__builtin_memcpy(regs, ctx, sizeof(regs));
	/* A guarded copy runs only when the allocator pointer is the default
	 * function; a hook means the out-of-line functions will see the call. */
	if (site->guard_reg && reg_value(regs, site->guard_reg) != site->guard_value)
		return 0;
	t = bpf_task_storage_get(&threads, task, 0,
				 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!t)
		return 0;
	t->hit_tstate_known = 0;
	t->hit_fsbase = task->thread.fsbase;
	t->hit_window_tstate = 0;
	t->hits++;
	if (site->role == TM_ROLE_RETURN)
		return on_result(ctx, site, t, regs);
	if (site->flags & TM_SITE_HOOK) {
		if (!hooks_seen)
			hooks_seen = 1;
	} else if (hooks_seen && site->slot && t->depth == 0 && hooked_now(site)) {
		return 0;
	}
	return on_call(ctx, id, site, t, regs);
}

/* The same program serves entry sites, merge points and uretprobes: the
 * site map says which. */
SEC("uprobe")
int tm_probe(struct pt_regs *ctx)
{
	return on_probe(ctx);
}
