#include <errno.h>
#include <string.h>
#include "pystr.h"
#include "remote.h"

size_t utf8_encode(uint32_t cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp >= 0xdc80 && cp <= 0xdcff) { /* surrogateescape'd byte */
		out[0] = (char)(cp - 0xdc00);
		return 1;
	}
	if (cp >= 0xd800 && cp <= 0xdfff)
		cp = 0xfffd;
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	if (cp > 0x10ffff)
		cp = 0xfffd;
	out[0] = (char)(0xf0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* Reads from the captured copy when it covers [addr, addr + len), else
 * from the target. */
static int source_read(const struct pystr_source *src, uint64_t addr, void *buf, size_t len)
{
	if (src->bytes && addr >= src->base && addr - src->base <= src->len && len <= src->len - (addr - src->base)) {
		memcpy(buf, src->bytes + (addr - src->base), len);
		return 0;
	}
	return src->pid > 0 ? remote_read(src->pid, addr, buf, len) : -EFAULT;
}

static int source_read_u64(const struct pystr_source *src, uint64_t addr, uint64_t *v)
{
	return source_read(src, addr, v, sizeof(*v));
}

int pystr_read(pid_t pid, const struct py_offsets *off, uint64_t addr, char *buf, size_t buflen)
{
	struct pystr_source src = { .pid = pid };

	return pystr_read_from(&src, off, addr, buf, buflen);
}

int pystr_read_from(const struct pystr_source *src, const struct py_offsets *off, uint64_t addr, char *buf,
		    size_t buflen)
{
	uint32_t raw32[PYSTR_MAX_CHARS];
	uint8_t *raw = (uint8_t *)raw32;
	uint64_t length, data;
	uint32_t state;
	unsigned kind, compact, ascii;
	size_t out = 0;
	int err;

	if (buflen == 0)
		return -EINVAL;
	buf[0] = '\0';
	if ((err = source_read_u64(src, addr + off->unicode_length, &length)) ||
	    (err = source_read(src, addr + off->unicode_state, &state, sizeof(state))))
		return err;
	kind = (state >> off->state_kind_shift) & ((1u << off->state_kind_bits) - 1);
	compact = (state >> off->state_compact_bit) & 1;
	ascii = (state >> off->state_ascii_bit) & 1;
	/* tracemalloc leaves a string that is not ready as <unknown>. */
	if (off->state_ready_bit != 0xff && !((state >> off->state_ready_bit) & 1))
		return -EINVAL;
	if (kind != 1 && kind != 2 && kind != 4)
		return -EINVAL;
	if (length > PYSTR_MAX_CHARS)
		return -ENAMETOOLONG;
	if (compact)
		data = addr + (ascii ? off->unicode_ascii_size : off->unicode_compact_size);
	else if ((err = source_read_u64(src, addr + off->unicode_data_any, &data)))
		return err;
	if ((err = source_read(src, data, raw, length * kind)))
		return err;
	for (uint64_t i = 0; i < length; i++) {
		uint32_t cp = kind == 1 ? raw[i] : kind == 2 ? ((uint16_t *)raw32)[i] : raw32[i];
		char enc[4];
		size_t n = utf8_encode(cp, enc);

		if (out + n >= buflen)
			return -ENAMETOOLONG;
		memcpy(buf + out, enc, n);
		out += n;
	}
	buf[out] = '\0';
	return 0;
}
