/*
 * Fuzz target for tm_snapshot_parse(), that is both snapshot readers:
 * tmtrace's own format (src/engine/tmtfile.c) and tracemalloc's pickle
 * (src/engine/pickle.c). Whatever the bytes, a reader returns 0, -EINVAL
 * with a reason, or -ENOMEM, and never reads or writes out of bounds. A
 * snapshot that parses must then survive what tmtrace does with snapshots:
 *
 *   - statistics, as a report computes them;
 *   - written in tmtrace's format and read back: writing that again gives
 *     the same bytes (the writer depends on the content only, so this is
 *     a full equality check of the round trip);
 *   - written as a pickle (if it is not too big to) and read back: the
 *     same total size and count.
 *
 * Random mutations of a tmtrace file almost never get past its CRC and zlib,
 * so inputs that start with BODY_PREFIX are taken as an uncompressed body:
 * the harness adds the header and compression, and the body parser itself
 * is fuzzed. Corpus files named *.body are such inputs.
 *
 * Two builds (tests/fuzz/fuzz.mk):
 *   build/fuzz_snapshot  clang -fsanitize=fuzzer,address,undefined: make fuzz
 *   build/fuzz_replay    -DTM_FUZZ_REPLAY: a main() that feeds every file of
 *                        the corpus to LLVMFuzzerTestOneInput under ASan and
 *                        UBSan, no libFuzzer needed: make fuzz-replay
 *
 * Corpus (tests/fuzz/corpus/):
 *   py3.X-*.pickle   Snapshot.dump() of real tracemalloc snapshots, cut to a
 *                    few dozen traces, by the pyenv Pythons 3.8-3.13, e.g.
 *                      python3.X -X tracemalloc=10 -c 'import sys, tracemalloc, json
 *                      x = [json.dumps({"a": i}) for i in range(50)]
 *                      s = tracemalloc.take_snapshot()
 *                      tracemalloc.Snapshot(s.traces._traces[:250], 10).dump(sys.argv[1])' OUT
 *   synth-*.pickle   tracemalloc.Snapshot(raw_traces, limit).dump() of crafted
 *                    traces: non-ASCII and surrogate filenames, no frames,
 *                    total_nframe None, extreme sizes, domains and linenos
 *   *.tmt            tmtrace files of the same snapshots and of crafted ones
 *                    (addresses, counts, process info)
 *   *.body           BODY_PREFIX + the body of some of those
 *   fuzz-*           what 15 minutes of fuzzing added, cut down by
 *                    libFuzzer's -merge=1 -use_counters=0 to the inputs that
 *                    reach new edges
 *   crash-*          inputs that crashed a reader once (fixed since)
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "tmtrace/engine.h"
#include "engine/pickle.h"
#include "engine/tmtfile.h"

#define BODY_PREFIX "TMTBODY\n"
#define BODY_PREFIX_LEN 8
/* A pickle holds one raw trace per block: do not expand aggregated
 * snapshots of more blocks than this. */
#define MAX_PICKLED_BLOCKS 20000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *why)
{
	fprintf(stderr, "fuzz_snapshot: %s%s%s\n", what, why ? ": " : "", why ? why : "");
	abort();
}

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

/* A tmtrace file around an uncompressed body, laid out as tmtfile.c
 * documents it; NULL if zlib fails. */
static uint8_t *wrap_body(const uint8_t *body, size_t len, size_t *outlen)
{
	uLongf zlen = compressBound(len);
	uint8_t *out = malloc(TMT_HEADER_LEN + zlen);

	if (!out)
		return NULL;
	if (compress2(out + TMT_HEADER_LEN, &zlen, body, len, 1) != Z_OK) {
		free(out);
		return NULL;
	}
	memcpy(out, TMT_MAGIC, TMT_MAGIC_LEN);
	put_le(out + 8, TMT_VERSION, 2);
	put_le(out + 10, 0, 2);
	put_le(out + 12, crc32(0, body, len), 4);
	put_le(out + 16, len, 8);
	put_le(out + 24, zlen, 8);
	*outlen = TMT_HEADER_LEN + zlen;
	return out;
}

static int parse(const uint8_t *data, size_t len, struct tm_snapshot **s, enum tm_file_format *format)
{
	char why[512];
	int err;

	why[0] = '\0';
	err = tm_snapshot_parse(data, len, s, format, why, sizeof(why));
	if (err == 0 && !*s)
		fail("success without a snapshot", NULL);
	if (err && *s)
		fail("failure with a snapshot", why);
	if (err == -EINVAL && !why[0])
		fail("-EINVAL without a reason", NULL);
	if (err && err != -EINVAL && err != -ENOMEM)
		fail("unexpected error", why);
	return err;
}

static void totals(const struct tm_snapshot *s, uint64_t *size, uint64_t *count)
{
	const struct tm_trace *t = tm_snapshot_traces(s);

	*size = *count = 0;
	for (size_t i = 0; i < tm_snapshot_trace_count(s); i++) {
		*size += t[i].size;
		/* Saturating: a count too large to pickle is all we need to know. */
		*count = *count + t[i].count < *count ? UINT64_MAX : *count + t[i].count;
	}
}

static void check_statistics(const struct tm_snapshot *s)
{
	static const enum tm_key_type keys[] = { TM_KEY_FILENAME, TM_KEY_LINENO, TM_KEY_TRACEBACK };
	struct tm_statistics st;

	for (unsigned k = 0; k < 3; k++) {
		for (int cumulative = 0; cumulative < 2; cumulative++) {
			if (tm_snapshot_statistics(s, keys[k], cumulative, &st) == 0)
				tm_statistics_free(&st);
		}
	}
}

static void check_tmt_roundtrip(const struct tm_snapshot *s)
{
	uint8_t *b1 = NULL, *b2 = NULL;
	size_t l1 = 0, l2 = 0;
	struct tm_snapshot *s2 = NULL;
	int err = tm_tmt_write(s, &b1, &l1);

	if (err == -ENOMEM)
		return;
	if (err)
		fail("tm_tmt_write failed on a parsed snapshot", strerror(-err));
	err = parse(b1, l1, &s2, NULL);
	if (err == -EINVAL)
		fail("tmtrace file written from a parsed snapshot does not parse", NULL);
	if (!err) {
		if (tm_snapshot_trace_count(s2) != tm_snapshot_trace_count(s))
			fail("tmtrace round trip changed the number of traces", NULL);
		if (tm_tmt_write(s2, &b2, &l2) == 0 && (l1 != l2 || memcmp(b1, b2, l1)))
			fail("tmtrace round trip changed the snapshot", NULL);
	}
	tm_snapshot_free(s2);
	free(b1);
	free(b2);
}

static void check_pickle_roundtrip(const struct tm_snapshot *s)
{
	uint64_t size, count, size2, count2;
	uint8_t *buf = NULL;
	size_t len = 0;
	struct tm_snapshot *s2 = NULL;
	enum tm_file_format format;
	int err;

	totals(s, &size, &count);
	if (count > MAX_PICKLED_BLOCKS)
		return;
	/* -EINVAL is documented: a trace of count 0, a filename that is not
	 * UTF-8; nothing to check then. */
	err = tm_pickle_write(s, 11, &buf, &len);
	if (err == 0) {
		err = parse(buf, len, &s2, &format);
		if (err == -EINVAL)
			fail("pickle written from a parsed snapshot does not parse", NULL);
		if (!err) {
			if (format != TM_FORMAT_PICKLE)
				fail("pickle not recognized as one", NULL);
			totals(s2, &size2, &count2);
			if (size2 != size || count2 != count)
				fail("pickle round trip changed the total size or count", NULL);
		}
	}
	tm_snapshot_free(s2);
	free(buf);
}

static void fuzz_one(const uint8_t *data, size_t size)
{
	struct tm_snapshot *s = NULL;

	if (parse(data, size, &s, NULL))
		return;
	check_statistics(s);
	check_tmt_roundtrip(s);
	check_pickle_roundtrip(s);
	tm_snapshot_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size >= BODY_PREFIX_LEN && !memcmp(data, BODY_PREFIX, BODY_PREFIX_LEN)) {
		size_t len;
		uint8_t *file = wrap_body(data + BODY_PREFIX_LEN, size - BODY_PREFIX_LEN, &len);

		if (file)
			fuzz_one(file, len);
		free(file);
		return 0;
	}
	/* An exact-size heap copy: ASan sees a read one past the end. */
	uint8_t *copy = malloc(size ? size : 1);

	if (!copy)
		return 0;
	memcpy(copy, data, size);
	fuzz_one(copy, size);
	free(copy);
	return 0;
}

#ifdef TM_FUZZ_REPLAY
#include <dirent.h>
#include <sys/stat.h>

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, got;

	if (!f) {
		perror(path);
		return -1;
	}
	do {
		if (cap - len < 65536) {
			cap = cap ? cap * 2 : 65536;
			buf = realloc(buf, cap);
			if (!buf) {
				fclose(f);
				return -1;
			}
		}
		got = fread(buf + len, 1, cap - len, f);
		len += got;
	} while (got);
	fclose(f);
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	return 0;
}

/* Files and directories (not recursively) named on the command line. */
int main(int argc, char **argv)
{
	unsigned long n = 0;
	int bad = 0;

	for (int i = 1; i < argc; i++) {
		struct stat st;
		DIR *d;
		struct dirent *e;

		if (stat(argv[i], &st)) {
			perror(argv[i]);
			bad = 1;
			continue;
		}
		if (!S_ISDIR(st.st_mode)) {
			bad |= replay_file(argv[i]) != 0;
			n++;
			continue;
		}
		d = opendir(argv[i]);
		if (!d) {
			perror(argv[i]);
			bad = 1;
			continue;
		}
		while ((e = readdir(d))) {
			char path[4096];

			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
			if (stat(path, &st) || !S_ISREG(st.st_mode))
				continue;
			bad |= replay_file(path) != 0;
			n++;
		}
		closedir(d);
	}
	printf("fuzz_replay: %lu inputs replayed\n", n);
	return bad || !n;
}
#endif
