/* Source lines as the target sees its files, for the report (linecache). */
#ifndef TMTRACE_SRCLINE_H
#define TMTRACE_SRCLINE_H

#include <sys/types.h>

struct srcline_cache;

/* pid 0: files as this process sees them (reports of saved snapshots). */
struct srcline_cache *srcline_new(pid_t pid);
void srcline_free(struct srcline_cache *c);
/* Line `lineno` of `filename`, stripped of surrounding white space as
 * linecache.getline(...).strip(); NULL when the file cannot be read
 * (relative names are relative to the target's cwd, absolute ones to its
 * root). Files are read again at most once per srcline_refresh(). */
const char *srcline_get(struct srcline_cache *c, const char *filename, unsigned lineno);
void srcline_refresh(struct srcline_cache *c);

#endif
