#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "loader.h"
#include "tmtrace.skel.h"

struct loader {
	struct tmtrace_bpf *skel;
	struct bpf_link **links;
	int nlinks;
	uint32_t nframe;
	uint32_t max_tracebacks;
	uint64_t max_blocks;
	size_t key_size;
	struct tm_traceback_stats *stats; /* mmapped traceback_stats */
	size_t stats_len;
	struct ring_buffer *rb;
	loader_traceback_fn event_fn;
	void *event_ctx;
	char attach_path[128];
};

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
	uint32_t fo[] = { o->frame_back, o->frame_code, o->frame_lasti, o->frame_owner };
	uint32_t fw[] = { 8, 8, o->frame_model == PY_FRAMES_FRAMEOBJECT ? 4 : 8, 1 };
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

	window_of(fo, 4, fw, &py->frame_window_start, &py->frame_window_len);
	window_of(co, 6, cw, &py->code_window_start, &py->code_window_len);
	if (py->frame_window_len >= TM_FRAME_WINDOW || py->code_window_len >= TM_CODE_WINDOW) {
		snprintf(why, whylen, "CPython %s: frame or code layout too wide for the BPF walker",
			 t->version);
		return -ENOTSUP;
	}
	py->frame_back = rel(o->frame_back, py->frame_window_start);
	py->frame_code = rel(o->frame_code, py->frame_window_start);
	py->frame_lasti = rel(o->frame_lasti, py->frame_window_start);
	py->frame_owner = rel(o->frame_owner, py->frame_window_start);
	if (py->frame_owner == ~0u)
		py->frame_owner = 0;
	py->lasti_multiplier = (t->minor == 10) ? 2 : 1;
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

int loader_open(const struct py_target *t, const struct loader_options *opt, struct loader **out,
		char *why, size_t whylen)
{
	struct loader *l = calloc(1, sizeof(*l));
	struct tm_config *cfg;
	int err;

	if (!l)
		return -ENOMEM;
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
	err = fill_layout(t, &cfg->py, why, whylen);
	if (err)
		goto fail;

	bpf_map__set_max_entries(l->skel->maps.live, (uint32_t)opt->max_blocks);
	bpf_map__set_key_size(l->skel->maps.traceback_ids, (uint32_t)l->key_size);
	bpf_map__set_max_entries(l->skel->maps.traceback_ids, opt->max_tracebacks);
	bpf_map__set_max_entries(l->skel->maps.traceback_stats, opt->max_tracebacks);
	bpf_map__set_map_flags(l->skel->maps.traceback_stats, BPF_F_MMAPABLE);

	err = tmtrace_bpf__load(l->skel);
	if (err) {
		snprintf(why, whylen, "cannot load the BPF program: %s%s", strerror(-err),
			 err == -ENOMEM ? " (try a smaller --max-blocks)" : "");
		goto fail;
	}
	l->stats_len = (size_t)opt->max_tracebacks * sizeof(struct tm_traceback_stats);
	l->stats = mmap(NULL, l->stats_len, PROT_READ, MAP_SHARED,
			bpf_map__fd(l->skel->maps.traceback_stats), 0);
	if (l->stats == MAP_FAILED) {
		err = -errno;
		l->stats = NULL;
		snprintf(why, whylen, "cannot map the traceback statistics: %s", strerror(-err));
		goto fail;
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

	/* Each probe is a perf event fd (libbpf 1.1 has no uprobe_multi). */
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

static int attach_one(struct loader *l, const char *path, const struct probe_site *s, bool ret)
{
	LIBBPF_OPTS(bpf_uprobe_opts, opts, .retprobe = ret,
		    .bpf_cookie = TM_COOKIE(s->kind, s->family, s->reg_a, s->reg_b));
	struct bpf_program *prog = ret ? l->skel->progs.alloc_return : l->skel->progs.alloc_enter;
	struct bpf_link *link;

	link = bpf_program__attach_uprobe_opts(prog, (pid_t)l->skel->rodata->cfg.tgid, path,
					       s->file_offset, &opts);
	if (!link)
		return -errno;
	l->links[l->nlinks++] = link;
	return 0;
}

int loader_attach(struct loader *l, const struct probe_site *sites, int nsites, char *why, size_t whylen)
{
	int err = 0;

	l->links = calloc((size_t)nsites * 2 + 1, sizeof(*l->links));
	if (!l->links)
		return -ENOMEM;
	raise_nofile(nsites * 2);
	for (int i = 0; i < nsites && !err; i++) {
		err = attach_one(l, l->attach_path, &sites[i], false);
		if (!err && sites[i].retprobe)
			err = attach_one(l, l->attach_path, &sites[i], true);
		if (err)
			snprintf(why, whylen, "cannot attach a uprobe to %s+0x%x (%s): %s",
				 sites[i].function->name, sites[i].offset_in_function, l->attach_path,
				 strerror(-err));
	}
	if (err) {
		/* all or nothing: a half-probed target would give wrong figures */
		destroy_all_links(l->links, l->nlinks);
		l->nlinks = 0;
	}
	return err;
}

void loader_set_attach_path(struct loader *l, const char *path)
{
	snprintf(l->attach_path, sizeof(l->attach_path), "%s", path);
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
	destroy_all_links(l->links, l->nlinks);
	free(l->links);
	if (l->stats)
		munmap(l->stats, l->stats_len);
	tmtrace_bpf__destroy(l->skel);
	free(l);
}

int loader_probe_count(const struct loader *l)
{
	return l->nlinks;
}

uint64_t loader_map_memory(const struct loader *l)
{
	/* A preallocated hash map element: a header of about 48 bytes (hash
	 * node, hash, lock-free list) plus key and value rounded to 8, and an
	 * 8-byte bucket per entry rounded up to a power of two. */
	uint64_t buckets = 1;
	uint64_t live, ids, stats;

	while (buckets < l->max_blocks)
		buckets <<= 1;
	live = l->max_blocks * (48 + 8 + sizeof(struct tm_block)) + buckets * 8;
	buckets = 1;
	while (buckets < l->max_tracebacks)
		buckets <<= 1;
	ids = (uint64_t)l->max_tracebacks * (48 + ((l->key_size + 7) & ~7ULL) + 8) + buckets * 8;
	stats = (uint64_t)l->max_tracebacks * sizeof(struct tm_traceback_stats);
	return live + ids + stats + (1 << 20) /* ring buffer */;
}

const struct tm_totals *loader_totals(const struct loader *l)
{
	return &l->skel->bss->totals;
}

const struct tm_traceback_stats *loader_traceback_stats(const struct loader *l, uint32_t id)
{
	return id < l->max_tracebacks ? &l->stats[id] : NULL;
}

uint32_t loader_traceback_limit(const struct loader *l)
{
	return l->max_tracebacks;
}

static int on_event(void *ctx, void *data, size_t len)
{
	struct loader *l = ctx;
	struct tm_new_traceback ev;

	memset(&ev, 0, sizeof(ev));
	if (len < offsetof(struct tm_new_traceback, stack.frames))
		return 0;
	memcpy(&ev, data, len < sizeof(ev) ? len : sizeof(ev));
	return l->event_fn(l->event_ctx, ev.id, &ev.stack);
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

int loader_each_block(struct loader *l, loader_block_fn fn, void *ctx)
{
	int fd = bpf_map__fd(l->skel->maps.live);
	uint64_t key, next, *prev = NULL;
	struct tm_block b;
	int err;

	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		if (bpf_map_lookup_elem(fd, &next, &b) == 0) {
			err = fn(ctx, next, &b);
			if (err)
				return err;
		}
		key = next;
		prev = &key;
	}
	return 0;
}
