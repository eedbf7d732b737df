#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include "syscheck.h"

#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif

static int has_cap(const struct __user_cap_data_struct data[2], int cap)
{
	return (data[cap / 32].effective >> (cap % 32)) & 1;
}

int syscheck_capabilities(char *why, size_t whylen)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];
	static const struct { int cap; const char *name; } needed[] = {
		{ CAP_BPF, "CAP_BPF" },
		{ CAP_PERFMON, "CAP_PERFMON" },
		{ CAP_SYS_PTRACE, "CAP_SYS_PTRACE" },
	};
	char missing[128] = "";

	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data)) {
		snprintf(why, whylen, "cannot read capabilities: %s", strerror(errno));
		return -errno;
	}
	/* CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON on kernels
	 * that predate them, and grants them today too. */
	for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
		int cap = needed[i].cap;

		if (has_cap(data, cap) || (cap != CAP_SYS_PTRACE && has_cap(data, CAP_SYS_ADMIN)))
			continue;
		snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing), "%s%s",
			 missing[0] ? ", " : "", needed[i].name);
	}
	if (missing[0]) {
		snprintf(why, whylen, "missing capabilities: %s (run as root, or grant them to tmtrace)",
			 missing);
		return -EPERM;
	}
	return 0;
}

int syscheck_kernel(char *why, size_t whylen)
{
	if (access("/sys/kernel/btf/vmlinux", R_OK)) {
		snprintf(why, whylen, "this kernel has no BTF (/sys/kernel/btf/vmlinux): "
			 "tmtrace needs CONFIG_DEBUG_INFO_BTF");
		return -ENOTSUP;
	}
	if (access("/sys/bus/event_source/devices/uprobe/type", R_OK)) {
		snprintf(why, whylen, "this kernel has no uprobe PMU "
			 "(/sys/bus/event_source/devices/uprobe): tmtrace needs CONFIG_UPROBES");
		return -ENOTSUP;
	}
	return 0;
}
