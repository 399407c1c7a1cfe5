# Dialer: one non-recursive Makefile for every binary and suite.
#   make            build everything into build/
#   make test       install what is missing, start Postgres and RabbitMQ, run every suite
#   make up/down    the local stack under .run/
#   make demo       the stack plus a campaign shown live
#   make SAN=address,undefined test   the same under sanitizers

CC ?= cc
BUILD ?= build
SAN ?=
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)

PKGS := libmicrohttpd jansson libpq librabbitmq libcurl libconfig openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN := -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes \
	-Wvla -Wwrite-strings -fno-common
ifeq ($(CI),true)
WARN += -Werror
endif
ifneq ($(WERROR),)
WARN += -Werror
endif

CFLAGS ?= -O2 -g
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE -DDIALER_VERSION='"$(VERSION)"' $(WARN) $(CFLAGS) \
	-Icommon -I$(BUILD)/gen $(PKG_CFLAGS) -MMD -MP
LDLIBS := $(PKG_LIBS) -lpthread -lm
ifneq ($(SAN),)
ALL_CFLAGS += -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SAN)
endif

# Sources: every service keeps main() in <prefix>_main.c so tests can link the rest.
COMMON_SRC := $(wildcard common/*.c)
API_SRC := $(filter-out api/api_main.c,$(wildcard api/*.c))
SCHED_SRC := $(filter-out scheduler/sched_main.c,$(wildcard scheduler/*.c))
WORKER_SRC := $(filter-out dialer-worker/worker_main.c,$(wildcard dialer-worker/*.c))
CTL_SRC := $(filter-out common/ctl/ctl_main.c,$(wildcard common/ctl/*.c))
SIM_SRC := $(filter-out tests/sim/sim_main.c,$(wildcard tests/sim/*.c))
MIGRATIONS := $(sort $(wildcard common/sql/*.sql))

# V=1 shows the commands.
ifeq ($(V),1)
Q :=
else
Q := @
endif

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

COMMON_OBJ := $(call obj,$(COMMON_SRC)) $(BUILD)/obj/gen/dl_migrations.o

BINS := $(BUILD)/dialer-api $(BUILD)/dialer-scheduler $(BUILD)/dialer-worker \
	$(BUILD)/dialerctl $(BUILD)/telephony-sim

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
IT_SRC := $(wildcard tests/integration/it_*.c)
IT_BINS := $(patsubst tests/integration/%.c,$(BUILD)/tests/%,$(filter-out tests/integration/it_lib.c,$(IT_SRC)))
TEST_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

.PHONY: all test unit integration up down demo clean deps lint-openapi lint-deploy bench faults restart-broker restart-db fuzz
all: $(BINS) $(UNIT_BINS) $(IT_BINS)

# Tests see the private headers of what they test; services see only common/.
$(BUILD)/obj/tests/%.o: ALL_CFLAGS += -Iapi -Ischeduler -Idialer-worker -Icommon/ctl -Itests/sim

# Objects follow the flags: switching SAN or CFLAGS rebuilds everything.
FLAGS_STAMP := $(BUILD)/.flags
$(shell mkdir -p $(BUILD) && echo '$(ALL_CFLAGS) $(LDFLAGS)' | cmp -s - $(FLAGS_STAMP) || echo '$(ALL_CFLAGS) $(LDFLAGS)' > $(FLAGS_STAMP))

$(BUILD)/obj/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@echo '  CC  $<'
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/gen/dl_migrations.c: $(MIGRATIONS) common/sql/embed.sh
	@mkdir -p $(dir $@)
	$(Q)sh common/sql/embed.sh $(MIGRATIONS) > $@

$(BUILD)/obj/gen/dl_migrations.o: $(BUILD)/gen/dl_migrations.c
	@mkdir -p $(dir $@)
	@echo '  CC  $<'
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/libcommon.a: $(COMMON_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^
$(BUILD)/libapi.a: $(call obj,$(API_SRC))
	$(Q)rm -f $@ && ar rcs $@ $^
$(BUILD)/libsched.a: $(call obj,$(SCHED_SRC))
	$(Q)rm -f $@ && ar rcs $@ $^
$(BUILD)/libworker.a: $(call obj,$(WORKER_SRC))
	$(Q)rm -f $@ && ar rcs $@ $^
$(BUILD)/libctl.a: $(call obj,$(CTL_SRC))
	$(Q)rm -f $@ && ar rcs $@ $^
$(BUILD)/libsim.a: $(call obj,$(SIM_SRC))
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/dialer-api: $(BUILD)/obj/api/api_main.o $(BUILD)/libapi.a $(BUILD)/libcommon.a
	@echo '  LD  $@'
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/dialer-scheduler: $(BUILD)/obj/scheduler/sched_main.o $(BUILD)/libsched.a $(BUILD)/libcommon.a
	@echo '  LD  $@'
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/dialer-worker: $(BUILD)/obj/dialer-worker/worker_main.o $(BUILD)/libworker.a $(BUILD)/libcommon.a
	@echo '  LD  $@'
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/dialerctl: $(BUILD)/obj/common/ctl/ctl_main.o $(BUILD)/libctl.a $(BUILD)/libcommon.a
	@echo '  LD  $@'
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/telephony-sim: $(BUILD)/obj/tests/sim/sim_main.o $(BUILD)/libsim.a $(BUILD)/libcommon.a
	@echo '  LD  $@'
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests link the service libraries they test.
$(BUILD)/tests/test_%: $(BUILD)/obj/tests/unit/test_%.o $(BUILD)/libapi.a $(BUILD)/libsched.a \
		$(BUILD)/libworker.a $(BUILD)/libctl.a $(BUILD)/libsim.a $(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	@echo '  LD  $@'
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(TEST_LIBS) $(LDLIBS)
$(BUILD)/tests/it_%: $(BUILD)/obj/tests/integration/it_%.o $(BUILD)/obj/tests/integration/it_lib.o \
		$(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	@echo '  LD  $@'
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(TEST_LIBS) $(LDLIBS)

deps:
	@bash deploy/local/stack.sh deps

test: deps
	@SAN='$(SAN)' bash tests/run.sh

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do $$t; done

lint-openapi:
	@bash tests/openapi/lint.sh

lint-deploy:
	@bash tests/deploy/validate.sh

up: deps
	@$(MAKE) --no-print-directory all
	@bash deploy/local/up.sh

down:
	@bash deploy/local/down.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@bash deploy/local/demo.sh

faults: deps
	@$(MAKE) --no-print-directory all
	@bash tests/faults/run.sh

fuzz: ; @bash tests/fuzz/run.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@bash tests/bench/run.sh

restart-broker:
	@bash deploy/local/stack.sh restart-broker $(CURDIR)/.run
restart-db:
	@bash deploy/local/stack.sh restart-db $(CURDIR)/.run

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# The API embeds its OpenAPI document.
$(BUILD)/obj/api/api_openapi.o: api/openapi.yaml
