/* Turns the frames BPF captured (code object, instruction offset) into
 * (filename, line) by reading the target's code objects and decoding their
 * line tables. It must run as soon as BPF reports a new traceback: code
 * objects die and their addresses are reused. */
#ifndef TMTRACE_RESOLVER_H
#define TMTRACE_RESOLVER_H

#include <stdint.h>
#include "pytarget.h"
#include "tmtrace.h"
#include "tmtrace/engine.h"

struct resolver;

struct resolved_traceback {
	uint32_t nframe;
	uint32_t total_nframe;
	struct tm_frame *frames; /* filenames interned in the resolver */
};

int resolver_new(const struct py_target *t, struct resolver **out);
/* How many code objects died at an address (the loader's code_generations
 * map): checked around every code object read. */
typedef int (*resolver_generation_fn)(void *ctx, uint64_t code, uint64_t *generation);
void resolver_set_generations(struct resolver *r, resolver_generation_fn fn, void *ctx);
void resolver_free(struct resolver *r);

/* Learns a code object from the copy BPF sent when it first met it. */
int resolver_add_code(struct resolver *r, const struct tm_code_event *ev);
/* Resolves and keeps traceback `id` (ids are dense, from BPF). */
int resolver_add(struct resolver *r, uint32_t id, const struct tm_raw_stack *stack);
/* The traceback for id, or NULL when BPF never reported it (lost event). */
const struct resolved_traceback *resolver_get(const struct resolver *r, uint32_t id);
/* Frames that could not be resolved in userspace (code object gone or
 * unreadable), shown as <unknown>. */
uint64_t resolver_unresolved(const struct resolver *r);

#endif
