// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* opcost: what each piece of a uprobe program's work costs on this machine,
 * against the trap itself.
 *
 * usage: sudo build/bench/opcost [-r ROUNDS] [-c CALLS] [-p CPU] [-m LIVE_MAP_CAPACITY]
 *
 * Each of opcost.bpf.c's programs is attached in turn to probed_site() in
 * this very process, which then calls it 2N times (a block allocated and
 * one freed per iteration, 100000 blocks live, as a service keeps them), and
 * the loop is timed. Rounds run every program in a rotated order; the
 * figures are medians. Then as many rounds again with the kernel timing each
 * program run (BPF_ENABLE_STATS), for the program's own time per run. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "tmtrace.h"
#include "opcost.skel.h"

/* Its first instruction, push %rbp, is one the kernel emulates (no single
 * step), as at every site tmtrace probes. */
__asm__(".text\n"
	".globl probed_site\n"
	".type probed_site, @function\n"
	"probed_site:\n"
	"	push %rbp\n"
	"	mov %rsp, %rbp\n"
	"	pop %rbp\n"
	"	ret\n"
	".size probed_site, .-probed_site\n"
	".globl probed_nop5\n"
	".type probed_nop5, @function\n"
	"probed_nop5:\n"
	"	.byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n" /* nopl 0x0(%rax,%rax,1) */
	"	ret\n"
	".size probed_nop5, .-probed_nop5\n");
void probed_site(const void *chain, unsigned long key, unsigned long op);
void probed_nop5(const void *chain, unsigned long key, unsigned long op);

#define LIVE_BLOCKS 100000UL
#define KEY_SPAN (1UL << 20) /* more than LIVE_BLOCKS: a key is never live twice */
#define MAX_ROUNDS 64

/* the frame chain's stand-in: nodes a cache line apart, each pointing on */
struct node {
	struct node *next;
	char pad[120];
};
static struct node chain[5];

struct variant {
	const char *name;
	const char *what;
	struct bpf_program *prog; /* NULL: nothing attached */
	double ns[MAX_ROUNDS];	  /* wall-clock per call */
	double run_ns[MAX_ROUNDS];/* the kernel's run time per program run */
	int unavailable;
	int nop5;		  /* probed at a 5-byte nop rather than a push */
};

static unsigned long key_of(unsigned long i)
{
	return 0x7f0000000000UL + (i % KEY_SPAN) * 32;
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* 2*calls timed calls: the blocks allocated before are freed afterwards,
 * untimed, so every variant leaves its maps as it found them */
static double run_loop(void (*site)(const void *, unsigned long, unsigned long), unsigned long calls,
		       unsigned long *base)
{
	unsigned long b = *base, i;
	double t0, t1;

	for (i = 0; i < LIVE_BLOCKS; i++)
		site(chain, key_of(b + i), 1);
	t0 = now_ns();
	for (i = LIVE_BLOCKS; i < LIVE_BLOCKS + calls; i++) {
		site(chain, key_of(b + i), 1);
		site(chain, key_of(b + i - LIVE_BLOCKS), 0);
	}
	t1 = now_ns();
	for (i = calls; i < calls + LIVE_BLOCKS; i++)
		site(chain, key_of(b + i), 0);
	*base = b + calls + LIVE_BLOCKS;
	return (t1 - t0) / (2.0 * calls);
}

static int prog_stats(struct bpf_program *prog, __u64 *cnt, __u64 *ns)
{
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info);
	int err = bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len);

	if (err)
		return err;
	*cnt = info.run_cnt;
	*ns = info.run_time_ns;
	return 0;
}

static int run_variant(struct variant *v, const char *exe, unsigned long calls, unsigned long *base, int round,
		       int with_stats)
{
	LIBBPF_OPTS(bpf_uprobe_opts, opts, .func_name = v->nop5 ? "probed_nop5" : "probed_site");
	struct bpf_link *link = NULL;
	__u64 cnt0 = 0, ns0 = 0, cnt1 = 0, ns1 = 0;
	double ns;

	if (v->prog) {
		link = bpf_program__attach_uprobe_opts(v->prog, getpid(), exe, 0, &opts);
		if (!link) {
			fprintf(stderr, "opcost: attaching %s: %s\n", v->name, strerror(errno));
			return -errno;
		}
	}
	if (with_stats && v->prog && prog_stats(v->prog, &cnt0, &ns0))
		return -errno;
	ns = run_loop(v->nop5 ? probed_nop5 : probed_site, calls, base);
	if (with_stats && v->prog && prog_stats(v->prog, &cnt1, &ns1))
		return -errno;
	bpf_link__destroy(link);
	if (with_stats)
		v->run_ns[round] = cnt1 > cnt0 ? (double)(ns1 - ns0) / (double)(cnt1 - cnt0) : 0;
	else
		v->ns[round] = ns;
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
	double s[MAX_ROUNDS];

	memcpy(s, v, n * sizeof(*v));
	qsort(s, n, sizeof(*s), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* The BPF object opened and loaded, with or without its sleepable program;
 * NULL and *err set if either step fails. */
static struct opcost_bpf *open_and_load(unsigned long capacity, bool sleepable, int *err)
{
	struct opcost_bpf *skel = opcost_bpf__open();

	if (!skel) {
		*err = -errno;
		return NULL;
	}
	skel->rodata->target_tgid = getpid();
	if (capacity)
		bpf_map__set_max_entries(skel->maps.live, capacity);
	if (!sleepable)
		bpf_program__set_autoload(skel->progs.chain4_sleepable, false);
	*err = opcost_bpf__load(skel);
	if (*err) {
		opcost_bpf__destroy(skel);
		return NULL;
	}
	return skel;
}

int main(int argc, char **argv)
{
	unsigned long calls = 200000, base = 0, capacity = 0;
	int rounds = 5, cpu = 1, opt, err, i, r;
	struct opcost_bpf *skel;
	char exe[PATH_MAX];
	ssize_t n;
	cpu_set_t set;
	int stats_fd;

	while ((opt = getopt(argc, argv, "r:c:p:m:h")) != -1) {
		switch (opt) {
		case 'r': rounds = atoi(optarg); break;
		case 'c': calls = strtoul(optarg, NULL, 0); break;
		case 'p': cpu = atoi(optarg); break;
		case 'm': capacity = strtoul(optarg, NULL, 0); break;
		default:
			fprintf(stderr, "usage: %s [-r ROUNDS] [-c CALLS] [-p CPU] [-m LIVE_MAP_CAPACITY]\n", argv[0]);
			return 2;
		}
	}
	if (rounds < 1 || rounds > MAX_ROUNDS || calls == 0) {
		fprintf(stderr, "opcost: rounds must be 1-%d and calls positive\n", MAX_ROUNDS);
		return 2;
	}
	if (geteuid() != 0) {
		fprintf(stderr, "opcost: needs root (BPF uprobes)\n");
		return 1;
	}
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		fprintf(stderr, "opcost: not pinned to CPU %d: %s\n", cpu, strerror(errno));
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n < 0) {
		perror("opcost: /proc/self/exe");
		return 1;
	}
	exe[n] = '\0';
	for (i = 0; i < 4; i++)
		chain[i].next = &chain[i + 1];

	/* a kernel without sleepable uprobes: the rest still measures */
	skel = open_and_load(capacity, true, &err);
	if (!skel)
		skel = open_and_load(capacity, false, &err);
	if (!skel) {
		fprintf(stderr, "opcost: loading the BPF programs: %s\n", strerror(-err));
		return 1;
	}

	struct variant variants[] = {
		{ .name = "untraced", .what = "no probe", .prog = NULL },
		{ .name = "empty", .what = "the trap: a program that returns at once", .prog = skel->progs.empty },
		{ .name = "empty_nop5", .what = "the trap at a 5-byte nop (kernel 6.18 optimizes those)", .prog = skel->progs.empty, .nop5 = 1 },
		{ .name = "read8", .what = "one bpf_probe_read_user, 8 bytes", .prog = skel->progs.read8 },
		{ .name = "read256", .what = "one bpf_probe_read_user, 256 bytes", .prog = skel->progs.read256 },
		{ .name = "chain4", .what = "four dependent 8-byte reads", .prog = skel->progs.chain4 },
		{ .name = "chain4.s", .what = "the same, sleepable, bpf_copy_from_user", .prog = skel->progs.chain4_sleepable },
		{ .name = "task", .what = "bpf_get_current_task_btf, tgid check", .prog = skel->progs.task },
		{ .name = "task_storage", .what = "that, and bpf_task_storage_get", .prog = skel->progs.task_storage },
		{ .name = "atomics", .what = "five atomic adds on globals", .prog = skel->progs.atomics },
		{ .name = "hash", .what = "live hash map: insert, or lookup+delete", .prog = skel->progs.hash },
		{ .name = "hash_noprealloc", .what = "the same, BPF_F_NO_PREALLOC", .prog = skel->progs.hash_noprealloc },
		{ .name = "open_addressed", .what = "array map open addressing, CAS insert", .prog = skel->progs.open_addressed },
		{ .name = "open_inline", .what = "the same, a bounded loop, no helper", .prog = skel->progs.open_addressed_inline },
		{ .name = "open_local", .what = "the same, slot from the address bits", .prog = skel->progs.open_addressed_local },
		{ .name = "minimal", .what = "task, storage, 4 reads per alloc, hash op", .prog = skel->progs.minimal },
	};
	int nv = sizeof(variants) / sizeof(variants[0]);

	for (i = 0; i < nv; i++)
		if (variants[i].prog && bpf_program__fd(variants[i].prog) < 0)
			variants[i].unavailable = 1;

	for (int pass = 0; pass < 2; pass++) {
		stats_fd = -1;
		if (pass == 1) {
			stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
			if (stats_fd < 0) {
				fprintf(stderr, "opcost: BPF_ENABLE_STATS: %s (no run times)\n", strerror(errno));
				break;
			}
		}
		for (r = 0; r < rounds; r++) {
			for (i = 0; i < nv; i++) {
				struct variant *v = &variants[(i + r) % nv];

				if (v->unavailable)
					continue;
				err = run_variant(v, exe, calls, &base, r, pass == 1);
				if (err)
					return 1;
			}
		}
		if (stats_fd >= 0)
			close(stats_fd);
	}

	/* the trap: the empty program's call against no probe, wall clock;
	 * a program's work: its run time less the empty program's (the
	 * kernel's timing and the dispatch), which is steadier than the
	 * difference of two wall-clock figures of about a microsecond */
	double untraced = median(variants[0].ns, rounds), empty = median(variants[1].ns, rounds);
	double trap = empty - untraced, empty_run = median(variants[1].run_ns, rounds);

	printf("opcost: %lu alloc+free pairs per run, %lu blocks live, %d rounds, CPU %d; medians\n", calls,
	       LIVE_BLOCKS, rounds, cpu);
	printf("trap (empty program at an emulated push, against no probe): %.1f ns\n", trap);
	printf("%-16s %9s %9s %9s %8s  %s\n", "program", "ns/call", "run ns", "work ns", "work/trap", "what it does");
	for (i = 0; i < nv; i++) {
		struct variant *v = &variants[i];
		double run, work;

		if (v->unavailable) {
			printf("%-16s %9s %9s %9s %8s  %s (not loaded here)\n", v->name, "-", "-", "-", "-", v->what);
			continue;
		}
		if (!v->prog) {
			printf("%-16s %9.1f %9s %9s %8s  %s\n", v->name, median(v->ns, rounds), "", "", "", v->what);
			continue;
		}
		run = median(v->run_ns, rounds);
		work = run - empty_run;
		printf("%-16s %9.1f %9.1f %9.1f %8.2f  %s\n", v->name, median(v->ns, rounds), run, work, work / trap,
		       v->what);
	}
	opcost_bpf__destroy(skel);
	return 0;
}
