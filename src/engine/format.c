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
