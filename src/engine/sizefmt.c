/*
 * The text tracemalloc prints, byte for byte: Lib/tracemalloc.py's
 * _format_size() and str() of Statistic / StatisticDiff (same code in every
 * version from 3.8 to 3.13).
 *
 * Python's %-formatting of floats and glibc's printf both round correctly from
 * the binary value, so the same conversion specs give the same digits. The two
 * places where they differ are handled here: the sign of a NaN (Python never
 * prints "-nan") and int / int, which Python rounds once from the exact
 * quotient while (double)a / (double)b may round twice.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "sizefmt.h"

static const char *const size_units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
#define N_UNITS (sizeof(size_units) / sizeof(size_units[0]))

char *format_size(char *buf, size_t buflen, double size, bool sign)
{
	size_t i;

	/* Python prints every NaN as "nan" ("+nan" with a sign), glibc "-nan". */
	if (isnan(size))
		size = fabs(size);
	for (i = 0; i < N_UNITS; i++) {
		/* 3 digits: "xx.x UNIT" (never for plain bytes). */
		if (fabs(size) < 100 && i != 0) {
			snprintf(buf, buflen, sign ? "%+.1f %s" : "%.1f %s",
				 size, size_units[i]);
			return buf;
		}
		/* 4 or 5 digits: "xxxx UNIT"; TiB takes whatever is left. */
		if (fabs(size) < 10 * 1024 || i == N_UNITS - 1) {
			snprintf(buf, buflen, sign ? "%+.0f %s" : "%.0f %s",
				 size, size_units[i]);
			return buf;
		}
		size /= 1024;
	}
	return buf; /* not reached: the last unit always formats */
}

static int bit_length(unsigned __int128 v)
{
	uint64_t hi = (uint64_t)(v >> 64);

	if (hi)
		return 128 - __builtin_clzll(hi);
	return v ? 64 - __builtin_clzll((uint64_t)v) : 0;
}

/* 2^e for a normal exponent, built from its bits: exact, and no libm needed. */
static double pow2(int e)
{
	uint64_t bits = (uint64_t)(e + 1023) << 52;
	double d;

	memcpy(&d, &bits, sizeof(d));
	return d;
}

/*
 * a / b for b != 0, rounded once to the nearest double (ties to even), the
 * way Python's int.__truediv__ does. Both operands of up to 2^53 are exact
 * doubles, so plain division is already right; beyond that, a 55- or 56-bit
 * integer quotient plus a sticky remainder carries enough to round.
 */
static double div_exact(unsigned __int128 a, uint64_t b)
{
	unsigned __int128 n = a, d = b, q, r;
	uint64_t mant, rest, half;
	int k, drop;

	/* a == 0 too: it is exact, and the scaling below needs a set bit. */
	if (!a || (a <= (1ULL << 53) && b <= (1ULL << 53)))
		return (double)a / (double)b;
	/* a * 2^k / b lands in (2^54, 2^56): n stays below 2^119 when k > 0,
	 * and d below 2^128 - 55 when k < 0 */
	k = 55 - bit_length(a) + bit_length(b);
	if (k >= 0)
		n <<= k;
	else
		d <<= -k;
	q = n / d;
	r = n % d;
	drop = bit_length((uint64_t)q) - 53;
	mant = (uint64_t)q >> drop;
	rest = (uint64_t)q & ((1ULL << drop) - 1);
	half = 1ULL << (drop - 1);
	if (rest > half || (rest == half && (r != 0 || (mant & 1))))
		mant++;
	/* drop - k is within [-116, 11]: a normal scale, the product is exact. */
	return (double)mant * pow2(drop - k);
}

/* Python's size / count on two ints (count != 0). */
static double int_true_div(__int128 a, long long b)
{
	/* Magnitudes unsigned: the most negative value has no positive twin. */
	unsigned __int128 ua = a < 0 ? -(unsigned __int128)a : (unsigned __int128)a;
	uint64_t ub = b < 0 ? -(uint64_t)b : (uint64_t)b;
	double q = div_exact(ua, ub);

	/* 0 / -5 is -0.0 in Python as in IEEE: the sign comes from both. */
	return (a < 0) != (b < 0) ? -q : q;
}

/* Longest format_size() text for a long long: "+8388608 TiB", with margin. */
#define SIZE_TEXT_MAX 64

/* ", average=<size / count>", or nothing when count is 0. */
static const char *format_average(char *buf, size_t buflen, __int128 size,
				  long long count)
{
	char avg[SIZE_TEXT_MAX];

	if (!count)
		return "";
	format_size(avg, sizeof(avg), int_true_div(size, count), false);
	snprintf(buf, buflen, ", average=%s", avg);
	return buf;
}

int format_statistic(char *buf, size_t buflen, const char *filename,
		     unsigned lineno, __int128 size, long long count)
{
	char size_text[SIZE_TEXT_MAX], avg_text[SIZE_TEXT_MAX + 16];

	if (!filename || (!buf && buflen))
		return -EINVAL;
	/* str(Traceback) is str() of one Frame: "filename:lineno". */
	return snprintf(buf, buflen, "%s:%u: size=%s, count=%lld%s",
			filename, lineno,
			format_size(size_text, sizeof(size_text), (double)size,
				    false),
			count,
			format_average(avg_text, sizeof(avg_text), size, count));
}

int format_statistic_diff(char *buf, size_t buflen, const char *filename,
			  unsigned lineno, __int128 size, __int128 size_diff,
			  long long count, long long count_diff)
{
	char size_text[SIZE_TEXT_MAX], diff_text[SIZE_TEXT_MAX];
	char avg_text[SIZE_TEXT_MAX + 16];

	if (!filename || (!buf && buflen))
		return -EINVAL;
	return snprintf(buf, buflen,
			"%s:%u: size=%s (%s), count=%lld (%+lld)%s",
			filename, lineno,
			format_size(size_text, sizeof(size_text), (double)size,
				    false),
			format_size(diff_text, sizeof(diff_text),
				    (double)size_diff, true),
			count, count_diff,
			format_average(avg_text, sizeof(avg_text), size, count));
}
