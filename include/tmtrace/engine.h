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

#define TM_TOTAL_NFRAME_NONE UINT32_MAX /* total_nframe is None */

struct tm_traceback {
	uint32_t nframe;
	uint32_t total_nframe;
	uint32_t id;              /* its index among its snapshot's tracebacks */
	uint32_t pad;
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

/* Sums of sizes: 128 bits, since Python's ints never overflow and a few
 * traces of huge blocks would overflow 64. */
typedef __int128 tm_sum_t;

struct tm_statistic {
	const struct tm_traceback *traceback; /* the key, owned by the result */
	tm_sum_t size;
	int64_t count;
};

/* What a snapshot file records besides the traces (tmtrace's own format;
 * a pickle has only the traces and the traceback limit). */
struct tm_snapshot_info {
	int32_t pid;            /* 0: unknown */
	char python[32];        /* "3.11.7", "" if unknown */
	double time;            /* unix seconds, 0 if unknown */
	int64_t traced_current; /* get_traced_memory(), -1 if unknown */
	int64_t traced_peak;
};

struct tm_snapshot *tm_snapshot_new(unsigned traceback_limit);
void tm_snapshot_free(struct tm_snapshot *s);
unsigned tm_snapshot_traceback_limit(const struct tm_snapshot *s);
struct tm_snapshot_info *tm_snapshot_info(struct tm_snapshot *s);

/* Interns a string (UTF-8) in the snapshot; NULL on ENOMEM. */
const char *tm_snapshot_intern(struct tm_snapshot *s, const char *str);
/* Interns a traceback (frames' filenames must be interned); NULL on ENOMEM. */
const struct tm_traceback *tm_snapshot_traceback(struct tm_snapshot *s, const struct tm_frame *frames,
						 uint32_t nframe, uint32_t total_nframe);
int tm_snapshot_add_trace(struct tm_snapshot *s, const struct tm_trace *trace);
size_t tm_snapshot_trace_count(const struct tm_snapshot *s);
const struct tm_trace *tm_snapshot_traces(const struct tm_snapshot *s);
/* How many distinct tracebacks the snapshot holds (ids are below it). */
size_t tm_snapshot_traceback_count(const struct tm_snapshot *s);

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

/* Snapshot.compare_to(old, key_type, cumulative): StatisticDiff list,
 * sorted as tracemalloc sorts it (abs(size_diff), size, abs(count_diff),
 * count, traceback; descending). */
struct tm_statistic_diff {
	const struct tm_traceback *traceback;
	tm_sum_t size, size_diff;
	int64_t count, count_diff;
};

/* Writes v in decimal (a tm_sum_t does not fit printf); returns buf. */
char *tm_sum_text(char *buf, size_t len, tm_sum_t v);

struct tm_statistic_diffs {
	struct tm_statistic_diff *diffs;
	size_t count;
	void *arena;
};

int tm_snapshot_compare(const struct tm_snapshot *new_snap, const struct tm_snapshot *old_snap,
			enum tm_key_type key, bool cumulative, struct tm_statistic_diffs *out);
void tm_statistic_diffs_free(struct tm_statistic_diffs *d);

/* tracemalloc.Filter and tracemalloc.DomainFilter. */
struct tm_filter {
	bool inclusive;
	bool domain_only;        /* a DomainFilter: only `domain` matters */
	const char *filename_pattern; /* fnmatch pattern (UTF-8); .pyc is matched as .py */
	bool has_lineno;
	unsigned lineno;
	bool all_frames;
	bool has_domain;
	uint32_t domain;
};

/* Snapshot.filter_traces(filters): a new snapshot (sharing nothing with
 * the old one); NULL on ENOMEM. */
struct tm_snapshot *tm_snapshot_filter(const struct tm_snapshot *s, const struct tm_filter *filters,
				       size_t nfilters);

/* fnmatch.fnmatch() on POSIX (fnmatchcase): `*`, `?`, `[seq]`, `[!seq]`,
 * over code points of UTF-8 strings. */
bool tm_fnmatch(const char *name, const char *pattern);

/* get_object_traceback(): the traceback of the live block containing
 * `address`, or NULL (tmtrace snapshots keep addresses; pickles do not). */
const struct tm_trace *tm_snapshot_find_address(const struct tm_snapshot *s, uint64_t address);

/* Traceback.format(limit, most_recent_first): lines are appended through
 * `line`, each without a newline; `source` (may be NULL) gives the source
 * line for a frame, as linecache does, or NULL. */
typedef const char *(*tm_source_fn)(void *ctx, const char *filename, unsigned lineno);
void tm_traceback_format(const struct tm_traceback *tb, bool has_limit, int limit, bool most_recent_first,
			 tm_source_fn source, void *source_ctx, void (*line)(void *ctx, const char *text),
			 void *line_ctx);

/* Snapshot files.
 * tmtrace's own format: magic "TMTRACE\0", version, zlib-compressed body
 * with a CRC-32, block addresses kept. tracemalloc's format: the pickle
 * that tracemalloc.Snapshot.dump() writes and Snapshot.load() reads.
 * Readers recognize the format by its first bytes. Errors: -EINVAL (corrupt,
 * with `why` saying what), -ENOMEM, -errno of I/O. */
enum tm_file_format { TM_FORMAT_TMTRACE, TM_FORMAT_PICKLE };

int tm_snapshot_read(const char *path, struct tm_snapshot **out, enum tm_file_format *format,
		     char *why, size_t whylen);
int tm_snapshot_parse(const uint8_t *data, size_t len, struct tm_snapshot **out, enum tm_file_format *format,
		      char *why, size_t whylen);
/* Writes atomically (a temporary file renamed over `path`). A pickle is
 * written for CPython 3.<py_minor>: 3.8's traces have no total_nframe. */
int tm_snapshot_write(const struct tm_snapshot *s, const char *path, enum tm_file_format format,
		      int py_minor, char *why, size_t whylen);

/* Traceback ordering of tracemalloc (tuples of (filename, lineno) from the
 * oldest frame): <0, 0, >0. */
int tm_traceback_compare(const struct tm_traceback *a, const struct tm_traceback *b);

/* tracemalloc's _format_size(), str(Statistic) and str(StatisticDiff) */
char *tm_format_size(char *buf, size_t len, double size, bool sign);
int tm_format_statistic(char *buf, size_t len, const struct tm_statistic *st);
int tm_format_statistic_diff(char *buf, size_t len, const struct tm_statistic_diff *st);

#endif
