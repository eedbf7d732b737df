/*
 * pickle_tool: the engine's pickle reader and writer from the command line,
 * for scripts/check-pickle-roundtrip.py (which builds it itself) and for
 * timing. Built from the repository root with:
 *
 *   cc -O2 -Wall -Wextra -std=gnu11 -D_GNU_SOURCE -Iinclude -Isrc tests/unit/pickle_tool.c src/engine/pickle.c src/engine/snapshot.c src/engine/arena.c src/engine/hashset.c -o build/pickle_tool
 *
 * Only the engine files the pickle needs, so that it builds whatever state
 * the rest of the engine is in.
 *
 *   pickle_tool rewrite IN OUT PY_MINOR   parse IN, write it for 3.PY_MINOR
 *   pickle_tool bench IN PY_MINOR [N]     best of N parses of IN (reading the
 *                                         file, and from memory) and writes (to
 *                                         memory, and to a file): JSON pairs of
 *                                         [CPU seconds, wall seconds]
 *
 * Exit status 0, or 1 with the reason on stderr (the parser's `why`).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/pickle.h"

static int read_file(const char *path, uint8_t **data, size_t *len)
{
	FILE *f = fopen(path, "rb");
	size_t cap = 1 << 20, n = 0;
	uint8_t *b = NULL;

	if (!f)
		return -errno;
	for (;;) {
		uint8_t *g = realloc(b, cap);

		if (!g) {
			free(b);
			fclose(f);
			return -ENOMEM;
		}
		b = g;
		n += fread(b + n, 1, cap - n, f);
		if (n < cap)
			break;
		cap *= 2;
	}
	if (ferror(f)) {
		free(b);
		fclose(f);
		return -EIO;
	}
	fclose(f);
	*data = b;
	*len = n;
	return 0;
}

static int write_file(const char *path, const uint8_t *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	if (!f)
		return -errno;
	if (fwrite(data, 1, len, f) != len) {
		fclose(f);
		return -EIO;
	}
	return fclose(f) ? -errno : 0;
}

/* Both CPU time (user + system, page faults included), which other jobs on
 * a shared machine distort less, and wall time; the check script measures
 * Python with time.process_time() and time.perf_counter() alike. */
struct stamp {
	double cpu, wall;
};

static struct stamp now(void)
{
	struct timespec c, w;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c);
	clock_gettime(CLOCK_MONOTONIC, &w);
	return (struct stamp){ c.tv_sec + c.tv_nsec / 1e9, w.tv_sec + w.tv_nsec / 1e9 };
}

/* Keeps the best of several runs. */
static void best(struct stamp *b, struct stamp t0)
{
	struct stamp t1 = now();

	if (t1.cpu - t0.cpu < b->cpu)
		b->cpu = t1.cpu - t0.cpu;
	if (t1.wall - t0.wall < b->wall)
		b->wall = t1.wall - t0.wall;
}

static int parse(const char *path, uint8_t **data, size_t *len, struct tm_snapshot **s)
{
	char why[256];
	int err = read_file(path, data, len);

	if (err) {
		fprintf(stderr, "%s: %s\n", path, strerror(-err));
		return 1;
	}
	err = tm_pickle_parse(*data, *len, s, why, sizeof(why));
	if (err) {
		fprintf(stderr, "%s: %s (%s)\n", path, why, strerror(-err));
		return 1;
	}
	return 0;
}

static int rewrite(const char *in, const char *out, int py_minor)
{
	struct tm_snapshot *s;
	uint8_t *data, *buf = NULL;
	size_t len, blen = 0;
	int err;

	if (parse(in, &data, &len, &s))
		return 1;
	err = tm_pickle_write(s, py_minor, &buf, &blen);
	if (!err)
		err = write_file(out, buf, blen);
	if (err)
		fprintf(stderr, "%s: %s\n", out, strerror(-err));
	free(buf);
	free(data);
	tm_snapshot_free(s);
	return err ? 1 : 0;
}

static int bench(const char *in, int py_minor, int n)
{
	struct stamp parse_b = { 1e9, 1e9 }, load_b = parse_b, write_b = parse_b, file_b = parse_b;
	struct tm_snapshot *s = NULL;
	uint8_t *data, *buf = NULL;
	size_t len, blen = 0;
	char tmp[] = "/tmp/pickle_tool.XXXXXX";
	int fd = mkstemp(tmp);

	if (fd < 0)
		return 1;
	close(fd);
	if (read_file(in, &data, &len))
		return 1;
	for (int i = 0; i < n; i++) {
		struct tm_snapshot *l;
		uint8_t *d;
		size_t dl;
		struct stamp t0 = now();

		/* As Snapshot.load() does: from the file... */
		if (parse(in, &d, &dl, &l))
			return 1;
		best(&load_b, t0);
		tm_snapshot_free(l);
		free(d);

		/* ... and from memory, as pickle.loads(). */
		t0 = now();
		if (tm_pickle_parse(data, len, &l, NULL, 0))
			return 1;
		best(&parse_b, t0);
		if (s)
			tm_snapshot_free(l);
		else
			s = l;
	}
	for (int i = 0; i < n; i++) {
		struct stamp t0 = now();

		blen = 0;
		free(buf);
		buf = NULL;
		if (tm_pickle_write(s, py_minor, &buf, &blen))
			return 1;
		best(&write_b, t0);
		if (write_file(tmp, buf, blen))
			return 1;
		best(&file_b, t0);
	}
	unlink(tmp);
	printf("{\"parse\": [%.6f, %.6f], \"load\": [%.6f, %.6f], \"write\": [%.6f, %.6f], "
	       "\"write_file\": [%.6f, %.6f], \"traces\": %zu, \"in_bytes\": %zu, \"out_bytes\": %zu}\n",
	       parse_b.cpu, parse_b.wall, load_b.cpu, load_b.wall, write_b.cpu, write_b.wall, file_b.cpu,
	       file_b.wall, tm_snapshot_trace_count(s), len, blen);
	tm_snapshot_free(s);
	free(buf);
	free(data);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "rewrite"))
		return rewrite(argv[2], argv[3], atoi(argv[4]));
	if ((argc == 4 || argc == 5) && !strcmp(argv[1], "bench"))
		return bench(argv[2], atoi(argv[3]), argc == 5 ? atoi(argv[4]) : 5);
	fprintf(stderr, "usage: %s rewrite IN OUT PY_MINOR | bench IN PY_MINOR [N]\n", argv[0]);
	return 2;
}
