#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "engine/hashset.h"
#include "srcline.h"

#define SRCLINE_MAX_FILE (16 << 20)

struct source_file {
	char *name;
	char *text;     /* NULL: unreadable */
	char **lines;   /* NUL-terminated, stripped */
	size_t nlines;
};

struct srcline_cache {
	pid_t pid;
	struct hashset files;
};

struct srcline_cache *srcline_new(pid_t pid)
{
	struct srcline_cache *c = calloc(1, sizeof(*c));

	if (c)
		c->pid = pid;
	return c;
}

static void drop_files(struct srcline_cache *c)
{
	for (size_t i = 0; i < c->files.cap; i++) {
		struct source_file *f = c->files.slots[i];

		if (!f)
			continue;
		free(f->name);
		free(f->text);
		free(f->lines);
		free(f);
	}
	hashset_free(&c->files);
}

void srcline_free(struct srcline_cache *c)
{
	if (!c)
		return;
	drop_files(c);
	free(c);
}

void srcline_refresh(struct srcline_cache *c)
{
	drop_files(c);
}

static bool file_eq(const void *e, const void *p)
{
	return strcmp(((const struct source_file *)e)->name, p) == 0;
}

static char *strip(char *s)
{
	char *end;

	while (*s && isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = '\0';
	return s;
}

static void load(struct srcline_cache *c, struct source_file *f)
{
	char path[4096 + 64];
	FILE *fp;
	size_t len = 0, cap = 0;

	if (c->pid == 0)
		snprintf(path, sizeof(path), "%s", f->name); /* this machine's files, as linecache reads them */
	else if (f->name[0] == '/')
		snprintf(path, sizeof(path), "/proc/%d/root%s", (int)c->pid, f->name);
	else
		snprintf(path, sizeof(path), "/proc/%d/cwd/%s", (int)c->pid, f->name);
	fp = fopen(path, "re");
	if (!fp)
		return;
	for (;;) {
		if (len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 65536;
			if (cap > SRCLINE_MAX_FILE)
				break;
			char *grown = realloc(f->text, cap);
			if (!grown)
				break;
			f->text = grown;
		}
		size_t got = fread(f->text + len, 1, 4096, fp);
		if (!got)
			break;
		len += got;
	}
	fclose(fp);
	if (!f->text)
		return;
	f->text[len] = '\0';
	for (size_t i = 0; i < len; i++)
		f->nlines += f->text[i] == '\n';
	f->lines = calloc(f->nlines + 1, sizeof(*f->lines));
	if (!f->lines)
		return;
	f->nlines = 0;
	for (char *p = f->text, *nl; p && *p; p = nl ? nl + 1 : NULL) {
		nl = strchr(p, '\n');
		if (nl)
			*nl = '\0';
		f->lines[f->nlines++] = strip(p);
	}
}

const char *srcline_get(struct srcline_cache *c, const char *filename, unsigned lineno)
{
	uint64_t h = hash_bytes(filename, strlen(filename));
	struct source_file *f = hashset_find(&c->files, h, filename, file_eq);

	if (!f) {
		f = calloc(1, sizeof(*f));
		if (!f)
			return NULL;
		f->name = strdup(filename);
		if (!f->name || hashset_add(&c->files, h, f)) {
			free(f->name);
			free(f);
			return NULL;
		}
		if (filename[0] != '<')
			load(c, f);
	}
	if (!f->lines || lineno == 0 || lineno > f->nlines || !f->lines[lineno - 1][0])
		return NULL;
	return f->lines[lineno - 1];
}
