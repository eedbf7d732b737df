#ifndef TMTRACE_UNIT_H
#define TMTRACE_UNIT_H

#include <CUnit/CUnit.h>

void register_sizefmt_tests(void);
void register_linetable_tests(void);

#endif
