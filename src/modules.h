/* The target's other modules that give objects their first reference:
 * extension modules that call the runtime's creation function through
 * their own GOT, or inline it (3.8). Found when tmtrace attaches (those
 * mapped, and the interpreter's lib-dynload modules, probed by their file
 * whether loaded yet or not) and as they are loaded, and planned with
 * plan_add_module(). */
#ifndef TMTRACE_MODULES_H
#define TMTRACE_MODULES_H

#include "plan.h"
#include "pytarget.h"

struct module_watch;

int module_watch_new(const struct py_target *t, struct module_watch **out);
void module_watch_free(struct module_watch *w);
/* At attach time. Returns the sites added, or a negative errno (`why`). */
int module_watch_start(struct module_watch *w, struct py_target *t, struct probe_plan *p, char *why, size_t whylen);
/* Modules mapped since the last look. Returns the sites added. */
int module_watch_poll(struct module_watch *w, struct py_target *t, struct probe_plan *p, char *why, size_t whylen);

#endif
