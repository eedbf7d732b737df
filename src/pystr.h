/* Reading a Python str out of the target, as UTF-8. */
#ifndef TMTRACE_PYSTR_H
#define TMTRACE_PYSTR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "pyoffsets.h"

/* Longest string tmtrace reads (filenames, names), in code points. */
#define PYSTR_MAX_CHARS 4096

/* Reads the str at `addr` into buf as UTF-8 (NUL-terminated). A lone
 * surrogate U+DC80..U+DCFF, which is how Python keeps an undecodable byte of
 * a file name, becomes that byte again, as os.fsencode() would write it.
 * -EFAULT: unreadable; -EINVAL: not a ready str; -ENAMETOOLONG: too long. */
int pystr_read(pid_t pid, const struct py_offsets *off, uint64_t addr, char *buf, size_t buflen);

/* Where a str's bytes come from: a copy of [base, base + len) taken
 * earlier, and the target for anything outside it (pid 0: nothing). */
struct pystr_source {
	pid_t pid;
	uint64_t base;
	const uint8_t *bytes;
	size_t len;
};

int pystr_read_from(const struct pystr_source *src, const struct py_offsets *off, uint64_t addr, char *buf,
		    size_t buflen);

/* Encodes one code point as UTF-8 into out (4 bytes at most); returns the
 * number of bytes. */
size_t utf8_encode(uint32_t cp, char *out);

#endif
