/* Bytecode offset -> source line, as CPython's PyCode_Addr2Line() computes it
 * for each supported 3.x minor version. Pure functions, no Python needed. */
#ifndef TMTRACE_LINETABLE_H
#define TMTRACE_LINETABLE_H

#include <stddef.h>
#include <stdint.h>

/* Line number of the instruction at byte offset `addrq` of a code object's
 * bytecode, exactly as PyCode_Addr2Line() of CPython 3.<minor> computes it
 * (minor 8..13). `table` is the code object's co_lnotab (3.8, 3.9) or
 * co_linetable (3.10+) bytes; addrq < 0 returns firstlineno.
 * Returns -1 where CPython returns -1 (no line), and -EINVAL for an unsupported
 * minor. Never reads outside table[0..len). */
int linetable_addr2line(int minor, const uint8_t *table, size_t len, int firstlineno, int addrq);

#endif
