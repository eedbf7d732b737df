/* Times tmtrace's engine on a snapshot file: load, statistics for each key
 * type, cumulative, compare_to, filter_traces and dump, printed as JSON
 * for bench-engine.py to set against CPython's tracemalloc.
 *
 * usage: engine_bench NEW OLD PATTERN OUTDIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "tmtrace/engine.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define BEST_OF 3

int main(int argc, char **argv)
{
	struct tm_snapshot *snap = NULL, *old = NULL;
	char why[512] = "", path[4096];
	double t, best;
	int first = 1;

	if (argc != 5) {
		fprintf(stderr, "usage: engine_bench NEW OLD PATTERN OUTDIR\n");
		return 2;
	}
	printf("{");
#define TIMED(name, stmt)                                                       \
	do {                                                                    \
		best = 1e9;                                                     \
		for (int rep = 0; rep < BEST_OF; rep++) {                       \
			t = now();                                              \
			stmt;                                                   \
			t = now() - t;                                          \
			if (t < best)                                           \
				best = t;                                       \
		}                                                               \
		printf("%s\"%s\": %.6f", first ? "" : ", ", name, best);        \
		first = 0;                                                      \
		fflush(stdout);                                                 \
	} while (0)

	TIMED("load", {
		tm_snapshot_free(snap);
		if (tm_snapshot_read(argv[1], &snap, NULL, why, sizeof(why))) {
			fprintf(stderr, "engine_bench: %s\n", why);
			return 1;
		}
	});
	if (tm_snapshot_read(argv[2], &old, NULL, why, sizeof(why))) {
		fprintf(stderr, "engine_bench: %s\n", why);
		return 1;
	}
	static const struct { const char *name; enum tm_key_type key; bool cumulative; } queries[] = {
		{ "statistics_lineno", TM_KEY_LINENO, false },
		{ "statistics_filename", TM_KEY_FILENAME, false },
		{ "statistics_traceback", TM_KEY_TRACEBACK, false },
		{ "statistics_lineno_cumulative", TM_KEY_LINENO, true },
	};
	for (size_t q = 0; q < sizeof(queries) / sizeof(queries[0]); q++) {
		struct tm_statistics st;

		TIMED(queries[q].name, {
			tm_snapshot_statistics(snap, queries[q].key, queries[q].cumulative, &st);
			tm_statistics_free(&st);
		});
	}
	TIMED("compare_to_lineno", {
		struct tm_statistic_diffs d;

		tm_snapshot_compare(snap, old, TM_KEY_LINENO, false, &d);
		tm_statistic_diffs_free(&d);
	});
	struct tm_filter filters[2] = {
		{ .inclusive = true, .filename_pattern = argv[3] },
		{ .inclusive = false, .filename_pattern = "*/lib*/x*.py" },
	};
	TIMED("filter_traces", tm_snapshot_free(tm_snapshot_filter(snap, filters, 2)));
	snprintf(path, sizeof(path), "%s/engine-bench-out.pickle", argv[4]);
	TIMED("dump_pickle", tm_snapshot_write(snap, path, TM_FORMAT_PICKLE, 11, why, sizeof(why)));
	snprintf(path, sizeof(path), "%s/engine-bench-out.tmt", argv[4]);
	TIMED("dump_tmtrace", tm_snapshot_write(snap, path, TM_FORMAT_TMTRACE, 11, why, sizeof(why)));
	TIMED("load_tmtrace", {
		struct tm_snapshot *x = NULL;

		tm_snapshot_read(path, &x, NULL, why, sizeof(why));
		tm_snapshot_free(x);
	});
	printf("}\n");
	tm_snapshot_free(snap);
	tm_snapshot_free(old);
	return 0;
}
