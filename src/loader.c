#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "loader.h"
#include "tlsvar.h"
#include "tmtrace.skel.h"

/* Blocks PyTraceMalloc_Track() may keep in domains other than 0, and code
 * addresses whose deaths are remembered; both maps allocate on use. */
#define TRACKED_MAX 65536
#define CODE_GENERATIONS_MAX 65536

/* Two links (entries, uretprobes) at attach time and for each hook probed later. */
/* uprobe_multi links: an entry and a return link for the target and for
 * each batch of hook sites, an entry link for each module */
#define LOADER_MAX_LINKS (2 + 2 * TM_MAX_HOOKS + 2 * PLAN_MAX_MODULES)
/* site map room for the modules loaded after attaching */
#define LATE_MODULE_SITES 1024

/* A walk over the live table maps it a window at a time: the pages of a
 * mapping count in tmtrace's RSS (all of them at once: the kernel maps a
 * BPF array's pages when it is mapped), and the whole table of a million
 * blocks is 64 MiB of kernel memory already counted once. --lazy-frees'
 * sweep forgets blocks all over the table: it queues them, and they go in
 * the table's order, a window mapped at a time (mapped per block, a window
 * made test_lazy's churn run 10 s instead of 4 s, its sweeps falling
 * behind; the whole table mapped during a sweep put tmtrace's peak RSS at
 * 106 MiB instead of 42). */
#define LIVE_WINDOW_SLOTS 32768 /* 1 MiB */
#define LIVE_WINDOWS 8

struct forget_request {
	uint32_t home; /* the block's home slot: the queue is sorted by it */
	uint32_t seq;
	uint64_t ptr;
};

struct live_window {
	uint64_t number; /* first slot / LIVE_WINDOW_SLOTS */
	struct tm_live_slot *map;
	size_t len;
};

struct loader {
	struct tmtrace_bpf *skel;
	bool multi;               /* uprobe_multi links (kernel 6.6+) */
	int multi_fds[LOADER_MAX_LINKS]; /* entry and uretprobe links, per batch of sites */
	int nmulti;
	int nattached;            /* sites [0, nattached) have probes */
	uint32_t site_capacity;
	struct bpf_link **links;  /* perf-event fallback: one per probe */
	int nlinks;
	int nprobes;
	uint32_t nframe;
	uint32_t max_tracebacks;
	uint64_t max_blocks;
	uint64_t live_slots; /* the live table's, a power of two */
	struct live_window live_windows[LIVE_WINDOWS]; /* loader_live_slot() */
	struct forget_request *forgets; /* --lazy-frees: queued by a sweep */
	size_t nforgets, forgets_cap;
	uint64_t max_samples;     /* --sample's pool_samples capacity; 0: exact mode */
	uint32_t ncpus;           /* possible CPUs: one code-event slot each */
	size_t key_size;
	struct tm_traceback_stats *stats; /* mmapped traceback_stats */
	size_t stats_len;
	const struct tm_journal_entry *journal; /* --lazy-frees: mmapped journal */
	uint32_t journal_entries; /* a power of two; 0 outside --lazy-frees */
	struct ring_buffer *rb;
	loader_traceback_fn event_fn;
	loader_code_fn code_fn;
	bool allocator_set; /* PyMem_SetAllocator() ran since last asked */
	void *event_ctx;
};

static void release_live(struct loader *l);

/* The kernel ABI of BPF_LINK_CREATE for uprobe_multi (6.6+), which
 * Debian's libbpf 1.1 predates: one link for any number of probe sites, so
 * attaching and detaching cost one step instead of one per site (the
 * kernel serializes and waits on each perf-event uprobe's removal). */
#define TM_BPF_TRACE_UPROBE_MULTI 48
#define TM_BPF_F_UPROBE_MULTI_RETURN 1

struct tm_uprobe_multi_attr {
	__u32 prog_fd;
	__u32 target_fd;
	__u32 attach_type;
	__u32 flags;
	__u64 path;
	__u64 offsets;
	__u64 ref_ctr_offsets;
	__u64 cookies;
	__u32 cnt;
	__u32 multi_flags;
	__u32 pid;
	__u8 rest[64]; /* the rest of union bpf_attr, zero */
};

static size_t journal_len(const struct loader *l)
{
	return (size_t)l->journal_entries * sizeof(struct tm_journal_entry);
}

static int silent_print(enum libbpf_print_level level, const char *fmt, va_list args)
{
	/* libbpf's own chatter would break the "nothing on stderr before the
	 * attached line" promise; tmtrace reports failures itself. */
	if (level == LIBBPF_WARN && getenv("TMTRACE_DEBUG_LIBBPF"))
		return vfprintf(stderr, fmt, args);
	return 0;
}

static void window_of(const uint32_t *offs, int n, const uint32_t *widths, uint32_t *start, uint32_t *len)
{
	uint32_t lo = UINT32_MAX, hi = 0;

	for (int i = 0; i < n; i++) {
		if (offs[i] == PYOFF_NONE)
			continue;
		if (offs[i] < lo)
			lo = offs[i];
		if (offs[i] + widths[i] > hi)
			hi = offs[i] + widths[i];
	}
	*start = lo;
	*len = hi - lo;
}

static uint32_t rel(uint32_t off, uint32_t start)
{
	return off == PYOFF_NONE ? ~0u : off - start;
}

/* The BPF layout of this version: the offsets, as windows it reads in one
 * go out of a frame and out of a code object. */
static int fill_layout(const struct py_target *t, struct tm_py_layout *py, char *why, size_t whylen)
{
	const struct py_offsets *o = t->offsets;
	uint32_t fo[] = { o->frame_back, o->frame_code, o->frame_lasti, o->frame_owner, o->frame_trace,
			  o->frame_lineno };
	uint32_t fw[] = { 8, 8, o->frame_model == PY_FRAMES_FRAMEOBJECT ? 4 : 8, 1, 8, 4 };
	uint32_t co[] = { o->varobject_size, o->code_filename, o->code_name, o->code_firstlineno,
			  o->code_linetable, o->code_firsttraceable };
	uint32_t cw[] = { 8, 8, 8, 4, 8, 4 };

	memset(py, 0, sizeof(*py));
	py->frame_model = o->frame_model;
	py->runtime_addr = t->runtime_addr;
	py->runtime_interpreters_head = o->runtime_interpreters_head;
	py->interp_next = o->interp_next;
	py->interp_threads_head = o->interp_threads_head;
	py->tstate_next = o->tstate_next;
	py->tstate_thread_id = o->tstate_thread_id;
	py->tstate_frame = o->tstate_frame;
	py->cframe_current_frame = o->cframe_current_frame;
	py->runtime_interpreters_main = o->runtime_interpreters_main;
	py->tstate_status = o->tstate_status == PYOFF_NONE ? ~0u : o->tstate_status;
	py->tstate_active_bit = o->tstate_active_bit;
	if (t->minor >= 12) {
		struct x86_code code;

		/* optional: without it, the active bit picks among a thread's states */
		if (x86_code_open(&code, t->elf) == 0) {
			tlsvar_find(&code, t->elf, t->pid, t->bias, "PyThreadState_Get", &py->tss_tstate);
			x86_code_close(&code);
		}
	}

	uint32_t to[] = { o->tstate_thread_id, o->tstate_frame, o->tstate_status, o->tstate_interp };
	uint32_t tw[] = { 8, 8, 4, 8 };

	window_of(to, 4, tw, &py->tstate_window_start, &py->tstate_window_len);
	window_of(fo, 6, fw, &py->frame_window_start, &py->frame_window_len);
	window_of(co, 6, cw, &py->code_window_start, &py->code_window_len);
	if (py->frame_window_len >= TM_FRAME_WINDOW || py->code_window_len >= TM_CODE_WINDOW ||
	    py->tstate_window_len >= TM_TSTATE_WINDOW) {
		snprintf(why, whylen, "CPython %s: frame, code or thread-state layout too wide for the BPF walker",
			 t->version);
		return -ENOTSUP;
	}
	py->tstate_window_thread_id = rel(o->tstate_thread_id, py->tstate_window_start);
	py->tstate_window_frame = rel(o->tstate_frame, py->tstate_window_start);
	py->tstate_window_status = rel(o->tstate_status, py->tstate_window_start);
	py->tstate_window_interp = rel(o->tstate_interp, py->tstate_window_start);
	py->frame_back = rel(o->frame_back, py->frame_window_start);
	py->frame_code = rel(o->frame_code, py->frame_window_start);
	py->frame_lasti = rel(o->frame_lasti, py->frame_window_start);
	py->frame_owner = rel(o->frame_owner, py->frame_window_start);
	py->frame_trace = rel(o->frame_trace, py->frame_window_start);
	py->frame_lineno = rel(o->frame_lineno, py->frame_window_start);
	if (py->frame_owner == ~0u)
		py->frame_owner = 0;
	py->lasti_multiplier = (t->minor == 10) ? 2 : 1;
	py->bytes_size = o->varobject_size;
	py->bytes_sval = o->bytes_sval;
	/* _PyType_PreHeaderSize(): Py_TPFLAGS_HAVE_GC (1 << 14) adds
	 * sizeof(PyGC_Head); from 3.12 Py_TPFLAGS_MANAGED_DICT |
	 * Py_TPFLAGS_MANAGED_WEAKREF (0x18) add two words. 3.11 has a managed
	 * dict pre-header too, but its tracemalloc does not count it: it looks
	 * the object up at op - sizeof(PyGC_Head), and so does tmtrace. */
	py->object_type = o->object_type;
	py->type_flags = o->type_flags;
	py->gc_flag = 1ULL << 14;
	py->gc_header_size = 16;
	py->preheader_flags = t->minor >= 12 ? 0x18 : 0;
	py->preheader_size = 16;
	py->owned_by_generator = o->frame_owned_by_generator;
	py->owned_by_cstack = o->frame_owned_by_cstack;
	py->code_size = rel(o->varobject_size, py->code_window_start);
	py->code_filename = rel(o->code_filename, py->code_window_start);
	py->code_name = rel(o->code_name, py->code_window_start);
	py->code_firstlineno = rel(o->code_firstlineno, py->code_window_start);
	py->code_linetable = rel(o->code_linetable, py->code_window_start);
	py->code_firsttraceable = rel(o->code_firsttraceable, py->code_window_start);
	py->code_adaptive = o->code_adaptive == PYOFF_NONE ? 0 : o->code_adaptive;
	return 0;
}

static bool kernel_has_uprobe_multi(void)
{
	/* 6.6 added it; an older kernel rejects the attach type at load */
	struct utsname u;
	int major = 0, minor = 0;

	if (getenv("TMTRACE_NO_UPROBE_MULTI"))
		return false;
	if (uname(&u) || sscanf(u.release, "%d.%d", &major, &minor) != 2)
		return false;
	return major > 6 || (major == 6 && minor >= 6);
}

static int fill_sites(struct loader *l, const struct probe_plan *plan, int first)
{
	if ((uint32_t)plan->nsites > l->site_capacity)
		return -E2BIG;
	for (int i = first; i < plan->nsites; i++) {
		__u32 key = (__u32)i;

		if (bpf_map_update_elem(bpf_map__fd(l->skel->maps.sites), &key, &plan->sites[i].bpf, BPF_ANY))
			return -errno;
	}
	return 0;
}

/* Once their probes are attached (not before: a hook BPF believes probed
 * makes it ignore the default functions' calls), the hook functions are
 * listed for hooked_now(). */
static void publish_hooks(struct loader *l, const struct probe_plan *plan)
{
	for (int i = 0; i < plan->nhooks && i < TM_MAX_HOOKS; i++)
		__atomic_store_n(&l->skel->bss->hook_fns[i], plan->hooks[i].vaddr + plan->bias, __ATOMIC_SEQ_CST);
	/* --sample probes no hook: the raw defaults count whatever calls them */
	for (int i = 0; i < plan->nfns && plan->mode != PLAN_SAMPLED; i++)
		if (plan->fns[i].hooked)
			__atomic_store_n(&l->skel->bss->hooks_seen, 1, __ATOMIC_SEQ_CST);
}

/* the pool header as BPF reads it */
_Static_assert(offsetof(struct tm_pool_head, count) == POOL_COUNT, "pool_header.ref.count");
_Static_assert(offsetof(struct tm_pool_head, freeblock) == POOL_FREEBLOCK, "pool_header.freeblock");
_Static_assert(offsetof(struct tm_pool_head, nextpool) == POOL_NEXTPOOL, "pool_header.nextpool");
_Static_assert(offsetof(struct tm_pool_head, prevpool) == POOL_PREVPOOL, "pool_header.prevpool");
_Static_assert(offsetof(struct tm_pool_head, szidx) == POOL_SZIDX, "pool_header.szidx");
_Static_assert(PYMALLOC_SIZE_CLASSES <= TM_SIZE_CLASSES, "size classes");
/* forget_one() swaps key, seq and traceback_id as one 16 bytes */
_Static_assert(offsetof(struct tm_live_slot, blk.seq) == 8 && offsetof(struct tm_live_slot, blk.traceback_id) == 12 &&
		       sizeof(struct tm_live_slot) % 16 == 0,
	       "live slot layout");

int loader_open(const struct py_target *t, const struct probe_plan *plan, const struct loader_options *opt,
		struct loader **out, char *why, size_t whylen)
{
	struct loader *l = calloc(1, sizeof(*l));
	struct tm_config *cfg;
	int err;

	if (!l)
		return -ENOMEM;
	for (int i = 0; i < LOADER_MAX_LINKS; i++)
		l->multi_fds[i] = -1;
	libbpf_set_print(silent_print);
	l->nframe = opt->nframe;
	l->max_blocks = opt->max_blocks;
	l->max_tracebacks = opt->max_tracebacks;
	l->key_size = offsetof(struct tm_raw_stack, frames) + opt->nframe * sizeof(struct tm_raw_frame);
	l->skel = tmtrace_bpf__open();
	if (!l->skel) {
		err = -errno;
		snprintf(why, whylen, "cannot open the BPF object: %s", strerror(-err));
		goto fail;
	}
	cfg = (struct tm_config *)&l->skel->rodata->cfg;
	cfg->tgid = (uint32_t)t->pid;
	cfg->nframe = opt->nframe;
	cfg->count_all_frames = opt->count_all_frames;
	cfg->max_tracebacks = opt->max_tracebacks;
	cfg->nsites = (uint32_t)plan->nsites;
	/* tests/bench: the same probes with a program that does nothing */
	cfg->empty_probes = getenv("TMTRACE_EMPTY_PROBES") && !strcmp(getenv("TMTRACE_EMPTY_PROBES"), "1");
	cfg->sample = opt->sample;
	cfg->code_deaths_probed = plan->code_deaths;
	cfg->lazy_frees = plan->mode == PLAN_LAZY_FREES;
	cfg->every_creation_probed = !plan->newrefs.fresh && !plan->newrefs.nproven;
	if (cfg->lazy_frees) {
		/* half the capacity: a sweep runs when half of that was
		 * written since the last (see lazyfree.c); the whole map is
		 * read only if the journal ran over meanwhile */
		const char *forced = getenv("TMTRACE_JOURNAL_ENTRIES"); /* tests: make it run over */
		bool use_forced = forced && atoi(forced) >= 16;
		uint64_t wanted = use_forced ? (uint64_t)atoi(forced) : opt->max_blocks / 2;

		/* a power of two, at least 4096 (16 when forced), at most 2^30 */
		l->journal_entries = use_forced ? 16 : 4096;
		while (l->journal_entries < wanted && l->journal_entries < (1u << 30))
			l->journal_entries <<= 1;
		cfg->journal_mask = l->journal_entries - 1;
	}
	l->max_samples = opt->sample ? opt->max_samples : 0;
	/* A call whose result has not come after this long took a path
	 * around its return site; far longer than any allocation takes. */
	cfg->abandon_ns = 2000000000ULL;
	cfg->pymalloc.usedpools = plan->pm.usedpools ? plan->pm.usedpools + t->bias : 0;
	cfg->pymalloc.small_threshold = PYMALLOC_SMALL_REQUEST_THRESHOLD;
	cfg->pymalloc.alignment_shift = PYMALLOC_ALIGNMENT_SHIFT;
	cfg->pymalloc.pool_size = t->minor >= 10 ? 16384 : 4096;
	if (plan->pm.per_interp) {
		const struct py_offsets *o = t->offsets;

		cfg->pymalloc.per_interp = t->minor == 12 ? 12 : 13;
		cfg->pymalloc.interp_obmalloc = o->interp_obmalloc;
		cfg->pymalloc.obmalloc_used = o->obmalloc_used == PYOFF_NONE ? 0 : o->obmalloc_used;
		cfg->pymalloc.interp_feature_flags = o->interp_feature_flags;
		cfg->pymalloc.use_main_obmalloc = o->rtflags_use_main_obmalloc;
	}
	err = fill_layout(t, &cfg->py, why, whylen);
	if (err)
		goto fail;
	/* room for the sites of hooks probed later (two each, at most), and of
	 * modules loaded later */
	l->site_capacity = (uint32_t)plan->nsites + 2 * TM_MAX_HOOKS + LATE_MODULE_SITES;
	bpf_map__set_max_entries(l->skel->maps.sites, l->site_capacity);
	bpf_map__set_max_entries(l->skel->maps.site_hits, l->site_capacity);
	bpf_map__set_max_entries(l->skel->maps.tracked, TRACKED_MAX);
	bpf_map__set_max_entries(l->skel->maps.code_generations, CODE_GENERATIONS_MAX);
	err = libbpf_num_possible_cpus();
	if (err < 0) {
		snprintf(why, whylen, "cannot count the possible CPUs: %s", strerror(-err));
		goto fail;
	}
	l->ncpus = (uint32_t)err;
	bpf_map__set_max_entries(l->skel->maps.code_scratch, l->ncpus);
	/* (a map cannot have 0 entries: exact mode keeps one unused) */
	bpf_map__set_max_entries(l->skel->maps.pool_samples, l->max_samples ? (uint32_t)l->max_samples : 1);
	l->multi = kernel_has_uprobe_multi();
	if (l->multi)
		bpf_program__set_expected_attach_type(l->skel->progs.tm_probe, TM_BPF_TRACE_UPROBE_MULTI);

	/* twice the slots of blocks, so probe sequences stay short */
	l->live_slots = 1024;
	while (l->live_slots < 2 * opt->max_blocks)
		l->live_slots <<= 1;
	cfg->live_mask = (uint32_t)(l->live_slots - 1);
	bpf_map__set_max_entries(l->skel->maps.live, (uint32_t)l->live_slots);
	bpf_map__set_key_size(l->skel->maps.traceback_ids, (uint32_t)l->key_size);
	bpf_map__set_max_entries(l->skel->maps.traceback_ids, opt->max_tracebacks);
	bpf_map__set_max_entries(l->skel->maps.traceback_stats, opt->max_tracebacks);
	bpf_map__set_map_flags(l->skel->maps.traceback_stats, BPF_F_MMAPABLE);
	bpf_map__set_max_entries(l->skel->maps.journal, l->journal_entries ? l->journal_entries : 1);

	err = tmtrace_bpf__load(l->skel);
	if (err) {
		snprintf(why, whylen, "cannot load the BPF program: %s%s", strerror(-err),
			 err == -ENOMEM ? " (try a smaller --max-blocks)" : "");
		goto fail;
	}
	err = fill_sites(l, plan, 0);
	if (err) {
		snprintf(why, whylen, "cannot fill the probe site map: %s", strerror(-err));
		goto fail;
	}
	l->stats_len = (size_t)opt->max_tracebacks * sizeof(struct tm_traceback_stats);
	/* writable: --lazy-frees takes the blocks it finds free off their
	 * tracebacks' totals, atomically as BPF does */
	l->stats = mmap(NULL, l->stats_len, PROT_READ | PROT_WRITE, MAP_SHARED,
			bpf_map__fd(l->skel->maps.traceback_stats), 0);
	if (l->stats == MAP_FAILED) {
		err = -errno;
		l->stats = NULL;
		snprintf(why, whylen, "cannot map the traceback statistics: %s", strerror(-err));
		goto fail;
	}
	if (l->journal_entries) {
		void *j = mmap(NULL, journal_len(l), PROT_READ, MAP_SHARED, bpf_map__fd(l->skel->maps.journal), 0);

		if (j == MAP_FAILED) {
			err = -errno;
			snprintf(why, whylen, "cannot map the allocation journal: %s", strerror(-err));
			goto fail;
		}
		l->journal = j;
	}
	*out = l;
	return 0;
fail:
	loader_close(l);
	return err;
}

static void raise_nofile(int needed)
{
	struct rlimit r;

	/* Without uprobe_multi each probe is a perf event fd. */
	if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < (rlim_t)needed + 64) {
		r.rlim_cur = (rlim_t)needed + 64;
		if (r.rlim_max < r.rlim_cur)
			r.rlim_max = r.rlim_cur;
		setrlimit(RLIMIT_NOFILE, &r);
	}
}

static void destroy_all_links(struct bpf_link **links, int n)
{
	/* Each removal waits for the kernel to retire its breakpoint (about
	 * 0.1 s here, serialized inside the kernel: threads do not help). */
	for (int i = 0; i < n; i++)
		bpf_link__destroy(links[i]);
}

/* Where a probe goes in the order of attaching: where calls end
 * (uretprobes, then the sites after a call that read its result) before
 * where they start. A call that starts while its end is not probed yet
 * would leave its entry pending, and everything the thread does after
 * looks nested in it (track and untrack calls ignored, say) until it is
 * dropped. An end without its start is ignored. */
static int attach_pass(const struct probe_site *s)
{
	if (s->uretprobe)
		return 0;
	return s->bpf.role == TM_ROLE_RETURN ? 1 : 2;
}

static int attach_multi(struct loader *l, const struct probe_plan *plan, int first, int module, const char *path,
			bool ret)
{
	int n = 0, fd;
	__u64 *offsets = calloc((size_t)plan->nsites + 1, sizeof(*offsets));
	__u64 *cookies = calloc((size_t)plan->nsites + 1, sizeof(*cookies));
	struct tm_uprobe_multi_attr attr;

	if (!offsets || !cookies) {
		free(offsets);
		free(cookies);
		return -ENOMEM;
	}
	/* the kernel registers them in this order */
	for (int pass = 0; pass < 3; pass++)
		for (int i = first; i < plan->nsites; i++) {
			const struct probe_site *s = &plan->sites[i];

			if (s->uretprobe != ret || s->module != module || attach_pass(s) != pass)
				continue;
			offsets[n] = s->file_offset;
			cookies[n] = (__u64)i;
			n++;
		}
	if (n == 0) {
		free(offsets);
		free(cookies);
		return 0;
	}
	memset(&attr, 0, sizeof(attr));
	attr.prog_fd = (__u32)bpf_program__fd(l->skel->progs.tm_probe);
	attr.attach_type = TM_BPF_TRACE_UPROBE_MULTI;
	attr.path = (__u64)(uintptr_t)path;
	attr.offsets = (__u64)(uintptr_t)offsets;
	attr.cookies = (__u64)(uintptr_t)cookies;
	attr.cnt = (__u32)n;
	attr.multi_flags = ret ? TM_BPF_F_UPROBE_MULTI_RETURN : 0;
	attr.pid = l->skel->rodata->cfg.tgid;
	fd = (int)syscall(__NR_bpf, BPF_LINK_CREATE, &attr, sizeof(attr));
	free(offsets);
	free(cookies);
	if (fd < 0)
		return -errno;
	if (l->nmulti == LOADER_MAX_LINKS) {
		close(fd);
		return -E2BIG;
	}
	l->multi_fds[l->nmulti++] = fd;
	l->nprobes += n;
	return 0;
}

static int attach_one(struct loader *l, const char *path, const struct probe_site *s, int index)
{
	LIBBPF_OPTS(bpf_uprobe_opts, opts, .retprobe = s->uretprobe, .bpf_cookie = (__u64)index);
	struct bpf_link *link;

	link = bpf_program__attach_uprobe_opts(l->skel->progs.tm_probe, (pid_t)l->skel->rodata->cfg.tgid,
					       path, s->file_offset, &opts);
	if (!link)
		return -errno;
	l->links[l->nlinks++] = link;
	l->nprobes++;
	return 0;
}

/* Attaches sites [first, nsites): one pair of uprobe_multi links, or one
 * perf event each. All or nothing. */
static int attach_range(struct loader *l, const struct probe_plan *plan, int first, const char *path, char *why,
			size_t whylen)
{
	int err = 0, links_before = l->nlinks, multi_before = l->nmulti, probes_before = l->nprobes;

	if (l->multi) {
		/* one pair of links per file: the target's, then each module's */
		const char *failed = path;

		for (int m = 0; m <= plan->nmodules && !err; m++) {
			failed = m ? plan->modules[m - 1].path : path;
			err = attach_multi(l, plan, first, m, failed, true);
			if (!err)
				err = attach_multi(l, plan, first, m, failed, false);
		}
		if (err) {
			snprintf(why, whylen, "cannot attach %d uprobes to %s: %s", plan->nsites - first, failed,
				 strerror(-err));
			while (l->nmulti > multi_before)
				close(l->multi_fds[--l->nmulti]);
			l->nprobes = probes_before;
			return err;
		}
		l->nattached = plan->nsites;
		publish_hooks(l, plan);
		return 0;
	}
	struct bpf_link **grown = realloc(l->links, ((size_t)plan->nsites + 1) * sizeof(*l->links));

	if (!grown)
		return -ENOMEM;
	l->links = grown;
	raise_nofile(plan->nsites);
	for (int pass = 0; pass < 3 && !err; pass++)
		for (int i = first; i < plan->nsites && !err; i++) {
			const struct probe_site *s = &plan->sites[i];
			const char *site_path = plan_site_path(plan, i, path);

			if (attach_pass(s) != pass)
				continue;
			err = attach_one(l, site_path, s, i);
			if (err)
				snprintf(why, whylen, "cannot attach a uprobe to %s (%s at 0x%lx): %s", s->what,
					 site_path, (unsigned long)s->file_offset, strerror(-err));
		}
	if (err) {
		/* all or nothing: a half-probed target would give wrong figures */
		destroy_all_links(l->links + links_before, l->nlinks - links_before);
		l->nlinks = links_before;
		l->nprobes = probes_before;
		return err;
	}
	l->nattached = plan->nsites;
	publish_hooks(l, plan);
	return 0;
}

int loader_attach(struct loader *l, const struct probe_plan *plan, const char *path, char *why, size_t whylen)
{
	return attach_range(l, plan, 0, path, why, whylen);
}

int loader_attach_new_sites(struct loader *l, const struct probe_plan *plan, const char *path, char *why,
			    size_t whylen)
{
	int first = l->nattached, err;

	if (first >= plan->nsites)
		return 0;
	err = fill_sites(l, plan, first);
	if (err) {
		snprintf(why, whylen, "cannot add probe sites: %s", strerror(-err));
		return err;
	}
	return attach_range(l, plan, first, path, why, whylen);
}

const char *loader_attach_mode(const struct loader *l)
{
	return l->multi ? "uprobe_multi" : "perf events";
}

int loader_fd_count(const struct loader *l)
{
	return l->multi ? l->nmulti : l->nlinks;
}

void loader_arm(struct loader *l)
{
	__atomic_store_n(&l->skel->bss->armed, 1, __ATOMIC_SEQ_CST);
}

void loader_close(struct loader *l)
{
	if (!l)
		return;
	if (l->rb)
		ring_buffer__free(l->rb);
	for (int i = 0; i < l->nmulti; i++)
		close(l->multi_fds[i]);
	destroy_all_links(l->links, l->nlinks);
	free(l->links);
	if (l->stats)
		munmap(l->stats, l->stats_len);
	if (l->journal)
		munmap((void *)l->journal, journal_len(l));
	release_live(l);
	free(l->forgets);
	tmtrace_bpf__destroy(l->skel);
	free(l);
}

int loader_probe_count(const struct loader *l)
{
	return l->nprobes;
}

uint64_t loader_map_memory(const struct loader *l)
{
	/* The live table: its slots. A preallocated hash map element (the
	 * tracebacks'): a header of about 48 bytes (hash node, hash,
	 * lock-free list) plus key and value rounded to 8, and an 8-byte
	 * bucket per entry rounded up to a power of two. */
	uint64_t buckets = 1;
	uint64_t live, ids, stats;

	live = l->live_slots * sizeof(struct tm_live_slot);
	while (buckets < l->max_tracebacks)
		buckets <<= 1;
	ids = (uint64_t)l->max_tracebacks * (48 + ((l->key_size + 7) & ~7ULL) + 8) + buckets * 8;
	stats = (uint64_t)l->max_tracebacks * sizeof(struct tm_traceback_stats);
	/* the ring buffer, the LRU map of code objects sent (65536) and the
	 * code-event slots */
	return live + ids + stats + (4 << 20) + 65536ULL * (48 + sizeof(struct tm_raw_frame) + 8) +
	       (uint64_t)l->ncpus * sizeof(struct tm_code_event) +
	       l->max_samples * (48 + 8 + sizeof(struct tm_pool_sample)) + /* allocated as used */
	       (uint64_t)l->journal_entries * sizeof(struct tm_journal_entry);
}

const struct tm_journal_entry *loader_journal(const struct loader *l, uint32_t *entries)
{
	*entries = l->journal_entries;
	return l->journal;
}

uint64_t loader_allocations_numbered(const struct loader *l)
{
	return __atomic_load_n(&l->skel->bss->block_seq, __ATOMIC_ACQUIRE);
}

const struct tm_totals *loader_totals(const struct loader *l)
{
	return &l->skel->bss->totals;
}

const struct tm_traceback_stats *loader_traceback_stats(const struct loader *l, uint32_t id)
{
	return id < l->max_tracebacks ? &l->stats[id] : NULL;
}

uint32_t loader_pool_size(const struct loader *l)
{
	return l->skel->rodata->cfg.pymalloc.pool_size;
}

uint32_t loader_traceback_limit(const struct loader *l)
{
	return l->max_tracebacks;
}

static int on_event(void *ctx, void *data, size_t len)
{
	struct loader *l = ctx;
	struct tm_new_traceback ev;
	__u32 type;

	if (len < sizeof(type))
		return 0;
	memcpy(&type, data, sizeof(type));
	if (type == TM_EVENT_ALLOCATOR_SET) {
		l->allocator_set = true;
		return 0;
	}
	if (type == TM_EVENT_CODE) {
		struct tm_code_event *code = calloc(1, sizeof(*code));
		int err;

		if (!code)
			return -ENOMEM;
		if (len >= offsetof(struct tm_code_event, linetable))
			memcpy(code, data, len < sizeof(*code) ? len : sizeof(*code));
		err = len >= offsetof(struct tm_code_event, linetable) && l->code_fn ? l->code_fn(l->event_ctx, code) : 0;
		free(code);
		return err;
	}
	memset(&ev, 0, sizeof(ev));
	if (type != TM_EVENT_TRACEBACK || len < offsetof(struct tm_new_traceback, stack.frames))
		return 0;
	memcpy(&ev, data, len < sizeof(ev) ? len : sizeof(ev));
	return l->event_fn(l->event_ctx, ev.id, &ev.stack);
}

bool loader_take_allocator_set(struct loader *l)
{
	bool was = l->allocator_set;

	l->allocator_set = false;
	return was;
}

void loader_on_code(struct loader *l, loader_code_fn fn)
{
	l->code_fn = fn;
}

int loader_events_fd(const struct loader *l)
{
	return l->rb ? ring_buffer__epoll_fd(l->rb) : -1;
}

int loader_consume(struct loader *l, loader_traceback_fn fn, void *ctx)
{
	l->event_fn = fn;
	l->event_ctx = ctx;
	if (!l->rb) {
		l->rb = ring_buffer__new(bpf_map__fd(l->skel->maps.events), on_event, l, NULL);
		if (!l->rb)
			return -errno;
	}
	return ring_buffer__consume(l->rb);
}

int loader_each_traceback(struct loader *l, loader_traceback_fn fn, void *ctx)
{
	int fd = bpf_map__fd(l->skel->maps.traceback_ids);
	struct tm_raw_stack key, next;
	void *prev = NULL;
	uint32_t id;
	int err;

	memset(&key, 0, sizeof(key));
	memset(&next, 0, sizeof(next));
	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		if (bpf_map_lookup_elem(fd, &next, &id) == 0) {
			err = fn(ctx, id, &next);
			if (err)
				return err;
		}
		key = next;
		prev = &key;
	}
	return 0;
}

/* A slot's key when it holds a block whose value is whole (a held slot is
 * in the middle of a change: its block is not reported this time). */
static bool slot_holds_block(uint64_t key)
{
	return key != TM_SLOT_EMPTY && !(key & TM_SLOT_BUSY);
}

/* Slot idx of the live table, through the window that holds it (mapped
 * now if it is not; NULL if it cannot be). */
static struct tm_live_slot *loader_live_slot(struct loader *l, uint64_t idx)
{
	uint64_t number = idx / LIVE_WINDOW_SLOTS;
	struct live_window *w = &l->live_windows[number % LIVE_WINDOWS];

	if (!w->map || w->number != number) {
		uint64_t first = number * LIVE_WINDOW_SLOTS;
		size_t len = (l->live_slots - first < LIVE_WINDOW_SLOTS ? l->live_slots - first : LIVE_WINDOW_SLOTS) *
			     sizeof(struct tm_live_slot);
		void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, bpf_map__fd(l->skel->maps.live),
			       (off_t)(first * sizeof(struct tm_live_slot)));

		if (m == MAP_FAILED)
			return NULL;
		if (w->map)
			munmap(w->map, w->len);
		w->map = m;
		w->len = len;
		w->number = number;
	}
	return &w->map[idx % LIVE_WINDOW_SLOTS];
}

/* Reads the live table a window at a time, handing its slots to fn(ctx,
 * first index, slots, count), each slot either a whole block or emptied.
 * Slots are read without taking them: BPF's live_write() says why seq is
 * read around the copy. */
static int each_live_batch(struct loader *l, int (*fn)(void *ctx, uint32_t first, struct tm_live_slot *slots,
						     uint32_t count),
			   void *ctx)
{
	struct tm_live_slot *copy = malloc(LIVE_WINDOW_SLOTS * sizeof(*copy));
	int err = 0;

	if (!copy)
		return -ENOMEM;
	for (uint64_t first = 0; first < l->live_slots && !err; first += LIVE_WINDOW_SLOTS) {
		const struct tm_live_slot *table = loader_live_slot(l, first);
		uint32_t n = 0;

		if (!table) {
			err = -errno;
			break;
		}
		for (uint64_t i = 0; i < LIVE_WINDOW_SLOTS && first + i < l->live_slots; i++) {
			const struct tm_live_slot *s = &table[i];
			uint64_t key = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
			bool whole = false;

			for (int tries = 0; slot_holds_block(key) && !whole && tries < 100; tries++) {
				uint32_t seq = __atomic_load_n(&s->blk.seq, __ATOMIC_ACQUIRE);
				uint64_t again;

				copy[n].blk = s->blk;
				__atomic_thread_fence(__ATOMIC_ACQUIRE);
				whole = seq && __atomic_load_n(&s->blk.seq, __ATOMIC_RELAXED) == seq &&
					copy[n].blk.seq == seq;
				again = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
				if (again != key) {
					whole = false;
					key = again;
				}
			}
			copy[n].key = whole ? key : TM_SLOT_EMPTY;
			n++;
		}
		err = fn(ctx, (uint32_t)first, copy, n);
	}
	free(copy);
	release_live(l);
	return err;
}

struct block_walk {
	loader_block_fn fn;
	void *ctx;
};

static int each_block_in_batch(void *ctx, uint32_t first, struct tm_live_slot *slots, uint32_t count)
{
	struct block_walk *w = ctx;

	(void)first;
	for (uint32_t i = 0; i < count; i++) {
		int err;

		if (!slot_holds_block(slots[i].key))
			continue;
		err = w->fn(w->ctx, slots[i].key, &slots[i].blk);
		if (err)
			return err;
	}
	return 0;
}

int loader_each_block(struct loader *l, loader_block_fn fn, void *ctx)
{
	struct block_walk w = { fn, ctx };
	int err = each_live_batch(l, each_block_in_batch, &w);

	return err ? err : loader_each_tracked(l, fn, ctx);
}

/* Compares the 16 bytes at p with (lo, hi) and, if equal, stores (new_lo,
 * new_hi), atomically (x86-64's lock cmpxchg16b; p 16-byte aligned). */
static bool cas16(void *p, uint64_t lo, uint64_t hi, uint64_t new_lo, uint64_t new_hi)
{
	bool ok;

	__asm__ __volatile__("lock cmpxchg16b %1\n\tsete %0"
			     : "=q"(ok), "+m"(*(volatile __int128 *)p), "+a"(lo), "+d"(hi)
			     : "b"(new_lo), "c"(new_hi)
			     : "memory", "cc");
	return ok;
}

int loader_forget_freed(struct loader *l, uint64_t ptr, uint32_t seq)
{
	if (l->nforgets == l->forgets_cap) {
		size_t cap = l->forgets_cap ? 2 * l->forgets_cap : 4096;
		struct forget_request *f = realloc(l->forgets, cap * sizeof(*f));

		if (!f)
			return -ENOMEM;
		l->forgets = f;
		l->forgets_cap = cap;
	}
	l->forgets[l->nforgets++] = (struct forget_request){
		.home = tm_live_home(ptr, (uint32_t)(l->live_slots - 1)), .seq = seq, .ptr = ptr
	};
	return 0;
}

/* One queued block: it leaves the table, and its traceback's totals, if
 * its slot still holds that allocation. 1 if it went. */
static int forget_one(struct loader *l, const struct forget_request *f)
{
	struct tm_totals *tot = &l->skel->bss->totals;
	uint32_t mask = (uint32_t)(l->live_slots - 1);

	for (uint32_t i = 0; i < TM_LIVE_PROBES; i++) {
		struct tm_live_slot *s = loader_live_slot(l, (f->home + i) & mask);

		if (!s)
			return -errno;
		/* a probe holding the slot, or changing it meanwhile, makes
		 * the swap fail: look again */
		for (int tries = 0; tries < 1000; tries++) {
			uint64_t key = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
			uint64_t hi, size;
			uint32_t traceback_id;

			if (key == TM_SLOT_EMPTY)
				return 0;
			if ((key & ~TM_SLOT_BUSY) != f->ptr)
				break; /* another block's slot: on along the sequence */
			if (key & TM_SLOT_BUSY) {
				sched_yield();
				continue;
			}
			hi = __atomic_load_n((uint64_t *)&s->blk.seq, __ATOMIC_ACQUIRE);
			if ((uint32_t)hi != f->seq)
				return 0; /* a newer allocation took the address */
			traceback_id = (uint32_t)(hi >> 32);
			size = __atomic_load_n(&s->blk.size, __ATOMIC_ACQUIRE);
			if (!cas16(s, key, hi, TM_SLOT_DELETED, hi))
				continue;
			if (traceback_id < l->max_tracebacks) {
				struct tm_traceback_stats *st = &l->stats[traceback_id];

				__atomic_fetch_sub(&st->size, (int64_t)size, __ATOMIC_RELAXED);
				__atomic_fetch_sub(&st->count, 1, __ATOMIC_RELAXED);
			}
			__atomic_fetch_sub(&tot->current, (int64_t)size, __ATOMIC_RELAXED);
			__atomic_fetch_add(&tot->frees, 1, __ATOMIC_RELAXED);
			return 1;
		}
	}
	return 0;
}

static int by_home(const void *a, const void *b)
{
	const struct forget_request *x = a, *y = b;

	return (x->home > y->home) - (x->home < y->home);
}

int64_t loader_forget_queued(struct loader *l)
{
	int64_t gone = 0;
	int err = 0;

	qsort(l->forgets, l->nforgets, sizeof(*l->forgets), by_home);
	for (size_t i = 0; i < l->nforgets && !err; i++) {
		int r = forget_one(l, &l->forgets[i]);

		if (r < 0)
			err = r;
		else
			gone += r;
	}
	l->nforgets = 0;
	release_live(l);
	return err ? err : gone;
}

static void release_live(struct loader *l)
{
	for (int i = 0; i < LIVE_WINDOWS; i++) {
		struct live_window *w = &l->live_windows[i];

		if (w->map)
			munmap(w->map, w->len);
		w->map = NULL;
	}
}

int loader_each_sample(struct loader *l, loader_sample_fn fn, void *ctx)
{
	int fd = bpf_map__fd(l->skel->maps.pool_samples);
	struct tm_pool_sample smp;
	uint64_t key, next;
	void *prev = NULL;
	int err;

	/* one per refilled pool (thousands, not millions): one at a time */
	while (l->max_samples && bpf_map_get_next_key(fd, prev, &next) == 0) {
		if (bpf_map_lookup_elem(fd, &next, &smp) == 0) {
			err = fn(ctx, next, &smp);
			if (err)
				return err;
		}
		key = next;
		prev = &key;
	}
	return 0;
}

void loader_drop_sample(struct loader *l, uint64_t pool, const struct tm_pool_sample *sample)
{
	int fd = bpf_map__fd(l->skel->maps.pool_samples);
	struct tm_pool_sample now;

	/* a refill between the look and the delete would be lost: a small
	 * race, and the pool's next refill brings it back */
	if (bpf_map_lookup_elem(fd, &pool, &now) == 0 && now.time == sample->time)
		bpf_map_delete_elem(fd, &pool);
}

int loader_each_tracked(struct loader *l, loader_block_fn fn, void *ctx)
{
	int fd = bpf_map__fd(l->skel->maps.tracked);
	struct tm_tracked_key key, next;
	struct tm_block b;
	void *prev = NULL;
	int err;

	/* few blocks (PyTraceMalloc_Track in other domains): one at a time */
	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		if (bpf_map_lookup_elem(fd, &next, &b) == 0) {
			err = fn(ctx, next.ptr, &b);
			if (err)
				return err;
		}
		key = next;
		prev = &key;
	}
	return 0;
}

int loader_code_generation(const struct loader *l, uint64_t code, uint64_t *generation)
{
	*generation = 0;
	if (!l->skel->bss->code_deaths)
		return 0;
	if (bpf_map_lookup_elem(bpf_map__fd(l->skel->maps.code_generations), &code, generation) && errno != ENOENT)
		return -errno;
	return 0;
}

void loader_reset_peak(struct loader *l)
{
	struct tm_totals *t = &l->skel->bss->totals;

	__atomic_store_n(&t->peak, __atomic_load_n(&t->current, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
}

/* Marks every slot that holds a block deleted (a slot taken meanwhile by
 * a probe hit that began before `armed` dropped keeps what it writes, as a
 * hash map's element inserted after the delete did). */
static int clear_batch(void *ctx, uint32_t first, struct tm_live_slot *slots, uint32_t count)
{
	struct loader *l = ctx;
	int fd = bpf_map__fd(l->skel->maps.live);
	const struct tm_live_slot deleted = { .key = TM_SLOT_DELETED };

	for (uint32_t i = 0; i < count; i++) {
		uint32_t idx = first + i;

		if (slot_holds_block(slots[i].key) && bpf_map_update_elem(fd, &idx, &deleted, BPF_ANY))
			return -errno;
	}
	return 0;
}

int loader_clear(struct loader *l)
{
	struct tm_totals *t = &l->skel->bss->totals;
	int fd, err;

	/* Not recording while clearing: what is allocated meanwhile is not
	 * traced, as with a clear_traces() that takes tracemalloc's lock. */
	__atomic_store_n(&l->skel->bss->armed, 0, __ATOMIC_SEQ_CST);
	err = each_live_batch(l, clear_batch, l);
	fd = bpf_map__fd(l->skel->maps.tracked);
	while (!err) {
		struct tm_tracked_key tk;

		if (bpf_map_get_next_key(fd, NULL, &tk))
			break;
		if (bpf_map_delete_elem(fd, &tk) && errno != ENOENT)
			err = -errno;
	}
	for (uint32_t id = 0; id < l->max_tracebacks && !err; id++) {
		struct tm_traceback_stats zero = { 0, 0 };

		if (l->stats[id].count || l->stats[id].size)
			if (bpf_map_update_elem(bpf_map__fd(l->skel->maps.traceback_stats), &id, &zero, BPF_ANY))
				err = -errno;
	}
	__atomic_store_n(&t->current, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&t->peak, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&l->skel->bss->armed, 1, __ATOMIC_SEQ_CST);
	return err;
}

int loader_site_hits(const struct loader *l, uint32_t site, uint64_t *hits)
{
	int ncpus = libbpf_num_possible_cpus();
	uint64_t *values;

	if (ncpus <= 0)
		return -EINVAL;
	values = calloc((size_t)ncpus, sizeof(*values));
	if (!values)
		return -ENOMEM;
	*hits = 0;
	if (bpf_map_lookup_elem(bpf_map__fd(l->skel->maps.site_hits), &site, values)) {
		free(values);
		return -errno;
	}
	for (int i = 0; i < ncpus; i++)
		*hits += values[i];
	free(values);
	return 0;
}
