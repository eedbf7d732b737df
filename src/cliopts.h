/* Command-line pieces shared by the live mode and `tmtrace report`:
 * statistics keys, filters, numbers. */
#ifndef TMTRACE_CLIOPTS_H
#define TMTRACE_CLIOPTS_H

#include <stdbool.h>
#include <stddef.h>
#include "tmtrace/engine.h"

#define CLI_MAX_FILTERS 64

struct cli_filters {
	struct tm_filter f[CLI_MAX_FILTERS];
	size_t n;
	bool all_frames;
};

/* The filter options both the live mode and `report` take, as getopt_long
 * entries, and their codes. */
enum {
	CLI_OPT_INCLUDE = 2000,
	CLI_OPT_EXCLUDE,
	CLI_OPT_ALL_FRAMES,
	CLI_OPT_DOMAIN,
	CLI_OPT_EXCLUDE_DOMAIN,
};

#define CLI_FILTER_OPTIONS                                                      \
	{ "include", required_argument, NULL, CLI_OPT_INCLUDE },                \
	{ "exclude", required_argument, NULL, CLI_OPT_EXCLUDE },                \
	{ "all-frames", no_argument, NULL, CLI_OPT_ALL_FRAMES },                \
	{ "domain", required_argument, NULL, CLI_OPT_DOMAIN },                  \
	{ "exclude-domain", required_argument, NULL, CLI_OPT_EXCLUDE_DOMAIN }

/* Handles getopt code c if it is a filter option: 1 if it was, 0 if not,
 * 2 after printing a usage error. */
int cli_filter_option(int c, const char *arg, struct cli_filters *fs);

int cli_parse_key(const char *s, enum tm_key_type *key);
int cli_parse_long(const char *s, long min, long max, long *out);
/* --include/--exclude PATTERN[:LINE] (LINE: digits after the last ':') */
int cli_add_filter(struct cli_filters *fs, bool inclusive, const char *arg);
/* --domain/--exclude-domain N: a DomainFilter */
int cli_add_domain_filter(struct cli_filters *fs, bool inclusive, const char *arg);
/* Applies --all-frames to every filename filter (call after parsing). */
void cli_finish_filters(struct cli_filters *fs);
/* Prints a usage error (one line) and returns 2. */
int cli_usage_error(const char *fmt, const char *arg);

#endif
