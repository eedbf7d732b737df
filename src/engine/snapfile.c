/* Snapshot files: tm_snapshot_read, tm_snapshot_parse, tm_snapshot_write.
 * The format is told by the content alone (a file name says nothing: users
 * rename files), and files are replaced atomically, so that a reader, ours
 * or Python's, never sees half a snapshot. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkostemp */
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tmtrace/engine.h"
#include "snapshot_impl.h"
#include "pickle.h"
#include "tmtfile.h"

/* Pickle opcode PROTO; tracemalloc dumps with HIGHEST_PROTOCOL (4 or 5), but
 * any protocol that starts with PROTO is a pickle to us. */
#define PICKLE_PROTO 0x80
#define PICKLE_MIN_PROTOCOL 2
#define PICKLE_MAX_PROTOCOL 5
#define WHY_MAX 512
/* Reading stops there: /dev/zero is no snapshot, and 1M traces take 15 MB
 * as a pickle, 5 MB in our format. */
#define MAX_FILE_SIZE ((size_t)1 << 34)

int tm_snapshot_parse(const uint8_t *data, size_t len, struct tm_snapshot **out, enum tm_file_format *format,
		      char *why, size_t whylen)
{
	/* Callers may print `why` whatever happens. */
	if (why && whylen)
		why[0] = '\0';
	*out = NULL;
	if (len >= TMT_MAGIC_LEN && !memcmp(data, TMT_MAGIC, TMT_MAGIC_LEN)) {
		if (format)
			*format = TM_FORMAT_TMTRACE;
		return tm_tmt_parse(data, len, out, why, whylen);
	}
	if (len >= 2 && data[0] == PICKLE_PROTO && data[1] >= PICKLE_MIN_PROTOCOL && data[1] <= PICKLE_MAX_PROTOCOL) {
		if (format)
			*format = TM_FORMAT_PICKLE;
		return tm_pickle_parse(data, len, out, why, whylen);
	}
	tm_set_why(why, whylen, "not a tmtrace or tracemalloc snapshot file");
	return -EINVAL;
}

/* The whole file in a malloc'ed buffer. read() rather than mmap(): a file
 * truncated while mapped would kill us with SIGBUS, and a snapshot is read
 * once, start to end, so a copy costs little next to parsing it. */
static int read_whole(int fd, uint8_t **data, size_t *len)
{
	struct stat st;
	size_t cap = 1 << 16, n = 0;
	uint8_t *buf;

	/* One byte more than the size, to see the end in the first pass. */
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
		if ((uint64_t)st.st_size >= MAX_FILE_SIZE)
			return -EFBIG;
		cap = (size_t)st.st_size + 1;
	}
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t got;

		if (n == cap) {
			size_t ncap = cap * 2;
			uint8_t *grown;

			if (cap >= MAX_FILE_SIZE) {
				free(buf);
				return -EFBIG;
			}
			grown = realloc(buf, ncap);
			if (!grown) {
				free(buf);
				return -ENOMEM;
			}
			buf = grown;
			cap = ncap;
		}
		got = read(fd, buf + n, cap - n);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			free(buf);
			return -errno;
		}
		if (!got)
			break;
		n += (size_t)got;
	}
	*data = buf;
	*len = n;
	return 0;
}

int tm_snapshot_read(const char *path, struct tm_snapshot **out, enum tm_file_format *format, char *why,
		     size_t whylen)
{
	char inner[WHY_MAX];
	uint8_t *data = NULL;
	size_t len = 0;
	int fd, err;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		tm_set_why(why, whylen, "cannot read %s: %s", path, strerror(-err));
		return err;
	}
	err = read_whole(fd, &data, &len);
	close(fd);
	if (err) {
		tm_set_why(why, whylen, "cannot read %s: %s", path, strerror(-err));
		return err;
	}
	err = tm_snapshot_parse(data, len, out, format, inner, sizeof(inner));
	free(data);
	if (err)
		tm_set_why(why, whylen, "%s: %s", path, inner);
	return err;
}

/* The mode a new file would get from open(..., 0666): the umask only shows
 * in /proc (umask() would change it, racing with other threads). */
static mode_t new_file_mode(void)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[128];
	unsigned mask = 022;

	if (f) {
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "Umask: %o", &mask) == 1)
				break;
		fclose(f);
	}
	return 0666 & ~(mode_t)mask;
}

static int write_all(int fd, const uint8_t *data, size_t len)
{
	while (len) {
		ssize_t n = write(fd, data, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Replaces `path` with `data`: a temporary file in the same directory (so
 * that rename() is atomic), written in full and synced before it is renamed
 * over the target. On failure the temporary is gone and the old file is as
 * it was. A symbolic link at `path` is replaced, not followed. */
static int write_atomic(const char *path, const uint8_t *data, size_t len)
{
	static const char tmpl[] = ".tmtrace-XXXXXX";
	const char *slash = strrchr(path, '/');
	size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
	char *tmp = malloc(dirlen + sizeof(tmpl));
	struct stat st;
	mode_t mode;
	int fd, err = 0;

	if (!tmp)
		return -ENOMEM;
	memcpy(tmp, path, dirlen);
	memcpy(tmp + dirlen, tmpl, sizeof(tmpl));
	/* Replacing a file keeps its permissions; a new one gets the umask's. */
	mode = stat(path, &st) == 0 && S_ISREG(st.st_mode) ? st.st_mode & 07777 : new_file_mode();
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		free(tmp);
		return err;
	}
	/* Best effort: some filesystems (vfat) have no modes to set. */
	fchmod(fd, mode);
	err = write_all(fd, data, len);
	/* The data must be on disk before the name points at it, or a crash
	 * could leave an empty file under the old name. */
	if (!err && fsync(fd))
		err = -errno;
	if (close(fd) && !err)
		err = -errno;
	if (!err && rename(tmp, path))
		err = -errno;
	if (err) {
		unlink(tmp);
		free(tmp);
		return err;
	}
	free(tmp);
	/* And the rename itself, best effort: the file is in place either way. */
	if (dirlen) {
		char *dir = strndup(path, dirlen);

		fd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
		free(dir);
	} else {
		fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
}

int tm_snapshot_write(const struct tm_snapshot *s, const char *path, enum tm_file_format format, int py_minor,
		      char *why, size_t whylen)
{
	uint8_t *data = NULL;
	size_t len = 0;
	int err;

	switch (format) {
	case TM_FORMAT_TMTRACE:
		err = tm_tmt_write(s, &data, &len);
		break;
	case TM_FORMAT_PICKLE:
		err = tm_pickle_write(s, py_minor, &data, &len);
		break;
	default:
		err = -EINVAL;
		break;
	}
	if (err) {
		/* tm_pickle_write() may leave a buffer behind on failure. */
		free(data);
		tm_set_why(why, whylen, "cannot write %s: %s", path, strerror(-err));
		return err;
	}
	err = write_atomic(path, data, len);
	free(data);
	if (err)
		tm_set_why(why, whylen, "cannot write %s: %s", path, strerror(-err));
	return err;
}
