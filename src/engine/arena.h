/* Bump allocation for objects that live as long as their owner. */
#ifndef TMTRACE_ARENA_H
#define TMTRACE_ARENA_H

#include <stddef.h>

struct arena_block;
struct arena {
	struct arena_block *head;
};

void *arena_alloc(struct arena *a, size_t size); /* 16-byte aligned, NULL on ENOMEM */
char *arena_strdup(struct arena *a, const char *s, size_t len);
void arena_free(struct arena *a);

#endif
