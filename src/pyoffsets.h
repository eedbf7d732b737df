/* Structure offsets of one CPython minor version, as the BPF program and the
 * resolver need them. Generated from each version's internal headers by
 * scripts/gen-pyoffsets.py into src/pyoffsets_table.c; never edited by hand.
 * A field that does not exist in a version is PYOFF_NONE. */
#ifndef TMTRACE_PYOFFSETS_H
#define TMTRACE_PYOFFSETS_H

#include <stdint.h>

#define PYOFF_NONE 0xffffffffu

enum py_frame_model {
	PY_FRAMES_FRAMEOBJECT = 1, /* 3.8-3.10: tstate->frame, PyFrameObject chain */
	PY_FRAMES_CFRAME = 2,      /* 3.11-3.12: tstate->cframe->current_frame, _PyInterpreterFrame */
	PY_FRAMES_TSTATE = 3,      /* 3.13: tstate->current_frame, _PyInterpreterFrame */
};

struct py_offsets {
	int major, minor;
	enum py_frame_model frame_model;

	/* _PyRuntimeState */
	uint32_t runtime_interpreters_head;
	/* PyInterpreterState */
	uint32_t interp_next;
	uint32_t interp_threads_head;
	/* PyThreadState */
	uint32_t tstate_next;
	uint32_t tstate_interp;
	uint32_t tstate_thread_id;        /* unsigned long, pthread_self() */
	uint32_t tstate_native_thread_id; /* 3.11+ */
	uint32_t tstate_frame;            /* frame (3.8-3.10), cframe (3.11-3.12), current_frame (3.13) */
	/* which of a thread's thread states tracemalloc takes (sub-interpreters) */
	uint32_t runtime_interpreters_main; /* _PyRuntime.interpreters.main */
	uint32_t tstate_status;           /* the 32-bit _status bitfield word (3.12+) */
	/* pymalloc's usedpools[] (3.12+): in 3.12 at interp + interp_obmalloc;
	 * in 3.13 at *(interp + interp_obmalloc) + obmalloc_used; an
	 * interpreter with Py_RTFLAGS_USE_MAIN_OBMALLOC in its feature_flags
	 * uses the main interpreter's */
	uint32_t interp_obmalloc;
	uint32_t obmalloc_used;
	uint32_t interp_feature_flags;
	uint32_t rtflags_use_main_obmalloc;
	/* _PyCFrame (3.11-3.12) */
	uint32_t cframe_current_frame;
	/* PyFrameObject (3.8-3.10) or _PyInterpreterFrame (3.11+) */
	uint32_t frame_back;   /* f_back / previous */
	uint32_t frame_code;   /* f_code / f_executable */
	uint32_t frame_lasti;  /* int f_lasti (3.8-3.10), prev_instr (3.11-3.12), instr_ptr (3.13) */
	uint32_t frame_owner;  /* char owner (3.11+) */
	uint32_t frame_owned_by_generator; /* value of FRAME_OWNED_BY_GENERATOR (3.11+) */
	uint32_t frame_owned_by_cstack;    /* value of FRAME_OWNED_BY_CSTACK (3.12+) */
	/* Under a tracer PyFrame_GetLineNumber() returns f_lineno: when
	 * f_trace is set (3.8, 3.9), or f_lineno is not 0 (3.10). */
	uint32_t frame_trace;  /* PyFrameObject.f_trace (3.8-3.9) */
	uint32_t frame_lineno; /* PyFrameObject.f_lineno (3.8-3.10) */
	/* PyCodeObject */
	uint32_t code_filename;
	uint32_t code_name;
	uint32_t code_qualname;       /* 3.11+ */
	uint32_t code_firstlineno;
	uint32_t code_linetable;      /* co_lnotab (3.8-3.9), co_linetable (3.10+) */
	uint32_t code_code;           /* co_code bytes (3.8-3.10) */
	uint32_t code_adaptive;       /* co_code_adaptive (3.11+) */
	uint32_t code_firsttraceable; /* _co_firsttraceable (3.11+) */
	/* PyObject / PyVarObject / PyBytesObject / PyTypeObject */
	uint32_t object_type;
	uint32_t type_flags;
	uint32_t varobject_size;
	uint32_t bytes_sval;
	/* PyUnicodeObject */
	uint32_t unicode_length;
	uint32_t unicode_state;        /* byte offset of the state bitfield */
	uint32_t unicode_ascii_size;   /* sizeof(PyASCIIObject): compact ASCII data */
	uint32_t unicode_compact_size; /* sizeof(PyCompactUnicodeObject): compact data */
	uint32_t unicode_data_any;     /* PyUnicodeObject.data.any (legacy strings) */
	/* bit positions inside the 32-bit state word */
	uint8_t state_kind_shift, state_kind_bits;
	uint8_t state_compact_bit, state_ascii_bit;
	uint8_t state_ready_bit; /* 0xff where strings are always ready (3.12+) */
	uint8_t tstate_active_bit; /* _status.active (3.12+) */
};

/* The table for every supported minor version, or NULL. */
const struct py_offsets *py_offsets_for(int major, int minor);

/* 3.13+ describe their own layout in _PyRuntime.debug_offsets: the
 * fields that say what a struct py_offsets field says. */
struct py_debug_check {
	uint32_t at;     /* offset of the uint64_t in _Py_DebugOffsets */
	uint32_t field;  /* offsetof(struct py_offsets, the same fact) */
	const char *name;
};

/* The checks for a version (count 0 and NULL when it has none). */
const struct py_debug_check *py_debug_checks_for(int major, int minor, size_t *count);

/* _Py_DebugOffsets' own header: cookie, version, free_threaded (3.13). */
#define PY_DEBUG_COOKIE "xdebugpy"
#define PY_DEBUG_VERSION_AT 8
#define PY_DEBUG_FREE_THREADED_AT 16

#endif
