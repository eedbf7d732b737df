# Fuzzing the snapshot readers (tests/fuzz/fuzz_snapshot.c); included by the
# main Makefile, whose ENGINE_SRCS, BUILD and CLANG it uses. Both builds use
# clang, so that the replay catches what the fuzzer would (clang's UBSan sees
# more, e.g. arithmetic on a NULL pointer).
#
#   make fuzz            libFuzzer for FUZZ_SECONDS (default 60) on a copy of
#                        the corpus in build/fuzz-corpus (kept between runs, so
#                        it grows); crashes go to tests/fuzz/out/
#   make fuzz-replay     every corpus file through the same checks under ASan
#                        and UBSan, without libFuzzer (part of make test)

FUZZ_SECONDS ?= 60
# More libFuzzer options, e.g. FUZZ_FLAGS=-jobs=2
FUZZ_FLAGS   ?=
FUZZ_CORPUS  := tests/fuzz/corpus
FUZZ_SRCS    := tests/fuzz/fuzz_snapshot.c $(ENGINE_SRCS)
FUZZ_DEPS    := $(FUZZ_SRCS) $(wildcard src/engine/*.h include/tmtrace/*.h) tests/fuzz/fuzz.mk
FUZZ_CFLAGS  := -g -O1 -Wall -Wextra -std=gnu11 -D_GNU_SOURCE -Iinclude -Isrc -fno-omit-frame-pointer

$(BUILD)/fuzz_snapshot: $(FUZZ_DEPS) | $(BUILD)/.dirs
	$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		$(FUZZ_SRCS) -o $@ -lz

$(BUILD)/fuzz_replay: $(FUZZ_DEPS) | $(BUILD)/.dirs
	$(CLANG) $(FUZZ_CFLAGS) -DTM_FUZZ_REPLAY -fsanitize=address,undefined -fno-sanitize-recover=all \
		$(FUZZ_SRCS) -o $@ -lz

fuzz: $(BUILD)/fuzz_snapshot
	mkdir -p $(BUILD)/fuzz-corpus tests/fuzz/out
	cp $(FUZZ_CORPUS)/* $(BUILD)/fuzz-corpus/
	$(BUILD)/fuzz_snapshot -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=tests/fuzz/out/ \
		-print_final_stats=1 $(FUZZ_FLAGS) $(BUILD)/fuzz-corpus

fuzz-replay: $(BUILD)/fuzz_replay
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(BUILD)/fuzz_replay $(FUZZ_CORPUS)

.PHONY: fuzz fuzz-replay
