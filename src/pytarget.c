#include <ctype.h>
#include <inttypes.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "pytarget.h"
#include "remote.h"

/* Candidate files for the runtime: libpython*.so first (an embedding
 * executable may be anything), then the executable itself. */
static bool looks_like_python(const char *path)
{
	const char *base = strrchr(path, '/');

	base = base ? base + 1 : path;
	return strncmp(base, "libpython", 9) == 0 || strncmp(base, "python", 6) == 0;
}

static int minor_from_name(const char *path)
{
	const char *p = strstr(path, "python3.");

	if (!p)
		return -1;
	return isdigit((unsigned char)p[8]) ? atoi(p + 8) : -1;
}

/* PY_VERSION ("3.9.18") is a string literal in .rodata: find it for the
 * minor version the file name gave. Py_Version (3.11+) is used first. */
static int version_from_rodata(struct elf_file *ef, int minor, int *micro, char *ver, size_t len)
{
	struct elf_section_view ro;
	char prefix[16];
	int plen;

	if (elf_rodata(ef, &ro))
		return -ENOENT;
	plen = snprintf(prefix, sizeof(prefix), "3.%d.", minor);
	for (size_t i = 1; i + (size_t)plen + 2 < ro.size; i++) {
		const char *s = (const char *)ro.data + i;
		size_t n;

		if (ro.data[i - 1] != 0 || memcmp(s, prefix, (size_t)plen) != 0)
			continue;
		n = strnlen(s, ro.size - i);
		if (n > 20 || !isdigit((unsigned char)s[plen]))
			continue;
		size_t j = (size_t)plen;
		while (j < n && isdigit((unsigned char)s[j]))
			j++;
		/* optional a1/b2/rc1 and '+' */
		while (j < n && (isalnum((unsigned char)s[j]) || s[j] == '+'))
			j++;
		if (j != n)
			continue;
		*micro = atoi(s + plen);
		snprintf(ver, len, "%s", s);
		return 0;
	}
	return -ENOENT;
}

/* The ABI flags of the build, from the extension-module suffix compiled
 * into it (".cpython-311d-x86_64-linux-gnu.so"): 'd' for a debug build
 * (Py_DEBUG), 't' for a free-threaded one. -ENOENT if not found. */
static int abi_flags(struct elf_file *ef, int minor, char *flags, size_t len)
{
	struct elf_section_view ro;
	char prefix[24];
	int plen;

	if (elf_rodata(ef, &ro))
		return -ENOENT;
	plen = snprintf(prefix, sizeof(prefix), ".cpython-3%d", minor);
	for (size_t i = 0; i + (size_t)plen + 8 < ro.size; i++) {
		const char *s = (const char *)ro.data + i;
		size_t n = 0;

		if (memcmp(s, prefix, (size_t)plen) != 0)
			continue;
		s += plen;
		while (n + 1 < len && (size_t)(s - (const char *)ro.data) + n < ro.size && islower((unsigned char)s[n]))
			n++;
		if (s[n] != '-')
			continue;
		memcpy(flags, s, n);
		flags[n] = '\0';
		return 0;
	}
	return -ENOENT;
}

static int detect_version(struct py_target *t, char *why, size_t whylen)
{
	uint64_t vaddr;
	uint32_t hex;

	if (elf_find_symbol(t->elf, "Py_Version", &vaddr, NULL) == 0 &&
	    elf_read(t->elf, vaddr, &hex, sizeof(hex)) == 0) {
		static const char *levels[] = { "a", "b", "rc" };
		unsigned level = (hex >> 4) & 0xf;

		t->major = (int)(hex >> 24);
		t->minor = (int)((hex >> 16) & 0xff);
		t->micro = (int)((hex >> 8) & 0xff);
		if (level >= 0xa && level <= 0xc)
			snprintf(t->version, sizeof(t->version), "%d.%d.%d%s%u", t->major, t->minor,
				 t->micro, levels[level - 0xa], hex & 0xf);
		else
			snprintf(t->version, sizeof(t->version), "%d.%d.%d", t->major, t->minor, t->micro);
		return 0;
	}
	t->major = 3;
	t->minor = minor_from_name(t->binary);
	if (t->minor < 0) {
		snprintf(why, whylen, "cannot tell the Python version of %s", t->binary);
		return -ENOTSUP;
	}
	if (version_from_rodata(t->elf, t->minor, &t->micro, t->version, sizeof(t->version))) {
		t->micro = 0;
		snprintf(t->version, sizeof(t->version), "3.%d", t->minor);
	}
	return 0;
}

static int open_candidate(struct py_target *t, const struct mapping *m)
{
	uint64_t vaddr;
	const struct mapping *base;

	mapping_file_path(t->pid, m, t->open_path, sizeof(t->open_path));
	if (elf_file_open(t->open_path, &t->elf)) {
		/* map_files needs CAP_SYS_ADMIN; the same file through the
		 * target's root is the next best, dev:inode checked below. */
		snprintf(t->open_path, sizeof(t->open_path), "/proc/%d/root%s", (int)t->pid, m->path);
		if (elf_file_open(t->open_path, &t->elf))
			return -ENOENT;
	}
	if (elf_find_symbol(t->elf, "_PyRuntime", &vaddr, NULL)) {
		elf_file_close(t->elf);
		t->elf = NULL;
		return -ENOENT;
	}
	base = proc_maps_file_base(&t->maps, m);
	t->runtime_map = m;
	t->bias = elf_load_bias(t->elf, base->start, base->offset);
	t->runtime_addr = vaddr + t->bias;
	t->shared = elf_is_shared(t->elf) && strstr(m->path, ".so");
	snprintf(t->binary, sizeof(t->binary), "%s", m->path);
	return 0;
}

bool py_target_exited(const struct py_target *t)
{
	char path[64], stat[512], *end;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)t->pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT || errno == ESRCH;
	n = read(fd, stat, sizeof(stat) - 1);
	close(fd);
	if (n <= 0)
		return true;
	stat[n] = '\0';
	/* "pid (comm) S ...": comm may hold anything, the state follows its last ')' */
	end = strrchr(stat, ')');
	return end && end[1] == ' ' && (end[2] == 'Z' || end[2] == 'X');
}

int py_target_open(pid_t pid, struct py_target *t, char *why, size_t whylen)
{
	char exe[512], link[64];
	ssize_t n;
	int err;

	memset(t, 0, sizeof(*t));
	t->pid = pid;
	err = proc_maps_read(pid, &t->maps);
	if (err == -ENOENT || err == -ESRCH) {
		snprintf(why, whylen, "no such process: %d", (int)pid);
		return -ESRCH;
	}
	if (err) {
		snprintf(why, whylen, "cannot read /proc/%d/maps: %s", (int)pid, strerror(-err));
		return err;
	}
	snprintf(link, sizeof(link), "/proc/%d/exe", (int)pid);
	n = readlink(link, exe, sizeof(exe) - 1);
	exe[n > 0 ? n : 0] = '\0';

	/* First libpython, then the executable, then anything python-like. */
	for (int pass = 0; pass < 3 && !t->elf; pass++) {
		for (size_t i = 0; i < t->maps.count && !t->elf; i++) {
			const struct mapping *m = &t->maps.maps[i];
			const char *base;

			if (!m->path || !m->inode || m->offset != 0)
				continue;
			base = strrchr(m->path, '/');
			base = base ? base + 1 : m->path;
			if (pass == 0 && strncmp(base, "libpython", 9) != 0)
				continue;
			if (pass == 1 && strcmp(m->path, exe) != 0)
				continue;
			if (pass == 2 && !looks_like_python(m->path))
				continue;
			open_candidate(t, m);
		}
	}
	if (!t->elf) {
		const struct mapping *py = NULL;

		for (size_t i = 0; i < t->maps.count && !py; i++)
			if (t->maps.maps[i].path && looks_like_python(t->maps.maps[i].path))
				py = &t->maps.maps[i];
		if (py && (strstr(py->path, "python2") || minor_from_name(py->path) >= 0)) {
			int minor = minor_from_name(py->path);

			if (minor >= 0)
				snprintf(why, whylen, "process %d runs Python 3.%d (%s): not supported, "
					 "tmtrace supports CPython 3.8 to 3.13", (int)pid, minor, py->path);
			else
				snprintf(why, whylen, "process %d runs Python 2 (%s): not supported, "
					 "tmtrace supports CPython 3.8 to 3.13", (int)pid, py->path);
		} else if (py) {
			snprintf(why, whylen, "process %d maps %s but no CPython runtime (_PyRuntime) was "
				 "found in it: unsupported Python version or build", (int)pid, py->path);
		} else {
			snprintf(why, whylen, "process %d (%s) is not a CPython process", (int)pid,
				 exe[0] ? exe : "?");
		}
		proc_maps_free(&t->maps);
		return -ENOEXEC;
	}
	err = detect_version(t, why, whylen);
	if (err)
		goto fail;
	t->offsets = py_offsets_for(t->major, t->minor);
	if (t->offsets && abi_flags(t->elf, t->minor, t->abiflags, sizeof(t->abiflags)) == 0 &&
	    (strchr(t->abiflags, 'd') || strchr(t->abiflags, 't'))) {
		snprintf(why, whylen, "process %d runs a %s build of CPython %s (%s, ABI flags '%s'): not "
			 "supported, tmtrace supports release builds (its structure layouts differ)", (int)pid,
			 strchr(t->abiflags, 't') ? "free-threaded" : "debug", t->version, t->binary, t->abiflags);
		err = -ENOTSUP;
		goto fail;
	}
	if (!t->offsets) {
		snprintf(why, whylen, "process %d runs CPython %s (%s): not supported, tmtrace supports 3.8 to 3.13",
			 (int)pid, t->version, t->binary);
		err = -ENOTSUP;
		goto fail;
	}
	return 0;
fail:
	py_target_close(t);
	return err;
}

void py_target_close(struct py_target *t)
{
	elf_file_close(t->elf);
	t->elf = NULL;
	proc_maps_free(&t->maps);
}

/* Walks every interpreter's thread states from outside and checks that the
 * offsets fit this build: each thread state points back to its interpreter
 * and, where CPython records it (3.11+), names a thread of the process. */
static int check_once(struct py_target *t, int *nthreads, char *why, size_t whylen)
{
	const struct py_offsets *o = t->offsets;
	uint64_t interp = 0, tstate, back, tid;
	char path[64];

	*nthreads = 0;
	if (remote_read_u64(t->pid, t->runtime_addr + o->runtime_interpreters_head, &interp)) {
		snprintf(why, whylen, "cannot read the target's memory (_PyRuntime at 0x%" PRIx64 ")",
			 t->runtime_addr);
		return -EFAULT;
	}
	if (!interp) {
		snprintf(why, whylen, "process %d has no Python interpreter running (yet)", (int)t->pid);
		return -ENOENT;
	}
	for (int i = 0; i < 256 && interp; i++) {
		if (remote_read_u64(t->pid, interp + o->interp_threads_head, &tstate))
			goto mismatch;
		for (int j = 0; j < 100000 && tstate; j++) {
			if (remote_read_u64(t->pid, tstate + o->tstate_interp, &back) || back != interp)
				goto mismatch;
			if (o->tstate_native_thread_id != PYOFF_NONE) {
				if (remote_read_u64(t->pid, tstate + o->tstate_native_thread_id, &tid))
					goto mismatch;
				snprintf(path, sizeof(path), "/proc/%d/task/%" PRIu64, (int)t->pid, tid);
				if (tid && access(path, F_OK))
					goto mismatch;
			}
			(*nthreads)++;
			if (remote_read_u64(t->pid, tstate + o->tstate_next, &tstate))
				goto mismatch;
		}
		if (remote_read_u64(t->pid, interp + o->interp_next, &interp))
			goto mismatch;
	}
	return 0;
mismatch:
	snprintf(why, whylen, "CPython %s in %s does not have the structure layout tmtrace expects "
		 "for %d.%d (an unusual build?)", t->version, t->binary, t->major, t->minor);
	return -ENOTSUP;
}

/* 3.13+: the runtime describes its own layout at the start of _PyRuntime
 * (_Py_DebugOffsets, for debuggers and profilers). Every value tmtrace's
 * table also has must agree, and the build must not be free-threaded. */
static int check_debug_offsets(struct py_target *t, char *why, size_t whylen)
{
	size_t count;
	const struct py_debug_check *checks = py_debug_checks_for(t->major, t->minor, &count);
	char cookie[8];
	uint64_t version, free_threaded, value;

	if (!checks)
		return 0;
	if (remote_read(t->pid, t->runtime_addr, cookie, sizeof(cookie)) ||
	    remote_read_u64(t->pid, t->runtime_addr + PY_DEBUG_VERSION_AT, &version) ||
	    remote_read_u64(t->pid, t->runtime_addr + PY_DEBUG_FREE_THREADED_AT, &free_threaded)) {
		snprintf(why, whylen, "cannot read the target's memory (_PyRuntime at 0x%" PRIx64 ")",
			 t->runtime_addr);
		return -EFAULT;
	}
	if (memcmp(cookie, PY_DEBUG_COOKIE, sizeof(cookie)) != 0 || (version >> 16) != (uint64_t)(t->major << 8 | t->minor)) {
		snprintf(why, whylen, "CPython %s in %s has no valid _Py_DebugOffsets at _PyRuntime "
			 "(an unusual build?): not supported", t->version, t->binary);
		return -ENOTSUP;
	}
	if (free_threaded) {
		snprintf(why, whylen, "process %d runs a free-threaded build of CPython %s (%s): not supported",
			 (int)t->pid, t->version, t->binary);
		return -ENOTSUP;
	}
	for (size_t i = 0; i < count; i++) {
		uint32_t ours;

		memcpy(&ours, (const char *)t->offsets + checks[i].field, sizeof(ours));
		if (remote_read_u64(t->pid, t->runtime_addr + checks[i].at, &value) || value != ours) {
			snprintf(why, whylen, "CPython %s in %s: its _Py_DebugOffsets give %s = %" PRIu64
				 ", tmtrace's table %u (an unusual build?): not supported",
				 t->version, t->binary, checks[i].name, value, ours);
			return -ENOTSUP;
		}
	}
	return 0;
}

int py_target_check(struct py_target *t, char *why, size_t whylen)
{
	int err = check_debug_offsets(t, why, whylen), nthreads;

	if (err)
		return err;

	/* Threads come and go while we walk: a few tries before concluding. */
	for (int attempt = 0; attempt < 5; attempt++) {
		err = check_once(t, &nthreads, why, whylen);
		if (err != -ENOTSUP)
			break;
		usleep(2000);
	}
	return err;
}
