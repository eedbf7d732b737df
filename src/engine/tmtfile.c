/*
 * tmtrace's own snapshot format, version 1.
 *
 * Why a format of our own next to tracemalloc's pickle: a pickle drops block
 * addresses (get_object_traceback() needs them) and the process information,
 * and it is large and slow to write and read. This one is compact (tables of
 * strings and tracebacks, varints, delta-coded addresses, zlib), checked (a
 * CRC-32 of the uncompressed body, every index and length against its
 * bounds) and versioned.
 *
 * Fixed-width integers are little-endian. A "varint" is unsigned LEB128
 * (7 bits a byte, low group first, at most 10 bytes, the 10th byte 0 or 1);
 * an "svarint" is the varint of a zigzag-coded signed value
 * ((v << 1) ^ (v >> 63): 0, -1, 1, -2... -> 0, 1, 2, 3...).
 *
 * File: a 32-byte header, then a zlib stream (RFC 1950) of the body.
 *
 *   offset size  field
 *        0    8  magic "TMTRACE\0"
 *        8    2  format version, 1. Magic and version stay where they are in
 *                every future version, so that any reader can say which
 *                version it was given before it refuses it.
 *       10    2  flags; none defined, a v1 reader refuses any set bit (they
 *                are for changes an old reader must not misread)
 *       12    4  CRC-32 (zlib's crc32()) of the uncompressed body
 *       16    8  length of the uncompressed body
 *       24    8  length of the zlib stream; the file ends where it ends
 *       32       the zlib stream
 *
 * Body, in this order, no padding:
 *
 *   info
 *     varint   traceback_limit
 *     svarint  pid (0: unknown)
 *     u8       length (0-31) of the Python version string, then its bytes
 *     f64      time, unix seconds (IEEE 754 binary64, little-endian)
 *     svarint  traced_current (-1: unknown)
 *     svarint  traced_peak (-1: unknown)
 *   string table
 *     varint   nstrings
 *     nstrings x { varint length, bytes }: UTF-8 filenames without NUL
 *   traceback table
 *     varint   ntracebacks
 *     ntracebacks x { varint nframe, varint total_nframe,
 *                     nframe x { varint string index, varint lineno } }
 *              frames most recent call first, as in struct tm_traceback
 *   traces, in address order, column by column (a column of like values
 *   compresses much better than interleaved records)
 *     varint   ntraces
 *     5 x varint        the byte length of each column below (so that a
 *                       reader can walk them side by side, in one pass)
 *     ntraces x varint  address minus the previous trace's (the first: minus 0)
 *     ntraces x varint  size
 *     ntraces x varint  count
 *     ntraces x varint  domain
 *     ntraces x varint  traceback index
 *
 * The body ends right after the last column. The writer puts strings and
 * tracebacks in the order the sorted traces first use them, so its output
 * depends only on the snapshot's content: write(read(f)) == f.
 *
 * Readers trust nothing: the body is inflated into a buffer that grows only
 * as zlib actually produces bytes, and every count is checked against the
 * bytes left before anything is allocated for it.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "tmtrace/engine.h"
#include "snapshot_impl.h"
#include "tmtfile.h"

#define CORRUPT "corrupt tmtrace snapshot: "
/* No real snapshot comes near this (1M traces make a ~8 MB body); it keeps a
 * hostile header from making us allocate without bound. */
#define TMT_MAX_BODY ((uint64_t)1 << 34)
/* Deflate cannot expand more than ~1032:1 (a 258-byte match in 2 bits). */
#define DEFLATE_MAX_RATIO 1032
/* Smallest encodings, to bound counts by the bytes that remain. */
#define MIN_TRACEBACK_BYTES 2 /* nframe, total_nframe */
#define MIN_FRAME_BYTES 2     /* string index, lineno */
#define MIN_TRACE_BYTES 5     /* one byte in each column */
#define MAX_VARINT 10
#define NCOLUMNS 5 /* of the traces: address, size, count, domain, traceback */
/* zlib level 1: the body is dense already (varints, deltas, tables), higher
 * levels gain ~2% for 3x the time. (The strategy is chosen per part, see
 * column_strategy().) */
#define TMT_ZLIB_LEVEL 1
/* zlib counts bytes in uInt: feed it at most this much at once. */
#define ZCHUNK ((size_t)1 << 30)

static uint64_t get_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	while (n--)
		v = v << 8 | p[n];
	return v;
}

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

static inline uint64_t zigzag(int64_t v)
{
	return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static inline int64_t unzigzag(uint64_t v)
{
	return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* ---- writing ---- */

static inline uint8_t *put_varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)v | 0x80;
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

/* A growable output buffer. Errors are sticky (`failed`), so that a run of
 * appends is checked once at its end. */
struct obuf {
	uint8_t *data;
	size_t len, cap;
	bool failed;
};

static uint8_t *obuf_reserve(struct obuf *b, size_t n)
{
	if (b->failed)
		return NULL;
	if (b->cap - b->len < n) {
		size_t cap = b->cap ? b->cap : 4096;
		uint8_t *grown;

		while (cap - b->len < n)
			cap *= 2;
		grown = realloc(b->data, cap);
		if (!grown) {
			b->failed = true;
			return NULL;
		}
		b->data = grown;
		b->cap = cap;
	}
	return b->data + b->len;
}

static void obuf_varint(struct obuf *b, uint64_t v)
{
	uint8_t *p = obuf_reserve(b, MAX_VARINT);

	if (p)
		b->len = (size_t)(put_varint(p, v) - b->data);
}

static void obuf_bytes(struct obuf *b, const void *src, size_t n)
{
	uint8_t *p = obuf_reserve(b, n);

	if (p && n) {
		memcpy(p, src, n);
		b->len += n;
	}
}

/* Pointer -> index, for the tables: strings and tracebacks are interned, so
 * their identity is their value. Key and value side by side: a lookup
 * touches one cache line. */
struct ptrmap_entry {
	const void *key;
	uint64_t val;
};

struct ptrmap {
	struct ptrmap_entry *slots;
	size_t cap, count;
};

static inline size_t ptrmap_hash(const void *key)
{
	return (size_t)hash_mix(0, (uintptr_t)key);
}

static int ptrmap_grow(struct ptrmap *m)
{
	size_t cap = m->cap ? m->cap * 2 : 1024;
	struct ptrmap_entry *slots = calloc(cap, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; i < m->cap; i++) {
		if (!m->slots[i].key)
			continue;
		size_t j = ptrmap_hash(m->slots[i].key) & (cap - 1);

		while (slots[j].key)
			j = (j + 1) & (cap - 1);
		slots[j] = m->slots[i];
	}
	free(m->slots);
	m->slots = slots;
	m->cap = cap;
	return 0;
}

/* The index of `key`, giving it the next one if it is new (*added). */
static int ptrmap_index(struct ptrmap *m, const void *key, uint32_t *val, bool *added)
{
	size_t i;

	*added = false;
	if ((m->count + 1) * 2 > m->cap && ptrmap_grow(m))
		return -ENOMEM;
	for (i = ptrmap_hash(key) & (m->cap - 1); m->slots[i].key; i = (i + 1) & (m->cap - 1)) {
		if (m->slots[i].key == key) {
			*val = (uint32_t)m->slots[i].val;
			return 0;
		}
	}
	m->slots[i] = (struct ptrmap_entry){ key, m->count };
	*val = (uint32_t)m->count++;
	*added = true;
	return 0;
}

static void ptrmap_free(struct ptrmap *m)
{
	free(m->slots);
}

#define RADIX_MAX_BITS 12

/* Sorts n 64-bit keys on their bits [lo, lo + span), stably: an LSD radix
 * sort in as few passes of at most 12 bits as the span needs. *keys is
 * swapped for the sorted buffer. */
static int radix_sort(uint64_t **keys, size_t n, unsigned lo, unsigned span)
{
	unsigned passes = (span + RADIX_MAX_BITS - 1) / RADIX_MAX_BITS;
	unsigned bits = passes ? (span + passes - 1) / passes : 0;
	uint64_t *src = *keys, *dst, mask = ((uint64_t)1 << bits) - 1;
	uint32_t *hist;

	if (!passes)
		return 0;
	dst = malloc(n * sizeof(*dst));
	hist = malloc(((size_t)1 << bits) * sizeof(*hist));
	if (!dst || !hist) {
		free(dst);
		free(hist);
		return -ENOMEM;
	}
	for (unsigned d = 0; d < passes; d++) {
		unsigned shift = lo + d * bits;
		uint32_t sum = 0;
		uint64_t *t;

		memset(hist, 0, ((size_t)1 << bits) * sizeof(*hist));
		for (size_t i = 0; i < n; i++)
			hist[(src[i] >> shift) & mask]++;
		for (size_t k = 0; k <= mask; k++) {
			uint32_t c = hist[k];

			hist[k] = sum;
			sum += c;
		}
		for (size_t i = 0; i < n; i++)
			dst[hist[(src[i] >> shift) & mask]++] = src[i];
		t = src;
		src = dst;
		dst = t;
	}
	*keys = src;
	free(dst);
	free(hist);
	return 0;
}

static int by_address(const void *pa, const void *pb, void *ctx)
{
	const struct tm_trace *traces = ctx;
	uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;

	if (traces[a].address != traces[b].address)
		return traces[a].address < traces[b].address ? -1 : 1;
	return a < b ? -1 : a > b;
}

/* The traces' indexes in address order, ties in index order, as the low
 * `idx_bits` bits of n keys (*order, as filled with the indexes in order).
 * Heap addresses differ in a few tens of bits only (`differ`: the OR of
 * every address XOR the first): those bits above the index make a key that
 * a radix sort of 8-byte keys orders several times faster than qsort(),
 * which is left for address spaces too wide for that. */
static int sort_by_address(const struct tm_trace *traces, size_t n, uint64_t differ, unsigned idx_bits,
			   uint64_t **order)
{
	unsigned lo, span;

	if (!differ)
		return 0;
	lo = (unsigned)__builtin_ctzll(differ);
	span = 64 - (unsigned)__builtin_clzll(differ) - lo;
	if (span + idx_bits > 64) {
		qsort_r(*order, n, sizeof(**order), by_address, (void *)traces);
		return 0;
	}
	for (size_t i = 0; i < n; i++)
		(*order)[i] |= ((traces[i].address >> lo) & (((uint64_t)1 << span) - 1)) << idx_bits;
	return radix_sort(order, n, idx_bits, span);
}

static int zerr(int ret)
{
	return ret == Z_MEM_ERROR ? -ENOMEM : -EIO;
}

/* The body goes out as one zlib stream made of parts compressed apart, the
 * way pigz does it: each part is raw deflate closed by a sync flush (an
 * empty stored block, ending on a byte boundary) and the last one by the
 * final block, so that their concatenation is one valid deflate stream. The
 * parts are compressed in threads: a 1M-trace body then costs the time of
 * its largest part rather than of all. Readers see an ordinary stream. */
#define ZPART_PIECES 2
#define MAX_ZPARTS 5
/* A part is tried on this many bytes before the rest is compressed... */
#define ZSAMPLE (64 * 1024)
/* Below this, threads cost more than they save. */
#define PARALLEL_MIN_BODY (256 * 1024)

struct zpart {
	const uint8_t *data[ZPART_PIECES]; /* consecutive pieces of the body */
	size_t len[ZPART_PIECES];
	int strategy;
	bool last;
	uint8_t *out; /* raw deflate */
	size_t outlen;
	int err;
};

static size_t zroom(const z_stream *zs, const uint8_t *out, size_t cap)
{
	size_t room = cap - (size_t)(zs->next_out - out);

	return room < ZCHUNK ? room : ZCHUNK;
}

/* ...and stored if they do not compress by 1/8: deflate on bytes with no
 * structure (traceback numbers of a heap with no locality, say) costs
 * 30 ms a megabyte to gain a few percent. Stored blocks are still deflate:
 * readers see nothing of this. */
static int zpart_sampled(z_stream *zs, const uint8_t *out, size_t cap)
{
	int ret;

	/* End the block, so that what the sample became is all out. */
	zs->avail_out = (uInt)zroom(zs, out, cap);
	ret = deflate(zs, Z_BLOCK);
	if (ret != Z_OK || zs->total_out * 8 <= zs->total_in * 7)
		return ret;
	zs->avail_out = (uInt)zroom(zs, out, cap);
	return deflateParams(zs, Z_NO_COMPRESSION, Z_DEFAULT_STRATEGY);
}

static void *zpart_run(void *arg)
{
	struct zpart *part = arg;
	z_stream zs = { 0 };
	size_t total = 0, cap;
	int ret, flush = part->last ? Z_FINISH : Z_SYNC_FLUSH;
	bool sampled;

	for (unsigned k = 0; k < ZPART_PIECES; k++)
		total += part->len[k];
	ret = deflateInit2(&zs, TMT_ZLIB_LEVEL, Z_DEFLATED, -15, 8, part->strategy);
	if (ret != Z_OK) {
		part->err = zerr(ret);
		return NULL;
	}
	/* deflateBound() counts in uLong, 64 bits on LP64; the flushes add
	 * block headers it does not foresee. */
	cap = deflateBound(&zs, total) + (total >> 10) + 64;
	part->out = malloc(cap);
	if (!part->out) {
		part->err = -ENOMEM;
		goto out;
	}
	zs.next_out = part->out;
	/* Small parts are not worth a decision. */
	sampled = total < 4 * ZSAMPLE;
	for (unsigned k = 0; k < ZPART_PIECES; k++) {
		const uint8_t *p = part->data[k];
		size_t left = part->len[k];

		while (left) {
			size_t chunk = left < ZCHUNK ? left : ZCHUNK;

			if (!sampled && chunk > ZSAMPLE - zs.total_in)
				chunk = ZSAMPLE - zs.total_in;
			zs.next_in = (Bytef *)p;
			zs.avail_in = (uInt)chunk;
			zs.avail_out = (uInt)zroom(&zs, part->out, cap);
			ret = deflate(&zs, Z_NO_FLUSH);
			/* With room to spare, no progress is a bug, not a loop. */
			if (ret != Z_OK || (zs.avail_in == chunk && zs.avail_out))
				goto fail;
			p += chunk - zs.avail_in;
			left -= chunk - zs.avail_in;
			if (!sampled && zs.total_in >= ZSAMPLE) {
				sampled = true;
				ret = zpart_sampled(&zs, part->out, cap);
				if (ret != Z_OK)
					goto fail;
			}
		}
	}
	do {
		zs.avail_out = (uInt)zroom(&zs, part->out, cap);
		if (!zs.avail_out)
			goto fail;
		ret = deflate(&zs, flush);
		if (ret != Z_OK && ret != Z_STREAM_END)
			goto fail;
	} while (flush == Z_FINISH ? ret != Z_STREAM_END : !zs.avail_out);
	part->outlen = (size_t)(zs.next_out - part->out);
	goto out;
fail:
	part->err = ret == Z_MEM_ERROR ? -ENOMEM : -EIO;
out:
	deflateEnd(&zs);
	return NULL;
}

/* Compresses the parts (in parallel when the body is large) and lays out
 * the file: header, zlib header, the parts, Adler-32 of the body. At most
 * MAX_ZPARTS parts. */
static int compress_body(struct zpart *parts, unsigned nparts, uint8_t **buf, size_t *len)
{
	pthread_t threads[MAX_ZPARTS];
	bool started[MAX_ZPARTS];
	uint64_t body_len = 0;
	uLong crc = crc32(0, NULL, 0), adler = adler32(0, NULL, 0);
	size_t zlen = 2 + 4, off;
	uint8_t *out;
	int err = 0;

	for (unsigned i = 0; i < nparts; i++)
		for (unsigned k = 0; k < ZPART_PIECES; k++)
			body_len += parts[i].len[k];
	/* Part 0 is ours; threads that cannot start are run here too. */
	for (unsigned i = 0; i < nparts; i++)
		started[i] = i && body_len >= PARALLEL_MIN_BODY &&
			     !pthread_create(&threads[i], NULL, zpart_run, &parts[i]);
	for (unsigned i = 0; i < nparts; i++)
		if (!started[i])
			zpart_run(&parts[i]);
	/* Both checksums of the body while the threads work. */
	for (unsigned i = 0; i < nparts; i++) {
		for (unsigned k = 0; k < ZPART_PIECES; k++) {
			if (!parts[i].len[k])
				continue;
			crc = crc32_z(crc, parts[i].data[k], parts[i].len[k]);
			adler = adler32_z(adler, parts[i].data[k], parts[i].len[k]);
		}
	}
	for (unsigned i = 0; i < nparts; i++) {
		if (started[i])
			pthread_join(threads[i], NULL);
		if (parts[i].err && !err)
			err = parts[i].err;
		zlen += parts[i].outlen;
	}
	out = err ? NULL : malloc(TMT_HEADER_LEN + zlen);
	if (!out && !err)
		err = -ENOMEM;
	if (!err) {
		memcpy(out, TMT_MAGIC, TMT_MAGIC_LEN);
		put_le(out + 8, TMT_VERSION, 2);
		put_le(out + 10, 0, 2);
		put_le(out + 12, crc, 4);
		put_le(out + 16, body_len, 8);
		put_le(out + 24, zlen, 8);
		/* CMF: deflate, 32 KiB window; FLG: level "fastest", no
		 * dictionary, check bits making CMF*256+FLG a multiple of 31. */
		out[TMT_HEADER_LEN] = 0x78;
		out[TMT_HEADER_LEN + 1] = 0x01;
		off = TMT_HEADER_LEN + 2;
		for (unsigned i = 0; i < nparts; i++) {
			memcpy(out + off, parts[i].out, parts[i].outlen);
			off += parts[i].outlen;
		}
		for (unsigned k = 0; k < 4; k++)
			out[off + k] = (uint8_t)(adler >> (24 - 8 * k));
		*buf = out;
		*len = TMT_HEADER_LEN + zlen;
	}
	for (unsigned i = 0; i < nparts; i++)
		free(parts[i].out);
	return err;
}

/* How to compress a column, from how often a value repeats the one before.
 * A real heap has runs: a site allocates many blocks in a row, of one size,
 * side by side in a pool; LZ77 (the default strategy) turns them into long
 * matches, 3x smaller and faster than Z_RLE, which only sees runs of one
 * byte. Where values look random, LZ77 searches in vain: Z_RLE, twice as
 * fast for the same size. */
static int column_strategy(size_t repeats, size_t n)
{
	return repeats >= n / 4 ? Z_DEFAULT_STRATEGY : Z_RLE;
}

static void write_info(struct obuf *b, const struct tm_snapshot *s)
{
	const struct tm_snapshot_info *info = &s->info;
	uint8_t pylen = (uint8_t)strnlen(info->python, sizeof(info->python) - 1);
	uint64_t time_bits;
	uint8_t le[8];

	memcpy(&time_bits, &info->time, sizeof(time_bits));
	put_le(le, time_bits, 8);
	obuf_varint(b, s->traceback_limit);
	obuf_varint(b, zigzag(info->pid));
	obuf_bytes(b, &pylen, 1);
	obuf_bytes(b, info->python, pylen);
	obuf_bytes(b, le, 8);
	obuf_varint(b, zigzag(info->traced_current));
	obuf_varint(b, zigzag(info->traced_peak));
}

/* The string and traceback tables, appended to `meta` (which holds the info).
 * The string table must come first in the body, but its order is the
 * tracebacks' order of use: the traceback table is built aside. */
static int write_tables(struct obuf *meta, const struct tm_traceback *const *tbs, size_t ntbs)
{
	struct ptrmap strings = { 0 };
	struct obuf strtab = { 0 }, tbtab = { 0 };
	int err = 0;

	obuf_varint(&tbtab, ntbs);
	for (size_t t = 0; t < ntbs && !err; t++) {
		const struct tm_traceback *tb = tbs[t];

		obuf_varint(&tbtab, tb->nframe);
		obuf_varint(&tbtab, tb->total_nframe);
		for (uint32_t f = 0; f < tb->nframe && !err; f++) {
			const char *name = tb->frames[f].filename;
			uint32_t idx;
			bool added;

			err = ptrmap_index(&strings, name, &idx, &added);
			if (!err && added) {
				size_t len = strlen(name);

				obuf_varint(&strtab, len);
				obuf_bytes(&strtab, name, len);
			}
			obuf_varint(&tbtab, idx);
			obuf_varint(&tbtab, tb->frames[f].lineno);
		}
	}
	obuf_varint(meta, strings.count);
	obuf_bytes(meta, strtab.data, strtab.len);
	obuf_bytes(meta, tbtab.data, tbtab.len);
	if (strtab.failed || tbtab.failed || meta->failed)
		err = -ENOMEM;
	ptrmap_free(&strings);
	free(strtab.data);
	free(tbtab.data);
	return err;
}

int tm_tmt_write(const struct tm_snapshot *s, uint8_t **buf, size_t *len)
{
	const struct tm_trace *traces = s->traces;
	size_t n = s->ntraces, ntbs;
	uint64_t *order = NULL, idx_mask, differ = 0;
	unsigned idx_bits = 1;
	uint8_t *cols = NULL, *col[NCOLUMNS], *end[NCOLUMNS];
	const struct tm_traceback **tbs = NULL, **tbs_sorted = NULL;
	uint32_t *tb_of = NULL, *renumber = NULL;
	struct ptrmap tbmap = { 0 };
	struct obuf meta = { 0 };
	bool sorted = true;
	int err = -ENOMEM;

	/* Counts are 32-bit; 2^32 traces would be 160 GiB anyway. */
	if (n >= UINT32_MAX)
		return -ENOMEM;
	while (idx_bits < 32 && n > (size_t)1 << idx_bits)
		idx_bits++;
	idx_mask = ((uint64_t)1 << idx_bits) - 1;
	order = malloc((n ? n : 1) * sizeof(*order));
	tb_of = malloc((n ? n : 1) * sizeof(*tb_of));
	tbs = malloc((n ? n : 1) * sizeof(*tbs));
	if (!order || !tb_of || !tbs)
		goto out;
	/* In the traces' own order, where memory is read sequentially: the
	 * tracebacks' numbers and what the sort needs. */
	const struct tm_traceback *prev_tb = NULL;
	uint32_t tb = 0;

	for (size_t i = 0; i < n; i++) {
		const struct tm_trace *t = &traces[i];

		if (!t->traceback) {
			err = -EINVAL;
			goto out;
		}
		/* Blocks next to each other often come from the same line. */
		if (t->traceback != prev_tb) {
			bool added;

			if (ptrmap_index(&tbmap, t->traceback, &tb, &added))
				goto out;
			if (added)
				tbs[tb] = t->traceback;
			prev_tb = t->traceback;
		}
		tb_of[i] = tb;
		order[i] = i;
		differ |= t->address ^ traces[0].address;
		if (i && t->address < traces[i - 1].address)
			sorted = false;
	}
	if (!sorted && sort_by_address(traces, n, differ, idx_bits, &order))
		goto out;

	/* Each column gets room for its worst case: no bounds checks in the
	 * loop below, and untouched pages of a large malloc cost nothing. */
	ntbs = tbmap.count;
	cols = malloc(n * (3 * MAX_VARINT + 2 * 5) + 1);
	renumber = malloc((ntbs ? ntbs : 1) * sizeof(*renumber));
	tbs_sorted = malloc((ntbs ? ntbs : 1) * sizeof(*tbs_sorted));
	if (!cols || !renumber || !tbs_sorted)
		goto out;
	memset(renumber, 0xff, ntbs * sizeof(*renumber));
	col[0] = cols;
	col[1] = col[0] + n * MAX_VARINT;
	col[2] = col[1] + n * MAX_VARINT;
	col[3] = col[2] + n * MAX_VARINT;
	col[4] = col[3] + n * 5;
	memcpy(end, col, sizeof(end));

	uint64_t prev_addr = 0, prev_delta = 0, prev_size = 0;
	uint32_t next_tb = 0, prev_tb_num = UINT32_MAX;
	size_t repeats[NCOLUMNS] = { 0 };

	for (size_t i = 0; i < n; i++) {
		size_t idx = order[i] & idx_mask;
		const struct tm_trace *t = &traces[idx];
		uint32_t *num = &renumber[tb_of[idx]];

		/* In address order the traces are read at random: ask for
		 * them ahead, or every one is a cache miss waited for. */
		if (i + 16 < n) {
			__builtin_prefetch(&traces[order[i + 16] & idx_mask]);
			__builtin_prefetch(&tb_of[order[i + 16] & idx_mask]);
		}
		end[0] = put_varint(end[0], t->address - prev_addr);
		repeats[0] += t->address - prev_addr == prev_delta;
		prev_delta = t->address - prev_addr;
		prev_addr = t->address;
		end[1] = put_varint(end[1], t->size);
		repeats[1] += t->size == prev_size;
		prev_size = t->size;
		end[2] = put_varint(end[2], t->count);
		end[3] = put_varint(end[3], t->domain);
		/* Tracebacks numbered in address order: the output depends on
		 * the snapshot's content, not on its traces' order. */
		if (*num == UINT32_MAX) {
			*num = next_tb;
			tbs_sorted[next_tb++] = tbs[tb_of[idx]];
		}
		end[4] = put_varint(end[4], *num);
		repeats[4] += *num == prev_tb_num;
		prev_tb_num = *num;
	}
	write_info(&meta, s);
	err = write_tables(&meta, tbs_sorted, ntbs);
	if (err)
		goto out;

	/* Parts of similar weight for threads; counts and domains are near
	 * constant, Z_RLE makes them nothing. */
	obuf_varint(&meta, n);
	for (unsigned c = 0; c < NCOLUMNS; c++)
		obuf_varint(&meta, (uint64_t)(end[c] - col[c]));
	if (meta.failed) {
		err = -ENOMEM;
		goto out;
	}
	struct zpart parts[] = {
		{ .data = { meta.data }, .len = { meta.len }, .strategy = Z_DEFAULT_STRATEGY },
		{ .data = { col[0] }, .len = { (size_t)(end[0] - col[0]) }, .strategy = column_strategy(repeats[0], n) },
		{ .data = { col[1] }, .len = { (size_t)(end[1] - col[1]) }, .strategy = column_strategy(repeats[1], n) },
		{ .data = { col[2], col[3] }, .len = { (size_t)(end[2] - col[2]), (size_t)(end[3] - col[3]) },
		  .strategy = Z_RLE },
		{ .data = { col[4] }, .len = { (size_t)(end[4] - col[4]) }, .strategy = column_strategy(repeats[4], n),
		  .last = true },
	};
	err = compress_body(parts, sizeof(parts) / sizeof(parts[0]), buf, len);
out:
	free(order);
	free(tb_of);
	free(cols);
	free(tbs);
	free(tbs_sorted);
	free(renumber);
	ptrmap_free(&tbmap);
	free(meta.data);
	return err;
}

/* ---- reading ---- */

struct reader {
	const uint8_t *p, *end;
	char err[160]; /* the first error; "" while there is none */
};

static void rd_failv(struct reader *r, const char *fmt, va_list ap)
{
	if (!r->err[0])
		vsnprintf(r->err, sizeof(r->err), fmt, ap);
	r->p = r->end; /* everything after the first error fails too */
}

/* Records the error; false, for parsers that return whether they went on. */
static bool rd_fail(struct reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool rd_fail(struct reader *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	rd_failv(r, fmt, ap);
	va_end(ap);
	return false;
}

/* Records the error; -EINVAL, for functions that return an errno. */
static int rd_error(struct reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int rd_error(struct reader *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	rd_failv(r, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static inline size_t rd_left(const struct reader *r)
{
	return (size_t)(r->end - r->p);
}

static const uint8_t *get_varint_slow(const uint8_t *p, const uint8_t *end, uint64_t *out)
{
	uint64_t v = 0;

	for (unsigned shift = 0; shift < 64 && p < end; shift += 7) {
		uint8_t byte = *p++;

		/* The 10th byte holds bit 63 only. */
		if (shift == 63 && byte > 1)
			return NULL;
		v |= (uint64_t)(byte & 0x7f) << shift;
		if (!(byte & 0x80)) {
			*out = v;
			return p;
		}
	}
	return NULL;
}

/* The varint at p, not reading at or past `end`: the byte after it, or NULL
 * if it is cut by `end` or is more than 64 bits. Up to 3 bytes (most
 * varints here) inline. */
static inline const uint8_t *get_varint(const uint8_t *p, const uint8_t *end, uint64_t *out)
{
	if (end - p >= 3) {
		if (p[0] < 0x80) {
			*out = p[0];
			return p + 1;
		}
		if (p[1] < 0x80) {
			*out = (p[0] & 0x7fu) | (uint64_t)p[1] << 7;
			return p + 2;
		}
		if (p[2] < 0x80) {
			*out = (p[0] & 0x7fu) | (uint64_t)(p[1] & 0x7f) << 7 | (uint64_t)p[2] << 14;
			return p + 3;
		}
	}
	return get_varint_slow(p, end, out);
}

/* `what` names the field in errors. */
static inline bool rd_varint(struct reader *r, uint64_t *out, const char *what)
{
	const uint8_t *next = get_varint(r->p, r->end, out);

	if (!next) {
		/* Cut by the end of the body, or too long? */
		size_t n = 0;

		while (n < rd_left(r) && n < MAX_VARINT && (r->p[n] & 0x80))
			n++;
		*out = 0;
		return rd_fail(r, n == rd_left(r) ? "truncated body (in %s)" : "invalid varint (in %s)", what);
	}
	r->p = next;
	return true;
}

static bool rd_u32(struct reader *r, uint32_t *out, const char *what)
{
	uint64_t v;

	*out = 0;
	if (!rd_varint(r, &v, what))
		return false;
	if (v > UINT32_MAX)
		return rd_fail(r, "%s %llu out of range", what, (unsigned long long)v);
	*out = (uint32_t)v;
	return true;
}

/* A count of items of at least `min_bytes` each, checked against the bytes
 * left: what we allocate for them is bounded by the input's size. */
static bool rd_count(struct reader *r, size_t *out, size_t min_bytes, const char *what)
{
	uint64_t v;

	if (!rd_varint(r, &v, what))
		return false;
	if (v > rd_left(r) / min_bytes)
		return rd_fail(r, "%llu %s cannot fit in the %zu bytes left", (unsigned long long)v, what,
			       rd_left(r));
	*out = (size_t)v;
	return true;
}

/* Inflates exactly body_len bytes from the zlib stream, which must end
 * exactly at the end of the input. 0, -EINVAL (r->err), -ENOMEM. */
static int inflate_body(const uint8_t *z, size_t zlen, size_t body_len, uint8_t **body, struct reader *r)
{
	z_stream zs = { 0 };
	/* Grow as output arrives rather than trusting body_len up front. */
	size_t cap = body_len < ((size_t)1 << 20) ? body_len : (size_t)1 << 20;
	size_t in_left = zlen, done = 0;
	uint8_t *buf = malloc(cap ? cap : 1), probe;
	int ret, err = 0;

	if (!buf)
		return -ENOMEM;
	ret = inflateInit(&zs);
	if (ret != Z_OK) {
		free(buf);
		return ret == Z_MEM_ERROR ? -ENOMEM : rd_error(r, "zlib: %s", zError(ret));
	}
	zs.next_in = (Bytef *)z;
	for (;;) {
		if (!zs.avail_in && in_left) {
			size_t chunk = in_left < ZCHUNK ? in_left : ZCHUNK;

			zs.avail_in = (uInt)chunk;
			in_left -= chunk;
		}
		if (done == cap && cap < body_len) {
			size_t ncap = cap > body_len / 2 ? body_len : cap * 2;
			uint8_t *grown = realloc(buf, ncap);

			if (!grown) {
				err = -ENOMEM;
				break;
			}
			buf = grown;
			cap = ncap;
		}
		bool probing = done == cap;
		size_t room = cap - done;

		/* Once body_len bytes are out, a 1-byte buffer tells whether
		 * the stream holds more than declared. */
		zs.next_out = probing ? &probe : buf + done;
		zs.avail_out = probing ? 1 : (uInt)(room < ZCHUNK ? room : ZCHUNK);
		uInt before = zs.avail_out;
		ret = inflate(&zs, Z_NO_FLUSH);
		if (probing && zs.avail_out != before) {
			err = rd_error(r, "body longer than the %zu bytes declared", body_len);
			break;
		}
		done += before - zs.avail_out;
		if (ret == Z_STREAM_END)
			break;
		if (ret == Z_MEM_ERROR) {
			err = -ENOMEM;
			break;
		}
		if (ret == Z_BUF_ERROR && !zs.avail_in && !in_left) {
			err = rd_error(r, "truncated zlib stream");
			break;
		}
		if (ret != Z_OK && ret != Z_BUF_ERROR) {
			err = rd_error(r, "zlib: %s", zs.msg ? zs.msg : zError(ret));
			break;
		}
	}
	if (!err && done != body_len)
		err = rd_error(r, "body of %zu bytes, %zu declared", done, body_len);
	if (!err && (zs.avail_in || in_left))
		err = rd_error(r, "%zu bytes after the end of the zlib stream", (size_t)zs.avail_in + in_left);
	inflateEnd(&zs);
	if (err) {
		free(buf);
		return err;
	}
	*body = buf;
	return 0;
}

static bool read_info(struct reader *r, struct tm_snapshot_info *info)
{
	uint64_t pid, cur, peak;
	uint8_t pylen;

	if (!rd_varint(r, &pid, "pid"))
		return false;
	if (unzigzag(pid) < INT32_MIN || unzigzag(pid) > INT32_MAX)
		return rd_fail(r, "pid %lld out of range", (long long)unzigzag(pid));
	info->pid = (int32_t)unzigzag(pid);
	if (rd_left(r) < 1)
		return rd_fail(r, "truncated body (in python version)");
	pylen = *r->p++;
	if (pylen >= sizeof(info->python))
		return rd_fail(r, "python version of %u bytes (at most %zu)", pylen, sizeof(info->python) - 1);
	if (rd_left(r) < pylen + 8u)
		return rd_fail(r, "truncated body (in python version or time)");
	if (memchr(r->p, 0, pylen))
		return rd_fail(r, "NUL byte in python version");
	memcpy(info->python, r->p, pylen);
	info->python[pylen] = '\0';
	r->p += pylen;

	uint64_t time_bits = get_le(r->p, 8);

	memcpy(&info->time, &time_bits, sizeof(info->time));
	r->p += 8;
	if (!rd_varint(r, &cur, "traced_current") || !rd_varint(r, &peak, "traced_peak"))
		return false;
	info->traced_current = unzigzag(cur);
	info->traced_peak = unzigzag(peak);
	return true;
}

/* Interned strings, indexed by their position in the table. */
static bool read_strings(struct reader *r, struct tm_snapshot *s, const char ***strings, size_t *nstrings,
			 int *err)
{
	char *scratch = NULL;
	size_t scratch_cap = 0;

	if (!rd_count(r, nstrings, 1, "strings"))
		return false;
	*strings = malloc((*nstrings ? *nstrings : 1) * sizeof(**strings));
	if (!*strings)
		goto nomem;
	for (size_t i = 0; i < *nstrings; i++) {
		size_t len;

		if (!rd_count(r, &len, 1, "string bytes"))
			break;
		if (memchr(r->p, 0, len)) {
			rd_fail(r, "NUL byte in string %zu", i);
			break;
		}
		/* tm_snapshot_intern() takes a C string. */
		if (len + 1 > scratch_cap) {
			char *grown = realloc(scratch, len + 1);

			if (!grown)
				goto nomem;
			scratch = grown;
			scratch_cap = len + 1;
		}
		memcpy(scratch, r->p, len);
		scratch[len] = '\0';
		r->p += len;
		(*strings)[i] = tm_snapshot_intern(s, scratch);
		if (!(*strings)[i])
			goto nomem;
	}
	free(scratch);
	return !r->err[0];
nomem:
	free(scratch);
	*err = -ENOMEM;
	return false;
}

static bool read_tracebacks(struct reader *r, struct tm_snapshot *s, const char *const *strings,
			    size_t nstrings, const struct tm_traceback ***tbs, size_t *ntbs, int *err)
{
	struct tm_frame *frames = NULL, no_frame = { "", 0 };
	size_t frames_cap = 0;

	if (!rd_count(r, ntbs, MIN_TRACEBACK_BYTES, "tracebacks"))
		return false;
	*tbs = malloc((*ntbs ? *ntbs : 1) * sizeof(**tbs));
	if (!*tbs)
		goto nomem;
	for (size_t t = 0; t < *ntbs; t++) {
		size_t nframe;
		uint32_t total;

		if (!rd_count(r, &nframe, MIN_FRAME_BYTES, "frames") || !rd_u32(r, &total, "total_nframe"))
			break;
		if (nframe > UINT32_MAX) {
			rd_fail(r, "traceback %zu has %zu frames", t, nframe);
			break;
		}
		if (nframe > frames_cap) {
			struct tm_frame *grown = realloc(frames, nframe * sizeof(*frames));

			if (!grown)
				goto nomem;
			frames = grown;
			frames_cap = nframe;
		}
		for (size_t f = 0; f < nframe; f++) {
			uint64_t idx;
			uint32_t lineno;

			if (!rd_varint(r, &idx, "frame filename") || !rd_u32(r, &lineno, "lineno"))
				goto fail;
			if (idx >= nstrings) {
				rd_fail(r, "traceback %zu: string index %llu out of range (%zu strings)", t,
					(unsigned long long)idx, nstrings);
				goto fail;
			}
			frames[f] = (struct tm_frame){ strings[idx], lineno };
		}
		/* Never NULL, even for no frames: snapshot.c memcpy()s from it. */
		(*tbs)[t] = tm_snapshot_traceback(s, frames ? frames : &no_frame, (uint32_t)nframe, total);
		if (!(*tbs)[t])
			goto nomem;
	}
fail:
	free(frames);
	return !r->err[0];
nomem:
	free(frames);
	*err = -ENOMEM;
	return false;
}

static const char *const column_names[NCOLUMNS] = { "address", "size", "count", "domain", "traceback index" };

static bool read_traces(struct reader *r, struct tm_snapshot *s, const struct tm_traceback *const *tbs,
			size_t ntbs, int *err)
{
	const uint8_t *p[NCOLUMNS], *end[NCOLUMNS];
	size_t n, len[NCOLUMNS], total = 0;
	uint64_t addr = 0;
	unsigned c;

	if (!rd_count(r, &n, MIN_TRACE_BYTES, "traces"))
		return false;
	for (c = 0; c < NCOLUMNS; c++) {
		if (!rd_count(r, &len[c], 1, "column bytes"))
			return false;
		total += len[c]; /* no overflow: each is at most what is left */
	}
	if (total != rd_left(r))
		return rd_fail(r, "columns of %zu bytes in all, %zu bytes left", total, rd_left(r));
	for (c = 0; c < NCOLUMNS; c++) {
		p[c] = r->p;
		end[c] = p[c] + len[c];
		r->p = end[c];
	}
	/* Straight into the snapshot: tm_snapshot_add_trace() one by one
	 * would copy every trace again as the array doubles. */
	s->traces = malloc((n ? n : 1) * sizeof(*s->traces));
	if (!s->traces) {
		*err = -ENOMEM;
		return false;
	}
	s->cap = n ? n : 1;

	/* One pass over the traces, a cursor in each column: the array is
	 * written once, in order. */
	for (size_t i = 0; i < n; i++) {
		struct tm_trace *t = &s->traces[i];
		uint64_t delta, domain, tb;

		c = 0;
		if (!(p[0] = get_varint(p[0], end[0], &delta)))
			goto bad_varint;
		if (addr + delta < addr)
			return rd_fail(r, "address of trace %zu beyond 2^64", i);
		addr += delta;
		t->address = addr;
		c = 1;
		if (!(p[1] = get_varint(p[1], end[1], &t->size)))
			goto bad_varint;
		c = 2;
		if (!(p[2] = get_varint(p[2], end[2], &t->count)))
			goto bad_varint;
		c = 3;
		if (!(p[3] = get_varint(p[3], end[3], &domain)))
			goto bad_varint;
		if (domain > UINT32_MAX)
			return rd_fail(r, "trace %zu: domain %llu out of range", i, (unsigned long long)domain);
		t->domain = (uint32_t)domain;
		c = 4;
		if (!(p[4] = get_varint(p[4], end[4], &tb)))
			goto bad_varint;
		if (tb >= ntbs)
			return rd_fail(r, "trace %zu: traceback index %llu out of range (%zu tracebacks)", i,
				       (unsigned long long)tb, ntbs);
		t->traceback = tbs[tb];
		s->ntraces = i + 1;
	}
	for (c = 0; c < NCOLUMNS; c++)
		if (p[c] != end[c])
			return rd_fail(r, "%zu bytes after the %zu values of the %s column", (size_t)(end[c] - p[c]),
				       n, column_names[c]);
	return true;
bad_varint:
	return rd_fail(r, "%s column: truncated or invalid varint", column_names[c]);
}

static int parse_body(const uint8_t *body, size_t len, struct tm_snapshot **out, struct reader *r)
{
	struct tm_snapshot *s = NULL;
	const char **strings = NULL;
	const struct tm_traceback **tbs = NULL;
	size_t nstrings = 0, ntbs = 0;
	uint32_t limit;
	int err = 0;

	r->p = body;
	r->end = body + len;
	if (!rd_u32(r, &limit, "traceback_limit"))
		return -EINVAL;
	s = tm_snapshot_new(limit);
	if (!s)
		return -ENOMEM;
	/* read_traces() checks that the columns end the body. */
	if (read_info(r, &s->info) && read_strings(r, s, &strings, &nstrings, &err) &&
	    read_tracebacks(r, s, strings, nstrings, &tbs, &ntbs, &err))
		read_traces(r, s, tbs, ntbs, &err);
	free(strings);
	free(tbs);
	if (!err && r->err[0])
		err = -EINVAL;
	if (err) {
		tm_snapshot_free(s);
		return err;
	}
	*out = s;
	return 0;
}

int tm_tmt_parse(const uint8_t *data, size_t len, struct tm_snapshot **out, char *why, size_t whylen)
{
	struct reader r = { 0 };
	uint64_t body_len, zlen;
	uint32_t crc, version, flags;
	uint8_t *body = NULL;
	int err;

	if (len < TMT_MAGIC_LEN || memcmp(data, TMT_MAGIC, TMT_MAGIC_LEN)) {
		tm_set_why(why, whylen, "not a tmtrace snapshot");
		return -EINVAL;
	}
	if (len < TMT_MAGIC_LEN + 2) {
		tm_set_why(why, whylen, CORRUPT "truncated header (%zu of %d bytes)", len, TMT_HEADER_LEN);
		return -EINVAL;
	}
	/* The version first: a newer file may have another header. */
	version = (uint32_t)get_le(data + 8, 2);
	if (version != TMT_VERSION) {
		tm_set_why(why, whylen, "unsupported tmtrace snapshot version %u (this tmtrace reads version %d)",
			version, TMT_VERSION);
		return -EINVAL;
	}
	if (len < TMT_HEADER_LEN) {
		tm_set_why(why, whylen, CORRUPT "truncated header (%zu of %d bytes)", len, TMT_HEADER_LEN);
		return -EINVAL;
	}
	flags = (uint32_t)get_le(data + 10, 2);
	crc = (uint32_t)get_le(data + 12, 4);
	body_len = get_le(data + 16, 8);
	zlen = get_le(data + 24, 8);
	if (flags) {
		tm_set_why(why, whylen, CORRUPT "unknown flags 0x%x", flags);
		return -EINVAL;
	}
	if (zlen != len - TMT_HEADER_LEN) {
		if (zlen > len - TMT_HEADER_LEN)
			tm_set_why(why, whylen, CORRUPT "truncated (%zu of %llu compressed bytes present)",
				len - TMT_HEADER_LEN, (unsigned long long)zlen);
		else
			tm_set_why(why, whylen, CORRUPT "%llu bytes after the end of the compressed body",
				(unsigned long long)(len - TMT_HEADER_LEN - zlen));
		return -EINVAL;
	}
	if (body_len > TMT_MAX_BODY || body_len > SIZE_MAX || body_len / DEFLATE_MAX_RATIO > zlen) {
		tm_set_why(why, whylen, CORRUPT "body length %llu impossible for %llu compressed bytes",
			(unsigned long long)body_len, (unsigned long long)zlen);
		return -EINVAL;
	}
	err = inflate_body(data + TMT_HEADER_LEN, (size_t)zlen, (size_t)body_len, &body, &r);
	if (!err && crc32_z(0, body, (size_t)body_len) != crc)
		err = rd_error(&r, "CRC mismatch");
	if (!err)
		err = parse_body(body, (size_t)body_len, out, &r);
	free(body);
	if (err == -ENOMEM)
		tm_set_why(why, whylen, "out of memory reading a tmtrace snapshot");
	else if (err)
		tm_set_why(why, whylen, CORRUPT "%s", r.err);
	return err;
}
