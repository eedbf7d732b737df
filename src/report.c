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

static void totals_of(const struct tm_statistics *st, size_t from, int64_t *size, int64_t *count)
{
	*size = *count = 0;
	for (size_t i = from; i < st->count; i++) {
		*size += st->stats[i].size;
		*count += st->stats[i].count;
	}
}

static void print_source(const struct report *r, const struct tm_frame *f, const char *indent)
{
	const char *line = r->sources ? srcline_get(r->sources, f->filename, f->lineno) : NULL;

	if (line)
		fprintf(r->out, "%s%s\n", indent, line);
}

static void print_text(const struct report *r)
{
	const struct tm_statistics *st = r->stats;
	size_t shown = r->top && r->top < st->count ? r->top : st->count;
	char cur[32], peak[32], size[32], line[8192];
	char stamp[32];
	time_t now = (time_t)r->time;
	struct tm tm;
	int64_t total, count, other, other_count;
	char lost[512] = "";
	size_t used = 0;

	localtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(r->out, "[%s] pid %d, CPython %s: traced memory current=%s, peak=%s\n", stamp,
		(int)r->pid, r->python_version, tm_format_size(cur, sizeof(cur), (double)r->current, false),
		tm_format_size(peak, sizeof(peak), (double)r->peak, false));
	fprintf(r->out, "Top %zu %s\n", shown,
		r->key == TM_KEY_LINENO ? "lines" : r->key == TM_KEY_FILENAME ? "files" : "tracebacks");
	for (size_t i = 0; i < shown; i++) {
		const struct tm_statistic *s = &st->stats[i];
		const struct tm_traceback *tb = s->traceback;

		tm_format_statistic(line, sizeof(line), s);
		fprintf(r->out, "#%zu: %s\n", i + 1, line);
		if (r->key == TM_KEY_TRACEBACK) {
			/* whole tracebacks, oldest call first, as Traceback.format() */
			for (uint32_t j = tb->nframe; j-- > 0;) {
				fprintf(r->out, "  File \"%s\", line %u\n", tb->frames[j].filename,
					tb->frames[j].lineno);
				print_source(r, &tb->frames[j], "    ");
			}
		} else if (r->key == TM_KEY_LINENO && tb->nframe) {
			print_source(r, &tb->frames[0], "    ");
		}
	}
	totals_of(st, shown, &other, &other_count);
	if (shown < st->count)
		fprintf(r->out, "%zu other: %s\n", st->count - shown,
			tm_format_size(size, sizeof(size), (double)other, false));
	totals_of(st, 0, &total, &count);
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

static void print_json(const struct report *r)
{
	const struct tm_statistics *st = r->stats;
	size_t shown = r->top && r->top < st->count ? r->top : st->count;
	int64_t total, count;

	totals_of(st, 0, &total, &count);
	fprintf(r->out, "{\"time\": %.6f, \"pid\": %d, \"python\": ", r->time, (int)r->pid);
	json_string(r->out, r->python_version);
	fprintf(r->out, ", \"traced_memory\": {\"current\": %" PRId64 ", \"peak\": %" PRId64 "}, \"key_type\": \"%s\", \"stats\": [",
		r->current, r->peak, report_key_name(r->key));
	for (size_t i = 0; i < shown; i++) {
		const struct tm_statistic *s = &st->stats[i];

		fputs(i ? ", {\"traceback\": [" : "{\"traceback\": [", r->out);
		for (uint32_t j = 0; j < s->traceback->nframe; j++) {
			fputs(j ? ", {\"filename\": " : "{\"filename\": ", r->out);
			json_string(r->out, s->traceback->frames[j].filename);
			fprintf(r->out, ", \"lineno\": %u}", s->traceback->frames[j].lineno);
		}
		fprintf(r->out, "], \"size\": %" PRId64 ", \"count\": %" PRId64 "}", s->size, s->count);
	}
	fprintf(r->out, "], \"total_size\": %" PRId64 ", \"total_count\": %" PRId64 ", \"lost\": {", total, count);
	for (int i = 0; i < r->nlost; i++)
		fprintf(r->out, "%s\"%s\": %" PRIu64, i ? ", " : "", r->lost[i].name, r->lost[i].value);
	fputs("}}\n", r->out);
	fflush(r->out);
}

void report_print(const struct report *r)
{
	if (r->format == REPORT_JSON)
		print_json(r);
	else
		print_text(r);
}
