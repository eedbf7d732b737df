#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cfi.h"
#include "plan.h"
#include "regtrack.h"

#define ENTRY_WALK_MAX 32

static struct probe_site *new_site(struct probe_plan *p)
{
	if (p->nsites == p->cap) {
		int cap = p->cap ? p->cap * 2 : 256;
		struct probe_site *grown = realloc(p->sites, (size_t)cap * sizeof(*grown));

		if (!grown)
			return NULL;
		p->sites = grown;
		p->cap = cap;
	}
	memset(&p->sites[p->nsites], 0, sizeof(p->sites[0]));
	return &p->sites[p->nsites++];
}

static void describe(struct x86_code *code, struct probe_site *s)
{
	cs_insn *insn = cs_malloc(code->cs);

	if (insn && x86_decode(code, s->vaddr, insn)) {
		snprintf(s->insn, sizeof(s->insn), "%s %s", insn->mnemonic, insn->op_str);
		s->emulated = x86_uprobe_emulated(insn);
	}
	if (insn)
		cs_free(insn, 1);
}

static int finish_site(struct elf_file *ef, struct x86_code *code, struct probe_plan *p, struct probe_site *s)
{
	describe(code, s);
	if (!s->emulated)
		p->single_stepped++;
	return elf_vaddr_to_offset(ef, s->vaddr, &s->file_offset);
}

/* The site of an out-of-line function: the first instruction the kernel
 * emulates on the straight-line path from the entry where the operands are
 * still known. With `need_return`, the stack pointer must not have moved
 * (a uretprobe there finds the return address at [rsp]), which the CFI
 * confirms when the binary has it. No such instruction: the entry itself,
 * single-stepped. */
static uint64_t function_site(struct x86_code *code, struct cfi *cfi, uint64_t entry, int kind,
			      bool need_return, struct tm_operand *a, struct tm_operand *b)
{
	cs_insn *insn = cs_malloc(code->cs);
	uint64_t addr = entry, site = entry;
	bool need_a = kind != 0, need_b = kind == TM_CALL_CALLOC || kind == TM_CALL_REALLOC;
	struct regtrack t;

	regtrack_init(&t);
	memset(a, 0, sizeof(*a));
	memset(b, 0, sizeof(*b));
	if (need_a)
		regtrack_find(&t, TM_REG_SI, a);
	if (need_b)
		regtrack_find(&t, TM_REG_DX, b);
	for (int i = 0; insn && i < ENTRY_WALK_MAX && x86_decode(code, addr, insn); i++) {
		struct tm_operand oa = { 0 }, ob = { 0 };
		int64_t cfa;

		/* the arguments (ctx, a, b) arrived in %rdi, %rsi, %rdx */
		if ((need_a && !regtrack_find(&t, TM_REG_SI, &oa)) ||
		    (need_b && !regtrack_find(&t, TM_REG_DX, &ob)))
			break;
		if (x86_uprobe_emulated(insn)) {
			if (need_return && (t.sp_delta != 0 ||
					    (cfi && (cfi_sp_offset(cfi, insn->address, &cfa) || cfa != 8))))
				break;
			site = insn->address;
			*a = oa;
			*b = ob;
			break;
		}
		if (x86_is_branch(insn) || !regtrack_step(code->cs, insn, &t) || (need_return && t.sp_delta))
			break;
		addr = insn->address + insn->size;
	}
	if (insn)
		cs_free(insn, 1);
	return site;
}

static int add_function_sites(struct elf_file *ef, struct x86_code *code, struct cfi *cfi, struct probe_plan *p,
			      const struct alloc_function *fn, enum tm_role role)
{
	struct probe_site *s = new_site(p);
	int entry = p->nsites - 1, err;
	bool need_return = role == TM_ROLE_ENTRY || role == TM_ROLE_NEWPOOL;

	if (!s)
		return -ENOMEM;
	s->bpf.role = (uint8_t)role;
	s->bpf.kind = (uint8_t)fn->kind;
	s->bpf.family = (uint8_t)fn->family;
	s->vaddr = function_site(code, cfi, fn->vaddr, role == TM_ROLE_NEWPOOL ? 0 : fn->kind,
				 need_return, &s->bpf.a, &s->bpf.b);
	if (fn->slot && role != TM_ROLE_NEWPOOL) {
		s->bpf.slot = fn->slot + p->bias;
		s->bpf.slot_default = fn->vaddr + p->bias;
	}
	snprintf(s->what, sizeof(s->what), "%s+0x%lx", fn->name, (unsigned long)(s->vaddr - fn->vaddr));
	err = finish_site(ef, code, p, s);
	if (err || !need_return)
		return err;
	struct probe_site *r = new_site(p);
	if (!r)
		return -ENOMEM;
	*r = p->sites[entry];
	r->bpf.role = TM_ROLE_RETURN;
	r->bpf.entry = (uint32_t)entry;
	r->bpf.slot = r->bpf.slot_default = 0;
	r->bpf.sp_delta = 8; /* ret popped the return address */
	r->bpf.result = (struct tm_operand){ .type = TM_OPERAND_REG, .reg = TM_REG_AX };
	memset(&r->bpf.a, 0, sizeof(r->bpf.a));
	memset(&r->bpf.b, 0, sizeof(r->bpf.b));
	r->uretprobe = true;
	return 0;
}

static enum tm_role function_role(const struct alloc_function *fn, bool predict)
{
	if (fn->kind == TM_CALL_FREE)
		return TM_ROLE_FREE;
	/* (inlined pymalloc reallocs are TM_ROLE_REALLOC, see copy_role) */
	if (fn->family == TM_FAMILY_PYMALLOC && fn->kind != TM_CALL_REALLOC && predict)
		return TM_ROLE_PREDICT;
	return TM_ROLE_ENTRY;
}

static int add_copy_sites(struct elf_file *ef, struct x86_code *code, struct probe_plan *p,
			  const struct inlined_copy *c, uint64_t bias)
{
	const struct alloc_function *fn = &p->fns[c->function];
	struct probe_site *s = new_site(p);
	int entry = p->nsites - 1, err;

	if (!s)
		return -ENOMEM;
	s->vaddr = c->site;
	s->bpf.role = (uint8_t)function_role(fn, p->pm.usedpools != 0);
	if (fn->family == TM_FAMILY_PYMALLOC && fn->kind == TM_CALL_REALLOC && p->pm.usedpools)
		s->bpf.role = TM_ROLE_REALLOC;
	s->bpf.kind = (uint8_t)fn->kind;
	s->bpf.family = (uint8_t)fn->family;
	s->bpf.guard_reg = (uint8_t)c->guard_reg;
	s->bpf.guard_value = fn->vaddr + bias;
	s->bpf.slot = fn->slot + bias;
	s->bpf.slot_default = fn->vaddr + bias;
	s->bpf.a = c->a;
	s->bpf.b = c->b;
	snprintf(s->what, sizeof(s->what), "inlined %s, guard at 0x%lx", fn->name, (unsigned long)c->cmp);
	err = finish_site(ef, code, p, s);
	if (err || !inlined_needs_result(fn, &p->pm))
		return err;
	struct probe_site *r = new_site(p);
	if (!r)
		return -ENOMEM;
	r->vaddr = c->return_site;
	r->uretprobe = c->return_uretprobe;
	r->bpf.role = TM_ROLE_RETURN;
	r->bpf.kind = (uint8_t)fn->kind;
	r->bpf.family = (uint8_t)fn->family;
	r->bpf.entry = (uint32_t)entry;
	r->bpf.sp_delta = c->sp_delta;
	r->bpf.result = c->result;
	snprintf(r->what, sizeof(r->what), "inlined %s, result of guard 0x%lx", fn->name, (unsigned long)c->cmp);
	return finish_site(ef, code, p, r);
}

/* A site at a function's first instruction, with operands in argument
 * registers: for rare calls, where a single step does not matter and every
 * argument is still where the ABI put it. */
static int add_first_insn_site(struct elf_file *ef, struct x86_code *code, struct probe_plan *p, uint64_t vaddr,
			       enum tm_role role, enum tm_reg a, enum tm_reg b, const char *name)
{
	struct probe_site *s = new_site(p);

	if (!s)
		return -ENOMEM;
	s->vaddr = vaddr;
	s->bpf.role = (uint8_t)role;
	if (a)
		s->bpf.a = (struct tm_operand){ .type = TM_OPERAND_REG, .reg = (uint8_t)a };
	if (b)
		s->bpf.b = (struct tm_operand){ .type = TM_OPERAND_REG, .reg = (uint8_t)b };
	snprintf(s->what, sizeof(s->what), "%s", name);
	return finish_site(ef, code, p, s);
}

/* PyTraceMalloc_Track/Untrack (exported since 3.6) and the code object
 * deallocator, PyCode_Type.tp_dealloc (a static function, found through
 * the exported type object). */
static int add_extra_sites(struct elf_file *ef, struct x86_code *code, struct probe_plan *p)
{
	uint64_t track, untrack, code_type, dealloc;
	int err = 0;

	if (!elf_find_symbol(ef, "PyTraceMalloc_Track", &track, NULL) &&
	    !elf_find_symbol(ef, "PyTraceMalloc_Untrack", &untrack, NULL)) {
		err = add_first_insn_site(ef, code, p, track, TM_ROLE_TRACK, TM_REG_SI, TM_REG_DX,
					  "PyTraceMalloc_Track");
		if (!err)
			err = add_first_insn_site(ef, code, p, untrack, TM_ROLE_UNTRACK, TM_REG_SI, TM_REG_NONE,
						  "PyTraceMalloc_Untrack");
		p->tracks = !err;
	}
	/* the installation of a hook, so the session probes it at once */
	if (!err && p->mode != PLAN_SAMPLED && !elf_find_symbol(ef, "PyMem_SetAllocator", &code_type, NULL))
		err = add_first_insn_site(ef, code, p, code_type, TM_ROLE_SET_ALLOCATOR, TM_REG_NONE, TM_REG_NONE,
					  "PyMem_SetAllocator");
	/* tp_dealloc sits after ob_refcnt, ob_type, ob_size, tp_name,
	 * tp_basicsize and tp_itemsize in every version */
	if (!err && !elf_find_symbol(ef, "PyCode_Type", &code_type, NULL) &&
	    !elf_read_pointer(ef, code_type + 48, &dealloc) && dealloc) {
		const char *name = elf_symbol_at(ef, dealloc, NULL);

		err = add_first_insn_site(ef, code, p, dealloc, TM_ROLE_CODE_DEALLOC, TM_REG_DI, TM_REG_NONE,
					  name ? name : "<PyCode_Type.tp_dealloc>");
		p->code_deaths = !err;
	}
	return err;
}

static int add_hook_sites(struct elf_file *ef, struct x86_code *code, struct cfi *cfi, struct probe_plan *p,
			  uint64_t vaddr, enum tm_call_kind kind, const char *what)
{
	struct alloc_function *h;
	int first = p->nsites, err;

	for (int i = 0; i < p->nhooks; i++)
		if (p->hooks[i].vaddr == vaddr)
			return -EEXIST;
	if (p->nhooks == PLAN_MAX_HOOKS)
		return -E2BIG;
	if (elf_vaddr_to_offset(ef, vaddr, &(uint64_t){ 0 }))
		return -ENOENT; /* not in this file (another library's hook) */
	h = &p->hooks[p->nhooks];
	memset(h, 0, sizeof(*h));
	h->kind = kind;
	h->family = TM_FAMILY_RAW; /* what a hook hands out may not come from a pool */
	h->vaddr = vaddr;
	snprintf(h->name, sizeof(h->name), "%s", what);
	err = add_function_sites(ef, code, cfi, p, h, kind == TM_CALL_FREE ? TM_ROLE_FREE : TM_ROLE_ENTRY);
	if (err)
		return err;
	for (int i = first; i < p->nsites; i++)
		p->sites[i].bpf.flags |= TM_SITE_HOOK;
	p->nhooks++;
	return 0;
}

static const struct {
	const char *name;
	enum tm_call_kind kind;
} tracemalloc_hooks[] = {
	{ "tracemalloc_malloc_gil", TM_CALL_MALLOC },	{ "tracemalloc_calloc_gil", TM_CALL_CALLOC },
	{ "tracemalloc_realloc_gil", TM_CALL_REALLOC }, { "tracemalloc_free", TM_CALL_FREE },
	{ "tracemalloc_raw_malloc", TM_CALL_MALLOC },	{ "tracemalloc_raw_calloc", TM_CALL_CALLOC },
	{ "tracemalloc_raw_realloc", TM_CALL_REALLOC },
};

/* The hooks the live slots point to (fns[].live, as last read): each one
 * not yet probed, in this file and not a default function (PYTHONMALLOC=
 * malloc points the object domain at the raw one). Without `warn`, a hook
 * in another file is skipped silently and other errors are returned; with
 * it, every failure is passed to it and the rest go on. */
static bool new_live_hook(const struct probe_plan *p, const struct alloc_function *f)
{
	if (!f->hooked)
		return false;
	for (int j = 0; j < p->nfns; j++)
		if (p->fns[j].vaddr == f->live)
			return false;
	for (int j = 0; j < p->nhooks; j++)
		if (p->hooks[j].vaddr == f->live)
			return false;
	return true;
}

static int add_live_hooks(struct elf_file *ef, struct x86_code *code, struct cfi *cfi, struct probe_plan *p,
			  plan_hook_warning_fn warn)
{
	int err = 0;

	for (int i = 0; i < p->nfns && !err; i++) {
		const struct alloc_function *f = &p->fns[i];
		char what[64];

		if (!new_live_hook(p, f))
			continue;
		snprintf(what, sizeof(what), "<hook in %s's slot>", f->wrapper);
		err = add_hook_sites(ef, code, cfi, p, f->live, f->kind, elf_symbol_at(ef, f->live, NULL) ?: what);
		if (err == -EEXIST || (err == -ENOENT && !warn))
			err = 0;
		if (err && warn) {
			warn(f, err);
			err = 0;
		}
	}
	return err;
}

/* tracemalloc's hooks by name (static functions: only with a symbol
 * table), so that a tracemalloc started after attaching is exact from its
 * first call; and any hook the live slots point to now. A hook installed
 * later is added by the session when it sees the slot change. */
static int add_known_hooks(struct elf_file *ef, struct x86_code *code, struct cfi *cfi, struct probe_plan *p)
{
	int err = 0;

	for (size_t i = 0; i < sizeof(tracemalloc_hooks) / sizeof(tracemalloc_hooks[0]) && !err; i++) {
		uint64_t vaddr;

		if (elf_find_symbol(ef, tracemalloc_hooks[i].name, &vaddr, NULL))
			continue;
		err = add_hook_sites(ef, code, cfi, p, vaddr, tracemalloc_hooks[i].kind, tracemalloc_hooks[i].name);
		if (err == -EEXIST)
			err = 0;
	}
	return err ? err : add_live_hooks(ef, code, cfi, p, NULL);
}

int plan_add_live_hooks(struct elf_file *ef, struct probe_plan *p, plan_hook_warning_fn warn)
{
	struct x86_code code;
	struct cfi *cfi = NULL;
	bool any = false;
	int err;

	if (p->mode == PLAN_SAMPLED)
		return 0;
	/* called often (every slot check): open the code only for a new hook */
	for (int i = 0; i < p->nfns; i++)
		any |= new_live_hook(p, &p->fns[i]);
	if (!any)
		return 0;
	if (x86_code_open(&code, ef))
		return -EINVAL;
	cfi_open(ef, &cfi);
	err = add_live_hooks(ef, &code, cfi, p, warn);
	cfi_close(cfi);
	x86_code_close(&code);
	return err;
}

/* allocate_from_new_pool(): where _PyObject_Malloc's code calls it
 * (`found`, 3.9-3.11), else by its symbol (3.12+ keep pymalloc's state per
 * interpreter, which pymalloc_find does not follow). 0 when neither: 3.8
 * refills pools inside pymalloc_alloc itself. */
static uint64_t refill_function(struct elf_file *ef, const struct pymalloc_info *found)
{
	uint64_t vaddr = 0;

	if (found->new_pool_fn)
		return found->new_pool_fn;
	return elf_find_symbol(ef, "allocate_from_new_pool", &vaddr, NULL) ? 0 : vaddr;
}

/* --lazy-frees: pymalloc's own frees are not probed (userspace finds them
 * in the pools). Its frees of large blocks still show: pymalloc hands
 * those to the raw domain, whose frees stay probed. Hooks keep theirs. */
static int drop_pymalloc_frees(struct probe_plan *p)
{
	int *moved_to = malloc((size_t)(p->nsites ? p->nsites : 1) * sizeof(*moved_to)), n = 0;

	if (!moved_to)
		return -ENOMEM;
	for (int i = 0; i < p->nsites; i++) {
		const struct probe_site *s = &p->sites[i];

		moved_to[i] = -1;
		if (s->bpf.role == TM_ROLE_FREE && s->bpf.family == TM_FAMILY_PYMALLOC &&
		    !(s->bpf.flags & TM_SITE_HOOK)) {
			if (!s->emulated)
				p->single_stepped--;
			continue;
		}
		moved_to[i] = n;
		p->sites[n++] = *s;
	}
	for (int i = 0; i < n; i++)
		if (p->sites[i].bpf.role == TM_ROLE_RETURN)
			p->sites[i].bpf.entry = (uint32_t)moved_to[p->sites[i].bpf.entry];
	p->nsites = n;
	free(moved_to);
	return 0;
}

bool plan_predicts(const struct probe_plan *p)
{
	return p->pm.usedpools || p->pm.per_interp;
}

int plan_build(struct elf_file *ef, pid_t pid, uint64_t bias, enum plan_mode mode, int minor,
	       struct probe_plan *p, char *why, size_t whylen)
{
	struct pymalloc_info found = { 0 };
	struct x86_code code;
	struct cfi *cfi = NULL;
	int err, obj_malloc = -1;
	uint64_t refill;

	memset(p, 0, sizeof(*p));
	p->mode = mode;
	p->bias = bias;
	err = alloc_functions_find(ef, pid, bias, p->fns, ALLOC_MAX_FUNCTIONS, &p->nfns);
	if (err) {
		snprintf(why, whylen, "cannot find CPython's allocator functions: %s", strerror(-err));
		return err;
	}
	if (x86_code_open(&code, ef)) {
		snprintf(why, whylen, "cannot start the disassembler");
		return -EINVAL;
	}
	cfi_open(ef, &cfi); /* optional: without it, inlined results are not probed */

	for (int i = 0; i < p->nfns; i++)
		if (p->fns[i].family == TM_FAMILY_PYMALLOC && p->fns[i].kind == TM_CALL_MALLOC)
			obj_malloc = i;
	/* Prediction needs pymalloc's state where the code says it is, and a
	 * live target whose usedpools[] looks as it should. */
	if (obj_malloc < 0 || pymalloc_find(&code, p->fns[obj_malloc].vaddr, &found))
		snprintf(p->no_predict, sizeof(p->no_predict), "pymalloc's usedpools not found in the code");
	else if (pid > 0 && pymalloc_check_live(pid, found.usedpools + bias))
		snprintf(p->no_predict, sizeof(p->no_predict), "usedpools at 0x%lx does not look like pymalloc's",
			 (unsigned long)(found.usedpools + bias));
	if (!p->no_predict[0])
		p->pm = found;
	refill = refill_function(ef, &found);
	/* 3.12+: each interpreter has its usedpools[]; BPF reads the calling
	 * thread's. The refill function is needed for an empty size class. */
	if (p->no_predict[0] && mode != PLAN_SAMPLED && minor >= 12 && refill) {
		p->pm.per_interp = true;
		p->pm.new_pool_fn = refill;
		p->no_predict[0] = '\0';
	}
	for (int i = 0; i < p->nfns && p->pm.usedpools; i++)
		if (p->fns[i].family == TM_FAMILY_RAW && p->fns[i].kind != TM_CALL_FREE &&
		    p->fns[i].kind != TM_CALL_REALLOC)
			p->pm.raw_fns[p->fns[i].kind == TM_CALL_CALLOC] = p->fns[i].vaddr;

	if (mode == PLAN_SAMPLED) {
		/* no prediction: pymalloc's own functions are not probed at all */
		memset(p->pm.raw_fns, 0, sizeof(p->pm.raw_fns));
		p->pm.usedpools = 0;
		p->pm.per_interp = false;
		p->no_predict[0] = '\0';
		p->pm.new_pool_fn = refill;
		if (!refill) {
			snprintf(why, whylen, "--sample needs pymalloc's allocate_from_new_pool(), not found in this "
				 "build (CPython 3.8 has none; a stripped 3.12+ build has no symbol for it)");
			err = -ENOTSUP;
		}
	}
	for (int i = 0; i < p->nfns && !err; i++) {
		if (mode == PLAN_SAMPLED && p->fns[i].family == TM_FAMILY_PYMALLOC)
			continue;
		err = add_function_sites(ef, &code, cfi, p, &p->fns[i], function_role(&p->fns[i], plan_predicts(p)));
	}
	if (!err && (plan_predicts(p) || mode == PLAN_SAMPLED)) {
		struct alloc_function newpool = { .kind = TM_CALL_MALLOC, .family = TM_FAMILY_PYMALLOC,
						  .vaddr = p->pm.new_pool_fn };
		const char *name = elf_symbol_at(ef, newpool.vaddr, NULL);

		snprintf(newpool.name, sizeof(newpool.name), "%s", name ? name : "<allocate_from_new_pool>");
		err = add_function_sites(ef, &code, cfi, p, &newpool, TM_ROLE_NEWPOOL);
	}
	if (!err)
		err = add_extra_sites(ef, &code, p);
	/* A hook serves every domain: probing it would trace each pymalloc
	 * allocation. --sample counts the raw domain at its default functions
	 * (with tracemalloc inside, its own raw bookkeeping too). */
	if (!err && mode != PLAN_SAMPLED)
		err = add_known_hooks(ef, &code, cfi, p);
	if (!err)
		err = inlined_find(&code, ef, cfi, p->fns, p->nfns, &p->pm, &p->copies);
	for (int i = 0; i < p->copies.count && !err; i++) {
		const struct inlined_copy *c = &p->copies.copies[i];

		p->found[c->function]++;
		p->verdicts[c->verdict]++;
		if (c->verdict == INLINED_RAW_ONLY)
			p->covered[c->function]++;
		if (c->verdict != INLINED_OK)
			continue;
		if (mode == PLAN_SAMPLED && p->fns[c->function].family == TM_FAMILY_PYMALLOC)
			continue;
		p->probed[c->function]++;
		err = add_copy_sites(ef, &code, p, c, bias);
	}
	/* free-list reuse re-stamps only what is traced block by block */
	if (!err && mode != PLAN_SAMPLED) {
		struct fresh_sources sources = { .usedpools = found.usedpools, .cfi = cfi };

		for (int i = 0; i < p->nfns; i++)
			if (p->fns[i].kind != TM_CALL_FREE) {
				fresh_add_function(&sources, p->fns[i].vaddr);
				fresh_add_slot(&sources, p->fns[i].slot);
			}
		fresh_add_function(&sources, refill);
		err = newref_find(&code, ef, true, &sources, &p->newrefs);
	}
	for (int i = 0; i < p->newrefs.count && !err; i++) {
		struct probe_site *s = new_site(p);

		if (!s) {
			err = -ENOMEM;
			break;
		}
		s->vaddr = p->newrefs.sites[i].vaddr;
		s->bpf.role = TM_ROLE_NEWREF;
		s->bpf.a = p->newrefs.sites[i].op;
		snprintf(s->what, sizeof(s->what), "%s", p->newrefs.sites[i].what);
		err = finish_site(ef, &code, p, s);
	}
	if (!err && mode == PLAN_LAZY_FREES)
		err = drop_pymalloc_frees(p);
	if (err && !why[0])
		snprintf(why, whylen, "cannot build the probe plan: %s", strerror(-err));
	cfi_close(cfi);
	x86_code_close(&code);
	return err;
}

int plan_add_module(struct probe_plan *p, const char *path, char *why, size_t whylen)
{
	struct newref_set found = { 0 };
	struct elf_file *ef;
	struct x86_code code;
	int err, first = p->nsites;

	if (p->mode == PLAN_SAMPLED)
		return 0; /* no re-stamps probed */
	if (p->nmodules == PLAN_MAX_MODULES) {
		snprintf(why, whylen, "more than %d modules create objects", PLAN_MAX_MODULES);
		return -E2BIG;
	}
	err = elf_file_open(path, &ef);
	if (err)
		return 0; /* not an ELF file of ours: nothing it can call */
	/* most mapped files (libc, ...) never create an object: skip their text */
	static const char *const imports[] = { "_Py_NewReference", "_Py_NewReferenceNoTotal",
					       "_PyTraceMalloc_NewReference" };
	bool creates = false;

	for (size_t i = 0; i < sizeof(imports) / sizeof(imports[0]); i++) {
		unsigned jump_slots, others;

		elf_symbol_relocations(ef, imports[i], &jump_slots, &others);
		creates |= jump_slots + others > 0;
	}
	if (!creates) {
		elf_file_close(ef);
		return 0;
	}
	if (x86_code_open(&code, ef)) {
		elf_file_close(ef);
		snprintf(why, whylen, "cannot start the disassembler");
		return -EINVAL;
	}
	err = newref_find_module(&code, ef, p->newrefs.relocated[0] && !p->bodies_probed, &found);
	if (err == -ENOTSUP)
		snprintf(why, whylen, "%s: %s", path, found.why);
	for (int i = 0; i < found.count && !err; i++) {
		struct probe_site *s = new_site(p);

		if (!s) {
			err = -ENOMEM;
			break;
		}
		s->vaddr = found.sites[i].vaddr;
		s->module = p->nmodules + 1;
		s->bpf.role = TM_ROLE_NEWREF;
		s->bpf.a = found.sites[i].op;
		snprintf(s->what, sizeof(s->what), "%s", found.sites[i].what);
		err = finish_site(ef, &code, p, s);
	}
	if (err) {
		p->nsites = first;
	} else if (p->nsites > first) {
		struct plan_module *m = &p->modules[p->nmodules++];

		snprintf(m->path, sizeof(m->path), "%s", path);
		m->nsites = p->nsites - first;
	}
	newref_free(&found);
	x86_code_close(&code);
	elf_file_close(ef);
	return err ? err : p->nsites - first;
}

int plan_probe_creation_functions(struct elf_file *ef, struct probe_plan *p)
{
	struct x86_code code;
	int err = 0, first = p->nsites;

	if (p->bodies_probed || !p->newrefs.nbodies)
		return 0;
	if (x86_code_open(&code, ef))
		return -EINVAL;
	for (int i = 0; i < p->newrefs.nbodies && !err; i++) {
		struct probe_site *s = new_site(p);

		if (!s) {
			err = -ENOMEM;
			break;
		}
		s->vaddr = p->newrefs.bodies[i].vaddr;
		s->bpf.role = TM_ROLE_NEWREF;
		s->bpf.a = p->newrefs.bodies[i].op;
		snprintf(s->what, sizeof(s->what), "%s", p->newrefs.bodies[i].what);
		err = finish_site(ef, &code, p, s);
	}
	x86_code_close(&code);
	if (err) {
		p->nsites = first;
		return err;
	}
	p->bodies_probed = true;
	return p->nsites - first;
}

const char *plan_site_path(const struct probe_plan *p, int site, const char *target_path)
{
	int m = p->sites[site].module;

	return m > 0 && m <= p->nmodules ? p->modules[m - 1].path : target_path;
}

void plan_free(struct probe_plan *p)
{
	inlined_free(&p->copies);
	newref_free(&p->newrefs);
	free(p->sites);
	memset(p, 0, sizeof(*p));
}

int plan_probe_count(const struct probe_plan *p)
{
	return p->nsites;
}
