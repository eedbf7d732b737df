/*
 * Snapshot files: tmtrace's own format (src/engine/tmtfile.c) through the
 * public API of engine.h (src/engine/snapfile.c). Round trips keep every
 * field; the format is told by content, never by name; every corrupt input
 * is refused with -EINVAL and a reason; a failed write leaves the old file
 * as it was and no temporary behind.
 *
 * Corrupt bodies are crafted by hand here, wrapped in a valid header, zlib
 * stream and CRC, so that they reach the body parser: the layout they
 * follow is the one documented at the top of tmtfile.c.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "tmtrace/engine.h"
#include "engine/tmtfile.h"
#include "unit.h"

/* A pickle Python 3.11 wrote (Snapshot.dump() of 40 real traces). */
#define REAL_PICKLE "tests/fuzz/corpus/py3.11-real-limit5.pickle"
#define REAL_PICKLE_TRACES 40
#define WHY_LEN 512

#define EXPECT(cond, ...)                                           \
	do {                                                        \
		if (!(cond))                                        \
			unit_fail(__FILE__, __LINE__, __VA_ARGS__); \
	} while (0)

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* ---- temporary directory ---- */

static char tmpdir[64];

static int suite_init(void)
{
	strcpy(tmpdir, "/tmp/tmtrace-snapfile-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static void remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[512];
	struct stat st;

	if (!d)
		return;
	chmod(dir, 0700);
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
			remove_tree(path);
		else
			unlink(path);
	}
	closedir(d);
	rmdir(dir);
}

static int suite_clean(void)
{
	remove_tree(tmpdir);
	return 0;
}

static const char *tmp_path(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", tmpdir, name);
	return buf;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t cap = 0, got;

	*len = 0;
	if (!f)
		return NULL;
	do {
		if (cap - *len < 4096) {
			cap = cap ? cap * 2 : 65536;
			buf = realloc(buf, cap);
		}
		got = fread(buf + *len, 1, cap - *len, f);
		*len += got;
	} while (got);
	fclose(f);
	return buf;
}

static void spit(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	if (!f || fwrite(data, 1, len, f) != len)
		unit_fail(__FILE__, __LINE__, "cannot write %s", path);
	if (f)
		fclose(f);
}

/* The names in a directory other than . and .., sorted, joined by spaces. */
static void list_dir(const char *dir, char *out, size_t len)
{
	struct dirent **names;
	int n = scandir(dir, &names, NULL, alphasort);

	out[0] = '\0';
	for (int i = 0; i < n; i++) {
		if (strcmp(names[i]->d_name, ".") && strcmp(names[i]->d_name, "..")) {
			if (out[0])
				strncat(out, " ", len - strlen(out) - 1);
			strncat(out, names[i]->d_name, len - strlen(out) - 1);
		}
		free(names[i]);
	}
	if (n >= 0)
		free(names);
}

/* ---- snapshots ---- */

static bool traceback_equal(const struct tm_traceback *a, const struct tm_traceback *b)
{
	if (a->nframe != b->nframe || a->total_nframe != b->total_nframe)
		return false;
	for (uint32_t i = 0; i < a->nframe; i++)
		if (strcmp(a->frames[i].filename, b->frames[i].filename) || a->frames[i].lineno != b->frames[i].lineno)
			return false;
	return true;
}

static const struct tm_trace *sort_traces;

static int by_address_then_index(const void *pa, const void *pb)
{
	size_t a = *(const size_t *)pa, b = *(const size_t *)pb;

	if (sort_traces[a].address != sort_traces[b].address)
		return sort_traces[a].address < sort_traces[b].address ? -1 : 1;
	return a < b ? -1 : a > b;
}

/* `got` holds the traces of `want` in address order, ties in their order
 * in `want`, with equal tracebacks, limit and info. */
static void expect_same_snapshot(struct tm_snapshot *want, struct tm_snapshot *got)
{
	size_t n = tm_snapshot_trace_count(want), *order;
	const struct tm_trace *w = tm_snapshot_traces(want), *g = tm_snapshot_traces(got);
	const struct tm_snapshot_info *wi = tm_snapshot_info(want), *gi = tm_snapshot_info(got);
	unsigned bad = 0;

	EXPECT(tm_snapshot_traceback_limit(got) == tm_snapshot_traceback_limit(want), "traceback_limit %u, want %u",
	       tm_snapshot_traceback_limit(got), tm_snapshot_traceback_limit(want));
	EXPECT(gi->pid == wi->pid && !strcmp(gi->python, wi->python) && gi->time == wi->time &&
		       gi->traced_current == wi->traced_current && gi->traced_peak == wi->traced_peak,
	       "info: pid %d python '%s' time %f traced %lld/%lld", gi->pid, gi->python, gi->time,
	       (long long)gi->traced_current, (long long)gi->traced_peak);
	if (tm_snapshot_trace_count(got) != n) {
		unit_fail(__FILE__, __LINE__, "%zu traces read, %zu written", tm_snapshot_trace_count(got), n);
		return;
	}
	order = malloc((n ? n : 1) * sizeof(*order));
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	sort_traces = w;
	qsort(order, n, sizeof(*order), by_address_then_index);
	for (size_t i = 0; i < n && bad < 5; i++) {
		const struct tm_trace *a = &w[order[i]], *b = &g[i];

		if (a->address != b->address || a->size != b->size || a->count != b->count || a->domain != b->domain ||
		    !traceback_equal(a->traceback, b->traceback)) {
			unit_fail(__FILE__, __LINE__, "trace %zu: address %#llx size %llu count %llu domain %u, want %#llx %llu %llu %u",
				  i, (unsigned long long)b->address, (unsigned long long)b->size,
				  (unsigned long long)b->count, b->domain, (unsigned long long)a->address,
				  (unsigned long long)a->size, (unsigned long long)a->count, a->domain);
			bad++;
		}
	}
	free(order);
}

/* Non-ASCII filenames, zero frames, extreme values, repeated addresses
 * (aggregated traces have address 0), traces out of address order over all
 * 64 bits (the writer's comparison sort; random_snapshot() takes its radix
 * sort). */
static struct tm_snapshot *crafted_snapshot(void)
{
	struct tm_snapshot *s = tm_snapshot_new(25);
	struct tm_snapshot_info *info = tm_snapshot_info(s);
	const char *f1 = tm_snapshot_intern(s, "/srv/app/\xc3\xa9t\xc3\xa9/m\xc3\xb6" "dule.py");
	const char *f2 = tm_snapshot_intern(s, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e.py");
	const char *f3 = tm_snapshot_intern(s, "<frozen importlib._bootstrap>");
	struct tm_frame fr[] = { { f1, 12 }, { f2, 0 }, { f3, UINT32_MAX }, { f1, 1 } };
	const struct tm_traceback *tb[] = {
		tm_snapshot_traceback(s, fr, 4, 30),
		tm_snapshot_traceback(s, fr + 1, 1, 1),
		tm_snapshot_traceback(s, fr, 0, 0),
		tm_snapshot_traceback(s, fr + 2, 2, UINT32_MAX),
	};
	struct tm_trace t[] = {
		{ 0x7f0000001000, 64, 1, 0, tb[0] },
		{ 0x7f0000000040, 32, 1, 0, tb[1] },
		{ 0, 1ULL << 40, 1000000, 0, tb[0] },
		{ UINT64_MAX - 15, UINT64_MAX, UINT64_MAX, UINT32_MAX, tb[3] },
		{ 0x7f0000000040, 16, 1, 2, tb[2] },
		{ 0, 5, 2, 0, tb[1] },
		{ 0x1000, 0, 0, 7, tb[2] },
		{ 0x7f0000000041, 8, 1, 0, tb[1] },
	};

	info->pid = 4242;
	strcpy(info->python, "3.11.7");
	info->time = 1763773323.25;
	info->traced_current = 123456;
	info->traced_peak = INT64_MAX;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		tm_snapshot_add_trace(s, &t[i]);
	return s;
}

/* n traces over ntb tracebacks, at random heap-like addresses. */
static struct tm_snapshot *random_snapshot(size_t n, size_t ntb)
{
	struct tm_snapshot *s = tm_snapshot_new(10);
	const struct tm_traceback **tbs = malloc(ntb * sizeof(*tbs));
	const char *files[100];
	char name[64];

	for (int i = 0; i < 100; i++) {
		snprintf(name, sizeof(name), "/usr/lib/python3.11/pkg%d/mod%d.py", i % 7, i);
		files[i] = tm_snapshot_intern(s, name);
	}
	for (size_t i = 0; i < ntb; i++) {
		struct tm_frame fr[10];
		uint32_t nf = 1 + rnd() % 10;

		for (uint32_t f = 0; f < nf; f++)
			fr[f] = (struct tm_frame){ files[rnd() % 100], (unsigned)(rnd() % 5000) };
		tbs[i] = tm_snapshot_traceback(s, fr, nf, nf + rnd() % 3);
	}
	for (size_t i = 0; i < n; i++) {
		struct tm_trace t = { 0x7f0000000000 + (rnd() % (1ULL << 32)) / 16 * 16, 16 + rnd() % 600, 1,
				      rnd() % 50 ? 0 : 3, tbs[rnd() % ntb] };

		tm_snapshot_add_trace(s, &t);
	}
	tm_snapshot_info(s)->pid = 77;
	free(tbs);
	return s;
}

static uint8_t *tmt_bytes(const struct tm_snapshot *s, size_t *len)
{
	uint8_t *buf = NULL;
	int err = tm_tmt_write(s, &buf, len);

	EXPECT(err == 0, "tm_tmt_write: %d", err);
	return buf;
}

/* Writes `s` to a file, reads it back, checks format and content. */
static void roundtrip_file(struct tm_snapshot *s, const char *name)
{
	char path[256], why[WHY_LEN];
	struct tm_snapshot *r = NULL;
	enum tm_file_format format = TM_FORMAT_PICKLE;
	int err;

	tmp_path(path, sizeof(path), name);
	err = tm_snapshot_write(s, path, TM_FORMAT_TMTRACE, 0, why, sizeof(why));
	EXPECT(err == 0, "write %s: %d %s", name, err, why);
	err = tm_snapshot_read(path, &r, &format, why, sizeof(why));
	EXPECT(err == 0, "read %s: %d %s", name, err, why);
	if (err)
		return;
	CU_ASSERT_EQUAL(format, TM_FORMAT_TMTRACE);
	expect_same_snapshot(s, r);
	tm_snapshot_free(r);
}

static void test_roundtrip_crafted(void)
{
	struct tm_snapshot *s = crafted_snapshot();
	struct tm_snapshot *r = NULL;
	char path[256], why[WHY_LEN];

	roundtrip_file(s, "crafted.tmt");
	/* Addresses are kept: get_object_traceback() works on a file. */
	CU_ASSERT_EQUAL(tm_snapshot_read(tmp_path(path, sizeof(path), "crafted.tmt"), &r, NULL, why, sizeof(why)), 0);
	if (r) {
		const struct tm_trace *t = tm_snapshot_find_address(r, 0x7f0000001000 + 10);

		CU_ASSERT_PTR_NOT_NULL(t);
		if (t) {
			CU_ASSERT_EQUAL(t->size, 64);
			CU_ASSERT_STRING_EQUAL(t->traceback->frames[0].filename, "/srv/app/\xc3\xa9t\xc3\xa9/m\xc3\xb6" "dule.py");
		}
	}
	tm_snapshot_free(r);
	tm_snapshot_free(s);
}

static void test_roundtrip_empty(void)
{
	struct tm_snapshot *s = tm_snapshot_new(1);
	struct tm_snapshot *r = NULL;
	char path[256], why[WHY_LEN];

	roundtrip_file(s, "empty.tmt");
	/* Unknown info stays unknown. */
	CU_ASSERT_EQUAL(tm_snapshot_read(tmp_path(path, sizeof(path), "empty.tmt"), &r, NULL, why, sizeof(why)), 0);
	if (r) {
		CU_ASSERT_EQUAL(tm_snapshot_info(r)->pid, 0);
		CU_ASSERT_STRING_EQUAL(tm_snapshot_info(r)->python, "");
		CU_ASSERT_EQUAL(tm_snapshot_info(r)->traced_current, -1);
		CU_ASSERT_EQUAL(tm_snapshot_info(r)->traced_peak, -1);
		CU_ASSERT_EQUAL(tm_snapshot_trace_count(r), 0);
	}
	tm_snapshot_free(r);
	tm_snapshot_free(s);
}

static void test_roundtrip_large(void)
{
	struct tm_snapshot *s = random_snapshot(200000, 5000);
	struct stat st;
	char path[256];

	roundtrip_file(s, "large.tmt");
	/* Compact: varints, deltas, zlib; Python's pickle takes ~15 bytes a trace. */
	CU_ASSERT_EQUAL(stat(tmp_path(path, sizeof(path), "large.tmt"), &st), 0);
	EXPECT(st.st_size < 200000 * 6, "200k traces in %lld bytes", (long long)st.st_size);
	tm_snapshot_free(s);
}

/* The writer depends on content only: writing what was read gives the same
 * bytes (and traces written in any order give the same file). */
static void test_deterministic(void)
{
	struct tm_snapshot *s = random_snapshot(5000, 300), *r = NULL, *rev = tm_snapshot_new(10);
	size_t l1, l2, l3;
	uint8_t *b1 = tmt_bytes(s, &l1), *b2 = NULL, *b3 = NULL;
	char why[WHY_LEN];
	const struct tm_trace *t = tm_snapshot_traces(s);

	CU_ASSERT_EQUAL(tm_snapshot_parse(b1, l1, &r, NULL, why, sizeof(why)), 0);
	if (r)
		b2 = tmt_bytes(r, &l2);
	CU_ASSERT(b2 && l1 == l2 && !memcmp(b1, b2, l1));
	/* Same traces in reverse order (addresses are distinct enough here
	 * for ties not to matter: the generator draws from 2^28 slots). */
	*tm_snapshot_info(rev) = *tm_snapshot_info(s);
	for (size_t i = tm_snapshot_trace_count(s); i-- > 0;)
		tm_snapshot_add_trace(rev, &t[i]);
	b3 = tmt_bytes(rev, &l3);
	CU_ASSERT(b3 && l1 == l3 && !memcmp(b1, b3, l1));
	free(b1);
	free(b2);
	free(b3);
	tm_snapshot_free(r);
	tm_snapshot_free(rev);
	tm_snapshot_free(s);
}

/* ---- format detection ---- */

static void test_detect_by_content(void)
{
	char path[256], why[WHY_LEN];
	size_t len;
	uint8_t *pickle = slurp(REAL_PICKLE, &len);
	struct tm_snapshot *s = crafted_snapshot(), *r = NULL;
	enum tm_file_format format;
	int err;

	if (!pickle) {
		unit_fail(__FILE__, __LINE__, "cannot read %s", REAL_PICKLE);
		return;
	}
	/* A pickle named .tmt */
	spit(tmp_path(path, sizeof(path), "pickle.tmt"), pickle, len);
	format = TM_FORMAT_TMTRACE;
	err = tm_snapshot_read(path, &r, &format, why, sizeof(why));
	EXPECT(err == 0, "%s: %d %s", path, err, why);
	CU_ASSERT_EQUAL(format, TM_FORMAT_PICKLE);
	if (r)
		CU_ASSERT_EQUAL(tm_snapshot_trace_count(r), REAL_PICKLE_TRACES);
	tm_snapshot_free(r);
	r = NULL;

	/* A tmtrace file named .pickle */
	tmp_path(path, sizeof(path), "tmtrace.pickle");
	CU_ASSERT_EQUAL(tm_snapshot_write(s, path, TM_FORMAT_TMTRACE, 11, why, sizeof(why)), 0);
	format = TM_FORMAT_PICKLE;
	err = tm_snapshot_read(path, &r, &format, why, sizeof(why));
	EXPECT(err == 0, "%s: %d %s", path, err, why);
	CU_ASSERT_EQUAL(format, TM_FORMAT_TMTRACE);
	if (r)
		expect_same_snapshot(s, r);
	tm_snapshot_free(r);
	r = NULL;

	/* Our pickle writer's output, named .tmt, read back as a pickle (the
	 * crafted snapshot has counts no pickle can hold: another one) */
	tm_snapshot_free(s);
	s = random_snapshot(100, 10);
	tmp_path(path, sizeof(path), "written-pickle.tmt");
	err = tm_snapshot_write(s, path, TM_FORMAT_PICKLE, 11, why, sizeof(why));
	EXPECT(err == 0, "pickle write: %d %s", err, why);
	err = tm_snapshot_read(path, &r, &format, why, sizeof(why));
	EXPECT(err == 0, "%s: %d %s", path, err, why);
	CU_ASSERT_EQUAL(format, TM_FORMAT_PICKLE);
	if (r)
		CU_ASSERT_EQUAL(tm_snapshot_trace_count(r), 100);
	tm_snapshot_free(r);

	/* A pickle for a Python it cannot be written for: no file at all */
	tmp_path(path, sizeof(path), "py37.pickle");
	err = tm_snapshot_write(s, path, TM_FORMAT_PICKLE, 7, why, sizeof(why));
	EXPECT(err == -EINVAL && strstr(why, path), "py_minor 7: %d %s", err, why);
	CU_ASSERT(access(path, F_OK) != 0);
	tm_snapshot_free(s);
	free(pickle);
}

static void expect_not_snapshot(const uint8_t *data, size_t len, const char *what)
{
	char why[WHY_LEN] = "";
	struct tm_snapshot *r = (struct tm_snapshot *)1;
	int err = tm_snapshot_parse(data, len, &r, NULL, why, sizeof(why));

	EXPECT(err == -EINVAL && !strcmp(why, "not a tmtrace or tracemalloc snapshot file") && !r,
	       "%s: %d '%s'", what, err, why);
}

static void test_detect_unknown(void)
{
	char path[256], why[WHY_LEN], want[WHY_LEN + 300];
	struct tm_snapshot *r = NULL;
	int err;

	expect_not_snapshot((const uint8_t *)"", 0, "empty");
	expect_not_snapshot((const uint8_t *)"TMTRAC", 6, "half a magic");
	expect_not_snapshot((const uint8_t *)"TMTRACE", 7, "magic without its NUL");
	expect_not_snapshot((const uint8_t *)"\x80", 1, "PROTO alone");
	expect_not_snapshot((const uint8_t *)"\x80\x01", 2, "pickle protocol 1");
	expect_not_snapshot((const uint8_t *)"\x80\x06", 2, "pickle protocol 6");
	expect_not_snapshot((const uint8_t *)"(lp0\n.", 6, "pickle protocol 0");
	expect_not_snapshot((const uint8_t *)"{\"traces\": []}", 14, "json");

	/* Through a file: the path leads the message */
	spit(tmp_path(path, sizeof(path), "text.tmt"), "hello\n", 6);
	err = tm_snapshot_read(path, &r, NULL, why, sizeof(why));
	snprintf(want, sizeof(want), "%s: not a tmtrace or tracemalloc snapshot file", path);
	EXPECT(err == -EINVAL && !strcmp(why, want), "%d '%s'", err, why);
	CU_ASSERT_PTR_NULL(r);

	tmp_path(path, sizeof(path), "no-such-file.tmt");
	err = tm_snapshot_read(path, &r, NULL, why, sizeof(why));
	snprintf(want, sizeof(want), "cannot read %s: No such file or directory", path);
	EXPECT(err == -ENOENT && !strcmp(why, want), "%d '%s'", err, why);

	err = tm_snapshot_read(tmpdir, &r, NULL, why, sizeof(why));
	EXPECT(err == -EISDIR && strstr(why, "cannot read"), "directory: %d '%s'", err, why);
}

/* ---- corrupt files ---- */

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

/* A body, written by hand. */
struct body {
	uint8_t data[4096];
	size_t len;
};

static void b_varint(struct body *b, uint64_t v)
{
	do {
		b->data[b->len++] = (uint8_t)(v & 0x7f) | (v > 0x7f ? 0x80 : 0);
		v >>= 7;
	} while (v);
}

static void b_bytes(struct body *b, const void *p, size_t n)
{
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

/* limit 1, pid 0, no python version, time 0, traced memory unknown */
static void b_info(struct body *b)
{
	static const uint8_t time0[8];

	b_varint(b, 1);
	b_varint(b, 0);
	b_varint(b, 0);
	b_bytes(b, time0, 8);
	b_varint(b, 1); /* zigzag(-1) */
	b_varint(b, 1);
}

/* One string "a.py", one traceback (a.py:5), ntraces 1 at 0x10, size 32. */
static void b_valid_tables(struct body *b)
{
	b_varint(b, 1);
	b_varint(b, 4);
	b_bytes(b, "a.py", 4);
	b_varint(b, 1);
	b_varint(b, 1);
	b_varint(b, 1);
	b_varint(b, 0);
	b_varint(b, 5);
}

static void b_one_trace(struct body *b, uint64_t tb_index)
{
	struct body tb = { .len = 0 };

	b_varint(&tb, tb_index);
	b_varint(b, 1);
	for (int c = 0; c < 4; c++)
		b_varint(b, 1);
	b_varint(b, tb.len);
	b_varint(b, 0x10);
	b_varint(b, 32);
	b_varint(b, 1);
	b_varint(b, 0);
	b_varint(b, tb_index);
}

/* A file around a body: header, zlib stream, CRC, as tmtfile.c lays them. */
static uint8_t *wrap(const uint8_t *body, size_t len, unsigned version, size_t *outlen)
{
	uLongf zlen = compressBound(len);
	uint8_t *out = malloc(TMT_HEADER_LEN + zlen);

	compress2(out + TMT_HEADER_LEN, &zlen, body, len, 6);
	memcpy(out, TMT_MAGIC, TMT_MAGIC_LEN);
	put_le(out + 8, version, 2);
	put_le(out + 10, 0, 2);
	put_le(out + 12, crc32(0, body, len), 4);
	put_le(out + 16, len, 8);
	put_le(out + 24, zlen, 8);
	*outlen = TMT_HEADER_LEN + zlen;
	return out;
}

static void expect_corrupt(const uint8_t *data, size_t len, const char *needle, const char *what)
{
	char why[WHY_LEN] = "";
	struct tm_snapshot *r = NULL;
	enum tm_file_format format = TM_FORMAT_PICKLE;
	int err = tm_snapshot_parse(data, len, &r, &format, why, sizeof(why));

	EXPECT(err == -EINVAL && strstr(why, needle) && !r && format == TM_FORMAT_TMTRACE,
	       "%s: %d '%s', want -EINVAL with '%s'", what, err, why, needle);
	tm_snapshot_free(r);
}

static void expect_body_corrupt(const struct body *b, const char *needle, const char *what)
{
	size_t len;
	uint8_t *file = wrap(b->data, b->len, TMT_VERSION, &len);

	expect_corrupt(file, len, needle, what);
	free(file);
}

static void test_crafted_body_valid(void)
{
	struct body b = { .len = 0 };
	size_t len;
	uint8_t *file;
	struct tm_snapshot *r = NULL;
	char why[WHY_LEN];
	int err;

	/* The helpers make a valid file: the corrupt ones below differ from
	 * it in one thing each. */
	b_info(&b);
	b_valid_tables(&b);
	b_one_trace(&b, 0);
	file = wrap(b.data, b.len, TMT_VERSION, &len);
	err = tm_snapshot_parse(file, len, &r, NULL, why, sizeof(why));
	EXPECT(err == 0, "%d %s", err, why);
	if (r) {
		const struct tm_trace *t = tm_snapshot_traces(r);

		CU_ASSERT_EQUAL(tm_snapshot_trace_count(r), 1);
		CU_ASSERT_EQUAL(t->address, 0x10);
		CU_ASSERT_EQUAL(t->size, 32);
		CU_ASSERT_STRING_EQUAL(t->traceback->frames[0].filename, "a.py");
		CU_ASSERT_EQUAL(t->traceback->frames[0].lineno, 5);
	}
	tm_snapshot_free(r);
	free(file);
}

static void test_bad_header(void)
{
	struct body b = { .len = 0 };
	size_t len;
	uint8_t *file, *copy;

	b_info(&b);
	b_valid_tables(&b);
	b_one_trace(&b, 0);

	file = wrap(b.data, b.len, 2, &len);
	expect_corrupt(file, len, "unsupported tmtrace snapshot version 2 (this tmtrace reads version 1)", "version 2");
	free(file);
	file = wrap(b.data, b.len, 0, &len);
	expect_corrupt(file, len, "unsupported tmtrace snapshot version 0", "version 0");
	free(file);

	file = wrap(b.data, b.len, TMT_VERSION, &len);
	copy = malloc(len + 1);

#define MUTATE(stmt, needle, what)                     \
	do {                                           \
		memcpy(copy, file, len);               \
		stmt;                                  \
		expect_corrupt(copy, len, needle, what); \
	} while (0)

	MUTATE(put_le(copy + 10, 1, 2), "unknown flags 0x1", "flags");
	MUTATE(copy[12] ^= 1, "CRC mismatch", "CRC");
	MUTATE(put_le(copy + 16, 1ULL << 40, 8), "impossible", "huge body length");
	MUTATE(put_le(copy + 16, UINT64_MAX, 8), "impossible", "body length 2^64-1");
	MUTATE(put_le(copy + 16, b.len + 1, 8), "declared", "body length + 1");
	MUTATE(put_le(copy + 16, b.len - 1, 8), "body longer than", "body length - 1");
	MUTATE(put_le(copy + 24, UINT64_MAX, 8), "truncated", "huge compressed length");
	MUTATE(put_le(copy + 24, len - TMT_HEADER_LEN - 1, 8), "after the end of the compressed body",
	       "compressed length - 1");
	MUTATE(copy[TMT_HEADER_LEN] = 0xff, "zlib", "zlib header");
	MUTATE(copy[len - 1] ^= 0x40, "zlib", "Adler-32");

	/* A byte after the zlib stream, counted in its length */
	memcpy(copy, file, len);
	copy[len] = 0;
	put_le(copy + 24, len + 1 - TMT_HEADER_LEN, 8);
	expect_corrupt(copy, len + 1, "1 bytes after the end of the zlib stream", "byte after the stream");

	/* One byte of garbage after the file */
	memcpy(copy, file, len);
	copy[len] = 0;
	expect_corrupt(copy, len + 1, "1 bytes after the end of the compressed body", "trailing byte");

	/* A body that differs from its CRC but is a valid zlib stream: only
	 * the CRC can tell. */
	{
		struct body b2 = b;
		size_t len2;
		uint8_t *file2;

		b2.data[b2.len - 4] ^= 0x01; /* the size of the trace: 32 -> 33 */
		file2 = wrap(b2.data, b2.len, TMT_VERSION, &len2);
		memcpy(file2 + 12, file + 12, 4);
		expect_corrupt(file2, len2, "corrupt tmtrace snapshot: CRC mismatch", "body changed under its CRC");
		free(file2);
	}
#undef MUTATE
	free(copy);
	free(file);
}

static void test_bad_bodies(void)
{
	struct body b;

#define BODY(stmts, needle)                                 \
	do {                                                \
		b.len = 0;                                  \
		stmts;                                      \
		expect_body_corrupt(&b, needle, #stmts);    \
	} while (0)

	/* Counts larger than the bytes left could hold */
	BODY((b_info(&b), b_varint(&b, 1ULL << 60)), "strings cannot fit");
	BODY((b_info(&b), b_varint(&b, 1), b_varint(&b, 1ULL << 40), b_bytes(&b, "a.py", 4)), "string bytes cannot fit");
	BODY((b_info(&b), b_varint(&b, 0), b_varint(&b, UINT64_MAX)), "tracebacks cannot fit");
	BODY((b_info(&b), b_varint(&b, 0), b_varint(&b, 1), b_varint(&b, 1ULL << 33), b_varint(&b, 0)),
	     "frames cannot fit");
	BODY((b_info(&b), b_valid_tables(&b), b_varint(&b, 1ULL << 50)), "traces cannot fit");
	BODY((b_info(&b), b_valid_tables(&b), b_varint(&b, 1), b_varint(&b, 1ULL << 50)), "column bytes cannot fit");
	/* Indexes out of range */
	BODY((b_info(&b), b_varint(&b, 1), b_varint(&b, 1), b_bytes(&b, "x", 1), b_varint(&b, 1), b_varint(&b, 1),
	      b_varint(&b, 1), b_varint(&b, 1), b_varint(&b, 3)),
	     "string index 1 out of range (1 strings)");
	BODY((b_info(&b), b_valid_tables(&b), b_one_trace(&b, 1)), "traceback index 1 out of range (1 tracebacks)");
	BODY((b_info(&b), b_valid_tables(&b), b_one_trace(&b, UINT64_MAX)), "traceback index");
	/* Values out of range */
	BODY((b_varint(&b, 1ULL << 32)), "traceback_limit 4294967296 out of range");
	BODY((b_varint(&b, 1), b_varint(&b, 1ULL << 32)), "pid 2147483648 out of range");
	BODY((b_varint(&b, 1), b_varint(&b, 0), b_varint(&b, 32), b_bytes(&b, "3.11.7.........................-", 32),
	      b_bytes(&b, "\0\0\0\0\0\0\0\0\1\1", 10)),
	     "python version of 32 bytes");
	BODY((b_varint(&b, 1), b_varint(&b, 0), b_varint(&b, 3), b_bytes(&b, "3\0" "1", 3),
	      b_bytes(&b, "\0\0\0\0\0\0\0\0\1\1", 10)),
	     "NUL byte in python version");
	BODY((b_info(&b), b_varint(&b, 1), b_varint(&b, 3), b_bytes(&b, "a\0b", 3)), "NUL byte in string 0");
	BODY((b_info(&b), b_varint(&b, 1), b_varint(&b, 1), b_bytes(&b, "a", 1), b_varint(&b, 1), b_varint(&b, 1),
	      b_varint(&b, 1), b_varint(&b, 0), b_varint(&b, 1ULL << 32)),
	     "lineno 4294967296 out of range");
	BODY((b_info(&b), b_varint(&b, 0), b_varint(&b, 1), b_varint(&b, 0), b_varint(&b, 1ULL << 32)),
	     "total_nframe 4294967296 out of range");
	/* Varints: 11 bytes; 10 bytes with more than 64 bits; cut by the end */
	BODY((b_bytes(&b, "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00", 11)), "invalid varint (in traceback_limit)");
	BODY((b_bytes(&b, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", 10)), "invalid varint (in traceback_limit)");
	BODY((b_info(&b), b_bytes(&b, "\x80", 1)), "truncated body (in strings)");
	BODY((b_info(&b), b_varint(&b, 1), b_varint(&b, 5), b_bytes(&b, "a.py", 4)), "string bytes cannot fit");
	/* Columns: lengths that do not add up to the rest, values left over,
	 * a value cut by its column's end, addresses beyond 2^64 */
	BODY((b_info(&b), b_valid_tables(&b), b_varint(&b, 1), b_varint(&b, 1), b_varint(&b, 1), b_varint(&b, 1),
	      b_varint(&b, 1), b_varint(&b, 1), b_bytes(&b, "\x10\x20\x01\x00\x00\x00", 6)),
	     "columns of 5 bytes in all, 6 bytes left");
	BODY((b_info(&b), b_valid_tables(&b), b_varint(&b, 1), b_varint(&b, 2), b_varint(&b, 1), b_varint(&b, 1),
	      b_varint(&b, 1), b_varint(&b, 1), b_bytes(&b, "\x10\x10\x20\x01\x00\x00", 6)),
	     "1 bytes after the 1 values of the address column");
	BODY((b_info(&b), b_valid_tables(&b), b_varint(&b, 1), b_varint(&b, 1), b_varint(&b, 1), b_varint(&b, 1),
	      b_varint(&b, 1), b_varint(&b, 1), b_bytes(&b, "\x10\x20\x80\x00\x00", 5)),
	     "count column: truncated or invalid varint");
	BODY((b_info(&b), b_valid_tables(&b), b_varint(&b, 2), b_varint(&b, 11), b_varint(&b, 2), b_varint(&b, 2),
	      b_varint(&b, 2), b_varint(&b, 2), b_varint(&b, UINT64_MAX), b_varint(&b, 1),
	      b_bytes(&b, "\x20\x20\x01\x01\x00\x00\x00\x00", 8)),
	     "address of trace 1 beyond 2^64");
	BODY((b_info(&b), b_valid_tables(&b), b_varint(&b, 1), b_varint(&b, 1), b_varint(&b, 1), b_varint(&b, 1),
	      b_varint(&b, 5), b_varint(&b, 1), b_bytes(&b, "\x10\x20\x01", 3), b_varint(&b, 1ULL << 32),
	      b_varint(&b, 0)),
	     "domain 4294967296 out of range");
	/* Cut short anywhere in the tables */
	BODY((b_info(&b), b_valid_tables(&b), b.len--), "truncated body");
	BODY((b_info(&b), b_valid_tables(&b)), "truncated body (in traces)");
#undef BODY
}

/* Every truncation of a small file is refused, with a reason. */
static void test_truncations(void)
{
	struct tm_snapshot *s = crafted_snapshot();
	size_t len;
	uint8_t *file = tmt_bytes(s, &len);

	for (size_t cut = 0; cut < len; cut++) {
		uint8_t *copy = malloc(cut ? cut : 1);
		char why[WHY_LEN] = "";
		struct tm_snapshot *r = NULL;
		int err;

		memcpy(copy, file, cut);
		err = tm_snapshot_parse(copy, cut, &r, NULL, why, sizeof(why));
		EXPECT(err == -EINVAL && why[0] && !r, "cut at %zu of %zu: %d '%s'", cut, len, err, why);
		if (cut >= TMT_MAGIC_LEN)
			EXPECT(!strncmp(why, "corrupt tmtrace snapshot: ", 26), "cut at %zu: '%s'", cut, why);
		tm_snapshot_free(r);
		free(copy);
	}
	free(file);
	tm_snapshot_free(s);
}

/* Every bit flipped anywhere: refused, or (a flip in the padding bits that
 * end a deflate block, which no decoder reads) the very same snapshot. */
static void test_bit_flips(void)
{
	struct tm_snapshot *s = crafted_snapshot();
	size_t len, harmless = 0;
	uint8_t *file = tmt_bytes(s, &len), *copy = malloc(len);

	for (size_t i = 0; i < len; i++) {
		for (unsigned bit = 0; bit < 8; bit++) {
			char why[WHY_LEN] = "";
			struct tm_snapshot *r = NULL;
			int err;

			memcpy(copy, file, len);
			copy[i] ^= (uint8_t)(1u << bit);
			err = tm_snapshot_parse(copy, len, &r, NULL, why, sizeof(why));
			if (err == 0) {
				size_t l2;
				uint8_t *again = tmt_bytes(r, &l2);

				EXPECT(i >= TMT_HEADER_LEN && l2 == len && !memcmp(again, file, len),
				       "byte %zu bit %u: a different snapshot accepted", i, bit);
				free(again);
				harmless++;
			} else {
				const char *want = i < TMT_MAGIC_LEN ? "not a tmtrace or tracemalloc snapshot file"
					: i < 10 ? "unsupported tmtrace snapshot version"
					: "corrupt tmtrace snapshot: ";

				EXPECT(err == -EINVAL && !strncmp(why, want, strlen(want)), "byte %zu bit %u: %d '%s'",
				       i, bit, err, why);
			}
			tm_snapshot_free(r);
		}
	}
	/* Padding bits are few: a handful per deflate part. */
	EXPECT(harmless < 40, "%zu flips went unnoticed", harmless);
	free(copy);
	free(file);
	tm_snapshot_free(s);
}

/* ---- writing ---- */

/* Runs `fn` in a child process (privileges, limits and signals changed
 * there only); its exit status. */
static int in_child(int (*fn)(void *), void *arg)
{
	pid_t pid = fork();
	int status;

	if (pid == 0)
		_exit(fn(arg));
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

#define SKIPPED 77

struct write_job {
	const struct tm_snapshot *s;
	const char *path;
	int want_err;
	bool drop_root;
	rlim_t fsize;
};

static int write_job(void *arg)
{
	struct write_job *job = arg;
	char why[WHY_LEN];
	int err;

	/* root writes anywhere: a read-only directory needs someone else. */
	if (job->drop_root && geteuid() == 0 && (setgid(65534) || setuid(65534)))
		return SKIPPED;
	if (job->fsize) {
		struct rlimit rl = { job->fsize, job->fsize };

		/* Past the limit write() fails with EFBIG, once SIGXFSZ no
		 * longer kills us. */
		signal(SIGXFSZ, SIG_IGN);
		if (setrlimit(RLIMIT_FSIZE, &rl))
			return 11;
	}
	err = tm_snapshot_write(job->s, job->path, TM_FORMAT_TMTRACE, 0, why, sizeof(why));
	if (err != job->want_err) {
		fprintf(stderr, "\n  write %s: %d (%s), want %d\n", job->path, err, why, job->want_err);
		return 1;
	}
	if (!strstr(why, job->path) || !strstr(why, "cannot write")) {
		fprintf(stderr, "\n  write %s: why '%s'\n", job->path, why);
		return 2;
	}
	return 0;
}

static void expect_file(const char *path, const uint8_t *want, size_t len)
{
	size_t got_len;
	uint8_t *got = slurp(path, &got_len);

	EXPECT(got && got_len == len && !memcmp(got, want, len), "%s changed (%zu bytes, was %zu)", path, got_len,
	       len);
	free(got);
}

static void test_atomic_write(void)
{
	char dir[256], path[300], names[1024], why[WHY_LEN];
	struct tm_snapshot *small = crafted_snapshot(), *big = random_snapshot(50000, 1000);
	struct stat st;
	size_t len;
	uint8_t *old;
	int status;

	tmp_path(dir, sizeof(dir), "atomic");
	mkdir(dir, 0755);
	chmod(tmpdir, 0755); /* so that nobody reaches it */
	snprintf(path, sizeof(path), "%s/snap.tmt", dir);
	CU_ASSERT_EQUAL(tm_snapshot_write(small, path, TM_FORMAT_TMTRACE, 0, why, sizeof(why)), 0);
	old = slurp(path, &len);

	/* A read-only directory: no temporary can be made */
	chmod(dir, 0555);
	status = in_child(write_job, &(struct write_job){ big, path, -EACCES, true, 0 });
	chmod(dir, 0755);
	if (status == SKIPPED)
		fprintf(stderr, "\n  (read-only directory: root cannot drop its privileges here, not tested)\n");
	else
		CU_ASSERT_EQUAL(status, 0);
	expect_file(path, old, len);
	list_dir(dir, names, sizeof(names));
	CU_ASSERT_STRING_EQUAL(names, "snap.tmt");

	/* The disk fills up half way through: write() fails */
	status = in_child(write_job, &(struct write_job){ big, path, -EFBIG, false, 4096 });
	CU_ASSERT_EQUAL(status, 0);
	expect_file(path, old, len);
	list_dir(dir, names, sizeof(names));
	CU_ASSERT_STRING_EQUAL(names, "snap.tmt");

	/* The target is a directory: rename() fails after a full write */
	snprintf(path, sizeof(path), "%s/sub", dir);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/sub/x", dir);
	spit(path, "x", 1);
	snprintf(path, sizeof(path), "%s/sub", dir);
	status = tm_snapshot_write(small, path, TM_FORMAT_TMTRACE, 0, why, sizeof(why));
	EXPECT(status == -EISDIR || status == -ENOTEMPTY || status == -EEXIST, "%d %s", status, why);
	list_dir(dir, names, sizeof(names));
	CU_ASSERT_STRING_EQUAL(names, "snap.tmt sub");

	/* A missing directory */
	snprintf(path, sizeof(path), "%s/missing/snap.tmt", dir);
	status = tm_snapshot_write(small, path, TM_FORMAT_TMTRACE, 0, why, sizeof(why));
	EXPECT(status == -ENOENT && strstr(why, path), "%d %s", status, why);

	/* An unknown format writes nothing */
	snprintf(path, sizeof(path), "%s/other.tmt", dir);
	status = tm_snapshot_write(small, path, (enum tm_file_format)42, 0, why, sizeof(why));
	CU_ASSERT_EQUAL(status, -EINVAL);
	list_dir(dir, names, sizeof(names));
	CU_ASSERT_STRING_EQUAL(names, "snap.tmt sub");

	/* Replacing a file keeps its permissions */
	snprintf(path, sizeof(path), "%s/snap.tmt", dir);
	chmod(path, 0640);
	CU_ASSERT_EQUAL(tm_snapshot_write(big, path, TM_FORMAT_TMTRACE, 0, why, sizeof(why)), 0);
	CU_ASSERT(stat(path, &st) == 0 && (st.st_mode & 07777) == 0640);
	/* A new file gets 0666 less the umask */
	{
		mode_t mask = umask(027);

		snprintf(path, sizeof(path), "%s/new.tmt", dir);
		CU_ASSERT_EQUAL(tm_snapshot_write(small, path, TM_FORMAT_TMTRACE, 0, why, sizeof(why)), 0);
		CU_ASSERT(stat(path, &st) == 0 && (st.st_mode & 07777) == 0640);
		umask(mask);
	}
	/* A relative path: the temporary goes in the current directory */
	{
		char cwd[4096];

		if (getcwd(cwd, sizeof(cwd)) && chdir(dir) == 0) {
			CU_ASSERT_EQUAL(tm_snapshot_write(small, "rel.tmt", TM_FORMAT_TMTRACE, 0, why, sizeof(why)), 0);
			CU_ASSERT_EQUAL(chdir(cwd), 0);
		}
		list_dir(dir, names, sizeof(names));
		CU_ASSERT_STRING_EQUAL(names, "new.tmt rel.tmt snap.tmt sub");
	}
	free(old);
	tm_snapshot_free(small);
	tm_snapshot_free(big);
}

void register_snapfile_tests(void)
{
	CU_pSuite s = CU_add_suite("snapfile", suite_init, suite_clean);

	CU_add_test(s, "round trip: addresses, counts, domains, info, UTF-8", test_roundtrip_crafted);
	CU_add_test(s, "round trip: empty snapshot", test_roundtrip_empty);
	CU_add_test(s, "round trip: 200k traces", test_roundtrip_large);
	CU_add_test(s, "writer output depends on content only", test_deterministic);
	CU_add_test(s, "format told by content, not name", test_detect_by_content);
	CU_add_test(s, "not a snapshot; unreadable files", test_detect_unknown);
	CU_add_test(s, "hand-made body parses", test_crafted_body_valid);
	CU_add_test(s, "corrupt header, CRC, zlib stream", test_bad_header);
	CU_add_test(s, "corrupt bodies: counts, indexes, values", test_bad_bodies);
	CU_add_test(s, "every truncation refused", test_truncations);
	CU_add_test(s, "every bit flip refused or harmless", test_bit_flips);
	CU_add_test(s, "atomic write: failures leave the old file", test_atomic_write);
}
