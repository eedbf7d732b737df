/* CUnit runner: every test file contributes one register function. */
#include <CUnit/Basic.h>
#include <stdarg.h>
#include <stdio.h>
#include "unit.h"

void unit_fail(const char *file, unsigned line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n  %s\n", msg);
	CU_assertImplementation(CU_FALSE, line, msg, file, "", CU_FALSE);
}

int main(void)
{
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 1;
	register_sizefmt_tests();
	register_linetable_tests();
	register_fnmatch_tests();
	register_snapfile_tests();
	register_pickle_tests();
	register_sampled_tests();
	register_pool_tests();
	register_lazyfree_tests();
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
