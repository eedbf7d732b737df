#include <inttypes.h>
#include <time.h>
#include "json.h"
#include "report.h"

const char *report_key_name(enum tm_key_type key)
{
	switch (key) {
	case TM_KEY_FILENAME: return "filename";
	case TM_KEY_LINENO: return "lineno";
	case TM_KEY_TRACEBACK: return "traceback";
	}
	return "?";
}

/* Sizes and counts of the statistics from index `from` on. */
static void totals_of(const struct report *r, size_t from, tm_sum_t *size, int64_t *count)
{
	size_t n = r->diffs ? r->diffs->count : r->stats->count;

	*size = *count = 0;
	for (size_t i = from; i < n; i++) {
		*size += r->diffs ? r->diffs->diffs[i].size : r->stats->stats[i].size;
		*count += r->diffs ? r->diffs->diffs[i].count : r->stats->stats[i].count;
	}
}

static size_t stat_count(const struct report *r)
{
	return r->diffs ? r->diffs->count : r->stats->count;
}

static const struct tm_traceback *stat_traceback(const struct report *r, size_t i)
{
	return r->diffs ? r->diffs->diffs[i].traceback : r->stats->stats[i].traceback;
}

static void format_stat(const struct report *r, size_t i, char *buf, size_t len)
{
	if (r->diffs)
		tm_format_statistic_diff(buf, len, &r->diffs->diffs[i]);
	else
		tm_format_statistic(buf, len, &r->stats->stats[i]);
}

static const char *source_of(void *ctx, const char *filename, unsigned lineno)
{
	struct srcline_cache *c = ctx;

	return c ? srcline_get(c, filename, lineno) : NULL;
}

static void print_line(void *ctx, const char *text)
{
	fprintf(ctx, "%s\n", text);
}

static void print_text(const struct report *r)
{
	size_t n = stat_count(r);
	size_t shown = r->top && r->top < n ? r->top : n;
	char cur[32], peak[32], size[32], line[8192];
	char stamp[32], lost[512] = "";
	time_t now = (time_t)r->time;
	struct tm tm;
	tm_sum_t total, other;
	int64_t count, other_count;
	size_t used = 0;

	if (r->title) {
		fprintf(r->out, "%s\n", r->title);
	} else {
		localtime_r(&now, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
		fprintf(r->out, "[%s] pid %d, CPython %s: traced memory current=%s, peak=%s\n", stamp,
			(int)r->pid, r->python_version,
			tm_format_size(cur, sizeof(cur), (double)r->current, false),
			tm_format_size(peak, sizeof(peak), (double)r->peak, false));
		if (r->sampled)
			fprintf(r->out, "Sampled: pymalloc's blocks estimated from %" PRIu64 " refilled pools "
				"(%" PRIu64 " samples still live); counts are blocks, sizes block sizes\n",
				r->sample_pools, r->sample_live);
	}
	if (r->diffs)
		fprintf(r->out, "Top %zu differences%s%s\n", shown, r->compared_with ? " against the " : "",
			r->compared_with ? r->compared_with : "");
	else
		fprintf(r->out, "Top %zu %s\n", shown,
			r->key == TM_KEY_LINENO ? "lines" : r->key == TM_KEY_FILENAME ? "files" : "tracebacks");
	for (size_t i = 0; i < shown; i++) {
		const struct tm_traceback *tb = stat_traceback(r, i);

		format_stat(r, i, line, sizeof(line));
		fprintf(r->out, "#%zu: %s\n", i + 1, line);
		if (r->key == TM_KEY_TRACEBACK)
			/* whole tracebacks, as tracemalloc's examples print them */
			tm_traceback_format(tb, false, 0, false, source_of, r->sources, print_line, r->out);
		else if (r->key == TM_KEY_LINENO && tb->nframe) {
			const char *src = source_of(r->sources, tb->frames[0].filename, tb->frames[0].lineno);

			if (src)
				fprintf(r->out, "    %s\n", src);
		}
	}
	totals_of(r, shown, &other, &other_count);
	if (shown < n)
		fprintf(r->out, "%zu other: %s\n", n - shown, tm_format_size(size, sizeof(size), (double)other, false));
	totals_of(r, 0, &total, &count);
	fprintf(r->out, "Total allocated size: %s\n", tm_format_size(size, sizeof(size), (double)total, false));
	for (int i = 0; i < r->nlost; i++) {
		if (r->lost[i].value)
			used += (size_t)snprintf(lost + used, sizeof(lost) - used, "%s%s=%" PRIu64,
						 used ? ", " : "", r->lost[i].name, r->lost[i].value);
		if (used >= sizeof(lost))
			break;
	}
	if (used)
		fprintf(r->out, "Lost: %s\n", lost);
	fputc('\n', r->out);
	fflush(r->out);
}

/* Exactly print(stat) for each statistic kept, and nothing else. */
static void print_tracemalloc(const struct report *r)
{
	size_t n = stat_count(r), shown = r->top && r->top < n ? r->top : n;
	char line[8192];

	for (size_t i = 0; i < shown; i++) {
		format_stat(r, i, line, sizeof(line));
		fprintf(r->out, "%s\n", line);
	}
	fflush(r->out);
}

static void print_json(const struct report *r)
{
	size_t n = stat_count(r), shown = r->top && r->top < n ? r->top : n;
	tm_sum_t total;
	int64_t count;
	char num[48], num2[48];

	totals_of(r, 0, &total, &count);
	fprintf(r->out, "{\"time\": %.6f, \"pid\": %d, \"python\": ", r->time, (int)r->pid);
	json_string(r->out, r->python_version ? r->python_version : "");
	fprintf(r->out, ", \"traced_memory\": {\"current\": %" PRId64 ", \"peak\": %" PRId64 "}, \"key_type\": \"%s\"",
		r->current, r->peak, report_key_name(r->key));
	if (r->sampled)
		fprintf(r->out, ", \"sampled\": {\"pools\": %" PRIu64 ", \"live_samples\": %" PRIu64 "}",
			r->sample_pools, r->sample_live);
	fputs(", \"stats\": [", r->out);
	for (size_t i = 0; i < shown; i++) {
		const struct tm_traceback *tb = stat_traceback(r, i);

		fputs(i ? ", {\"traceback\": [" : "{\"traceback\": [", r->out);
		for (uint32_t j = 0; j < tb->nframe; j++) {
			fputs(j ? ", {\"filename\": " : "{\"filename\": ", r->out);
			json_string(r->out, tb->frames[j].filename);
			fprintf(r->out, ", \"lineno\": %u}", tb->frames[j].lineno);
		}
		if (r->diffs) {
			const struct tm_statistic_diff *d = &r->diffs->diffs[i];

			fprintf(r->out, "], \"size\": %s, \"count\": %" PRId64 ", \"size_diff\": %s"
				", \"count_diff\": %" PRId64 "}", tm_sum_text(num, sizeof(num), d->size), d->count,
				tm_sum_text(num2, sizeof(num2), d->size_diff), d->count_diff);
		} else {
			fprintf(r->out, "], \"size\": %s, \"count\": %" PRId64 "}",
				tm_sum_text(num, sizeof(num), r->stats->stats[i].size), r->stats->stats[i].count);
		}
	}
	fprintf(r->out, "], \"total_size\": %s, \"total_count\": %" PRId64 ", \"lost\": {",
		tm_sum_text(num, sizeof(num), total), count);
	for (int i = 0; i < r->nlost; i++)
		fprintf(r->out, "%s\"%s\": %" PRIu64, i ? ", " : "", r->lost[i].name, r->lost[i].value);
	fputs("}}\n", r->out);
	fflush(r->out);
}

void report_print(const struct report *r)
{
	if (r->format == REPORT_JSON)
		print_json(r);
	else if (r->format == REPORT_TRACEMALLOC)
		print_tracemalloc(r);
	else
		print_text(r);
}
