#!/usr/bin/env bash
# faults.sh: `make faults`. The faults of issue 17, one after the other on one stack of its own, each
# with checks that nothing accepted is lost and nothing is applied twice:
#   1. connections: 2,000 idle TCP connections and 20 clients trickling a body beside a well-behaved
#      POST /orders, which is answered; the gateway's memory before, during and after; tricklers cut
#      after GATEWAY_BODY_TIMEOUT_MS, idle ones after GATEWAY_IDLE_TIMEOUT_S; then the gateway at its
#      connection limit (tests/faults/conns.py);
#   2. under the soak's load (build/vxsoak with SOAK_COMPONENTS=none: its HTTP clients, Kafka
#      producer and ledger, no kills), PostgreSQL refuses writes (default_transaction_read_only) for
#      FAULTS_READONLY_S: the services retry the same calls (valerix_apply_retries_total{reason=
#      "read_only"} grows) and dead-letter nothing valid;
#   3. then the broker is away for FAULTS_BROKER_AWAY_S: every POST /orders is answered 503
#      problem+json at once, the gateway's memory stays flat, and order-svc and inventory-svc, sent
#      SIGTERM meanwhile, exit within VX_SHUTDOWN_TIMEOUT_MS; the broker and the services come back;
#   4. the soak settles and runs its five checks on the ledger, the databases and the topics: every
#      accepted order has one final outcome, stock adds up, nothing applied twice, the dead-letter
#      topics hold only the malformed commands it sent, every client got the same answer each time.
# Not here: a full disk (tests/faults/disk.sh, `make faults-disk`).
#
# Its own stack (data in $VX_DATA_DIR/faults, wiped first; ports FAULTS_BROKER_PORT [19192],
# FAULTS_CONTROLLER_PORT [19193], FAULTS_PG_PORT [55452], FAULTS_HTTP_PORT [18490] for the gateway,
# +1 order-svc, +2 inventory-svc), brought down on every exit path; the data stays for a look.
# Invariant: every check prints what it compared; any failure makes the exit status 1, and a part
# that cannot start is a failure, never a skip.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 1

FAULTS_DIR=$(realpath -m "${FAULTS_DIR:-${VX_DATA_DIR:-$REPO/var}/faults}")
FAULTS_READONLY_S=${FAULTS_READONLY_S:-20}
FAULTS_BROKER_AWAY_S=${FAULTS_BROKER_AWAY_S:-120}
FAULTS_HTTP_PORT=${FAULTS_HTTP_PORT:-18490}
export VX_DATA_DIR=$FAULTS_DIR
export VX_KAFKA_LIBS=${VX_KAFKA_LIBS:-$REPO/var/kafka/libs}
export VX_BROKER_PORT=${FAULTS_BROKER_PORT:-19192} VX_CONTROLLER_PORT=${FAULTS_CONTROLLER_PORT:-19193}
export VX_PG_PORT=${FAULTS_PG_PORT:-55452}
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

say() { printf 'faults: %s\n' "$*"; }
# shellcheck source=tests/ops/lib.sh
source "$REPO/tests/ops/lib.sh"

stack() { "$STACK" "$@" >>"$FAULTS_DIR/stack.log" 2>&1; }
pid_of() { cat "$FAULTS_DIR/run/$1.pid" 2>/dev/null; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
# metric ADDR NAME LABEL: the sum of a family's samples whose labels contain LABEL (0 when none).
metric() {
	curl -s --max-time 5 "http://$1/metrics" | awk -v n="$2" -v l="$3" '($1 == n || index($1, n "{") == 1) && index($1, l) { s += $2 } END { print s + 0 }'
}

SOAK_PID=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[[ -n $SOAK_PID ]] && kill "$SOAK_PID" 2>/dev/null && wait "$SOAK_PID" 2>/dev/null
	"${PSQL[@]}" -d "$PG_URL/postgres" -c "ALTER SYSTEM RESET default_transaction_read_only" -c "SELECT pg_reload_conf()" \
		>/dev/null 2>&1
	stack down || say "warning: deploy/stack.sh down failed (see $FAULTS_DIR/stack.log)"
	((${#FAILS[@]} == 0 && rc == 0)) || rc=1
	say "$( ((rc == 0)) && echo PASS || echo "FAIL (${#FAILS[@]}: $(printf '%s; ' "${FAILS[@]}"))") in $(secs_since "$T0") s; data and logs in $FAULTS_DIR"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for f in "$REPO/build/vxsoak" "$REPO/build/gateway" "$REPO/build/order-svc" "$REPO/build/inventory-svc"; do
	[[ -x $f ]] || abort "no $f (run: make all build/vxsoak)"
done
mkdir -p "$FAULTS_DIR"
: >"$FAULTS_DIR/stack.log"
say "a fresh stack in $FAULTS_DIR (Kafka :$VX_BROKER_PORT, PostgreSQL :$VX_PG_PORT, gateway $GATEWAY_HTTP_ADDR)"
stack wipe && stack up && stack services-up || {
	tail -n 30 "$FAULTS_DIR/stack.log" >&2
	abort "the stack did not come up (log: $FAULTS_DIR/stack.log)"
}
mkdir -p "$OUT"

# ---- 1. connections -------------------------------------------------------------------------------
say "connections: 2000 idle and 20 trickling a body beside a well-behaved POST /orders"
if python3 tests/faults/conns.py flood "$GATEWAY_HTTP_ADDR" "$(pid_of gateway)" 2000 20 "$GATEWAY_IDLE_TIMEOUT_S" \
	"$GATEWAY_BODY_TIMEOUT_MS" >"$OUT/flood.json" 2>"$OUT/flood.err"; then
	read -r before open after post_ms cut idle_s < <(jq -r '"\(.rss_before_kib) \(.rss_open_kib) \(.rss_after_kib) \(.post_ms) \(.slow_cut_s_max) \(.idle_closed_s_max)"' "$OUT/flood.json")
	check "$((open - before < 65536 && after - before < 65536))" \
		"connections: POST /orders answered $(jq -r .post_status "$OUT/flood.json") in $post_ms ms beside 2000 idle + 20 trickling; gateway RSS $before KiB before, $open with them open, $after after (bound: +64 MiB); tricklers cut after <= $cut s, idle ones closed after <= $idle_s s"
else
	fail "connections: $(cat "$OUT/flood.err") $(cat "$OUT/flood.json")"
fi
say "connections: the gateway restarted with GATEWAY_MAX_CONNECTIONS=256, then 306 idle connections"
stack stop gateway
if GATEWAY_MAX_CONNECTIONS=256 stack start gateway &&
	python3 tests/faults/conns.py limit "$GATEWAY_HTTP_ADDR" 256 "$GATEWAY_IDLE_TIMEOUT_S" >"$OUT/limit.json" 2>"$OUT/limit.err"; then
	pass "connection limit: past 256 a new request waits unanswered ($(jq -c .at_limit "$OUT/limit.json")), none is closed by the gateway ($(jq .closed_by_gateway "$OUT/limit.json")); answered again $(jq .after.answered_after_s "$OUT/limit.json") s after the idle ones left"
else
	fail "connection limit: $(cat "$OUT/limit.err") $(cat "$OUT/limit.json" 2>/dev/null)"
fi
stack stop gateway
stack start gateway || abort "the gateway did not start again"

# ---- 2-4. the soak's load, PostgreSQL read-only, the broker away, the soak's checks ----------------
LOAD_S=$((5 + FAULTS_READONLY_S + 10 + FAULTS_BROKER_AWAY_S + 30))
say "the soak's load for $LOAD_S s, no kills (build/vxsoak, SOAK_COMPONENTS=none); faults from here"
SOAK_COMPONENTS=none MIN_KILLS=0 DURATION=$LOAD_S SOAK_CRASH_POINTS= SOAK_GREMLIN_DELAY_MS=0 \
	SOAK_HTTP_THREADS=${FAULTS_HTTP_THREADS:-8} SOAK_HTTP_RATE=${FAULTS_HTTP_RATE:-20} SOAK_KAFKA_RATE=${FAULTS_KAFKA_RATE:-20} \
	SOAK_HTTP_ATTEMPTS=80 SOAK_REPO=$REPO SOAK_QUIESCE_SECS=120 \
	"$REPO/build/vxsoak" run >"$OUT/vxsoak.out" 2>>"$FAULTS_DIR/log/vxsoak.log" &
SOAK_PID=$!
for ((i = 0; i < 600; i++)); do
	grep -q 'load and chaos for' "$OUT/vxsoak.out" && break
	kill -0 "$SOAK_PID" 2>/dev/null || break
	sleep 0.1
done
grep -q 'load and chaos for' "$OUT/vxsoak.out" || {
	cat "$OUT/vxsoak.out" >&2
	abort "vxsoak did not start its load"
}
sleep 5

# 2. PostgreSQL refuses writes.
ro_before=$(($(metric "$ORDERS_HTTP_ADDR" valerix_apply_retries_total 'reason="read_only"') + $(metric "$INVENTORY_HTTP_ADDR" valerix_apply_retries_total 'reason="read_only"')))
dl_before=$(($(metric "$ORDERS_HTTP_ADDR" valerix_dead_letters_total 'reason="processing_error"') + $(metric "$INVENTORY_HTTP_ADDR" valerix_dead_letters_total 'reason="processing_error"')))
say "PostgreSQL read-only for $FAULTS_READONLY_S s (ALTER SYSTEM SET default_transaction_read_only = on)"
sql postgres "ALTER SYSTEM SET default_transaction_read_only = on" >/dev/null && sql postgres "SELECT pg_reload_conf()" >/dev/null ||
	abort "cannot make PostgreSQL read-only"
sleep "$FAULTS_READONLY_S"
ro_health=$(curl -s --max-time 5 "http://$ORDERS_HTTP_ADDR/health" | jq -c '{status, held}')
sql postgres "ALTER SYSTEM RESET default_transaction_read_only" >/dev/null && sql postgres "SELECT pg_reload_conf()" >/dev/null ||
	abort "cannot make PostgreSQL writable again"
sleep 3
ro_after=$(($(metric "$ORDERS_HTTP_ADDR" valerix_apply_retries_total 'reason="read_only"') + $(metric "$INVENTORY_HTTP_ADDR" valerix_apply_retries_total 'reason="read_only"')))
dl_after=$(($(metric "$ORDERS_HTTP_ADDR" valerix_dead_letters_total 'reason="processing_error"') + $(metric "$INVENTORY_HTTP_ADDR" valerix_dead_letters_total 'reason="processing_error"')))
check "$((ro_after > ro_before && dl_after == dl_before))" \
	"read-only PostgreSQL: the services retried $((ro_after - ro_before)) calls (valerix_apply_retries_total{reason=\"read_only\"}), dead-lettered $((dl_after - dl_before)) for processing_error; order-svc /health at the end of it: $ro_health"
sleep 7

# 3. The broker away.
GW=$(pid_of gateway)
rss_before=$(rss_kib "$GW")
say "the broker away for $FAULTS_BROKER_AWAY_S s (deploy/stack.sh stop kafka); POST /orders every second meanwhile"
t_down=$(now_ms)
stack stop kafka || abort "cannot stop the broker"
sleep 3
: >"$OUT/outage.txt"
n=0 rss_max=$rss_before stopped=0
while (($(now_ms) - t_down < FAULTS_BROKER_AWAY_S * 1000)); do
	n=$((n + 1))
	curl -s -o "$OUT/outage_body.json" --max-time 10 -w '%{http_code} %{time_total} %{content_type}\n' -X POST \
		"http://$GATEWAY_HTTP_ADDR/orders" -H 'Content-Type: application/json' -H "Idempotency-Key: fault-b503-$n" \
		-d '{"customer_id":"fault-probe","items":[{"product_id":"FAULT-NONE","quantity":1}]}' >>"$OUT/outage.txt"
	r=$(rss_kib "$GW")
	((r > rss_max)) && rss_max=$r
	# SIGTERM to both consuming services while the broker is gone: each must exit within the bound.
	if ((!stopped && $(now_ms) - t_down > (FAULTS_BROKER_AWAY_S - 30) * 1000)); then
		stopped=1
		for s in order-svc inventory-svc; do
			p=$(pid_of "$s")
			kill -TERM "$p"
			t=$(now_ms)
			while kill -0 "$p" 2>/dev/null && (($(now_ms) - t < VX_SHUTDOWN_TIMEOUT_MS + 20000)); do sleep 0.05; done
			ms=$(($(now_ms) - t))
			check "$((ms <= VX_SHUTDOWN_TIMEOUT_MS + 5000))" "$s with the broker gone: SIGTERM to exit $ms ms (bound VX_SHUTDOWN_TIMEOUT_MS $VX_SHUTDOWN_TIMEOUT_MS + 5000)"
			kill -KILL "$p" 2>/dev/null
			rm -f "$FAULTS_DIR/run/$s.pid"
		done
	fi
	sleep 1
done
rss_end=$(rss_kib "$GW")
stack start kafka || abort "the broker did not come back"
say "the broker is back after $(secs_since "$t_down") s; starting order-svc and inventory-svc"
stack start inventory-svc && stack start order-svc || abort "the services did not start again"
awk -v n="$n" '$1 == 503 && $3 ~ /problem\+json/ { ok++ } { if ($2 > max) max = $2; s += $2 } END { printf "%d %d %.1f %.1f\n", ok, NR, s / NR * 1000, max * 1000 }' \
	"$OUT/outage.txt" >"$OUT/outage.sum"
read -r ok total avg_ms max_ms <"$OUT/outage.sum"
check "$((ok == total && total > 0))" "broker away: $ok of $total POST /orders answered 503 problem+json, $avg_ms ms on average, $max_ms ms at most"
check "$(awk -v m="$max_ms" 'BEGIN { print (m < 1000) ? 1 : 0 }')" "broker away: every 503 within 1 s (at most $max_ms ms)"
check "$((rss_max - rss_before < 32768))" "broker away: gateway RSS $rss_before KiB before, $rss_max at most during, $rss_end at the end (bound: +32 MiB)"

# 4. The soak's checks.
say "waiting for the soak to end its load, settle and check"
wait "$SOAK_PID"
rc=$?
SOAK_PID=
sed -n '/======== soak report/,$p' "$OUT/vxsoak.out"
grep 'VIOLATION' "$OUT/vxsoak.out" | head -n 20
r=$(rss_kib "$(pid_of gateway)")
check "$((rc == 0))" "the soak's checks after both faults: exit $rc ($(grep -o 'RESULT.*' "$OUT/vxsoak.out" | tr -s ' ')); gateway RSS $r KiB after"
