#include <errno.h>
#include <stdlib.h>
#include "hashset.h"

void *hashset_find(const struct hashset *h, uint64_t hash, const void *probe,
		   bool (*eq)(const void *entry, const void *probe))
{
	if (!h->cap)
		return NULL;
	for (size_t i = hash & (h->cap - 1);; i = (i + 1) & (h->cap - 1)) {
		void *e = h->slots[i];

		if (!e)
			return NULL;
		if (h->hashes[i] == hash && eq(e, probe))
			return e;
	}
}

static int grow(struct hashset *h)
{
	size_t cap = h->cap ? h->cap * 2 : 1024;
	void **slots = calloc(cap, sizeof(*slots));
	uint64_t *hashes = calloc(cap, sizeof(*hashes));

	if (!slots || !hashes) {
		free(slots);
		free(hashes);
		return -ENOMEM;
	}
	for (size_t i = 0; i < h->cap; i++) {
		if (!h->slots[i])
			continue;
		size_t j = h->hashes[i] & (cap - 1);
		while (slots[j])
			j = (j + 1) & (cap - 1);
		slots[j] = h->slots[i];
		hashes[j] = h->hashes[i];
	}
	free(h->slots);
	free(h->hashes);
	h->slots = slots;
	h->hashes = hashes;
	h->cap = cap;
	return 0;
}

int hashset_add(struct hashset *h, uint64_t hash, void *entry)
{
	size_t i;

	if ((h->count + 1) * 4 > h->cap * 3 && grow(h))
		return -ENOMEM;
	for (i = hash & (h->cap - 1); h->slots[i]; i = (i + 1) & (h->cap - 1))
		;
	h->slots[i] = entry;
	h->hashes[i] = hash;
	h->count++;
	return 0;
}

void hashset_free(struct hashset *h)
{
	free(h->slots);
	free(h->hashes);
	h->slots = NULL;
	h->hashes = NULL;
	h->cap = h->count = 0;
}

uint64_t hash_bytes(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h ^ (h >> 29);
}
