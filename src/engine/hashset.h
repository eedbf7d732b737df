/* An open-addressing set of pointers, with the caller's hash and equality. */
#ifndef TMTRACE_HASHSET_H
#define TMTRACE_HASHSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hashset {
	void **slots;
	uint64_t *hashes;
	size_t cap, count;
};

/* The entry equal to `probe` (by eq) with this hash, or NULL. */
void *hashset_find(const struct hashset *h, uint64_t hash, const void *probe,
		   bool (*eq)(const void *entry, const void *probe));
/* Adds an entry known to be absent; -ENOMEM. */
int hashset_add(struct hashset *h, uint64_t hash, void *entry);
void hashset_free(struct hashset *h);

static inline uint64_t hash_mix(uint64_t h, uint64_t v)
{
	h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
	return h * 0xff51afd7ed558ccdULL;
}

uint64_t hash_bytes(const void *data, size_t len);

#endif
