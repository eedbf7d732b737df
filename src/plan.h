/* The probe plan of a target binary: every site tmtrace probes, out-of-line
 * allocator functions and inlined copies alike, with what BPF does there,
 * and what could not be probed. */
#ifndef TMTRACE_PLAN_H
#define TMTRACE_PLAN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "allocsites.h"
#include "elffile.h"
#include "inlined.h"
#include "newref.h"
#include "pymalloc.h"
#include "tmtrace.h"

struct probe_site {
	struct tm_site bpf;
	int module;           /* 0: the target binary; k: plan->modules[k - 1] */
	uint64_t vaddr;       /* file address space */
	uint64_t file_offset; /* what the uprobe is attached at */
	bool uretprobe;
	bool emulated;        /* false: the kernel single-steps it (~10 us a hit) */
	char insn[192];
	char what[128];
};

#define PLAN_MAX_HOOKS TM_MAX_HOOKS

/* Another module of the target with object-creation sites of its own (an
 * extension module), probed by its file. */
#define PLAN_MAX_MODULES 128
struct plan_module {
	char path[1024];  /* as tmtrace opens it */
	int nsites;
};

/* What the plan probes. */
enum plan_mode {
	PLAN_EXACT,   /* every allocation and free, as tracemalloc sees them */
	/* --lazy-frees: every allocation, and every free but pymalloc's, which
	 * userspace finds in the pools' state at each report */
	PLAN_LAZY_FREES,
	/* --sample: the raw domain exactly; pymalloc only where a pool is
	 * refilled (allocate_from_new_pool), its live blocks read lazily */
	PLAN_SAMPLED,
};

struct probe_plan {
	enum plan_mode mode;
	struct alloc_function fns[ALLOC_MAX_FUNCTIONS];
	int nfns;
	/* Hook functions probed: tracemalloc's (by symbol, when the binary has
	 * them) and whatever the live slots pointed to at attach time. */
	struct alloc_function hooks[PLAN_MAX_HOOKS];
	int nhooks;
	bool tracks;        /* PyTraceMalloc_Track/Untrack probed */
	bool code_deaths;   /* the code deallocator probed */
	struct newref_set newrefs; /* where objects get their first reference */
	uint64_t bias;      /* load bias of the target's mapping (0 without one) */
	struct pymalloc_info pm;  /* usedpools 0: no prediction */
	char no_predict[160];     /* why not, when not */
	struct inlined_set copies;
	unsigned found[ALLOC_MAX_FUNCTIONS];
	unsigned probed[ALLOC_MAX_FUNCTIONS];
	unsigned covered[ALLOC_MAX_FUNCTIONS]; /* not probed, but seen through a nested probed copy */
	unsigned verdicts[INLINED_VERDICTS];
	struct plan_module modules[PLAN_MAX_MODULES];
	int nmodules;
	bool bodies_probed; /* the relocated creation functions probed again */
	struct probe_site *sites;
	int nsites, cap;
	int single_stepped;
};

/* Builds the plan for the CPython binary `ef` (minor: its version, 0 if
 * unknown). With pid > 0, the live target is read to check hooks and
 * pymalloc's state (bias: load bias). */
int plan_build(struct elf_file *ef, pid_t pid, uint64_t bias, enum plan_mode mode, int minor,
	       struct probe_plan *plan, char *why, size_t whylen);
/* Does the plan predict pymalloc's blocks at entry (no uretprobe)? */
bool plan_predicts(const struct probe_plan *plan);
void plan_free(struct probe_plan *plan);
/* Adds the sites of the hooks the live slots point to now (fns[].live,
 * refreshed by the caller) that have none yet; `warn` hears of each one
 * that cannot be probed. Nothing in PLAN_SAMPLED mode (no hooks probed). */
typedef void (*plan_hook_warning_fn)(const struct alloc_function *slot, int err);
int plan_add_live_hooks(struct elf_file *ef, struct probe_plan *plan, plan_hook_warning_fn warn);
/* Adds the object-creation sites of another module of the target (path:
 * a file tmtrace can open): its inlined re-stamps and, when the target's
 * creation functions are probed at their callers, its calls of them.
 * Returns how many sites were added (0: none needed), or -ENOTSUP when its
 * calls cannot all be listed: then plan_probe_creation_functions(). */
int plan_add_module(struct probe_plan *plan, const char *path, char *why, size_t whylen);
/* Probes the target's relocated creation functions themselves again
 * (every creation, whatever module calls it); sites added, or 0. */
int plan_probe_creation_functions(struct elf_file *ef, struct probe_plan *plan);
/* The file a site is attached at: target_path or its module's. */
const char *plan_site_path(const struct probe_plan *plan, int site, const char *target_path);
/* Number of probes (a uretprobe and an entry at one site count as two). */
int plan_probe_count(const struct probe_plan *plan);

#endif
