/* tmtrace's snapshot engine: tracemalloc's Snapshot, Statistic and friends,
 * with the semantics of Lib/tracemalloc.py. Pure userspace: no BPF here.
 *
 * Conventions: frames are ordered most recent call first, as tracemalloc's
 * raw traces are; strings are UTF-8 and interned per snapshot, so two frames
 * have the same filename iff their pointers are equal. */
#ifndef TMTRACE_ENGINE_H
#define TMTRACE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tm_frame {
	const char *filename; /* interned in the snapshot */
	unsigned lineno;
};

struct tm_traceback {
	uint32_t nframe;
	uint32_t total_nframe;
	struct tm_frame frames[]; /* nframe of them, most recent first */
};

/* One trace: a live block (count 1, with its address), or, in aggregated
 * snapshots, the blocks of one traceback (count N, address 0). */
struct tm_trace {
	uint64_t address;
	uint64_t size;
	uint64_t count;
	uint32_t domain;
	const struct tm_traceback *traceback;
};

struct tm_snapshot;

enum tm_key_type {
	TM_KEY_FILENAME,
	TM_KEY_LINENO,
	TM_KEY_TRACEBACK,
};

struct tm_statistic {
	const struct tm_traceback *traceback; /* the key, owned by the result */
	int64_t size;
	int64_t count;
};

struct tm_snapshot *tm_snapshot_new(unsigned traceback_limit);
void tm_snapshot_free(struct tm_snapshot *s);
unsigned tm_snapshot_traceback_limit(const struct tm_snapshot *s);

/* Interns a string (UTF-8) in the snapshot; NULL on ENOMEM. */
const char *tm_snapshot_intern(struct tm_snapshot *s, const char *str);
/* Interns a traceback (frames' filenames must be interned); NULL on ENOMEM. */
const struct tm_traceback *tm_snapshot_traceback(struct tm_snapshot *s, const struct tm_frame *frames,
						 uint32_t nframe, uint32_t total_nframe);
int tm_snapshot_add_trace(struct tm_snapshot *s, const struct tm_trace *trace);
size_t tm_snapshot_trace_count(const struct tm_snapshot *s);
const struct tm_trace *tm_snapshot_traces(const struct tm_snapshot *s);

/* Snapshot.statistics(key_type, cumulative): sorted as tracemalloc sorts
 * (size, count, traceback, all descending). Free with tm_statistics_free. */
struct tm_statistics {
	struct tm_statistic *stats;
	size_t count;
	void *arena; /* owns the key tracebacks */
};

int tm_snapshot_statistics(const struct tm_snapshot *s, enum tm_key_type key, bool cumulative,
			   struct tm_statistics *out);
void tm_statistics_free(struct tm_statistics *st);

/* Traceback ordering of tracemalloc (tuples of (filename, lineno) from the
 * oldest frame): <0, 0, >0. */
int tm_traceback_compare(const struct tm_traceback *a, const struct tm_traceback *b);

/* tracemalloc's _format_size() and str(Statistic) */
char *tm_format_size(char *buf, size_t len, double size, bool sign);
/* str(Traceback) is str of its first frame... of the key; str(Statistic): */
int tm_format_statistic(char *buf, size_t len, const struct tm_statistic *st);

#endif
