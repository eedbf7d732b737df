/*
 * PyCode_Addr2Line() for CPython 3.8 .. 3.13, on a copy of the code object's
 * line table read out of the target process.
 *
 * Three formats exist:
 *   3.8, 3.9   co_lnotab: (addr_incr u8, line_incr s8) pairs; the line of the
 *              last pair whose cumulative address is <= addrq.
 *   3.10       co_linetable: (bytecode_delta u8, line_delta s8) pairs, each
 *              describing a half-open byte range; line_delta -128 = no line.
 *   3.11+      the location table of Objects/locations.md: variable-length
 *              entries, each starting with a byte that has bit 7 set.
 *
 * CPython trusts its tables and reads past their end on malformed input; the
 * decoders here follow CPython's walk step by step but check every byte
 * access against len, giving up with -1 where CPython would overrun.
 *
 * Line arithmetic is done in unsigned int so that absurd tables wrap around
 * like CPython (built with -fwrapv up to 3.11) instead of being undefined.
 */
#include <errno.h>
#include <stdbool.h>

#include "linetable.h"

/* 3.8, 3.9: walk the pairs until the cumulative address passes addrq. */
static int addr2line_lnotab(const uint8_t *t, size_t len, int firstlineno,
			    int addrq)
{
	unsigned int line = (unsigned int)firstlineno;
	long long addr = 0;
	size_t i;

	/* CPython iterates len / 2 pairs: an odd trailing byte is ignored. */
	for (i = 0; i + 1 < len; i += 2) {
		addr += t[i];
		if (addr > addrq)
			break;
		line += (unsigned int)(int)(int8_t)t[i + 1];
	}
	return (int)line;
}

/*
 * Iteration state mirroring CPython's PyCodeAddressRange: the current range
 * [start, end) in bytes, its line (-1 = none), and the running line number
 * that the deltas accumulate into.
 */
struct addr_range {
	const uint8_t *t;
	size_t len;
	size_t pos;
	long long start;
	long long end;
	unsigned int computed_line;
	int line;
};

static void range_init(struct addr_range *r, const uint8_t *t, size_t len,
		       int firstlineno)
{
	r->t = t;
	r->len = len;
	r->pos = 0;
	r->start = -1;
	r->end = 0;
	r->computed_line = (unsigned int)firstlineno;
	r->line = -1;
}

/* 3.10 advance(): consume one (delta, line delta) pair. False at the end of
 * the table, or when the last pair is cut in half. */
static bool advance_310(struct addr_range *r)
{
	int ldelta;

	if (r->len - r->pos < 2)
		return false;
	r->start = r->end;
	r->end += r->t[r->pos];
	ldelta = (int8_t)r->t[r->pos + 1];
	r->pos += 2;
	if (ldelta == -128) {
		r->line = -1;
	} else {
		r->computed_line += (unsigned int)ldelta;
		r->line = (int)r->computed_line;
	}
	return true;
}

/*
 * _PyCode_CheckLineNumber() from a fresh range: step forward until the range
 * ends past addrq. CPython's PyLineTable_NextAddressRange() also hops over
 * zero-length pairs (those the compiler emits for line jumps over 127)
 * without checking for the end of the table, so a table ending in one makes
 * it read past the end. Here a missing pair simply means -1, and the hop is
 * not needed: a zero-length range [x, x) never ends the walk, because the
 * range before it also ended at x and would have ended the walk already.
 */
static int addr2line_310(const uint8_t *t, size_t len, int firstlineno,
			 int addrq)
{
	struct addr_range r;

	range_init(&r, t, len, firstlineno);
	while (r.end <= addrq) {
		if (!advance_310(&r))
			return -1;
	}
	return r.line;
}

/* Location entry codes of Objects/locations.md (bits 3..6 of the first byte). */
enum {
	LOC_ONE_LINE0 = 10,
	LOC_ONE_LINE1 = 11,
	LOC_ONE_LINE2 = 12,
	LOC_NO_COLUMNS = 13,
	LOC_LONG = 14,
	LOC_NONE = 15,
};

/*
 * Unsigned varint: 6 data bits per byte, least significant chunk first, bit 6
 * set when another byte follows. Like CPython's scan_varint() it does not care
 * about bit 7 of the bytes it reads. Bits shifted beyond 32 are dropped
 * (CPython's shift is undefined there; real tables never get close).
 */
static bool scan_varint(const uint8_t *t, size_t len, size_t pos,
			unsigned int *out)
{
	unsigned int shift = 0;
	unsigned int val;
	uint8_t b;

	if (pos >= len)
		return false;
	b = t[pos++];
	val = b & 63;
	while (b & 64) {
		if (pos >= len)
			return false;
		b = t[pos++];
		shift += 6;
		if (shift < 32)
			val |= (unsigned int)(b & 63) << shift;
	}
	*out = val;
	return true;
}

/* Zigzag-like sign: the lowest bit is the sign, the rest the magnitude. */
static bool scan_signed_varint(const uint8_t *t, size_t len, size_t pos,
			       int *out)
{
	unsigned int uval;

	if (!scan_varint(t, len, pos, &uval))
		return false;
	if (uval & 1)
		*out = -(int)(uval >> 1);
	else
		*out = (int)(uval >> 1);
	return true;
}

/* Line delta of the entry at pos, as CPython's get_line_delta(). */
static bool entry_line_delta(const uint8_t *t, size_t len, size_t pos,
			     int *delta)
{
	switch ((t[pos] >> 3) & 15) {
	case LOC_NO_COLUMNS:
	case LOC_LONG:
		return scan_signed_varint(t, len, pos + 1, delta);
	case LOC_ONE_LINE1:
		*delta = 1;
		return true;
	case LOC_ONE_LINE2:
		*delta = 2;
		return true;
	default:
		/* Short forms, ONE_LINE0 and NONE stay on the same line. */
		*delta = 0;
		return true;
	}
}

/*
 * 3.11+ advance(): the entry at pos covers ((b & 7) + 1) code units of two
 * bytes; the next entry is the next byte with bit 7 set. "No location" is the
 * whole top five bits set, so a code-15 byte without bit 7 still has a line.
 */
static bool advance_311(struct addr_range *r)
{
	uint8_t b = r->t[r->pos];
	int delta;

	if (!entry_line_delta(r->t, r->len, r->pos, &delta))
		return false;
	r->computed_line += (unsigned int)delta;
	r->line = (b >> 3) == 0x1f ? -1 : (int)r->computed_line;
	r->start = r->end;
	r->end += ((b & 7) + 1) * 2;
	do {
		r->pos++;
	} while (r->pos < r->len && !(r->t[r->pos] & 128));
	return true;
}

static int addr2line_311(const uint8_t *t, size_t len, int firstlineno,
			 int addrq)
{
	struct addr_range r;

	range_init(&r, t, len, firstlineno);
	/* Every 3.11+ entry is at least one code unit long: no empty ranges. */
	while (r.end <= addrq) {
		if (r.pos >= r.len || !advance_311(&r))
			return -1;
	}
	return r.line;
}

int linetable_addr2line(int minor, const uint8_t *table, size_t len,
			int firstlineno, int addrq)
{
	if (minor < 8 || minor > 13)
		return -EINVAL;
	if (!table && len)
		return -EINVAL;
	/* 3.8/3.9 reach firstlineno naturally; 3.10+ check it up front. */
	if (addrq < 0)
		return firstlineno;
	if (minor <= 9)
		return addr2line_lnotab(table, len, firstlineno, addrq);
	if (minor == 10)
		return addr2line_310(table, len, firstlineno, addrq);
	return addr2line_311(table, len, firstlineno, addrq);
}
