#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include "plan.h"
#include "loader.h"
#include "pytarget.h"
#include "remote.h"
#include "resolver.h"
#include "lazyfree.h"
#include "modules.h"
#include "sampled.h"
#include "session.h"
#include "syscheck.h"

/* Tries (100 us apart) for a traceback's ring-buffer event to arrive. */
#define EVENT_WAIT_TRIES 10
/* How often the allocator slots are read for hooks installed meanwhile. */
#define HOOK_CHECK_INTERVAL 0.1
/* After a PyMem_SetAllocator() call: looks at the slots every 0.2 ms for 4 ms. */
#define HOOK_LOOKS 20
#define HOOK_LOOK_US 200

struct session {
	const struct session_options *opt;
	struct py_target target;
	struct probe_plan plan;
	struct loader *loader;
	struct resolver *resolver;
	struct srcline_cache *sources;
	struct tm_snapshot *first, *previous; /* --compare: aggregated, filtered */
	/* --sample: the last estimate's figures, and the highest total seen
	 * (the peak between reports is not known in this mode) */
	uint64_t sample_pools, sample_live;
	int64_t sampled_current, sampled_peak;
	/* --lazy-frees: the highest current seen after a sweep (BPF keeps no
	 * peak in this mode: its current counts blocks freed since the last
	 * sweep) */
	int64_t lazy_peak;
	struct lazyfree *lazy; /* --lazy-frees: the pymalloc blocks, pool by pool */
	struct module_watch *modules; /* extension modules that create objects */
	/* pools whose state could not be read at the last report (--sample,
	 * --lazy-frees) */
	uint64_t pools_unreadable;
	char why[1024];
};

static double now_monotonic(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_real(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(struct session *s, int err)
{
	fprintf(stderr, "tmtrace: %s\n", s->why[0] ? s->why : strerror(-err));
	return 1;
}

/* A step of attaching failed: because the target exited meanwhile, if it
 * did (its files and maps are gone then, which is all the step says). */
static int fail_attaching(struct session *s, int err)
{
	if (!py_target_exited(&s->target))
		return fail(s, err);
	fprintf(stderr, "tmtrace: process %d exited while tmtrace was attaching\n", (int)s->target.pid);
	return 1;
}

static int on_new_traceback(void *ctx, uint32_t id, const struct tm_raw_stack *stack)
{
	struct session *s = ctx;

	return resolver_add(s->resolver, id, stack) == -ENOMEM ? -ENOMEM : 0;
}

static int on_new_code(void *ctx, const struct tm_code_event *code)
{
	struct session *s = ctx;

	return resolver_add_code(s->resolver, code) == -ENOMEM ? -ENOMEM : 0;
}

static int code_generation(void *ctx, uint64_t code, uint64_t *generation)
{
	return loader_code_generation(ctx, code, generation);
}

/* Where object creations are probed (free-list objects' re-stamps). */
static void print_creation_notes(const struct probe_plan *p)
{
	const struct newref_set *n = &p->newrefs;
	int module_sites = 0;

	for (int i = 0; i < p->nmodules; i++)
		module_sites += p->modules[i].nsites;
	if (p->mode == PLAN_SAMPLED || (!n->fresh && !n->nproven && !n->relocated[0] && !p->nmodules))
		return;
	fprintf(stderr, "tmtrace: object creations: %d sites", n->count);
	if (n->relocated[0])
		fprintf(stderr, " (%d at the calls of %s%s)", n->callers, n->relocated,
			p->bodies_probed ? ", probed itself too" : "");
	if (n->fresh)
		fprintf(stderr, ", %d in functions that only create what they just allocated not probed", n->fresh);
	if (n->nproven)
		fprintf(stderr, ", %d of objects the same call allocated (proven on every path) not probed",
			n->nproven);
	if (p->nmodules)
		fprintf(stderr, "; %d sites in %d extension modules", module_sites, p->nmodules);
	fputc('\n', stderr);
}

static void print_attach_notes(struct session *s)
{
	const struct probe_plan *p = &s->plan;
	unsigned found = 0, probed = 0, covered = 0;
	char size[32];

	fprintf(stderr, "tmtrace: live-block capacity %" PRIu64 " blocks, %u tracebacks: about %s of kernel memory\n",
		s->opt->max_blocks, s->opt->max_tracebacks,
		tm_format_size(size, sizeof(size), (double)loader_map_memory(s->loader), false));
	for (int i = 0; i < p->nfns; i++) {
		found += p->found[i];
		probed += p->probed[i];
		covered += p->covered[i];
	}
	if (found) {
		char list[1024] = "";
		size_t used = 0;

		for (int i = 0; i < p->nfns && used < sizeof(list); i++)
			if (p->found[i])
				used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s %u/%u",
							 used ? ", " : "", p->fns[i].name, p->probed[i], p->found[i]);
		fprintf(stderr, "tmtrace: inlined allocator copies (PGO build): %u found, %u probed, %u not probed (%s)\n",
			found, probed, found - probed, list);
		if (covered)
			fprintf(stderr, "tmtrace: %u of the copies not probed always take the raw allocator, "
				"whose copies are probed\n", covered);
		if (found > probed + covered) {
			used = 0;
			list[0] = '\0';
			for (int v = 1; v < INLINED_VERDICTS && used < sizeof(list); v++)
				if (p->verdicts[v] && v != INLINED_RAW_ONLY)
					used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%u %s",
								 used ? ", " : "", p->verdicts[v], inlined_verdict_names[v]);
			fprintf(stderr, "tmtrace: WARNING: %u inlined copies are not probed (%s): allocations "
				"through them are not seen\n", found - probed - covered, list);
		}
	}
	if (p->no_predict[0])
		fprintf(stderr, "tmtrace: pymalloc blocks taken from uretprobes, not predicted: %s\n", p->no_predict);
	print_creation_notes(p);
	if (p->mode == PLAN_LAZY_FREES)
		fprintf(stderr, "tmtrace: --lazy-frees: pymalloc's frees are found in its pools at each report; "
			"the peak is the highest current a report saw\n");
	fprintf(stderr, "tmtrace: %d probes on %s, %d file descriptors\n", loader_probe_count(s->loader),
		loader_attach_mode(s->loader), loader_fd_count(s->loader));
	if (p->single_stepped) {
		fprintf(stderr, "tmtrace: warning: %d probe sites are single-stepped by the kernel (about 10 us per hit):",
			p->single_stepped);
		for (int i = 0, shown = 0; i < p->nsites && shown < 8; i++)
			if (!p->sites[i].emulated && !p->sites[i].uretprobe) {
				fprintf(stderr, " %s (%s);", p->sites[i].what, p->sites[i].insn);
				shown++;
			}
		fputc('\n', stderr);
	}
	for (int i = 0; i < p->nfns; i++)
		if (p->fns[i].hooked)
			fprintf(stderr, "tmtrace: warning: %s is hooked in the target (tracemalloc or "
				"PYTHONMALLOC=debug is active)\n", p->fns[i].wrapper);
	for (int i = 0; s->opt->verbose && i < p->nsites; i++) {
		const struct probe_site *site = &p->sites[i];
		static const char *roles[] = { "?", "predict", "entry", "return", "free", "newpool",
					       "realloc", "track", "untrack", "code-dealloc", "newref",
					       "set-allocator" };

		fprintf(stderr, "tmtrace:   site %d: 0x%lx %s%s %s: %s (%s)\n", i, (unsigned long)site->vaddr,
			site->uretprobe ? "uretprobe " : "", roles[site->bpf.role < 12 ? site->bpf.role : 0],
			site->emulated ? "emulated" : "single-stepped", site->what, site->insn);
	}
}

/* --verbose, at exit: what BPF counted, frees of blocks it never saw
 * included (a free that finds no block is how a live-table fault shows). */
static void print_totals(struct session *s)
{
	const struct tm_totals *t = loader_totals(s->loader);

	fprintf(stderr, "tmtrace: %" PRIu64 " allocations and %" PRIu64 " frees recorded, %" PRIu64
		" frees of blocks not traced\n", (uint64_t)t->allocs, (uint64_t)t->frees,
		(uint64_t)t->untracked_frees);
}

/* --verbose, at exit: how often each site fired, busiest first. */
static void print_site_hits(struct session *s)
{
	for (int i = 0; i < s->plan.nsites; i++) {
		uint64_t hits = 0;

		if (loader_site_hits(s->loader, (uint32_t)i, &hits) == 0 && hits)
			fprintf(stderr, "tmtrace:   site %d hit %" PRIu64 " times: %s\n", i, hits, s->plan.sites[i].what);
	}
}

/* The resolver's filenames, interned in one snapshot. The resolver interns
 * them too (one pointer per content), so a snapshot looks each up by
 * pointer and hashes its bytes once, not once per frame: with -n 25,
 * hashing a path for each frame of every traceback was most of a report's
 * time. Direct-mapped; a collision only costs an intern. */
#define NAME_CACHE_SIZE 256

struct name_cache {
	const char *from[NAME_CACHE_SIZE];
	const char *to[NAME_CACHE_SIZE];
};

static const char *snapshot_name(struct tm_snapshot *snap, struct name_cache *c, const char *name)
{
	size_t i = (size_t)(((uintptr_t)name * 0x9e3779b97f4a7c15ULL) >> 56) % NAME_CACHE_SIZE;

	if (c->from[i] != name) {
		const char *interned = tm_snapshot_intern(snap, name);

		if (!interned)
			return NULL;
		c->from[i] = name;
		c->to[i] = interned;
	}
	return c->to[i];
}

/* The resolved traceback of BPF id `id`, interned in `snap`; <unknown>
 * when BPF never reported it even after a walk of its map. */
static const struct tm_traceback *snapshot_traceback(struct session *s, struct tm_snapshot *snap,
						     struct name_cache *names, uint32_t id, bool *recovered)
{
	const struct resolved_traceback *rtb = resolver_get(s->resolver, id);
	struct tm_frame frames[TM_MAX_NFRAME];

	/* Interned since the last read of the ring buffer: its event (and the
	 * code objects' copies before it) is there, or about to be, as BPF
	 * writes it right after interning. Resolving it from the map instead
	 * would read code objects that may be dead by now. */
	for (int i = 0; !rtb && id && i < EVENT_WAIT_TRIES; i++) {
		if (i)
			usleep(100);
		loader_consume(s->loader, on_new_traceback, s);
		rtb = resolver_get(s->resolver, id);
	}
	if (!rtb && id && !*recovered && loader_totals(s->loader)->lost[TM_LOST_EVENTS]) {
		/* its ring-buffer event was lost: the map still has it */
		loader_each_traceback(s->loader, on_new_traceback, s);
		*recovered = true;
		rtb = resolver_get(s->resolver, id);
	}
	if (!rtb) {
		frames[0] = (struct tm_frame){ tm_snapshot_intern(snap, "<unknown>"), 0 };
		return frames[0].filename ? tm_snapshot_traceback(snap, frames, 1, 1) : NULL;
	}
	for (uint32_t i = 0; i < rtb->nframe; i++) {
		frames[i].filename = snapshot_name(snap, names, rtb->frames[i].filename);
		frames[i].lineno = rtb->frames[i].lineno;
		if (!frames[i].filename)
			return NULL;
	}
	return tm_snapshot_traceback(snap, frames, rtb->nframe, rtb->total_nframe);
}

/* tracemalloc.get_traced_memory(): BPF's running totals, or with --sample
 * the last estimate and the highest one seen. */
static void traced_memory(struct session *s, int64_t *current, int64_t *peak)
{
	const struct tm_totals *tot = loader_totals(s->loader);

	if (s->plan.mode == PLAN_SAMPLED) {
		*current = s->sampled_current;
		*peak = s->sampled_peak;
		return;
	}
	*current = __atomic_load_n(&tot->current, __ATOMIC_RELAXED);
	*peak = __atomic_load_n(&tot->peak, __ATOMIC_RELAXED);
	if (s->plan.mode == PLAN_LAZY_FREES) {
		if (*current > s->lazy_peak)
			s->lazy_peak = *current;
		*peak = s->lazy_peak;
	}
}

/* --lazy-frees: takes the pymalloc blocks freed since the last report out
 * of the live map, so that what follows counts only blocks in use. */
static void sweep_freed(struct session *s)
{
	struct lazyfree_sweep sw;
	double start = now_monotonic();
	int64_t current;
	int err;

	if (!s->lazy)
		return;
	err = lazyfree_sweep(s->lazy, s->loader, s->target.pid, &sw);
	s->pools_unreadable = sw.unsettled;
	if (err) {
		fprintf(stderr, "tmtrace: cannot look for freed blocks: %s\n", strerror(-err));
	} else if (s->opt->verbose) {
		char from[64];

		if (sw.whole_map)
			snprintf(from, sizeof(from), "the live map read whole");
		else
			snprintf(from, sizeof(from), "%" PRIu64 " new from the journal", sw.journal);
		fprintf(stderr, "tmtrace: %" PRIu64 " pymalloc blocks in %" PRIu64 " pools looked at in %.3f s: %" PRIu64
			" freed, %" PRIu64 " pools unsettled (%s)\n",
			sw.blocks, sw.pools, now_monotonic() - start, sw.freed, sw.unsettled, from);
	}
	/* a sweep between reports (the journal half full) sees a peak too */
	current = __atomic_load_n(&loader_totals(s->loader)->current, __ATOMIC_RELAXED);
	if (current > s->lazy_peak)
		s->lazy_peak = current;
}

/* tracemalloc.reset_peak() */
static void reset_peak(struct session *s)
{
	loader_reset_peak(s->loader);
	if (s->plan.mode == PLAN_LAZY_FREES) {
		/* the peak becomes the current, as swept now */
		sweep_freed(s);
		s->lazy_peak = __atomic_load_n(&loader_totals(s->loader)->current, __ATOMIC_RELAXED);
	}
}

static void fill_info(struct session *s, struct tm_snapshot *snap)
{
	struct tm_snapshot_info *info = tm_snapshot_info(snap);
	int64_t current, peak;

	info->pid = s->target.pid;
	snprintf(info->python, sizeof(info->python), "%s", s->target.version);
	info->time = now_real();
	traced_memory(s, &current, &peak);
	info->traced_current = current;
	info->traced_peak = peak;
}

struct sample_list {
	struct sampled_input *in;
	size_t n, cap;
};

static int collect_sample(void *ctx, uint64_t pool, const struct tm_pool_sample *sample)
{
	struct sample_list *l = ctx;

	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 256;
		struct sampled_input *grown = realloc(l->in, cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		l->in = grown;
		l->cap = cap;
	}
	l->in[l->n++] = (struct sampled_input){ .pool = pool, .sample = *sample };
	return 0;
}

/* --sample: pymalloc's estimated live blocks, one trace per traceback, and
 * the totals (raw blocks exact, pymalloc estimated). Pools that no longer
 * speak for their sample leave the map. */
static int add_sampled_traces(struct session *s, struct tm_snapshot *snap, struct name_cache *names,
			      bool *recovered)
{
	struct sample_list list = { 0 };
	struct sampled_estimate est;
	int err = loader_each_sample(s->loader, collect_sample, &list);

	if (!err)
		err = sampled_estimate(s->target.pid, loader_pool_size(s->loader), list.in, list.n, &est);
	if (err) {
		free(list.in);
		return err;
	}
	for (size_t i = 0; i < list.n; i++)
		if (list.in[i].drop)
			loader_drop_sample(s->loader, list.in[i].pool, &list.in[i].sample);
	free(list.in);
	for (size_t i = 0; i < est.nlines && !err; i++) {
		struct tm_trace trace = { .size = est.lines[i].size, .count = est.lines[i].count };

		trace.traceback = snapshot_traceback(s, snap, names, est.lines[i].traceback_id, recovered);
		err = trace.traceback ? tm_snapshot_add_trace(snap, &trace) : -ENOMEM;
	}
	s->sample_pools = est.pools;
	s->sample_live = est.live_samples;
	s->pools_unreadable = est.unreadable;
	s->sampled_current = __atomic_load_n(&loader_totals(s->loader)->current, __ATOMIC_RELAXED) +
			     (int64_t)est.bytes;
	if (s->sampled_current > s->sampled_peak)
		s->sampled_peak = s->sampled_current;
	sampled_estimate_free(&est);
	return err;
}

struct block_snapshot {
	struct session *s;
	struct tm_snapshot *snap;
	const struct tm_traceback **by_id;
	uint32_t limit;
	bool recovered;
	struct name_cache names;
};

static int add_block(void *ctx, uint64_t address, const struct tm_block *b)
{
	struct block_snapshot *bs = ctx;
	uint32_t id = b->traceback_id < bs->limit ? b->traceback_id : 0;
	struct tm_trace t = { .address = address, .size = b->size, .count = 1, .domain = b->domain };

	if (!bs->by_id[id])
		bs->by_id[id] = snapshot_traceback(bs->s, bs->snap, &bs->names, id, &bs->recovered);
	if (!bs->by_id[id])
		return -ENOMEM;
	t.traceback = bs->by_id[id];
	return tm_snapshot_add_trace(bs->snap, &t);
}

/* A snapshot of every live block, with its address: what -o and SIGUSR1
 * write, as tracemalloc.take_snapshot() would. */
static int write_snapshot(struct session *s, const char *path, bool swept)
{
	struct block_snapshot bs = { .s = s, .limit = loader_traceback_limit(s->loader) };
	size_t len = strlen(path);
	enum tm_file_format fmt = len >= 7 && !strcmp(path + len - 7, ".pickle") ? TM_FORMAT_PICKLE
										 : TM_FORMAT_TMTRACE;
	char why[512] = "";
	double start = now_monotonic(), collected;
	int err;

	loader_consume(s->loader, on_new_traceback, s);
	if (!swept)
		sweep_freed(s);
	bs.snap = tm_snapshot_new(s->opt->nframe);
	bs.by_id = calloc(bs.limit, sizeof(*bs.by_id));
	if (!bs.snap || !bs.by_id) {
		err = -ENOMEM;
		goto out;
	}
	err = loader_each_block(s->loader, add_block, &bs);
	if (!err && s->plan.mode == PLAN_SAMPLED)
		err = add_sampled_traces(s, bs.snap, &bs.names, &bs.recovered);
	collected = now_monotonic();
	if (!err) {
		fill_info(s, bs.snap);
		err = tm_snapshot_write(bs.snap, path, fmt, s->target.minor, why, sizeof(why));
	}
	if (!err && s->opt->verbose)
		fprintf(stderr, "tmtrace: snapshot of %zu blocks: taken in %.3f s, written in %.3f s\n",
			tm_snapshot_trace_count(bs.snap), collected - start, now_monotonic() - collected);
	if (err)
		fprintf(stderr, "tmtrace: cannot write snapshot %s: %s\n", path, why[0] ? why : strerror(-err));
out:
	free(bs.by_id);
	tm_snapshot_free(bs.snap);
	return err;
}

/* An aggregated snapshot: one trace per BPF traceback, from the running
 * per-traceback totals (no walk over live blocks needed). */
static int build_snapshot(struct session *s, struct tm_snapshot **out)
{
	const struct tm_totals *tot = loader_totals(s->loader);
	uint32_t limit = loader_traceback_limit(s->loader);
	uint64_t next = __atomic_load_n(&tot->next_traceback_id, __ATOMIC_RELAXED) + 1;
	struct tm_snapshot *snap = tm_snapshot_new(s->opt->nframe);
	/* blocks PyTraceMalloc_Track() put in other domains come after the
	 * aggregated traces, one trace each, with the same names */
	struct block_snapshot bs = { .s = s, .snap = snap, .limit = limit };
	int err = 0;

	if (!snap)
		return -ENOMEM;
	if (next > limit)
		next = limit;
	for (uint32_t id = 0; id < next && !err; id++) {
		const struct tm_traceback_stats *st = loader_traceback_stats(s->loader, id);
		struct tm_trace trace = { 0 };
		int64_t size, count;

		if (!st)
			break;
		size = __atomic_load_n(&st->size, __ATOMIC_RELAXED);
		count = __atomic_load_n(&st->count, __ATOMIC_RELAXED);
		if (count <= 0)
			continue;
		trace.traceback = snapshot_traceback(s, snap, &bs.names, id, &bs.recovered);
		if (!trace.traceback) {
			err = -ENOMEM;
			break;
		}
		trace.size = (uint64_t)size;
		trace.count = (uint64_t)count;
		err = tm_snapshot_add_trace(snap, &trace);
	}
	if (!err) {
		bs.by_id = calloc(limit, sizeof(*bs.by_id));
		err = bs.by_id ? loader_each_tracked(s->loader, add_block, &bs) : -ENOMEM;
		free(bs.by_id);
	}
	if (!err && s->plan.mode == PLAN_SAMPLED)
		err = add_sampled_traces(s, snap, &bs.names, &bs.recovered);
	if (!err && s->opt->filters.n) {
		struct tm_snapshot *filtered = tm_snapshot_filter(snap, s->opt->filters.f, s->opt->filters.n);

		tm_snapshot_free(snap);
		snap = filtered;
		if (!snap)
			return -ENOMEM;
	}
	if (err) {
		tm_snapshot_free(snap);
		return err;
	}
	fill_info(s, snap);
	*out = snap;
	return 0;
}

static int print_report(struct session *s)
{
	static const char *names[] = TM_LOST_NAMES;
	const struct tm_totals *tot = loader_totals(s->loader);
	struct lost_counter lost[TM_LOST_COUNT + 1];
	struct tm_statistics stats = { 0 };
	struct tm_statistic_diffs diffs = { 0 };
	struct tm_snapshot *snap, *base = NULL;
	struct report r = { 0 };
	double start = now_monotonic(), built, grouped;
	int err;

	sweep_freed(s);
	err = build_snapshot(s, &snap);
	if (err)
		return err;
	built = now_monotonic();
	if (s->opt->compare == COMPARE_FIRST)
		base = s->first ? s->first : snap;
	else if (s->opt->compare == COMPARE_PREVIOUS)
		base = s->previous ? s->previous : snap;
	err = base ? tm_snapshot_compare(snap, base, s->opt->key, s->opt->cumulative, &diffs)
		   : tm_snapshot_statistics(snap, s->opt->key, s->opt->cumulative, &stats);
	if (err) {
		tm_snapshot_free(snap);
		return err;
	}
	grouped = now_monotonic();
	for (int i = 0; i < TM_LOST_COUNT; i++)
		lost[i] = (struct lost_counter){ names[i], __atomic_load_n(&tot->lost[i], __ATOMIC_RELAXED) };
	lost[TM_LOST_COUNT] = (struct lost_counter){ "unresolved_frames", resolver_unresolved(s->resolver) };
	/* pools whose state could not be read at this report */
	lost[TM_LOST_POOL_UNREADABLE].value += s->pools_unreadable;
	r.out = stdout;
	r.format = s->opt->format;
	r.pid = s->target.pid;
	r.python_version = s->target.version;
	r.top = s->opt->top;
	r.key = s->opt->key;
	r.sources = s->sources;
	r.time = now_real();
	traced_memory(s, &r.current, &r.peak);
	if (s->plan.mode == PLAN_SAMPLED) {
		r.sampled = true;
		r.sample_pools = s->sample_pools;
		r.sample_live = s->sample_live;
	}
	r.stats = &stats;
	if (base) {
		r.diffs = &diffs;
		r.compared_with = s->opt->compare == COMPARE_FIRST ? "first snapshot" : "previous snapshot";
	}
	r.lost = lost;
	r.nlost = TM_LOST_COUNT + 1;
	srcline_refresh(s->sources);
	report_print(&r);
	if (s->opt->verbose)
		fprintf(stderr, "tmtrace: report of %zu traces: built in %.6f s, grouped in %.6f s, printed in %.6f s\n",
			tm_snapshot_trace_count(snap), built - start, grouped - built, now_monotonic() - grouped);
	tm_statistics_free(&stats);
	tm_statistic_diffs_free(&diffs);
	/* keep what later comparisons need */
	if (!s->first && s->opt->compare == COMPARE_FIRST) {
		s->first = snap;
	} else if (s->opt->compare == COMPARE_PREVIOUS) {
		tm_snapshot_free(s->previous);
		s->previous = snap;
	} else {
		tm_snapshot_free(snap);
	}
	if (s->opt->output)
		write_snapshot(s, s->opt->output, true); /* the report's sweep serves */
	return 0;
}

static int open_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGPIPE);
	sigaddset(set, SIGUSR1);
	sigaddset(set, SIGUSR2);
	if (sigprocmask(SIG_BLOCK, set, NULL))
		return -errno;
	return signalfd(-1, set, SFD_CLOEXEC | SFD_NONBLOCK);
}

enum { EV_RING = 1, EV_SIGNAL, EV_TARGET, EV_KEY };

/* SIGUSR1 and the `s` key: a snapshot now, to -o's file or
 * tmtrace-PID-TIME.tmt. */
static void snapshot_now(struct session *s)
{
	char name[128];
	const char *path = s->opt->output;

	if (!path) {
		snprintf(name, sizeof(name), "tmtrace-%d-%ld.tmt", (int)s->target.pid, (long)now_real());
		path = name;
	}
	if (write_snapshot(s, path, false) == 0)
		fprintf(stderr, "tmtrace: snapshot written to %s\n", path);
}

/* A key typed on the terminal: s(napshot), r(eset peak), c(lear), q(uit).
 * Returns true to quit. */
static bool on_key(struct session *s, char key)
{
	switch (key) {
	case 's':
		snapshot_now(s);
		break;
	case 'r':
		reset_peak(s);
		fprintf(stderr, "tmtrace: peak reset\n");
		break;
	case 'c':
		if (loader_clear(s->loader) == 0)
			fprintf(stderr, "tmtrace: traces cleared\n");
		break;
	case 'q':
		return true;
	}
	return false;
}

/* A hook installed in an allocator slot after attaching (tracemalloc.start()
 * in the target, on a binary without the symbols that let tmtrace probe
 * tracemalloc's hooks up front): probe it now. Until then its calls are
 * recorded at the default functions, and counted as unprobed_hook_calls. */
static void hook_not_probed(const struct alloc_function *f, int err)
{
	fprintf(stderr, "tmtrace: warning: a hook appeared in %s's slot at 0x%lx; cannot probe it: %s\n",
		f->wrapper, (unsigned long)f->live, strerror(-err));
}

static void check_hooks(struct session *s)
{
	struct probe_plan *p = &s->plan;
	int before = p->nsites;

	for (int i = 0; i < p->nfns; i++) {
		struct alloc_function *f = &p->fns[i];
		uint64_t live;

		if (remote_read_u64(s->target.pid, f->slot + p->bias, &live))
			continue;
		f->live = live - p->bias;
		f->hooked = f->live != f->vaddr;
	}
	plan_add_live_hooks(s->target.elf, p, hook_not_probed);
	if (p->nsites > before) {
		if (loader_attach_new_sites(s->loader, p, s->target.open_path, s->why, sizeof(s->why)))
			fprintf(stderr, "tmtrace: warning: %s\n", s->why);
		else
			fprintf(stderr, "tmtrace: allocator hooks appeared in the target (tracemalloc started?): "
				"%d more probes\n", p->nsites - before);
	}
}

/* Extension modules loaded since the last look that create objects: their
 * creations probed from now on. */
static void check_modules(struct session *s)
{
	struct probe_plan *p = &s->plan;
	int before = p->nsites, modules_before = p->nmodules;

	if (p->mode == PLAN_SAMPLED)
		return; /* no creation probed */
	int n = module_watch_poll(s->modules, &s->target, p, s->why, sizeof(s->why));

	if (n < 0) {
		fprintf(stderr, "tmtrace: warning: cannot plan a module loaded since attaching: %s\n", s->why);
		return;
	}
	if (p->nsites == before)
		return;
	if (loader_attach_new_sites(s->loader, p, s->target.open_path, s->why, sizeof(s->why))) {
		fprintf(stderr, "tmtrace: warning: %s\n", s->why);
		return;
	}
	for (int i = modules_before; i < p->nmodules; i++)
		fprintf(stderr, "tmtrace: %s was loaded after attaching: %d probes on its object creations from "
			"now on (objects it took from its free lists before keep their allocation's line)\n",
			p->modules[i].path, p->modules[i].nsites);
	if (p->nmodules == modules_before)
		fprintf(stderr, "tmtrace: %d more probes on object creations\n", p->nsites - before);
}

static int watch(int ep, int fd, int what)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)what };

	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}

static int event_loop(struct session *s)
{
	const struct session_options *opt = s->opt;
	double start = now_monotonic(), next_report = start + opt->interval, next_hook_check = start;
	sigset_t set;
	int sfd = open_signals(&set);
	int pidfd = (int)syscall(SYS_pidfd_open, s->target.pid, 0);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	long reports = 0;
	int err = 0;
	struct termios saved;
	bool keys = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;

	if (keys) {
		/* one key at a time, not echoed; restored on the way out */
		struct termios raw = saved;

		raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
		raw.c_cc[VMIN] = 1;
		raw.c_cc[VTIME] = 0;
		keys = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
	}
	if (sfd < 0 || ep < 0) {
		snprintf(s->why, sizeof(s->why), "cannot set up the event loop: %s", strerror(errno));
		return -errno;
	}
	loader_consume(s->loader, on_new_traceback, s);
	if (watch(ep, loader_events_fd(s->loader), EV_RING) || watch(ep, sfd, EV_SIGNAL) ||
	    (pidfd >= 0 && watch(ep, pidfd, EV_TARGET)) || (keys && watch(ep, STDIN_FILENO, EV_KEY))) {
		snprintf(s->why, sizeof(s->why), "cannot set up the event loop: %s", strerror(errno));
		return -errno;
	}
	for (;;) {
		double now = now_monotonic(), until = next_report;
		struct epoll_event evs[4];
		int n, timeout_ms;

		if (opt->duration > 0 && start + opt->duration < until)
			until = start + opt->duration;
		if (next_hook_check < until)
			until = next_hook_check;
		timeout_ms = until > now ? (int)((until - now) * 1000) + 1 : 0;
		n = epoll_wait(ep, evs, 4, timeout_ms);
		if (n < 0 && errno != EINTR) {
			err = -errno;
			break;
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u32 == EV_RING) {
				err = loader_consume(s->loader, on_new_traceback, s);
				if (err < 0)
					goto out;
				err = 0;
				if (loader_take_allocator_set(s->loader)) {
					/* the probe fires before the slot is written,
					 * and tracemalloc.start() sets three slots:
					 * look again and again for a few ms, as each
					 * call through a hook not yet probed is lost */
					for (int look = 0; look < HOOK_LOOKS; look++) {
						check_hooks(s);
						usleep(HOOK_LOOK_US);
					}
				}
			} else if (evs[i].data.u32 == EV_SIGNAL) {
				struct signalfd_siginfo si;

				if (read(sfd, &si, sizeof(si)) != sizeof(si) || si.ssi_signo == SIGPIPE)
					continue;
				if (si.ssi_signo == SIGUSR1)
					snapshot_now(s);
				else if (si.ssi_signo == SIGUSR2)
					reset_peak(s);
				else
					goto out; /* detach */
			} else if (evs[i].data.u32 == EV_KEY) {
				char key;

				if (read(STDIN_FILENO, &key, 1) == 1 && on_key(s, key))
					goto out;
			} else if (evs[i].data.u32 == EV_TARGET) {
				fprintf(stderr, "tmtrace: process %d exited\n", (int)s->target.pid);
				goto out;
			}
		}
		now = now_monotonic();
		if (now >= next_hook_check) {
			check_hooks(s);
			check_modules(s);
			/* --lazy-frees: before the journal runs over */
			if (s->lazy && lazyfree_due(s->lazy, s->loader))
				sweep_freed(s);
			next_hook_check = now + HOOK_CHECK_INTERVAL;
		}
		if (now >= next_report) {
			loader_consume(s->loader, on_new_traceback, s);
			err = print_report(s);
			if (err)
				break;
			reports++;
			next_report += opt->interval;
			if (next_report < now)
				next_report = now + opt->interval;
			if (opt->count && reports >= opt->count)
				break;
		}
		if (opt->duration > 0 && now >= start + opt->duration)
			break;
	}
out:
	if (keys)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	if (s->opt->output)
		write_snapshot(s, s->opt->output, false);
	if (err)
		snprintf(s->why, sizeof(s->why), "%s", strerror(-err));
	close(ep);
	close(sfd);
	if (pidfd >= 0)
		close(pidfd);
	return err;
}

static enum plan_mode plan_mode_of(const struct session_options *opt)
{
	if (opt->sample)
		return PLAN_SAMPLED;
	return opt->lazy_frees ? PLAN_LAZY_FREES : PLAN_EXACT;
}

int session_run(const struct session_options *opt)
{
	struct session *s = calloc(1, sizeof(*s));
	struct loader_options lopt = {
		.nframe = opt->nframe,
		.max_blocks = opt->max_blocks,
		.max_tracebacks = opt->max_tracebacks,
		.count_all_frames = opt->count_all_frames,
		.sample = opt->sample,
		/* a pool is 4 or 16 KiB: this many cover 256 MiB to 1 GiB of pools */
		.max_samples = opt->max_blocks / 16 > 4096 ? opt->max_blocks / 16 : 4096,
	};
	int err, code = 1;

	if (!s) {
		fprintf(stderr, "tmtrace: out of memory\n");
		return 1;
	}
	s->opt = opt;
	if ((err = syscheck_capabilities(s->why, sizeof(s->why))) ||
	    (err = syscheck_kernel(s->why, sizeof(s->why))) ||
	    (err = py_target_open(opt->pid, &s->target, s->why, sizeof(s->why)))) {
		code = fail(s, err);
		free(s);
		return code;
	}
	if ((err = py_target_check(&s->target, s->why, sizeof(s->why))) ||
	    (err = plan_build(s->target.elf, s->target.pid, s->target.bias, plan_mode_of(opt), s->target.minor,
			       &s->plan, s->why, sizeof(s->why))) ||
	    (err = module_watch_new(&s->target, &s->modules)) ||
	    (err = module_watch_start(s->modules, &s->target, &s->plan, s->why, sizeof(s->why))) < 0 ||
	    (err = resolver_new(&s->target, &s->resolver)) ||
	    (err = loader_open(&s->target, &s->plan, &lopt, &s->loader, s->why, sizeof(s->why)))) {
		code = fail_attaching(s, err);
		goto out;
	}
	if (s->plan.mode == PLAN_LAZY_FREES && !(s->lazy = lazyfree_new(loader_pool_size(s->loader)))) {
		snprintf(s->why, sizeof(s->why), "out of memory");
		code = fail(s, -ENOMEM);
		goto out;
	}
	resolver_set_generations(s->resolver, code_generation, s->loader);
	loader_on_code(s->loader, on_new_code);
	err = loader_attach(s->loader, &s->plan, s->target.open_path, s->why, sizeof(s->why));
	if (err) {
		code = fail_attaching(s, err);
		goto out;
	}
	loader_arm(s->loader);
	s->sources = srcline_new(opt->pid);
	fprintf(stderr, "tmtrace: attached to %d: CPython %s (%s), %d probes\n", (int)opt->pid,
		s->target.version, s->target.binary, loader_probe_count(s->loader));
	print_attach_notes(s);
	err = event_loop(s);
	code = err ? fail(s, err) : 0;
	if (opt->verbose) {
		print_totals(s);
		print_site_hits(s);
	}
out:
	loader_close(s->loader);
	lazyfree_free(s->lazy);
	module_watch_free(s->modules);
	resolver_free(s->resolver);
	srcline_free(s->sources);
	tm_snapshot_free(s->first);
	tm_snapshot_free(s->previous);
	plan_free(&s->plan);
	py_target_close(&s->target);
	free(s);
	return code;
}
