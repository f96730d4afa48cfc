#!/usr/bin/env bash
# drill.sh: `make ops`. A disaster drill of deploy/backup.sh on the real broker and database: orders
# flow, a backup is taken while they flow, more orders, cancels and restocks follow, the truth is
# written down, then both databases are destroyed, the backup is restored and the services roll
# forward by replaying Kafka. Nothing accepted may be lost and nothing may be applied twice.
#
# A stack of its own: databases inventory_ops and orders_ops (recreated), topics ops.<run>.*, groups
# ops.<run>.*, ports 18501-18503, backups under var/ops/backup; the shared broker and PostgreSQL
# server of deploy/stack.sh up. Every service it starts is stopped on every exit path.
#
# Invariant: every check prints what it compared, with counts; any failure makes the exit status 1,
# and a part that cannot start is a failure, never a skip.
#
# Settings: OPS_QUIET_SECS [60] how long to wait for the system to go quiet; VXADMIN [build/vxadmin];
# OPS_KEEP [0] 1: keep the run's files in var/ops/ and its topics (kept anyway after a failure; the
# topics are deleted only where build/vxbench is built, and keep 6 hours of messages otherwise).
set -uo pipefail
export LC_ALL=C # sort, join and diff order lines as PostgreSQL (C.UTF-8) does

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 1

OPS_QUIET_SECS=${OPS_QUIET_SECS:-60}
OPS_KEEP=${OPS_KEEP:-0}
export VXADMIN=${VXADMIN:-$REPO/build/vxadmin}
BROKER=127.0.0.1:${VX_BROKER_PORT:-9092}
PG_URL=postgresql://valerix@127.0.0.1:${VX_PG_PORT:-55432}
PSQL=(env PGOPTIONS='-c client_min_messages=warning' psql -X -q -At -v ON_ERROR_STOP=1)
OUT=$(realpath -m "${VX_DATA_DIR:-$REPO/var}")/ops
RUN=$(date -u +%Y%m%d%H%M%S)-$$
P=ops.$RUN
STOP_SECS=30
T0=$(date +%s%3N)

# ------------------------------------------------------------------------------------------ helpers

say() { printf 'ops: %s\n' "$*"; }
# shellcheck source=tests/ops/lib.sh
source "$REPO/tests/ops/lib.sh"

services_up() {
	start inventory-svc "$INVENTORY_HTTP_ADDR"
	start order-svc "$ORDERS_HTTP_ADDR"
	start gateway "$GATEWAY_HTTP_ADDR"
}
services_down() {
	local name
	for name in gateway order-svc inventory-svc; do stop "$name"; done
}

BG=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[[ -n $BG ]] && kill "$BG" 2>/dev/null && wait "$BG" 2>/dev/null
	services_down
	((${#FAILS[@]} == 0 && rc == 0)) || rc=1
	# what the run wrote stays for a look after a failure
	if ! ((OPS_KEEP || rc)); then
		rm -rf "$OUT/damaged" "$OUT"/*.txt "$OUT"/*.jsonl "$OUT"/*.bg
		# the run's topics too, where build/vxbench (make build/vxbench) is there to delete them
		[[ -x build/vxbench && -n ${ORDERS_DLQ_TOPIC:-} ]] && build/vxbench drop-topics "$INVENTORY_COMMANDS_TOPIC" \
			"$INVENTORY_EVENTS_TOPIC" "$INVENTORY_DLQ_TOPIC" "$ORDERS_COMMANDS_TOPIC" "$ORDERS_RESULTS_TOPIC" \
			"$ORDERS_DLQ_TOPIC" >/dev/null 2>&1
	fi
	say "$( ((rc == 0)) && echo PASS || echo "FAIL (${#FAILS[@]}: $(printf '%s; ' "${FAILS[@]}"))") in $(secs_since "$T0") s"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# produce TOPIC: kcat, one `key|json` line per message from stdin; each line is kept in sent.txt.
SENT=$OUT/sent.txt
produce() { tee -a "$SENT" | kcat -P -b "$BROKER" -t "$1" -K'|' || abort "kcat could not produce to $1"; }
# send TOPIC FILE: produce what a generator below wrote to FILE (a file, not a pipe: the generators
# count in this shell).
send() { produce "$1" <"$2"; }
# consume TOPIC FILE: the whole topic as it is now, one JSON value per line.
consume() { kcat -C -b "$BROKER" -t "$1" -o beginning -e -q -f '%s\n' >"$2" 2>/dev/null || abort "kcat could not read $1"; }

# Every order placed is written down as "id path phase" in orders.txt (path: gw or kcat; phase: 1
# before the backup, b during it, 2 after it).
ORDERS=$OUT/orders.txt
PHASE=1
NPROD=8
# an order's lines: 1 or 2 products of OPS-01..OPS-08, 1 to 3 units each
lines() {
	local a=$((RANDOM % NPROD + 1)) b=$((RANDOM % NPROD + 1))
	if ((a == b || RANDOM % 2)); then
		printf '[{"product_id":"OPS-%02d","quantity":%d}]' "$a" $((RANDOM % 3 + 1))
	else
		printf '[{"product_id":"OPS-%02d","quantity":%d},{"product_id":"OPS-%02d","quantity":%d}]' \
			"$a" $((RANDOM % 3 + 1)) "$b" $((RANDOM % 3 + 1))
	fi
}
# post_order KEY ITEMS WANT [NOTE]: POST /orders through the gateway; the answer's status must match
# WANT; the order is written down unless NOTE is "again" (a repeated POST).
GW_POSTS=0
GW_SENT=$OUT/gw_sent.txt
post_order() {
	local code body
	body=$(curl -s --max-time 15 -w '\n%{http_code}' -X POST "http://$GATEWAY_HTTP_ADDR/orders" \
		-H 'Content-Type: application/json' -H "Idempotency-Key: $1" \
		-d "{\"customer_id\":\"ops\",\"items\":$2}")
	code=${body##*$'\n'}
	body=${body%$'\n'*}
	GW_POSTS=$((GW_POSTS + 1))
	[[ $code =~ ^($3)$ ]] || {
		fail "gateway: POST /orders $1 answered $code, want $3: $body"
		return 1
	}
	[[ ${4:-} == again ]] && return 0
	printf '%s %s %s\n' "$1" "$3" "$2" >>"$GW_SENT"
	jq -r '.id // .order.id // empty' <<<"$body" | awk -v ph="$PHASE" '{ print $1, "gw", ph; exit }' >>"$ORDERS"
}
# gw_orders TAG N: N orders through the gateway (201), then one of an unknown product and one beyond
# any stock (409 both: rejections that do not depend on the order in which commands are applied).
gw_orders() {
	local i
	for ((i = 1; i <= $2; i++)); do post_order "$P-gw$1-$i" "$(lines)" 201; done
	post_order "$P-gw$1-none" '[{"product_id":"OPS-NONE","quantity":1}]' 409
	post_order "$P-gw$1-big" '[{"product_id":"OPS-01","quantity":1000000}]' 409
}
# kcat_orders TAG N: prints N PlaceOrders for orders.commands (key = idempotency key = order id), and
# the same two rejections.
kcat_orders() {
	local i id items
	for ((i = 1; i <= $2 + 2; i++)); do
		id=$P-k$1-$i
		echo "$id kcat $PHASE" >>"$ORDERS"
		case $i in
		$(($2 + 1))) items='[{"product_id":"OPS-NONE","quantity":2}]' ;;
		$(($2 + 2))) items='[{"product_id":"OPS-02","quantity":1000000}]' ;;
		*) items=$(lines) ;;
		esac
		printf '%s|{"type":"PlaceOrder","idempotency_key":"%s","order_id":"%s","customer_id":"ops","items":%s}\n' \
			"$id" "$id" "$id" "$items"
	done
}
# restock KEY PRODUCT QTY: prints a Restock for inventory.commands.
restock() {
	printf '%s|{"type":"Restock","idempotency_key":"%s","product_id":"%s","quantity":%d,"name":"Drill %s"}\n' \
		"$1" "$1" "$2" "$3" "$2"
}
# cancel N PHASE: cancels N CONFIRMED orders placed in PHASE, half with CancelOrder through kcat (key =
# the order id, as the contract says: the cancel lies behind its order in one partition, also when a
# restore replays them), half through the gateway's cancel route.
CANCELS=0
cancel() {
	local ids id i=0 code
	mapfile -t ids < <(sql orders_ops "SELECT id FROM orders WHERE status = 'CONFIRMED' AND id = ANY ('{$(
		awk -v ph="$2" '$3 == ph { printf "%s%s", s, $1; s = "," }' "$ORDERS")}') ORDER BY random() LIMIT $1")
	((${#ids[@]} == $1)) || abort "only ${#ids[@]} CONFIRMED orders to cancel, want $1"
	for id in "${ids[@]}"; do
		i=$((i + 1))
		CANCELS=$((CANCELS + 1))
		if ((i % 2)); then
			printf '%s|{"type":"CancelOrder","idempotency_key":"%s","order_id":"%s"}\n' \
				"$id" "$P-cancel-$CANCELS" "$id" | produce "$ORDERS_COMMANDS_TOPIC"
		else
			code=$(curl -s -o /dev/null --max-time 10 -w '%{http_code}' -X POST \
				"http://$GATEWAY_HTTP_ADDR/orders/$id/cancel" -H "Idempotency-Key: $P-cancel-$CANCELS")
			[[ $code == 202 ]] || fail "gateway: POST /orders/$id/cancel answered $code, want 202"
		fi
	done
}

# lag GROUP: the group's total lag (vxadmin lag), empty when it cannot be read.
lag() { "$VXADMIN" lag "$1" 2>/dev/null | awk -v g="$1" '$1 == g && NF == 6 { s += $6; n++ } END { if (n) print s }'; }

# quiet WHY: waits until every order placed exists and none is PENDING, no outbox row waits for Kafka,
# both groups have no lag, and nothing changed over two looks in a row.
quiet() {
	local t0 want have pend sig last="" li lo
	t0=$(now_ms)
	want=$(wc -l <"$ORDERS")
	while :; do
		have=$(sql orders_ops "SELECT count(*) FROM orders" 2>/dev/null)
		pend=$(sql orders_ops "SELECT count(*) FROM orders WHERE status = 'PENDING'" 2>/dev/null)
		li=$(lag "$INVENTORY_GROUP_ID")
		lo=$(lag "$ORDERS_GROUP_ID")
		sig="$have $pend $li $lo $(sql orders_ops "SELECT (SELECT count(*) FROM outbox_pending), (SELECT count(*) FROM outbox), (SELECT count(*) FROM orders o, ord_history(o))" 2>/dev/null | tr '|' ' ') $(sql inventory_ops "SELECT (SELECT count(*) FROM outbox_pending), (SELECT count(*) FROM outbox), (SELECT sum(stock) FROM products)" 2>/dev/null | tr '|' ' ')"
		if [[ $have == "$want" && $pend == 0 && $li == 0 && $lo == 0 && $sig == "$last" ]] &&
			[[ $(awk '{ print $5 + $8 }' <<<"$sig") == 0 ]]; then
			say "quiet $1: $have orders, none PENDING, no lag, no outbox row waiting ($(secs_since "$t0") s)"
			return 0
		fi
		last=$sig
		if (($(now_ms) - t0 > OPS_QUIET_SECS * 1000)); then
			fail "quiet $1: not quiet within $OPS_QUIET_SECS s: orders $have of $want, PENDING $pend, lag inventory-svc '$li' order-svc '$lo', outbox and counts: $sig"
			return 1
		fi
		sleep 0.5
	done
}

# truth FILE_PREFIX: what the system says now: orders (id, status, reason), stock, holds.
truth() {
	{ sql orders_ops "SELECT id, status, coalesce(reason, '-') FROM orders ORDER BY id" >"$1.orders.txt" &&
		sql inventory_ops "SELECT id, stock FROM products ORDER BY id" >"$1.stock.txt" &&
		sql inventory_ops "SELECT order_id, product_id, quantity FROM holds ORDER BY 1, 2" >"$1.holds.txt"; } ||
		abort "cannot read the truth from the databases"
}

# ------------------------------------------------------------------------------------------ set-up

mkdir -p "$OUT"
exec 8>>"$OUT/.lock"
flock -n 8 || {
	say "another drill is running (lock $OUT/.lock)" >&2
	exit 1
}
for f in build/inventory-svc build/order-svc build/gateway "$VXADMIN" deploy/backup.sh; do
	[[ -x $f ]] || abort "$f is missing; run make first"
done
for c in kcat jq psql curl; do
	command -v "$c" >/dev/null || abort "$c not found; run deploy/stack.sh deps"
done
"$VXADMIN" offsets --help >/dev/null 2>&1 || abort "$VXADMIN has no 'offsets' command (make build/vxadmin)"
"$VXADMIN" lag --help >/dev/null 2>&1 || abort "$VXADMIN has no 'lag' command (make build/vxadmin)"
rm -rf "$OUT/backup" "$OUT/damaged"
: >"$ORDERS"
: >"$SENT"
: >"$GW_SENT"
for n in inventory-svc order-svc gateway; do : >"$OUT/$n.log"; done

export KAFKA_BOOTSTRAP_SERVERS=$BROKER VX_LOG_LEVEL=warn VX_TOPIC_RETENTION_MS=21600000
export INVENTORY_COMMANDS_TOPIC=$P.inventory.commands INVENTORY_EVENTS_TOPIC=$P.inventory.events
export INVENTORY_DLQ_TOPIC=$P.inventory.dlq ORDERS_COMMANDS_TOPIC=$P.orders.commands
export ORDERS_RESULTS_TOPIC=$P.orders.results ORDERS_DLQ_TOPIC=$P.orders.dlq
export INVENTORY_GROUP_ID=$P.inventory-svc ORDERS_GROUP_ID=$P.order-svc
export INVENTORY_DB=$PG_URL/inventory_ops ORDERS_DB=$PG_URL/orders_ops
export INVENTORY_HTTP_ADDR=127.0.0.1:18501 ORDERS_HTTP_ADDR=127.0.0.1:18502 GATEWAY_HTTP_ADDR=127.0.0.1:18503
export INVENTORY_URL=http://$INVENTORY_HTTP_ADDR ORDERS_URL=http://$ORDERS_HTTP_ADDR
export VX_BACKUP_DIR=$OUT/backup VX_BACKUP_RETENTION_DAYS=7
unset VX_CRASH_POINTS VX_GREMLIN_DELAY_MS VX_GREMLIN_EVERY VX_GREMLIN_FRACTION VX_CHAOS_TOKEN

for db in inventory_ops orders_ops; do
	{ sql postgres "DROP DATABASE IF EXISTS $db WITH (FORCE)" && sql postgres "CREATE DATABASE $db"; } ||
		abort "cannot recreate database $db"
done
"$VXADMIN" topics >"$OUT/topics.log" 2>&1 || {
	cat "$OUT/topics.log" >&2
	abort "vxadmin topics could not create the topics $P.*"
}
say "stack: topics $P.*, databases inventory_ops and orders_ops, ports 18501-18503, backups in $VX_BACKUP_DIR"
services_up

# ------------------------------------------------------------------------------------------ before the backup

B=$OUT/batch.txt
for ((i = 1; i <= NPROD; i++)); do restock "$P-r1-$i" "$(printf OPS-%02d "$i")" 5000; done >"$B"
send "$INVENTORY_COMMANDS_TOPIC" "$B"
deadline=$(($(now_ms) + 30000))
until [[ $(sql inventory_ops "SELECT count(*) FROM products" 2>/dev/null) == "$NPROD" ]]; do
	(($(now_ms) < deadline)) || abort "the $NPROD products did not appear within 30 s"
	sleep 0.2
done
gw_orders 1 15
kcat_orders 1 40 >"$B" && send "$ORDERS_COMMANDS_TOPIC" "$B"
quiet "after the first orders" || exit 1
cancel 8 1
for i in 1 2 3 4; do restock "$P-r2-$i" "OPS-0$i" 100; done >"$B" && send "$INVENTORY_COMMANDS_TOPIC" "$B"
quiet "after the first cancels" || exit 1

# ------------------------------------------------------------------------------------------ the backup, under load

# Orders and restocks keep arriving while the backup runs: 10 rounds of 10 PlaceOrders and a Restock,
# 0.2 s apart.
(
	PHASE=b
	for r in 1 2 3 4 5 6 7 8 9 10; do
		{ kcat_orders "b$r" 10 && restock "$P-rb-$r" "OPS-0$((r % NPROD + 1))" 50; } >"$B.bg"
		send "$ORDERS_COMMANDS_TOPIC" <(grep PlaceOrder "$B.bg")
		send "$INVENTORY_COMMANDS_TOPIC" <(grep Restock "$B.bg")
		sleep 0.2
	done
) &
BG=$!
sleep 0.3
t_backup=$(now_ms)
if deploy/backup.sh backup >"$OUT/backup.log" 2>&1; then
	made=("$VX_BACKUP_DIR"/*/)
	BACKUP=${made[-1]%/}
	pass "backup while orders flow: $(basename "$BACKUP") in $(secs_since "$t_backup") s," \
		"$(du -sh "$BACKUP" | cut -f1) ($(jq -r '[.services[] | "\(.service) \(.bytes) bytes"] | join(", ")' "$BACKUP/manifest.json"))"
else
	cat "$OUT/backup.log" >&2
	abort "deploy/backup.sh backup failed"
fi
wait "$BG" || abort "the load during the backup failed"
BG=

# ------------------------------------------------------------------------------------------ after the backup

PHASE=2
gw_orders 2 15
kcat_orders 2 60 >"$B" && send "$ORDERS_COMMANDS_TOPIC" "$B"
# the same commands again, verbatim: duplicates, which must change nothing
grep PlaceOrder "$SENT" | shuf -n 20 >"$B" && send "$ORDERS_COMMANDS_TOPIC" "$B"
grep '"Restock"' "$SENT" | shuf -n 4 >"$B" && send "$INVENTORY_COMMANDS_TOPIC" "$B"
# (an order cancelled since answers 409 now)
shuf -n 5 "$GW_SENT" | while read -r key code items; do
	post_order "$key" "$items" "$code|409" again </dev/null
done
quiet "after the orders that followed the backup" || exit 1
# orders placed after the backup, cancelled after it too: the restore replays both commands
cancel 12 2
{ for i in 5 6 7 8; do restock "$P-r3-$i" "OPS-0$i" 25; done; restock "$P-r3-new" OPS-09 10; } >"$B" &&
	send "$INVENTORY_COMMANDS_TOPIC" "$B"
quiet "before the disaster" || exit 1

truth "$OUT/before"
N_ORDERS=$(wc -l <"$OUT/before.orders.txt")
say "before the disaster: $N_ORDERS orders ($(awk -F'|' '{ print $2 }' "$OUT/before.orders.txt" | sort | uniq -c |
	awk '{ printf "%s%s %s", s, $1, $2; s = ", " }')); $GW_POSTS POSTs to the gateway, $CANCELS cancels," \
	"$(grep -c '"Restock"' "$SENT") restocks and $(grep -c PlaceOrder "$SENT") PlaceOrders through kcat" \
	"(duplicates included); $(wc -l <"$OUT/before.stock.txt") products, $(wc -l <"$OUT/before.holds.txt") holds"

# ------------------------------------------------------------------------------------------ restore refusals

if out=$(deploy/backup.sh restore 2>&1); then
	fail "restore while the services run: it went ahead: $out"
else
	if grep -q 'running' <<<"$out"; then
		pass "restore while the services run: refused ($(tail -n 1 <<<"$out" | cut -c1-100)...)"
	else
		fail "restore while the services run: refused without saying why: $out"
	fi
fi
services_down
mkdir -p "$OUT/damaged"
cp -a "$BACKUP" "$OUT/damaged/"
DAMAGED=$OUT/damaged/$(basename "$BACKUP")
printf 'X' | dd of="$DAMAGED/inventory-svc.dump" bs=1 seek=100 conv=notrunc status=none
if out=$(VX_BACKUP_DIR=$OUT/damaged deploy/backup.sh restore 2>&1); then
	fail "restore of a damaged backup: it went ahead"
elif grep -q sha256 <<<"$out" && [[ $(sql orders_ops "SELECT count(*) FROM orders") == "$N_ORDERS" ]]; then
	pass "restore of a damaged backup: refused (sha256), the databases untouched"
else
	fail "restore of a damaged backup: $out"
fi

# ------------------------------------------------------------------------------------------ the disaster and the restore

for db in inventory_ops orders_ops; do
	sql postgres "DROP DATABASE $db WITH (FORCE)" || abort "could not drop database $db"
done
say "disaster: databases inventory_ops and orders_ops dropped"
t_restore=$(now_ms)
if deploy/backup.sh restore >"$OUT/restore.log" 2>&1; then
	pass "restore of $(basename "$BACKUP") in $(secs_since "$t_restore") s"
else
	cat "$OUT/restore.log" >&2
	abort "deploy/backup.sh restore failed"
fi
for g in inventory-svc order-svc; do
	group=$([[ $g == inventory-svc ]] && echo "$INVENTORY_GROUP_ID" || echo "$ORDERS_GROUP_ID")
	if diff <(sort "$BACKUP/$g.offsets") <("$VXADMIN" offsets "$group" | sort) >/dev/null; then
		pass "group $group is at the backup's $(wc -l <"$BACKUP/$g.offsets") offsets; $(lag "$group") messages to replay"
	else
		fail "group $group is not at the backup's offsets: $(diff <(sort "$BACKUP/$g.offsets") <("$VXADMIN" offsets "$group" | sort) | tr '\n' ' ')"
	fi
done
t_roll=$(now_ms)
services_up
quiet "after the restore" && say "rolled forward in $(secs_since "$t_roll") s from the start of the services"
truth "$OUT/after"

# ------------------------------------------------------------------------------------------ checks

# 1. every order, with the final status it had before the disaster
d=$(join -t'|' -a1 -a2 -e'(none)' -o 0,1.2,1.3,2.2,2.3 "$OUT/before.orders.txt" "$OUT/after.orders.txt" |
	awk -F'|' '$2 != $4 || $3 != $5 { printf "%s%s %s/%s -> %s/%s", n++ ? "; " : "", $1, $2, $3, $4, $5 } END { print "" }')
if [[ -z $d ]]; then
	pass "orders: all $N_ORDERS have the status and reason they had before the disaster"
else
	fail "orders: $(tr ';' '\n' <<<"$d" | wc -l) of $N_ORDERS differ from before the disaster (before -> after): $(cut -c1-600 <<<"$d")"
fi

# 2. stock per product and what each order holds, as before
for what in stock holds; do
	d=$(diff "$OUT/before.$what.txt" "$OUT/after.$what.txt")
	if [[ -z $d ]]; then
		pass "$what: all $(wc -l <"$OUT/after.$what.txt") rows as before the disaster"
	else
		fail "$what: differ from before the disaster: $(head -n 8 <<<"$d" | tr '\n' ' ')"
	fi
done

# 3. holds consistent with the orders: a CONFIRMED order holds exactly its lines, any other nothing
sql orders_ops "SELECT o.id, l->>'product_id', sum((l->>'quantity')::bigint) FROM orders o, jsonb_array_elements(o.items) l
                WHERE o.status = 'CONFIRMED' GROUP BY 1, 2 ORDER BY 1, 2" >"$OUT/confirmed.txt"
d=$(diff "$OUT/confirmed.txt" "$OUT/after.holds.txt")
if [[ -z $d ]]; then
	pass "holds: every CONFIRMED order holds exactly its lines ($(wc -l <"$OUT/confirmed.txt") rows), no other order holds anything"
else
	fail "holds and orders disagree (< order lines, > holds): $(head -n 8 <<<"$d" | tr '\n' ' ')"
fi

# 4. nothing applied twice: each status at most once in an order's history
n=$(sql orders_ops "SELECT count(*) FROM (SELECT 1 FROM orders o, ord_history(o) h GROUP BY o.id, h.status HAVING count(*) > 1) x")
if [[ $n == 0 ]]; then
	pass "history: no order reached a status twice ($(sql orders_ops 'SELECT count(*) FROM orders o, ord_history(o)') rows)"
else
	fail "history: $n (order, status) pairs reached more than once"
fi

consume "$INVENTORY_EVENTS_TOPIC" "$OUT/events.jsonl"
consume "$ORDERS_RESULTS_TOPIC" "$OUT/results.jsonl"
say "topics: $(wc -l <"$OUT/events.jsonl") messages on inventory.events, $(wc -l <"$OUT/results.jsonl") on orders.results"

# 5. stock per product equals what inventory.events say: Restocked - StockReserved + StockReleased,
#    one answer per idempotency key; and, with the holds, every unit restocked is accounted for
jq -rs 'group_by(.idempotency_key) | map(.[0]) | map(
		if .type == "Restocked" then {p: .product_id, d: .quantity, r: .quantity}
		elif .type == "StockReserved" then (.items[] | {p: .product_id, d: -.quantity, r: 0})
		elif .type == "StockReleased" then (.items[] | {p: .product_id, d: .quantity, r: 0})
		else empty end) | group_by(.p) | .[] | "\(.[0].p)|\(map(.d) | add)|\(map(.r) | add)"' \
	"$OUT/events.jsonl" | sort >"$OUT/by_events.txt"
d=$(diff <(cut -d'|' -f1,2 "$OUT/by_events.txt") "$OUT/after.stock.txt")
if [[ -z $d ]]; then
	pass "stock equals what inventory.events say for all $(wc -l <"$OUT/by_events.txt") products"
else
	fail "stock differs from inventory.events (< events, > stock): $(head -n 8 <<<"$d" | tr '\n' ' ')"
fi
d=$(diff <(cut -d'|' -f1,3 "$OUT/by_events.txt") <(join -t'|' -a1 -e0 -o 0,1.2,2.2 "$OUT/after.stock.txt" \
	<(awk -F'|' '{ h[$2] += $3 } END { for (p in h) print p "|" h[p] }' "$OUT/after.holds.txt" | sort) |
	awk -F'|' '{ print $1 "|" $2 + $3 }'))
if [[ -z $d ]]; then
	pass "units: stock + holds = units restocked, for every product"
else
	fail "units: stock + holds differ from units restocked (< restocked, > stock + holds): $(head -n 8 <<<"$d" | tr '\n' ' ')"
fi

# 6. every command answered the same way each time it was answered (before and after the restore)
for t in events results; do
	if [[ $t == events ]]; then
		f='[.type, .order_id, (.items | tostring)]' show='{event_id, type, order_id, items}'
	else
		f='[.status, .reason, .order_id]' show='{event_id, idempotency_key, order_id, status, reason}'
	fi
	r=$(jq -rs "group_by(.idempotency_key) | [length, (map(select(length > 1)) | length),
		(map(select((map($f) | unique | length) > 1)) | length),
		(map(select((map($f) | unique | length) > 1)) | .[0] // [] | map($show) | unique | tostring)] | @tsv" \
		"$OUT/$t.jsonl")
	read -r keys twice differ example <<<"$r"
	if [[ $differ == 0 ]]; then
		pass "$t: $keys idempotency keys, $twice answered more than once, always alike"
	else
		fail "$t: $differ of $keys idempotency keys answered differently at different times, e.g. $example"
	fi
done

# 7. no event_id reused for a different event, on either topic
for t in events results; do
	r=$(jq -rs 'group_by(.event_id) | [length, (map(select(length > 1)) | length),
		(map(select((map([.type, .idempotency_key, .status]) | unique | length) > 1)) | length),
		(map(select((map([.type, .idempotency_key, .status]) | unique | length) > 1)) | .[0] // [] |
		 map({event_id, type, idempotency_key, status}) | unique | tostring)] | @tsv' "$OUT/$t.jsonl")
	read -r ids twice differ example <<<"$r"
	if [[ $differ == 0 ]]; then
		pass "event_id on $t: $ids ids, $twice seen more than once, each always the same event"
	else
		fail "event_id on $t: $differ of $ids ids stand for different events, e.g. $example"
	fi
done

# 8. no dead letters
for t in "$INVENTORY_DLQ_TOPIC" "$ORDERS_DLQ_TOPIC"; do
	n=$(kcat -C -b "$BROKER" -t "$t" -o beginning -e -q -f 'x\n' 2>/dev/null | wc -l)
	if [[ $n == 0 ]]; then pass "no dead letters on ${t#"$P".}"; else fail "$n dead letters on ${t#"$P".}"; fi
done

say "figures: $N_ORDERS orders, $CANCELS cancels; $(wc -l <"$OUT/events.jsonl") inventory events and" \
	"$(wc -l <"$OUT/results.jsonl") order results on the topics"
