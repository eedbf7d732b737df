#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include "modules.h"

struct file_id {
	uint64_t dev, ino;
};

struct module_watch {
	struct file_id *seen; /* every file looked at once: modules and others */
	size_t nseen, cap;
	uint64_t runtime_dev, runtime_ino;
};

int module_watch_new(const struct py_target *t, struct module_watch **out)
{
	struct module_watch *w = calloc(1, sizeof(*w));

	if (!w)
		return -ENOMEM;
	if (t->runtime_map) {
		w->runtime_dev = makedev(t->runtime_map->dev_major, t->runtime_map->dev_minor);
		w->runtime_ino = t->runtime_map->inode;
	}
	*out = w;
	return 0;
}

void module_watch_free(struct module_watch *w)
{
	if (!w)
		return;
	free(w->seen);
	free(w);
}

/* true the first time a file is seen (the runtime's own never) */
static bool first_sight(struct module_watch *w, uint64_t dev, uint64_t ino)
{
	if (dev == w->runtime_dev && ino == w->runtime_ino)
		return false;
	for (size_t i = 0; i < w->nseen; i++)
		if (w->seen[i].dev == dev && w->seen[i].ino == ino)
			return false;
	if (w->nseen == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 64;
		struct file_id *grown = realloc(w->seen, cap * sizeof(*grown));

		if (!grown)
			return true; /* looked at again next time: harmless */
		w->seen = grown;
		w->cap = cap;
	}
	w->seen[w->nseen++] = (struct file_id){ dev, ino };
	return true;
}

/* Plans one module; on a module whose calls cannot be listed, the creation
 * functions are probed themselves. Returns the sites added. */
static int plan_one(struct py_target *t, struct probe_plan *p, const char *path, char *why, size_t whylen)
{
	int n = plan_add_module(p, path, why, whylen);

	if (n == -ENOTSUP) {
		fprintf(stderr, "tmtrace: note: %s: its object creations are probed in libpython's creation "
			"function instead (one probe for every object)\n", why);
		why[0] = '\0';
		n = plan_probe_creation_functions(t->elf, p);
	}
	return n;
}

/* The interpreter's extension modules: <prefix>/lib/pythonX.Y/lib-dynload,
 * the prefix being the directory above the one holding the runtime (or the
 * executable), as the target sees it. */
static int plan_lib_dynload(struct module_watch *w, struct py_target *t, struct probe_plan *p, const char *binary,
			    char *why, size_t whylen)
{
	char dir[700], path[1024];
	const char *slash = strrchr(binary, '/');
	struct dirent *e;
	int added = 0, n;
	DIR *d;

	if (!slash)
		return 0;
	snprintf(dir, sizeof(dir), "/proc/%d/root%.*s/../lib/python%d.%d/lib-dynload", (int)t->pid,
		 (int)(slash - binary), binary, t->major, t->minor);
	d = opendir(dir);
	if (!d)
		return 0;
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		struct stat st;

		if (len < 4 || strcmp(e->d_name + len - 3, ".so") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (stat(path, &st) || !S_ISREG(st.st_mode) || !first_sight(w, st.st_dev, st.st_ino))
			continue;
		n = plan_one(t, p, path, why, whylen);
		if (n < 0) {
			closedir(d);
			return n;
		}
		added += n;
	}
	closedir(d);
	return added;
}

static int plan_mapped(struct module_watch *w, struct py_target *t, struct probe_plan *p, char *why, size_t whylen)
{
	struct proc_maps maps;
	int added = 0, err;

	err = proc_maps_read(t->pid, &maps);
	if (err)
		return err == -ENOENT || err == -ESRCH ? 0 : err; /* the target is gone: the loop sees it */
	for (size_t i = 0; i < maps.count && added >= 0; i++) {
		const struct mapping *m = &maps.maps[i];
		char path[64];
		int n;

		if (!m->path || m->path[0] != '/' || m->perms[2] != 'x' ||
		    !first_sight(w, makedev(m->dev_major, m->dev_minor), m->inode))
			continue;
		mapping_file_path(t->pid, m, path, sizeof(path));
		n = plan_one(t, p, path, why, whylen);
		added = n < 0 ? n : added + n;
	}
	proc_maps_free(&maps);
	return added;
}

int module_watch_start(struct module_watch *w, struct py_target *t, struct probe_plan *p, char *why, size_t whylen)
{
	int mapped, dynload, exe = 0;

	mapped = plan_mapped(w, t, p, why, whylen);
	if (mapped < 0)
		return mapped;
	dynload = plan_lib_dynload(w, t, p, t->binary, why, whylen);
	if (dynload < 0)
		return dynload;
	/* libpython may live elsewhere than the program's prefix */
	char link[64], exe_path[512];
	ssize_t len;

	snprintf(link, sizeof(link), "/proc/%d/exe", (int)t->pid);
	len = readlink(link, exe_path, sizeof(exe_path) - 1);
	if (len > 0) {
		exe_path[len] = '\0';
		exe = plan_lib_dynload(w, t, p, exe_path, why, whylen);
	}
	return exe < 0 ? exe : mapped + dynload + exe;
}

int module_watch_poll(struct module_watch *w, struct py_target *t, struct probe_plan *p, char *why, size_t whylen)
{
	return plan_mapped(w, t, p, why, whylen);
}
