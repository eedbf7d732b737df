/* Text of tracemalloc's reports: sizes as Lib/tracemalloc.py prints them, and
 * str() of its Statistic and StatisticDiff objects. */
#ifndef TMTRACE_SIZEFMT_H
#define TMTRACE_SIZEFMT_H

#include <stdbool.h>
#include <stddef.h>

/* tracemalloc's _format_size(): "12.3 MiB", "+1.5 KiB", "532 B". Writes a
 * NUL-terminated string into buf (always terminated), returns buf. */
char *format_size(char *buf, size_t buflen, double size, bool sign);

/* "<filename>:<lineno>: size=..., count=N, average=..." exactly as str(Statistic) in Lib/tracemalloc.py
 * (average omitted when count == 0). Returns the number of bytes written (like snprintf). */
int format_statistic(char *buf, size_t buflen, const char *filename, unsigned lineno, __int128 size, long long count);

/* str(StatisticDiff): "<tb>: size=<new> (<+diff>), count=N (+d), average=..." */
int format_statistic_diff(char *buf, size_t buflen, const char *filename, unsigned lineno, __int128 size, __int128 size_diff, long long count, long long count_diff);

#endif
