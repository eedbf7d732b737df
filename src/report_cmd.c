/* `tmtrace report FILE`: tracemalloc's Snapshot API on a saved snapshot
 * (tmtrace's format or tracemalloc's pickle): statistics, compare_to,
 * filter_traces, get_object_traceback, and conversion between formats. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cliopts.h"
#include "json.h"
#include "report.h"
#include "report_cmd.h"
#include "srcline.h"

static const char report_usage[] =
	"Usage: tmtrace report FILE [options]\n"
	"\n"
	"Reads a snapshot written by tmtrace (-o, SIGUSR1) or by tracemalloc's\n"
	"Snapshot.dump() (the format is recognized by content) and prints what\n"
	"tracemalloc's Snapshot API would.\n"
	"\n"
	"  --compare OLDFILE        differences against an older snapshot (compare_to)\n"
	"  -k, --key-type KEY       lineno (default), filename or traceback\n"
	"  --cumulative             cumulative statistics (lineno and filename keys)\n"
	"  -t, --top N              statistics shown (default 10; 0: all)\n"
	"  --include PATTERN[:LINE] keep traces whose frame matches (fnmatch; .pyc as .py)\n"
	"  --exclude PATTERN[:LINE] drop traces whose frame matches\n"
	"  --all-frames             filters look at every frame, not just the most recent\n"
	"  --domain N               keep only domain N (DomainFilter)\n"
	"  --exclude-domain N       drop domain N\n"
	"  --address ADDR           the traceback of the block containing ADDR\n"
	"                           (get_object_traceback; tmtrace snapshots only)\n"
	"  --format FMT             text (default), json, or tracemalloc: exactly\n"
	"                           print(stat) for each statistic, as Python prints it\n"
	"  -o, --output FILE        write the (filtered) snapshot: a tracemalloc pickle\n"
	"                           if FILE ends in .pickle, else tmtrace's format\n"
	"  --python-version 3.X     the CPython a pickle is written for (default 3.11;\n"
	"                           3.8's traces have no total_nframe)\n"
	"  -h, --help               this help\n";

enum {
	OPT_COMPARE = 1000, OPT_CUMULATIVE, OPT_ADDRESS, OPT_FORMAT, OPT_PYVER,
};

struct report_opts {
	const char *file, *compare, *output;
	enum tm_key_type key;
	bool cumulative;
	long top;
	struct cli_filters filters;
	bool has_address;
	uint64_t address;
	enum report_format format;
	int py_minor;
};

static int parse(int argc, char **argv, struct report_opts *o)
{
	static const struct option longopts[] = {
		{ "compare", required_argument, NULL, OPT_COMPARE },
		{ "key-type", required_argument, NULL, 'k' },
		{ "cumulative", no_argument, NULL, OPT_CUMULATIVE },
		{ "top", required_argument, NULL, 't' },
		CLI_FILTER_OPTIONS,
		{ "address", required_argument, NULL, OPT_ADDRESS },
		{ "format", required_argument, NULL, OPT_FORMAT },
		{ "output", required_argument, NULL, 'o' },
		{ "python-version", required_argument, NULL, OPT_PYVER },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	long v;
	int c;

	o->key = TM_KEY_LINENO;
	o->top = 10;
	o->format = REPORT_TEXT;
	o->py_minor = 11;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":k:t:o:h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_COMPARE:
			o->compare = optarg;
			break;
		case 'k':
			if (cli_parse_key(optarg, &o->key))
				return cli_usage_error("invalid key type: '%s' (lineno, filename or traceback)", optarg);
			break;
		case OPT_CUMULATIVE:
			o->cumulative = true;
			break;
		case 't':
			if (cli_parse_long(optarg, 0, 1L << 30, &o->top))
				return cli_usage_error("invalid --top: '%s'", optarg);
			break;
		case OPT_ADDRESS: {
			char *end;

			errno = 0;
			o->address = strtoull(optarg, &end, 0);
			if (errno || end == optarg || *end)
				return cli_usage_error("invalid address: '%s'", optarg);
			o->has_address = true;
			break;
		}
		case OPT_FORMAT:
			if (!strcmp(optarg, "text"))
				o->format = REPORT_TEXT;
			else if (!strcmp(optarg, "json"))
				o->format = REPORT_JSON;
			else if (!strcmp(optarg, "tracemalloc"))
				o->format = REPORT_TRACEMALLOC;
			else
				return cli_usage_error("invalid format: '%s' (text, json or tracemalloc)", optarg);
			break;
		case 'o':
			o->output = optarg;
			break;
		case OPT_PYVER:
			if (strncmp(optarg, "3.", 2) || cli_parse_long(optarg + 2, 8, 13, &v))
				return cli_usage_error("invalid --python-version: '%s' (3.8 to 3.13)", optarg);
			o->py_minor = (int)v;
			break;
		case 'h':
			fputs(report_usage, stdout);
			return -1;
		case ':':
			return cli_usage_error("option '%s' needs a value", argv[optind - 1]);
		default: {
			int handled = cli_filter_option(c, optarg, &o->filters);

			if (handled == 2)
				return 2;
			if (!handled)
				return cli_usage_error("unknown option '%s'", argv[optind - 1]);
		}
		}
	}
	if (optind != argc - 1)
		return cli_usage_error("%s", optind >= argc ? "report needs one snapshot FILE" :
					     "report takes one snapshot FILE");
	o->file = argv[optind];
	if (o->cumulative && o->key == TM_KEY_TRACEBACK)
		return cli_usage_error("%s", "--cumulative works with the lineno and filename keys only");
	cli_finish_filters(&o->filters);
	return 0;
}

static int load(const char *path, const struct cli_filters *filters, struct tm_snapshot **out)
{
	struct tm_snapshot *s, *f;
	char why[512] = "";
	int err = tm_snapshot_read(path, &s, NULL, why, sizeof(why));

	if (err) {
		fprintf(stderr, "tmtrace: %s\n", why[0] ? why : strerror(-err));
		return 1;
	}
	if (filters->n) {
		f = tm_snapshot_filter(s, filters->f, filters->n);
		tm_snapshot_free(s);
		if (!f) {
			fprintf(stderr, "tmtrace: out of memory\n");
			return 1;
		}
		s = f;
	}
	*out = s;
	return 0;
}

static void title_of(struct tm_snapshot *s, const char *path, char *buf, size_t len)
{
	const struct tm_snapshot_info *info = tm_snapshot_info(s);
	size_t used = (size_t)snprintf(buf, len, "Snapshot %s: %zu traces, traceback limit %u", path,
				       tm_snapshot_trace_count(s), tm_snapshot_traceback_limit(s));

	if (info->pid && used < len)
		used += (size_t)snprintf(buf + used, len - used, ", pid %d", (int)info->pid);
	if (info->python[0] && used < len)
		used += (size_t)snprintf(buf + used, len - used, ", CPython %s", info->python);
	if (info->time > 0 && used < len) {
		char stamp[32];
		time_t t = (time_t)info->time;
		struct tm tm;

		localtime_r(&t, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
		snprintf(buf + used, len - used, ", taken %s", stamp);
	}
}

static void print_format_line(void *ctx, const char *text)
{
	fprintf(ctx, "%s\n", text);
}

static const char *source_line(void *ctx, const char *filename, unsigned lineno)
{
	return srcline_get(ctx, filename, lineno);
}

static int show_address(struct tm_snapshot *s, const struct report_opts *o, struct srcline_cache *src)
{
	const struct tm_trace *t = tm_snapshot_find_address(s, o->address);

	if (!t) {
		fprintf(stderr, "tmtrace: no traced block contains 0x%" PRIx64 " in %s\n", o->address, o->file);
		return 1;
	}
	if (o->format == REPORT_JSON) {
		printf("{\"address\": %" PRIu64 ", \"block\": %" PRIu64 ", \"size\": %" PRIu64 ", \"domain\": %u, "
		       "\"traceback\": [", o->address, t->address, t->size, t->domain);
		for (uint32_t j = 0; j < t->traceback->nframe; j++) {
			printf(j ? ", {\"filename\": " : "{\"filename\": ");
			json_string(stdout, t->traceback->frames[j].filename);
			printf(", \"lineno\": %u}", t->traceback->frames[j].lineno);
		}
		printf("]}\n");
		return 0;
	}
	printf("Block 0x%" PRIx64 " (%" PRIu64 " bytes, domain %u) contains 0x%" PRIx64 ", allocated at:\n",
	       t->address, t->size, t->domain, o->address);
	tm_traceback_format(t->traceback, false, 0, false, source_line, src, print_format_line, stdout);
	return 0;
}

int report_command(int argc, char **argv)
{
	struct report_opts o = { 0 };
	struct tm_snapshot *snap = NULL, *old = NULL;
	struct tm_statistics stats = { 0 };
	struct tm_statistic_diffs diffs = { 0 };
	struct srcline_cache *src = NULL;
	struct report r = { 0 };
	char title[1024], why[512] = "";
	int code = parse(argc, argv, &o), err;

	if (code)
		return code < 0 ? 0 : code;
	if ((code = load(o.file, &o.filters, &snap)) || (o.compare && (code = load(o.compare, &o.filters, &old))))
		goto out;
	src = srcline_new(0);
	if (o.output) {
		size_t len = strlen(o.output);
		enum tm_file_format fmt = len >= 7 && !strcmp(o.output + len - 7, ".pickle") ? TM_FORMAT_PICKLE :
											      TM_FORMAT_TMTRACE;

		err = tm_snapshot_write(snap, o.output, fmt, o.py_minor, why, sizeof(why));
		if (err) {
			fprintf(stderr, "tmtrace: %s\n", why[0] ? why : strerror(-err));
			code = 1;
			goto out;
		}
		if (!o.has_address && !o.compare && o.format == REPORT_TEXT)
			goto out; /* a conversion: nothing more asked */
	}
	if (o.has_address) {
		code = show_address(snap, &o, src);
		goto out;
	}
	err = old ? tm_snapshot_compare(snap, old, o.key, o.cumulative, &diffs)
		  : tm_snapshot_statistics(snap, o.key, o.cumulative, &stats);
	if (err) {
		fprintf(stderr, "tmtrace: cannot compute statistics: %s\n", strerror(-err));
		code = 1;
		goto out;
	}
	title_of(snap, o.file, title, sizeof(title));
	r.out = stdout;
	r.format = o.format;
	r.top = (unsigned)o.top;
	r.key = o.key;
	r.sources = src;
	r.title = title;
	r.time = tm_snapshot_info(snap)->time;
	r.pid = tm_snapshot_info(snap)->pid;
	r.python_version = tm_snapshot_info(snap)->python;
	r.current = tm_snapshot_info(snap)->traced_current;
	r.peak = tm_snapshot_info(snap)->traced_peak;
	r.stats = &stats;
	if (old) {
		r.diffs = &diffs;
		r.compared_with = o.compare;
	}
	report_print(&r);
out:
	tm_statistics_free(&stats);
	tm_statistic_diffs_free(&diffs);
	tm_snapshot_free(snap);
	tm_snapshot_free(old);
	srcline_free(src);
	return code;
}
