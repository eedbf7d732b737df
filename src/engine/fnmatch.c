/* fnmatch.fnmatch() as tracemalloc.Filter uses it (POSIX: no case folding),
 * following Lib/fnmatch.py's translate() of CPython 3.11 exactly, including
 * how it turns bracket expressions into regular-expression classes, over
 * the code points of UTF-8 strings. */
#include <stdlib.h>
#include <string.h>
#include "tmtrace/engine.h"

/* A pattern item: a literal, '?' (any), '*' (star), or a class. */
enum item_type { ITEM_LIT, ITEM_ANY, ITEM_STAR, ITEM_CLASS, ITEM_NEVER };

struct range {
	uint32_t lo, hi;
};

struct item {
	enum item_type type;
	uint32_t cp;      /* ITEM_LIT */
	bool negated;     /* ITEM_CLASS */
	struct range *ranges;
	size_t nranges;
};

/* Decodes UTF-8 into code points; invalid bytes become themselves + 0xDC00
 * (as Python's surrogateescape would present them). */
static uint32_t *decode(const char *s, size_t *n)
{
	size_t len = strlen(s), k = 0;
	uint32_t *out = malloc((len + 1) * sizeof(*out));
	const unsigned char *p = (const unsigned char *)s;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		int extra;

		if (p[i] < 0x80)
			cp = p[i], extra = 0;
		else if ((p[i] & 0xe0) == 0xc0)
			cp = p[i] & 0x1f, extra = 1;
		else if ((p[i] & 0xf0) == 0xe0)
			cp = p[i] & 0x0f, extra = 2;
		else if ((p[i] & 0xf8) == 0xf0)
			cp = p[i] & 0x07, extra = 3;
		else
			cp = 0xdc00 + p[i], extra = -1;
		if (extra > 0 && i + (size_t)extra < len + 1) {
			bool ok = true;

			for (int e = 1; e <= extra; e++) {
				if (i + (size_t)e >= len || (p[i + e] & 0xc0) != 0x80) {
					ok = false;
					break;
				}
				cp = (cp << 6) | (p[i + e] & 0x3f);
			}
			if (!ok)
				cp = 0xdc00 + p[i], extra = -1;
		}
		out[k++] = cp;
		i += extra > 0 ? (size_t)extra + 1 : 1;
	}
	*n = k;
	return out;
}

/* A growable code-point string. */
struct cpbuf {
	uint32_t *v;
	size_t n, cap;
};

static bool cp_push(struct cpbuf *b, uint32_t c)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 32;
		uint32_t *g = realloc(b->v, cap * sizeof(*g));

		if (!g)
			return false;
		b->v = g;
		b->cap = cap;
	}
	b->v[b->n++] = c;
	return true;
}

/* Appends s[from:to] to b with backslashes (and, when asked, hyphens)
 * escaped, as translate() does for each chunk. */
static bool push_escaped(struct cpbuf *b, const uint32_t *s, size_t from, size_t to, bool hyphens)
{
	for (size_t i = from; i < to; i++) {
		if ((s[i] == '\\' || (hyphens && s[i] == '-')) && !cp_push(b, '\\'))
			return false;
		if (!cp_push(b, s[i]))
			return false;
	}
	return true;
}

/* Appends pat[from:to] as a new chunk. */
static bool add_chunk(struct cpbuf **chunks, size_t *n, size_t *cap, const uint32_t *pat, size_t from, size_t to)
{
	bool ok = true;

	if (*n == *cap) {
		size_t grown_cap = *cap ? *cap * 2 : 8;
		struct cpbuf *g = realloc(*chunks, grown_cap * sizeof(*g));

		if (!g)
			return false;
		*chunks = g;
		*cap = grown_cap;
	}
	(*chunks)[*n] = (struct cpbuf){ 0 };
	for (size_t c = from; c < to && ok; c++)
		ok = cp_push(&(*chunks)[*n], pat[c]);
	(*n)++;
	return ok;
}

/* translate()'s handling of one bracket expression pat[i:j] (j at the
 * closing ']'): the regular-expression class text it produces. */
static bool class_text(const uint32_t *pat, size_t i, size_t j, struct cpbuf *out)
{
	bool has_hyphen = false;

	for (size_t k = i; k < j; k++)
		has_hyphen |= pat[k] == '-';
	if (!has_hyphen)
		return push_escaped(out, pat, i, j, false);

	/* chunks split at range hyphens */
	struct cpbuf *chunks = NULL;
	size_t nchunks = 0, cap = 0, k = pat[i] == '!' ? i + 2 : i + 1;
	bool ok = true;

	for (;;) {
		size_t h = k;

		while (h < j && pat[h] != '-')
			h++;
		if (k >= j || h >= j)
			break;
		ok = add_chunk(&chunks, &nchunks, &cap, pat, i, h);
		if (!ok)
			goto out;
		i = h + 1;
		k = h + 3;
	}
	if (i < j) {
		ok = add_chunk(&chunks, &nchunks, &cap, pat, i, j);
	} else if (nchunks) {
		ok = cp_push(&chunks[nchunks - 1], '-');
	}
	/* remove empty ranges (hi < lo), from the end */
	for (size_t c = nchunks; ok && c-- > 1;) {
		struct cpbuf *prev = &chunks[c - 1], *cur = &chunks[c];

		if (prev->n && cur->n && prev->v[prev->n - 1] > cur->v[0]) {
			prev->n--;
			for (size_t x = 1; x < cur->n && ok; x++)
				ok = cp_push(prev, cur->v[x]);
			free(cur->v);
			memmove(&chunks[c], &chunks[c + 1], (nchunks - c - 1) * sizeof(*chunks));
			nchunks--;
		}
	}
	for (size_t c = 0; c < nchunks && ok; c++) {
		if (c && !cp_push(out, '-'))
			ok = false;
		if (ok)
			ok = push_escaped(out, chunks[c].v, 0, chunks[c].n, true);
	}
out:
	for (size_t c = 0; c < nchunks; c++)
		free(chunks[c].v);
	free(chunks);
	return ok;
}

/* Parses a class text as Python's re (sre_parse) reads "[...]": escapes
 * are literals, "a-b" is a range, a trailing '-' is a literal. */
static bool parse_class(struct item *it, const uint32_t *t, size_t n)
{
	size_t i = 0, cap = 0;

	if (n && t[0] == '^') {
		it->negated = true;
		i = 1;
	}
	while (i < n) {
		uint32_t lo, hi;

		lo = t[i] == '\\' && i + 1 < n ? t[++i] : t[i];
		i++;
		hi = lo;
		if (i + 1 < n && t[i] == '-') {
			i++;
			hi = t[i] == '\\' && i + 1 < n ? t[++i] : t[i];
			i++;
			if (hi < lo)
				return false; /* re.error: bad character range */
		}
		if (it->nranges == cap) {
			cap = cap ? cap * 2 : 4;
			struct range *g = realloc(it->ranges, cap * sizeof(*g));
			if (!g)
				return false;
			it->ranges = g;
		}
		it->ranges[it->nranges++] = (struct range){ lo, hi };
	}
	return true;
}

static void free_items(struct item *items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(items[i].ranges);
	free(items);
}

static struct item *compile(const uint32_t *pat, size_t n, size_t *nitems)
{
	struct item *items = calloc(n + 1, sizeof(*items));
	size_t k = 0;

	if (!items)
		return NULL;
	for (size_t i = 0; i < n;) {
		uint32_t c = pat[i++];

		if (c == '*') {
			if (!k || items[k - 1].type != ITEM_STAR)
				items[k++].type = ITEM_STAR;
			continue;
		}
		if (c == '?') {
			items[k++].type = ITEM_ANY;
			continue;
		}
		if (c != '[') {
			items[k].type = ITEM_LIT;
			items[k++].cp = c;
			continue;
		}
		size_t j = i;

		if (j < n && pat[j] == '!')
			j++;
		if (j < n && pat[j] == ']')
			j++;
		while (j < n && pat[j] != ']')
			j++;
		if (j >= n) { /* no closing bracket: a literal '[' */
			items[k].type = ITEM_LIT;
			items[k++].cp = '[';
			continue;
		}
		struct cpbuf text = { 0 };
		bool ok = class_text(pat, i, j, &text);

		i = j + 1;
		if (ok) {
			/* escape set operations; '!' first negates; a leading
			 * '^' or '[' is escaped */
			struct cpbuf esc = { 0 };

			for (size_t x = 0; x < text.n && ok; x++) {
				if ((text.v[x] == '&' || text.v[x] == '~' || text.v[x] == '|') && !cp_push(&esc, '\\'))
					ok = false;
				if (ok)
					ok = cp_push(&esc, text.v[x]);
			}
			free(text.v);
			text = esc;
		}
		if (!ok) {
			free(text.v);
			free_items(items, k);
			return NULL;
		}
		if (text.n == 0) {
			items[k++].type = ITEM_NEVER; /* empty range: never matches */
		} else if (text.n == 1 && text.v[0] == '!') {
			items[k++].type = ITEM_ANY;   /* negated empty range */
		} else {
			struct item *it = &items[k++];

			it->type = ITEM_CLASS;
			if (text.v[0] == '!') {
				text.v[0] = '^';
			} else if (text.v[0] == '^' || text.v[0] == '[') {
				/* escaped: a literal */
				if (!cp_push(&text, 0)) {
					free(text.v);
					free_items(items, k);
					return NULL;
				}
				memmove(text.v + 1, text.v, (text.n - 1) * sizeof(*text.v));
				text.v[0] = '\\';
			}
			if (!parse_class(it, text.v, text.n))
				it->type = ITEM_NEVER; /* Python raises re.error; match nothing */
		}
		free(text.v);
	}
	*nitems = k;
	return items;
}

static bool item_matches(const struct item *it, uint32_t c)
{
	switch (it->type) {
	case ITEM_LIT:
		return it->cp == c;
	case ITEM_ANY:
		return true;
	case ITEM_CLASS: {
		bool in = false;

		for (size_t r = 0; r < it->nranges && !in; r++)
			in = c >= it->ranges[r].lo && c <= it->ranges[r].hi;
		return in != it->negated;
	}
	default:
		return false;
	}
}

/* Wildcard matching with single-star backtracking: linear in practice. */
static bool match(const struct item *items, size_t nitems, const uint32_t *s, size_t n)
{
	size_t i = 0, p = 0, star = (size_t)-1, mark = 0;

	while (i < n) {
		if (p < nitems && items[p].type == ITEM_STAR) {
			star = p++;
			mark = i;
		} else if (p < nitems && item_matches(&items[p], s[i])) {
			p++;
			i++;
		} else if (star != (size_t)-1) {
			p = star + 1;
			i = ++mark;
		} else {
			return false;
		}
	}
	while (p < nitems && items[p].type == ITEM_STAR)
		p++;
	return p == nitems;
}

bool tm_fnmatch(const char *name, const char *pattern)
{
	size_t nn, np, nitems = 0;
	uint32_t *s = decode(name, &nn), *p = decode(pattern, &np);
	struct item *items = p ? compile(p, np, &nitems) : NULL;
	bool result = s && items && match(items, nitems, s, nn);

	if (items)
		free_items(items, nitems);
	free(s);
	free(p);
	return result;
}
