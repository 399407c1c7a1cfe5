# The libFuzzer build, driven by tests/fuzz/run.sh (make -f tests/fuzz/fuzz.mk).
# The code under test is compiled here from source with clang, so coverage
# and the sanitizers apply to it; the gcc-built archives are not used.
# Objects land in build/fuzz/obj, targets in build/fuzz/fuzz_<name>.

FUZZ_CC ?= clang
BUILD ?= build
FUZZ_DIR := $(BUILD)/fuzz

PKGS := libmicrohttpd jansson libpq librabbitmq libcurl libconfig openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS := $(shell pkg-config --libs $(PKGS))

# -fsanitize=fuzzer at compile time adds the coverage instrumentation only;
# libFuzzer's main() is linked in at the final link.
SAN := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -DDIALER_VERSION='"fuzz"' -g -O1 $(SAN) \
	-Wall -Wextra -Wno-unused-parameter -Icommon -Iapi -Idialer-worker -Ischeduler $(PKG_CFLAGS) -MMD -MP

# Everything the parsers may reach; a target links only what it references.
COMMON_SRC := $(filter-out common/dl_migrate.c,$(wildcard common/*.c))
API_SRC := $(filter-out api/api_main.c,$(wildcard api/*.c))
WORKER_SRC := dialer-worker/worker_jobs.c dialer-worker/worker_carrier.c
SCHED_SRC := scheduler/sched_message.c scheduler/sched_outcome.c

fobj = $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,$(1))

TARGETS := $(patsubst tests/fuzz/fuzz_%.c,$(FUZZ_DIR)/fuzz_%,$(wildcard tests/fuzz/fuzz_*.c))

.PHONY: all
# Keep the targets' objects (intermediate files to make) for the next build.
.SECONDARY:
all: $(TARGETS)

# Flags changed (another clang, other sanitizers): rebuild everything.
FLAGS_STAMP := $(FUZZ_DIR)/.flags
$(shell mkdir -p $(FUZZ_DIR) && echo '$(FUZZ_CC) $(FUZZ_CFLAGS)' | cmp -s - $(FLAGS_STAMP) || \
	echo '$(FUZZ_CC) $(FUZZ_CFLAGS)' > $(FLAGS_STAMP))

$(FUZZ_DIR)/obj/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@echo '  FUZZCC  $<'
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_DIR)/libcommon.a: $(call fobj,$(COMMON_SRC))
	@rm -f $@ && ar rcs $@ $^
$(FUZZ_DIR)/libapi.a: $(call fobj,$(API_SRC))
	@rm -f $@ && ar rcs $@ $^
$(FUZZ_DIR)/libworker.a: $(call fobj,$(WORKER_SRC))
	@rm -f $@ && ar rcs $@ $^
$(FUZZ_DIR)/libsched.a: $(call fobj,$(SCHED_SRC))
	@rm -f $@ && ar rcs $@ $^

$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/tests/fuzz/fuzz_%.o $(FUZZ_DIR)/libapi.a $(FUZZ_DIR)/libworker.a \
		$(FUZZ_DIR)/libsched.a $(FUZZ_DIR)/libcommon.a
	@echo '  FUZZLD  $@'
	@$(FUZZ_CC) $(SAN) -o $@ $^ $(PKG_LIBS) -lpthread -lm

-include $(shell find $(FUZZ_DIR)/obj -name '*.d' 2>/dev/null)
