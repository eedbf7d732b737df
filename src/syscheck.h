/* What the machine and tmtrace's privileges must provide, checked before
 * anything touches the target. */
#ifndef TMTRACE_SYSCHECK_H
#define TMTRACE_SYSCHECK_H

#include <stddef.h>

/* 0, or -EPERM/-ENOTSUP with one line for the user in `why`. */
int syscheck_capabilities(char *why, size_t whylen);
int syscheck_kernel(char *why, size_t whylen);

#endif
