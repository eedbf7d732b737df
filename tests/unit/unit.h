#ifndef TMTRACE_UNIT_H
#define TMTRACE_UNIT_H

#include <CUnit/CUnit.h>

/* A failed CUnit assertion with a formatted message (CU_FAIL only takes a
 * literal; CUnit copies the text). */
void unit_fail(const char *file, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

void register_sizefmt_tests(void);
void register_linetable_tests(void);
void register_fnmatch_tests(void);
void register_snapfile_tests(void);
void register_pickle_tests(void);
void register_sampled_tests(void);
void register_pool_tests(void);
void register_lazyfree_tests(void);

#endif
