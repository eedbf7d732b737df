/* Where a thread-local variable of the target lives for the thread that
 * runs a probe: 3.12+ keep the thread's current thread state in
 * _Py_tss_tstate, a C11 thread_local. Read off the code of an exported
 * function that loads it, and the target's own relocated GOT. */
#ifndef TMTRACE_TLSVAR_H
#define TMTRACE_TLSVAR_H

#include <stdint.h>
#include <sys/types.h>
#include "elffile.h"
#include "tmtrace.h"
#include "x86.h"

/* Finds how `getter` (a function returning the variable's value, such as
 * PyThreadState_Get) reaches it: at a fixed offset from the thread pointer
 * (local-exec, initial-exec: the target's GOT holds the offset), or
 * through the thread's DTV (general-dynamic: __tls_get_addr with a
 * tls_index the target's GOT holds). -ENOENT if the code says neither. */
int tlsvar_find(struct x86_code *code, struct elf_file *ef, pid_t pid, uint64_t bias, const char *getter,
		struct tm_tls_var *out);

#endif
