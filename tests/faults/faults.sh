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
#      "read_only"} grows) and dead-letter nothing valid; then it refuses them with 42501
#      insufficient_privilege (revoked rights) for FAULTS_DENIED_S: likewise (reason "privileges");
#   3. then the broker is away for FAULTS_BROKER_AWAY_S: every POST /orders is answered 503
#      problem+json at once, the gateway's memory stays flat, and order-svc (5 s in) and inventory-svc
#      (30 s before the end), sent SIGTERM meanwhile, exit within VX_SHUTDOWN_TIMEOUT_MS; the broker
#      and the services come back;
#   4. the soak settles and runs its five checks on the ledger, the databases and the topics: every
#      accepted order has one final outcome, stock adds up, nothing applied twice, the dead-letter
#      topics hold only the malformed commands it sent, every client got the same answer each time;
#   5. the broker stopped again, the gateway sent SIGTERM exits within VX_SHUTDOWN_TIMEOUT_MS.
# Not here: a full disk (tests/faults/disk.sh, `make faults-disk`).
#
# Its own stack (data in $VX_DATA_DIR/faults, wiped first; ports FAULTS_BROKER_PORT [19192],
# FAULTS_CONTROLLER_PORT [19193], FAULTS_PG_PORT [25452], FAULTS_HTTP_PORT [18490] for the gateway,
# +1 order-svc, +2 inventory-svc), brought down on every exit path; the data stays for a look.
# Invariant: every check prints what it compared; any failure makes the exit status 1, and a part
# that cannot start is a failure, never a skip.
FAULTS_NAME=faults
FAULTS_READONLY_S=${FAULTS_READONLY_S:-20}
FAULTS_BROKER_AWAY_S=${FAULTS_BROKER_AWAY_S:-120}
FAULTS_DENIED_S=${FAULTS_DENIED_S:-15}
# shellcheck disable=SC2317 # called by faults.sh and the EXIT trap
undeny() {
	sql inventory "DROP TRIGGER IF EXISTS fault_denied ON products; DROP FUNCTION IF EXISTS fault_denied()" >/dev/null &&
		sql orders "DROP TRIGGER IF EXISTS fault_denied ON orders; DROP FUNCTION IF EXISTS fault_denied()" >/dev/null
}
# shellcheck disable=SC2317 # called by the EXIT trap
faults_cleanup() {
	undeny 2>/dev/null
	"${PSQL[@]}" -d "$PG_URL/postgres" -c "ALTER SYSTEM RESET default_transaction_read_only" -c "SELECT pg_reload_conf()" \
		>/dev/null 2>&1
}
faults_before_up() { stack wipe; }
# shellcheck source=tests/faults/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

faults_up

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
soak_start $((5 + FAULTS_READONLY_S + 3 + FAULTS_DENIED_S + 10 + FAULTS_BROKER_AWAY_S + 30))
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

# 2b. PostgreSQL refuses the services' role: revoked rights answer 42501 insufficient_privilege.
# The services connect as a superuser here, which no REVOKE can stop, so a statement trigger on the
# tables every apply call writes raises that very SQLSTATE, as a revoked right would (before
# vx_pg_fault, 42501 split the calls and dead-lettered every valid command in them).
say "PostgreSQL refusing the services' writes for $FAULTS_DENIED_S s with 42501 insufficient_privilege (as revoked rights)"
pv_before=$(($(metric "$ORDERS_HTTP_ADDR" valerix_apply_retries_total 'reason="privileges"') + $(metric "$INVENTORY_HTTP_ADDR" valerix_apply_retries_total 'reason="privileges"')))
for t in inventory:products orders:orders; do
	sql "${t%%:*}" "CREATE OR REPLACE FUNCTION fault_denied() RETURNS trigger LANGUAGE plpgsql AS \$\$
	                BEGIN RAISE EXCEPTION 'permission denied for table % (faults.sh)', TG_TABLE_NAME
	                USING ERRCODE = 'insufficient_privilege'; END \$\$" >/dev/null &&
		sql "${t%%:*}" "CREATE TRIGGER fault_denied BEFORE INSERT OR UPDATE ON ${t#*:} EXECUTE FUNCTION fault_denied()" >/dev/null ||
		abort "cannot install the 42501 trigger on ${t#*:}"
done
sleep "$FAULTS_DENIED_S"
undeny
sleep 3
pv_after=$(($(metric "$ORDERS_HTTP_ADDR" valerix_apply_retries_total 'reason="privileges"') + $(metric "$INVENTORY_HTTP_ADDR" valerix_apply_retries_total 'reason="privileges"')))
dl_after2=$(($(metric "$ORDERS_HTTP_ADDR" valerix_dead_letters_total 'reason="processing_error"') + $(metric "$INVENTORY_HTTP_ADDR" valerix_dead_letters_total 'reason="processing_error"')))
check "$((pv_after > pv_before && dl_after2 == dl_before))" \
	"42501 from PostgreSQL: the services retried $((pv_after - pv_before)) calls (valerix_apply_retries_total{reason=\"privileges\"}), dead-lettered $((dl_after2 - dl_before)) for processing_error"
sleep 7

# 3. The broker away.
GW=$(pid_of gateway)
rss_before=$(rss_kib "$GW")
say "the broker away for $FAULTS_BROKER_AWAY_S s (deploy/stack.sh stop kafka); POST /orders every second meanwhile"
t_down=$(now_ms)
stack stop kafka || abort "cannot stop the broker"
sleep 3
: >"$OUT/outage.txt"
n=0 rss_max=$rss_before
declare -A STOPPED=()
while (($(now_ms) - t_down < FAULTS_BROKER_AWAY_S * 1000)); do
	n=$((n + 1))
	curl -s -o "$OUT/outage_body.json" --max-time 10 -w '%{http_code} %{time_total} %{content_type}\n' -X POST \
		"http://$GATEWAY_HTTP_ADDR/orders" -H 'Content-Type: application/json' -H "Idempotency-Key: fault-b503-$n" \
		-d '{"customer_id":"fault-probe","items":[{"product_id":"FAULT-NONE","quantity":1}]}' >>"$OUT/outage.txt"
	r=$(rss_kib "$GW")
	((r > rss_max)) && rss_max=$r
	# SIGTERM while the broker is gone: order-svc 5 s into the outage (its group coordinator just
	# lost: librdkafka's own close used to wait 35-47 s here), inventory-svc 30 s before its end.
	for s in order-svc inventory-svc; do
		[[ -n ${STOPPED[$s]:-} ]] && continue
		[[ $s == order-svc ]] && at=5 || at=$((FAULTS_BROKER_AWAY_S - 30))
		(($(now_ms) - t_down >= at * 1000)) || continue
		STOPPED[$s]=1
		p=$(pid_of "$s")
		kill -TERM "$p"
		t=$(now_ms)
		while kill -0 "$p" 2>/dev/null && (($(now_ms) - t < VX_SHUTDOWN_TIMEOUT_MS + 20000)); do sleep 0.05; done
		ms=$(($(now_ms) - t))
		check "$((ms <= VX_SHUTDOWN_TIMEOUT_MS + 5000))" "$s, $(((t - t_down) / 1000)) s into the outage: SIGTERM to exit in $ms ms (bound: VX_SHUTDOWN_TIMEOUT_MS $VX_SHUTDOWN_TIMEOUT_MS + 5000)$(grep -q consumer_close_abandoned "$FAULTS_DIR/log/$s.log" && echo ', its group close abandoned at the bound')"
		kill -KILL "$p" 2>/dev/null
		rm -f "$FAULTS_DIR/run/$s.pid"
	done
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
soak_check "PostgreSQL read-only, 42501 and the broker away"
r=$(rss_kib "$(pid_of gateway)")
say "gateway RSS $r KiB at the end"

# 5. The gateway's stop with the broker gone (its reply and stream consumers, its producer).
stack stop kafka || abort "cannot stop the broker"
sleep 3
p=$(pid_of gateway)
kill -TERM "$p"
t=$(now_ms)
while kill -0 "$p" 2>/dev/null && (($(now_ms) - t < VX_SHUTDOWN_TIMEOUT_MS + 20000)); do sleep 0.05; done
ms=$(($(now_ms) - t))
check "$((ms <= VX_SHUTDOWN_TIMEOUT_MS + 5000))" "gateway with the broker gone: SIGTERM to exit in $ms ms (bound: VX_SHUTDOWN_TIMEOUT_MS $VX_SHUTDOWN_TIMEOUT_MS + 5000)"
kill -KILL "$p" 2>/dev/null
rm -f "$FAULTS_DIR/run/gateway.pid"
