# shellcheck shell=bash
# tests/faults/lib.sh: what faults.sh and disk.sh share, sourced by each: the settings of a stack of
# their own (every variable deploy/stack.sh, the services and vxsoak read, none left to a default that
# would point at the shared stack), the verdicts of tests/ops/lib.sh, helpers, the soak's load in the
# background, and an EXIT trap that stops the load and brings the stack down on every path.
# The caller sets FAULTS_NAME (its data folder under $VX_DATA_DIR, its log prefix) and may define
# faults_cleanup (run first by the trap) before sourcing.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 1

FAULTS_DIR=$(realpath -m "${FAULTS_DIR:-${VX_DATA_DIR:-$REPO/var}/$FAULTS_NAME}")
FAULTS_HTTP_PORT=${FAULTS_HTTP_PORT:-18490}
export VX_DATA_DIR=$FAULTS_DIR
export VX_KAFKA_LIBS=${VX_KAFKA_LIBS:-$REPO/var/kafka/libs}
export VX_BROKER_PORT=${FAULTS_BROKER_PORT:-19192} VX_CONTROLLER_PORT=${FAULTS_CONTROLLER_PORT:-19193}
# PostgreSQL's port is below 32768, outside Linux's ephemeral range (ip_local_port_range 32768-60999):
# a client connection that happens to hold a port in it makes PostgreSQL's bind fail (55462, the
# port this stack had, was taken so once when make test reached it).
export VX_PG_PORT=${FAULTS_PG_PORT:-25452}
export GATEWAY_HTTP_ADDR=127.0.0.1:$FAULTS_HTTP_PORT ORDERS_HTTP_ADDR=127.0.0.1:$((FAULTS_HTTP_PORT + 1))
export INVENTORY_HTTP_ADDR=127.0.0.1:$((FAULTS_HTTP_PORT + 2))
export ORDERS_URL=http://$ORDERS_HTTP_ADDR INVENTORY_URL=http://$INVENTORY_HTTP_ADDR
export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$VX_BROKER_PORT
export INVENTORY_DB=postgresql://valerix@127.0.0.1:$VX_PG_PORT/inventory
export ORDERS_DB=postgresql://valerix@127.0.0.1:$VX_PG_PORT/orders
export VX_SEED_FILE=/dev/null # vxsoak seeds its own catalog
# A consumer stopped while the broker is gone leaves its group only when its session expires: 6 s
# (the broker's minimum) rather than 45 s, so the restarted services get their partitions soon.
export KAFKA_CONSUMER_SESSION_TIMEOUT_MS=6000 KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS=1000
export VX_SHUTDOWN_TIMEOUT_MS=${VX_SHUTDOWN_TIMEOUT_MS:-5000}
export GATEWAY_IDLE_TIMEOUT_S=${GATEWAY_IDLE_TIMEOUT_S:-10} GATEWAY_BODY_TIMEOUT_MS=${GATEWAY_BODY_TIMEOUT_MS:-3000}
unset VX_CRASH_POINTS VX_GREMLIN_DELAY_MS VX_GREMLIN_EVERY VX_GREMLIN_FRACTION VX_CHAOS_TOKEN GATEWAY_MAX_CONNECTIONS

STACK=$REPO/deploy/stack.sh
OUT=$FAULTS_DIR/out
PG_URL=postgresql://valerix@127.0.0.1:$VX_PG_PORT
PSQL=(env PGOPTIONS='-c client_min_messages=warning -c default_transaction_read_only=off' psql -X -q -At -v ON_ERROR_STOP=1)
STOP_SECS=30
T0=$(date +%s%3N)

say() { printf '%s: %s\n' "$FAULTS_NAME" "$*"; }
# shellcheck source=tests/ops/lib.sh
source "$REPO/tests/ops/lib.sh"

stack() { "$STACK" "$@" >>"$FAULTS_DIR/stack.log" 2>&1; }
pid_of() { cat "$FAULTS_DIR/run/$1.pid" 2>/dev/null; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
# metric ADDR NAME LABEL: the sum of a family's samples whose labels contain LABEL (0 when none).
metric() {
	curl -s --max-time 5 "http://$1/metrics" | awk -v n="$2" -v l="$3" '($1 == n || index($1, n "{") == 1) && index($1, l) { s += $2 } END { print s + 0 }'
}

# soak_start SECONDS: the soak's load (build/vxsoak with SOAK_COMPONENTS=none: its HTTP clients, Kafka
# producer and ledger, no kills) for SECONDS, in the background; returns once the load runs.
SOAK_PID=
soak_start() {
	say "the soak's load for $1 s, no kills (build/vxsoak, SOAK_COMPONENTS=none); faults from here"
	SOAK_COMPONENTS=none MIN_KILLS=0 DURATION=$1 SOAK_CRASH_POINTS= SOAK_GREMLIN_DELAY_MS=0 \
		SOAK_HTTP_THREADS=${FAULTS_HTTP_THREADS:-8} SOAK_HTTP_RATE=${FAULTS_HTTP_RATE:-20} \
		SOAK_KAFKA_RATE=${FAULTS_KAFKA_RATE:-20} SOAK_HTTP_ATTEMPTS=80 SOAK_REPO=$REPO SOAK_QUIESCE_SECS=120 \
		"$REPO/build/vxsoak" run >"$OUT/vxsoak.out" 2>>"$FAULTS_DIR/log/vxsoak.log" &
	SOAK_PID=$!
	for ((i = 0; i < 600; i++)); do
		grep -q 'load and chaos for' "$OUT/vxsoak.out" && return 0
		kill -0 "$SOAK_PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$OUT/vxsoak.out" >&2
	abort "vxsoak did not start its load"
}
# soak_check WHAT: waits for the soak to end its load, settle and run its five checks; WHAT names
# the faults it ran through.
soak_check() {
	local rc
	say "waiting for the soak to end its load, settle and check"
	wait "$SOAK_PID"
	rc=$?
	SOAK_PID=
	sed -n '/======== soak report/,$p' "$OUT/vxsoak.out"
	grep 'VIOLATION' "$OUT/vxsoak.out" | head -n 20
	check "$((rc == 0))" "the soak's checks after $1: exit $rc ($(grep -o 'RESULT.*' "$OUT/vxsoak.out" | tr -s ' '))"
}

# faults_up: a fresh stack (wiped first), its services up.
faults_up() {
	for f in "$REPO/build/vxsoak" "$REPO/build/gateway" "$REPO/build/order-svc" "$REPO/build/inventory-svc"; do
		[[ -x $f ]] || abort "no $f (run: make all build/vxsoak)"
	done
	mkdir -p "$FAULTS_DIR"
	: >"$FAULTS_DIR/stack.log"
	say "a fresh stack in $FAULTS_DIR (Kafka :$VX_BROKER_PORT, PostgreSQL :$VX_PG_PORT, gateway $GATEWAY_HTTP_ADDR)"
	stack down
	declare -F faults_before_up >/dev/null && faults_before_up
	stack up && stack services-up || {
		tail -n 30 "$FAULTS_DIR/stack.log" >&2
		abort "the stack did not come up (log: $FAULTS_DIR/stack.log)"
	}
	mkdir -p "$OUT"
}

# shellcheck disable=SC2317 # called by the EXIT trap
faults_exit() {
	local rc=$?
	trap - EXIT INT TERM
	[[ -n $SOAK_PID ]] && kill "$SOAK_PID" 2>/dev/null && wait "$SOAK_PID" 2>/dev/null
	declare -F faults_cleanup >/dev/null && faults_cleanup
	stack down || say "warning: deploy/stack.sh down failed (see $FAULTS_DIR/stack.log)"
	declare -F faults_after_down >/dev/null && faults_after_down
	((${#FAILS[@]} == 0 && rc == 0)) || rc=1
	say "$( ((rc == 0)) && echo PASS || echo "FAIL (${#FAILS[@]}: $(printf '%s; ' "${FAILS[@]}"))") in $(secs_since "$T0") s; data and logs in $FAULTS_DIR"
	exit "$rc"
}
trap faults_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
