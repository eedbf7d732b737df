/* The engine's internals, shared by its files (not part of the API). */
#ifndef TMTRACE_SNAPSHOT_IMPL_H
#define TMTRACE_SNAPSHOT_IMPL_H

#include "tmtrace/engine.h"
#include "arena.h"
#include "hashset.h"

struct tm_snapshot {
	unsigned traceback_limit;
	struct tm_snapshot_info info;
	struct arena arena;        /* strings and tracebacks */
	struct hashset strings;
	struct hashset tracebacks;
	uint32_t ntracebacks;
	struct tm_trace *traces;
	size_t ntraces, cap;
};

uint64_t tm_traceback_hash(const struct tm_frame *frames, uint32_t nframe, uint32_t total_nframe);
/* Interns a traceback in `set`; a new one gets id (*next_id)++. */
const struct tm_traceback *tm_intern_traceback(struct hashset *set, struct arena *arena,
					       const struct tm_frame *frames, uint32_t nframe,
					       uint32_t total_nframe, uint32_t *next_id);

/* Fills an error's one-line reason (why may be NULL). */
void tm_set_why(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
