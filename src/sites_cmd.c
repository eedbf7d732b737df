/* `tmtrace sites FILE`: the probe plan of a CPython binary, one site per
 * line, without attaching to anything. For audits, and for the test that
 * checks every site against an independent disassembler. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "elffile.h"
#include "plan.h"
#include "sites_cmd.h"

static const char *const role_names[] = {
	[TM_ROLE_PREDICT] = "predict", [TM_ROLE_ENTRY] = "entry", [TM_ROLE_RETURN] = "return",
	[TM_ROLE_FREE] = "free", [TM_ROLE_NEWPOOL] = "newpool", [TM_ROLE_REALLOC] = "realloc",
	[TM_ROLE_TRACK] = "track", [TM_ROLE_UNTRACK] = "untrack", [TM_ROLE_CODE_DEALLOC] = "code-dealloc",
	[TM_ROLE_NEWREF] = "newref", [TM_ROLE_SET_ALLOCATOR] = "set-allocator",
};

static const char *const kind_names[] = {
	[TM_CALL_MALLOC] = "malloc", [TM_CALL_CALLOC] = "calloc",
	[TM_CALL_REALLOC] = "realloc", [TM_CALL_FREE] = "free",
};

static const char *const reg_names[TM_REG_COUNT] = {
	[TM_REG_NONE] = "-", [TM_REG_DI] = "rdi", [TM_REG_SI] = "rsi", [TM_REG_DX] = "rdx",
	[TM_REG_CX] = "rcx", [TM_REG_R8] = "r8", [TM_REG_R9] = "r9", [TM_REG_AX] = "rax",
	[TM_REG_BX] = "rbx", [TM_REG_BP] = "rbp", [TM_REG_R10] = "r10", [TM_REG_R11] = "r11",
	[TM_REG_R12] = "r12", [TM_REG_R13] = "r13", [TM_REG_R14] = "r14", [TM_REG_R15] = "r15",
	[TM_REG_SP] = "rsp",
};

static const char *name_of(const char *const *names, size_t n, unsigned i)
{
	return i < n && names[i] ? names[i] : "-";
}

static const char *family_name(const struct tm_site *s)
{
	if (s->flags & TM_SITE_HOOK)
		return "hook";
	return s->family == TM_FAMILY_RAW ? "raw" : s->family == TM_FAMILY_PYMALLOC ? "pymalloc" : "-";
}

static const char *reg_name(unsigned r)
{
	return r < TM_REG_COUNT && reg_names[r] ? reg_names[r] : "?";
}

/* reg:rsi, reg32:r13, sreg32:rax, const:32, mem:rsp+8 (mem32:...), or - */
static void print_operand(const struct tm_operand *op)
{
	static const char *const width[] = { "", "32", "s32" };
	const char *w = op->width < 3 ? width[op->width] : "?";

	switch (op->type) {
	case TM_OPERAND_REG:
		printf("\treg%s:%s", w, reg_name(op->reg));
		break;
	case TM_OPERAND_CONST:
		printf("\tconst:%lld", (long long)op->value);
		break;
	case TM_OPERAND_MEM:
		printf("\tmem%s:%s%+lld", w, reg_name(op->reg), (long long)op->value);
		break;
	default:
		printf("\t-");
	}
}

/* The minor version in a file name such as libpython3.12.so.1.0 or
 * python3.12; 0 if there is none (the plan then assumes nothing). */
static int minor_from_name(const char *path)
{
	const char *base = strrchr(path, '/'), *p;
	int minor = 0;

	base = base ? base + 1 : path;
	p = strstr(base, "python3.");
	if (p && sscanf(p + 8, "%d", &minor) != 1)
		minor = 0;
	return minor;
}

int sites_command(int argc, char **argv)
{
	struct probe_plan plan;
	struct elf_file *ef;
	char why[512] = "";
	int err;

	enum plan_mode mode = PLAN_EXACT;

	if (argc == 3 && (!strcmp(argv[1], "--sample") || !strcmp(argv[1], "--lazy-frees"))) {
		mode = !strcmp(argv[1], "--sample") ? PLAN_SAMPLED : PLAN_LAZY_FREES;
		argv++;
		argc--;
	}
	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "tmtrace: usage: tmtrace sites [--sample|--lazy-frees] FILE (a python executable or "
			"libpython)\n");
		return 2;
	}
	err = elf_file_open(argv[1], &ef);
	if (err) {
		fprintf(stderr, "tmtrace: cannot open %s as an x86-64 ELF file: %s\n", argv[1], strerror(-err));
		return 1;
	}
	err = plan_build(ef, 0, 0, mode, minor_from_name(argv[1]), &plan, why, sizeof(why));
	if (err) {
		fprintf(stderr, "tmtrace: %s: %s\n", argv[1], why);
		elf_file_close(ef);
		return 1;
	}
	printf("# site\taddress\tfile_offset\trole\tkind\tfamily\tprobe\tguard_reg\tguard_value\ta\tb\tresult"
	       "\tentry\tsp_delta\temulated\tinstruction\twhat\n");
	for (int i = 0; i < plan.nsites; i++) {
		const struct probe_site *s = &plan.sites[i];

		printf("%d\t0x%lx\t0x%lx\t%s\t%s\t%s\t%s\t%s\t0x%llx", i, (unsigned long)s->vaddr,
		       (unsigned long)s->file_offset,
		       name_of(role_names, sizeof(role_names) / sizeof(role_names[0]), s->bpf.role),
		       name_of(kind_names, sizeof(kind_names) / sizeof(kind_names[0]), s->bpf.kind),
		       family_name(&s->bpf), s->uretprobe ? "uretprobe" : "uprobe",
		       reg_name(s->bpf.guard_reg), (unsigned long long)s->bpf.guard_value);
		print_operand(&s->bpf.a);
		print_operand(&s->bpf.b);
		print_operand(&s->bpf.result);
		printf("\t%d\t%d\t%s\t%s\t%s\n", s->bpf.role == TM_ROLE_RETURN ? (int)s->bpf.entry : -1,
		       s->bpf.sp_delta, s->emulated ? "yes" : "no", s->insn, s->what);
	}
	for (int i = 0; i < plan.copies.count; i++) {
		const struct inlined_copy *c = &plan.copies.copies[i];

		if (c->verdict != INLINED_OK)
			printf("# not probed: inlined %s, guard at 0x%lx: %s\n", plan.fns[c->function].name,
			       (unsigned long)c->cmp, inlined_verdict_names[c->verdict]);
	}
	if (plan.newrefs.missed)
		printf("# not probed: %d object-creation points (guard or operand not proven)\n", plan.newrefs.missed);
	if (plan.newrefs.fresh)
		printf("# not probed: %d object creations in functions that only create what they just allocated "
		       "(the re-stamp writes the traceback the allocation recorded)\n", plan.newrefs.fresh);
	if (plan.newrefs.nproven)
		printf("# not probed: %d object creations of what the same call of their function allocated, "
		       "proven on every path to them (the re-stamp writes the traceback the allocation recorded)\n",
		       plan.newrefs.nproven);
	for (int i = 0; i < plan.newrefs.nproven; i++) {
		printf("# allocated in the same call: 0x%lx ", (unsigned long)plan.newrefs.proven[i].vaddr);
		print_operand(&plan.newrefs.proven[i].op);
		printf("\n");
	}
	if (plan.newrefs.relocated[0])
		printf("# not probed: %s %s (the calls here are; an extension module's calls are probed in "
		       "that module)\n", plan.newrefs.relocated,
		       strchr(plan.newrefs.relocated, ',') ? "themselves" : "itself");
	if (plan.newrefs.kept[0])
		printf("# probed itself: %s\n", plan.newrefs.kept);
	if (plan.no_predict[0])
		printf("# no prediction: %s\n", plan.no_predict);
	plan_free(&plan);
	elf_file_close(ef);
	return 0;
}
