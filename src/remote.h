/* Reading the target's memory. tmtrace never writes to it. */
#ifndef TMTRACE_REMOTE_H
#define TMTRACE_REMOTE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Reads exactly len bytes at addr in pid's memory: 0, or -EFAULT/-ESRCH/... */
int remote_read(pid_t pid, uint64_t addr, void *buf, size_t len);
int remote_read_u64(pid_t pid, uint64_t addr, uint64_t *out);

#endif
