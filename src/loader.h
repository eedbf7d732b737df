/* The BPF side's lifecycle: configure, load, attach every probe site, arm;
 * then read the maps. */
#ifndef TMTRACE_LOADER_H
#define TMTRACE_LOADER_H

#include <stdbool.h>
#include <stdint.h>
#include "plan.h"
#include "pytarget.h"
#include "tmtrace.h"

struct loader;

struct loader_options {
	uint32_t nframe;
	uint64_t max_blocks;
	uint32_t max_tracebacks;
	bool count_all_frames;
	/* --sample: pool refills recorded in pool_samples, max_samples of them */
	bool sample;
	uint64_t max_samples;
};

/* Opens, configures and loads the BPF object for this target and plan. */
int loader_open(const struct py_target *t, const struct probe_plan *plan, const struct loader_options *opt,
		struct loader **out, char *why, size_t whylen);
/* Attaches every site of the plan to the file at `path`; all or nothing. */
int loader_attach(struct loader *l, const struct probe_plan *plan, const char *path, char *why, size_t whylen);
/* Attaches the sites added to the plan since (hooks found later). */
int loader_attach_new_sites(struct loader *l, const struct probe_plan *plan, const char *path, char *why,
			    size_t whylen);
/* How the probes are attached: "uprobe_multi" links, or one perf event each. */
const char *loader_attach_mode(const struct loader *l);
int loader_fd_count(const struct loader *l);
/* Starts recording. */
void loader_arm(struct loader *l);
void loader_close(struct loader *l);

int loader_probe_count(const struct loader *l);
/* How often a site fired (summed over CPUs). */
int loader_site_hits(const struct loader *l, uint32_t site, uint64_t *hits);
/* Kernel memory the maps take, estimated from their sizes (bytes). */
uint64_t loader_map_memory(const struct loader *l);

const struct tm_totals *loader_totals(const struct loader *l);
/* {size, count} of traceback id (mmapped array); NULL past the end. */
const struct tm_traceback_stats *loader_traceback_stats(const struct loader *l, uint32_t id);
uint32_t loader_traceback_limit(const struct loader *l);
/* pymalloc's POOL_SIZE in this target (bytes). */
uint32_t loader_pool_size(const struct loader *l);

/* The ring buffer of new tracebacks: fd to poll, and consume. */
typedef int (*loader_traceback_fn)(void *ctx, uint32_t id, const struct tm_raw_stack *stack);
int loader_events_fd(const struct loader *l);
/* Code objects BPF copied when it first met them (same ctx as consume's). */
typedef int (*loader_code_fn)(void *ctx, const struct tm_code_event *code);
void loader_on_code(struct loader *l, loader_code_fn fn);
/* Did the target call PyMem_SetAllocator() since the last call? */
bool loader_take_allocator_set(struct loader *l);
int loader_consume(struct loader *l, loader_traceback_fn fn, void *ctx);
/* Walks the traceback map, for ids whose event was lost. */
int loader_each_traceback(struct loader *l, loader_traceback_fn fn, void *ctx);
/* Every live block, in every domain, for snapshots with addresses. */
typedef int (*loader_block_fn)(void *ctx, uint64_t address, const struct tm_block *b);
int loader_each_block(struct loader *l, loader_block_fn fn, void *ctx);
/* --lazy-frees: the pymalloc block at `ptr`, put there by allocation
 * number `seq` and since found free in its pool, is to leave the live
 * table and its traceback's totals, unless a newer allocation took its
 * place meanwhile. Queued: 0 (or -ENOMEM); loader_forget_queued() does it. */
int loader_forget_freed(struct loader *l, uint64_t ptr, uint32_t seq);
/* Forgets the queued blocks, in the table's order (a window of it mapped at
 * a time); how many went, or a negative errno. */
int64_t loader_forget_queued(struct loader *l);
/* --lazy-frees: the journal (mmapped, read-only) and its size; NULL and 0
 * in other modes. Allocation number n (1-based, 32 bits kept) is at slot
 * n & (entries - 1). */
const struct tm_journal_entry *loader_journal(const struct loader *l, uint32_t *entries);
/* --lazy-frees: how many allocations were numbered so far. */
uint64_t loader_allocations_numbered(const struct loader *l);
/* --sample: every pool's latest refill (pool address, sample). */
typedef int (*loader_sample_fn)(void *ctx, uint64_t pool, const struct tm_pool_sample *sample);
int loader_each_sample(struct loader *l, loader_sample_fn fn, void *ctx);
/* Drops the sample of `pool` if it is still `sample` (not refilled since). */
void loader_drop_sample(struct loader *l, uint64_t pool, const struct tm_pool_sample *sample);
/* Only the blocks PyTraceMalloc_Track() put in domains other than 0. */
int loader_each_tracked(struct loader *l, loader_block_fn fn, void *ctx);
/* How many code objects died at this address (0 if none, or none yet). */
int loader_code_generation(const struct loader *l, uint64_t code, uint64_t *generation);
/* tracemalloc.reset_peak(): the peak becomes the current traced memory. */
void loader_reset_peak(struct loader *l);
/* tracemalloc.clear_traces(): forget every block and traceback total. */
int loader_clear(struct loader *l);

#endif
