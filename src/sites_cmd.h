#ifndef TMTRACE_SITES_CMD_H
#define TMTRACE_SITES_CMD_H

/* `tmtrace sites FILE`; returns the exit code. */
int sites_command(int argc, char **argv);

#endif
