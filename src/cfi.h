/* Call-frame information (.eh_frame, present even in stripped binaries):
 * where the stack pointer is relative to the frame at an instruction, and
 * the bounds of the code it covers. */
#ifndef TMTRACE_CFI_H
#define TMTRACE_CFI_H

#include <stdint.h>
#include "elffile.h"

struct cfi;

int cfi_open(struct elf_file *ef, struct cfi **out);
void cfi_close(struct cfi *c);

/* The CFA rule at vaddr when it is "rsp + offset": 0 and *offset, else
 * -ENOENT (no CFI there) or -ENOTSUP (CFA from another register). The
 * stack pointer at vaddr is CFA - offset; at a function's entry, offset is
 * 8 (the return address). */
int cfi_sp_offset(struct cfi *c, uint64_t vaddr, int64_t *offset);

/* The bounds of the code one FDE covers (a function, or a part of one that
 * the compiler moved away, .cold): -ENOENT if none covers vaddr. */
int cfi_code_range(struct cfi *c, uint64_t vaddr, uint64_t *start, uint64_t *end);

#endif
