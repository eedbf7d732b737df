/* CUnit runner: every test file contributes one register function. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include "unit.h"

int main(void)
{
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 1;
	register_sizefmt_tests();
	register_linetable_tests();
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
