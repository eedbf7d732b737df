/*
 * tracemalloc's pickle format (src/engine/pickle.c), both directions:
 *  - round trips through the engine (edge values, batch and memo sizes,
 *    frames of 64 KiB and more, counts split into traces);
 *  - the pickles real CPythons 3.8-3.13 wrote (tests/unit/fixtures/
 *    pickle-3.X-NAME.pickle, by scripts/gen-pickle-fixtures.py) against
 *    their JSON sidecars, and, for those shaped like take_snapshot()'s, the
 *    writer must give back the very same bytes;
 *  - hostile input: every truncation, foreign opcodes and globals, bad memo
 *    references, huge lengths, deep nesting, wrong arities and ranges, and
 *    random mutations; all must fail with -EINVAL and a reason (the suite
 *    also runs under ASan+UBSan, which catches what a wrong answer would
 *    not).
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/pickle.h"
#include "unit.h"

#define FIXTURE_DIR "tests/unit/fixtures"
/* Six versions, eight pickles each. */
#define MIN_FIXTURES 48

/* ------------------------------------------------------------------ */
/* Helpers                                                            */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
	uint64_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

static uint8_t *read_whole(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc(n + 1);
		if (buf && fread(buf, 1, n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		}
		*len = n;
	}
	fclose(f);
	return buf;
}

static const struct tm_traceback *tb_of(struct tm_snapshot *s, const char *const *files, const unsigned *lines,
					uint32_t n, uint32_t total)
{
	struct tm_frame frames[16];

	for (uint32_t i = 0; i < n; i++) {
		frames[i].filename = tm_snapshot_intern(s, files[i]);
		frames[i].lineno = lines[i];
	}
	return tm_snapshot_traceback(s, frames, n, total);
}

static void add(struct tm_snapshot *s, uint32_t domain, uint64_t size, uint64_t count, const struct tm_traceback *tb)
{
	struct tm_trace t = { .address = 0x1000, .size = size, .count = count, .domain = domain, .traceback = tb };

	CU_ASSERT_EQUAL_FATAL(tm_snapshot_add_trace(s, &t), 0);
}

static bool same_tb(const struct tm_traceback *a, const struct tm_traceback *b, bool drop_total)
{
	if (a->nframe != b->nframe)
		return false;
	if ((drop_total ? UINT32_MAX : a->total_nframe) != b->total_nframe)
		return false;
	for (uint32_t i = 0; i < a->nframe; i++)
		if (strcmp(a->frames[i].filename, b->frames[i].filename) || a->frames[i].lineno != b->frames[i].lineno)
			return false;
	return true;
}

/* `got` (parsed) against `want` (built; counts of 1): what a pickle keeps. */
static void expect_same(const struct tm_snapshot *want, const struct tm_snapshot *got, bool drop_total,
			const char *what)
{
	size_t n = tm_snapshot_trace_count(want);
	const struct tm_trace *a = tm_snapshot_traces(want), *b = tm_snapshot_traces(got);

	if (tm_snapshot_traceback_limit(want) != tm_snapshot_traceback_limit(got))
		unit_fail(__FILE__, __LINE__, "%s: traceback_limit %u, want %u", what,
			  tm_snapshot_traceback_limit(got), tm_snapshot_traceback_limit(want));
	if (tm_snapshot_trace_count(got) != n) {
		unit_fail(__FILE__, __LINE__, "%s: %zu traces, want %zu", what, tm_snapshot_trace_count(got), n);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (a[i].domain != b[i].domain || a[i].size != b[i].size || b[i].count != 1 || b[i].address != 0 ||
		    !same_tb(a[i].traceback, b[i].traceback, drop_total)) {
			unit_fail(__FILE__, __LINE__, "%s: trace %zu differs", what, i);
			return;
		}
	}
}

static struct tm_snapshot *roundtrip(const struct tm_snapshot *s, int minor, uint8_t **out, size_t *outlen)
{
	struct tm_snapshot *r = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;
	char why[256] = "";
	int err;

	err = tm_pickle_write(s, minor, &buf, &len);
	CU_ASSERT_EQUAL(err, 0);
	if (err)
		return NULL;
	err = tm_pickle_parse(buf, len, &r, why, sizeof(why));
	if (err)
		unit_fail(__FILE__, __LINE__, "parse of our own pickle: %d (%s)", err, why);
	if (out) {
		*out = buf;
		*outlen = len;
	} else {
		free(buf);
	}
	return r;
}

/* Checks that a written pickle reads back the same, and that writing what
 * was read gives the same bytes again. */
static void check_roundtrip(const struct tm_snapshot *s, const char *what)
{
	static const int minors[] = { 8, 9, 11, 13 };

	for (size_t m = 0; m < sizeof(minors) / sizeof(minors[0]); m++) {
		uint8_t *a, *b = NULL;
		size_t alen, blen = 0;
		struct tm_snapshot *r = roundtrip(s, minors[m], &a, &alen);

		if (!r)
			continue;
		expect_same(s, r, minors[m] == 8, what);
		CU_ASSERT_EQUAL(tm_pickle_write(r, minors[m], &b, &blen), 0);
		if (blen != alen || memcmp(a, b, alen))
			unit_fail(__FILE__, __LINE__, "%s: 3.%d pickle not stable over a round trip", what, minors[m]);
		free(a);
		free(b);
		tm_snapshot_free(r);
	}
}

#define expect_invalid(data, len, reason) expect_invalid_at(__LINE__, data, len, reason)
/* A string literal as input: its length is sizeof's, NULs included. */
#define expect_invalid_lit(lit, reason) expect_invalid_at(__LINE__, (const uint8_t *)(lit), sizeof(lit) - 1, reason)

static void expect_invalid_at(unsigned line, const uint8_t *data, size_t len, const char *reason)
{
	struct tm_snapshot *s = (struct tm_snapshot *)&rng_state; /* must be reset */
	char why[256] = "";
	int err = tm_pickle_parse(data, len, &s, why, sizeof(why));

	if (err != -EINVAL)
		unit_fail(__FILE__, line, "parse returned %d, want -EINVAL (%s)", err, reason ? reason : "");
	else if (!why[0] || strchr(why, '\n'))
		unit_fail(__FILE__, line, "no one-line reason given");
	else if (reason && !strstr(why, reason))
		unit_fail(__FILE__, line, "reason \"%s\", want one with \"%s\"", why, reason);
	if (s) {
		unit_fail(__FILE__, line, "*out not NULL after an error");
		if (!err)
			tm_snapshot_free(s);
	}
}

/* ------------------------------------------------------------------ */
/* A pickle assembler for hand-made inputs                            */

struct pb {
	uint8_t *d;
	size_t n, cap;
};

static void pb_raw(struct pb *b, const void *p, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 64;
		b->d = realloc(b->d, b->cap);
		CU_ASSERT_PTR_NOT_NULL_FATAL(b->d);
	}
	memcpy(b->d + b->n, p, n);
	b->n += n;
}

#define pb_lit(b, lit) pb_raw(b, lit, sizeof(lit) - 1)

static void pb_op(struct pb *b, int op)
{
	uint8_t c = (uint8_t)op;

	pb_raw(b, &c, 1);
}

static void pb_le(struct pb *b, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		pb_op(b, (uint8_t)(v >> (8 * i)));
}

static void pb_str(struct pb *b, const char *s)
{
	size_t n = strlen(s);

	if (n < 256) {
		pb_op(b, 0x8c); /* SHORT_BINUNICODE */
		pb_op(b, (int)n);
	} else {
		pb_op(b, 'X'); /* BINUNICODE */
		pb_le(b, n, 4);
	}
	pb_raw(b, s, n);
}

/* Any int, as the C pickler chooses the opcode. */
static void pb_int(struct pb *b, int64_t v)
{
	if (v >= 0 && v <= 0xff) {
		pb_op(b, 'K');
		pb_op(b, (int)v);
	} else if (v >= 0 && v <= 0xffff) {
		pb_op(b, 'M');
		pb_le(b, (uint64_t)v, 2);
	} else if (v >= INT32_MIN && v <= INT32_MAX) {
		pb_op(b, 'J');
		pb_le(b, (uint64_t)v, 4);
	} else {
		pb_op(b, 0x8a); /* LONG1 with 8 bytes: enough for an int64 */
		pb_op(b, 8);
		pb_le(b, (uint64_t)v, 8);
	}
}

/* LONG1 of raw two's complement bytes: for what int64 cannot hold. */
static void pb_long(struct pb *b, const char *bytes, int n)
{
	pb_op(b, 0x8a);
	pb_op(b, n);
	pb_raw(b, bytes, n);
}

/* Everything before the list's items: protocol 4, no memo. */
static void pb_head(struct pb *b)
{
	pb_op(b, 0x80);
	pb_op(b, 4);
	pb_str(b, "tracemalloc");
	pb_str(b, "Snapshot");
	pb_op(b, 0x93); /* STACK_GLOBAL */
	pb_op(b, ')');
	pb_op(b, 0x81); /* NEWOBJ */
	pb_op(b, '}');
	pb_op(b, '(');
	pb_str(b, "traces");
	pb_str(b, "tracemalloc");
	pb_str(b, "_Traces");
	pb_op(b, 0x93);
	pb_op(b, ')');
	pb_op(b, 0x81);
	pb_op(b, '}');
	pb_str(b, "_traces");
	pb_op(b, ']');
}

static void pb_tail_limit(struct pb *b)
{
	pb_op(b, 's'); /* SETITEM */
	pb_op(b, 'b'); /* BUILD */
	pb_str(b, "traceback_limit");
}

static void pb_tail(struct pb *b, int64_t limit)
{
	pb_tail_limit(b);
	pb_int(b, limit);
	pb_op(b, 'u'); /* SETITEMS */
	pb_op(b, 'b');
	pb_op(b, '.');
}

/* One (filename, lineno) frame. */
static void pb_frame(struct pb *b, const char *file, int64_t lineno)
{
	pb_str(b, file);
	pb_int(b, lineno);
	pb_op(b, 0x86); /* TUPLE2 */
}

/* (domain, size, ((file, lineno),), total) with plain values. */
static void pb_trace(struct pb *b, int64_t domain, int64_t size, int64_t lineno, int64_t total)
{
	pb_op(b, '(');
	pb_int(b, domain);
	pb_int(b, size);
	pb_frame(b, "a.py", lineno);
	pb_op(b, 0x85); /* TUPLE1 */
	if (total < 0)
		pb_op(b, 'N');
	else
		pb_int(b, total);
	pb_op(b, 't');
}

/* A complete pickle around one trace list body. */
static struct pb pb_snapshot(void (*items)(struct pb *b, int arg), int arg)
{
	struct pb b = { 0 };

	pb_head(&b);
	pb_op(&b, '(');
	items(&b, arg);
	pb_op(&b, 'e'); /* APPENDS */
	pb_tail(&b, 5);
	return b;
}

static struct tm_snapshot *parse_ok(const struct pb *b, const char *what)
{
	struct tm_snapshot *s = NULL;
	char why[256] = "";
	int err = tm_pickle_parse(b->d, b->n, &s, why, sizeof(why));

	if (err)
		unit_fail(__FILE__, __LINE__, "%s: parse failed: %d (%s)", what, err, why);
	return s;
}

/* ------------------------------------------------------------------ */
/* Round trips                                                        */

static void test_roundtrip_edges(void)
{
	static const char *const files[] = { "a.py", "caf\xc3\xa9.py", "\xf0\x9f\x90\x8d/\xe6\x97\xa5.py",
					     "lone\xed\xb2\x80surrogate.py", "<unknown>", "/usr/lib/x.pyc" };
	static const uint64_t sizes[] = { 0, 1, 255, 256, 65535, 65536, 0x7fffffff, 0x80000000, 0xffffffff,
					  0x100000000, 1ULL << 40, (1ULL << 63) - 1, 1ULL << 63, UINT64_MAX };
	static const uint32_t domains[] = { 0, 1, 255, 256, 65536, 0x7fffffff, 0x80000000, UINT32_MAX };
	static const uint32_t totals[] = { 0, 1, 3, 255, 65535, 0x80000000, UINT32_MAX - 1, UINT32_MAX };
	static const unsigned linenos[] = { 0, 1, 300, 0x80000000u, UINT32_MAX };
	struct tm_snapshot *s = tm_snapshot_new(UINT32_MAX);
	const char *f[6];
	unsigned l[6];

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint32_t n = 1 + i % 6;

		for (uint32_t j = 0; j < n; j++) {
			f[j] = files[(i + j) % 6];
			l[j] = linenos[(i + j) % 5];
		}
		add(s, domains[i % 8], sizes[i], 1, tb_of(s, f, l, n, totals[i % 8]));
		add(s, domains[(i + 3) % 8], sizes[i], 1, tb_of(s, f, l, n, totals[i % 8]));
	}
	add(s, 9, 9, 1, tb_of(s, NULL, NULL, 0, UINT32_MAX)); /* no frames */
	add(s, 9, 10, 1, tb_of(s, NULL, NULL, 0, 0));
	check_roundtrip(s, "edges");
	tm_snapshot_free(s);

	s = tm_snapshot_new(0);
	check_roundtrip(s, "empty");
	tm_snapshot_free(s);
}

/* List batches of 1000 (APPEND for one), memo indexes past 255, frames of
 * 64 KiB, str lengths that change opcode or bypass frames. */
static void test_roundtrip_shapes(void)
{
	static const size_t counts[] = { 1, 2, 999, 1000, 1001, 2000, 2001, 30000 };
	char *names[40];

	for (int i = 0; i < 40; i++) {
		size_t len = i == 0 ? 70000 : i == 1 ? 255 : i == 2 ? 256 : i == 3 ? 65535 : 10 + i;

		names[i] = malloc(len + 1);
		memset(names[i], 'a' + i % 26, len);
		names[i][len] = '\0';
	}
	for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
		struct tm_snapshot *s = tm_snapshot_new(7);
		const struct tm_traceback *tbs[500];
		char what[32];

		for (int i = 0; i < 500; i++) {
			const char *f[7];
			unsigned l[7];
			uint32_t n = 1 + rnd() % 7;

			for (uint32_t j = 0; j < n; j++) {
				/* The huge names only now and then. */
				f[j] = names[(rnd() % 50 < 2) ? rnd() % 4 : 4 + rnd() % 36];
				l[j] = (unsigned)(rnd() % 100000);
			}
			tbs[i] = tb_of(s, f, l, n, rnd() % 3 ? n : UINT32_MAX);
		}
		for (size_t i = 0; i < counts[c]; i++)
			add(s, (uint32_t)(rnd() % 3), rnd() >> (rnd() % 64), 1, tbs[rnd() % 500]);
		snprintf(what, sizeof(what), "%zu traces", counts[c]);
		check_roundtrip(s, what);
		tm_snapshot_free(s);
	}
	for (int i = 0; i < 40; i++)
		free(names[i]);
}

/* Pickles have no counts: a trace of count N becomes N traces whose sizes
 * add up, so that Python's statistics see the same size and count. */
static void test_write_counts(void)
{
	static const char *const f[] = { "x.py" };
	static const unsigned l[] = { 3 };
	struct tm_snapshot *s = tm_snapshot_new(1), *r;
	const struct tm_trace *t;

	add(s, 0, 10, 3, tb_of(s, f, l, 1, 1));
	add(s, 1, 2, 5, tb_of(s, f, l, 1, 1));
	r = roundtrip(s, 12, NULL, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_EQUAL_FATAL(tm_snapshot_trace_count(r), 8);
	t = tm_snapshot_traces(r);
	CU_ASSERT(t[0].size == 4 && t[1].size == 3 && t[2].size == 3);
	CU_ASSERT(t[3].size == 1 && t[4].size == 1 && t[5].size == 0 && t[7].size == 0);
	CU_ASSERT(t[0].traceback == t[7].traceback && t[0].domain == 0 && t[7].domain == 1);
	tm_snapshot_free(r);
	tm_snapshot_free(s);
}

static void test_write_errors(void)
{
	static const char *const good[] = { "x.py" }, *const bad[] = { "bad\xff.py" };
	static const unsigned l[] = { 3 };
	struct tm_snapshot *s = tm_snapshot_new(1);
	struct tm_trace t = { .size = 1, .count = 1 };
	uint8_t *buf = malloc(3);
	size_t len = 3;

	/* Appends to what the buffer holds. */
	memcpy(buf, "abc", 3);
	add(s, 0, 10, 1, tb_of(s, good, l, 1, 1));
	CU_ASSERT_EQUAL(tm_pickle_write(s, 11, &buf, &len), 0);
	CU_ASSERT(len > 3 && !memcmp(buf, "abc", 3) && buf[3] == 0x80);

	/* Errors leave the length as it was. */
	len = 3;
	CU_ASSERT_EQUAL(tm_pickle_write(s, 7, &buf, &len), -EINVAL);
	CU_ASSERT_EQUAL(len, 3);
	add(s, 0, 10, 1, tb_of(s, bad, l, 1, 1)); /* Python could not load it */
	CU_ASSERT_EQUAL(tm_pickle_write(s, 11, &buf, &len), -EINVAL);
	CU_ASSERT_EQUAL(len, 3);
	tm_snapshot_free(s);

	s = tm_snapshot_new(1);
	t.traceback = tb_of(s, good, l, 1, 1);
	t.count = 0;
	CU_ASSERT_EQUAL_FATAL(tm_snapshot_add_trace(s, &t), 0);
	CU_ASSERT_EQUAL(tm_pickle_write(s, 11, &buf, &len), -EINVAL);
	tm_snapshot_free(s);

	s = tm_snapshot_new(1);
	t.traceback = NULL;
	t.count = 1;
	CU_ASSERT_EQUAL_FATAL(tm_snapshot_add_trace(s, &t), 0);
	CU_ASSERT_EQUAL(tm_pickle_write(s, 11, &buf, &len), -EINVAL);
	CU_ASSERT_EQUAL(len, 3);
	tm_snapshot_free(s);
	free(buf);
}

/* ------------------------------------------------------------------ */
/* Real CPython pickles                                               */

/* A small JSON reader for the sidecars (trusted input, but checked). */
enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jv {
	enum jtype type;
	uint64_t num;
	char *str; /* J_STR, UTF-8 with surrogates encoded like 'surrogatepass' */
	size_t len;
	struct jv *items; /* J_ARR items, J_OBJ members */
	char **keys;      /* J_OBJ */
	size_t n;
};

struct jparser {
	const char *p, *end;
	bool bad;
};

static void jv_free(struct jv *v)
{
	for (size_t i = 0; i < v->n; i++) {
		jv_free(&v->items[i]);
		if (v->keys)
			free(v->keys[i]);
	}
	free(v->items);
	free(v->keys);
	free(v->str);
}

static void jskip(struct jparser *j)
{
	while (j->p < j->end && strchr(" \t\r\n", *j->p))
		j->p++;
}

static bool jlit(struct jparser *j, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n))
		return false;
	j->p += n;
	return true;
}

static unsigned jhex4(struct jparser *j)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++) {
		char c = j->p < j->end ? *j->p++ : 0;

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			j->bad = true;
	}
	return v;
}

static void jutf8(struct pb *b, unsigned cp)
{
	if (cp < 0x80) {
		pb_op(b, cp);
	} else if (cp < 0x800) {
		pb_op(b, 0xc0 | cp >> 6);
		pb_op(b, 0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		pb_op(b, 0xe0 | cp >> 12);
		pb_op(b, 0x80 | (cp >> 6 & 0x3f));
		pb_op(b, 0x80 | (cp & 0x3f));
	} else {
		pb_op(b, 0xf0 | cp >> 18);
		pb_op(b, 0x80 | (cp >> 12 & 0x3f));
		pb_op(b, 0x80 | (cp >> 6 & 0x3f));
		pb_op(b, 0x80 | (cp & 0x3f));
	}
}

static void jstring(struct jparser *j, struct jv *v)
{
	struct pb b = { 0 };

	j->p++; /* the quote */
	while (j->p < j->end && *j->p != '"') {
		char c = *j->p++;

		if (c != '\\') {
			pb_op(&b, (uint8_t)c);
			continue;
		}
		c = j->p < j->end ? *j->p++ : 0;
		switch (c) {
		case 'n': pb_op(&b, '\n'); break;
		case 't': pb_op(&b, '\t'); break;
		case 'r': pb_op(&b, '\r'); break;
		case 'b': pb_op(&b, '\b'); break;
		case 'f': pb_op(&b, '\f'); break;
		case '"': case '\\': case '/': pb_op(&b, c); break;
		case 'u': {
			unsigned cp = jhex4(j);

			/* A surrogate pair is one code point; a lone
			 * surrogate stays itself. */
			if (cp >= 0xd800 && cp < 0xdc00 && j->end - j->p >= 6 && j->p[0] == '\\' &&
			    j->p[1] == 'u') {
				const char *save = j->p;
				unsigned lo;

				j->p += 2;
				lo = jhex4(j);
				if (lo >= 0xdc00 && lo < 0xe000)
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				else
					j->p = save;
			}
			jutf8(&b, cp);
			break;
		}
		default:
			j->bad = true;
		}
	}
	if (j->p >= j->end)
		j->bad = true;
	j->p++;
	pb_op(&b, 0);
	v->type = J_STR;
	v->str = (char *)b.d;
	v->len = b.n - 1;
}

static void jvalue(struct jparser *j, struct jv *v, int depth)
{
	memset(v, 0, sizeof(*v));
	jskip(j);
	if (j->p >= j->end || depth > 16) {
		j->bad = true;
		return;
	}
	if (*j->p == '"') {
		jstring(j, v);
	} else if (*j->p == '[' || *j->p == '{') {
		bool obj = *j->p++ == '{';

		v->type = obj ? J_OBJ : J_ARR;
		for (size_t cap = 0; !j->bad;) {
			jskip(j);
			if (j->p < j->end && *j->p == (obj ? '}' : ']')) {
				j->p++;
				break;
			}
			if (v->n && !jlit(j, ","))
				j->bad = true;
			if (v->n == cap) {
				cap = cap ? cap * 2 : 8;
				v->items = realloc(v->items, cap * sizeof(*v->items));
				if (obj)
					v->keys = realloc(v->keys, cap * sizeof(*v->keys));
			}
			if (obj) {
				struct jv k;

				jskip(j);
				if (j->p >= j->end || *j->p != '"') {
					j->bad = true;
					break;
				}
				jstring(j, &k);
				v->keys[v->n] = k.str;
				jskip(j);
				if (!jlit(j, ":"))
					j->bad = true;
			}
			jvalue(j, &v->items[v->n++], depth + 1);
		}
	} else if (jlit(j, "null")) {
		v->type = J_NULL;
	} else if (jlit(j, "true") || jlit(j, "false")) {
		v->type = J_BOOL;
		v->num = j->p[-1] == 'e' && j->p[-2] == 'u';
	} else if (*j->p >= '0' && *j->p <= '9') {
		v->type = J_NUM;
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
			unsigned d = *j->p++ - '0';

			if (v->num > (UINT64_MAX - d) / 10)
				j->bad = true;
			v->num = v->num * 10 + d;
		}
	} else {
		j->bad = true;
	}
}

static const struct jv *jget(const struct jv *obj, const char *key)
{
	for (size_t i = 0; obj->type == J_OBJ && i < obj->n; i++)
		if (!strcmp(obj->keys[i], key))
			return &obj->items[i];
	return NULL;
}

/* The sidecar's traces against the parsed snapshot. */
static void check_sidecar(const char *name, const struct jv *doc, const struct tm_snapshot *s)
{
	const struct jv *tbs = jget(doc, "tracebacks"), *traces = jget(doc, "traces");
	const struct jv *limit = jget(doc, "traceback_limit");
	const struct tm_trace *t = tm_snapshot_traces(s);

	if (!tbs || !traces || !limit || tbs->type != J_ARR || traces->type != J_ARR) {
		unit_fail(__FILE__, __LINE__, "%s: sidecar lacks traces", name);
		return;
	}
	if (limit->num != tm_snapshot_traceback_limit(s))
		unit_fail(__FILE__, __LINE__, "%s: traceback_limit %u, want %llu", name,
			  tm_snapshot_traceback_limit(s), (unsigned long long)limit->num);
	if (traces->n != tm_snapshot_trace_count(s)) {
		unit_fail(__FILE__, __LINE__, "%s: %zu traces, want %zu", name, tm_snapshot_trace_count(s),
			  traces->n);
		return;
	}
	for (size_t i = 0; i < traces->n; i++) {
		const struct jv *row = &traces->items[i], *tb;
		uint32_t total;

		if (row->n != 4 || row->items[2].num >= tbs->n) {
			unit_fail(__FILE__, __LINE__, "%s: bad sidecar row %zu", name, i);
			return;
		}
		tb = &tbs->items[row->items[2].num];
		total = row->items[3].type == J_NULL ? UINT32_MAX : (uint32_t)row->items[3].num;
		if (t[i].domain != row->items[0].num || t[i].size != row->items[1].num || t[i].count != 1 ||
		    t[i].address != 0 || t[i].traceback->total_nframe != total || t[i].traceback->nframe != tb->n) {
			unit_fail(__FILE__, __LINE__, "%s: trace %zu differs", name, i);
			return;
		}
		for (size_t f = 0; f < tb->n; f++) {
			const struct jv *fr = &tb->items[f];
			const struct tm_frame *got = &t[i].traceback->frames[f];

			if (fr->n != 2 || strcmp(got->filename, fr->items[0].str) || got->lineno != fr->items[1].num) {
				unit_fail(__FILE__, __LINE__, "%s: trace %zu frame %zu is %s:%u", name, i, f,
					  got->filename, got->lineno);
				return;
			}
		}
	}
}

static void check_fixture(const char *dir, const char *file, unsigned *count)
{
	char path[512], json[512], why[256] = "";
	size_t len = 0, jlen = 0;
	uint8_t *data, *jdata;
	struct jparser jp;
	struct jv doc;
	struct tm_snapshot *s = NULL;
	const struct jv *canonical, *minor;
	int err;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	snprintf(json, sizeof(json), "%.*s.json", (int)(strlen(path) - strlen(".pickle")), path);
	data = read_whole(path, &len);
	jdata = read_whole(json, &jlen);
	if (!data || !jdata) {
		unit_fail(__FILE__, __LINE__, "%s: cannot read it or its sidecar", path);
		free(data);
		free(jdata);
		return;
	}
	jp = (struct jparser){ (const char *)jdata, (const char *)jdata + jlen, false };
	jvalue(&jp, &doc, 0);
	canonical = jget(&doc, "canonical");
	minor = jget(&doc, "py_minor");
	if (jp.bad || !canonical || !minor) {
		unit_fail(__FILE__, __LINE__, "%s: bad sidecar", json);
		goto out;
	}
	err = tm_pickle_parse(data, len, &s, why, sizeof(why));
	if (err) {
		unit_fail(__FILE__, __LINE__, "%s: %d (%s)", path, err, why);
		goto out;
	}
	(*count)++;
	check_sidecar(path, &doc, s);

	/* What take_snapshot() would have shared, the writer must write as
	 * Python did; anything else must at least read back the same. */
	if (canonical->num) {
		uint8_t *buf = NULL;
		size_t blen = 0;

		CU_ASSERT_EQUAL(tm_pickle_write(s, (int)minor->num, &buf, &blen), 0);
		if (blen != len || memcmp(buf, data, len)) {
			size_t at = 0;

			while (at < len && at < blen && buf[at] == data[at])
				at++;
			unit_fail(__FILE__, __LINE__, "%s: written back differently from offset %zu (%zu/%zu bytes)",
				  path, at, blen, len);
		}
		free(buf);
	} else {
		struct tm_snapshot *r = roundtrip(s, (int)minor->num, NULL, NULL);

		if (r)
			expect_same(s, r, false, path);
		tm_snapshot_free(r);
	}

	/* Every truncation of the small ones must fail cleanly. */
	if (len <= 4096)
		for (size_t n = 0; n < len; n++)
			expect_invalid(data, n, NULL);
out:
	tm_snapshot_free(s);
	jv_free(&doc);
	free(data);
	free(jdata);
}

static void test_python_fixtures(void)
{
	DIR *d = opendir(FIXTURE_DIR);
	struct dirent *e;
	unsigned count = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(d);
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);

		if (!strncmp(e->d_name, "pickle-", 7) && n > 7 && !strcmp(e->d_name + n - 7, ".pickle"))
			check_fixture(FIXTURE_DIR, e->d_name, &count);
	}
	closedir(d);
	if (count < MIN_FIXTURES)
		unit_fail(__FILE__, __LINE__, "only %u pickle fixtures read, want %d", count, MIN_FIXTURES);
}

/* ------------------------------------------------------------------ */
/* Hand-made pickles: what is accepted                                */

static void items_plain(struct pb *b, int n)
{
	for (int i = 0; i < n; i++)
		pb_trace(b, i, 100 + i, 10 + i, i % 2 ? -1 : 1);
}

static void test_accepted_forms(void)
{
	struct pb b = pb_snapshot(items_plain, 3);
	struct tm_snapshot *s = parse_ok(&b, "plain");
	const struct tm_trace *t;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL(tm_snapshot_trace_count(s), 3);
	CU_ASSERT_EQUAL(tm_snapshot_traceback_limit(s), 5);
	t = tm_snapshot_traces(s);
	CU_ASSERT(t[1].domain == 1 && t[1].size == 101 && t[1].traceback->total_nframe == UINT32_MAX);
	CU_ASSERT(t[2].traceback->frames[0].lineno == 12 && !strcmp(t[2].traceback->frames[0].filename, "a.py"));
	/* Equal strings, even unshared in the pickle, are interned once. */
	CU_ASSERT_PTR_EQUAL(t[0].traceback->frames[0].filename, t[2].traceback->frames[0].filename);
	tm_snapshot_free(s);
	free(b.d);

	/* The state of _Traces as (None, {'_traces': ...}), 3-tuples as 3.8
	 * writes them, bools as ints, () as traceback, a tuple of traces. */
	b = (struct pb){ 0 };
	pb_op(&b, 0x80);
	pb_op(&b, 2);
	pb_lit(&b, "ctracemalloc\nSnapshot\n)\x81}(");
	pb_str(&b, "traces");
	pb_lit(&b, "ctracemalloc\n_Traces\n)\x81N}");
	pb_str(&b, "_traces");
	pb_op(&b, 0x88); /* NEWTRUE */
	pb_int(&b, 7);
	pb_frame(&b, "b.py", 1);
	pb_op(&b, 0x85);
	pb_op(&b, 0x87); /* TUPLE3 */
	pb_int(&b, 2);
	pb_op(&b, 0x89); /* NEWFALSE */
	pb_op(&b, ')');
	pb_op(&b, 0x87);
	pb_op(&b, 0x86); /* TUPLE2: a tuple of two traces */
	pb_op(&b, 's');
	pb_op(&b, 0x86); /* (None, {...}) */
	pb_op(&b, 'b');
	pb_str(&b, "traceback_limit");
	pb_int(&b, 1);
	pb_lit(&b, "ub.");
	s = parse_ok(&b, "slot state");
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL(tm_snapshot_trace_count(s), 2);
	t = tm_snapshot_traces(s);
	CU_ASSERT(t[0].domain == 1 && t[0].size == 7 && t[0].traceback->nframe == 1);
	CU_ASSERT(t[1].domain == 2 && t[1].size == 0 && t[1].traceback->nframe == 0);
	tm_snapshot_free(s);
	free(b.d);
}

/* A trace tuple listed twice and out of order, through the memo; one tuple
 * of frames shared by traces with different total_nframe. */
static void items_memo(struct pb *b, int arg)
{
	(void)arg;
	pb_op(b, '(');
	pb_int(b, 1);
	pb_int(b, 10);
	pb_frame(b, "m.py", 5);
	pb_op(b, 0x85);
	pb_op(b, 0x94); /* MEMOIZE: the frames tuple is memo 0 */
	pb_int(b, 3);
	pb_op(b, 't');
	pb_op(b, 0x94); /* the trace, memo 1 */
	pb_op(b, '(');
	pb_int(b, 2);
	pb_int(b, 20);
	pb_op(b, 'h'); /* BINGET 0 */
	pb_op(b, 0);
	pb_op(b, 'N');
	pb_op(b, 't');
	pb_op(b, 'j'); /* LONG_BINGET 1: the first trace again */
	pb_le(b, 1, 4);
}

static void test_memo_sharing(void)
{
	struct pb b = pb_snapshot(items_memo, 0);
	struct tm_snapshot *s = parse_ok(&b, "memo");
	const struct tm_trace *t;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_EQUAL_FATAL(tm_snapshot_trace_count(s), 3);
	t = tm_snapshot_traces(s);
	CU_ASSERT(t[0].size == 10 && t[1].size == 20 && t[2].size == 10);
	CU_ASSERT_PTR_EQUAL(t[0].traceback, t[2].traceback);
	CU_ASSERT(t[0].traceback != t[1].traceback && t[1].traceback->total_nframe == UINT32_MAX);
	CU_ASSERT_PTR_EQUAL(t[0].traceback->frames[0].filename, t[1].traceback->frames[0].filename);
	tm_snapshot_free(s);
	free(b.d);
}

/* ------------------------------------------------------------------ */
/* Hand-made pickles: what is refused                                 */

static void test_truncations(void)
{
	struct tm_snapshot *s = tm_snapshot_new(3);
	static const char *const f[] = { "a.py", "\xc3\xa9.py" };
	static const unsigned l[] = { 1, 70000 };
	uint8_t *buf = NULL;
	size_t len = 0;

	add(s, 0, 1, 1, tb_of(s, f, l, 2, 2));
	add(s, UINT32_MAX, UINT64_MAX, 1, tb_of(s, f, l, 2, 2));
	add(s, 5, 1ULL << 40, 1, tb_of(s, f + 1, l, 1, UINT32_MAX));
	CU_ASSERT_EQUAL_FATAL(tm_pickle_write(s, 13, &buf, &len), 0);
	for (size_t n = 0; n < len; n++)
		expect_invalid(buf, n, NULL);
	expect_invalid(buf, 0, "not a pickle");
	/* ... and one byte more is as bad. */
	buf = realloc(buf, len + 1);
	buf[len] = '.';
	expect_invalid(buf, len + 1, "after STOP");
	free(buf);
	tm_snapshot_free(s);
}

/* Replaces the first opcode byte `from` found after the head by `to`. */
static void test_foreign_opcodes(void)
{
	/* Everything CPython's unpickler knows that our graph never has. */
	static const uint8_t ops[] = { '0', '1', '2', 'F', 'I', 'L', 'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'd',
				       'g', 'i', 'l', 'o', 'p', 'B', 'C', 'G', 0x82, 0x83, 0x84, 0x8e, 0x8f,
				       0x90, 0x91, 0x92, 0x96, 0x97, 0x98, 0x00, 0xff };
	struct pb b = { 0 };

	pb_head(&b);
	size_t at = b.n;

	pb_op(&b, '(');
	items_plain(&b, 2);
	pb_op(&b, 'e');
	pb_tail(&b, 5);
	for (size_t i = 0; i < sizeof(ops); i++) {
		uint8_t *d = malloc(b.n);

		memcpy(d, b.d, b.n);
		d[at] = ops[i];
		expect_invalid(d, b.n, "is not part of a tracemalloc snapshot");
		free(d);
	}
	free(b.d);
}

static void test_bad_globals(void)
{
	static const char *const g[][2] = {
		{ "os", "system" }, { "builtins", "eval" }, { "tracemalloc", "Snapshot2" },
		{ "tracemalloc", "_get_traces" }, { "tracemalloc", "Traceback" }, { "tracemallo", "Snapshot" },
		{ "tracemalloc\n", "Snapshot" }, { "", "" },
	};

	for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
		struct pb b = { 0 };

		pb_op(&b, 0x80);
		pb_op(&b, 4);
		pb_str(&b, g[i][0]);
		pb_str(&b, g[i][1]);
		pb_op(&b, 0x93);
		pb_lit(&b, ")\x81.");
		expect_invalid(b.d, b.n, "is not tracemalloc.Snapshot or tracemalloc._Traces");
		free(b.d);

		/* GLOBAL, of protocols 2 and 3 */
		b = (struct pb){ 0 };
		pb_lit(&b, "\x80\x02" "c");
		pb_raw(&b, g[i][0], strlen(g[i][0]));
		pb_op(&b, '\n');
		pb_raw(&b, g[i][1], strlen(g[i][1]));
		pb_lit(&b, "\n)\x81.");
		expect_invalid(b.d, b.n, i == 6 ? NULL : "is not tracemalloc");
		free(b.d);
	}
	expect_invalid_lit("\x80\x02" "ctracemalloc\nSnapshot", "truncated");
	expect_invalid_lit("\x80\x04\x8c\x01" "a\x93.", "stack underflow");
	expect_invalid_lit("\x80\x04K\x01K\x02\x93.", "STACK_GLOBAL of an int");
}

static void test_bad_headers(void)
{
	expect_invalid_lit("", "not a pickle");
	expect_invalid_lit("\x80", "not a pickle");
	expect_invalid_lit("(lp0\n.", "not a pickle"); /* protocol 0 */
	expect_invalid_lit("\x80\x01.", "protocol 1");
	expect_invalid_lit("\x80\x06.", "protocol 6");
	expect_invalid_lit("\x80\x04\x80\x04.", "PROTO after the start");
	expect_invalid_lit("\x80\x04.", "STOP with 0 values");
	expect_invalid_lit("\x80\x04N.", "not a tracemalloc.Snapshot");
	expect_invalid_lit("\x80\x04NN.", "2 values");
	expect_invalid_lit("\x80\x04(N.", "MARK open");
	expect_invalid_lit("\x80\x04" "ctracemalloc\nSnapshot\n)\x81.", "has no state");
	expect_invalid_lit("\x80\x04" "ctracemalloc\n_Traces\n}\x81.", "NEWOBJ with arguments");
	expect_invalid_lit("\x80\x04" "ctracemalloc\n_Traces\n)\x81.", "not a tracemalloc.Snapshot");
	expect_invalid_lit("\x80\x04N)\x81.", "NEWOBJ of None");
}

static void test_bad_memo(void)
{
	expect_invalid_lit("\x80\x04h\x05.", "never stored");
	expect_invalid_lit("\x80\x04j\xff\xff\xff\xff.", "never stored");
	expect_invalid_lit("\x80\x04\x94.", "empty stack");
	expect_invalid_lit("\x80\x04(N\x94.", NULL); /* under the MARK */
	expect_invalid_lit("\x80\x04Nr\xff\xff\xff\x7f.", "too large");
	expect_invalid_lit("\x80\x04Nq\x40.", "too large"); /* index 64 > input */
	expect_invalid_lit("\x80\x04Nq\x01h\x00.", "never stored"); /* gap left by BINPUT */
	expect_invalid_lit("\x80\x04j\x01\x00", "truncated");
}

static void test_huge_lengths(void)
{
	expect_invalid_lit("\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7f" "abc.", "past the end");
	expect_invalid_lit("\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\xff" "abc.", "past the end");
	expect_invalid_lit("\x80\x04X\xff\xff\xff\xff" "abc.", "past the end");
	expect_invalid_lit("\x80\x04\x8c\xff" "abc.", "past the end");
	expect_invalid_lit("\x80\x04\x8b\xff\xff\xff\x7f" "abc.", "past the end");
	expect_invalid_lit("\x80\x04\x8b\xff\xff\xff\xff" "abc.", "negative LONG4");
	expect_invalid_lit("\x80\x04\x8a\xff" "abc.", "past the end");
	expect_invalid_lit("\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\xff.", "FRAME of");
	expect_invalid_lit("\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00.", "FRAME of 2 bytes");
}

static void test_deep_nesting(void)
{
	size_t n = 1 << 20;
	uint8_t *d = malloc(n + 3);

	/* MARKs: refused past a small depth, whatever follows. */
	memcpy(d, "\x80\x04", 2);
	memset(d + 2, '(', n);
	d[n + 2] = '.';
	expect_invalid(d, n + 3, "nested too deep");

	/* Tuples of tuples: our graph has no such thing. */
	memset(d + 2, 0x85, n);
	d[2] = ')';
	expect_invalid(d, n + 3, "unexpected 1-tuple");

	/* A million values on the stack cost memory in proportion, no more. */
	memset(d + 2, 'N', n);
	expect_invalid(d, n + 3, "values on the stack");

	/* Lists and dicts: one list, few dicts. */
	memset(d + 2, ']', n);
	expect_invalid(d, n + 3, "a second list");
	memset(d + 2, '}', n);
	expect_invalid(d, n + 3, "too many dicts");
	free(d);
}

/* One trace list body per case; each must be refused with its reason. */
static void items_case(struct pb *b, int c)
{
	switch (c) {
	case 0: /* a 5-tuple */
		pb_op(b, '(');
		pb_int(b, 0), pb_int(b, 1);
		pb_frame(b, "a.py", 1);
		pb_op(b, 0x85);
		pb_int(b, 1), pb_int(b, 1);
		pb_op(b, 't');
		break;
	case 1: /* (domain, size) */
		pb_int(b, 0), pb_int(b, 1);
		pb_op(b, 0x86);
		break;
	case 2: /* a 3-element frame */
		pb_op(b, '(');
		pb_int(b, 0), pb_int(b, 1);
		pb_str(b, "a.py"), pb_int(b, 1), pb_int(b, 2);
		pb_op(b, 0x87);
		pb_op(b, 0x85), pb_op(b, 'N'), pb_op(b, 't');
		break;
	case 3: /* a str line number */
		pb_str(b, "a.py"), pb_str(b, "1");
		pb_op(b, 0x86);
		break;
	case 4: pb_trace(b, 1LL << 32, 1, 1, 1); break;
	case 5: pb_trace(b, -1, 1, 1, 1); break;
	case 6: pb_trace(b, 0, -1, 1, 1); break;
	case 7: /* size 2^64 */
		pb_op(b, '(');
		pb_int(b, 0);
		pb_long(b, "\x00\x00\x00\x00\x00\x00\x00\x00\x01", 9);
		pb_frame(b, "a.py", 1);
		pb_op(b, 0x85), pb_op(b, 'N'), pb_op(b, 't');
		break;
	case 8: pb_trace(b, 0, 1, 1LL << 32, 1); break;
	case 9: pb_trace(b, 0, 1, -1, 1); break;
	case 10: pb_trace(b, 0, 1, 1, UINT32_MAX); break; /* would read back as None */
	case 11: /* total_nframe -1 */
		pb_op(b, '(');
		pb_int(b, 0), pb_int(b, 1);
		pb_frame(b, "a.py", 1);
		pb_op(b, 0x85);
		pb_int(b, -1);
		pb_op(b, 't');
		break;
	case 12: /* a huge negative domain */
		pb_op(b, '(');
		pb_long(b, "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80", 10);
		pb_int(b, 0), pb_op(b, ')'), pb_op(b, 'N'), pb_op(b, 't');
		break;
	case 13: /* frames that are not a traceback */
		pb_op(b, '(');
		pb_int(b, 0), pb_int(b, 1), pb_str(b, "x"), pb_op(b, 'N');
		pb_op(b, 't');
		break;
	case 14: /* a traceback with something else among its frames */
		pb_op(b, '(');
		pb_int(b, 0), pb_int(b, 1);
		pb_frame(b, "a.py", 1);
		pb_op(b, 'N');
		pb_op(b, 0x86);
		pb_op(b, 'N'), pb_op(b, 't');
		break;
	case 15: pb_op(b, 'N'); break; /* a list item that is no trace */
	case 16: /* NUL in a filename */
		pb_op(b, '(');
		pb_int(b, 0), pb_int(b, 1);
		pb_lit(b, "\x8c\x03" "a\0b");
		pb_int(b, 1), pb_op(b, 0x86), pb_op(b, 0x85), pb_op(b, 'N'), pb_op(b, 't');
		break;
	case 17: pb_lit(b, "\x8c\x02\xc3("); break;                   /* bad UTF-8 */
	case 18: pb_lit(b, "\x8c\x02\xc0\x80"); break;                /* overlong NUL */
	case 19: pb_lit(b, "\x8c\x04\xf4\x90\x80\x80"); break;        /* past U+10FFFF */
	case 20: pb_lit(b, "\x8c\x01\xff"); break;
	case 21: pb_lit(b, "\x8c\x02\xe2\x82"); break;                /* cut short */
	case 22: pb_op(b, '}'); break;                                   /* a dict among traces */
	case 23: pb_op(b, ']'); break;                                   /* a second list */
	case 24: pb_op(b, 'a'); break;                                   /* APPEND to a MARK'ed nothing */
	case 25: pb_op(b, 'u'); break;                                   /* SETITEMS, even of nothing, on the list */
	case 26: pb_op(b, 'b'); break;
	case 27: pb_op(b, 't'), pb_op(b, 0x85), pb_op(b, 0x85); break;   /* ((),) */
	case 28: /* a tuple of traces next to the list */
		items_plain(b, 2);
		pb_op(b, 0x86);
		break;
	}
}

static const char *const case_reasons[] = {
	"unexpected 5-tuple", "unexpected 2-tuple starting with an int", "unexpected 3-tuple starting with a str",
	"unexpected 2-tuple starting with a str", "domain out of range", "domain out of range",
	"size out of range", "size out of range", "line number out of range", "line number out of range",
	"total_nframe out of range", "total_nframe out of range", "domain out of range",
	"trace frames are a str", "traceback element 1 is None", "the trace list holds None",
	"NUL character", "not valid UTF-8", "not valid UTF-8", "not valid UTF-8", "not valid UTF-8",
	"not valid UTF-8", "the trace list holds a dict", "a second list", "stack underflow",
	"SETITEMS without a dict", "stack underflow", "unexpected 1-tuple", "a second list of traces",
};

static void test_bad_traces(void)
{
	for (int c = 0; c < (int)(sizeof(case_reasons) / sizeof(case_reasons[0])); c++) {
		struct pb b = pb_snapshot(items_case, c);

		expect_invalid(b.d, b.n, case_reasons[c]);
		free(b.d);
	}
}

/* The object graph around the list. */
static void test_bad_structure(void)
{
	struct pb b = { 0 };

	/* An attribute tracemalloc does not have. */
	pb_head(&b);
	pb_lit(&b, "s");
	pb_op(&b, 'b');
	pb_str(&b, "traceback_limiter");
	pb_lit(&b, "K\x01ub.");
	expect_invalid(b.d, b.n, "unexpected attribute 'traceback_limiter'");
	free(b.d);

	/* Snapshot without traceback_limit. */
	b = (struct pb){ 0 };
	pb_head(&b);
	pb_lit(&b, "sbub.");
	expect_invalid(b.d, b.n, "Snapshot state is not");
	free(b.d);

	/* traceback_limit out of range, or not an int. */
	b = (struct pb){ 0 };
	pb_head(&b);
	pb_tail(&b, -1);
	expect_invalid(b.d, b.n, "traceback_limit");
	free(b.d);
	b = (struct pb){ 0 };
	pb_head(&b);
	pb_tail(&b, 1LL << 32);
	expect_invalid(b.d, b.n, "traceback_limit");
	free(b.d);
	b = (struct pb){ 0 };
	pb_head(&b);
	pb_tail_limit(&b);
	pb_lit(&b, "Nub.");
	expect_invalid(b.d, b.n, "traceback_limit");
	free(b.d);

	/* Snapshot.traces that is the list itself. */
	b = (struct pb){ 0 };
	pb_lit(&b, "\x80\x04" "ctracemalloc\nSnapshot\n)\x81}(");
	pb_str(&b, "traces");
	pb_op(&b, ']');
	pb_str(&b, "traceback_limit");
	pb_lit(&b, "K\x01ub.");
	expect_invalid(b.d, b.n, "Snapshot.traces is the trace list");
	free(b.d);

	/* _Traces._traces that is an int. */
	b = (struct pb){ 0 };
	pb_lit(&b, "\x80\x04" "ctracemalloc\nSnapshot\n)\x81}(");
	pb_str(&b, "traces");
	pb_lit(&b, "ctracemalloc\n_Traces\n)\x81}");
	pb_str(&b, "_traces");
	pb_lit(&b, "K\x01sb");
	expect_invalid(b.d, b.n, "_Traces._traces is an int");
	free(b.d);

	/* Object state set twice; state that is not a dict; a key that is
	 * not a str. */
	b = (struct pb){ 0 };
	pb_head(&b);
	pb_lit(&b, "sb}b");
	expect_invalid(b.d, b.n, "set twice");
	free(b.d);
	b = (struct pb){ 0 };
	pb_lit(&b, "\x80\x04" "ctracemalloc\n_Traces\n)\x81Nb.");
	expect_invalid(b.d, b.n, "state is None");
	free(b.d);
	b = (struct pb){ 0 };
	pb_lit(&b, "\x80\x04}K\x01K\x02s.");
	expect_invalid(b.d, b.n, "dict key is an int");
	free(b.d);
	b = (struct pb){ 0 };
	pb_lit(&b, "\x80\x04" "K\x01(K\x02K\x03u.");
	expect_invalid(b.d, b.n, "SETITEMS without a dict");
	b.d[9] = 'e';
	expect_invalid(b.d, b.n, "APPENDS without the list");
	free(b.d);
	b = (struct pb){ 0 };
	pb_lit(&b, "\x80\x04}(K\x01u.");
	expect_invalid(b.d, b.n, "odd number");
	free(b.d);
	b = (struct pb){ 0 };
	pb_lit(&b, "\x80\x04K\x01K\x02" "b.");
	expect_invalid(b.d, b.n, "BUILD on an int");
	free(b.d);

	/* A list of traces that the snapshot does not use: Snapshot.traces
	 * set twice, the second _Traces (the one kept) with (). */
	b = (struct pb){ 0 };
	pb_lit(&b, "\x80\x04" "ctracemalloc\nSnapshot\n)\x81}(");
	pb_str(&b, "traces");
	pb_lit(&b, "ctracemalloc\n_Traces\n)\x81}");
	pb_str(&b, "_traces");
	pb_op(&b, ']');
	pb_op(&b, '(');
	items_plain(&b, 2);
	pb_lit(&b, "esb");
	pb_str(&b, "traces");
	pb_lit(&b, "ctracemalloc\n_Traces\n)\x81}");
	pb_str(&b, "_traces");
	pb_lit(&b, ")sb");
	pb_str(&b, "traceback_limit");
	pb_lit(&b, "K\x01ub.");
	expect_invalid(b.d, b.n, "not the snapshot's");
	free(b.d);
}

/* A tuple of many frames shared by traces that each bring another
 * total_nframe: each pairing would be interned as a traceback of its own,
 * far more frames than the input could describe. */
static void test_frame_budget(void)
{
	struct pb b = { 0 };

	pb_head(&b);
	pb_op(&b, '(');
	/* The first trace makes the tuple: memo 0 is its first filename,
	 * memo 1 the tuple. */
	pb_op(&b, '(');
	pb_int(&b, 0);
	pb_int(&b, 1);
	pb_op(&b, '(');
	pb_str(&b, "deep.py");
	pb_op(&b, 0x94);
	pb_int(&b, 1);
	pb_op(&b, 0x86);
	for (int i = 1; i < 2000; i++) {
		pb_lit(&b, "h\x00");
		pb_int(&b, i);
		pb_op(&b, 0x86);
	}
	pb_op(&b, 't');
	pb_op(&b, 0x94);
	pb_int(&b, 0);
	pb_op(&b, 't');
	for (int i = 1; i < 20000; i++) {
		pb_op(&b, '(');
		pb_int(&b, 0);
		pb_int(&b, 1);
		pb_lit(&b, "h\x01");
		pb_int(&b, i);
		pb_op(&b, 't');
	}
	pb_op(&b, 'e');
	pb_tail(&b, 5);
	expect_invalid(b.d, b.n, "more traceback frames than the pickle's size allows");
	free(b.d);
}

/* Random damage to valid pickles: anything but 0 or -EINVAL, or anything
 * ASan sees, is a bug. */
static void test_mutations(void)
{
	struct pb base = pb_snapshot(items_memo, 0);
	struct tm_snapshot *src = tm_snapshot_new(4);
	static const char *const f[] = { "a.py", "b.py", "c\xc3\xa9.py", "d.py" };
	static const unsigned l[] = { 1, 2, 300, 70000 };
	uint8_t *ours = NULL;
	size_t ourslen = 0;
	unsigned accepted = 0, refused = 0;

	for (int i = 0; i < 40; i++)
		add(src, i % 3, (uint64_t)i << (i % 40), 1, tb_of(src, f + i % 2, l + i % 2, 1 + i % 3, i % 5 ? 3 : UINT32_MAX));
	CU_ASSERT_EQUAL_FATAL(tm_pickle_write(src, 11, &ours, &ourslen), 0);
	tm_snapshot_free(src);

	for (int iter = 0; iter < 30000; iter++) {
		const uint8_t *orig = iter % 2 ? ours : base.d;
		size_t n = iter % 2 ? ourslen : base.n;
		uint8_t *d = malloc(n + 16);
		struct tm_snapshot *s = NULL;
		char why[128];
		int err, edits = 1 + rnd() % 4;

		memcpy(d, orig, n);
		while (edits--) {
			size_t at = rnd() % n;

			switch (rnd() % 5) {
			case 0: d[at] ^= (uint8_t)(1 << rnd() % 8); break;
			case 1: d[at] = (uint8_t)rnd(); break;
			case 2: /* insert */
				if (n < (iter % 2 ? ourslen : base.n) + 16) {
					memmove(d + at + 1, d + at, n - at);
					d[at] = (uint8_t)rnd();
					n++;
				}
				break;
			case 3: /* delete */
				if (n > 1) {
					memmove(d + at, d + at + 1, n - at - 1);
					n--;
				}
				break;
			case 4: n = at ? at : n; break;
			}
		}
		err = tm_pickle_parse(d, n, &s, iter % 3 ? why : NULL, iter % 3 ? sizeof(why) : 0);
		if (err == 0) {
			accepted++;
			for (size_t i = 0; i < tm_snapshot_trace_count(s); i++)
				CU_ASSERT_PTR_NOT_NULL(tm_snapshot_traces(s)[i].traceback);
			tm_snapshot_free(s);
		} else if (err == -EINVAL) {
			refused++;
			CU_ASSERT_PTR_NULL(s);
		} else {
			unit_fail(__FILE__, __LINE__, "mutation %d: parse returned %d", iter, err);
		}
		free(d);
	}
	CU_ASSERT(accepted > 0 && refused > 0);
	free(ours);
	free(base.d);
}

void register_pickle_tests(void)
{
	CU_pSuite s = CU_add_suite("pickle", NULL, NULL);

	CU_add_test(s, "round trip: edge values", test_roundtrip_edges);
	CU_add_test(s, "round trip: batches, memo, frames, long names", test_roundtrip_shapes);
	CU_add_test(s, "write: counts become traces", test_write_counts);
	CU_add_test(s, "write: errors and appending", test_write_errors);
	CU_add_test(s, "CPython 3.8-3.13 pickles and sidecars", test_python_fixtures);
	CU_add_test(s, "accepted forms", test_accepted_forms);
	CU_add_test(s, "memo sharing", test_memo_sharing);
	CU_add_test(s, "truncations and trailing bytes", test_truncations);
	CU_add_test(s, "foreign opcodes", test_foreign_opcodes);
	CU_add_test(s, "foreign globals", test_bad_globals);
	CU_add_test(s, "bad headers and endings", test_bad_headers);
	CU_add_test(s, "bad memo references", test_bad_memo);
	CU_add_test(s, "huge declared lengths", test_huge_lengths);
	CU_add_test(s, "deep nesting", test_deep_nesting);
	CU_add_test(s, "wrong arities, ranges, strings", test_bad_traces);
	CU_add_test(s, "wrong object graph", test_bad_structure);
	CU_add_test(s, "traceback frame budget", test_frame_budget);
	CU_add_test(s, "random mutations", test_mutations);
}
