# Valerix: build, run and test everything from here.
#   make          build the services and tools into build/
#   make run      start Kafka, PostgreSQL and every service locally, in the foreground (Ctrl-C stops all)
#   make up/down  the same in the background / stop it all; make wipe deletes the local data
#   make test     unit tests (plain and under ASan+UBSan), a short pass of every fuzz target
#                 (make fuzz runs them long), integration tests against the real
#                 broker and database, contract checks against schemas/, the monitoring checks
#                 against a real Prometheus, the dashboard in a real browser, the operator's
#                 toolkit and the backup/restore drill, authenticated connections (make auth),
#                 the short soak
#   make soak     the kill-anything soak (DURATION, KILL_EVERY; tests/soak/README.md)
#   make bench    throughput and latency figures
# Missing system packages and the Kafka jars are installed by deploy/stack.sh deps, run first.

CC      ?= gcc
CFLAGS  ?= -O2 -g
B       := build
PKGS    := rdkafka libpq json-c libmicrohttpd uuid
# Recursively expanded on purpose: evaluated after deploy/stack.sh deps has installed pkg-config.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS)) -lpthread -lm
CRIT_LIBS  = $(shell pkg-config --libs criterion)
XCFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -MMD -MP -Icommon -I$(B) -DVX_SRC_DIR='"$(CURDIR)"'
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

COMMON  := $(wildcard common/*.c)
SERVICES := $(B)/inventory-svc $(B)/order-svc $(B)/gateway
TOOLS   := $(B)/vxadmin
DEPS_STAMP := $(B)/.deps

.PHONY: all deps run up down wipe status test unit unit-asan it contract contract-live monitoring web bench clean soak soak-short backup restore ops fuzz fuzz-short auth faults faults-disk
all: $(SERVICES) $(TOOLS)

$(DEPS_STAMP): deploy/stack.sh deploy/kafka/pom.xml
	deploy/stack.sh deps
	@mkdir -p $(B) && touch $@
deps: $(DEPS_STAMP)

# Objects: build/obj/<path>.o, and build/asan/<path>.o for the sanitizer build.
$(B)/obj/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(XCFLAGS) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@
$(B)/asan/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(XCFLAGS) -O1 -g $(SAN) $(PKG_CFLAGS) -c $< -o $@

# valerix_build_info's version and commit (vx_metrics.c): rewritten only when git says otherwise.
$(B)/vx_commit.h: FORCE
	@mkdir -p $(B)
	@c=$$(git rev-parse --short HEAD 2>/dev/null || echo unknown); \
	 v=$$(git describe --tags --always --dirty 2>/dev/null || echo unknown); \
	 printf '#define VX_COMMIT "%s"\n#define VX_VERSION "%s"\n' "$$c" "$$v" >$@.tmp; \
	 cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@
$(B)/obj/common/vx_metrics.o $(B)/asan/common/vx_metrics.o $(B)/fuzz/obj/common/vx_metrics.o: $(B)/vx_commit.h
FORCE:

COMMON_OBJ := $(COMMON:%.c=$(B)/obj/%.o)
COMMON_ASAN := $(COMMON:%.c=$(B)/asan/%.o)

$(B)/inventory-svc: $(B)/obj/inventory-svc/main.o $(COMMON_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS)
$(B)/order-svc: $(B)/obj/order-svc/main.o $(COMMON_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS)
GATEWAY := $(patsubst %.c,$(B)/obj/%.o,$(wildcard gateway/*.c))
$(B)/gateway: $(GATEWAY) $(COMMON_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS) -lcurl
$(B)/vxadmin: $(B)/obj/tools/vxadmin.o $(COMMON_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS)

# ---- tests -------------------------------------------------------------------------------------
# Unit tests cover common/, the gateway's resilience (resilience.c), its request checks (validate.c)
# and its request-reply engine (reqreply.c, against librdkafka's in-process mock cluster: no broker).
UNIT := $(wildcard tests/unit/*.c) gateway/resilience.c gateway/reqreply.c gateway/validate.c
$(B)/unit_tests: $(UNIT:%.c=$(B)/obj/%.o) $(COMMON_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS) $(CRIT_LIBS)
$(B)/unit_tests_asan: $(UNIT:%.c=$(B)/asan/%.o) $(COMMON_ASAN)
	$(CC) $(SAN) -o $@ $^ $(PKG_LIBS) $(CRIT_LIBS)
# The shared test library (tests/lib: the HTTP client, the Kafka readers, clocks and small
# utilities) of the integration suites, the soak and vxbench: compiled once, archived, linked into each.
VT_LIB := $(B)/obj/tests/lib/libvt.a
$(VT_LIB): $(patsubst %.c,$(B)/obj/%.o,$(wildcard tests/lib/*.c))
	$(AR) rcs $@ $^
# Test helpers build paths from PATH_MAX buffers; gcc's truncation guesses about them are noise.
$(B)/obj/tests/it/%.o: XCFLAGS += -Wno-format-truncation -Itests/lib
$(B)/it_%: $(B)/obj/tests/it/harness.o $(B)/obj/tests/it/it_%.o $(VT_LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS) $(CRIT_LIBS)
$(B)/it_sql: $(B)/obj/tests/it/harness.o $(B)/obj/tests/it/it_sql.o $(VT_LIB) $(COMMON_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS) $(CRIT_LIBS)
$(B)/obj/tools/vxbench.o: XCFLAGS += -Itests/lib
$(B)/vxbench: $(B)/obj/tools/vxbench.o $(VT_LIB) $(COMMON_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS)

unit: $(B)/unit_tests
	$(B)/unit_tests
unit-asan: $(B)/unit_tests_asan
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(B)/unit_tests_asan

# Integration tests start and stop real service processes against the real broker and database.
# They record every message and HTTP exchange they see, for the contract checks that follow.
VX_DATA_DIR ?= $(CURDIR)/var
export VX_DATA_DIR
it: all $(B)/it_sql $(B)/it_inventory $(B)/it_orders $(B)/it_hostile
	deploy/stack.sh up
	rm -f $(VX_DATA_DIR)/it/messages.jsonl $(VX_DATA_DIR)/it/http.jsonl
	$(B)/it_sql
	$(B)/it_inventory
	$(B)/it_orders
	$(B)/it_hostile

# The contract: schemas are valid, README examples and every message the tests saw match them,
# and the OpenAPI document covers every route and status the tests saw.
contract:
	PY=$$(tests/contract/setup.sh) && \
	$$PY tests/contract/validate.py schemas && \
	$$PY tests/contract/validate.py selftest && \
	$$PY tests/contract/validate.py readme README.md && \
	$$PY tests/contract/validate.py messages $(VX_DATA_DIR)/it/messages.jsonl && \
	$$PY tests/contract/validate.py openapi schemas/openapi.yaml $(VX_DATA_DIR)/it/http.jsonl

# The contract both ways (tests/contract/live.sh): commands generated from schemas/ against the C codec
# of the running services, and schemathesis on schemas/openapi.yaml against the gateway. A quick pass by
# default; VX_FUZZ_SEED, VX_FUZZ_KAFKA_EXAMPLES and VX_FUZZ_HTTP_EXAMPLES make it longer.
contract-live: all
	deploy/stack.sh up
	tests/contract/live.sh

# The monitoring (deploy/monitoring): promtool on the configuration and the alert rules, then a real
# Prometheus scraping a stack of its own, exact counters, and every dashboard and alert query with data.
monitoring: all
	deploy/stack.sh up
	PY=$$(tests/contract/setup.sh) && $$PY tests/monitoring/check.py

# The web dashboard (gateway/web) in a real browser: Debian's chromium driven by puppeteer-core
# (tests/web, from npm, pinned by its package-lock.json; no browser download) against a stack of its own.
web: all
	deploy/stack.sh up
	cd tests/web && npm ci --no-audit --no-fund --loglevel=error && node dashboard.test.mjs

test: unit unit-asan fuzz-short it contract contract-live monitoring web ops auth faults soak-short

bench: all $(B)/vxbench
	tests/bench/bench.sh

# ---- running -----------------------------------------------------------------------------------
run: all
	deploy/stack.sh run
up: all
	deploy/stack.sh up
	deploy/stack.sh services-up
down:
	deploy/stack.sh down
wipe:
	deploy/stack.sh wipe
status:
	deploy/stack.sh status

# Backup and restore (deploy/backup.sh; README: Backup and restore). make backup: offsets then dumps into
# var/backup/<UTC time>/, the services may run. make restore [BACKUP=var/backup/<dir>] (default the
# newest), with the services stopped; it starts the dev stack's services afterwards.
backup: $(TOOLS)
	deploy/backup.sh backup
restore: all
	deploy/backup.sh restore --start $(BACKUP)
# The operator's toolkit (build/vxadmin) and the disaster drill (backup under load, databases dropped,
# restore, roll forward), each on a stack of its own over the real broker and database.
ops: all
	deploy/stack.sh up
	tests/ops/toolkit.sh
	tests/ops/drill.sh
# Authenticated connections (tests/auth/auth.sh): a stack of its own started with VX_AUTH=scram (Kafka
# SASL/SCRAM-SHA-512, PostgreSQL scram-sha-256; ports AUTH_*), then with VX_AUTH=scram-tls (the same over
# TLS): an order end to end with credentials from the environment only, wrong passwords refused at
# start, and no password in anything written.
auth: all
	tests/auth/auth.sh scram
	tests/auth/auth.sh scram-tls

clean:
	rm -rf $(B)/obj $(B)/asan $(B)/fuzz $(SERVICES) $(TOOLS) $(B)/unit_tests $(B)/unit_tests_asan $(B)/it_* $(B)/vxsoak $(B)/vxbench

-include $(shell find $(B) -name '*.d' 2>/dev/null)

# Objects made by pattern chains are kept, so a second `make test` does not rebuild them.
.SECONDARY:

# ---- soak ----------------------------------------------------------------------------------------
# The kill-anything soak (tests/soak/README.md) on a stack of its own (var/soak; ports 19092/19093,
# 25442, 18480-18482): load, kill -9 of any component, then the invariant checks. `make soak` runs
# DURATION [600] seconds with a kill every KILL_EVERY [10] seconds; `make soak-short` about 2 minutes
# with at least 20 kills spread over every component.
SOAK := $(patsubst %.c,$(B)/obj/%.o,$(wildcard tests/soak/*.c))
$(B)/obj/tests/soak/%.o: XCFLAGS += -Wno-format-truncation -Itests/lib # bounded ids in fixed buffers, as in tests/it
$(B)/vxsoak: $(SOAK) $(VT_LIB) $(COMMON_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS)
soak: all $(B)/vxsoak
	tests/soak/soak.sh
soak-short: all $(B)/vxsoak
	DURATION=$${DURATION:-90} KILL_EVERY=$${KILL_EVERY:-4} MIN_KILLS=$${MIN_KILLS:-20} tests/soak/soak.sh

# ---- fuzzing -------------------------------------------------------------------------------------
# libFuzzer targets of every decoder fed from outside (tests/fuzz/fuzz.c, one binary per target),
# built by clang (FUZZ_CC) under ASan+UBSan over the very code the services run; the services stay
# gcc's. `make fuzz` runs each target FUZZ_SECONDS [60] and keeps in tests/fuzz/corpus/ what adds
# coverage; `make fuzz-short` (in make test) replays each one's seeds and kept corpus, then tries new
# inputs for FUZZ_SHORT_SECONDS [4]. tests/fuzz/fuzz.sh says more.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SHORT_SECONDS ?= 4
FUZZ_TARGETS := command event result order_http headers config chaos
FUZZ_FLAGS := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_OBJ := $(patsubst %.c,$(B)/fuzz/obj/%.o,common/vx_msg.c common/vx_config.c common/vx_chaos.c common/vx_log.c \
	common/vx_kafka.c common/vx_metrics.c gateway/validate.c)
$(B)/fuzz/obj/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(XCFLAGS) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link $(PKG_CFLAGS) -c $< -o $@
# Static pattern rules: make's built-in `%: %.o` must not find a way to "remake" their .d files.
$(FUZZ_TARGETS:%=$(B)/fuzz/obj/fuzz_%.o): $(B)/fuzz/obj/fuzz_%.o: tests/fuzz/fuzz.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(XCFLAGS) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -DVX_FUZZ_TARGET=$* $(PKG_CFLAGS) -c $< -o $@
$(FUZZ_TARGETS:%=$(B)/fuzz/fuzz_%): $(B)/fuzz/fuzz_%: $(B)/fuzz/obj/fuzz_%.o $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $^ $(PKG_LIBS)
$(B)/fuzz/seeds/.stamp: tests/fuzz/seeds.py $(wildcard tests/contract/fixtures/*.jsonl)
	rm -rf $(B)/fuzz/seeds && python3 tests/fuzz/seeds.py tests/contract/fixtures $(B)/fuzz/seeds && touch $@
FUZZ_BUILT := $(FUZZ_TARGETS:%=$(B)/fuzz/fuzz_%) $(B)/fuzz/seeds/.stamp
fuzz: $(FUZZ_BUILT)
	tests/fuzz/fuzz.sh long $(FUZZ_SECONDS) $(FUZZ_TARGETS)
fuzz-short: $(FUZZ_BUILT)
	tests/fuzz/fuzz.sh short $(FUZZ_SHORT_SECONDS) $(FUZZ_TARGETS)

# ---- faults --------------------------------------------------------------------------------------
# The faults of issue 17 (tests/faults/faults.sh; README: Faults) on a stack of its own (var/faults;
# ports 19192/19193, 25452, 18490-18492, or FAULTS_*_PORT): 2,000 idle and trickling connections and
# the connection limit, PostgreSQL read-only then answering 42501 under the soak's load, the broker
# away for 2 minutes with the services stopped meanwhile, then the soak's checks. About 4 minutes.
faults: all $(B)/vxsoak
	tests/faults/faults.sh
# A full disk under PostgreSQL and then under Kafka (tests/faults/disk.sh), each on a tmpfs of its own:
# opt-in, not in make test, as it needs root with CAP_SYS_ADMIN to mount them. About 3 minutes.
faults-disk: all $(B)/vxsoak
	tests/faults/disk.sh
