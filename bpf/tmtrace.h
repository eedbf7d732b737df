/* The one header shared by the BPF program and userspace: every struct that
 * crosses the boundary, and the constants both sides must agree on. */
#ifndef TMTRACE_SHARED_H
#define TMTRACE_SHARED_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Deepest traceback a user may ask for (-n). tracemalloc allows 65535; the
 * BPF walk is bounded, so tmtrace caps it. */
#define TM_MAX_NFRAME 128
/* Most frames walked to count total_nframe (tracemalloc caps at UINT16_MAX). */
#define TM_MAX_WALK 1024
/* Most thread states examined to find the caller's (all interpreters). */
#define TM_MAX_THREAD_WALK 8192
/* Size of the scratch window read out of a frame, a code object or a thread state. */
#define TM_FRAME_WINDOW 128
#define TM_CODE_WINDOW 256
#define TM_TSTATE_WINDOW 256
/* Hook functions tmtrace probes at most (tracemalloc has 7). */
#define TM_MAX_HOOKS 16

/* What an allocator call does. */
enum tm_call_kind {
	TM_CALL_MALLOC = 1,
	TM_CALL_CALLOC = 2,
	TM_CALL_REALLOC = 3,
	TM_CALL_FREE = 4,
};

/* Where an argument lives at a probe site: an index into struct pt_regs. */
enum tm_reg {
	TM_REG_NONE = 0,
	TM_REG_DI, TM_REG_SI, TM_REG_DX, TM_REG_CX, TM_REG_R8, TM_REG_R9,
	TM_REG_AX, TM_REG_BX, TM_REG_BP, TM_REG_R10, TM_REG_R11, TM_REG_R12,
	TM_REG_R13, TM_REG_R14, TM_REG_R15, TM_REG_SP,
	TM_REG_COUNT,
};

/* What a probe site does (its BPF cookie is its index in the sites map).
 * Inlined allocator copies and out-of-line functions are described the same
 * way; an inlined copy shares its caller's stack frame, so a call and its
 * result are paired by site and stack pointer. */
enum tm_role {
	/* pymalloc malloc/calloc: record at once the block the fast path is
	 * about to pop (pool->freeblock of the size class), or, when the pool
	 * is empty, wait for allocate_from_new_pool's result */
	TM_ROLE_PREDICT = 1,
	/* a call whose result comes later, at a TM_ROLE_RETURN site */
	TM_ROLE_ENTRY = 2,
	/* where an ENTRY's result is: a uretprobe, or the point where an
	 * inlined copy's paths merge */
	TM_ROLE_RETURN = 3,
	/* forget the block */
	TM_ROLE_FREE = 4,
	/* allocate_from_new_pool: an ENTRY whose RETURN completes a PREDICT */
	TM_ROLE_NEWPOOL = 5,
	/* an inlined pymalloc realloc: in place (the block keeps its address
	 * when the new size fits its size class) is recorded here; a move
	 * shows as the nested malloc and free the copy calls, and a block
	 * pymalloc does not own as the nested raw realloc */
	TM_ROLE_REALLOC = 6,
	/* PyTraceMalloc_Track(domain, ptr, size): a = ptr, b = size, the
	 * domain in %rdi (probed at the function's first instruction) */
	TM_ROLE_TRACK = 7,
	/* PyTraceMalloc_Untrack(domain, ptr): a = ptr, domain in %rdi */
	TM_ROLE_UNTRACK = 8,
	/* the code object deallocator (PyCode_Type.tp_dealloc): a = code.
	 * A code object's address may be reused by a new one once it dies;
	 * each death starts a new generation of that address, which frames
	 * carry, so a traceback never takes a dead code object's lines. */
	TM_ROLE_CODE_DEALLOC = 9,
	/* an object gets its first reference (_Py_NewReference): a = the
	 * object. If its memory is a traced block, it takes the current
	 * traceback, as _PyTraceMalloc_NewReference does: an object reused
	 * from a free list is reported where it was last created. */
	TM_ROLE_NEWREF = 10,
	/* PyMem_SetAllocator(): a hook is being installed (tracemalloc
	 * starting); tell userspace at once, so it probes the hook now */
	TM_ROLE_SET_ALLOCATOR = 11,
};

/* tm_site.flags */
#define TM_SITE_HOOK 1 /* a hook's function (tracemalloc's, when it runs in the
			* target): what passes through it is the workload's
			* allocation; calls of the default allocators nested in it
			* are its own and ignored */

/* Where an operand lives at a probe site. */
enum tm_operand_type {
	TM_OPERAND_NONE = 0,
	TM_OPERAND_REG = 1,   /* a register */
	TM_OPERAND_CONST = 2, /* a constant the compiler folded in */
	TM_OPERAND_MEM = 3,   /* 8 bytes at register + displacement (a spill slot) */
};

#define TM_WIDTH_64 0
#define TM_WIDTH_32 1  /* the low 32 bits, zero-extended */
#define TM_WIDTH_S32 2 /* the low 32 bits, sign-extended */

struct tm_operand {
	__u8 type;  /* enum tm_operand_type */
	__u8 reg;   /* enum tm_reg: the register, or the base of MEM */
	__u8 width; /* TM_WIDTH_* */
	__u8 pad[5];
	__s64 value; /* CONST: the value; MEM: the displacement */
};

struct tm_site {
	__u8 role;      /* enum tm_role */
	__u8 kind;      /* enum tm_call_kind */
	__u8 family;    /* enum tm_family */
	__u8 guard_reg; /* enum tm_reg holding the allocator pointer; NONE: no guard */
	__u32 entry;    /* RETURN: the ENTRY site it completes */
	__s32 sp_delta; /* RETURN: stack pointer here minus at the ENTRY (8 for a uretprobe) */
	__u8 flags;     /* TM_SITE_* */
	__u8 pad[3];
	__u64 guard_value;        /* the default function's address: anything else is a hook */
	/* The live allocator-struct slot of this default function, and the
	 * default value: while it holds anything else (a hook), a call of the
	 * default function at depth 0 is not the workload's (tracemalloc's
	 * own bookkeeping), as tracemalloc counts only what passes through
	 * its hooks. 0: no slot (hook sites, Track/Untrack). */
	__u64 slot, slot_default;
	struct tm_operand a, b;   /* size, nelem/elsize or pointer/size operands */
	struct tm_operand result; /* RETURN: where the result is */
};

enum tm_family {
	TM_FAMILY_PYMALLOC = 1, /* object and mem domains (_PyObject_*) */
	TM_FAMILY_RAW = 2,      /* raw domain (_PyMem_Raw*) */
};

/* Every way an event can be lost or degraded. Shown to the user, always. */
enum tm_lost {
	TM_LOST_LIVE_FULL,       /* live-block map full: block not traced */
	TM_LOST_TRACEBACK_FULL,  /* traceback map full: block traced as <unknown> */
	TM_LOST_FRAME_UNREADABLE,/* a frame or code object could not be read */
	TM_LOST_EVENTS,          /* ring buffer full: traceback resolved late */
	TM_LOST_NESTING,         /* allocator calls nested deeper than tracked */
	TM_LOST_ABANDONED,       /* a call whose result never came (a path around the return site) */
	TM_LOST_POOL_UNREADABLE, /* pymalloc's pool state could not be read */
	TM_LOST_UNPROBED_HOOK,   /* a call through a hook tmtrace has not probed yet,
				  * recorded at the default function (the hook's own
				  * allocations may be counted with it) */
	TM_LOST_CODE_GENERATIONS,/* the code-generation map is full: a reused code
				  * address may be taken for its dead predecessor */
	TM_LOST_SAMPLES_FULL,    /* --sample: the pool-sample map is full: a refilled
				  * pool's blocks are not estimated */
	TM_LOST_LIVE_BUSY,       /* a live-table slot was taken by another CPU's
				  * probe at the same instant: that allocation,
				  * free or re-stamp missed */
	TM_LOST_COUNT,
};

#define TM_LOST_NAMES { "live_map_full", "traceback_map_full", \
	"unreadable_frames", "lost_events", "nesting_overflow", "abandoned_calls", \
	"unreadable_pools", "unprobed_hook_calls", "code_generations_full", \
	"sample_map_full", "live_slot_busy" }

/* One Python frame as BPF captures it. The fingerprint summarizes the code
 * object's identity (its filename, name and line-table pointers, first line
 * and length), so that a new code object at a dead one's address is a new
 * frame, not a stale one. */
/* tm_raw_frame.lasti holds a line number, not an offset: a frame under a
 * tracer on 3.8-3.10, whose line tracemalloc takes from f_lineno. */
#define TM_LASTI_IS_LINENO 0x40000000

struct tm_raw_frame {
	__u64 code;        /* PyCodeObject address; 0: unreadable (<unknown>) */
	__s32 lasti;       /* instruction offset in bytes, as PyCode_Addr2Line wants it */
	__u32 fingerprint;
};

/* The generation of a code address (how many code objects died there),
 * folded into the frame's fingerprint. */
static inline __u32 tm_fingerprint_with_generation(__u32 fingerprint, __u64 generation)
{
	return fingerprint ^ (__u32)(generation * 0x9e3779b1U);
}

/* The key of the traceback map. Only the first 8 + nframe_max * 16 bytes are
 * used: userspace sets the map's key size from -n at load time. nframe == 0
 * is the empty traceback (no Python thread state or no frame). */
struct tm_raw_stack {
	__u16 nframe;
	__u16 total_nframe; /* frames on the stack, if counted, else nframe */
	__u32 truncated;    /* 1: a frame follows the nframe kept (not read; total not counted) */
	struct tm_raw_frame frames[TM_MAX_NFRAME];
};

/* A live block: the value of the live table, keyed by the block's address.
 * seq and traceback_id come first: with the key before them they make the
 * 16 bytes --lazy-frees' sweep compares and swaps (struct tm_live_slot). */
struct tm_block {
	/* which allocation put it there (a running count, never 0 while the
	 * block is whole): --lazy-frees' userspace, finding the block free in
	 * its pool, never removes a newer allocation at the same address, and
	 * a thread re-stamping the object it just allocated knows the entry
	 * is still its own */
	__u32 seq;
	__u32 traceback_id;
	__u64 size;
	__u32 domain;
	__u32 flags; /* TM_BLOCK_* */
};

#define TM_BLOCK_PYMALLOC 1 /* pymalloc owns it (it came from a pool) */

/* The live table: live blocks keyed by address, in an array of slots
 * probed linearly from the address's home slot, at most TM_LIVE_PROBES
 * of them. An array map's lookups are inlined by the verifier and its
 * slots are read without a bucket lock or a free list: opcost measured a
 * preallocated hash map's insert or delete at 223 ns of work, this
 * table's at 166. A slot's key says what it holds:
 *   TM_SLOT_EMPTY    never used: no key is past it on its probe sequence;
 *   TM_SLOT_DELETED  used, free again (keys may lie past it);
 *   an address       a block, its value whole;
 *   address | BUSY   a block whose value a probe is changing: BPF takes the
 *                    key by compare-and-swap and puts one back after.
 * --lazy-frees' sweep never takes a slot (a probe cannot wait for it):
 * it deletes a block by one 16-byte compare-and-swap of the key, seq and
 * traceback_id it read, which fails if a probe holds or changed the slot.
 * User addresses never have bit 63 set. The table has twice the slots of
 * --max-blocks, rounded up to a power of two. */
struct tm_live_slot {
	__u64 key;
	struct tm_block blk;
};

#define TM_SLOT_EMPTY 0ULL
#define TM_SLOT_BUSY (1ULL << 63)
#define TM_SLOT_DELETED (~0ULL)
#define TM_LIVE_PROBES 16

static inline __u32 tm_live_home(__u64 ptr, __u32 mask)
{
	return (__u32)(((ptr >> 4) * 0x9e3779b97f4a7c15ULL) >> 32) & mask;
}

/* --lazy-frees: each allocation's record in the journal, at the slot of its
 * allocation number (seq & journal_mask), so that a sweep learns the blocks
 * allocated since the last one without reading the whole live map. seq is
 * written last: a slot is whole when it holds the seq userspace expects,
 * before and after reading it. */
struct tm_journal_entry {
	__u64 ptr;
	__u32 size; /* 0: nothing for a sweep (not from a pool, or not stored) */
	__u32 seq;
};

/* A block PyTraceMalloc_Track() put in a domain other than 0: the key of
 * the `tracked` map (tracemalloc keys traces by domain and address). */
struct tm_tracked_key {
	__u64 ptr;
	__u32 domain;
	__u32 pad;
};

/* --sample: the latest refill of a pymalloc pool, keyed by the pool's
 * address. The block allocate_from_new_pool() handed out, with the
 * traceback of the allocation that needed it, stands for the pool's live
 * blocks of its size class (userspace reads the pool's state to tell). */
struct tm_pool_sample {
	__u64 block;
	__u64 time; /* ktime of the refill: the newest sample of a pool wins */
	__u32 traceback_id;
	__u32 pad;
};

/* Running totals of one traceback, indexed by traceback id. */
struct tm_traceback_stats {
	__s64 size;
	__s64 count;
};

/* Ring-buffer events, told apart by their first word. */
#define TM_EVENT_TRACEBACK 1
#define TM_EVENT_CODE 2
#define TM_EVENT_ALLOCATOR_SET 3 /* just the type word: look at the slots now */

/* A traceback BPF has not seen before, sent so userspace resolves its
 * frames while their code objects are still alive. */
struct tm_new_traceback {
	__u32 type; /* TM_EVENT_TRACEBACK */
	__u32 id;
	struct tm_raw_stack stack; /* truncated to the used length on the wire */
};

/* Bytes of a code object's filename str object (header and data) and of
 * its line table that BPF copies when it first meets the code object. */
#define TM_CODE_FILENAME_BYTES 512
/* 64 KiB: the largest line table in CPython 3.11's stdlib is 44 KiB
 * (html/entities.py's module body); a module body is the code that dies
 * right after it ran, so it must fit (test/re_tests.py's 9.3 KiB did not,
 * with 8 KiB, and its 400 blocks went unresolved under load). */
#define TM_CODE_LINETABLE_BYTES 65536

/* What userspace needs to resolve a code object's lines, copied by BPF the
 * first time a new traceback holds it: a code object run once (a module
 * body during an import, exec'd code) dies long before userspace could read
 * it. A line table longer than the copy is read from the target. */
struct tm_code_event {
	__u32 type; /* TM_EVENT_CODE */
	__u32 fingerprint;
	__u64 code;
	__u64 filename_addr;
	__u32 firstlineno;
	__u32 filename_len;       /* bytes copied from filename_addr; 0: unreadable */
	__u32 linetable_len;      /* bytes of line table copied */
	__u32 linetable_total;    /* its ob_size */
	__u8 filename[TM_CODE_FILENAME_BYTES];
	__u8 linetable[TM_CODE_LINETABLE_BYTES]; /* truncated to linetable_len on the wire */
};

/* Per-process totals, in the BPF program's .bss (mmapped by userspace). */
struct tm_totals {
	__s64 current;
	__s64 peak;
	__u64 next_traceback_id;
	__u64 lost[TM_LOST_COUNT];
	__u64 allocs, frees, untracked_frees;
};

/* The code-object fingerprint, computed the same way on both sides: BPF
 * when it captures a frame, userspace to check that the code object it
 * resolves is still the one captured. */
static inline __u32 tm_code_fingerprint(__u64 filename, __u64 name, __u64 linetable,
					__u32 firstlineno, __u64 size)
{
	__u64 f = filename;

	f ^= name * 0x9e3779b97f4a7c15ULL;
	f ^= linetable * 0xc2b2ae3d27d4eb4fULL;
	f ^= (__u64)firstlineno << 17;
	f ^= size << 40;
	return (__u32)(f ^ (f >> 32));
}

/* A thread-local variable of the target, for the thread a probe runs on. */
#define TM_TLS_NONE 0
#define TM_TLS_FS_OFFSET 1 /* at fs base + offset (static TLS) */
#define TM_TLS_DTV 2       /* at dtv[module].pointer + offset, dtv at fs base + 8 */

struct tm_tls_var {
	__u32 mode;   /* TM_TLS_* */
	__u32 pad;
	__s64 offset;
	__u64 module; /* TM_TLS_DTV: the module id */
};

/* Structure offsets the BPF walker needs: filled from src/pyoffsets.h. */
struct tm_py_layout {
	__u32 frame_model;
	__u64 runtime_addr;          /* address of _PyRuntime in the target */
	__u32 runtime_interpreters_head;
	__u32 interp_next;
	__u32 interp_threads_head;
	__u32 tstate_next;
	__u32 tstate_thread_id;
	__u32 tstate_frame;
	__u32 cframe_current_frame;
	/* a thread with several thread states (sub-interpreters): tracemalloc
	 * takes the current one from 3.12 (_Py_tss_tstate, or the one whose
	 * _status word has tstate_active_bit), else the thread's first, in the
	 * main interpreter (_PyRuntime + runtime_interpreters_main) if any;
	 * ~0u: none */
	__u32 runtime_interpreters_main;
	__u32 tstate_status;
	__u32 tstate_active_bit;
	struct tm_tls_var tss_tstate; /* 3.12+: _Py_tss_tstate, the thread's current state */
	/* thread-state window: the fields a hit needs (thread id, frame,
	 * status, interpreter), read in one go at tstate + tstate_window_start */
	__u32 tstate_window_start, tstate_window_len;
	__u32 tstate_window_thread_id, tstate_window_frame; /* relative to the window */
	__u32 tstate_window_status, tstate_window_interp;   /* relative; status ~0u: none */
	/* frame window: read TM_FRAME_WINDOW bytes at frame + frame_window_start */
	__u32 frame_window_start, frame_window_len;
	__u32 frame_back, frame_code, frame_lasti, frame_owner; /* relative to the window */
	__u32 frame_trace, frame_lineno; /* relative; ~0u: not in this version */
	__s32 lasti_multiplier; /* f_lasti -> bytes: 1 (3.8, 3.9) or 2 (3.10) */
	__u32 owned_by_generator, owned_by_cstack;
	/* code window: read TM_CODE_WINDOW bytes at code + code_window_start */
	__u32 code_window_start, code_window_len;
	__u32 code_size, code_filename, code_name, code_firstlineno, code_linetable;
	__u32 code_firsttraceable; /* relative; ~0u: no incomplete-frame check */
	__u32 bytes_size, bytes_sval;  /* PyBytesObject: ob_size and data offsets */
	/* where an object's memory starts (tracemalloc's re-stamp): before the
	 * object by the GC header when tp_flags has gc_flag, and by two more
	 * words when it has any of preheader_flags (3.12+) */
	__u32 object_type, type_flags;
	__u64 gc_flag, preheader_flags;
	__u32 gc_header_size, preheader_size;
	__u32 code_adaptive;       /* absolute offset of the first instruction (3.11+) */
};

/* The start of pymalloc's pool_header (Objects/obmalloc.c, the same from
 * 3.8 to 3.13), as predict_block() reads it in one go. */
struct tm_pool_head {
	__u32 count;            /* ref.count: blocks in use */
	__u32 pad;
	__u64 freeblock;        /* the next block the fast path pops */
	__u64 nextpool, prevpool;
	__u32 arenaindex;
	__u32 szidx;            /* size class */
};

#define TM_SIZE_CLASSES 64      /* at most: 512 bytes in steps of 8 */

/* pymalloc's state, for predicting the block a fast path pops. */
struct tm_pymalloc_layout {
	__u64 usedpools;        /* address of usedpools[] in the target; 0: no prediction */
	__u32 small_threshold;  /* SMALL_REQUEST_THRESHOLD (512) */
	__u32 alignment_shift;  /* ALIGNMENT_SHIFT (4) */
	__u32 pool_size;        /* POOL_SIZE: 4 KiB up to 3.9, 16 KiB from 3.10 */
	/* 3.12+, when usedpools is 0: the calling thread's interpreter's
	 * usedpools[] (the interpreter from the thread-state window). 12: at
	 * interp + interp_obmalloc (the main interpreter's when feature_flags
	 * has use_main_obmalloc); 13: at *(interp + interp_obmalloc) +
	 * obmalloc_used; 0: no prediction */
	__u32 per_interp;
	__u32 interp_obmalloc, obmalloc_used, interp_feature_flags;
	__u32 pad;
	__u64 use_main_obmalloc;
};

/* Read-only configuration, set before load. */
struct tm_config {
	__u32 tgid;
	__u32 nframe;       /* frames kept per traceback, 1..TM_MAX_NFRAME */
	__u32 count_all_frames;
	__u32 max_tracebacks;
	__u32 nsites;
	__u32 empty_probes; /* benchmark floor: every probe returns at once */
	__u32 sample;       /* --sample: pool refills are samples (pool_samples) */
	__u32 code_deaths_probed; /* a dead code object's address reuse is seen */
	/* --lazy-frees: pymalloc's frees are not probed; userspace removes the
	 * blocks it finds free in their pools, so BPF never writes a live
	 * block in place (see store_block) */
	__u32 lazy_frees;
	__u32 journal_mask; /* --lazy-frees: journal entries - 1 (a power of two) */
	/* every object creation is probed: the one right after an allocation
	 * is that allocation's object (see restamp()) */
	__u32 every_creation_probed;
	__u32 live_mask;    /* the live table's slots - 1 */
	__u64 abandon_ns;   /* a pending call older than this was abandoned */
	struct tm_py_layout py;
	struct tm_pymalloc_layout pymalloc;
};

#endif
