/* tracemalloc's snapshot pickle.
 *
 * Reading: a pickle VM that knows one object graph only (see pickle.h).
 * Instead of building Python objects, every value on its stack is already
 * typed by what it can be in that graph: a tuple (str, int) is a frame, a
 * tuple of frames is a traceback, (int, int, traceback[, int|None]) is a
 * trace, which goes into the snapshot as soon as it is made (the list then
 * only says which traces, in which order). Nothing is ever called or
 * imported: the only globals accepted are the two classes. The opcodes of
 * a trace, a million times over, have a fast path (see fast_trace()).
 *
 * Writing: the C pickler's output, reproduced opcode for opcode, including
 * its memo numbering and where it cuts 64 KiB frames, so that a snapshot
 * written here is the same file Python would write.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pickle.h"
#include "snapshot_impl.h"

/* Opcodes (Lib/pickletools.py documents them). */
enum {
	OP_MARK = '(',
	OP_STOP = '.',
	OP_BININT = 'J',
	OP_BININT1 = 'K',
	OP_BININT2 = 'M',
	OP_NONE = 'N',
	OP_BINUNICODE = 'X',
	OP_APPEND = 'a',
	OP_BUILD = 'b',
	OP_GLOBAL = 'c',
	OP_EMPTY_DICT = '}',
	OP_APPENDS = 'e',
	OP_BINGET = 'h',
	OP_LONG_BINGET = 'j',
	OP_EMPTY_LIST = ']',
	OP_BINPUT = 'q',
	OP_LONG_BINPUT = 'r',
	OP_SETITEM = 's',
	OP_TUPLE = 't',
	OP_EMPTY_TUPLE = ')',
	OP_SETITEMS = 'u',
	OP_PROTO = 0x80,
	OP_NEWOBJ = 0x81,
	OP_TUPLE1 = 0x85,
	OP_TUPLE2 = 0x86,
	OP_TUPLE3 = 0x87,
	OP_NEWTRUE = 0x88,
	OP_NEWFALSE = 0x89,
	OP_LONG1 = 0x8a,
	OP_LONG4 = 0x8b,
	OP_SHORT_BINUNICODE = 0x8c,
	OP_BINUNICODE8 = 0x8d,
	OP_STACK_GLOBAL = 0x93,
	OP_MEMOIZE = 0x94,
	OP_FRAME = 0x95,
};

/* The C pickler's constants (Modules/_pickle.c). */
#define FRAME_SIZE_TARGET (64 * 1024)
#define FRAME_SIZE_MIN 4
#define FRAME_HEADER_SIZE 9
#define BATCHSIZE 1000
#define HIGHEST_PROTOCOL 5

static inline uint32_t le32(const uint8_t *b)
{
	return b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static inline uint64_t le64(const uint8_t *b)
{
	return le32(b) | (uint64_t)le32(b + 4) << 32;
}

static inline void put_le(uint8_t *b, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		b[i] = (uint8_t)(v >> (8 * i));
}

/* What Python's decoder accepts with 'surrogatepass', the error handler
 * both sides of pickle use for str: UTF-8 where U+D800..U+DFFF may appear
 * (encoded in three bytes), without overlong forms or code points past
 * U+10FFFF. */
static bool utf8_valid(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = s[i];
		uint32_t cp, min;
		size_t k;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0) {
			k = 1, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			k = 2, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			k = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if (n - i <= k)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff)
			return false;
		i += k + 1;
	}
	return true;
}

/* A map from a pair of 64-bit keys (the first never 0) to a 64-bit value:
 * (traceback tuple, total_nframe) -> interned traceback when reading,
 * pointer -> memo index when writing. */
struct pmap_entry {
	uint64_t a, b, v;
};

struct pmap {
	struct pmap_entry *e;
	size_t cap, n;
};

/* Keys are mostly pointers, whose low bits are all alike: mix everything
 * into the bits the mask keeps. */
static inline size_t pmap_slot(uint64_t a, uint64_t b, size_t mask)
{
	uint64_t x = a * 0x9e3779b97f4a7c15ULL ^ b;

	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x & mask;
}

static struct pmap_entry *pmap_find(const struct pmap *m, uint64_t a, uint64_t b)
{
	if (!m->cap)
		return NULL;
	for (size_t i = pmap_slot(a, b, m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		struct pmap_entry *e = &m->e[i];

		if (!e->a)
			return NULL;
		if (e->a == a && e->b == b)
			return e;
	}
}

/* Adds a key known to be absent; -ENOMEM. */
static int pmap_add(struct pmap *m, uint64_t a, uint64_t b, uint64_t v)
{
	size_t i;

	if ((m->n + 1) * 4 > m->cap * 3) {
		size_t cap = m->cap ? m->cap * 2 : 256;
		struct pmap_entry *e = calloc(cap, sizeof(*e));

		if (!e)
			return -ENOMEM;
		for (size_t j = 0; j < m->cap; j++) {
			if (!m->e[j].a)
				continue;
			for (i = pmap_slot(m->e[j].a, m->e[j].b, cap - 1); e[i].a; i = (i + 1) & (cap - 1))
				;
			e[i] = m->e[j];
		}
		free(m->e);
		m->e = e;
		m->cap = cap;
	}
	for (i = pmap_slot(a, b, m->cap - 1); m->e[i].a; i = (i + 1) & (m->cap - 1))
		;
	m->e[i] = (struct pmap_entry){ a, b, v };
	m->n++;
	return 0;
}

static void pmap_free(struct pmap *m)
{
	free(m->e);
	m->e = NULL;
	m->cap = m->n = 0;
}

/* ---------------------------------------------------------------------- */
/* Reading                                                                */

enum pkind {
	V_UNSET,     /* zeroed: no value (unset dict entries) */
	V_NONE,
	V_INT,       /* also NEWTRUE/NEWFALSE: Python's bool is an int */
	V_STR,
	V_CLASS,     /* aux: CLS_* */
	V_OBJ,       /* aux: index in objs */
	V_DICT,      /* aux: index in dicts */
	V_TUPLE0,    /* (): NEWOBJ's arguments, an empty traceback or _traces */
	V_FRAME,     /* (filename, lineno); aux: lineno */
	V_TB,        /* tuple of frames; aux: its number (see tbslot) */
	V_TRACE,     /* aux: index in the snapshot's traces */
	V_SEQ,       /* the list (or tuple) of traces; there is one at most */
	V_SLOTSTATE, /* (None, dict): BUILD's (state, slotstate) form; aux: dict */
};

static const char *const kind_names[] = {
	[V_UNSET] = "nothing", [V_NONE] = "None", [V_INT] = "an int", [V_STR] = "a str",
	[V_CLASS] = "a class", [V_OBJ] = "an object", [V_DICT] = "a dict", [V_TUPLE0] = "()",
	[V_FRAME] = "a frame", [V_TB] = "a traceback", [V_TRACE] = "a trace",
	[V_SEQ] = "the trace list", [V_SLOTSTATE] = "a (None, dict) pair",
};

enum { CLS_SNAPSHOT, CLS_TRACES };
enum { KEY_TRACES, KEY_LIMIT, KEY__TRACES, NKEYS };
static const char *const key_names[NKEYS] = { "traces", "traceback_limit", "_traces" };

/* A str: the bytes stay in the input; the interned copy is made the first
 * time it is used as a filename and shared by every memo copy. */
struct pstr {
	const uint8_t *p;
	size_t len;
	const char *interned;
};

/* A tuple of frames. */
struct ptb {
	uint32_t nframe;
	struct tm_frame frames[];
};

/* The snapshot's tracebacks also carry total_nframe, which comes with each
 * trace: each tuple of frames remembers the last one it was interned with,
 * since a shared tuple nearly always comes with the same total_nframe.
 * Tuples are numbered; these 16 bytes per tuple are all that a trace
 * reading a shared tuple touches, in one dense array. */
struct tbslot {
	const struct tm_traceback *tb; /* last interned, or NULL */
	uint32_t total;
};

/* 24 bytes: the stack holds one per value. */
struct pval {
	uint8_t kind;
	uint8_t neg, big; /* V_INT: negative; magnitude >= 2^64 */
	uint32_t aux;
	union {
		uint64_t mag;         /* V_INT */
		struct pstr *str;     /* V_STR */
		const char *filename; /* V_FRAME, interned */
	};
};

/* Dicts only ever hold the three attribute names; objects are the two
 * instances (a few more are tolerated, none is needed). */
struct pdict {
	bool has[NKEYS];
	struct pval val[NKEYS];
};

struct pobj {
	uint8_t cls;
	bool built;
	struct pval traces; /* Snapshot: the _Traces object; _Traces: the trace list */
	uint32_t limit;     /* Snapshot.traceback_limit */
};

/* Our graph nests 4 MARKs deep (state dict, list batch, trace, traceback). */
#define MAX_MARKS 64
#define MAX_OBJS 8
#define MAX_DICTS 8

struct parser {
	const uint8_t *start, *pos, *end;
	size_t op_off; /* of the opcode being run, for messages */
	struct tm_snapshot *snap;
	struct arena arena; /* pstr, ptb */

	struct pval *stack;
	size_t sp, scap;
	size_t marks[MAX_MARKS];
	size_t nmarks;

	/* The memo maps an index to a reference: MEMO_TB | a traceback's
	 * number, MEMO_TRACE | a trace's index in the snapshot, 1 + a value in
	 * `pool`, or 0 (never stored). A
	 * million traces pick among thousands of traceback tuples at random
	 * through the memo: with 4-byte references to a dense array of tuples,
	 * what they touch stays in cache, which 24-byte values interleaved with
	 * the traces' did not. */
	uint32_t *memo;
	/* Slots allocated; slots initialized (set or 0); slots set. */
	size_t memo_cap, memo_size, memo_len;
	struct pval *pool;
	size_t npool, pool_cap;

	struct pobj objs[MAX_OBJS];
	size_t nobjs;
	struct pdict dicts[MAX_DICTS];
	size_t ndicts;
	bool have_seq, seq_is_list;
	/* Traces enter the snapshot when their tuple is made, and the list
	 * says which of them the snapshot has, in which order. Python's list
	 * is every trace once, in the order they were made: while that holds,
	 * nothing is recorded but how many were appended; otherwise `order`
	 * lists the indexes. */
	size_t nappended;
	bool out_of_order;
	uint32_t *order;
	size_t order_cap;

	struct ptb *empty_tb; /* what () stands for as a traceback: number 0 */
	struct tbslot *tbc;
	struct ptb **ptbs;    /* by number too, but only read on a miss */
	size_t ntbc, tbc_cap;
	struct pmap tbmap;    /* (ptb, total_nframe) -> interned traceback */
	/* Frames the snapshot may still intern: each new (tuple, total_nframe)
	 * pair copies the tuple's frames, so without a cap a small pickle
	 * pairing one huge tuple with many totals could ask for gigabytes. An
	 * honest pickle spends well over a byte per frame it describes. */
	uint64_t frame_budget;

	char *scratch; /* NUL-terminated copies for tm_snapshot_intern() */
	size_t scratch_cap;
	char *why;
	size_t whylen;
};

__attribute__((format(printf, 2, 3)))
static int fail(struct parser *p, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!p->why || !p->whylen)
		return -EINVAL;
	n = snprintf(p->why, p->whylen, "offset %zu: ", p->op_off);
	if (n >= 0 && (size_t)n < p->whylen) {
		va_start(ap, fmt);
		vsnprintf(p->why + n, p->whylen - n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static int nomem(struct parser *p)
{
	if (p->why && p->whylen)
		snprintf(p->why, p->whylen, "offset %zu: out of memory", p->op_off);
	return -ENOMEM;
}

/* Input bytes quoted for a message: printable ASCII as is, the rest as
 * \xNN, at most 40 bytes. */
static const char *shown(char buf[static 168], const uint8_t *s, size_t n)
{
	size_t o = 0;

	for (size_t i = 0; i < n && i < 40; i++) {
		if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\')
			buf[o++] = (char)s[i];
		else
			o += sprintf(buf + o, "\\x%02x", s[i]);
	}
	if (n > 40)
		o += sprintf(buf + o, "...");
	buf[o] = '\0';
	return buf;
}

static inline size_t fence(const struct parser *p)
{
	return p->nmarks ? p->marks[p->nmarks - 1] : 0;
}

/* The next n argument bytes of the opcode, or NULL when the input ends. */
static inline const uint8_t *take(struct parser *p, uint64_t n)
{
	const uint8_t *at = p->pos;

	if ((uint64_t)(p->end - p->pos) < n)
		return NULL;
	p->pos += n;
	return at;
}

static int grow_stack(struct parser *p)
{
	size_t cap = p->scap ? p->scap * 2 : 256;
	struct pval *s = realloc(p->stack, cap * sizeof(*s));

	if (!s)
		return nomem(p);
	p->stack = s;
	p->scap = cap;
	return 0;
}

static inline int push_val(struct parser *p, const struct pval *v)
{
	if (__builtin_expect(p->sp == p->scap, 0) && grow_stack(p))
		return -ENOMEM;
	p->stack[p->sp++] = *v;
	return 0;
}

static inline int push_int(struct parser *p, bool neg, uint64_t mag)
{
	return push_val(p, &(struct pval){ .kind = V_INT, .neg = neg, .mag = mag });
}

/* LONG1/LONG4: n bytes of little-endian two's complement. Only the
 * magnitude's range matters to us, so anything past 64 bits is "big". */
static struct pval decode_long(const uint8_t *b, size_t n)
{
	bool neg = n && (b[n - 1] & 0x80);
	uint8_t ext = neg ? 0xff : 0;
	uint64_t low = 0;
	size_t m = n;

	/* With the sign-extension bytes stripped, the value is low - 256^m
	 * when negative, low otherwise. */
	while (m && b[m - 1] == ext)
		m--;
	if (m > 8)
		return (struct pval){ .kind = V_INT, .neg = neg, .big = 1 };
	for (size_t i = 0; i < m; i++)
		low |= (uint64_t)b[i] << (8 * i);
	if (!neg)
		return (struct pval){ .kind = V_INT, .mag = low };
	if (m == 8) /* -2^64 when low is 0 */
		return (struct pval){ .kind = V_INT, .neg = 1, .big = !low, .mag = -low };
	return (struct pval){ .kind = V_INT, .neg = 1, .mag = (1ULL << (8 * m)) - low };
}

static inline struct pval decode_binint(const uint8_t *b)
{
	int32_t v = (int32_t)le32(b);

	return (struct pval){ .kind = V_INT, .neg = v < 0, .mag = v < 0 ? -(int64_t)v : v };
}

static int push_str(struct parser *p, const uint8_t *s, uint64_t n)
{
	struct pstr *str;

	/* Python decodes every str as it loads it, used or not. */
	if (!utf8_valid(s, n))
		return fail(p, "str is not valid UTF-8");
	str = arena_alloc(&p->arena, sizeof(*str));
	if (!str)
		return nomem(p);
	*str = (struct pstr){ s, n, NULL };
	return push_val(p, &(struct pval){ .kind = V_STR, .str = str });
}

static bool str_is(const struct pstr *s, const char *lit)
{
	size_t n = strlen(lit);

	return s->len == n && memcmp(s->p, lit, n) == 0;
}

static int intern_str(struct parser *p, struct pstr *s, const char **out)
{
	if (s->interned) {
		*out = s->interned;
		return 0;
	}
	/* The engine's strings are C strings. */
	if (memchr(s->p, 0, s->len))
		return fail(p, "filename contains a NUL character");
	if (s->len + 1 > p->scratch_cap) {
		size_t cap = s->len + 1 > 256 ? s->len + 1 : 256;
		char *b = realloc(p->scratch, cap);

		if (!b)
			return nomem(p);
		p->scratch = b;
		p->scratch_cap = cap;
	}
	memcpy(p->scratch, s->p, s->len);
	p->scratch[s->len] = '\0';
	s->interned = tm_snapshot_intern(p->snap, p->scratch);
	if (!s->interned)
		return nomem(p);
	*out = s->interned;
	return 0;
}

#define MEMO_TB 0x80000000u
#define MEMO_TRACE 0x40000000u
#define MEMO_INDEX_MAX 0x3fffffffu

static int memo_put(struct parser *p, uint64_t idx)
{
	const struct pval *top;
	uint32_t ref;

	if (p->sp <= fence(p))
		return fail(p, "memo store with an empty stack");
	/* CPython writes indexes in order, one per memoized object; every
	 * object costs input bytes, so a larger index is hostile and would
	 * only make us allocate. */
	if (idx >= (uint64_t)(p->end - p->start))
		return fail(p, "memo index %llu too large for a %zu-byte pickle", (unsigned long long)idx,
			    (size_t)(p->end - p->start));
	top = &p->stack[p->sp - 1];
	if (top->kind == V_TB) {
		ref = MEMO_TB | top->aux;
	} else if (top->kind == V_TRACE) {
		ref = MEMO_TRACE | top->aux;
	} else {
		if (p->npool == p->pool_cap) {
			size_t cap = p->pool_cap ? p->pool_cap * 2 : 1024;
			struct pval *v = realloc(p->pool, cap * sizeof(*v));

			if (!v)
				return nomem(p);
			p->pool = v;
			p->pool_cap = cap;
		}
		if (p->npool >= MEMO_INDEX_MAX)
			return fail(p, "too many memoized objects");
		p->pool[p->npool++] = *top;
		ref = (uint32_t)p->npool;
	}
	if (idx >= p->memo_cap) {
		size_t cap = p->memo_cap ? p->memo_cap : 1024;
		uint32_t *m;

		while (cap <= idx)
			cap *= 2;
		m = realloc(p->memo, cap * sizeof(*m));
		if (!m)
			return nomem(p);
		p->memo = m;
		p->memo_cap = cap;
	}
	/* MEMOIZE fills slots in order: only gaps left by BINPUT need
	 * clearing, and fresh memory is touched once. */
	if (idx >= p->memo_size) {
		memset(p->memo + p->memo_size, 0, (idx - p->memo_size) * sizeof(*p->memo));
		p->memo_size = idx + 1;
	} else if (p->memo[idx]) {
		p->memo_len--;
	}
	p->memo_len++;
	p->memo[idx] = ref;
	return 0;
}

static inline int memo_get(struct parser *p, uint64_t idx)
{
	uint32_t ref = idx < p->memo_size ? p->memo[idx] : 0;

	if (!ref)
		return fail(p, "memo index %llu was never stored", (unsigned long long)idx);
	if (ref & MEMO_TB) {
		uint32_t slot = ref & ~MEMO_TB;

		return push_val(p, &(struct pval){ .kind = V_TB, .aux = slot });
	}
	if (ref & MEMO_TRACE)
		return push_val(p, &(struct pval){ .kind = V_TRACE, .aux = ref & ~MEMO_TRACE });
	return push_val(p, &p->pool[ref - 1]);
}

static int pop_mark(struct parser *p, size_t *mark)
{
	if (!p->nmarks)
		return fail(p, "no MARK to close");
	*mark = p->marks[--p->nmarks];
	return 0;
}

/* Are n values above the current MARK? */
static int need(struct parser *p, size_t n)
{
	if (p->sp - fence(p) < n)
		return fail(p, "stack underflow");
	return 0;
}

static int append_trace(struct parser *p, const struct pval *v)
{
	if (v->kind != V_TRACE)
		return fail(p, "the trace list holds %s", kind_names[v->kind]);
	if (!p->out_of_order) {
		if (v->aux == p->nappended) {
			p->nappended++;
			return 0;
		}
		p->out_of_order = true;
	}
	/* Each append takes an input byte: the list is bounded by it. */
	if (p->nappended >= p->order_cap) {
		size_t cap = p->order_cap ? p->order_cap : 1024;
		uint32_t *o;

		while (cap <= p->nappended)
			cap *= 2;
		o = realloc(p->order, cap * sizeof(*o));
		if (!o)
			return nomem(p);
		if (!p->order) /* the in-order prefix, implicit until now */
			for (size_t i = 0; i < p->nappended; i++)
				o[i] = (uint32_t)i;
		p->order = o;
		p->order_cap = cap;
	}
	p->order[p->nappended++] = v->aux;
	return 0;
}

/* The snapshot's traces become the list's: usually all of those made, in
 * order; otherwise gathered by index. */
static int settle_traces(struct parser *p)
{
	struct tm_snapshot *s = p->snap;
	struct tm_trace *t;

	if (!p->out_of_order) {
		s->ntraces = p->nappended;
		return 0;
	}
	t = malloc((p->nappended + 1) * sizeof(*t));
	if (!t)
		return nomem(p);
	for (size_t i = 0; i < p->nappended; i++)
		t[i] = s->traces[p->order[i]];
	free(s->traces);
	s->traces = t;
	s->ntraces = p->nappended;
	s->cap = p->nappended + 1;
	return 0;
}

static int resolve_class(struct parser *p, const uint8_t *mod, size_t modlen, const uint8_t *name,
			 size_t namelen, struct pval *out)
{
	char b1[168], b2[168];

	if (modlen == 11 && !memcmp(mod, "tracemalloc", 11)) {
		if (namelen == 8 && !memcmp(name, "Snapshot", 8)) {
			*out = (struct pval){ .kind = V_CLASS, .aux = CLS_SNAPSHOT };
			return 0;
		}
		if (namelen == 7 && !memcmp(name, "_Traces", 7)) {
			*out = (struct pval){ .kind = V_CLASS, .aux = CLS_TRACES };
			return 0;
		}
	}
	return fail(p, "global %s.%s is not tracemalloc.Snapshot or tracemalloc._Traces",
		    shown(b1, mod, modlen), shown(b2, name, namelen));
}

static int make_frame(struct parser *p, const struct pval *it, struct pval *out)
{
	const char *filename = NULL;
	int err;

	/* tracemalloc keeps line numbers as a C unsigned int. */
	if (it[1].neg || it[1].big || it[1].mag > UINT_MAX)
		return fail(p, "line number out of range");
	err = intern_str(p, it[0].str, &filename);
	if (err)
		return err;
	*out = (struct pval){ .kind = V_FRAME, .aux = (uint32_t)it[1].mag, .filename = filename };
	return 0;
}

static int new_tbslot(struct parser *p, struct ptb *tb)
{
	if (p->ntbc >= MEMO_INDEX_MAX)
		return -E2BIG;
	if (p->ntbc == p->tbc_cap) {
		size_t cap = p->tbc_cap ? p->tbc_cap * 2 : 1024;
		struct tbslot *c = realloc(p->tbc, cap * sizeof(*c));
		struct ptb **t;

		if (!c)
			return -ENOMEM;
		p->tbc = c;
		t = realloc(p->ptbs, cap * sizeof(*t));
		if (!t)
			return -ENOMEM;
		p->ptbs = t;
		p->tbc_cap = cap;
	}
	p->tbc[p->ntbc] = (struct tbslot){ NULL, 0 };
	p->ptbs[p->ntbc++] = tb;
	return 0;
}

static int make_tb(struct parser *p, const struct pval *it, size_t n, struct pval *out)
{
	struct ptb *tb;

	for (size_t i = 0; i < n; i++)
		if (it[i].kind != V_FRAME)
			return fail(p, "traceback element %zu is %s, not a frame", i, kind_names[it[i].kind]);
	if (n > UINT32_MAX)
		return fail(p, "traceback of %zu frames", n);
	tb = arena_alloc(&p->arena, sizeof(*tb) + n * sizeof(tb->frames[0]));
	if (!tb)
		return nomem(p);
	switch (new_tbslot(p, tb)) {
	case -ENOMEM:
		return nomem(p);
	case -E2BIG:
		return fail(p, "too many tracebacks");
	}
	tb->nframe = (uint32_t)n;
	for (size_t i = 0; i < n; i++)
		tb->frames[i] = (struct tm_frame){ it[i].filename, it[i].aux };
	*out = (struct pval){ .kind = V_TB, .aux = (uint32_t)(p->ntbc - 1) };
	return 0;
}

static int intern_tb(struct parser *p, uint32_t slot, uint32_t total, const struct tm_traceback **out)
{
	struct tbslot *c = &p->tbc[slot];
	struct ptb *tb = p->ptbs[slot];
	struct pmap_entry *e;
	const struct tm_traceback *r;

	if (c->tb && c->total == total) {
		*out = c->tb;
		return 0;
	}
	e = pmap_find(&p->tbmap, (uintptr_t)tb, total);
	if (e) {
		r = (const struct tm_traceback *)(uintptr_t)e->v;
	} else {
		if (tb->nframe > p->frame_budget)
			return fail(p, "more traceback frames than the pickle's size allows");
		p->frame_budget -= tb->nframe;
		r = tm_snapshot_traceback(p->snap, tb->frames, tb->nframe, total);
		if (!r || pmap_add(&p->tbmap, (uintptr_t)tb, total, (uintptr_t)r))
			return nomem(p);
	}
	c->tb = r;
	c->total = total;
	*out = r;
	return 0;
}

/* (domain, size, frames) in 3.8, (domain, size, frames, total_nframe) from
 * 3.9: the ranges are those of tracemalloc's C types. */
static int make_trace(struct parser *p, const struct pval *it, size_t n, struct pval *out)
{
	uint32_t total = UINT32_MAX, slot = 0;
	const struct tm_traceback *itb = NULL;
	struct tm_trace t = { .address = 0, .count = 1 };
	int err;

	if (it[0].neg || it[0].big || it[0].mag > UINT32_MAX)
		return fail(p, "trace domain out of range");
	if (it[1].kind != V_INT)
		return fail(p, "trace size is %s, not an int", kind_names[it[1].kind]);
	if (it[1].neg || it[1].big)
		return fail(p, "trace size out of range");
	if (it[2].kind == V_TB)
		slot = it[2].aux;
	else if (it[2].kind != V_TUPLE0) /* () is number 0 */
		return fail(p, "trace frames are %s, not a traceback", kind_names[it[2].kind]);
	if (n == 4) {
		if (it[3].kind == V_INT) {
			/* UINT32_MAX itself would read back as None. */
			if (it[3].neg || it[3].big || it[3].mag >= UINT32_MAX)
				return fail(p, "total_nframe out of range");
			total = (uint32_t)it[3].mag;
		} else if (it[3].kind != V_NONE) {
			return fail(p, "total_nframe is %s, not an int or None", kind_names[it[3].kind]);
		}
	}
	err = intern_tb(p, slot, total, &itb);
	if (err)
		return err;
	if (p->snap->ntraces >= MEMO_INDEX_MAX)
		return fail(p, "too many traces");
	t.domain = (uint32_t)it[0].mag;
	t.size = it[1].mag;
	t.traceback = itb;
	if (tm_snapshot_add_trace(p->snap, &t))
		return nomem(p);
	*out = (struct pval){ .kind = V_TRACE, .aux = (uint32_t)(p->snap->ntraces - 1) };
	return 0;
}

/* A tuple of traces: Snapshot(traces) keeps whatever sequence it is given. */
static int make_seq(struct parser *p, const struct pval *it, size_t n, struct pval *out)
{
	int err;

	if (p->have_seq)
		return fail(p, "a second list of traces");
	for (size_t i = 0; i < n; i++)
		if (it[i].kind != V_TRACE)
			return fail(p, "tuple of traces holds %s", kind_names[it[i].kind]);
	p->have_seq = true;
	p->seq_is_list = false;
	for (size_t i = 0; i < n; i++) {
		err = append_trace(p, &it[i]);
		if (err)
			return err;
	}
	*out = (struct pval){ .kind = V_SEQ };
	return 0;
}

/* Replaces stack[base..sp) by the tuple they make, typed by its contents. */
static int make_tuple(struct parser *p, size_t base)
{
	size_t n = p->sp - base;
	/* The stack may not be allocated yet when n is 0. */
	const struct pval *it = n ? p->stack + base : NULL;
	struct pval out = { .kind = V_TUPLE0 };
	int err = 0;

	if (n) {
		switch (it[0].kind) {
		case V_STR:
			if (n == 2 && it[1].kind == V_INT) {
				err = make_frame(p, it, &out);
				goto done;
			}
			break;
		case V_NONE:
			if (n == 2 && it[1].kind == V_DICT) {
				out = (struct pval){ .kind = V_SLOTSTATE, .aux = it[1].aux };
				goto done;
			}
			break;
		case V_FRAME:
			err = make_tb(p, it, n, &out);
			goto done;
		case V_INT:
			if (n == 3 || n == 4) {
				err = make_trace(p, it, n, &out);
				goto done;
			}
			break;
		case V_TRACE:
			err = make_seq(p, it, n, &out);
			goto done;
		}
		return fail(p, "unexpected %zu-tuple starting with %s", n, kind_names[it[0].kind]);
	}
done:
	if (err)
		return err;
	p->sp = base;
	return push_val(p, &out);
}

static int dict_set(struct parser *p, const struct pval *d, const struct pval *k, const struct pval *v)
{
	char b[168];

	if (d->kind != V_DICT)
		return fail(p, "SETITEM on %s", kind_names[d->kind]);
	if (k->kind != V_STR)
		return fail(p, "dict key is %s", kind_names[k->kind]);
	for (int i = 0; i < NKEYS; i++) {
		if (str_is(k->str, key_names[i])) {
			p->dicts[d->aux].has[i] = true;
			p->dicts[d->aux].val[i] = *v;
			return 0;
		}
	}
	return fail(p, "unexpected attribute '%s'", shown(b, k->str->p, k->str->len));
}

/* BUILD copies the state into the object at once (setattr per key), so
 * later changes to the dict would not matter: copy what we need now. */
static int build(struct parser *p, const struct pval *o, const struct pval *state)
{
	struct pobj *obj;
	struct pdict *d;

	if (o->kind != V_OBJ)
		return fail(p, "BUILD on %s", kind_names[o->kind]);
	obj = &p->objs[o->aux];
	if (obj->built)
		return fail(p, "object state set twice");
	if (state->kind == V_DICT || state->kind == V_SLOTSTATE)
		d = &p->dicts[state->aux];
	else
		return fail(p, "object state is %s, not a dict", kind_names[state->kind]);

	if (obj->cls == CLS_SNAPSHOT) {
		const struct pval *t = &d->val[KEY_TRACES], *l = &d->val[KEY_LIMIT];

		if (d->has[KEY__TRACES] || !d->has[KEY_TRACES] || !d->has[KEY_LIMIT])
			return fail(p, "Snapshot state is not {'traces', 'traceback_limit'}");
		if (t->kind != V_OBJ || p->objs[t->aux].cls != CLS_TRACES)
			return fail(p, "Snapshot.traces is %s, not a _Traces", kind_names[t->kind]);
		if (l->kind != V_INT || l->neg || l->big || l->mag > UINT_MAX)
			return fail(p, "Snapshot.traceback_limit is not an unsigned int");
		obj->traces = *t;
		obj->limit = (uint32_t)l->mag;
	} else {
		const struct pval *t = &d->val[KEY__TRACES];

		if (d->has[KEY_TRACES] || d->has[KEY_LIMIT] || !d->has[KEY__TRACES])
			return fail(p, "_Traces state is not {'_traces'}");
		if (t->kind != V_SEQ && t->kind != V_TUPLE0)
			return fail(p, "_Traces._traces is %s, not a list of traces", kind_names[t->kind]);
		obj->traces = *t;
	}
	obj->built = true;
	return 0;
}

static int finish(struct parser *p)
{
	const struct pval *top = p->sp ? &p->stack[p->sp - 1] : NULL;
	const struct pobj *snap, *traces;

	if (p->nmarks)
		return fail(p, "STOP with a MARK open");
	if (p->sp != 1)
		return fail(p, "STOP with %zu values on the stack", p->sp);
	if (top->kind != V_OBJ || p->objs[top->aux].cls != CLS_SNAPSHOT)
		return fail(p, "the pickle is %s, not a tracemalloc.Snapshot", kind_names[top->kind]);
	snap = &p->objs[top->aux];
	if (!snap->built)
		return fail(p, "the Snapshot has no state");
	traces = &p->objs[snap->traces.aux];
	if (!traces->built)
		return fail(p, "the Snapshot's _Traces has no state");
	/* Traces are added as they are appended; make sure they were the
	 * snapshot's own. */
	if (traces->traces.kind == V_TUPLE0 && p->nappended)
		return fail(p, "the list of traces is not the snapshot's");
	if (p->pos != p->end)
		return fail(p, "%zu bytes after STOP", (size_t)(p->end - p->pos));
	p->snap->traceback_limit = snap->limit;
	return settle_traces(p);
}

/* The fast path. A million traces are written as the same few opcodes:
 *
 *   MARK int int (BINGET|LONG_BINGET|EMPTY_TUPLE) (int|NONE) TUPLE [MEMOIZE]
 *   int int (BINGET|LONG_BINGET|EMPTY_TUPLE) TUPLE3 [MEMOIZE]      (3.8)
 *
 * where the memo reference is a tuple of frames. Running them one by one
 * through the stack costs more than all the rest of the parse, so when the
 * bytes at hand are exactly that, decode them at once into the values the
 * opcodes would have pushed and build the trace with make_trace(), as
 * TUPLE would have. Anything else (a FRAME in between, another memo
 * value, the end of the input, no room for the MARK) and nothing is
 * consumed: the opcodes run the usual way, and fail there if they must. */
static inline bool fast_int(const uint8_t **at, const uint8_t *end, struct pval *v)
{
	const uint8_t *q = *at;

	if (q == end)
		return false;
	switch (*q) {
	case OP_BININT1:
		if (end - q < 2)
			return false;
		*v = (struct pval){ .kind = V_INT, .mag = q[1] };
		*at = q + 2;
		return true;
	case OP_BININT2:
		if (end - q < 3)
			return false;
		*v = (struct pval){ .kind = V_INT, .mag = q[1] | (uint32_t)q[2] << 8 };
		*at = q + 3;
		return true;
	case OP_BININT:
		if (end - q < 5)
			return false;
		*v = decode_binint(q + 1);
		*at = q + 5;
		return true;
	case OP_LONG1:
		if (end - q < 2 || end - q - 2 < q[1])
			return false;
		*v = decode_long(q + 2, q[1]);
		*at = q + 2 + q[1];
		return true;
	}
	return false;
}

/* `q` is where the trace's first int starts; 1 when it was run, 0 when the
 * opcodes must run the usual way, or an error. */
static int fast_trace(struct parser *p, const uint8_t *q, bool marked)
{
	const uint8_t *end = p->end;
	struct pval it[4], out;
	uint64_t idx;
	uint32_t ref;
	int err;

	if (!fast_int(&q, end, &it[0]) || !fast_int(&q, end, &it[1]) || q == end)
		return 0;
	switch (*q) {
	case OP_BINGET:
		if (end - q < 2)
			return 0;
		idx = q[1];
		q += 2;
		goto memo;
	case OP_LONG_BINGET:
		if (end - q < 5)
			return 0;
		idx = le32(q + 1);
		q += 5;
memo:
		ref = idx < p->memo_size ? p->memo[idx] : 0;
		if (!(ref & MEMO_TB))
			return 0;
		it[2] = (struct pval){ .kind = V_TB, .aux = ref & ~MEMO_TB };
		break;
	case OP_EMPTY_TUPLE:
		it[2] = (struct pval){ .kind = V_TUPLE0 };
		q++;
		break;
	default:
		return 0;
	}
	if (marked) {
		if (q != end && *q == OP_NONE)
			it[3] = (struct pval){ .kind = V_NONE }, q++;
		else if (!fast_int(&q, end, &it[3]))
			return 0;
		if (q == end || *q != OP_TUPLE)
			return 0;
	} else if (q == end || *q != OP_TUPLE3) {
		return 0;
	}

	p->op_off = (size_t)(q - p->start); /* errors are TUPLE's */
	err = make_trace(p, it, marked ? 4 : 3, &out) ?: push_val(p, &out);
	if (err)
		return err;
	p->pos = ++q;
	if (q != end && *q == OP_MEMOIZE) {
		p->op_off = (size_t)(q - p->start);
		err = memo_put(p, p->memo_len);
		if (err)
			return err;
		p->pos = q + 1;
	}
	return 1;
}

static int run(struct parser *p)
{
	const uint8_t *a, *b;
	struct pval v;
	uint64_t n;
	size_t m = 0;
	int err = 0;

	if (p->end - p->pos < 2 || p->pos[0] != OP_PROTO)
		return fail(p, "not a pickle of protocol 2 or later");
	if (p->pos[1] < 2 || p->pos[1] > HIGHEST_PROTOCOL)
		return fail(p, "pickle protocol %u", p->pos[1]);
	p->pos += 2;

	while (!err) {
		uint8_t op;

		p->op_off = (size_t)(p->pos - p->start);
		if (p->pos == p->end)
			return fail(p, "truncated: no STOP");
		op = *p->pos++;
		/* Where a trace may start: its MARK (3.9+) or its domain (3.8). */
		if ((op == OP_MARK && p->nmarks < MAX_MARKS) || op == OP_BININT1 || op == OP_BININT2 ||
		    op == OP_BININT || op == OP_LONG1) {
			err = fast_trace(p, op == OP_MARK ? p->pos : p->pos - 1, op == OP_MARK);
			if (err > 0) {
				err = 0;
				continue;
			}
			if (err)
				break;
		}
		switch (op) {
		case OP_FRAME:
			/* Frames only group opcodes for buffered reads. */
			if (!(a = take(p, 8)))
				goto truncated;
			if (le64(a) > (uint64_t)(p->end - p->pos))
				return fail(p, "FRAME of %llu bytes past the end", (unsigned long long)le64(a));
			break;
		case OP_MARK:
			if (p->nmarks == MAX_MARKS)
				return fail(p, "MARKs nested too deep");
			p->marks[p->nmarks++] = p->sp;
			break;
		case OP_STOP:
			return finish(p);
		case OP_NONE:
			err = push_val(p, &(struct pval){ .kind = V_NONE });
			break;
		case OP_NEWTRUE:
		case OP_NEWFALSE:
			err = push_int(p, false, op == OP_NEWTRUE);
			break;
		case OP_BININT1:
			if (!(a = take(p, 1)))
				goto truncated;
			err = push_int(p, false, a[0]);
			break;
		case OP_BININT2:
			if (!(a = take(p, 2)))
				goto truncated;
			err = push_int(p, false, a[0] | (uint32_t)a[1] << 8);
			break;
		case OP_BININT:
			if (!(a = take(p, 4)))
				goto truncated;
			v = decode_binint(a);
			err = push_val(p, &v);
			break;
		case OP_LONG1:
			if (!(a = take(p, 1)))
				goto truncated;
			n = a[0];
			goto long_bytes;
		case OP_LONG4:
			if (!(a = take(p, 4)))
				goto truncated;
			if ((int32_t)le32(a) < 0)
				return fail(p, "negative LONG4 length");
			n = le32(a);
long_bytes:
			if (!(b = take(p, n)))
				return fail(p, "int of %llu bytes past the end", (unsigned long long)n);
			v = decode_long(b, n);
			err = push_val(p, &v);
			break;
		case OP_SHORT_BINUNICODE:
			if (!(a = take(p, 1)))
				goto truncated;
			n = a[0];
			goto str_bytes;
		case OP_BINUNICODE:
			if (!(a = take(p, 4)))
				goto truncated;
			n = le32(a);
			goto str_bytes;
		case OP_BINUNICODE8:
			if (!(a = take(p, 8)))
				goto truncated;
			n = le64(a);
str_bytes:
			if (!(b = take(p, n)))
				return fail(p, "str of %llu bytes past the end", (unsigned long long)n);
			err = push_str(p, b, n);
			break;
		case OP_EMPTY_TUPLE:
			err = push_val(p, &(struct pval){ .kind = V_TUPLE0 });
			break;
		case OP_TUPLE1:
		case OP_TUPLE2:
		case OP_TUPLE3:
			m = op - OP_TUPLE1 + 1;
			err = need(p, m) ?: make_tuple(p, p->sp - m);
			break;
		case OP_TUPLE:
			err = pop_mark(p, &m) ?: make_tuple(p, m);
			break;
		case OP_EMPTY_LIST:
			if (p->have_seq)
				return fail(p, "a second list");
			p->have_seq = true;
			p->seq_is_list = true;
			err = push_val(p, &(struct pval){ .kind = V_SEQ });
			break;
		case OP_APPEND:
			if ((err = need(p, 2)))
				break;
			if (p->stack[p->sp - 2].kind != V_SEQ || !p->seq_is_list)
				return fail(p, "APPEND to %s", kind_names[p->stack[p->sp - 2].kind]);
			err = append_trace(p, &p->stack[p->sp - 1]);
			p->sp--;
			break;
		case OP_APPENDS:
			if ((err = pop_mark(p, &m)))
				break;
			if (m <= fence(p) || p->stack[m - 1].kind != V_SEQ || !p->seq_is_list)
				return fail(p, "APPENDS without the list of traces");
			for (size_t i = m; i < p->sp && !err; i++)
				err = append_trace(p, &p->stack[i]);
			p->sp = m;
			break;
		case OP_EMPTY_DICT:
			if (p->ndicts == MAX_DICTS)
				return fail(p, "too many dicts");
			memset(&p->dicts[p->ndicts], 0, sizeof(p->dicts[0]));
			err = push_val(p, &(struct pval){ .kind = V_DICT, .aux = (uint32_t)p->ndicts++ });
			break;
		case OP_SETITEM:
			if ((err = need(p, 3)))
				break;
			err = dict_set(p, &p->stack[p->sp - 3], &p->stack[p->sp - 2], &p->stack[p->sp - 1]);
			p->sp -= 2;
			break;
		case OP_SETITEMS:
			if ((err = pop_mark(p, &m)))
				break;
			if (m <= fence(p) || p->stack[m - 1].kind != V_DICT)
				return fail(p, "SETITEMS without a dict");
			if ((p->sp - m) % 2)
				return fail(p, "SETITEMS with an odd number of values");
			for (size_t i = m; i < p->sp && !err; i += 2)
				err = dict_set(p, &p->stack[m - 1], &p->stack[i], &p->stack[i + 1]);
			p->sp = m;
			break;
		case OP_GLOBAL: {
			/* Protocols 2 and 3: "module\nname\n". */
			const uint8_t *nl1, *nl2;
			struct pval cls;

			nl1 = memchr(p->pos, '\n', p->end - p->pos);
			nl2 = nl1 ? memchr(nl1 + 1, '\n', p->end - nl1 - 1) : NULL;
			if (!nl2)
				goto truncated;
			a = p->pos;
			p->pos = nl2 + 1;
			err = resolve_class(p, a, nl1 - a, nl1 + 1, nl2 - nl1 - 1, &cls) ?: push_val(p, &cls);
			break;
		}
		case OP_STACK_GLOBAL: {
			struct pval cls, *mod, *name;

			if ((err = need(p, 2)))
				break;
			mod = &p->stack[p->sp - 2];
			name = &p->stack[p->sp - 1];
			if (mod->kind != V_STR || name->kind != V_STR)
				return fail(p, "STACK_GLOBAL of %s and %s", kind_names[mod->kind], kind_names[name->kind]);
			if ((err = resolve_class(p, mod->str->p, mod->str->len, name->str->p, name->str->len, &cls)))
				break;
			p->sp -= 2;
			err = push_val(p, &cls);
			break;
		}
		case OP_NEWOBJ: {
			struct pval *cls, *args;

			if ((err = need(p, 2)))
				break;
			cls = &p->stack[p->sp - 2];
			args = &p->stack[p->sp - 1];
			if (cls->kind != V_CLASS)
				return fail(p, "NEWOBJ of %s", kind_names[cls->kind]);
			if (args->kind != V_TUPLE0)
				return fail(p, "NEWOBJ with arguments");
			if (p->nobjs == MAX_OBJS)
				return fail(p, "too many objects");
			p->objs[p->nobjs] = (struct pobj){ .cls = (uint8_t)cls->aux };
			p->sp -= 2;
			err = push_val(p, &(struct pval){ .kind = V_OBJ, .aux = (uint32_t)p->nobjs++ });
			break;
		}
		case OP_BUILD:
			if ((err = need(p, 2)))
				break;
			err = build(p, &p->stack[p->sp - 2], &p->stack[p->sp - 1]);
			p->sp--;
			break;
		case OP_MEMOIZE:
			err = memo_put(p, p->memo_len);
			break;
		case OP_BINPUT:
			if (!(a = take(p, 1)))
				goto truncated;
			err = memo_put(p, a[0]);
			break;
		case OP_LONG_BINPUT:
			if (!(a = take(p, 4)))
				goto truncated;
			err = memo_put(p, le32(a));
			break;
		case OP_BINGET:
			if (!(a = take(p, 1)))
				goto truncated;
			err = memo_get(p, a[0]);
			break;
		case OP_LONG_BINGET:
			if (!(a = take(p, 4)))
				goto truncated;
			err = memo_get(p, le32(a));
			break;
		case OP_PROTO:
			return fail(p, "PROTO after the start");
		default:
			return fail(p, "opcode 0x%02x is not part of a tracemalloc snapshot", op);
		}
	}
	return err;
truncated:
	return fail(p, "truncated");
}

/* Traces and memo slots by the input size, instead of growing them by
 * doubling: a big pickle would otherwise copy them a dozen times. A trace
 * takes 8 bytes at least, a memoized object 1 (16 in practice); the guess
 * only reserves address space, pages come when written. Best effort: when
 * the reservation is refused, the arrays grow as they need. */
#define PRESIZE_MAX (64u << 20)

static void presize(struct parser *p)
{
	size_t len = (size_t)(p->end - p->start);
	size_t ntraces = len / 8 + 1024, nmemo = len / 12 + 1024, npool = nmemo / 8;

	if (ntraces > PRESIZE_MAX)
		ntraces = PRESIZE_MAX;
	if (nmemo > PRESIZE_MAX)
		nmemo = PRESIZE_MAX;
	p->snap->traces = malloc(ntraces * sizeof(*p->snap->traces));
	if (p->snap->traces)
		p->snap->cap = ntraces;
	p->memo = malloc(nmemo * sizeof(*p->memo));
	if (p->memo)
		p->memo_cap = nmemo;
	p->pool = malloc(npool * sizeof(*p->pool));
	if (p->pool)
		p->pool_cap = npool;
}

int tm_pickle_parse(const uint8_t *data, size_t len, struct tm_snapshot **out, char *why, size_t whylen)
{
	struct parser p = {
		.start = data,
		.pos = data,
		.end = data + len,
		.frame_budget = len,
		.why = why,
		.whylen = whylen,
	};
	int err;

	*out = NULL;
	if (why && whylen)
		why[0] = '\0';
	p.snap = tm_snapshot_new(0);
	p.empty_tb = arena_alloc(&p.arena, sizeof(*p.empty_tb));
	if (!p.snap || !p.empty_tb || new_tbslot(&p, p.empty_tb)) {
		err = nomem(&p);
	} else {
		p.empty_tb->nframe = 0;
		presize(&p);
		err = run(&p);
	}
	free(p.stack);
	free(p.memo);
	free(p.pool);
	free(p.order);
	free(p.tbc);
	free(p.ptbs);
	free(p.scratch);
	pmap_free(&p.tbmap);
	arena_free(&p.arena);
	if (err) {
		tm_snapshot_free(p.snap);
		return err;
	}
	/* Give back what presize() guessed too much (mremap, no copy). */
	if (p.snap->cap > p.snap->ntraces + p.snap->ntraces / 8 + 1024) {
		struct tm_trace *t = realloc(p.snap->traces, (p.snap->ntraces + 1) * sizeof(*t));

		if (t) {
			p.snap->traces = t;
			p.snap->cap = p.snap->ntraces + 1;
		}
	}
	*out = p.snap;
	return 0;
}

/* ---------------------------------------------------------------------- */
/* Writing                                                                */

struct writer {
	uint8_t *buf;
	size_t len, cap;
	/* Where the open frame's 9-byte header was reserved, or -1. */
	long long frame_start;
	bool framing;
	int err; /* sticky: the writing code checks once, at the end */
	int py_minor;
	uint64_t memo; /* the next memo index, as the pickler counts */
	struct pmap names, tbs; /* interned pointer -> memo index */
};

static bool wgrow(struct writer *w, size_t extra)
{
	size_t cap = w->cap ? w->cap : 4096;
	uint8_t *b;

	if (w->err)
		return false;
	while (cap - w->len < extra) {
		if (cap > SIZE_MAX / 2) {
			w->err = -ENOMEM;
			return false;
		}
		cap *= 2;
	}
	b = realloc(w->buf, cap);
	if (!b) {
		w->err = -ENOMEM;
		return false;
	}
	w->buf = b;
	w->cap = cap;
	return true;
}

/* _Pickler_Write(): the first write after a frame was committed opens the
 * next one by reserving room for its header. */
static inline void wput(struct writer *w, const void *data, size_t n)
{
	bool open = w->framing && w->frame_start < 0;
	size_t extra = n + (open ? FRAME_HEADER_SIZE : 0);

	if (w->cap - w->len < extra && !wgrow(w, extra))
		return;
	if (open) {
		w->frame_start = (long long)w->len;
		w->len += FRAME_HEADER_SIZE;
	}
	memcpy(w->buf + w->len, data, n);
	w->len += n;
}

static inline void wop(struct writer *w, uint8_t op)
{
	wput(w, &op, 1);
}

/* _Pickler_CommitFrame(): frames under 4 bytes go without a header. */
static void wcommit(struct writer *w)
{
	size_t start, flen;

	if (w->frame_start < 0)
		return;
	start = (size_t)w->frame_start;
	flen = w->len - start - FRAME_HEADER_SIZE;
	if (flen >= FRAME_SIZE_MIN) {
		w->buf[start] = OP_FRAME;
		put_le(w->buf + start + 1, flen, 8);
	} else {
		memmove(w->buf + start, w->buf + start + FRAME_HEADER_SIZE, flen);
		w->len -= FRAME_HEADER_SIZE;
	}
	w->frame_start = -1;
}

/* _Pickler_OpcodeBoundary(), which the C pickler runs as it starts saving
 * each object: that is where 64 KiB frames end. */
static inline void wboundary(struct writer *w)
{
	if (w->frame_start >= 0 && w->len - (size_t)w->frame_start - FRAME_HEADER_SIZE >= FRAME_SIZE_TARGET)
		wcommit(w);
}

static void wmemoize(struct writer *w)
{
	wop(w, OP_MEMOIZE);
	w->memo++;
}

static void wget(struct writer *w, uint64_t idx)
{
	uint8_t b[5];

	if (idx < 256) {
		b[0] = OP_BINGET;
		b[1] = (uint8_t)idx;
		wput(w, b, 2);
	} else if (idx <= UINT32_MAX) {
		b[0] = OP_LONG_BINGET;
		put_le(b + 1, idx, 4);
		wput(w, b, 5);
	} else {
		w->err = w->err ?: -EOVERFLOW; /* Python fails the same way */
	}
}

/* save_long(): BININT1/BININT2/BININT while it fits in 31 bits, then LONG1
 * with one byte more than the bits need (the sign bit must be clear). */
static void wuint(struct writer *w, uint64_t v)
{
	uint8_t b[11];

	wboundary(w);
	if (v <= 0xff) {
		b[0] = OP_BININT1;
		b[1] = (uint8_t)v;
		wput(w, b, 2);
	} else if (v <= 0xffff) {
		b[0] = OP_BININT2;
		put_le(b + 1, v, 2);
		wput(w, b, 3);
	} else if (v <= 0x7fffffff) {
		b[0] = OP_BININT;
		put_le(b + 1, v, 4);
		wput(w, b, 5);
	} else {
		int bits = 64 - __builtin_clzll(v);
		int n = bits / 8 + 1;

		b[0] = OP_LONG1;
		b[1] = (uint8_t)n;
		memset(b + 2, 0, 9);
		put_le(b + 2, v, n > 8 ? 8 : n);
		wput(w, b, 2 + n);
	}
}

/* save_unicode(): a str of 64 KiB or more goes out of any frame. */
static void wstr_body(struct writer *w, const char *s, size_t n)
{
	uint8_t h[9];
	size_t hl;

	if (n <= 0xff) {
		h[0] = OP_SHORT_BINUNICODE;
		h[1] = (uint8_t)n;
		hl = 2;
	} else if (n <= 0xffffffff) {
		h[0] = OP_BINUNICODE;
		put_le(h + 1, n, 4);
		hl = 5;
	} else {
		h[0] = OP_BINUNICODE8;
		put_le(h + 1, n, 8);
		hl = 9;
	}
	if (n >= FRAME_SIZE_TARGET) {
		wcommit(w);
		w->framing = false;
		wput(w, h, hl);
		wput(w, s, n);
		w->framing = true;
	} else {
		wput(w, h, hl);
		wput(w, s, n);
	}
	wmemoize(w);
}

static void wconst(struct writer *w, const char *s)
{
	wboundary(w);
	wstr_body(w, s, strlen(s));
}

static void wfilename(struct writer *w, const char *s)
{
	struct pmap_entry *e;
	size_t n;

	wboundary(w);
	e = pmap_find(&w->names, (uintptr_t)s, 0);
	if (e) {
		wget(w, e->v);
		return;
	}
	n = strlen(s);
	if (!utf8_valid((const uint8_t *)s, n)) {
		w->err = w->err ?: -EINVAL;
		return;
	}
	if (pmap_add(&w->names, (uintptr_t)s, 0, w->memo))
		w->err = w->err ?: -ENOMEM;
	wstr_body(w, s, n);
}

/* A traceback tuple is memoized (shared by reference, as take_snapshot()
 * shares it); its frame tuples are new objects, memoized but never
 * referenced again; () is a singleton the pickler never memoizes. */
static void wtraceback(struct writer *w, const struct tm_traceback *tb)
{
	struct pmap_entry *e;
	uint64_t idx;

	wboundary(w);
	if (!tb->nframe) {
		wop(w, OP_EMPTY_TUPLE);
		return;
	}
	e = pmap_find(&w->tbs, (uintptr_t)tb, 0);
	if (e) {
		wget(w, e->v);
		return;
	}
	if (tb->nframe > 3)
		wop(w, OP_MARK);
	for (uint32_t i = 0; i < tb->nframe; i++) {
		wboundary(w);
		wfilename(w, tb->frames[i].filename);
		wuint(w, tb->frames[i].lineno);
		wop(w, OP_TUPLE2);
		wmemoize(w);
	}
	wop(w, tb->nframe > 3 ? OP_TUPLE : OP_TUPLE1 + tb->nframe - 1);
	idx = w->memo;
	wmemoize(w);
	if (pmap_add(&w->tbs, (uintptr_t)tb, 0, idx))
		w->err = w->err ?: -ENOMEM;
}

static void wtrace(struct writer *w, uint32_t domain, uint64_t size, const struct tm_traceback *tb)
{
	wboundary(w);
	if (w->py_minor >= 9)
		wop(w, OP_MARK);
	wuint(w, domain);
	wuint(w, size);
	wtraceback(w, tb);
	if (w->py_minor >= 9) {
		if (tb->total_nframe == UINT32_MAX) {
			wboundary(w);
			wop(w, OP_NONE);
		} else {
			wuint(w, tb->total_nframe);
		}
		wop(w, OP_TUPLE);
	} else {
		wop(w, OP_TUPLE3);
	}
	wmemoize(w);
}

/* The raw traces, in order: a trace of count N becomes N traces whose
 * sizes differ by one byte at most and add up to its size. */
static void wtraces(struct writer *w, const struct tm_snapshot *s, uint64_t nraw)
{
	const struct tm_trace *t = s->traces;
	uint64_t done = 0, k = 0;

	/* batch_list_exact(): a one-element list gets APPEND, longer ones
	 * batches of 1000 in MARK ... APPENDS. */
	while (done < nraw && !w->err) {
		uint64_t batch = 0;

		if (nraw > 1)
			wop(w, OP_MARK);
		for (; done < nraw && batch < BATCHSIZE; done++, batch++) {
			uint64_t size = t->size / t->count + (k < t->size % t->count);

			wtrace(w, t->domain, size, t->traceback);
			if (++k == t->count) {
				t++;
				k = 0;
			}
		}
		wop(w, nraw > 1 ? OP_APPENDS : OP_APPEND);
	}
}

int tm_pickle_write(const struct tm_snapshot *s, int py_minor, uint8_t **buf, size_t *len)
{
	struct writer w = {
		.buf = *buf,
		.len = *len,
		.cap = *len, /* unknown: the first write reallocs */
		.frame_start = -1,
		.py_minor = py_minor,
	};
	static const uint8_t proto[2] = { OP_PROTO, HIGHEST_PROTOCOL };
	uint64_t nraw = 0;

	/* 3.7 and older cannot read protocol 5. */
	if (py_minor < 8)
		return -EINVAL;
	for (size_t i = 0; i < s->ntraces; i++) {
		if (!s->traces[i].count || !s->traces[i].traceback)
			return -EINVAL;
		nraw += s->traces[i].count;
	}
	/* Most traces take 10 to 16 bytes. */
	if (!wgrow(&w, s->ntraces * 16 + 256))
		return w.err;

	/* Pickler.dump(): PROTO goes before framing starts. */
	wput(&w, proto, 2);
	w.framing = true;

	/* save(snapshot) -> save_reduce() with copyreg.__newobj__ */
	wboundary(&w);
	wboundary(&w);            /* save(tracemalloc.Snapshot) */
	wconst(&w, "tracemalloc"); /* memo 0 */
	wconst(&w, "Snapshot");    /* 1 */
	wop(&w, OP_STACK_GLOBAL);
	wmemoize(&w);              /* 2 */
	wboundary(&w);
	wop(&w, OP_EMPTY_TUPLE);
	wop(&w, OP_NEWOBJ);
	wmemoize(&w);              /* 3: the Snapshot */
	wboundary(&w);
	wop(&w, OP_EMPTY_DICT);
	wmemoize(&w);              /* 4: its __dict__ */
	wop(&w, OP_MARK);
	wconst(&w, "traces");      /* 5 */
	wboundary(&w);             /* save(_Traces object) */
	wboundary(&w);             /* save(tracemalloc._Traces) */
	wboundary(&w);
	wget(&w, 0);               /* "tracemalloc" again */
	wconst(&w, "_Traces");     /* 6 */
	wop(&w, OP_STACK_GLOBAL);
	wmemoize(&w);              /* 7 */
	wboundary(&w);
	wop(&w, OP_EMPTY_TUPLE);
	wop(&w, OP_NEWOBJ);
	wmemoize(&w);              /* 8: the _Traces */
	wboundary(&w);
	wop(&w, OP_EMPTY_DICT);
	wmemoize(&w);              /* 9 */
	wconst(&w, "_traces");     /* 10 */
	wboundary(&w);
	wop(&w, OP_EMPTY_LIST);
	wmemoize(&w);              /* 11 */
	wtraces(&w, s, nraw);
	wop(&w, OP_SETITEM);
	wop(&w, OP_BUILD);
	wconst(&w, "traceback_limit");
	wuint(&w, s->traceback_limit);
	wop(&w, OP_SETITEMS);
	wop(&w, OP_BUILD);
	wop(&w, OP_STOP);
	wcommit(&w);

	pmap_free(&w.names);
	pmap_free(&w.tbs);
	*buf = w.buf;
	if (w.err)
		return w.err;
	*len = w.len;
	return 0;
}
