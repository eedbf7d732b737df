/* Snapshot.filter_traces(): tracemalloc.Filter and DomainFilter. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "tmtrace/engine.h"
#include "snapshot_impl.h"

/* _normalize_filename(): os.path.normcase() is the identity on POSIX;
 * a .pyc name is matched as its .py. */
static char *normalize(const char *name)
{
	size_t len = strlen(name);
	char *out = strdup(name);

	if (out && len >= 4 && strcmp(name + len - 4, ".pyc") == 0)
		out[len - 1] = '\0';
	return out;
}

/* One filter, with its verdict per filename cached by the (interned)
 * filename pointer: patterns are matched once per distinct file. */
struct compiled_filter {
	const struct tm_filter *f;
	char *pattern;
	struct hashset verdicts; /* entries: struct verdict */
	struct arena arena;
};

struct verdict {
	const char *filename;
	bool match;
};

static bool verdict_eq(const void *e, const void *p)
{
	return ((const struct verdict *)e)->filename == p;
}

static int filename_matches(struct compiled_filter *cf, const char *filename, bool *match)
{
	uint64_t h = hash_mix((uintptr_t)filename, 0x51);
	struct verdict *v = hashset_find(&cf->verdicts, h, filename, verdict_eq);
	char *name;

	if (v) {
		*match = v->match;
		return 0;
	}
	name = normalize(filename);
	v = arena_alloc(&cf->arena, sizeof(*v));
	if (!name || !v) {
		free(name);
		return -ENOMEM;
	}
	v->filename = filename;
	v->match = tm_fnmatch(name, cf->pattern);
	free(name);
	if (hashset_add(&cf->verdicts, h, v))
		return -ENOMEM;
	*match = v->match;
	return 0;
}

/* Filter._match_frame_impl */
static int frame_matches(struct compiled_filter *cf, const struct tm_frame *frame, bool *match)
{
	int err = filename_matches(cf, frame->filename, match);

	if (!err && *match && cf->f->has_lineno)
		*match = frame->lineno == cf->f->lineno;
	return err;
}

/* BaseFilter._match(trace) for a Filter or a DomainFilter */
static int trace_matches(struct compiled_filter *cf, const struct tm_trace *t, bool *match)
{
	const struct tm_filter *f = cf->f;
	const struct tm_traceback *tb = t->traceback;
	bool res = false, any = false;
	int err = 0;

	if (f->domain_only) {
		*match = (t->domain == f->domain) != !f->inclusive;
		return 0;
	}
	if (f->all_frames) {
		for (uint32_t i = 0; i < tb->nframe && !any && !err; i++)
			err = frame_matches(cf, &tb->frames[i], &any);
		res = any ? f->inclusive : !f->inclusive;
	} else if (tb->nframe) {
		err = frame_matches(cf, &tb->frames[0], &res);
		res = res != !f->inclusive;
	} else {
		/* traceback[0] of an empty traceback: tracemalloc raises;
		 * such traces never come out of tracemalloc */
		res = !f->inclusive;
	}
	if (f->has_domain)
		res = f->inclusive ? (res && t->domain == f->domain) : (res || t->domain != f->domain);
	*match = res;
	return err;
}

/* Snapshot._filter_trace: some inclusive filter matches (if any exist),
 * and every exclusive filter matches. */
static int keep_trace(struct compiled_filter *cfs, size_t n, const struct tm_trace *t, bool *keep)
{
	bool have_include = false, included = false;
	int err = 0;

	for (size_t i = 0; i < n && !err; i++) {
		bool m;

		if (!cfs[i].f->inclusive)
			continue;
		have_include = true;
		if (included)
			continue;
		err = trace_matches(&cfs[i], t, &m);
		included = m;
	}
	if (err || (have_include && !included)) {
		*keep = false;
		return err;
	}
	for (size_t i = 0; i < n && !err; i++) {
		bool m;

		if (cfs[i].f->inclusive)
			continue;
		err = trace_matches(&cfs[i], t, &m);
		if (!err && !m) {
			*keep = false;
			return 0;
		}
	}
	*keep = true;
	return err;
}

struct tm_snapshot *tm_snapshot_filter(const struct tm_snapshot *s, const struct tm_filter *filters,
				       size_t nfilters)
{
	struct tm_snapshot *out = tm_snapshot_new(s->traceback_limit);
	struct compiled_filter *cfs = calloc(nfilters ? nfilters : 1, sizeof(*cfs));
	/* old traceback id -> new traceback, for the copy */
	const struct tm_traceback **moved = calloc(s->ntracebacks ? s->ntracebacks : 1, sizeof(*moved));
	int err = (!out || !cfs || !moved) ? -ENOMEM : 0;

	if (out)
		out->info = s->info;
	for (size_t i = 0; i < nfilters && !err; i++) {
		cfs[i].f = &filters[i];
		if (!filters[i].domain_only) {
			cfs[i].pattern = normalize(filters[i].filename_pattern ? filters[i].filename_pattern : "");
			if (!cfs[i].pattern)
				err = -ENOMEM;
		}
	}
	for (size_t i = 0; i < s->ntraces && !err; i++) {
		const struct tm_trace *t = &s->traces[i];
		const struct tm_traceback *tb = t->traceback;
		struct tm_trace copy = *t;
		bool keep = true;

		if (nfilters)
			err = keep_trace(cfs, nfilters, t, &keep);
		if (err || !keep)
			continue;
		if (!moved[tb->id]) {
			struct tm_frame frames[tb->nframe ? tb->nframe : 1];

			for (uint32_t f = 0; f < tb->nframe && !err; f++) {
				frames[f].filename = tm_snapshot_intern(out, tb->frames[f].filename);
				frames[f].lineno = tb->frames[f].lineno;
				if (!frames[f].filename)
					err = -ENOMEM;
			}
			if (!err)
				moved[tb->id] = tm_snapshot_traceback(out, frames, tb->nframe, tb->total_nframe);
			if (!moved[tb->id])
				err = -ENOMEM;
		}
		if (err)
			break;
		copy.traceback = moved[tb->id];
		err = tm_snapshot_add_trace(out, &copy);
	}
	for (size_t i = 0; cfs && i < nfilters; i++) {
		free(cfs[i].pattern);
		hashset_free(&cfs[i].verdicts);
		arena_free(&cfs[i].arena);
	}
	free(cfs);
	free(moved);
	if (err) {
		tm_snapshot_free(out);
		return NULL;
	}
	return out;
}
