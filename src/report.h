/* The periodic report: tracemalloc's display_top() in text, or one JSON
 * object per line. */
#ifndef TMTRACE_REPORT_H
#define TMTRACE_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include "srcline.h"
#include "tmtrace/engine.h"

enum report_format { REPORT_TEXT, REPORT_JSON, REPORT_TRACEMALLOC };

struct lost_counter {
	const char *name;
	uint64_t value;
};

struct report {
	FILE *out;
	enum report_format format;
	pid_t pid;
	const char *python_version;
	unsigned top;                   /* 0: all */
	enum tm_key_type key;
	struct srcline_cache *sources;
	/* this report's figures */
	double time;                    /* unix seconds */
	int64_t current, peak;          /* traced memory */
	const struct tm_statistics *stats;
	const struct tm_statistic_diffs *diffs; /* instead of stats: compare_to() */
	const char *compared_with;      /* text header of a comparison, e.g. "first snapshot" */
	const char *title;              /* header line instead of the live one (reports of files) */
	const struct lost_counter *lost;
	int nlost;
	/* --sample: pymalloc's share is estimated from these pool samples */
	bool sampled;
	uint64_t sample_pools, sample_live;
};

void report_print(const struct report *r);
const char *report_key_name(enum tm_key_type key);

#endif
