/*
 * sizefmt against Lib/tracemalloc.py itself: tests/unit/fixtures/sizefmt.txt
 * holds what _format_size(), str(Statistic) and str(StatisticDiff) print for
 * tens of thousands of inputs (scripts/gen-sizefmt-fixtures.py), plus a few
 * hand-written cases for what the fixture cannot carry (buffer sizes, the sign
 * of a NaN, invalid arguments).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sizefmt.h"
#include "unit.h"

#define SIZEFMT_FIXTURE "tests/unit/fixtures/sizefmt.txt"
/* Enough for any double: "%.0f" of DBL_MAX has 309 digits. */
#define TEXT_MAX 512
/* Mismatches reported one by one before they are only counted. */
#define MAX_REPORTED 20

struct fixture_stats {
	unsigned long sizes;      /* format_size() results compared */
	unsigned long statistics; /* format_statistic{,_diff}() results compared */
	unsigned long mismatches;
	unsigned long lineno;     /* of the fixture file */
};

static void expect_text(struct fixture_stats *st, const char *what,
			const char *got, const char *want)
{
	if (strcmp(got, want) == 0)
		return;
	if (++st->mismatches <= MAX_REPORTED)
		unit_fail(__FILE__, __LINE__, "%s:%lu: %s gave \"%s\", Python \"%s\"",
			 SIZEFMT_FIXTURE, st->lineno, what, got, want);
}

/* Splits a line in place at tabs; returns the number of fields. */
static int split_tabs(char *line, char **fields, int max)
{
	int n = 0;

	line[strcspn(line, "\n")] = '\0';
	while (n < max) {
		fields[n++] = line;
		line = strchr(line, '\t');
		if (!line)
			break;
		*line++ = '\0';
	}
	return n;
}

/* "f <double> <unsigned> <signed>" and "i <int> <unsigned> <signed>". */
static void check_size_line(struct fixture_stats *st, char **f, double v)
{
	char got[TEXT_MAX];

	expect_text(st, "format_size(sign=false)",
		    format_size(got, sizeof(got), v, false), f[2]);
	expect_text(st, "format_size(sign=true)",
		    format_size(got, sizeof(got), v, true), f[3]);
	st->sizes += 2;
}

/* The return value is snprintf's: the length of the whole text. */
static void expect_statistic(struct fixture_stats *st, const char *what,
			     int ret, const char *got, const char *want)
{
	expect_text(st, what, got, want);
	if (ret != (int)strlen(want) && ++st->mismatches <= MAX_REPORTED)
		unit_fail(__FILE__, __LINE__, "%s:%lu: %s returned %d, want %zu",
			 SIZEFMT_FIXTURE, st->lineno, what, ret, strlen(want));
	st->statistics++;
}

/* "s <filename> <lineno> <size> <count> <text>" */
static void check_statistic_line(struct fixture_stats *st, char **f)
{
	char got[TEXT_MAX];
	int ret;

	ret = format_statistic(got, sizeof(got), f[1], strtoul(f[2], NULL, 10),
			       strtoll(f[3], NULL, 10), strtoll(f[4], NULL, 10));
	expect_statistic(st, "format_statistic", ret, got, f[5]);
}

/* "d <filename> <lineno> <size> <size_diff> <count> <count_diff> <text>" */
static void check_diff_line(struct fixture_stats *st, char **f)
{
	char got[TEXT_MAX];
	int ret;

	ret = format_statistic_diff(got, sizeof(got), f[1],
				    strtoul(f[2], NULL, 10),
				    strtoll(f[3], NULL, 10),
				    strtoll(f[4], NULL, 10),
				    strtoll(f[5], NULL, 10),
				    strtoll(f[6], NULL, 10));
	expect_statistic(st, "format_statistic_diff", ret, got, f[7]);
}

/* Returns false for a line that has the wrong shape. */
static bool check_fixture_line(struct fixture_stats *st, char *line)
{
	char *f[8];
	int n = split_tabs(line, f, 8);

	if (f[0][0] == '#' || (n == 1 && !f[0][0]))
		return true;
	if (!strcmp(f[0], "f") && n == 4)
		check_size_line(st, f, strtod(f[1], NULL));
	else if (!strcmp(f[0], "i") && n == 4)
		check_size_line(st, f, (double)strtoll(f[1], NULL, 10));
	else if (!strcmp(f[0], "s") && n == 6)
		check_statistic_line(st, f);
	else if (!strcmp(f[0], "d") && n == 8)
		check_diff_line(st, f);
	else
		return false;
	return true;
}

static void test_sizefmt_fixture(void)
{
	struct fixture_stats st = { 0 };
	FILE *fp = fopen(SIZEFMT_FIXTURE, "r");
	char *line = NULL;
	size_t cap = 0;

	if (!fp) {
		unit_fail(__FILE__, __LINE__, "cannot open fixture %s (%s); run the tests from the repository root",
			 SIZEFMT_FIXTURE, strerror(errno));
		return;
	}
	while (getline(&line, &cap, fp) >= 0) {
		st.lineno++;
		if (!check_fixture_line(&st, line))
			unit_fail(__FILE__, __LINE__, "%s:%lu: malformed fixture line",
				 SIZEFMT_FIXTURE, st.lineno);
	}
	free(line);
	fclose(fp);
	printf("\n    sizefmt.txt: %lu format_size and %lu statistic texts checked, %lu mismatches ",
	       st.sizes, st.statistics, st.mismatches);
	/* A truncated or emptied fixture must not pass silently. */
	CU_ASSERT(st.sizes >= 20000);
	CU_ASSERT(st.statistics >= 2000);
	CU_ASSERT_EQUAL(st.mismatches, 0);
}

static void test_format_size_small_buffers(void)
{
	char buf[8];

	/* Truncated like snprintf, but always terminated, and buf returned. */
	CU_ASSERT_PTR_EQUAL(format_size(buf, sizeof(buf), 12.5 * 1024 * 1024, true), buf);
	CU_ASSERT_STRING_EQUAL(buf, "+12.5 M");
	CU_ASSERT_STRING_EQUAL(format_size(buf, 1, 532, false), "");
	memset(buf, 'x', sizeof(buf));
	CU_ASSERT_PTR_EQUAL(format_size(buf, 0, 532, false), buf);
	CU_ASSERT_EQUAL(buf[0], 'x');
}

static void test_format_size_specials(void)
{
	char buf[TEXT_MAX];

	/* The fixture cannot carry a NaN's sign; Python ignores it. */
	CU_ASSERT_STRING_EQUAL(format_size(buf, sizeof(buf), -NAN, false), "nan TiB");
	CU_ASSERT_STRING_EQUAL(format_size(buf, sizeof(buf), -NAN, true), "+nan TiB");
	CU_ASSERT_STRING_EQUAL(format_size(buf, sizeof(buf), NAN, true), "+nan TiB");
	CU_ASSERT_STRING_EQUAL(format_size(buf, sizeof(buf), -INFINITY, true), "-inf TiB");
	CU_ASSERT_STRING_EQUAL(format_size(buf, sizeof(buf), 99.95 * 1024, false), "100.0 KiB");
	CU_ASSERT_STRING_EQUAL(format_size(buf, sizeof(buf), 10 * 1024, false), "10.0 KiB");
	CU_ASSERT_STRING_EQUAL(format_size(buf, sizeof(buf), 10 * 1024 - 1, true), "+10239 B");
	CU_ASSERT_STRING_EQUAL(format_size(buf, sizeof(buf), -0.0, false), "-0 B");
}

static void test_format_statistic_edges(void)
{
	char buf[16];
	const char *full = "x.py:7: size=1024 B, count=3, average=341 B";

	/* snprintf-style: the full length even when the text does not fit. */
	CU_ASSERT_EQUAL(format_statistic(buf, sizeof(buf), "x.py", 7, 1024, 3), (int)strlen(full));
	CU_ASSERT_STRING_EQUAL(buf, "x.py:7: size=10");
	CU_ASSERT_EQUAL(format_statistic(NULL, 0, "x.py", 7, 1024, 3), (int)strlen(full));
	CU_ASSERT_EQUAL(format_statistic(buf, sizeof(buf), NULL, 7, 1024, 3), -EINVAL);
	CU_ASSERT_EQUAL(format_statistic(NULL, 4, "x.py", 7, 1024, 3), -EINVAL);
	CU_ASSERT_EQUAL(format_statistic_diff(buf, sizeof(buf), NULL, 1, 2, 3, 4, 5), -EINVAL);
}

void register_sizefmt_tests(void)
{
	CU_pSuite s = CU_add_suite("sizefmt", NULL, NULL);

	CU_add_test(s, "fixture from Lib/tracemalloc.py", test_sizefmt_fixture);
	CU_add_test(s, "format_size small buffers", test_format_size_small_buffers);
	CU_add_test(s, "format_size NaN, inf, thresholds", test_format_size_specials);
	CU_add_test(s, "format_statistic edges", test_format_statistic_edges);
}
