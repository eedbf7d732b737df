/* tmtrace's own snapshot format (the layout is described in tmtfile.c).
 * Internal to the engine: the public entry points are tm_snapshot_read,
 * tm_snapshot_parse and tm_snapshot_write (snapfile.c). */
#ifndef TMTRACE_TMTFILE_H
#define TMTRACE_TMTFILE_H

#include <stddef.h>
#include <stdint.h>
#include "tmtrace/engine.h"

#define TMT_MAGIC "TMTRACE\0"
#define TMT_MAGIC_LEN 8
#define TMT_VERSION 1
#define TMT_HEADER_LEN 32

/* Parses a whole file image. 0, or -EINVAL with `why` saying what is wrong
 * ("corrupt tmtrace snapshot: CRC mismatch"), or -ENOMEM. *out is set only
 * on success. */
int tm_tmt_parse(const uint8_t *data, size_t len, struct tm_snapshot **out, char *why, size_t whylen);

/* Serializes a snapshot into a malloc'ed buffer (the caller frees it).
 * Traces are written in address order (ties in their order in `s`), so a
 * snapshot read back lists them in that order. 0, -ENOMEM, or -EINVAL for a
 * trace without a traceback. */
int tm_tmt_write(const struct tm_snapshot *s, uint8_t **buf, size_t *len);

#endif
