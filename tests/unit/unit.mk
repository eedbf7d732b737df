# Unit tests: CUnit, on the pure parts (no BPF, no root). Built twice: plain and
# under AddressSanitizer + UndefinedBehaviorSanitizer.

UNIT_TEST_SRCS := $(wildcard tests/unit/test_*.c) tests/unit/main.c
# Tool sources that are pure functions and can be unit-tested without BPF
# (lazyfree.c with the loader functions it calls defined by its test).
UNIT_TOOL_SRCS := src/linetable.c src/sampled.c src/pool.c src/remote.c src/lazyfree.c
UNIT_ALL_SRCS  := $(UNIT_TEST_SRCS) $(UNIT_TOOL_SRCS) $(ENGINE_SRCS)
UNIT_CFLAGS    := -g -Wall -Wextra -std=gnu11 -D_GNU_SOURCE -Iinclude -Isrc -Ibpf -Itests/unit
SAN_FLAGS      := -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

$(BUILD)/unit_tests: $(UNIT_ALL_SRCS) $(wildcard tests/unit/*.h src/*.h src/engine/*.h include/tmtrace/*.h) | $(BUILD)/.dirs
	$(CC) $(UNIT_CFLAGS) -O2 $(UNIT_ALL_SRCS) -o $@ -lcunit -lz

$(BUILD)/unit_tests_asan: $(UNIT_ALL_SRCS) $(wildcard tests/unit/*.h src/*.h src/engine/*.h include/tmtrace/*.h) | $(BUILD)/.dirs
	$(CC) $(UNIT_CFLAGS) $(SAN_FLAGS) $(UNIT_ALL_SRCS) -o $@ -lcunit -lz

unit-test: $(BUILD)/unit_tests
	$(BUILD)/unit_tests

unit-test-asan: $(BUILD)/unit_tests_asan
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(BUILD)/unit_tests_asan

.PHONY: unit-test unit-test-asan
