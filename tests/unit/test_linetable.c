/*
 * linetable against CPython itself: tests/unit/fixtures/linetable-3.X.txt.gz
 * hold PyCode_Addr2Line() of every byte offset of thousands of real and
 * crafted code objects, one file per minor version
 * (scripts/gen-linetable-fixtures.py). Hand-written cases cover what CPython
 * cannot be asked about safely: empty, truncated and random tables.
 *
 * Every table is copied into a heap block of exactly its size, so that
 * AddressSanitizer sees a read past its end.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "linetable.h"
#include "unit.h"

#define FIXTURE_FMT "tests/unit/fixtures/linetable-3.%d.txt.gz"
#define MAX_REPORTED 20

/* Heap copy of exactly len bytes (NULL for an empty table). */
static uint8_t *exact_copy(const uint8_t *src, size_t len)
{
	uint8_t *p;

	if (!len)
		return NULL;
	p = malloc(len);
	if (p)
		memcpy(p, src, len);
	return p;
}

/* One whole line of a gzip file, however long; NULL at the end. */
static char *gz_getline(gzFile gz, char **buf, size_t *cap)
{
	size_t len = 0;

	for (;;) {
		if (*cap - len < 2) {
			size_t ncap = *cap ? *cap * 2 : 4096;
			char *nbuf = realloc(*buf, ncap);

			if (!nbuf)
				return NULL;
			*buf = nbuf;
			*cap = ncap;
		}
		if (!gzgets(gz, *buf + len, (int)(*cap - len)))
			return len ? *buf : NULL;
		len += strlen(*buf + len);
		if (len && (*buf)[len - 1] == '\n')
			return *buf;
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decodes hex ("-" = empty) into an exactly sized heap block. */
static int decode_hex(const char *hex, uint8_t **out, size_t *len)
{
	size_t n = strcmp(hex, "-") ? strlen(hex) : 0;
	uint8_t *p;
	size_t i;

	*out = NULL;
	*len = n / 2;
	if (n % 2)
		return -EINVAL;
	if (!n)
		return 0;
	p = malloc(n / 2);
	if (!p)
		return -ENOMEM;
	for (i = 0; i < n / 2; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			free(p);
			return -EINVAL;
		}
		p[i] = (uint8_t)(hi << 4 | lo);
	}
	*out = p;
	return 0;
}

/* The code object described by the last "c" line. */
struct code_case {
	int firstlineno;
	int first_addr;
	uint8_t *table;
	size_t len;
	char label[128];
};

struct fixture_run {
	const char *path;
	int minor;
	unsigned long lineno;
	unsigned long codes;
	unsigned long values;
	unsigned long mismatches;
};

/* "c <firstlineno> <first addrq> <hex> <label>" */
static int parse_code_line(char *line, struct code_case *cc)
{
	char *save, *fl, *addr, *hex, *label;

	free(cc->table);
	cc->table = NULL;
	strtok_r(line, " \n", &save);
	fl = strtok_r(NULL, " \n", &save);
	addr = strtok_r(NULL, " \n", &save);
	hex = strtok_r(NULL, " \n", &save);
	label = strtok_r(NULL, " \n", &save);
	if (!fl || !addr || !hex)
		return -EINVAL;
	cc->firstlineno = (int)strtol(fl, NULL, 10);
	cc->first_addr = (int)strtol(addr, NULL, 10);
	snprintf(cc->label, sizeof(cc->label), "%s", label ? label : "?");
	return decode_hex(hex, &cc->table, &cc->len);
}

static void check_value(struct fixture_run *run, const struct code_case *cc,
			int addrq, int want)
{
	int got = linetable_addr2line(run->minor, cc->table, cc->len,
				      cc->firstlineno, addrq);

	run->values++;
	if (got != want && ++run->mismatches <= MAX_REPORTED)
		unit_fail(__FILE__, __LINE__, "%s:%lu: %s addrq %d: got %d, CPython %d",
			 run->path, run->lineno, cc->label, addrq, got, want);
}

/* "e <line>[*<repeat>] ...": expected values from first_addr upwards. */
static int check_expect_line(struct fixture_run *run, char *line,
			     const struct code_case *cc)
{
	int addrq = cc->first_addr;
	char *save, *tok;

	strtok_r(line, " \n", &save);
	while ((tok = strtok_r(NULL, " \n", &save))) {
		char *end;
		long want = strtol(tok, &end, 10);
		long repeat = *end == '*' ? strtol(end + 1, &end, 10) : 1;

		if (*end || repeat < 1)
			return -EINVAL;
		while (repeat--)
			check_value(run, cc, addrq++, (int)want);
	}
	return 0;
}

static int check_fixture_line(struct fixture_run *run, char *line,
			      struct code_case *cc, bool *have_code)
{
	int minor;

	switch (line[0]) {
	case '#':
	case '\n':
		return 0;
	case 'm':
		if (sscanf(line, "minor %d", &minor) != 1 || minor != run->minor)
			return -EINVAL;
		return 0;
	case 'c':
		run->codes++;
		*have_code = true;
		return parse_code_line(line, cc);
	case 'e':
		return *have_code ? check_expect_line(run, line, cc) : -EINVAL;
	default:
		return -EINVAL;
	}
}

static void check_fixture(int minor)
{
	char path[128];
	struct fixture_run run = { .path = path, .minor = minor };
	struct code_case cc = { 0 };
	bool have_code = false;
	char *line = NULL;
	size_t cap = 0;
	gzFile gz;

	snprintf(path, sizeof(path), FIXTURE_FMT, minor);
	gz = gzopen(path, "rb");
	if (!gz) {
		unit_fail(__FILE__, __LINE__, "cannot open fixture %s; generate it with scripts/gen-linetable-fixtures.py and run the tests from the repository root",
			 path);
		return;
	}
	while (gz_getline(gz, &line, &cap)) {
		run.lineno++;
		if (check_fixture_line(&run, line, &cc, &have_code) < 0)
			unit_fail(__FILE__, __LINE__, "%s:%lu: malformed fixture line",
				 path, run.lineno);
	}
	free(cc.table);
	free(line);
	gzclose(gz);
	printf("\n    linetable-3.%d: %lu code objects, %lu values checked, %lu mismatches ",
	       minor, run.codes, run.values, run.mismatches);
	/* A truncated or emptied fixture must not pass silently. */
	CU_ASSERT(run.codes >= 1000);
	CU_ASSERT(run.values >= 100000);
	CU_ASSERT_EQUAL(run.mismatches, 0);
}

static void test_fixture_38(void) { check_fixture(8); }
static void test_fixture_39(void) { check_fixture(9); }
static void test_fixture_310(void) { check_fixture(10); }
static void test_fixture_311(void) { check_fixture(11); }
static void test_fixture_312(void) { check_fixture(12); }
static void test_fixture_313(void) { check_fixture(13); }

/* addr2line on an exactly sized copy of a literal table. */
static int a2l(int minor, const uint8_t *t, size_t len, int first, int addrq)
{
	uint8_t *copy = exact_copy(t, len);
	int ret = linetable_addr2line(minor, copy, len, first, addrq);

	free(copy);
	return ret;
}

#define A2L(minor, tab, first, addrq) a2l(minor, tab, sizeof(tab), first, addrq)

static void test_empty_table(void)
{
	int minor;

	for (minor = 8; minor <= 13; minor++) {
		CU_ASSERT_EQUAL(a2l(minor, NULL, 0, 42, -1), 42);
		/* lnotab: no pairs, the first line holds everywhere. */
		CU_ASSERT_EQUAL(a2l(minor, NULL, 0, 42, 0), minor <= 9 ? 42 : -1);
		CU_ASSERT_EQUAL(a2l(minor, NULL, 0, 42, 1000), minor <= 9 ? 42 : -1);
	}
}

static void test_negative_addrq(void)
{
	static const uint8_t junk[] = { 0xff, 0xff, 0x7f, 0x80, 0x00, 0xf0 };
	int minor;

	for (minor = 8; minor <= 13; minor++) {
		CU_ASSERT_EQUAL(A2L(minor, junk, 7, -1), 7);
		CU_ASSERT_EQUAL(A2L(minor, junk, -3, -2000000000), -3);
	}
}

static void test_unsupported_minor(void)
{
	static const uint8_t t[] = { 2, 1 };
	static const int bad[] = { -1, 0, 6, 7, 14, 15, 100 };
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CU_ASSERT_EQUAL(A2L(bad[i], t, 1, 0), -EINVAL);
	CU_ASSERT_EQUAL(linetable_addr2line(11, NULL, 4, 1, 0), -EINVAL);
}

static void test_lnotab(void)
{
	/* +3 lines at 0, +0 at 4 and 259 (the compiler's split of a stride
	 * over 255 bytes), -2 at 260, then an odd byte CPython ignores. */
	static const uint8_t t[] = { 0, 3, 4, 0, 255, 0, 1, 0xfe, 7 };

	CU_ASSERT_EQUAL(A2L(8, t, 10, 0), 13);
	CU_ASSERT_EQUAL(A2L(8, t, 10, 258), 13);
	CU_ASSERT_EQUAL(A2L(9, t, 10, 259), 13);
	CU_ASSERT_EQUAL(A2L(9, t, 10, 260), 11);
	/* Past the end: the last line; the odd trailing byte is ignored. */
	CU_ASSERT_EQUAL(A2L(8, t, 10, 100000), 11);
}

static void test_310(void)
{
	/* 4 bytes line+1, (0, +127) + (6, +3): line+131, 2 bytes no line. */
	static const uint8_t t[] = { 4, 1, 0, 127, 6, 3, 2, 0x80 };
	/* Zero-length pair at the end: CPython would read past the table. */
	static const uint8_t dangling[] = { 2, 1, 0, 5 };
	/* Odd length: the last pair is cut in half. */
	static const uint8_t odd[] = { 2, 1, 4 };

	CU_ASSERT_EQUAL(A2L(10, t, 1, 3), 2);
	CU_ASSERT_EQUAL(A2L(10, t, 1, 4), 132);
	CU_ASSERT_EQUAL(A2L(10, t, 1, 9), 132);
	CU_ASSERT_EQUAL(A2L(10, t, 1, 10), -1);
	CU_ASSERT_EQUAL(A2L(10, t, 1, 12), -1);
	CU_ASSERT_EQUAL(A2L(10, dangling, 1, 1), 2);
	CU_ASSERT_EQUAL(A2L(10, dangling, 1, 2), -1);
	CU_ASSERT_EQUAL(A2L(10, odd, 1, 1), 2);
	CU_ASSERT_EQUAL(A2L(10, odd, 1, 2), -1);
}

/* First byte of a location entry: code and length in code units. */
#define LOC(code, units) (uint8_t)(0x80 | (code) << 3 | ((units) - 1))

static void test_locations(void)
{
	static const uint8_t t[] = {
		LOC(13, 2), 0x06,             /* no columns, +3: 13, units 0-1 */
		LOC(15, 1),                   /* no location: unit 2 */
		LOC(11, 1), 4, 9,             /* one line, +1: 14, unit 3 */
		LOC(3, 8), 0x25,              /* short form: 14, units 4-11 */
		LOC(14, 1), 0x0b, 0, 1, 2,    /* long, -5: 9, unit 12 */
		LOC(13, 1), 0x40, 0x40, 0x20, /* no columns, +65536: unit 13 */
	};

	CU_ASSERT_EQUAL(A2L(11, t, 10, 0), 13);
	CU_ASSERT_EQUAL(A2L(11, t, 10, 3), 13);
	CU_ASSERT_EQUAL(A2L(12, t, 10, 4), -1);
	CU_ASSERT_EQUAL(A2L(12, t, 10, 5), -1);
	CU_ASSERT_EQUAL(A2L(13, t, 10, 6), 14);
	CU_ASSERT_EQUAL(A2L(13, t, 10, 8), 14);
	CU_ASSERT_EQUAL(A2L(11, t, 10, 23), 14);
	CU_ASSERT_EQUAL(A2L(11, t, 10, 24), 9);
	CU_ASSERT_EQUAL(A2L(11, t, 10, 27), 9 + 65536);
	CU_ASSERT_EQUAL(A2L(11, t, 10, 28), -1);
	CU_ASSERT_EQUAL(A2L(11, t, 10, 1 << 30), -1);
}

static void test_locations_malformed(void)
{
	/* A first byte without bit 7 (never emitted): CPython still decodes it
	 * as an entry, and its "no location" test wants bit 7, so this code-15
	 * entry has a line. */
	static const uint8_t no_bit7[] = { 0x78, LOC(15, 1) };
	/* Bytes without bit 7 after an entry are skipped, whatever they say. */
	static const uint8_t stray[] = { LOC(11, 1), 1, 2, 0x7f, 0x00, LOC(12, 1), 0, 0 };

	CU_ASSERT_EQUAL(A2L(11, no_bit7, 10, 1), 10);
	CU_ASSERT_EQUAL(A2L(11, no_bit7, 10, 2), -1);
	CU_ASSERT_EQUAL(A2L(12, stray, 10, 1), 11);
	CU_ASSERT_EQUAL(A2L(12, stray, 10, 2), 13);
}

static void test_locations_truncated(void)
{
	/* Long form without its varints, and a varint promising more bytes. */
	static const uint8_t long_cut[] = { LOC(0, 1), 0x00, LOC(14, 1) };
	static const uint8_t varint_cut[] = { LOC(13, 1), 0x42 };
	static const uint8_t long_ok[] = { LOC(14, 2), 0x04 };

	CU_ASSERT_EQUAL(A2L(11, long_cut, 5, 1), 5);
	CU_ASSERT_EQUAL(A2L(11, long_cut, 5, 2), -1);
	CU_ASSERT_EQUAL(A2L(12, varint_cut, 5, 0), -1);
	/* Only the line delta is read: missing column varints do not matter. */
	CU_ASSERT_EQUAL(A2L(13, long_ok, 5, 3), 7);
}

/* xorshift64: reproducible random bytes without libc's rand(). */
static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Random garbage must never crash or read out of bounds (ASan checks). */
static void test_random_tables(void)
{
	uint64_t seed = 0x9e3779b97f4a7c15ULL;
	uint8_t buf[96];
	int iter;

	for (iter = 0; iter < 20000; iter++) {
		size_t len = rng_next(&seed) % sizeof(buf), i;
		int minor = 8 + (int)(rng_next(&seed) % 6);
		int first = (int)(rng_next(&seed) % 2000) - 1000;
		uint8_t *t;
		int addrq;

		for (i = 0; i < len; i++)
			buf[i] = (uint8_t)rng_next(&seed);
		/* Sometimes all continuation bytes: the longest varints. */
		if (iter % 7 == 0)
			for (i = 1; i < len; i++)
				buf[i] |= 0x40;
		t = exact_copy(buf, len);
		for (addrq = -2; addrq < 8 * 96 * 2; addrq += 1 + addrq / 64) {
			int r = linetable_addr2line(minor, t, len, first, addrq);

			if (addrq < 0)
				CU_ASSERT_EQUAL(r, first);
		}
		linetable_addr2line(minor, t, len, first, 0x7fffffff);
		free(t);
	}
}

void register_linetable_tests(void)
{
	CU_pSuite s = CU_add_suite("linetable", NULL, NULL);

	CU_add_test(s, "CPython 3.8 fixture", test_fixture_38);
	CU_add_test(s, "CPython 3.9 fixture", test_fixture_39);
	CU_add_test(s, "CPython 3.10 fixture", test_fixture_310);
	CU_add_test(s, "CPython 3.11 fixture", test_fixture_311);
	CU_add_test(s, "CPython 3.12 fixture", test_fixture_312);
	CU_add_test(s, "CPython 3.13 fixture", test_fixture_313);
	CU_add_test(s, "empty table", test_empty_table);
	CU_add_test(s, "addrq < 0", test_negative_addrq);
	CU_add_test(s, "unsupported minor", test_unsupported_minor);
	CU_add_test(s, "3.8/3.9 lnotab by hand", test_lnotab);
	CU_add_test(s, "3.10 linetable by hand, truncated", test_310);
	CU_add_test(s, "3.11+ locations by hand", test_locations);
	CU_add_test(s, "3.11+ malformed entries", test_locations_malformed);
	CU_add_test(s, "3.11+ truncated entries", test_locations_truncated);
	CU_add_test(s, "random tables stay in bounds", test_random_tables);
}
