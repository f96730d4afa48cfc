#!/usr/bin/env bash
# toolkit.sh: `make ops` and `make test`. The operator's toolkit (build/vxadmin: lag, offsets, replay,
# dlq list and redrive, outbox; issue 15) against the real broker and database, through inventory-svc:
# lag after a stopped consumer, a replay of 1,000 applied commands that changes nothing and says so, a
# poisoned command dead-lettered, fixed and redriven once, a redrive interrupted halfway and run again,
# offsets reset refused while the group lives and effective once it is stopped, outbox and usage.
#
# A stack of its own: databases inventory_tk and orders_tk (recreated), topics and groups tk.<run>.*,
# ports 18511-18513, files under var/tk; the shared broker and PostgreSQL server of deploy/stack.sh up.
# Every service it starts is stopped on every exit path.
#
# Invariant: every check compares what vxadmin printed with what the broker (kcat) and the database
# (psql) say, with counts; any failure makes the exit status 1, and a part that cannot run is a
# failure, never a skip.
#
# Settings: VXADMIN [build/vxadmin]; TK_KEEP [0] 1: keep var/tk's files and the run's topics and
# databases (kept anyway after a failure); TK_REDRIVE_N [400] dead letters for the interrupted redrive.
set -uo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 1

TK_KEEP=${TK_KEEP:-0}
TK_REDRIVE_N=${TK_REDRIVE_N:-400}
export VXADMIN=${VXADMIN:-$REPO/build/vxadmin}
BROKER=127.0.0.1:${VX_BROKER_PORT:-9092}
PG_URL=postgresql://valerix@127.0.0.1:${VX_PG_PORT:-55432}
PSQL=(env PGOPTIONS='-c client_min_messages=warning' psql -X -q -At -v ON_ERROR_STOP=1)
OUT=$(realpath -m "${VX_DATA_DIR:-$REPO/var}")/tk
RUN=$(date -u +%Y%m%d%H%M%S)-$$
P=tk.$RUN
STOP_SECS=30
VXA_SECS=120 # no vxadmin command of this test may take longer
T0=$(date +%s%3N)

# ------------------------------------------------------------------------------------------ helpers

say() { printf 'toolkit: %s\n' "$*"; }
# shellcheck source=tests/ops/lib.sh
source "$REPO/tests/ops/lib.sh"
isql() { sql inventory_tk "$1"; }

# vxa NAME ARGS...: build/vxadmin ARGS, stdout into $OUT/NAME.out and stderr into $OUT/NAME.err;
# RC is its exit status (124: it ran past VXA_SECS).
RC=0
vxa() {
	local name=$1
	shift
	timeout -k 5 "$VXA_SECS" "$VXADMIN" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" </dev/null
	RC=$?
	((RC != 124 && RC != 137)) || say "vxadmin $* ran past $VXA_SECS s" >&2
}

inv_start() { start inventory-svc "$INVENTORY_HTTP_ADDR"; }
inv_stop() { stop inventory-svc; }

BG=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	local rc=$? p
	trap - EXIT INT TERM
	for p in "${BG[@]}"; do kill "$p" 2>/dev/null && kill -CONT "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	stop inventory-svc
	stop order-svc
	((${#FAILS[@]} == 0 && rc == 0)) || rc=1
	if ((TK_KEEP || rc)); then
		if [[ -n ${INVENTORY_DLQ_TOPIC:-} ]]; then
			say "kept for a look: files in $OUT (vxadmin outputs *.out/*.err, service logs *.log)," \
				"databases inventory_tk and orders_tk (psql $PG_URL/inventory_tk), topics $P.*" \
				"(kcat -C -b $BROKER -t $INVENTORY_DLQ_TOPIC -e -f '%k %h %s\\n')"
		fi
	else
		rm -f "$OUT"/*.out "$OUT"/*.err "$OUT"/*.txt "$OUT"/*.tsv
		if [[ -n ${INVENTORY_DLQ_TOPIC:-} ]]; then
			for db in inventory_tk orders_tk; do sql postgres "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1; done
			# the run's topics, where build/vxbench (make build/vxbench) is there to delete them
			[[ -x build/vxbench ]] && build/vxbench drop-topics "$INVENTORY_COMMANDS_TOPIC" "$INVENTORY_EVENTS_TOPIC" \
				"$INVENTORY_DLQ_TOPIC" "$ORDERS_COMMANDS_TOPIC" "$ORDERS_RESULTS_TOPIC" "$ORDERS_DLQ_TOPIC" >/dev/null 2>&1
		fi
	fi
	say "$( ((rc == 0)) && echo "PASS ($NPASS checks)" || echo "FAIL (${#FAILS[@]}: $(printf '%s; ' "${FAILS[@]}"))") in $(secs_since "$T0") s"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# produce TOPIC: kcat, one `key|value` line per message from stdin.
produce() { kcat -P -b "$BROKER" -t "$1" -K'|' || abort "kcat could not produce to $1"; }
# count TOPIC: the messages TOPIC holds now.
count() { kcat -C -b "$BROKER" -t "$1" -o beginning -e -q -f 'x\n' 2>/dev/null | wc -l; }
# dump TOPIC FILE: the whole topic, one "partition offset key headers" line per message (no value).
dump() { kcat -C -b "$BROKER" -t "$1" -o beginning -e -q -f '%p %o %k %h\n' >"$2" 2>/dev/null || abort "kcat could not read $1"; }
# ends TOPIC: "partition end" lines, as the broker says.
ends() {
	local p
	for p in $(kcat -L -b "$BROKER" -t "$1" 2>/dev/null | awk '$1 == "partition" { sub(",", "", $2); print $2 }'); do
		kcat -Q -b "$BROKER" -t "$1:$p:-1" 2>/dev/null | awk '{ gsub(/[][]/, "", $2); print $2, $4 }'
	done | sort -n
}

# lag_rows GROUP: "TOPIC PARTITION COMMITTED END LAG" of the group (vxadmin lag); lag_total and
# members read the same output.
lag_rows() { timeout 30 "$VXADMIN" lag "$1" 2>/dev/null | awk -v g="$1" '$1 == g && NF == 6 { print $2, $3, $4, $5, $6 }'; }
lag_total() { lag_rows "$1" | awk '{ s += $5; n++ } END { if (n) print s }'; }
members() { timeout 30 "$VXADMIN" lag "$1" 2>/dev/null | awk -v g="$1" '$1 == g && $2 == "members" { print $3 }'; }

# wait_members N SECS: until the group of inventory-svc has N members; false after SECS.
wait_members() {
	local deadline=$(($(now_ms) + $2 * 1000))
	until [[ $(members "$GROUP") == "$1" ]]; do
		(($(now_ms) < deadline)) || return 1
		sleep 0.2
	done
}

# settle WHY: waits until inventory-svc's group has no lag, no outbox row waits and the products
# table stopped changing (two looks in a row).
settle() {
	local t0 l w sig last=""
	t0=$(now_ms)
	while :; do
		l=$(lag_total "$GROUP")
		w=$(isql "SELECT count(*) FROM outbox_pending" 2>/dev/null)
		sig="$l $w $(isql "SELECT count(*), sum(stock) FROM products" 2>/dev/null) $(isql "SELECT count(*) FROM outbox" 2>/dev/null)"
		[[ $l == 0 && $w == 0 && $sig == "$last" ]] && return 0
		last=$sig
		if (($(now_ms) - t0 > 60000)); then
			fail "$1: inventory-svc not settled within 60 s: lag '$l', outbox rows waiting '$w'"
			return 1
		fi
		sleep 0.3
	done
}

# snapshot FILE: what inventory-svc's database says: stock, holds, released orders, outbox rows.
snapshot() {
	{
		echo "# products" && isql "SELECT id, stock FROM products ORDER BY id" &&
			echo "# holds" && isql "SELECT order_id, product_id, quantity FROM holds ORDER BY 1, 2" &&
			echo "# released_orders" && isql "SELECT count(*) FROM released_orders" &&
			echo "# outbox rows" && isql "SELECT count(*) FROM outbox"
	} >"$1" || abort "cannot read inventory_tk"
}
stock() { isql "SELECT coalesce((SELECT stock FROM products WHERE id = '$1'), -1)"; }

restock() { printf '%s|{"type":"Restock","idempotency_key":"%s","product_id":"%s","quantity":%d}\n' "$1" "$1" "$2" "$3"; }

# ------------------------------------------------------------------------------------------ set-up

mkdir -p "$OUT"
exec 8>>"$OUT/.lock"
flock -n 8 || {
	say "another toolkit test is running (lock $OUT/.lock)" >&2
	exit 1
}
for f in build/inventory-svc build/order-svc "$VXADMIN"; do
	[[ -x $f ]] || abort "$f is missing; run make first"
done
for c in kcat jq psql curl timeout; do
	command -v "$c" >/dev/null || abort "$c not found; run deploy/stack.sh deps"
done
for c in lag offsets replay dlq outbox; do
	"$VXADMIN" "$c" --help >/dev/null 2>&1 || abort "$VXADMIN has no '$c' command (make build/vxadmin)"
done
rm -f "$OUT"/*.out "$OUT"/*.err "$OUT"/*.txt "$OUT"/*.tsv
for n in inventory-svc order-svc; do : >"$OUT/$n.log"; done

export KAFKA_BOOTSTRAP_SERVERS=$BROKER VX_LOG_LEVEL=warn VX_TOPIC_RETENTION_MS=21600000
export INVENTORY_COMMANDS_TOPIC=$P.inventory.commands INVENTORY_EVENTS_TOPIC=$P.inventory.events
export INVENTORY_DLQ_TOPIC=$P.inventory.dlq ORDERS_COMMANDS_TOPIC=$P.orders.commands
export ORDERS_RESULTS_TOPIC=$P.orders.results ORDERS_DLQ_TOPIC=$P.orders.dlq
export INVENTORY_GROUP_ID=$P.inventory-svc ORDERS_GROUP_ID=$P.order-svc
export INVENTORY_DB=$PG_URL/inventory_tk ORDERS_DB=$PG_URL/orders_tk
export INVENTORY_HTTP_ADDR=127.0.0.1:18511 ORDERS_HTTP_ADDR=127.0.0.1:18512 GATEWAY_HTTP_ADDR=127.0.0.1:18513
export INVENTORY_URL=http://$INVENTORY_HTTP_ADDR ORDERS_URL=http://$ORDERS_HTTP_ADDR
unset VX_CRASH_POINTS VX_GREMLIN_DELAY_MS VX_GREMLIN_EVERY VX_GREMLIN_FRACTION VX_CHAOS_TOKEN
CMDS=$INVENTORY_COMMANDS_TOPIC
DLQ=$INVENTORY_DLQ_TOPIC
GROUP=$INVENTORY_GROUP_ID

for db in inventory_tk orders_tk; do
	{ sql postgres "DROP DATABASE IF EXISTS $db WITH (FORCE)" && sql postgres "CREATE DATABASE $db"; } ||
		abort "cannot recreate database $db"
done
vxa topics topics
((RC == 0)) || {
	show "$OUT/topics.err"
	abort "vxadmin topics could not create the topics $P.*"
}
say "stack: topics $P.*, databases inventory_tk and orders_tk, ports 18511-18512"
inv_start
start order-svc "$ORDERS_HTTP_ADDR" # its database and group, for outbox order-svc and lag

# ------------------------------------------------------------------------------------------ 2. replay of 1,000 applied commands

# (The checks are numbered as in issue 15's list; the replay comes first so that its 1,000 commands
# are the topic's first, and --from 0 names them on every partition.)
# 10 Restocks, 500 ReserveStock (1 or 2 lines), 490 ReleaseStock of the first 490 orders, each batch
# applied before the next is sent.
NREPLAY=1000
B=$OUT/batch.txt
for i in $(seq -w 1 10); do restock "$P-r1-$i" "TK-$i" 1000; done >"$B" && produce "$CMDS" <"$B"
settle "the first restocks" || exit 1
for ((i = 1; i <= 500; i++)); do
	a=$((RANDOM % 10 + 1)) b=$((RANDOM % 10 + 1))
	items=$(printf '{"product_id":"TK-%02d","quantity":%d}' "$a" $((RANDOM % 3 + 1)))
	((a == b)) || items+=$(printf ',{"product_id":"TK-%02d","quantity":%d}' "$b" $((RANDOM % 3 + 1)))
	printf '%s|{"type":"ReserveStock","idempotency_key":"%s","order_id":"%s","items":[%s]}\n' \
		"$P-res-$i" "$P-res-$i" "$P-o-$i" "$items"
done >"$B" && produce "$CMDS" <"$B"
settle "the reservations" || exit 1
for ((i = 1; i <= 490; i++)); do
	printf '%s|{"type":"ReleaseStock","idempotency_key":"%s","order_id":"%s"}\n' "$P-rel-$i" "$P-rel-$i" "$P-o-$i"
done >"$B" && produce "$CMDS" <"$B"
settle "the releases" || exit 1

n=$(count "$CMDS")
applied=$(isql "SELECT count(*) FROM outbox")
if [[ $n == "$NREPLAY" && $applied == "$NREPLAY" ]]; then
	pass "replay set-up: $n commands on the topic, $applied recorded (outbox rows), $(isql "SELECT count(*) FROM holds") holds"
else
	abort "replay set-up: $n commands on the topic and $applied outbox rows, want $NREPLAY each"
fi
snapshot "$OUT/before_replay.txt"
ends "$CMDS" >"$OUT/ends_before_replay.txt"
event_ids() { kcat -C -b "$BROKER" -t "$INVENTORY_EVENTS_TOPIC" -o beginning -e -q -f '%s\n' 2>/dev/null | jq -r .event_id | sort -u | wc -l; }
ev_before=$(count "$INVENTORY_EVENTS_TOPIC") ids_before=$(event_ids)

vxa replay_dry replay "$CMDS" --from 0 --dry-run
ends "$CMDS" >"$OUT/ends_after_dry.txt"
if ((RC == 0)) && cmp -s "$OUT/ends_before_replay.txt" "$OUT/ends_after_dry.txt" && grep -q "^replay: $NREPLAY messages" "$OUT/replay_dry.out"; then
	pass "replay --dry-run: exit 0, nothing produced ($(tail -n 1 "$OUT/replay_dry.out"))"
else
	show "$OUT/replay_dry.out"
	show "$OUT/replay_dry.err"
	fail "replay --dry-run: exit $RC, topic ends $(tr '\n' ' ' <"$OUT/ends_before_replay.txt")-> $(tr '\n' ' ' <"$OUT/ends_after_dry.txt")"
fi

t=$(now_ms)
vxa replay replay "$CMDS" --from 0 --wait 60
say "replay: exit $RC in $(secs_since "$t") s: $(tr '\n' '/' <"$OUT/replay.out")"
read -r r_sent r_topic < <(sed -nE 's/^replay: ([0-9]+) messages of ([^ ]+) re-produced.*/\1 \2/p' "$OUT/replay.out")
read -r r_already r_new < <(sed -nE 's/^replay: ([0-9]+) of the [0-9]+ distinct commands had been applied by [^ ]+ before the replay, ([0-9]+) had not$/\1 \2/p' "$OUT/replay.out")
r_since=$(sed -nE 's/^replay: applied by the replay: ([0-9]+); the replay changed nothing$/\1/p' "$OUT/replay.out")
if ((RC == 0)) && [[ ${r_sent:-} == "$NREPLAY" && ${r_topic:-} == "$CMDS" && ${r_already:-} == "$NREPLAY" &&
	${r_new:-} == 0 && $r_since == 0 ]]; then
	pass "replay says so: $r_sent re-produced, $r_already already applied, $r_new new, applied since $r_since"
else
	show "$OUT/replay.out"
	show "$OUT/replay.err"
	fail "replay output (shared/notes/vxadmin-cli.md): exit $RC; want 'replay: $NREPLAY messages of $CMDS re-produced', 'replay: $NREPLAY of the $NREPLAY distinct commands had been applied by inventory-svc before the replay, 0 had not', 'replay: applied by the replay: 0; the replay changed nothing'; read: re-produced '${r_sent:-}', already applied '${r_already:-}', new '${r_new:-}', applied since '${r_since:-}'"
fi
settle "after the replay" || exit 1
snapshot "$OUT/after_replay.txt"
if d=$(diff "$OUT/before_replay.txt" "$OUT/after_replay.txt"); then
	pass "replay changed nothing: stock of $(isql "SELECT count(*) FROM products") products, $(isql "SELECT count(*) FROM holds") holds," \
		"$(isql "SELECT count(*) FROM released_orders") released orders, $applied outbox rows all as before"
else
	fail "replay changed the database (< before, > after): $(head -n 12 <<<"$d" | tr '\n' ' ')"
fi
# the copies: every original offset once, the same key, a replayed-from header naming it
dump "$CMDS" "$OUT/cmds_after_replay.txt"
bad=$(awk -v t="$CMDS" '
	!/replayed-from=/ { orig[$1 "/" $2] = $3; next }
	{ match($0, /replayed-from=[^,]*/); src = substr($0, RSTART + 14, RLENGTH - 14)
	  n = split(src, s, "/"); o = s[n - 1] "/" s[n]; seen[o]++
	  if (substr(src, 1, length(t)) != t || !(o in orig) || orig[o] != $3 || seen[o] > 1) bad++; copies++ }
	END { for (o in orig) if (!seen[o]) bad++; print copies + 0, length(orig), bad + 0 }' "$OUT/cmds_after_replay.txt")
read -r copies origs nbad <<<"$bad"
check "$((copies == NREPLAY && origs == NREPLAY && nbad == 0))" \
	"replay copies: $copies messages with replayed-from, each of the $origs originals once with its key ($nbad mismatches)"
# inventory-svc answered each copy with the event it had recorded: as many events again (at least: the
# outbox sweep may send one twice), no new event_id
ev_after=$(count "$INVENTORY_EVENTS_TOPIC") ids=$(event_ids)
check "$((ev_after >= ev_before + NREPLAY && ids == ids_before && ids == NREPLAY))" \
	"replay answers: inventory.events $ev_before -> $ev_after messages, $ids_before -> $ids distinct event_ids (the recorded events, sent again)"

# ------------------------------------------------------------------------------------------ 1. lag after a stopped consumer

NLAG=40
lag_rows "$GROUP" >"$OUT/lag_live.txt"
check "$([[ $(awk '{ s += $5 } END { print s + 0 }' "$OUT/lag_live.txt") == 0 && $(members "$GROUP") == 1 ]] && echo 1 || echo 0)" \
	"lag of a live, idle group: $(awk '{ s += $5 } END { print s + 0 }' "$OUT/lag_live.txt") on $(wc -l <"$OUT/lag_live.txt") partitions, members $(members "$GROUP")"
vxa lag_all lag
check "$( ((RC == 0)) && grep -q "^$GROUP members 1\$" "$OUT/lag_all.out" && grep -q "^$ORDERS_GROUP_ID members 1\$" "$OUT/lag_all.out" &&
	grep -q "^$GROUP $CMDS 0 " "$OUT/lag_all.out" && echo 1 || echo 0)" \
	"lag without a GROUP: every group of the cluster ($(grep -c ' members ' "$OUT/lag_all.out")), $GROUP and $ORDERS_GROUP_ID among them"
inv_stop
t=$(now_ms)
if wait_members 0 15; then
	pass "lag after inventory-svc stopped: 'members 0' within $(secs_since "$t") s"
else
	fail "lag after inventory-svc stopped: members '$(members "$GROUP")' after 15 s, want 0"
fi
lag_rows "$GROUP" >"$OUT/lag_stopped0.txt"
for ((i = 1; i <= NLAG; i++)); do restock "$P-lag-$i" TK-LAG 2; done | produce "$CMDS"
vxa lag lag "$GROUP"
ends "$CMDS" >"$OUT/ends_lag.txt"
awk -v g="$GROUP" '$1 == g && NF == 6 { print $2, $3, $4, $5, $6 }' "$OUT/lag.out" >"$OUT/lag_stopped.txt"
# per partition: COMMITTED as before the commands, END as the broker says, LAG = END - COMMITTED
bad=$(awk -v t="$CMDS" 'FILENAME == ARGV[1] { c0[$2] = $3; next } FILENAME == ARGV[2] { end[$1] = $2; next }
	$1 == t { n++; sum += $5; if ($3 != c0[$2] || $4 != end[$2] || $5 != $4 - $3) { bad++; printf "p%s %s %s %s; ", $2, $3, $4, $5 > "/dev/stderr" } }
	END { print n + 0, sum + 0, bad + 0 }' "$OUT/lag_stopped0.txt" "$OUT/ends_lag.txt" "$OUT/lag_stopped.txt" 2>"$OUT/lag_bad.txt")
read -r nparts lagsum nbad <<<"$bad"
m=$(awk -v g="$GROUP" '$1 == g && $2 == "members" { print $3 }' "$OUT/lag.out")
hdr=$(head -n 1 "$OUT/lag.out" | tr -s ' \t' ' ')
if ((RC == 0)) && [[ $hdr == "GROUP TOPIC PARTITION COMMITTED END LAG" && $m == 0 ]] && ((nparts >= 1 && lagsum == NLAG && nbad == 0)); then
	pass "lag of a stopped consumer: $lagsum over $nparts partitions ($(awk '{ printf "%sp%s %s", s, $2, $5; s = ", " }' "$OUT/lag_stopped.txt")), each END - COMMITTED with END as the broker says, members 0"
else
	show "$OUT/lag.out"
	fail "lag of a stopped consumer: exit $RC, header '$hdr', members '$m', lag $lagsum over $nparts partitions, want $NLAG; $(cat "$OUT/lag_bad.txt")"
fi
inv_start
t=$(now_ms)
settle "after inventory-svc's restart" || exit 1
l=$(lag_total "$GROUP") m=$(members "$GROUP") s=$(stock TK-LAG)
check "$([[ $l == 0 && $m == 1 && $s == $((2 * NLAG)) ]] && echo 1 || echo 0)" \
	"lag after the restart: $l within $(secs_since "$t") s, members $m, TK-LAG stock $s (want $((2 * NLAG)))"

# ------------------------------------------------------------------------------------------ 5. offsets reset

NSKIP=25
vxadmin_offsets() { timeout 30 "$VXADMIN" offsets "$GROUP" 2>/dev/null | sort; }
vxadmin_offsets >"$OUT/offsets_live.txt"
vxa reset_live offsets reset "$GROUP" --to latest
vxadmin_offsets >"$OUT/offsets_live2.txt"
if ((RC == 1)) && grep -Eq "^vxadmin: .*group $GROUP has 1 members?: stop its consumers first" "$OUT/reset_live.err" &&
	cmp -s "$OUT/offsets_live.txt" "$OUT/offsets_live2.txt" && [[ -s $OUT/offsets_live.txt ]]; then
	pass "offsets reset while the group is live: refused, exit 1, '$(head -n 1 "$OUT/reset_live.err")', offsets untouched"
else
	show "$OUT/reset_live.out"
	show "$OUT/reset_live.err"
	fail "offsets reset while the group is live: exit $RC (want 1 and 'vxadmin: group $GROUP has 1 members: stop its consumers first'), offsets $(cmp -s "$OUT/offsets_live.txt" "$OUT/offsets_live2.txt" && echo untouched || echo CHANGED)"
fi
inv_stop
wait_members 0 15 || fail "offsets reset: members '$(members "$GROUP")' 15 s after inventory-svc stopped"
t_skip=$(now_ms)
sleep 0.05
for ((i = 1; i <= NSKIP; i++)); do restock "$P-skip-$i" TK-SKIP 1; done | produce "$CMDS"
vxadmin_offsets >"$OUT/offsets_stopped.txt"
ends "$CMDS" >"$OUT/ends_skip.txt"
nlines=$(wc -l <"$OUT/offsets_stopped.txt")
# offsets GROUP: TOPIC<TAB>PARTITION<TAB>OFFSET, the committed ones, as lag says them
check "$([[ $(awk -F'\t' 'NF == 3 { print $1, $2, $3 }' "$OUT/offsets_stopped.txt" | sort) == "$(lag_rows "$GROUP" | awk '{ print $1, $2, $3 }' | sort)" ]] && ((nlines >= 1)) && echo 1 || echo 0)" \
	"offsets $GROUP: $nlines lines TOPIC<TAB>PARTITION<TAB>OFFSET, the COMMITTED of lag"

vxa reset_dry offsets reset "$GROUP" --to latest --dry-run
vxadmin_offsets >"$OUT/offsets_dry.txt"
l=$(lag_total "$GROUP")
# the NEW of each line is the partition's end
badnew=$(awk 'FILENAME == ARGV[1] { end[$1] = $2; next } $3 == "->" || $4 == "->" { n++; if ($NF != end[$2]) bad++ } END { print n + 0, bad + 0 }' \
	"$OUT/ends_skip.txt" "$OUT/reset_dry.out")
read -r nl nb <<<"$badnew"
if ((RC == 0)) && grep -q "^dry run: would reset $nlines partitions of $GROUP" "$OUT/reset_dry.out" &&
	cmp -s "$OUT/offsets_stopped.txt" "$OUT/offsets_dry.txt" && [[ $l == "$NSKIP" ]] && ((nl == nlines && nb == 0)); then
	pass "offsets reset --to latest --dry-run: '$(tail -n 1 "$OUT/reset_dry.out")', $nl lines OLD -> NEW (NEW the end), offsets unchanged, lag still $l"
else
	show "$OUT/reset_dry.out"
	show "$OUT/reset_dry.err"
	fail "offsets reset --dry-run: exit $RC, $nl lines ($nb with NEW not the end), offsets $(cmp -s "$OUT/offsets_stopped.txt" "$OUT/offsets_dry.txt" && echo unchanged || echo CHANGED), lag $l (want $NSKIP)"
fi
# --to TIME (as @EPOCH_MS), dry: the offsets of the first message after that time, i.e. the committed ones
vxa reset_time offsets reset "$GROUP" --to "@$t_skip" --dry-run
badnew=$(awk -F'\t' 'FILENAME == ARGV[1] { c[$2] = $3; next } $0 ~ /->/ { split($0, f, " "); n++; if (f[5] != c[f[2]] || f[3] != c[f[2]]) bad++ } END { print n + 0, bad + 0 }' \
	"$OUT/offsets_stopped.txt" "$OUT/reset_time.out")
read -r nl nb <<<"$badnew"
if ((RC == 0 && nl == nlines && nb == 0)); then
	pass "offsets reset --to @EPOCH_MS --dry-run: each partition back to its first message after that time (= the committed offsets)"
else
	show "$OUT/reset_time.out"
	show "$OUT/reset_time.err"
	fail "offsets reset --to @$t_skip --dry-run: exit $RC, $nl lines, $nb not at the first offset after that time"
fi
vxa reset offsets reset "$GROUP" --to latest
vxadmin_offsets >"$OUT/offsets_reset.txt"
l=$(lag_total "$GROUP")
if ((RC == 0)) && grep -q "^reset $nlines partitions of $GROUP" "$OUT/reset.out" && [[ $l == 0 ]] &&
	[[ $(awk -F'\t' '{ print $2, $3 }' "$OUT/offsets_reset.txt" | sort) == "$(sort "$OUT/ends_skip.txt")" ]]; then
	pass "offsets reset --to latest: '$(tail -n 1 "$OUT/reset.out")', the offsets are the ends, lag $l"
else
	show "$OUT/reset.out"
	show "$OUT/reset.err"
	fail "offsets reset --to latest: exit $RC, lag '$l' (want 0), offsets $(tr '\n\t' '  ' <"$OUT/offsets_reset.txt") vs ends $(tr '\n' ' ' <"$OUT/ends_skip.txt")"
fi
inv_start
restock "$P-after-skip" TK-AFTER 3 | produce "$CMDS"
settle "after the reset" || exit 1
check "$([[ $(stock TK-AFTER) == 3 && $(stock TK-SKIP) == -1 && $(isql "SELECT count(*) FROM outbox WHERE dedup_key LIKE '$P-skip-%'") == 0 ]] && echo 1 || echo 0)" \
	"the reset took effect: the $NSKIP commands before it were skipped (TK-SKIP $(stock TK-SKIP | sed 's/^-1$/absent/')), the one after applied (TK-AFTER $(stock TK-AFTER))"

# ------------------------------------------------------------------------------------------ 3. poisoned, fixed, redriven once

# The poison: the database refuses every write to a TK-Q* product (a trigger standing for a broken
# constraint or migration), so inventory-svc dead-letters such a command with reason processing_error
# (vx_apply: the call is bisected down to it, its neighbours are applied). A command that the service
# cannot even read (not JSON) is dead-lettered with not_json; a ReserveStock of an unknown product is
# no dead letter but an answer (StockRejected unknown_product).
quarantine() {
	isql "CREATE OR REPLACE FUNCTION tk_quarantine() RETURNS trigger LANGUAGE plpgsql AS \$\$
	      BEGIN RAISE EXCEPTION 'product % is quarantined (toolkit test)', NEW.id; END \$\$;
	      DROP TRIGGER IF EXISTS tk_quarantine ON products;
	      CREATE TRIGGER tk_quarantine BEFORE INSERT OR UPDATE ON products FOR EACH ROW
	          WHEN (NEW.id LIKE 'TK-Q%') EXECUTE FUNCTION tk_quarantine()" || abort "cannot create the trigger"
}
unquarantine() { isql "DROP TRIGGER tk_quarantine ON products" || abort "cannot drop the trigger"; }
# wait_dlq N SECS: until the dead-letter topic holds N messages.
wait_dlq() {
	local deadline=$(($(now_ms) + $2 * 1000))
	until [[ $(count "$DLQ") == "$1" ]]; do
		(($(now_ms) < deadline)) || return 1
		sleep 0.3
	done
}
# redriven KEY_PREFIX: "key redrive-count" of each message on the commands topic that carries redrive-count.
redriven() {
	kcat -C -b "$BROKER" -t "$CMDS" -o beginning -e -q -f '%k %h\n' 2>/dev/null |
		awk -v k="$1" 'index($1, k) == 1 && match($0, /redrive-count=[0-9]+/) { print $1, substr($0, RSTART + 14, RLENGTH - 14) }'
}

quarantine
{
	restock "$P-q1" TK-Q1 7
	echo "$P-junk|{this is not json"
	restock "$P-ok1" TK-OK 5 # a neighbour, applied
} | produce "$CMDS"
if wait_dlq 2 30; then
	pass "poison: 2 dead letters on ${DLQ#"$P".} ($(kcat -C -b "$BROKER" -t "$DLQ" -o beginning -e -q -f '%h\n' 2>/dev/null |
		grep -o 'dlq-reason=[a-z_]*' | sort | uniq -c | awk '{ printf "%s%s", s, $2 " x" $1; s = ", " }'))"
else
	fail "poison: $(count "$DLQ") dead letters after 30 s, want 2"
fi
settle "after the poison" || exit 1
check "$([[ $(stock TK-Q1) == -1 && $(stock TK-OK) == 5 ]] && echo 1 || echo 0)" \
	"poison: TK-Q1 not written ($(stock TK-Q1 | sed 's/^-1$/absent/')), its neighbour TK-OK applied ($(stock TK-OK))"

vxa dlq_list dlq list "$DLQ"
# the counts: the lines after the header "REASON COUNT" (the contract puts them first, then the samples)
sed -n '/^REASON COUNT$/,/^---/p' "$OUT/dlq_list.out" >"$OUT/dlq_counts.txt"
if ((RC == 0)) && grep -Eq '^processing_error[[:space:]]+1$' "$OUT/dlq_counts.txt" && grep -Eq '^not_json[[:space:]]+1$' "$OUT/dlq_counts.txt" &&
	grep -q "$P-q1" "$OUT/dlq_list.out" && grep -q 'dlq-reason' "$OUT/dlq_list.out" &&
	grep -q 'quarantined' "$OUT/dlq_list.out" && grep -q 'dlq-source-topic' "$OUT/dlq_list.out"; then
	pass "dlq list: 'processing_error 1', 'not_json 1', samples with the key, dlq-* headers and the database's reason"
else
	show "$OUT/dlq_list.out"
	show "$OUT/dlq_list.err"
	fail "dlq list: exit $RC; want header 'REASON COUNT', 'processing_error 1', 'not_json 1' and samples with $P-q1, dlq-reason, dlq-source-topic and 'quarantined'"
fi
vxa dlq_list_r dlq list "$DLQ" --reason processing_error
sed -n '/^REASON COUNT$/,/^---/p' "$OUT/dlq_list_r.out" >"$OUT/dlq_counts.txt"
check "$( ((RC == 0)) && grep -Eq '^processing_error[[:space:]]+1$' "$OUT/dlq_counts.txt" && ! grep -q '^not_json' "$OUT/dlq_counts.txt" && echo 1 || echo 0)" \
	"dlq list --reason processing_error: only that reason (exit $RC)"

unquarantine # the fix
end0=$(ends "$CMDS")
vxa redrive_dry dlq redrive "$DLQ" --reason processing_error --dry-run
check "$( ((RC == 0)) && [[ $(ends "$CMDS") == "$end0" ]] && echo 1 || echo 0)" \
	"dlq redrive --dry-run: exit $RC, nothing produced ($(tail -n 1 "$OUT/redrive_dry.out"))"
vxa redrive1 dlq redrive "$DLQ" --reason processing_error
if ((RC == 0)) && grep -Eq '^redriven 1, skipped 1 \(filter\), 0 \(redrive-count at max\)' "$OUT/redrive1.out"; then
	pass "dlq redrive --reason processing_error: '$(grep '^redriven' "$OUT/redrive1.out")'"
else
	show "$OUT/redrive1.out"
	show "$OUT/redrive1.err"
	fail "dlq redrive: exit $RC; want 'redriven 1, skipped 1 (filter), 0 (redrive-count at max)'"
fi
settle "after the redrive" || exit 1
kcat -C -b "$BROKER" -t "$CMDS" -o beginning -e -q -f '%k %h\n' 2>/dev/null | awk -v k="$P-q1" '$1 == k' >"$OUT/q1.txt"
q1_hdr=$(grep -c 'redrive-count=1' "$OUT/q1.txt") q1_dlq=$(grep -c 'dlq-' "$OUT/q1.txt")
s=$(stock TK-Q1) o=$(isql "SELECT count(*) FROM outbox WHERE dedup_key = '$P-q1'")
check "$([[ $s == 7 && $o == 1 && $q1_hdr == 1 && $q1_dlq == 0 ]] && echo 1 || echo 0)" \
	"redriven and applied once: TK-Q1 stock $s (want 7), $o outbox row; on the topic $(wc -l <"$OUT/q1.txt") messages of its key, $q1_hdr with redrive-count=1, $q1_dlq with a dlq-* header"
vxa redrive2 dlq redrive "$DLQ" --reason processing_error
settle "after the second redrive" || exit 1
check "$( ((RC == 0)) && grep -Eq '^redriven 0,' "$OUT/redrive2.out" && [[ $(stock TK-Q1) == 7 && $(redriven "$P-q1" | wc -l) == 1 ]] && echo 1 || echo 0)" \
	"dlq redrive again: '$(grep '^redriven' "$OUT/redrive2.out")' (want redriven 0), TK-Q1 stock $(stock TK-Q1)"
# A redrive with another filter (none) must not send back what the --reason run redrove: only the
# not_json letter is left, and it says how many an earlier run covered.
vxa redrive_all dlq redrive "$DLQ" --dry-run
check "$( ((RC == 0)) && grep -Eq '^would redrive 1, skipped 0 \(filter\), 0 \(redrive-count at max\), 1 \(redriven by an earlier run\)$' "$OUT/redrive_all.out" && echo 1 || echo 0)" \
	"dlq redrive without a filter after the --reason run: '$(tail -n 1 "$OUT/redrive_all.out")' (want would redrive 1 (not_json), 1 redriven by an earlier run)"

# ------------------------------------------------------------------------------------------ 4. an interrupted redrive, run again

# TK_REDRIVE_N Restocks of 20 TK-Q2 products (one unit each) dead-lettered; the fix; a redrive
# interrupted (SIGINT, as an operator's Ctrl-C) once some were redriven; the redrive again. Each
# dead letter must come back to the commands topic exactly once (key and redrive-count), each be
# applied once.
N=$TK_REDRIVE_N
dl0=$(count "$DLQ")
quarantine
for ((i = 1; i <= N; i++)); do restock "$P-q2-$i" "TK-Q2-$((i % 20))" 1; done | produce "$CMDS"
t=$(now_ms)
if wait_dlq $((dl0 + N)) 60; then
	pass "interrupted redrive: $N more dead letters in $(secs_since "$t") s"
else
	abort "interrupted redrive: $(($(count "$DLQ") - dl0)) of $N dead letters after 60 s"
fi
settle "after the dead letters" || exit 1
unquarantine
# The redrive is fast (hundreds of letters in tens of milliseconds), so it runs in slices of a few
# milliseconds (SIGCONT, sleep, SIGSTOP) until its first letters are on the commands topic; then it
# gets the operator's Ctrl-C (SIGINT): it stops after the letter in hand, commits its progress, exits 1.
qargs=()
for p in $(ends "$CMDS" | awk '{ print $1 }'); do qargs+=(-t "$CMDS:$p:-1"); done
on_topic() { kcat -Q -b "$BROKER" "${qargs[@]}" 2>/dev/null | awk '{ s += $4 } END { print s + 0 }'; }
e0=$(on_topic)
"$VXADMIN" dlq redrive "$DLQ" --reason processing_error >"$OUT/redrive_int.out" 2>"$OUT/redrive_int.err" </dev/null &
rpid=$!
kill -STOP "$rpid"
BG=("$rpid")
t=$(now_ms) slices=0
while kill -0 "$rpid" 2>/dev/null && (($(on_topic) == e0 && $(now_ms) - t < 60000)); do
	kill -CONT "$rpid"
	sleep 0.002
	kill -STOP "$rpid" 2>/dev/null
	slices=$((slices + 1))
done
kill -INT "$rpid" 2>/dev/null
kill -CONT "$rpid" 2>/dev/null
wait "$rpid"
rc1=$?
BG=()
first=$(redriven "$P-q2-" | wc -l)
say "interrupted redrive: SIGINT after $slices slices ($(secs_since "$t") s), exit $rc1, $first of $N on the topic: $(tr '\n' '/' <"$OUT/redrive_int.out")$(tr '\n' '/' <"$OUT/redrive_int.err" | cut -c1-200)"
if ((first > 0 && first < N && rc1 == 1)) && grep -q "^redriven $first," "$OUT/redrive_int.out" &&
	grep -q '^vxadmin: stopped' "$OUT/redrive_int.err"; then
	pass "interrupted redrive: stopped halfway, exit 1, '$(grep '^redriven' "$OUT/redrive_int.out")', $first of $N on the topic"
else
	fail "interrupted redrive: the interrupt did not land halfway: $first of $N redriven (exit $rc1)"
fi
vxa redrive_again dlq redrive "$DLQ" --reason processing_error
k=$(sed -nE 's/^redriven ([0-9]+),.*/\1/p' "$OUT/redrive_again.out")
redriven "$P-q2-" >"$OUT/q2.txt"
total=$(wc -l <"$OUT/q2.txt")
once=$(awk '{ n[$1]++ } END { for (k in n) if (n[k] == 1) o++; print o + 0 }' "$OUT/q2.txt")
counts=$(awk '{ print $2 }' "$OUT/q2.txt" | sort | uniq -c | awk '{ printf "%s%s x redrive-count=%s", s, $1, $2; s = ", " }')
if ((RC == 0 && total == N && once == N)) && [[ ${k:-} == $((N - first)) && $counts == "$N x redrive-count=1" ]]; then
	pass "redrive run again: '$(grep '^redriven' "$OUT/redrive_again.out")'; $first + $k = $N, each of the $N dead letters on the commands topic exactly once ($counts)"
else
	show "$OUT/redrive_again.out"
	show "$OUT/redrive_again.err"
	fail "redrive run again: exit $RC, redriven '${k:-?}' (want $((N - first))); on the topic $total messages of $N keys, $once exactly once ($counts)"
fi
settle "after the redrives" || exit 1
s=$(isql "SELECT coalesce(sum(stock), 0) FROM products WHERE id LIKE 'TK-Q2-%'")
o=$(isql "SELECT count(*) FROM outbox WHERE dedup_key LIKE '$P-q2-%'")
check "$([[ $s == "$N" && $o == "$N" ]] && echo 1 || echo 0)" \
	"each redriven dead letter applied once: TK-Q2-* stock $s, $o outbox rows (want $N each)"
vxa redrive_last dlq redrive "$DLQ" --reason processing_error
check "$( ((RC == 0)) && grep -Eq '^redriven 0,' "$OUT/redrive_last.out" && echo 1 || echo 0)" \
	"dlq redrive a third time: '$(grep '^redriven' "$OUT/redrive_last.out")' (want redriven 0)"

# ------------------------------------------------------------------------------------------ 6. outbox, --help, usage errors

for svc in inventory-svc order-svc; do
	db=$([[ $svc == inventory-svc ]] && echo inventory_tk || echo orders_tk)
	vxa "outbox_$svc" outbox "$svc"
	rows=$(sql "$db" "SELECT count(*) FROM outbox")
	if ((RC == 0)) && [[ -s $OUT/outbox_$svc.out ]] && grep -qw "$rows" "$OUT/outbox_$svc.out"; then
		pass "outbox $svc: $(tr -s ' \n' ' ' <"$OUT/outbox_$svc.out" | cut -c1-160) ($rows rows in all)"
	else
		show "$OUT/outbox_$svc.out"
		show "$OUT/outbox_$svc.err"
		fail "outbox $svc: exit $RC, want its figures with $rows rows in all"
	fi
done
helps=0 bad=()
for c in "" topics lag offsets "offsets reset" replay dlq "dlq list" "dlq redrive" outbox; do
	# shellcheck disable=SC2086 # the command's words
	vxa help $c --help
	if ((RC == 0)) && [[ -s $OUT/help.out ]]; then helps=$((helps + 1)); else bad+=("'vxadmin $c --help' exit $RC"); fi
done
check "$((${#bad[@]} == 0))" "--help: $helps commands print their usage on stdout and exit 0 ${bad[*]}"
bad=()
usage() {
	vxa usage "$@"
	((RC == 2)) && [[ -s $OUT/usage.err ]] || bad+=("'vxadmin $*' exit $RC$([[ -s $OUT/usage.err ]] || echo ', nothing on stderr')")
}
usage nosuchcommand
usage lag --bogus
usage offsets reset "$GROUP" --bogus
usage offsets reset "$GROUP" --to latest --partition 0
usage offsets reset "$GROUP"
usage replay "$CMDS"
usage replay "$CMDS" --from
usage dlq nosuch "$DLQ"
usage dlq redrive "$DLQ" --bogus
usage dlq list
usage outbox nosuch-svc
check "$((${#bad[@]} == 0))" "usage errors: 11 bad command lines exit 2 with a message on stderr ${bad[*]}"
vxa missing replay "$P.no-such-topic" --from 0
check "$( ((RC == 1)) && grep -q '^vxadmin: ' "$OUT/missing.err" && echo 1 || echo 0)" \
	"a failure exits 1 with 'vxadmin: ...': replay of a topic that does not exist: exit $RC, $(head -n 1 "$OUT/missing.err")"
