/* The little JSON tmtrace writes. */
#ifndef TMTRACE_JSON_H
#define TMTRACE_JSON_H

#include <stdio.h>

/* Writes s as a JSON string; bytes that are not valid UTF-8 become \uFFFD. */
void json_string(FILE *out, const char *s);

#endif
