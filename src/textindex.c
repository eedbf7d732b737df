#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "textindex.h"

int array_push(void **array, size_t *n, size_t *cap, const void *item, size_t size)
{
	if (*n == *cap) {
		size_t grown_cap = *cap ? *cap * 2 : 4096;
		void *grown = realloc(*array, grown_cap * size);

		if (!grown)
			return -ENOMEM;
		*array = grown;
		*cap = grown_cap;
	}
	memcpy((char *)*array + *n * size, item, size);
	(*n)++;
	return 0;
}

int cmp_addr(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_edge(const void *a, const void *b)
{
	const struct edge *x = a, *y = b;

	if (x->to != y->to)
		return x->to < y->to ? -1 : 1;
	return x->from < y->from ? -1 : x->from > y->from;
}

static int cmp_rip_ref(const void *a, const void *b)
{
	const struct rip_ref *x = a, *y = b;

	if (x->slot != y->slot)
		return x->slot < y->slot ? -1 : 1;
	return x->from < y->from ? -1 : x->from > y->from;
}

void text_index_free(struct text_index *ix)
{
	free(ix->insns);
	free(ix->edges);
	free(ix->refs);
	memset(ix, 0, sizeof(*ix));
}

/* One pass over every executable section: instruction boundaries, direct
 * calls and jumps, RIP-relative operands. Disassembling a libpython's text
 * takes a third of a second: it is done once per binary. */
int text_index_build(struct x86_code *code, struct text_index *ix)
{
	cs_insn *insn = cs_malloc(code->cs);
	uint64_t endbr_end = 0;
	int err = 0;

	if (!insn)
		return -ENOMEM;
	for (int v = 0; v < code->nviews && !err; v++) {
		const uint8_t *p = code->views[v].data;
		size_t left = code->views[v].size;
		uint64_t addr = code->views[v].vaddr;

		while (left > 0 && !err) {
			struct rip_ref ref;
			struct edge e;

			if (!cs_disasm_iter(code->cs, &p, &left, &addr, insn)) {
				p++, left--, addr++;
				continue;
			}
			err = array_push((void **)&ix->insns, &ix->ninsns, &ix->cap_insns, &insn->address, sizeof(uint64_t));
			if (!err && x86_rip_target(insn, &ref.slot)) {
				ref.from = insn->address;
				ref.jump = insn->id == X86_INS_JMP;
				ref.after_endbr = endbr_end == insn->address;
				err = array_push((void **)&ix->refs, &ix->nrefs, &ix->cap_refs, &ref, sizeof(ref));
			}
			endbr_end = insn->id == X86_INS_ENDBR64 ? insn->address + insn->size : 0;
			if (err || !x86_branch_target(insn, &e.to))
				continue;
			e.from = insn->address;
			if (insn->id == X86_INS_CALL)
				e.kind = EDGE_CALL;
			else if (insn->id == X86_INS_JMP)
				e.kind = EDGE_JMP;
			else if (x86_is_jcc(insn))
				e.kind = EDGE_JCC;
			else
				continue;
			err = array_push((void **)&ix->edges, &ix->nedges, &ix->cap_edges, &e, sizeof(e));
		}
	}
	cs_free(insn, 1);
	if (err) {
		text_index_free(ix);
		return err;
	}
	/* the sections may come in any order */
	qsort(ix->insns, ix->ninsns, sizeof(uint64_t), cmp_addr);
	qsort(ix->edges, ix->nedges, sizeof(struct edge), cmp_edge);
	qsort(ix->refs, ix->nrefs, sizeof(struct rip_ref), cmp_rip_ref);
	return 0;
}

/* The first of n records, sorted by the uint64_t at `key` bytes into
 * each, whose key is at least `value`. */
static size_t lower_bound(const void *records, size_t n, size_t stride, size_t key, uint64_t value)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		uint64_t at;

		memcpy(&at, (const char *)records + mid * stride + key, sizeof(at));
		if (at < value)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

size_t text_first_edge_to(const struct text_index *ix, uint64_t to)
{
	return lower_bound(ix->edges, ix->nedges, sizeof(struct edge), offsetof(struct edge, to), to);
}

size_t text_first_ref_to(const struct text_index *ix, uint64_t slot)
{
	return lower_bound(ix->refs, ix->nrefs, sizeof(struct rip_ref), offsetof(struct rip_ref, slot), slot);
}

size_t text_insn_index(const struct text_index *ix, uint64_t addr)
{
	return lower_bound(ix->insns, ix->ninsns, sizeof(uint64_t), 0, addr);
}
