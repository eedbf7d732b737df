/* Snapshot storage: interned strings and tracebacks, and the traces. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tmtrace/engine.h"
#include "snapshot_impl.h"

struct tm_snapshot *tm_snapshot_new(unsigned traceback_limit)
{
	struct tm_snapshot *s = calloc(1, sizeof(*s));

	if (s) {
		s->traceback_limit = traceback_limit;
		s->info.traced_current = -1;
		s->info.traced_peak = -1;
	}
	return s;
}

struct tm_snapshot_info *tm_snapshot_info(struct tm_snapshot *s)
{
	return &s->info;
}

void tm_snapshot_free(struct tm_snapshot *s)
{
	if (!s)
		return;
	hashset_free(&s->strings);
	hashset_free(&s->tracebacks);
	arena_free(&s->arena);
	free(s->traces);
	free(s);
}

unsigned tm_snapshot_traceback_limit(const struct tm_snapshot *s)
{
	return s->traceback_limit;
}

static bool string_eq(const void *entry, const void *probe)
{
	return strcmp(entry, probe) == 0;
}

const char *tm_snapshot_intern(struct tm_snapshot *s, const char *str)
{
	size_t len = strlen(str);
	uint64_t h = hash_bytes(str, len);
	char *found = hashset_find(&s->strings, h, str, string_eq);

	if (found)
		return found;
	found = arena_strdup(&s->arena, str, len);
	if (!found || hashset_add(&s->strings, h, found))
		return NULL;
	return found;
}

uint64_t tm_traceback_hash(const struct tm_frame *frames, uint32_t nframe, uint32_t total_nframe)
{
	uint64_t h = hash_mix(nframe, total_nframe);

	for (uint32_t i = 0; i < nframe; i++)
		h = hash_mix(hash_mix(h, (uintptr_t)frames[i].filename), frames[i].lineno);
	return h;
}

struct traceback_probe {
	const struct tm_frame *frames;
	uint32_t nframe, total_nframe;
};

static bool traceback_eq(const void *entry, const void *probe)
{
	const struct tm_traceback *tb = entry;
	const struct traceback_probe *p = probe;

	if (tb->nframe != p->nframe || tb->total_nframe != p->total_nframe)
		return false;
	for (uint32_t i = 0; i < tb->nframe; i++)
		if (tb->frames[i].filename != p->frames[i].filename ||
		    tb->frames[i].lineno != p->frames[i].lineno)
			return false;
	return true;
}

const struct tm_traceback *tm_intern_traceback(struct hashset *set, struct arena *arena,
					       const struct tm_frame *frames, uint32_t nframe,
					       uint32_t total_nframe, uint32_t *next_id)
{
	struct traceback_probe probe = { frames, nframe, total_nframe };
	uint64_t h = tm_traceback_hash(frames, nframe, total_nframe);
	struct tm_traceback *tb = hashset_find(set, h, &probe, traceback_eq);

	if (tb)
		return tb;
	tb = arena_alloc(arena, sizeof(*tb) + nframe * sizeof(tb->frames[0]));
	if (!tb)
		return NULL;
	tb->nframe = nframe;
	tb->total_nframe = total_nframe;
	tb->id = (*next_id)++;
	tb->pad = 0;
	if (nframe) /* frames may be NULL for an empty traceback */
		memcpy(tb->frames, frames, nframe * sizeof(tb->frames[0]));
	if (hashset_add(set, h, tb))
		return NULL;
	return tb;
}

const struct tm_traceback *tm_snapshot_traceback(struct tm_snapshot *s, const struct tm_frame *frames,
						 uint32_t nframe, uint32_t total_nframe)
{
	return tm_intern_traceback(&s->tracebacks, &s->arena, frames, nframe, total_nframe, &s->ntracebacks);
}

size_t tm_snapshot_traceback_count(const struct tm_snapshot *s)
{
	return s->ntracebacks;
}

int tm_snapshot_add_trace(struct tm_snapshot *s, const struct tm_trace *trace)
{
	if (s->ntraces == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;
		struct tm_trace *grown = realloc(s->traces, cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		s->traces = grown;
		s->cap = cap;
	}
	s->traces[s->ntraces++] = *trace;
	return 0;
}

size_t tm_snapshot_trace_count(const struct tm_snapshot *s)
{
	return s->ntraces;
}

const struct tm_trace *tm_snapshot_traces(const struct tm_snapshot *s)
{
	return s->traces;
}

static int by_address(const void *a, const void *b)
{
	const struct tm_trace *x = *(const struct tm_trace *const *)a, *y = *(const struct tm_trace *const *)b;

	return x->address < y->address ? -1 : x->address > y->address;
}

const struct tm_trace *tm_snapshot_find_address(const struct tm_snapshot *s, uint64_t address)
{
	const struct tm_trace **sorted = malloc((s->ntraces ? s->ntraces : 1) * sizeof(*sorted));
	const struct tm_trace *found = NULL;
	size_t n = 0, lo = 0, hi;

	if (!sorted)
		return NULL;
	for (size_t i = 0; i < s->ntraces; i++)
		if (s->traces[i].count == 1 && s->traces[i].address)
			sorted[n++] = &s->traces[i];
	qsort(sorted, n, sizeof(*sorted), by_address);
	/* the last block starting at or before the address */
	hi = n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (sorted[mid]->address <= address)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo > 0) {
		const struct tm_trace *t = sorted[lo - 1];

		if (address < t->address + (t->size ? t->size : 1))
			found = t;
	}
	free(sorted);
	return found;
}

void tm_traceback_format(const struct tm_traceback *tb, bool has_limit, int limit, bool most_recent_first,
			 tm_source_fn source, void *source_ctx, void (*line)(void *ctx, const char *text),
			 void *line_ctx)
{
	/* Traceback is oldest first: frame k is frames[nframe - 1 - k] */
	int64_t n = tb->nframe, from = 0, to = n;
	char buf[8192];

	if (has_limit) {
		if (limit > 0)
			from = n - limit < 0 ? 0 : n - limit; /* self[-limit:] */
		else
			to = n + limit < 0 ? 0 : n + limit;   /* self[:limit] */
	}
	for (int64_t k = 0; k < to - from; k++) {
		int64_t idx = most_recent_first ? to - 1 - k : from + k;
		const struct tm_frame *f = &tb->frames[n - 1 - idx];
		const char *src = source ? source(source_ctx, f->filename, f->lineno) : NULL;

		snprintf(buf, sizeof(buf), "  File \"%s\", line %u", f->filename, f->lineno);
		line(line_ctx, buf);
		if (src && *src) {
			snprintf(buf, sizeof(buf), "    %s", src);
			line(line_ctx, buf);
		}
	}
}

void tm_set_why(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (!why || !whylen)
		return;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}
