/* One attached session: from the checks to the last report. */
#ifndef TMTRACE_SESSION_H
#define TMTRACE_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "cliopts.h"
#include "report.h"

struct session_options {
	pid_t pid;
	double interval;        /* seconds between reports */
	unsigned top;           /* 0: all */
	long count;             /* reports before stopping; 0: no limit */
	double duration;        /* seconds before stopping; 0: no limit */
	unsigned nframe;
	enum report_format format;
	enum tm_key_type key;
	bool cumulative;
	struct cli_filters filters;
	enum { COMPARE_NONE, COMPARE_FIRST, COMPARE_PREVIOUS } compare;
	const char *output;     /* -o: snapshot file written at every report and at exit */
	uint64_t max_blocks;
	uint32_t max_tracebacks;
	bool count_all_frames;
	bool sample;            /* --sample: pymalloc from pool refills, estimated */
	bool lazy_frees;        /* --lazy-frees: pymalloc's frees found in its pools */
	bool verbose;
};

/* Runs the session; returns the process exit code (0, or 1 on error,
 * reported on stderr in one line). */
int session_run(const struct session_options *opt);

#endif
