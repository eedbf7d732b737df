#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cliopts.h"

int cli_usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "tmtrace: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see tmtrace --help)\n");
	return 2;
}

int cli_parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10); /* decimal, as Python reads "010" in a Filter */
	if (errno || end == s || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int cli_parse_key(const char *s, enum tm_key_type *key)
{
	if (!strcmp(s, "lineno"))
		*key = TM_KEY_LINENO;
	else if (!strcmp(s, "filename"))
		*key = TM_KEY_FILENAME;
	else if (!strcmp(s, "traceback"))
		*key = TM_KEY_TRACEBACK;
	else
		return -EINVAL;
	return 0;
}

int cli_add_filter(struct cli_filters *fs, bool inclusive, const char *arg)
{
	struct tm_filter *f;
	const char *colon = strrchr(arg, ':');

	if (fs->n == CLI_MAX_FILTERS)
		return -E2BIG;
	f = &fs->f[fs->n];
	memset(f, 0, sizeof(*f));
	f->inclusive = inclusive;
	f->filename_pattern = arg;
	if (colon && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1)) {
		long line;
		char *pattern;

		if (cli_parse_long(colon + 1, 0, UINT_MAX, &line))
			return -EINVAL;
		pattern = strndup(arg, (size_t)(colon - arg));
		if (!pattern)
			return -ENOMEM;
		f->filename_pattern = pattern; /* lives as long as the process */
		f->has_lineno = true;
		f->lineno = (unsigned)line;
	}
	fs->n++;
	return 0;
}

int cli_add_domain_filter(struct cli_filters *fs, bool inclusive, const char *arg)
{
	long domain;

	if (fs->n == CLI_MAX_FILTERS)
		return -E2BIG;
	if (cli_parse_long(arg, 0, UINT_MAX, &domain))
		return -EINVAL;
	memset(&fs->f[fs->n], 0, sizeof(fs->f[0]));
	fs->f[fs->n].inclusive = inclusive;
	fs->f[fs->n].domain_only = true;
	fs->f[fs->n].domain = (uint32_t)domain;
	fs->n++;
	return 0;
}

void cli_finish_filters(struct cli_filters *fs)
{
	for (size_t i = 0; i < fs->n; i++)
		if (!fs->f[i].domain_only)
			fs->f[i].all_frames = fs->all_frames;
}

int cli_filter_option(int c, const char *arg, struct cli_filters *fs)
{
	switch (c) {
	case CLI_OPT_INCLUDE:
	case CLI_OPT_EXCLUDE:
		if (cli_add_filter(fs, c == CLI_OPT_INCLUDE, arg))
			return cli_usage_error("invalid filter: '%s'", arg);
		return 1;
	case CLI_OPT_ALL_FRAMES:
		fs->all_frames = true;
		return 1;
	case CLI_OPT_DOMAIN:
	case CLI_OPT_EXCLUDE_DOMAIN:
		if (cli_add_domain_filter(fs, c == CLI_OPT_DOMAIN, arg))
			return cli_usage_error("invalid domain: '%s'", arg);
		return 1;
	}
	return 0;
}
