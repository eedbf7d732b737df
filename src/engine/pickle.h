/* tracemalloc's snapshot pickle, both directions (internal to the engine).
 *
 * What CPython 3.8-3.13 write in Snapshot.dump() (pickle.HIGHEST_PROTOCOL,
 * i.e. 5, by the C pickler):
 *
 *   tracemalloc.Snapshot, built by NEWOBJ with no arguments, whose BUILD
 *   state is its __dict__: {'traces': <_Traces>, 'traceback_limit': int}
 *   tracemalloc._Traces, likewise; it has no __slots__ of its own (only its
 *   base Sequence has, and they are empty), so its state is the plain dict
 *   {'_traces': list-or-tuple}
 *   raw traces: (domain, size, frames, total_nframe) from 3.9 on,
 *   (domain, size, frames) in 3.8; frames is a tuple of (filename, lineno),
 *   most recent call first; total_nframe is an int or None.
 *
 * Engine mapping: one raw trace is one block (count 1, address 0);
 * total_nframe None is UINT32_MAX; filenames are kept as the UTF-8
 * ('surrogatepass') bytes the pickle stores.
 */
#ifndef TMTRACE_PICKLE_H
#define TMTRACE_PICKLE_H

#include <stddef.h>
#include <stdint.h>
#include "tmtrace/engine.h"

/* Parses a pickle written by tracemalloc.Snapshot.dump() (any protocol 2..5
 * as CPython 3.8-3.13 writes it) into a new snapshot. -EINVAL with a one-line
 * reason in `why` for anything that is not that object graph, -ENOMEM. Never
 * reads out of bounds; memory is linear in `len`, recursion is none. */
int tm_pickle_parse(const uint8_t *data, size_t len, struct tm_snapshot **out, char *why, size_t whylen);

/* Serializes a snapshot as tracemalloc.Snapshot.dump() would for CPython
 * 3.<py_minor> (3-tuples for 3.8, 4-tuples from 3.9): byte for byte what
 * Python writes for a snapshot whose filenames and tracebacks are shared the
 * way take_snapshot() shares them. A trace of count N is written as N raw
 * traces whose sizes add up to its size, so Python's statistics match.
 *
 * Appends to *buf (malloc'd or NULL, *len bytes used); on error *len is
 * restored (*buf may have moved). -EINVAL: py_minor < 8, a filename that is
 * not UTF-8 (Python could not load it), a trace of count 0 or without
 * traceback; -ENOMEM. */
int tm_pickle_write(const struct tm_snapshot *s, int py_minor, uint8_t **buf, size_t *len);

#endif
