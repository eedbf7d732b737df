#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "engine/arena.h"
#include "engine/hashset.h"
#include "linetable.h"
#include "pystr.h"
#include "remote.h"
#include "resolver.h"

#define LINETABLE_MAX (1 << 20)

/* What tmtrace learned of one code object, keyed by (address, fingerprint). */
struct code_info {
	uint64_t code;
	uint32_t fingerprint;
	bool readable;
	const char *filename;
	int firstlineno;
	uint8_t *linetable;
	size_t linetable_len;
};

struct resolver {
	const struct py_target *target;
	const struct py_offsets *off;
	struct arena arena;
	struct hashset codes;
	struct hashset strings;
	struct resolved_traceback **by_id;
	size_t cap;
	uint64_t unresolved;
	const char *unknown;
	resolver_generation_fn generation;
	void *generation_ctx;
};

void resolver_set_generations(struct resolver *r, resolver_generation_fn fn, void *ctx)
{
	r->generation = fn;
	r->generation_ctx = ctx;
}

static int code_generation(struct resolver *r, uint64_t code, uint64_t *gen)
{
	*gen = 0;
	return r->generation ? r->generation(r->generation_ctx, code, gen) : 0;
}

static bool string_eq(const void *e, const void *p)
{
	return strcmp(e, p) == 0;
}

static const char *intern(struct resolver *r, const char *s)
{
	uint64_t h = hash_bytes(s, strlen(s));
	char *found = hashset_find(&r->strings, h, s, string_eq);

	if (found)
		return found;
	found = arena_strdup(&r->arena, s, strlen(s));
	if (found && hashset_add(&r->strings, h, found))
		return NULL;
	return found;
}

int resolver_new(const struct py_target *t, struct resolver **out)
{
	struct resolver *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->target = t;
	r->off = t->offsets;
	r->unknown = intern(r, "<unknown>");
	if (!r->unknown) {
		resolver_free(r);
		return -ENOMEM;
	}
	*out = r;
	return 0;
}

void resolver_free(struct resolver *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->codes.cap; i++) {
		struct code_info *ci = r->codes.slots ? r->codes.slots[i] : NULL;

		if (ci)
			free(ci->linetable);
	}
	hashset_free(&r->codes);
	hashset_free(&r->strings);
	arena_free(&r->arena);
	free(r->by_id);
	free(r);
}

struct code_key {
	uint64_t code;
	uint32_t fingerprint;
};

static bool code_eq(const void *e, const void *p)
{
	const struct code_info *ci = e;
	const struct code_key *k = p;

	return ci->code == k->code && ci->fingerprint == k->fingerprint;
}

static char *read_code_fields(struct resolver *r, struct code_info *ci, uint64_t generation);

/* Reads the code object and checks it is still the one BPF saw: the same
 * fingerprint and generation before reading, and no death at its address
 * by the end (a code object that dies meanwhile may be replaced at the same
 * address by one with the same fingerprint but other lines). */
static void read_code(struct resolver *r, struct code_info *ci)
{
	uint64_t gen_before, gen_after;
	char *filename;

	if (code_generation(r, ci->code, &gen_before))
		return;
	filename = read_code_fields(r, ci, gen_before);
	if (!ci->readable || code_generation(r, ci->code, &gen_after) || gen_after != gen_before) {
		ci->readable = false;
		free(ci->linetable);
		ci->linetable = NULL;
		return;
	}
	/* A filename that is not a ready str is <unknown>, as in tracemalloc. */
	ci->filename = filename ? intern(r, filename) : NULL;
	if (!ci->filename)
		ci->filename = r->unknown;
	free(filename);
}

static char *read_code_fields(struct resolver *r, struct code_info *ci, uint64_t generation)
{
	const struct py_offsets *o = r->off;
	pid_t pid = r->target->pid;
	uint64_t filename = 0, name = 0, linetable = 0, size = 0, tlen = 0;
	uint32_t firstlineno = 0;
	char buf[PYSTR_MAX_CHARS * 4 + 1];

	if (remote_read_u64(pid, ci->code + o->code_filename, &filename) ||
	    remote_read_u64(pid, ci->code + o->code_name, &name) ||
	    remote_read_u64(pid, ci->code + o->code_linetable, &linetable) ||
	    remote_read_u64(pid, ci->code + o->varobject_size, &size) ||
	    remote_read(pid, ci->code + o->code_firstlineno, &firstlineno, sizeof(firstlineno)))
		return NULL;
	if (tm_fingerprint_with_generation(tm_code_fingerprint(filename, name, linetable, firstlineno, size),
					   generation) != ci->fingerprint)
		return NULL; /* died and replaced before we got to it */
	ci->firstlineno = (int)firstlineno;
	if (remote_read_u64(pid, linetable + o->varobject_size, &tlen) || tlen > LINETABLE_MAX)
		return NULL;
	ci->linetable = malloc(tlen ? tlen : 1);
	if (!ci->linetable || remote_read(pid, linetable + o->bytes_sval, ci->linetable, tlen)) {
		free(ci->linetable);
		ci->linetable = NULL;
		return NULL;
	}
	ci->linetable_len = tlen;
	ci->readable = true;
	return pystr_read(pid, o, filename, buf, sizeof(buf)) == 0 ? strdup(buf) : NULL;
}

int resolver_add_code(struct resolver *r, const struct tm_code_event *ev)
{
	struct code_key k = { ev->code, ev->fingerprint };
	uint64_t h = hash_mix(ev->code, ev->fingerprint);
	struct pystr_source src = { .pid = r->target->pid, .base = ev->filename_addr, .bytes = ev->filename,
				    .len = ev->filename_len };
	char buf[PYSTR_MAX_CHARS * 4 + 1];
	struct code_info *ci = hashset_find(&r->codes, h, &k, code_eq);

	if (ci && ci->readable)
		return 0;
	if (ev->linetable_len != ev->linetable_total || !ev->filename_len)
		return 0; /* too long to copy or unreadable: read from the target when needed */
	if (!ci) {
		ci = arena_alloc(&r->arena, sizeof(*ci));
		if (!ci)
			return -ENOMEM;
		memset(ci, 0, sizeof(*ci));
		ci->code = ev->code;
		ci->fingerprint = ev->fingerprint;
		if (hashset_add(&r->codes, h, ci))
			return -ENOMEM;
	}
	free(ci->linetable);
	ci->linetable = malloc(ev->linetable_len ? ev->linetable_len : 1);
	if (!ci->linetable)
		return -ENOMEM;
	memcpy(ci->linetable, ev->linetable, ev->linetable_len);
	ci->linetable_len = ev->linetable_len;
	ci->firstlineno = (int)ev->firstlineno;
	ci->filename = NULL;
	if (pystr_read_from(&src, r->off, ev->filename_addr, buf, sizeof(buf)) == 0)
		ci->filename = intern(r, buf);
	if (!ci->filename)
		ci->filename = r->unknown;
	ci->readable = true;
	return 0;
}

static struct code_info *code_info_get(struct resolver *r, uint64_t code, uint32_t fingerprint)
{
	struct code_key k = { code, fingerprint };
	uint64_t h = hash_mix(code, fingerprint);
	struct code_info *ci = hashset_find(&r->codes, h, &k, code_eq);

	if (ci)
		return ci;
	ci = arena_alloc(&r->arena, sizeof(*ci));
	if (!ci)
		return NULL;
	memset(ci, 0, sizeof(*ci));
	ci->code = code;
	ci->fingerprint = fingerprint;
	read_code(r, ci);
	if (hashset_add(&r->codes, h, ci))
		return NULL;
	return ci;
}

static void resolve_frame(struct resolver *r, const struct tm_raw_frame *raw, struct tm_frame *out)
{
	struct code_info *ci;
	int line;

	out->filename = r->unknown;
	out->lineno = 0;
	if (!raw->code)
		return; /* BPF could not read it; already counted there */
	ci = code_info_get(r, raw->code, raw->fingerprint);
	if (!ci || !ci->readable) {
		r->unresolved++;
		return;
	}
	out->filename = ci->filename;
	if (raw->lasti >= 0 && (raw->lasti & TM_LASTI_IS_LINENO)) {
		out->lineno = (unsigned)(raw->lasti & ~TM_LASTI_IS_LINENO); /* f_lineno, under a tracer */
		return;
	}
	line = linetable_addr2line(r->target->minor, ci->linetable, ci->linetable_len, ci->firstlineno,
				   raw->lasti);
	out->lineno = line < 0 ? 0 : (unsigned)line;
}

int resolver_add(struct resolver *r, uint32_t id, const struct tm_raw_stack *stack)
{
	struct resolved_traceback *tb;
	uint32_t n = stack->nframe;

	if (n > TM_MAX_NFRAME)
		return -EINVAL;
	if (id >= r->cap) {
		size_t cap = r->cap ? r->cap : 1024;

		while (cap <= id)
			cap *= 2;
		struct resolved_traceback **grown = realloc(r->by_id, cap * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		memset(grown + r->cap, 0, (cap - r->cap) * sizeof(*grown));
		r->by_id = grown;
		r->cap = cap;
	}
	if (r->by_id[id])
		return 0;
	tb = arena_alloc(&r->arena, sizeof(*tb));
	if (!tb)
		return -ENOMEM;
	/* No Python frame at all: tracemalloc's empty traceback, one
	 * <unknown>:0 frame with total_nframe 1. */
	tb->nframe = n ? n : 1;
	tb->total_nframe = n ? stack->total_nframe : 1;
	tb->frames = arena_alloc(&r->arena, tb->nframe * sizeof(*tb->frames));
	if (!tb->frames)
		return -ENOMEM;
	tb->frames[0] = (struct tm_frame){ r->unknown, 0 };
	for (uint32_t i = 0; i < n; i++)
		resolve_frame(r, &stack->frames[i], &tb->frames[i]);
	r->by_id[id] = tb;
	return 0;
}

const struct resolved_traceback *resolver_get(const struct resolver *r, uint32_t id)
{
	return id < r->cap ? r->by_id[id] : NULL;
}

uint64_t resolver_unresolved(const struct resolver *r)
{
	return r->unresolved;
}
