/* tm_fnmatch against CPython 3.11's fnmatch.fnmatch on ~100k cases
 * (tests/unit/fixtures/fnmatch.txt, scripts/gen-fnmatch-fixtures.py). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tmtrace/engine.h"
#include "unit.h"

#define FNMATCH_FIXTURE "tests/unit/fixtures/fnmatch.txt"

static void unescape(char *s)
{
	char *out = s;

	for (; *s; s++) {
		if (*s == '\\' && s[1]) {
			s++;
			*out++ = *s == 't' ? '\t' : *s == 'n' ? '\n' : *s;
		} else {
			*out++ = *s;
		}
	}
	*out = '\0';
}

static void test_fnmatch_fixture(void)
{
	FILE *f = fopen(FNMATCH_FIXTURE, "r");
	char *line = NULL;
	size_t cap = 0;
	unsigned long checked = 0, wrong = 0;

	if (!f) {
		unit_fail(__FILE__, __LINE__, "cannot open %s; run the tests from the repository root", FNMATCH_FIXTURE);
		return;
	}
	while (getline(&line, &cap, f) > 0) {
		char *pattern, *name, *end;
		int want;

		if (line[0] == '#')
			continue;
		line[strcspn(line, "\n")] = '\0';
		want = line[0] == '1';
		pattern = strchr(line, '\t');
		name = pattern ? strchr(pattern + 1, '\t') : NULL;
		if (!name) {
			unit_fail(__FILE__, __LINE__, "malformed fixture line: %s", line);
			break;
		}
		*pattern++ = '\0';
		*name++ = '\0';
		end = name + strlen(name);
		(void)end;
		unescape(pattern);
		unescape(name);
		if (tm_fnmatch(name, pattern) != want && wrong++ < 20)
			unit_fail(__FILE__, __LINE__, "fnmatch(%s, %s): tmtrace %d, CPython %d", name, pattern, !want,
				  want);
		checked++;
	}
	free(line);
	fclose(f);
	CU_ASSERT(checked > 50000);
	CU_ASSERT_EQUAL(wrong, 0);
}

void register_fnmatch_tests(void)
{
	CU_pSuite s = CU_add_suite("fnmatch", NULL, NULL);

	CU_add_test(s, "fnmatch agrees with CPython", test_fnmatch_fixture);
}
