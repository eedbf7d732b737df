#ifndef TMTRACE_REPORT_CMD_H
#define TMTRACE_REPORT_CMD_H

/* `tmtrace report FILE ...`; returns the exit code. */
int report_command(int argc, char **argv);

#endif
