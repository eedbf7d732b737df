/* The text tracemalloc prints: str(Statistic) of a statistics key. */
#include "tmtrace/engine.h"
#include "sizefmt.h"

char *tm_format_size(char *buf, size_t len, double size, bool sign)
{
	return format_size(buf, len, size, sign);
}

int tm_format_statistic(char *buf, size_t len, const struct tm_statistic *st)
{
	/* str(Traceback) is str(self[0]): the OLDEST frame of the key. */
	const struct tm_traceback *tb = st->traceback;
	const struct tm_frame *f = &tb->frames[tb->nframe ? tb->nframe - 1 : 0];

	return format_statistic(buf, len, tb->nframe ? f->filename : "<unknown>", tb->nframe ? f->lineno : 0,
				st->size, st->count);
}

int tm_format_statistic_diff(char *buf, size_t len, const struct tm_statistic_diff *st)
{
	const struct tm_traceback *tb = st->traceback;
	const struct tm_frame *f = &tb->frames[tb->nframe ? tb->nframe - 1 : 0];

	return format_statistic_diff(buf, len, tb->nframe ? f->filename : "<unknown>", tb->nframe ? f->lineno : 0,
				     st->size, st->size_diff, st->count, st->count_diff);
}

char *tm_sum_text(char *buf, size_t len, tm_sum_t v)
{
	char digits[48];
	unsigned __int128 u = v < 0 ? -(unsigned __int128)v : (unsigned __int128)v;
	size_t n = 0;

	do {
		digits[n++] = (char)('0' + (int)(u % 10));
		u /= 10;
	} while (u);
	size_t k = 0;
	if (v < 0 && k + 1 < len)
		buf[k++] = '-';
	while (n && k + 1 < len)
		buf[k++] = digits[--n];
	if (len)
		buf[k < len ? k : len - 1] = '\0';
	return buf;
}
