#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "freshflow.h"
#include "newref.h"
#include "regtrack.h"
#include "textindex.h"

/* Straight-line instructions walked from a guard to the re-stamping call,
 * and unconditional jumps followed on the way (PGO moves the call to a
 * cold section: `cmpl $0,tracing; je hot; jmp cold` ... `cold: mov
 * %rbx,%rdi; call`). */
#define PATH_MAX_INSNS 24
#define PATH_MAX_JUMPS 3
/* How far before a call its block may start. */
#define BLOCK_MAX_INSNS 12
/* Instructions from a function's entry to its probe site. */
#define ENTRY_MAX_INSNS 16

/* How the text uses one function (or its GOT slot). */
struct uses {
	uint64_t *calls; /* its calls and tail jumps to it, ascending */
	size_t ncalls, cap_calls;
	/* other uses of its address or GOT slot (an indirect call, a function
	 * pointer taken, a conditional tail call): calls that cannot be listed */
	size_t refs;
	uint64_t first_ref;
};

/* A creation left unprobed as the object was allocated in the same call. */
static int add_proven(struct newref_set *s, const struct newref_site *site)
{
	if (s->nproven == s->cap_proven) {
		int cap = s->cap_proven ? s->cap_proven * 2 : 64;
		struct newref_site *grown = realloc(s->proven, (size_t)cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		s->proven = grown;
		s->cap_proven = cap;
	}
	s->proven[s->nproven++] = *site;
	return 0;
}

static int add_site(struct newref_set *s, const struct newref_site *site)
{
	for (int i = 0; i < s->count; i++)
		if (s->sites[i].vaddr == site->vaddr)
			return 0;
	if (s->count == s->cap) {
		int cap = s->cap ? s->cap * 2 : 64;
		struct newref_site *grown = realloc(s->sites, (size_t)cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		s->sites = grown;
		s->cap = cap;
	}
	s->sites[s->count++] = *site;
	return 0;
}

void newref_free(struct newref_set *s)
{
	free(s->sites);
	free(s->proven);
	memset(s, 0, sizeof(*s));
}

static void count_ref(struct uses *u, uint64_t from)
{
	if (!u->refs++ || from < u->first_ref)
		u->first_ref = from;
}

static int add_uses_to(const struct text_index *ix, uint64_t to, struct uses *u)
{
	int err = 0;

	for (size_t i = text_first_edge_to(ix, to); i < ix->nedges && ix->edges[i].to == to && !err; i++) {
		/* a conditional tail call: not a site a probe can take */
		if (ix->edges[i].kind == EDGE_JCC)
			count_ref(u, ix->edges[i].from);
		else
			err = array_push((void **)&u->calls, &u->ncalls, &u->cap_calls, &ix->edges[i].from,
				   sizeof(uint64_t));
	}
	return err;
}

/* The calls of the function at `target` (0: none in this binary) and of
 * its PLT stub, the one jump through `got` (0: no GOT slot), and every
 * other use of either. */
static int uses_of(const struct text_index *ix, uint64_t target, uint64_t got, struct uses *u)
{
	uint64_t stub = 0;
	size_t got_jumps = 0;
	int err = 0;

	memset(u, 0, sizeof(*u));
	for (size_t i = got ? text_first_ref_to(ix, got) : ix->nrefs; i < ix->nrefs && ix->refs[i].slot == got; i++) {
		const struct rip_ref *r = &ix->refs[i];

		if (r->jump && !got_jumps++)
			stub = r->after_endbr ? r->from - 4 : r->from;
		else
			count_ref(u, r->from);
	}
	for (size_t i = target ? text_first_ref_to(ix, target) : ix->nrefs; i < ix->nrefs && ix->refs[i].slot == target;
	     i++)
		count_ref(u, ix->refs[i].from);
	if (target)
		err = add_uses_to(ix, target, u);
	if (!err && stub)
		err = add_uses_to(ix, stub, u);
	qsort(u->calls, u->ncalls, sizeof(uint64_t), cmp_addr);
	return err;
}

/* From `start` (the state of the guard, whose successor it is) along
 * straight-line code and unconditional jumps to the call at `call`:
 * where %rdi, the object, was at the guard. */
static bool object_at_guard(struct x86_code *code, uint64_t start, uint64_t call, struct tm_operand *op, cs_insn *insn)
{
	struct regtrack t;
	uint64_t addr = start, to;
	int jumps = 0;

	regtrack_init(&t);
	for (int i = 0; i < PATH_MAX_INSNS && x86_decode(code, addr, insn); i++) {
		if (insn->address == call)
			return prov_operand(&t.r[TM_REG_DI], op) && op->type != TM_OPERAND_CONST &&
			       !(op->type == TM_OPERAND_REG && op->reg == TM_REG_SP);
		addr = insn->address + insn->size;
		if (insn->id == X86_INS_JMP && x86_branch_target(insn, &to) && jumps++ < PATH_MAX_JUMPS) {
			addr = to;
			continue;
		}
		if (x86_is_branch(insn) || !regtrack_step(code->cs, insn, &t))
			return false;
	}
	return false;
}

static bool is_block_end(struct x86_code *code, uint64_t addr, cs_insn *insn)
{
	return !x86_decode(code, addr, insn) || x86_is_branch(insn);
}

/* The conditional branches whose one successor runs straight (through
 * unconditional jumps) into `to`: the guards of a re-stamping call. Depth
 * counts jumps walked back. */
static int guards_of(struct x86_code *code, const struct text_index *ix, uint64_t to, uint64_t call, int depth,
		     struct newref_set *out, bool *found, cs_insn *insn)
{
	size_t at = text_insn_index(ix, to);
	int err = 0;

	if (at >= ix->ninsns || ix->insns[at] != to)
		return 0;
	/* every instruction from which `to` is reached by falling through */
	for (size_t k = 0; k <= BLOCK_MAX_INSNS && k <= at && !err; k++) {
		uint64_t a = ix->insns[at - k];

		if (k > 0 && is_block_end(code, a, insn))
			break;
		for (size_t b = text_first_edge_to(ix, a); b < ix->nedges && ix->edges[b].to == a && !err; b++) {
			const struct edge *br = &ix->edges[b];
			struct newref_site s = { .vaddr = br->from, .call = call };

			if (br->kind == EDGE_CALL)
				continue;
			if (br->kind == EDGE_JMP) {
				if (depth < PATH_MAX_JUMPS)
					err = guards_of(code, ix, br->from, call, depth + 1, out, found, insn);
				continue;
			}
			if (!object_at_guard(code, a, call, &s.op, insn))
				continue;
			snprintf(s.what, sizeof(s.what), "object creation (guard of the re-stamp at 0x%lx)",
				 (unsigned long)call);
			err = add_site(out, &s);
			*found = true;
		}
		/* falling into the block from a conditional branch right before it */
		if (at - k > 0 && x86_decode(code, ix->insns[at - k - 1], insn) && x86_is_jcc(insn) &&
		    insn->address + insn->size == a) {
			struct newref_site s = { .vaddr = insn->address, .call = call };

			if (object_at_guard(code, a, call, &s.op, insn)) {
				snprintf(s.what, sizeof(s.what), "object creation (guard of the re-stamp at 0x%lx)",
					 (unsigned long)call);
				err = add_site(out, &s);
				*found = true;
			}
		}
	}
	return err;
}

/* 3.8-3.12: _PyTraceMalloc_NewReference, by name, or as the function
 * _Py_NewReference calls (a stripped binary). */
static uint64_t restamp_function(struct x86_code *code, struct elf_file *ef)
{
	uint64_t addr, to;
	cs_insn *insn;

	if (elf_find_symbol(ef, "_PyTraceMalloc_NewReference", &addr, NULL) == 0)
		return addr;
	if (elf_find_symbol(ef, "_Py_NewReference", &addr, NULL))
		return 0;
	/* the first call on any path of _Py_NewReference (a few branches deep) */
	uint64_t pending[8];
	int npending = 0;

	insn = cs_malloc(code->cs);
	for (int i = 0; insn && i < 64 && x86_decode(code, addr, insn); i++) {
		addr = insn->address + insn->size;
		if (insn->id == X86_INS_CALL && x86_branch_target(insn, &to)) {
			cs_free(insn, 1);
			return to;
		}
		if (x86_is_jcc(insn) && x86_branch_target(insn, &to) && npending < 8)
			pending[npending++] = to;
		else if (insn->id == X86_INS_JMP && x86_branch_target(insn, &to))
			addr = to;
		else if (x86_is_branch(insn)) {
			if (!npending)
				break;
			addr = pending[--npending];
		}
	}
	if (insn)
		cs_free(insn, 1);
	return 0;
}

/* 3.13 reports creations to a reference tracer (tracemalloc's, when it
 * traces) from three functions, never inlined elsewhere: probe them at
 * the first emulated instruction where the object is still in %rdi. */
static int entry_sites(struct x86_code *code, struct elf_file *ef, struct newref_set *out)
{
	static const char *const names[] = { "_Py_NewReference", "_Py_NewReferenceNoTotal",
					     "_Py_ResurrectReference" };
	cs_insn *insn = cs_malloc(code->cs);
	int err = 0;

	if (!insn)
		return -ENOMEM;
	for (size_t n = 0; n < sizeof(names) / sizeof(names[0]) && !err; n++) {
		struct newref_site s = { 0 };
		struct regtrack t;
		uint64_t addr;
		bool placed = false;

		if (elf_find_symbol(ef, names[n], &addr, NULL))
			continue;
		regtrack_init(&t);
		for (int i = 0; i < ENTRY_MAX_INSNS && x86_decode(code, addr, insn); i++) {
			if (!regtrack_find(&t, TM_REG_DI, &s.op))
				break;
			if (x86_uprobe_emulated(insn)) {
				s.vaddr = insn->address;
				placed = true;
				break;
			}
			if (x86_is_branch(insn) || !regtrack_step(code->cs, insn, &t))
				break;
			addr = insn->address + insn->size;
		}
		if (!placed) {
			out->missed++;
			continue;
		}
		snprintf(s.what, sizeof(s.what), "%s+0x%lx", names[n], (unsigned long)(s.vaddr - addr));
		err = add_site(out, &s);
	}
	cs_free(insn, 1);
	return err;
}

/* Functions that give a first reference only to memory they allocated
 * themselves just before (PyObject_Malloc or Calloc, or the GC's
 * allocator), never to one from a free list, in 3.8 to 3.12. tracemalloc's
 * re-stamp there writes the traceback the allocation's trace already has:
 * no Python code runs in between but a collection's finalizers, which
 * return to the same frame and line. So tmtrace need not trap there: a
 * third of the object creations in the realistic mix, and the commonest
 * (strings, ints, most GC objects). PyObject_Init and PyObject_InitVar are
 * not here: their callers may bring memory from their own free lists. */
static const char *const fresh_creators[] = {
	"_PyObject_New", "_PyObject_NewVar", "_PyObject_GC_New", "_PyObject_GC_NewVar", "PyType_GenericAlloc",
	"_PyType_AllocNoTrack", "PyUnicode_New", "_PyLong_New", "PyBytes_FromStringAndSize",
	"PyBytes_FromString", "_PyBytes_FromSize",
};

/* The out-of-line creation functions a shared build calls (through its
 * PLT) for every object, the re-stamp inside them. */
static const char *const creation_functions[] = { "_Py_NewReference", "_Py_NewReferenceNoTotal" };

static size_t count_between(const uint64_t *addrs, size_t n, uint64_t start, uint64_t end)
{
	size_t count = 0;

	for (size_t i = 0; i < n; i++)
		count += addrs[i] >= start && addrs[i] < end;
	return count;
}

/* The fresh creator that the creation at `site` (leading to `call`) lies
 * in, or NULL. Site and call must be in one function of the list, and it
 * must make no other creation (`calls`: all of them): a build that inlined
 * something more into it (a collection's callbacks, say) keeps its probes. */
static const char *fresh_creator(struct elf_file *ef, uint64_t site, uint64_t call, const uint64_t *calls,
				 size_t ncalls)
{
	uint64_t start, end;
	const char *name = elf_function_at(ef, call, &start, &end);

	if (!name || site < start || site >= end || count_between(calls, ncalls, start, end) != 1)
		return NULL;
	for (size_t i = 0; i < sizeof(fresh_creators) / sizeof(fresh_creators[0]); i++)
		if (strcmp(name, fresh_creators[i]) == 0)
			return fresh_creators[i];
	return NULL;
}

static void remove_site(struct newref_set *s, int i)
{
	memmove(&s->sites[i], &s->sites[i + 1], (size_t)(s->count - i - 1) * sizeof(s->sites[0]));
	s->count--;
}

/* A site at each call of `fn` (the creation function, or its PLT stub)
 * listed in `u`: the object is in %rdi at the call. */
static int add_call_sites(struct x86_code *code, struct elf_file *ef, const struct text_index *ix,
			  const struct fresh_sources *sources, const struct uses *u, const char *fn, bool skip_fresh,
			  struct newref_set *out)
{
	int err = 0;

	for (size_t i = 0; i < u->ncalls && !err; i++) {
		struct newref_site site = { .vaddr = u->calls[i], .call = u->calls[i],
					    .op = { .type = TM_OPERAND_REG, .reg = TM_REG_DI } };
		uint64_t start;
		const char *caller = elf_symbol_at(ef, site.vaddr, &start);

		if (skip_fresh && fresh_creator(ef, site.vaddr, site.call, u->calls, u->ncalls)) {
			out->fresh++;
			continue;
		}
		if (skip_fresh && fresh_at(code, ef, ix, sources, site.call, TM_REG_DI)) {
			err = add_proven(out, &site);
			continue;
		}
		snprintf(site.what, sizeof(site.what), "object creation (call of %s in %s)", fn,
			 caller ? caller : "?");
		err = add_site(out, &site);
		out->callers++;
	}
	return err;
}

/* A shared build's creations all run through its creation function, whose
 * one re-stamp guard would trap on every object. Probe its callers
 * instead, all but the fresh creators: possible only when every call is a
 * direct one, listed here (nothing else loads its address or its GOT
 * slot). Callers in other modules (extension modules calling it through
 * their own GOT) are then probed by newref_find_module(). */
static int relocate_creation_function(struct x86_code *code, const struct text_index *ix, struct elf_file *ef,
				      const struct fresh_sources *sources, const char *fn, struct newref_set *out)
{
	uint64_t body, size, got = 0;
	unsigned jump_slots, others;
	struct uses u;
	bool guarded = false;
	int err;

	if (elf_find_symbol(ef, fn, &body, &size) || !size)
		return 0;
	for (int i = 0; i < out->count; i++)
		guarded |= out->sites[i].call >= body && out->sites[i].call < body + size;
	if (!guarded)
		return 0;
	elf_symbol_relocations(ef, fn, &jump_slots, &others);
	if (others || jump_slots > 1) {
		snprintf(out->kept, sizeof(out->kept), "%s: its address is stored (%u relocations)", fn,
			 others + jump_slots);
		return 0;
	}
	if (jump_slots)
		elf_got_slot(ef, fn, &got);
	err = uses_of(ix, body, got, &u);
	if (!err && u.refs)
		snprintf(out->kept, sizeof(out->kept), "%s: its address is used at 0x%lx", fn,
			 (unsigned long)u.first_ref);
	if (!err && !u.refs) {
		for (int i = out->count; i-- > 0;)
			if (out->sites[i].call >= body && out->sites[i].call < body + size) {
				/* kept: probed again if a module's calls cannot be listed */
				if (out->nbodies < NEWREF_MAX_BODIES)
					out->bodies[out->nbodies++] = out->sites[i];
				remove_site(out, i);
			}
		err = add_call_sites(code, ef, ix, sources, &u, fn, true, out);
		snprintf(out->relocated + strlen(out->relocated), sizeof(out->relocated) - strlen(out->relocated),
			 "%s%s", out->relocated[0] ? ", " : "", fn);
	}
	free(u.calls);
	return err;
}

/* Drops the re-stamp guards inside fresh creators (inlined copies, in a
 * static build), and those whose object the code shows was allocated
 * earlier in the same call. */
static int drop_fresh_guards(struct x86_code *code, struct elf_file *ef, const struct text_index *ix,
			     const struct fresh_sources *sources, const struct uses *restamps, struct newref_set *out)
{
	int err = 0;

	for (int i = out->count; i-- > 0 && !err;) {
		const struct newref_site *site = &out->sites[i];

		if (fresh_creator(ef, site->vaddr, site->call, restamps->calls, restamps->ncalls)) {
			remove_site(out, i);
			out->fresh++;
		} else if (site->op.type == TM_OPERAND_REG &&
			   fresh_at(code, ef, ix, sources, site->vaddr, (enum tm_reg)site->op.reg)) {
			err = add_proven(out, site);
			remove_site(out, i);
		}
	}
	return err;
}

static int find_sites(struct x86_code *code, struct elf_file *ef, const struct text_index *ix, bool relocate,
		      const struct fresh_sources *sources, struct newref_set *out)
{
	uint64_t target, got = 0;
	struct uses restamps = { 0 };
	cs_insn *insn;
	int err;

	target = restamp_function(code, ef);
	elf_got_slot(ef, "_PyTraceMalloc_NewReference", &got);
	if (!target && !got) {
		snprintf(out->why, sizeof(out->why), "_PyTraceMalloc_NewReference not found");
		return 0;
	}
	insn = cs_malloc(code->cs);
	err = insn ? uses_of(ix, target, got, &restamps) : -ENOMEM;
	for (size_t i = 0; i < restamps.ncalls && !err; i++) {
		bool found = false;

		err = guards_of(code, ix, restamps.calls[i], restamps.calls[i], 0, out, &found, insn);
		if (!found)
			out->missed++;
	}
	if (!err && relocate)
		err = drop_fresh_guards(code, ef, ix, sources, &restamps, out);
	for (size_t i = 0; i < sizeof(creation_functions) / sizeof(creation_functions[0]) && !err && relocate; i++)
		err = relocate_creation_function(code, ix, ef, sources, creation_functions[i], out);
	if (insn)
		cs_free(insn, 1);
	free(restamps.calls);
	return err;
}

int newref_find(struct x86_code *code, struct elf_file *ef, bool relocate, const struct fresh_sources *sources,
		struct newref_set *out)
{
	struct text_index ix = { 0 };
	uint64_t addr;
	int err;

	memset(out, 0, sizeof(*out));
	/* the reference-tracer API is 3.13's */
	if (elf_find_symbol(ef, "PyRefTracer_SetTracer", &addr, NULL) == 0)
		return entry_sites(code, ef, out);
	err = text_index_build(code, &ix);
	if (!err)
		err = find_sites(code, ef, &ix, relocate, sources, out);
	text_index_free(&ix);
	return err;
}

int newref_find_module(struct x86_code *code, struct elf_file *ef, bool creation_calls, struct newref_set *out)
{
	struct text_index ix = { 0 };
	int err;

	memset(out, 0, sizeof(*out));
	err = text_index_build(code, &ix);
	/* its inlined re-stamps (3.8's static inline _Py_NewReference) */
	if (!err)
		err = find_sites(code, ef, &ix, false, NULL, out);
	out->why[0] = '\0';
	/* its calls of the creation functions, through its GOT */
	for (size_t i = 0; i < sizeof(creation_functions) / sizeof(creation_functions[0]) && !err && creation_calls;
	     i++) {
		unsigned jump_slots, others;
		struct uses u;
		uint64_t got;

		elf_symbol_relocations(ef, creation_functions[i], &jump_slots, &others);
		if (!jump_slots && !others)
			continue;
		if (others || jump_slots > 1 || elf_got_slot(ef, creation_functions[i], &got)) {
			snprintf(out->why, sizeof(out->why), "%s: its address is stored", creation_functions[i]);
			err = -ENOTSUP;
			break;
		}
		err = uses_of(&ix, 0, got, &u);
		if (!err && u.refs) {
			snprintf(out->why, sizeof(out->why), "%s: its GOT slot is used at 0x%lx", creation_functions[i],
				 (unsigned long)u.first_ref);
			err = -ENOTSUP;
		}
		if (!err)
			err = add_call_sites(code, ef, &ix, NULL, &u, creation_functions[i], false, out);
		free(u.calls);
	}
	text_index_free(&ix);
	return err;
}
