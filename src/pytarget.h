/* The CPython runtime inside a target process: which file holds it, where it
 * is loaded, which version it is, and the offsets that version uses. */
#ifndef TMTRACE_PYTARGET_H
#define TMTRACE_PYTARGET_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "elffile.h"
#include "procmaps.h"
#include "pyoffsets.h"

struct py_target {
	pid_t pid;
	struct proc_maps maps;
	const struct mapping *runtime_map; /* mapping of the file holding _PyRuntime */
	char binary[512];                  /* path as the target sees it */
	char open_path[128];               /* /proc/PID/map_files/...: the very file */
	struct elf_file *elf;
	uint64_t bias;                     /* runtime address = file vaddr + bias */
	uint64_t runtime_addr;             /* &_PyRuntime in the target */
	int major, minor, micro;
	char version[32];                  /* "3.11.7" */
	bool shared;                       /* libpython*.so rather than a static executable */
	char abiflags[8];                  /* "" for a release build, "d" debug, "t" free-threaded */
	const struct py_offsets *offsets;
};

/* Errors are negative errno values; `why` gets one line for the user. */
int py_target_open(pid_t pid, struct py_target *t, char *why, size_t whylen);
void py_target_close(struct py_target *t);
/* Whether the target has exited (gone, or a zombie): an attach that
 * failed then failed for that reason. */
bool py_target_exited(const struct py_target *t);
/* Checks the offsets against the live runtime (thread states). */
int py_target_check(struct py_target *t, char *why, size_t whylen);

#endif
