/* tmtrace: CPython's tracemalloc, from outside the process.
 * Command-line parsing; everything else lives in session.c and below. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "session.h"
#include "report_cmd.h"
#include "sites_cmd.h"
#include "tmtrace.h"

#define TMTRACE_VERSION "0.1.0"

static const char usage_text[] =
	"Usage: tmtrace -p PID [options]\n"
	"       tmtrace report FILE [options]   statistics, differences, filters of a\n"
	"                               saved snapshot (tmtrace report --help)\n"
	"       tmtrace sites [--sample|--lazy-frees] FILE  list the probe sites tmtrace\n"
	"                               would use in a python executable or libpython,\n"
	"                               and why any inlined allocator copy is not probed\n"
	"\n"
	"Attach to a running CPython process (3.8-3.13) and show, every few seconds,\n"
	"the lines that hold the most live memory, exactly as tracemalloc counts it.\n"
	"Nothing is injected into the process: BPF uprobes watch its allocators.\n"
	"\n"
	"  -p, --pid PID          process to trace (required)\n"
	"  -i, --interval SECS    seconds between reports (default 5)\n"
	"  -t, --top N            statistics per report (default 10; 0: all)\n"
	"      --count N          stop after N reports\n"
	"  -d, --duration SECS    stop after SECS seconds\n"
	"  -n, --nframe N         frames kept per traceback, 1-%d (default 1, as\n"
	"                         PYTHONTRACEMALLOC=1)\n"
	"  -k, --key-type KEY     group by lineno (default), filename or traceback\n"
	"      --cumulative       cumulative statistics (lineno and filename keys)\n"
	"      --compare WHICH    show differences against the first or previous\n"
	"                         snapshot (WHICH: first, previous): finds leaks\n"
	"      --include PATTERN[:LINE]  keep traces whose frame matches (fnmatch)\n"
	"      --exclude PATTERN[:LINE]  drop traces whose frame matches\n"
	"      --all-frames       filters look at every frame of a traceback\n"
	"      --domain N         keep only domain N; --exclude-domain N drops it\n"
	"  -o, --output FILE      write a snapshot of every live block to FILE at each\n"
	"                         report and at exit (atomically): a tracemalloc pickle\n"
	"                         if FILE ends in .pickle, else tmtrace's format\n"
	"      --format FMT       text (default) or json (one object per line)\n"
	"      --max-blocks N     live blocks tracked at once (default 1048576; 262144\n"
	"                         with --sample); the kernel memory this costs is\n"
	"                         printed at attach time\n"
	"      --max-tracebacks N distinct tracebacks kept (default 65536)\n"
	"      --total-nframe     walk whole stacks to count total_nframe exactly\n"
	"                         (slower on deep stacks)\n"
	"      --sample           always-on mode: raw-domain blocks exactly, pymalloc's\n"
	"                         estimated from pool refills (about 1 allocation in\n"
	"                         1000 probed); see docs/performance.md\n"
	"      --lazy-frees       pymalloc's frees found at each report from its pools'\n"
	"                         state instead of probed: current memory as exact,\n"
	"                         one probe less per object; the peak is the highest\n"
	"                         current seen at a report\n"
	"  -v, --verbose          list every probe site at attach time, time each report and snapshot\n"
	"  -h, --help             this help\n"
	"      --version          print the version\n"
	"\n"
	"While attached: SIGUSR1 (or the key s on a terminal) writes a snapshot now,\n"
	"to the -o file or to tmtrace-PID-TIME.tmt; SIGUSR2 (or r) resets the peak, as\n"
	"tracemalloc.reset_peak(); c clears the traces, as clear_traces(); q quits.\n"
	"SIGINT or SIGTERM detaches and exits 0; the process keeps running unchanged.\n"
	"Exit status: 0 on success, 1 on errors, 2 on usage errors.\n";

enum {
	OPT_CUMULATIVE = 900,
	OPT_COMPARE,
	OPT_COUNT = 1000,
	OPT_FORMAT,
	OPT_MAX_BLOCKS,
	OPT_MAX_TRACEBACKS,
	OPT_TOTAL_NFRAME,
	OPT_SAMPLE,
	OPT_LAZY_FREES,
	OPT_VERSION,
};

static int usage_error(const char *fmt, const char *arg)
{
	return cli_usage_error(fmt, arg);
}

static int parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_seconds(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v > 0) || v > 1e7)
		return -EINVAL;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "pid", required_argument, NULL, 'p' },
		{ "interval", required_argument, NULL, 'i' },
		{ "top", required_argument, NULL, 't' },
		{ "count", required_argument, NULL, OPT_COUNT },
		{ "duration", required_argument, NULL, 'd' },
		{ "nframe", required_argument, NULL, 'n' },
		{ "key-type", required_argument, NULL, 'k' },
		{ "cumulative", no_argument, NULL, OPT_CUMULATIVE },
		{ "compare", required_argument, NULL, OPT_COMPARE },
		CLI_FILTER_OPTIONS,
		{ "output", required_argument, NULL, 'o' },
		{ "format", required_argument, NULL, OPT_FORMAT },
		{ "max-blocks", required_argument, NULL, OPT_MAX_BLOCKS },
		{ "max-tracebacks", required_argument, NULL, OPT_MAX_TRACEBACKS },
		{ "total-nframe", no_argument, NULL, OPT_TOTAL_NFRAME },
		{ "sample", no_argument, NULL, OPT_SAMPLE },
		{ "lazy-frees", no_argument, NULL, OPT_LAZY_FREES },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	bool max_blocks_given = false;
	struct session_options opt = {
		.interval = 5,
		.top = 10,
		.nframe = 1,
		.format = REPORT_TEXT,
		.key = TM_KEY_LINENO,
		.max_blocks = 1 << 20,
		.max_tracebacks = 1 << 16,
	};
	long v;
	int c;

	if (argc > 1 && strcmp(argv[1], "sites") == 0)
		return sites_command(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "report") == 0)
		return report_command(argc - 1, argv + 1);
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":p:i:t:d:n:k:o:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (parse_long(optarg, 1, INT_MAX, &v))
				return usage_error("invalid pid: '%s'", optarg);
			opt.pid = (pid_t)v;
			break;
		case 'i':
			if (parse_seconds(optarg, &opt.interval))
				return usage_error("invalid interval: '%s' (seconds, > 0)", optarg);
			break;
		case 't':
			if (parse_long(optarg, 0, INT_MAX, &v))
				return usage_error("invalid --top: '%s'", optarg);
			opt.top = (unsigned)v;
			break;
		case OPT_COUNT:
			if (parse_long(optarg, 1, LONG_MAX, &v))
				return usage_error("invalid --count: '%s'", optarg);
			opt.count = v;
			break;
		case 'd':
			if (parse_seconds(optarg, &opt.duration))
				return usage_error("invalid duration: '%s' (seconds, > 0)", optarg);
			break;
		case 'n':
			if (parse_long(optarg, 1, TM_MAX_NFRAME, &v))
				return usage_error("invalid --nframe: '%s' (1 to " "128" ")", optarg);
			opt.nframe = (unsigned)v;
			break;
		case 'k':
			if (cli_parse_key(optarg, &opt.key))
				return usage_error("invalid key type: '%s' (lineno, filename or traceback)", optarg);
			break;
		case OPT_CUMULATIVE:
			opt.cumulative = true;
			break;
		case OPT_COMPARE:
			if (!strcmp(optarg, "first"))
				opt.compare = COMPARE_FIRST;
			else if (!strcmp(optarg, "previous"))
				opt.compare = COMPARE_PREVIOUS;
			else
				return usage_error("invalid --compare: '%s' (first or previous)", optarg);
			break;
		case 'o':
			opt.output = optarg;
			break;
		case OPT_FORMAT:
			if (!strcmp(optarg, "text"))
				opt.format = REPORT_TEXT;
			else if (!strcmp(optarg, "json"))
				opt.format = REPORT_JSON;
			else
				return usage_error("invalid format: '%s' (text or json)", optarg);
			break;
		case OPT_MAX_BLOCKS:
			if (parse_long(optarg, 1024, 1L << 28, &v))
				return usage_error("invalid --max-blocks: '%s' (1024 to 268435456)", optarg);
			opt.max_blocks = (uint64_t)v;
			max_blocks_given = true;
			break;
		case OPT_MAX_TRACEBACKS:
			if (parse_long(optarg, 1024, 1L << 24, &v))
				return usage_error("invalid --max-tracebacks: '%s' (1024 to 16777216)", optarg);
			opt.max_tracebacks = (uint32_t)v;
			break;
		case OPT_TOTAL_NFRAME:
			opt.count_all_frames = true;
			break;
		case OPT_SAMPLE:
			opt.sample = true;
			break;
		case OPT_LAZY_FREES:
			opt.lazy_frees = true;
			break;
		case 'v':
			opt.verbose = true;
			break;
		case 'h':
			printf(usage_text, TM_MAX_NFRAME);
			return 0;
		case OPT_VERSION:
			printf("tmtrace %s\n", TMTRACE_VERSION);
			return 0;
		case ':':
			return usage_error("option '%s' needs a value", argv[optind - 1]);
		default: {
			int handled = cli_filter_option(c, optarg, &opt.filters);

			if (handled == 2)
				return 2;
			if (!handled)
				return usage_error("unknown option '%s'", argv[optind - 1]);
		}
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (!opt.pid)
		return usage_error("%s", "no process given: -p PID is required");
	/* --sample keeps only raw-domain blocks (about 1 in 20): a smaller map */
	if (opt.sample && !max_blocks_given)
		opt.max_blocks = 1 << 18;
	if (opt.sample && opt.lazy_frees)
		return usage_error("%s", "--sample and --lazy-frees do not go together (--sample probes no pymalloc free)");
	if (opt.cumulative && opt.key == TM_KEY_TRACEBACK)
		return usage_error("%s", "--cumulative works with the lineno and filename keys only");
	cli_finish_filters(&opt.filters);
	return session_run(&opt);
}
