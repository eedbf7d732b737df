#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "procmaps.h"

static int parse_line(char *line, struct mapping *m)
{
	int path_at = 0;

	memset(m, 0, sizeof(*m));
	if (sscanf(line, "%lx-%lx %4s %lx %lx:%lx %lu %n", &m->start, &m->end, m->perms,
		   &m->offset, &m->dev_major, &m->dev_minor, &m->inode, &path_at) < 7)
		return -EINVAL;
	if (path_at > 0 && line[path_at] && line[path_at] != '\n') {
		char *p = line + path_at;

		p[strcspn(p, "\n")] = '\0';
		m->path = strdup(p);
		if (!m->path)
			return -ENOMEM;
	}
	return 0;
}

int proc_maps_read(pid_t pid, struct proc_maps *out)
{
	char path[64], *line = NULL;
	size_t cap = 0, n = 0;
	FILE *f;
	int err = 0;

	memset(out, 0, sizeof(*out));
	out->pid = pid;
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		if (n == out->count) {
			size_t want = n ? n * 2 : 64;
			struct mapping *grown = realloc(out->maps, want * sizeof(*grown));

			if (!grown) {
				err = -ENOMEM;
				break;
			}
			out->maps = grown;
			out->count = want;
		}
		if (parse_line(line, &out->maps[n]) == 0)
			n++;
	}
	out->count = n;
	free(line);
	fclose(f);
	if (!err && n == 0)
		err = -ESRCH; /* a zombie or kernel thread: nothing mapped */
	if (err)
		proc_maps_free(out);
	return err;
}

void proc_maps_free(struct proc_maps *m)
{
	for (size_t i = 0; i < m->count; i++)
		free(m->maps[i].path);
	free(m->maps);
	m->maps = NULL;
	m->count = 0;
}

const struct mapping *proc_maps_file_base(const struct proc_maps *pm, const struct mapping *m)
{
	const struct mapping *best = m;

	for (size_t i = 0; i < pm->count; i++) {
		const struct mapping *o = &pm->maps[i];

		if (o->inode == m->inode && o->dev_major == m->dev_major &&
		    o->dev_minor == m->dev_minor && o->start - o->offset == m->start - m->offset &&
		    o->start < best->start)
			best = o;
	}
	return best;
}

void mapping_file_path(pid_t pid, const struct mapping *m, char *buf, size_t len)
{
	snprintf(buf, len, "/proc/%d/map_files/%lx-%lx", (int)pid, m->start, m->end);
}
