# Benchmarks that are programs of their own. Built by `make test` so they
# keep compiling; run by hand (see docs/performance.md).

$(BUILD)/bench/.dir:
	mkdir -p $(BUILD)/bench
	touch $@

$(BUILD)/bench/opcost.bpf.o: tests/bench/opcost.bpf.c bpf/tmtrace.h $(BUILD)/vmlinux.h | $(BUILD)/bench/.dir
	$(CLANG) -O2 -g -target bpf -D__TARGET_ARCH_x86 -Wall -I$(BUILD) -Ibpf -c $< -o $@

$(BUILD)/bench/opcost.skel.h: $(BUILD)/bench/opcost.bpf.o
	$(BPFTOOL) gen skeleton $< name opcost_bpf > $@

$(BUILD)/bench/opcost: tests/bench/opcost.c $(BUILD)/bench/opcost.skel.h
	$(CC) $(CFLAGS) -I$(BUILD)/bench $< -o $@ -lbpf -lelf -lz

bench: $(BUILD)/bench/opcost

.PHONY: bench
