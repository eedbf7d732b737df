/* The target's memory map, from /proc/PID/maps. */
#ifndef TMTRACE_PROCMAPS_H
#define TMTRACE_PROCMAPS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct mapping {
	uint64_t start, end;
	uint64_t offset;       /* file offset of start */
	unsigned long dev_major, dev_minor;
	uint64_t inode;
	char perms[5];
	char *path;            /* as the target sees it; NULL for anonymous */
};

struct proc_maps {
	pid_t pid;
	struct mapping *maps;
	size_t count;
};

/* Reads /proc/PID/maps. -ENOENT: no such process. */
int proc_maps_read(pid_t pid, struct proc_maps *out);
void proc_maps_free(struct proc_maps *m);

/* Lowest mapping of the same file (dev:inode) as `m`: its start minus its
 * offset is where the file's first byte would be. */
const struct mapping *proc_maps_file_base(const struct proc_maps *pm, const struct mapping *m);

/* A path that opens exactly the file the target has mapped, whatever its
 * mount namespace: /proc/PID/map_files/START-END. */
void mapping_file_path(pid_t pid, const struct mapping *m, char *buf, size_t len);

#endif
