# tmtrace: tracemalloc from outside the process, on eBPF uprobes.
#
#   make            build build/tmtrace
#   make test       install deps, build, unit tests (also under ASan+UBSan), integration suite
#   make deps       install the Debian packages the build and the tests need
#   make demo       run tmtrace on the bundled example that leaks slowly

CC      ?= cc
CLANG   ?= clang
BPFTOOL ?= bpftool
PYTHON  ?= /usr/bin/python3

BUILD   := build
CFLAGS  ?= -O2 -g
CFLAGS  += -Wall -Wextra -std=gnu11 -D_GNU_SOURCE -Iinclude -Isrc -Ibpf -I$(BUILD)
LDLIBS  := -lbpf -ldw -lelf -lz -lcapstone

# vmlinux.h: from the running kernel's BTF when it has one, else the committed copy.
VMLINUX_BTF ?= /sys/kernel/btf/vmlinux

# The engine: pure userspace code, no BPF in it (usable as a library).
ENGINE_SRCS := $(wildcard src/engine/*.c)
# The tool: loader, probes, resolver, report.
TOOL_SRCS   := $(filter-out src/main.c,$(wildcard src/*.c))

ENGINE_OBJS := $(patsubst src/%.c,$(BUILD)/%.o,$(ENGINE_SRCS))
TOOL_OBJS   := $(patsubst src/%.c,$(BUILD)/%.o,$(TOOL_SRCS))

all: $(BUILD)/tmtrace

$(BUILD)/.dirs:
	mkdir -p $(BUILD)/engine
	touch $@

$(BUILD)/vmlinux.h: | $(BUILD)/.dirs
	if [ -r $(VMLINUX_BTF) ] && $(BPFTOOL) btf dump file $(VMLINUX_BTF) format c > $@.tmp 2>/dev/null; \
	then mv $@.tmp $@; else rm -f $@.tmp; cp vmlinux/vmlinux.h $@; fi

$(BUILD)/tmtrace.bpf.o: bpf/tmtrace.bpf.c bpf/tmtrace.h $(BUILD)/vmlinux.h | $(BUILD)/.dirs
	$(CLANG) -O2 -g -target bpf -D__TARGET_ARCH_x86 -Wall -I$(BUILD) -Ibpf -c $< -o $@

$(BUILD)/tmtrace.skel.h: $(BUILD)/tmtrace.bpf.o
	$(BPFTOOL) gen skeleton $< name tmtrace_bpf > $@

$(BUILD)/libtmtrace.a: $(ENGINE_OBJS)
	$(AR) rcs $@ $^

$(BUILD)/%.o: src/%.c $(wildcard src/*.h src/engine/*.h include/tmtrace/*.h bpf/tmtrace.h) | $(BUILD)/.dirs
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/loader.o: $(BUILD)/tmtrace.skel.h

$(BUILD)/tmtrace: $(BUILD)/main.o $(TOOL_OBJS) $(BUILD)/libtmtrace.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

include tests/unit/unit.mk
include tests/fuzz/fuzz.mk
include tests/bench/bench.mk

deps:
	scripts/install-deps.sh

# The README's test command: set-up included, so it works on a fresh machine.
test:
	scripts/install-deps.sh
	$(MAKE) all bench unit-test unit-test-asan fuzz-replay
	@if [ "$$CI" = true ] || [ -d "$${PYENV_ROOT:-$$HOME/.pyenv}/versions" ]; then \
		$(PYTHON) scripts/gen-pyoffsets.py --check; \
	else \
		echo "gen-pyoffsets --check: skipped: no pyenv CPython headers here (required under CI=true)"; \
	fi
	$(PYTHON) tests/engine/run.py
	$(PYTHON) tests/integration/run.py

demo:
	scripts/demo.sh

clean:
	rm -rf $(BUILD)

.PHONY: all deps test demo clean
