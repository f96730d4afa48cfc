#!/usr/bin/env bash
# bench.sh: `make bench`. Throughput and latency of Valerix, measured on a private environment
# that it sets up and tears down itself: its own topics (bench.<timestamp>.*), its own databases
# (inventory_bench, orders_bench, recreated each run), its own service processes on ports 1839x,
# started from build/ and stopped on every exit path. Nothing is shared with the dev stack but
# the Kafka broker and the PostgreSQL server (deploy/stack.sh up).
#
#   N. null pipeline, Kafka's floor for this design: stage C's four topics (their own, $P.null.*),
#      partitions and librdkafka settings with a forwarder (build/vxbench forward: consume, parse,
#      produce an answer of the same size, store the offset after delivery; no database) in place of
#      each service; BENCH_ORDERS_N PlaceOrder by kcat: orders/s, CPU of the broker and forwarders per
#      order; then PlaceOrder paced at BENCH_NULL_PACED_RATE: p50 and p99 of one order's four hops
#   A. inventory-svc: N commands with kcat, commands/s until the last answer; peak RSS; latency of
#      commands paced at a fixed rate (build/vxbench paced)
#   B. HTTP: wrk against the gateway's POST /orders, 1 connection and 64 connections
#   C. order path over Kafka: N PlaceOrder with kcat, orders/s until the last OrderResult
#   E. chaos (the seed's latency scenario): closed-loop clients (build/vxbench http-load) at 16 and 64
#      connections without faults, 16 again with BENCH_STREAMS dashboard streams open, then with the gremlin holding back every 5th command for 3 s in
#      inventory-svc, then in order-svc: accepted orders/s against the closed-loop bound
#      (connections x 5 / (4 x the no-fault p50 + 3 s)), 202s and 503s, the undelayed orders' p50
#      against the no-fault p50; then a row lock held 3 s at a time on one product: the p50 of the
#      orders that do not touch it; then the books: no order left PENDING, every unit accounted for
#   D. PostgreSQL alone (pgbench, one client, scratch database floor_bench): its time per order for
#      the services' own SQL calls (place, reserve, decide, each with the relay's mark) against the
#      bare writes the contract needs (tests/bench/floor.sql), in calls of 1,000 orders, of 10 and of
#      one; per order: latency (pgbench), CPU of every postgres process around each run (the backend,
#      and the walwriter, autovacuum... meanwhile; 1/CLK_TCK s resolution; less the CPU of pgbench's
#      statements that draw each call's batch and fetch its arguments) and WAL bytes. Each kind, the
#      calls' and the bare writes', is one statement and one transaction per call, as a service's is
#   Ratios, printed after the summary, each from this run's figures (a row names the stages it lacks):
#      kcat path / null pipeline (orders/s); services' SQL / bare writes (backend CPU and latency) at
#      calls of 1,000 and of 10; total CPU per order / (bare SQL CPU + null pipeline CPU) on the kcat
#      path (bare at calls of 1,000) and at 64 connections (bare at calls of 10, what 64 clients make);
#      one-client p50 / (null pipeline p50 + three bare commits: D's bare writes at calls of one);
#      WAL per order / bare WAL; Produce and Fetch requests per order (the services' or forwarders'
#      clients) on the kcat path, at 64 connections and in the null pipeline, and kcat path / null.
#   Each measurement also prints the CPU of each service, PostgreSQL and the broker per order, the
#   WAL PostgreSQL wrote per order (bytes and records, pg_stat_wal), the Kafka requests per order and
#   the services' SQL calls per order with their entries per call.
#
# Invariant: every figure printed was measured in this run; a stage that does not see all its
# answers prints why, its figures are left out, and the script exits 1.
#
# Settings (environment, default in brackets):
#   BENCH_N [200000]            commands in stage A          BENCH_ORDERS_N [100000]  orders in stage C
#   BENCH_PACED_RATE [1000]     commands/s in the paced run  BENCH_PACED_SECS [20]    its length
#   BENCH_HTTP_SECS [15]        each wrk run                 BENCH_TIMEOUT_SECS [600] wait for a stage's answers
#   BENCH_STAGES [NABCDE]       which stages to run          BENCH_KEEP [0]           1: keep topics and files
#   BENCH_CHAOS_SECS [30]       each closed-loop run of E  BENCH_STREAMS [100]      open /events streams in E
#   BENCH_FLOOR_BATCHES [20]    calls of 1,000 per kind in D  BENCH_FLOOR_BATCHES10 [500] calls of 10 in D
#   BENCH_NULL_PACED_RATE [100] PlaceOrder/s in N's paced run (BENCH_PACED_SECS long)
#   BENCH_D_BASE []             a commit (git ref) whose SQL stage D also measures, kind by kind beside
#                               this tree's: the before of a before/after from the same run, and the
#                               distance to the bare writes (calls less bare), now over then
#   BENCH_D_ROUNDS [5]          with BENCH_D_BASE: each kind's calls in this many rounds, this tree's
#                               share of a round right after the base's
#   VXBENCH [build/vxbench]     the measuring tool
# Tuning knobs of the services (GATEWAY_*, INVENTORY_BATCH_MAX, KAFKA_*, ...) pass through and are
# printed at the start, so a figure always comes with the settings that produced it.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 1

BENCH_N=${BENCH_N:-200000}
BENCH_ORDERS_N=${BENCH_ORDERS_N:-100000}
BENCH_PACED_RATE=${BENCH_PACED_RATE:-1000}
BENCH_PACED_SECS=${BENCH_PACED_SECS:-20}
BENCH_HTTP_SECS=${BENCH_HTTP_SECS:-15}
BENCH_TIMEOUT_SECS=${BENCH_TIMEOUT_SECS:-600}
BENCH_STAGES=${BENCH_STAGES:-NABCDE}
BENCH_NULL_PACED_RATE=${BENCH_NULL_PACED_RATE:-100}
BENCH_CHAOS_SECS=${BENCH_CHAOS_SECS:-30}
BENCH_FLOOR_BATCHES=${BENCH_FLOOR_BATCHES:-20}
BENCH_FLOOR_BATCHES10=${BENCH_FLOOR_BATCHES10:-500}
BENCH_D_BASE=${BENCH_D_BASE:-}
BENCH_D_ROUNDS=${BENCH_D_ROUNDS:-5}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_STREAMS=${BENCH_STREAMS:-100}
VXBENCH=${VXBENCH:-$REPO/build/vxbench}
PRODUCTS=50
SEED_QTY=1000000 # per product, the largest one Restock may carry; the mix restocks more
BROKER=127.0.0.1:9092
PG_URL=postgresql://valerix@127.0.0.1:55432
PSQL=(env PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 55432 -U valerix -d postgres)
OUT=$REPO/var/bench
RUN=$(date -u +%Y%m%d%H%M%S)
STOP_SECS=30

for v in BENCH_D_ROUNDS BENCH_FLOOR_BATCHES10 BENCH_NULL_PACED_RATE BENCH_N BENCH_ORDERS_N BENCH_PACED_RATE BENCH_PACED_SECS BENCH_HTTP_SECS BENCH_TIMEOUT_SECS BENCH_FLOOR_BATCHES BENCH_CHAOS_SECS BENCH_STREAMS; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || {
		echo "bench: $v must be a positive integer, not '${!v}'" >&2
		exit 2
	}
done

# ------------------------------------------------------------------------------------------ helpers

declare -A PID=()    # service name -> pid
declare -A R=()      # summary figures, only ever set from a measurement
FAILED=()            # stages that did not complete
BG=()                # helper processes to reap on exit

say() { printf '%s\n' "$*"; }
head1() { printf '\n== %s\n' "$*"; }
fail() {
	say "!! $1: $2" >&2
	FAILED+=("$1")
}
now_ms() { date +%s%3N; }
# get FILE NAME: the value of "NAME value" in FILE (vxbench and wrk output).
get() { awk -v k="$2" '$1 == k { print $2; exit }' "$1"; }
# wrkval FILE NAME: the value of "wrk NAME value" in FILE (post_orders.lua's done()).
wrkval() { awk -v k="$2" '$1 == "wrk" && $2 == k { print $3; exit }' "$1"; }
# rate COUNT MS: COUNT per second over MS milliseconds.
rate() { awk -v n="$1" -v ms="$2" 'BEGIN { printf "%.0f", (ms > 0 ? n * 1000 / ms : 0) }'; }
us2ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }
mib() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }
vmhwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

# CPU time of our running services, PostgreSQL (every postgres process, exited backends through the
# postmaster's reaped-children time) and the Kafka broker (java), and the WAL PostgreSQL wrote:
# cpu_mark before a measurement, cpu_report COUNT UNIT after it prints each one's seconds and its cost
# per unit, a figure that a busy shared machine moves less than a rate, and that says where the time goes.
TCK=$(getconf CLK_TCK)
declare -A CPU0=()
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null; }
# comm_ticks NAME: user+system ticks of every process called NAME, with their reaped children.
comm_ticks() {
	# cat, not awk's own file list: a process that ends meanwhile is skipped, not an error that stops awk
	cat /proc/[0-9]*/stat 2>/dev/null | awk -v n="($1)" '$2 == n { t += $14 + $15 + $16 + $17 } END { print t + 0 }'
}
# pg_settled: waits (at most 5 s) until no client backend is left, none exiting. comm_ticks reads the
# postmaster's stat and those of its children one after another, so a backend the postmaster reaps
# in between is in neither reading (or in both): a reading taken as a client exits, while its backend
# is ending, can lose that backend's CPU or count it twice. (A run of stage D read 1 us/order for the
# bare writes' second of work; this race is the likely cause, not reproduced by hand in twelve tries.)
# Stage D runs one client at a time and nothing else is connected meanwhile.
pg_settled() {
	local pm i
	pm=$(head -n 1 var/pg/data/postmaster.pid 2>/dev/null) || return 0
	for i in $(seq 100); do
		ps --ppid "$pm" -o stat=,args= | grep -Eq '^Z|postgres: [^ ]+ [^ ]+ 127\.0\.0\.1\(' || return 0
		sleep 0.05
	done
}
cpu_mark() {
	local name
	CPU0=()
	for name in "${!PID[@]}"; do CPU0[$name]=$(cpu_ticks "${PID[$name]}"); done
	CPU0[postgres]=$(comm_ticks postgres)
	CPU0[kafka]=$(comm_ticks java)
	WAL0=$(wal_now)
	KREQ0=$(kreq_now)
	CALLS0=$(calls_now)
}
# running NAME: whether the bench's process NAME (a service or a forwarder) runs.
running() { [[ -n ${PID[$1]:-} ]] && kill -0 "${PID[$1]}" 2>/dev/null; }
# svc_metrics NAME: the /metrics text of service NAME (inventory-svc, order-svc, gateway).
svc_metrics() {
	local addr=$GATEWAY_HTTP_ADDR
	case $1 in
	inventory-svc) addr=$INVENTORY_HTTP_ADDR ;;
	order-svc) addr=$ORDERS_HTTP_ADDR ;;
	esac
	curl -fsS --max-time 5 "http://$addr/metrics" 2>/dev/null
}
# calls_now: "calls entries" of order-svc's, then inventory-svc's, apply calls so far
# (valerix_apply_batch_entries: one observation per SQL call, the call's entries), 0 0 for one that
# does not run: what the fixed cost of a call is shared by.
calls_now() {
	local name
	for name in order-svc inventory-svc; do
		if running "$name"; then
			svc_metrics "$name" |
				awk '/^valerix_apply_batch_entries_count / { c = $2 } /^valerix_apply_batch_entries_sum / { s = $2 }
					END { printf "%d %d ", c, s }'
		else
			printf '0 0 '
		fi
	done
	echo
}
# kreq_now: "produce fetch", the Produce and Fetch requests the running services' (or forwarders')
# Kafka clients have sent so far (valerix_kafka_requests_total: librdkafka's statistics, reported
# once a second; a forwarder prints its own on SIGUSR1); nothing when none of them runs.
kreq_now() {
	local name n i
	for name in inventory-svc order-svc gateway fwd-order fwd-inventory; do
		running "$name" || continue
		echo running # (a client's first report comes a second after it starts: until then, no series)
		if [[ $name != fwd-* ]]; then
			svc_metrics "$name"
			continue
		fi
		n=$(grep -c '^kafka_requests ' "$OUT/$name.out")
		kill -USR1 "${PID[$name]}"
		for ((i = 0; i < 50; i++)); do
			(($(grep -c '^kafka_requests ' "$OUT/$name.out") > n)) && break
			sleep 0.05
		done
		grep '^kafka_requests ' "$OUT/$name.out" | tail -n 1 |
			awk '{ printf "valerix_kafka_requests_total{request=\"Produce\"} %s\nvalerix_kafka_requests_total{request=\"Fetch\"} %s\n", $2, $3 }'
	done | awk '/^running$/ { up = 1 }
		/^valerix_kafka_requests_total\{/ { if (index($0, "request=\"Produce\"")) p += $NF; else if (index($0, "request=\"Fetch\"")) f += $NF }
		END { if (up) printf "%d %d\n", p, f }'
}
# wal_now: "bytes records" of WAL the PostgreSQL server has written so far (pg_stat_wal, cluster-wide).
wal_now() { "${PSQL[@]}" -At -F ' ' -c "SELECT wal_bytes, wal_records FROM pg_stat_wal" 2>/dev/null; }
cpu_report() { # COUNT UNIT [TAG]: with TAG, also R[cpu_TAG_<name>] (us per unit) and R[wal_TAG] (bytes per unit)
	local name t out="" us
	for name in inventory-svc order-svc gateway fwd-order fwd-inventory postgres kafka; do
		[[ -n ${CPU0[$name]:-} ]] || continue
		case $name in
		postgres | kafka) t=$(comm_ticks "$([[ $name == kafka ]] && echo java || echo postgres)") ;;
		*) t=$(cpu_ticks "${PID[$name]:-0}") ;;
		esac
		[[ -n $t ]] || continue
		us=$(awk -v d=$((t - CPU0[$name])) -v hz="$TCK" -v n="$1" 'BEGIN { printf "%.1f", d / hz * 1e6 / n }')
		[[ -n ${3:-} ]] && R[cpu_$3_$name]=$us
		out+="${out:+, }$(awk -v d=$((t - CPU0[$name])) -v hz="$TCK" -v n="$1" -v u="$2" -v s="$name" \
			'BEGIN { printf "%s %.2f s (%.0f us/%s)", s, d / hz, d / hz * 1e6 / n, u }')"
	done
	say "CPU: $out"
	# WAL per unit: what each order costs PostgreSQL in writes, whatever the CPU figures say.
	local wal1
	wal1=$(wal_now)
	if [[ -n ${WAL0:-} && -n $wal1 && -n ${3:-} ]]; then
		R[wal_$3]=$(awk -v a="$WAL0" -v b="$wal1" -v n="$1" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", (y[1] - x[1]) / n }')
	fi
	if [[ -n ${WAL0:-} && -n $wal1 ]]; then say "$(awk -v a="$WAL0" -v b="$wal1" -v n="$1" -v u="$2" 'BEGIN {
		split(a, x, " "); split(b, y, " ")
		printf "WAL: %.1f MiB, %.0f records (%.1f KiB, %.1f records per %s)", (y[1] - x[1]) / 1048576, y[2] - x[2],
			(y[1] - x[1]) / 1024 / n, (y[2] - x[2]) / n, u }')"; fi
	# SQL calls per unit and entries per call, of the services that ran
	local calls
	if [[ -n ${CALLS0:-} ]]; then
		calls=$(awk -v a="$CALLS0" -v b="$(calls_now)" -v n="$1" -v u="$2" 'BEGIN {
			split(a, x, " "); split(b, y, " "); out = ""
			for (i = 1; i <= 3; i += 2) {
				c = y[i] - x[i]; if (c <= 0) continue
				out = out (out == "" ? "" : ", ") sprintf("%s %.3f per %s (%.1f entries a call)",
					i == 1 ? "order-svc" : "inventory-svc", c / n, u, (y[i + 1] - x[i + 1]) / c)
			}
			if (out != "") print "SQL calls: " out }')
		[[ -z $calls ]] || say "$calls"
	fi
	# Kafka requests per unit, once the services' statistics have reported the last second's (the
	# idle fetches of that wait, two a second per consumer, are noise next to a stage's thousands).
	local kreq1
	if [[ -n ${3:-} && -n ${KREQ0:-} ]]; then
		sleep 1.5
		kreq1=$(kreq_now)
		read -r R[produce_$3] R[fetch_$3] < <(awk -v a="$KREQ0" -v b="$kreq1" -v n="$1" 'BEGIN {
			split(a, x, " "); split(b, y, " "); printf "%.3f %.3f\n", (y[1] - x[1]) / n, (y[2] - x[2]) / n }')
		say "Kafka requests of the services' (or forwarders') clients: ${R[produce_$3]} Produce, ${R[fetch_$3]} Fetch per $2"
	fi
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start NAME ADDR: runs build/NAME in the background, logging to var/bench/NAME.log; waits for /ready.
start() {
	local name=$1 addr=$2 t0 deadline
	t0=$(now_ms)
	deadline=$((t0 + 60000))
	port_free "${addr##*:}" || {
		say "!! $addr is already taken (a bench left running? another test?)" >&2
		return 1
	}
	"$REPO/build/$name" >>"$OUT/$name.log" 2>&1 </dev/null 8>&- &
	PID[$name]=$!
	until curl -fsS -o /dev/null --max-time 2 "http://$addr/ready" 2>/dev/null; do
		if ! kill -0 "${PID[$name]}" 2>/dev/null; then
			say "!! $name exited during start-up; last lines of $OUT/$name.log:" >&2
			tail -n 20 "$OUT/$name.log" >&2
			unset "PID[$name]"
			return 1
		fi
		(($(now_ms) < deadline)) || {
			say "!! $name did not answer http://$addr/ready within 60 s" >&2
			return 1
		}
		sleep 0.1
	done
	say "$name: ready (pid ${PID[$name]}) on $addr in $(($(now_ms) - t0)) ms"
}

# stop NAME: SIGTERM, wait up to STOP_SECS, then SIGKILL. Records the peak RSS first.
stop() {
	local name=$1 pid=${PID[$1]:-} i rc hwm
	[[ -n $pid ]] || return 0
	hwm=$(vmhwm_kb "$pid")
	[[ -n $hwm ]] && R[rss_$name]=$hwm
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < STOP_SECS * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "!! $name did not stop within ${STOP_SECS} s of SIGTERM: SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
	rc=$?
	((rc == 0)) || say "!! $name exited with status $rc (log: $OUT/$name.log)" >&2
	unset "PID[$name]"
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	local rc=$? p name
	trap - EXIT INT TERM
	((rc < 128)) || say "bench: interrupted; stopping the bench services" >&2
	for p in "${BG[@]}"; do [[ -n $p ]] && kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	for name in gateway order-svc inventory-svc fwd-order fwd-inventory; do stop "$name"; done
	if [[ $BENCH_KEEP != 1 && -n ${TOPICS:-} ]]; then
		# shellcheck disable=SC2086 # a list of names
		"$VXBENCH" drop-topics $TOPICS >/dev/null || say "!! could not delete the bench topics: $TOPICS" >&2
		rm -f "$OUT"/*.txt
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run CMD...: CMD in the background, waited for, so that SIGINT/SIGTERM reach the trap at once
# (bash runs a trap only after a foreground child ends) and the cleanup can stop CMD too.
run() {
	local p rc
	"$@" &
	p=$!
	BG+=("$p")
	wait "$p"
	rc=$?
	BG=("${BG[@]/$p/}")
	return "$rc"
}

# count_start TOPIC PREFIX EXPECT FILE: reads answers in the background from TOPIC's beginning;
# returns once the reader has its partitions (so a later "last answer" time is not a late read).
COUNT_PID=
count_start() {
	local ready=$4.ready i
	rm -f "$ready" "$4"
	"$VXBENCH" count "$1" "$2" "$3" "$BENCH_TIMEOUT_SECS" "$ready" >"$4" 2>"$4.err" &
	COUNT_PID=$!
	BG+=("$COUNT_PID")
	for ((i = 0; i < 300; i++)); do
		[[ -e $ready ]] && rm -f "$ready" && return 0
		kill -0 "$COUNT_PID" 2>/dev/null || break
		sleep 0.1
	done
	tail -n 5 "$4.err" >&2
	return 1
}
count_wait() {
	local rc
	wait "$COUNT_PID"
	rc=$?
	BG=("${BG[@]/$COUNT_PID/}")
	return "$rc"
}

# produce FILE TOPIC: kcat, one message per line, key before the first '|'.
produce() { run kcat -P -b "$BROKER" -t "$2" -K'|' -l "$1"; }

# outage FILE STAGE: warns when a Kafka client of the measurement lost the broker during it (the
# broker is shared: someone may restart it); the figures stand but are marked in the summary.
declare -A OUTAGE=()
outage() {
	local n
	n=$(get "$1" broker_errors)
	[[ ${n:-0} == 0 ]] && return 0
	OUTAGE[$2]=" (!) broker outage"
	say "WARNING:   the broker connection failed $n time(s) during this measurement: the figure includes the outage"
}

# outcomes FILE: the answer kinds tallied by vxbench count, on one line.
outcomes() { awk '$1 == "outcome" { printf "%s%s=%s", sep, $2, $3; sep = ", " }' "$1"; }

# metrics: the gateway's answer counters and request-reply counters, "name value" per line.
metrics() {
	curl -fsS --max-time 5 "http://$GATEWAY_HTTP_ADDR/metrics" |
		sed -n -e 's/^valerix_http_responses_total{route="POST \/orders",code="\([0-9]*\)"} \([0-9]*\)$/code_\1 \2/p' \
			-e 's/^\(valerix_gateway_[a-z_]*_total\) \([0-9]*\)$/\1 \2/p'
}

# ------------------------------------------------------------------------------------------ set-up

mkdir -p "$OUT"
# One bench at a time: a second one would recreate the first one's databases under it. Long-lived
# children (Kafka, PostgreSQL, the services) are started with fd 8 closed, so only we hold the lock.
exec 8>>"$OUT/.lock"
flock -n 8 || {
	say "bench: another bench is running (lock $OUT/.lock)" >&2
	exit 1
}
: >"$OUT/inventory-svc.log"
: >"$OUT/order-svc.log"
: >"$OUT/gateway.log"
: >"$OUT/vxbench.log"

head1 "Valerix benchmark"
say "date:      $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
say "machine:   $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/^MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
say "load:      $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min; the machine may be shared)"
say "commit:    $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$([[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]] && echo ' + uncommitted changes')"
say "tools:     kcat $(kcat -V 2>&1 | awk '/^Version/ { print $2; exit }'), $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }'), librdkafka $(pkg-config --modversion rdkafka 2>/dev/null), PostgreSQL $("${PSQL[@]}" -tAc 'SHOW server_version' 2>/dev/null | cut -d' ' -f1)"
say "settings:  N=$BENCH_N orders N=$BENCH_ORDERS_N paced=${BENCH_PACED_RATE}/s x ${BENCH_PACED_SECS} s http=${BENCH_HTTP_SECS} s timeout=${BENCH_TIMEOUT_SECS} s stages=$BENCH_STAGES"
TUNING=$(env | grep -E '^(GATEWAY_|INVENTORY_BATCH|ORDERS_BATCH|KAFKA_|VX_OUTBOX|VX_TOPIC_PARTITIONS)' | sort | tr '\n' ' ')
say "tuning:    ${TUNING:-(service defaults)}"

for f in build/inventory-svc build/order-svc build/gateway; do
	[[ -x $f ]] || {
		say "bench: $f is missing; run make first" >&2
		exit 1
	}
done
[[ -x $VXBENCH ]] || {
	say "bench: $VXBENCH is missing; run make build/vxbench" >&2
	exit 1
}
for c in kcat wrk psql curl; do
	command -v "$c" >/dev/null || {
		say "bench: $c not found; run deploy/stack.sh deps" >&2
		exit 1
	}
done

head1 "Environment"
run deploy/stack.sh up >"$OUT/stack.log" 2>&1 8>&- || {
	cat "$OUT/stack.log" >&2
	say "bench: deploy/stack.sh up failed" >&2
	exit 1
}
say "Kafka and PostgreSQL: up ($BROKER, 127.0.0.1:55432)"
"${PSQL[@]}" -c 'DROP DATABASE IF EXISTS inventory_bench WITH (FORCE)' -c 'CREATE DATABASE inventory_bench' \
	-c 'DROP DATABASE IF EXISTS orders_bench WITH (FORCE)' -c 'CREATE DATABASE orders_bench' || {
	say "bench: cannot recreate the bench databases" >&2
	exit 1
}
say "databases: inventory_bench, orders_bench (recreated)"

P=bench.$RUN
export KAFKA_BOOTSTRAP_SERVERS=$BROKER VX_LOG_LEVEL=warn VX_TOPIC_RETENTION_MS=21600000
export INVENTORY_COMMANDS_TOPIC=$P.inventory.commands INVENTORY_EVENTS_TOPIC=$P.inventory.events
export INVENTORY_DLQ_TOPIC=$P.inventory.dlq ORDERS_COMMANDS_TOPIC=$P.orders.commands
export ORDERS_RESULTS_TOPIC=$P.orders.results ORDERS_DLQ_TOPIC=$P.orders.dlq
TOPICS="$INVENTORY_COMMANDS_TOPIC $INVENTORY_EVENTS_TOPIC $INVENTORY_DLQ_TOPIC $ORDERS_COMMANDS_TOPIC $ORDERS_RESULTS_TOPIC $ORDERS_DLQ_TOPIC"
# Groups of their own too: a bench member in the dev services' group would make them rebalance.
export INVENTORY_GROUP_ID=$P.inventory-svc ORDERS_GROUP_ID=$P.order-svc
export INVENTORY_DB=$PG_URL/inventory_bench ORDERS_DB=$PG_URL/orders_bench
export INVENTORY_HTTP_ADDR=127.0.0.1:18391 ORDERS_HTTP_ADDR=127.0.0.1:18392 GATEWAY_HTTP_ADDR=127.0.0.1:18393
export INVENTORY_URL=http://$INVENTORY_HTTP_ADDR ORDERS_URL=http://$ORDERS_HTTP_ADDR
unset VX_CRASH_POINTS VX_GREMLIN_DELAY_MS VX_GREMLIN_EVERY VX_GREMLIN_FRACTION
export VX_CHAOS_TOKEN=bench-$RUN # stage E arms the gremlin at runtime (POST /admin/chaos)
say "topics:    $P.* (deleted at the end unless BENCH_KEEP=1)"
say "logs:      $OUT/*.log (VX_LOG_LEVEL=warn)"

# ------------------------------------------------------------------------------------------ stage N

# The null pipeline: Kafka's floor for this design. The same four topics (topics of their own,
# $P.null.*, made as the services make theirs), partitions and librdkafka settings as stage C, with
# vxbench forward in place of each service: consume, parse, produce an answer of the same size, store
# the offset after delivery; no database. fwd-order stands in for order-svc (orders.commands ->
# inventory.commands, inventory.events -> orders.results), fwd-inventory for inventory-svc
# (inventory.commands -> inventory.events): stage C's four hops.
fwd_start() { # NAME GROUP SPEC...
	local name=$1 group=$2
	shift 2
	"$VXBENCH" forward "$group" $((BENCH_TIMEOUT_SECS * 4)) "$@" >"$OUT/$name.out" 2>>"$OUT/$name.log" </dev/null 8>&- &
	PID[$name]=$!
}
stage_n() {
	local t0 last nt=$P.null f=$OUT/n-paced.out
	head1 "N. null pipeline: $BENCH_ORDERS_N PlaceOrder through kcat over two forwarders (vxbench forward), no database"
	TOPICS+=" $nt.orders.commands $nt.inventory.commands $nt.inventory.events $nt.orders.results"
	: >"$OUT/fwd-order.log"
	: >"$OUT/fwd-inventory.log"
	fwd_start fwd-order "$nt.order-svc" "$nt.orders.commands=$nt.inventory.commands:ReserveStock" \
		"$nt.inventory.events=$nt.orders.results:OrderResult"
	fwd_start fwd-inventory "$nt.inventory-svc" "$nt.inventory.commands=$nt.inventory.events:StockReserved"
	"$VXBENCH" wait-topics 60 "$nt.orders.commands" "$nt.inventory.commands" "$nt.inventory.events" \
		"$nt.orders.results" 2>>"$OUT/vxbench.log" || return 1
	# Both forwarders in their groups before any clock starts: ten orders through, answered.
	"$VXBENCH" orders "$P-nw-" 10 "$PRODUCTS" >"$OUT/n-warm.txt" &&
		count_start "$nt.orders.results" "$P-nw-" 10 "$OUT/n-warm.out" &&
		produce "$OUT/n-warm.txt" "$nt.orders.commands" && count_wait || {
		say "!! the forwarders did not answer the warm-up: $(tail -n 3 "$OUT/fwd-order.log" "$OUT/fwd-inventory.log" | tr '\n' ' ')" >&2
		return 1
	}
	"$VXBENCH" orders "$P-n-" "$BENCH_ORDERS_N" "$PRODUCTS" >"$OUT/n-orders.txt" &&
		count_start "$nt.orders.results" "$P-n-" "$BENCH_ORDERS_N" "$OUT/n.out" || return 1
	cpu_mark
	t0=$(now_ms)
	produce "$OUT/n-orders.txt" "$nt.orders.commands" || return 1
	if ! count_wait; then
		tail -n 5 "$OUT/n.out.err" >&2
		say "results:   $(get "$OUT/n.out" seen) of $BENCH_ORDERS_N within ${BENCH_TIMEOUT_SECS} s" >&2
		return 1
	fi
	last=$(get "$OUT/n.out" last_ms)
	R[n_secs]=$(awk -v a="$t0" -v b="$last" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
	R[n_rate]=$(rate "$BENCH_ORDERS_N" "$(awk -v a="$t0" -v b="$last" 'BEGIN { print b - a }')")
	say "results:   $(get "$OUT/n.out" seen) distinct idempotency keys ($(outcomes "$OUT/n.out")), duplicates $(get "$OUT/n.out" duplicates)"
	say "time:      ${R[n_secs]} s from the first PlaceOrder produced to the last answer consumed"
	outage "$OUT/n.out" N
	cpu_report "$BENCH_ORDERS_N" order n
	R[n_cpu]=$(awk -v a="${R[cpu_n_kafka]:-}" -v b="${R[cpu_n_fwd-order]:-}" -v c="${R[cpu_n_fwd-inventory]:-}" 'BEGIN { printf "%.1f", a + b + c }')
	say "THROUGHPUT ${R[n_rate]} orders/s; CPU ${R[n_cpu]} us/order (broker and forwarders)"
	# One order at a time, as stage B's one client meets the pipeline: PlaceOrder paced, its answer's latency.
	if ! VXBENCH_PACED_MIX=orders run "$VXBENCH" paced "$nt.orders.commands" "$nt.orders.results" "$P-np-" \
		"$BENCH_NULL_PACED_RATE" "$BENCH_PACED_SECS" "$PRODUCTS" 60 >"$f" 2>"$f.err"; then
		tail -n 5 "$f.err" >&2
		return 1
	fi
	outage "$f" N
	R[n_p50]=$(get "$f" p50_ms)
	R[n_p99]=$(get "$f" p99_ms)
	say "LATENCY ms  p50 ${R[n_p50]}  p99 ${R[n_p99]}  (PlaceOrder at ${BENCH_NULL_PACED_RATE}/s for ${BENCH_PACED_SECS} s -> its answer on orders.results)"
	stop fwd-order
	stop fwd-inventory
	say "forwarders: order $(grep -v '^kafka_requests ' "$OUT/fwd-order.out" | tr '\n' ' '); inventory $(grep -v '^kafka_requests ' "$OUT/fwd-inventory.out" | tr '\n' ' ')"
}
if [[ $BENCH_STAGES == *N* ]]; then
	stage_n || fail N "null pipeline did not complete"
	stop fwd-order
	stop fwd-inventory
fi

start inventory-svc "$INVENTORY_HTTP_ADDR" &&
	"$VXBENCH" wait-topics 60 "$INVENTORY_COMMANDS_TOPIC" "$INVENTORY_EVENTS_TOPIC" 2>>"$OUT/vxbench.log" || exit 1

# Stock deep enough that no stage runs out: SEED_QTY of every product, before any clock starts.
seed() {
	"$VXBENCH" seed "$P-seed-" "$PRODUCTS" "$SEED_QTY" >"$OUT/seed.txt" &&
		count_start "$INVENTORY_EVENTS_TOPIC" "$P-seed-" "$PRODUCTS" "$OUT/seed.out" &&
		produce "$OUT/seed.txt" "$INVENTORY_COMMANDS_TOPIC" && count_wait
}
seed || {
	say "bench: seeding $PRODUCTS products failed: $(cat "$OUT/seed.out.err" 2>/dev/null)" >&2
	exit 1
}
say "stock:     $PRODUCTS products SKU-BENCH-001..$(printf %03d $PRODUCTS), $SEED_QTY units each ($(outcomes "$OUT/seed.out"))"

# ------------------------------------------------------------------------------------------ stage A

stage_a_throughput() {
	local t0 t1 last secs
	head1 "A1. inventory-svc throughput: $BENCH_N commands through kcat, until the last answer"
	"$VXBENCH" inventory "$P-a-" "$BENCH_N" "$PRODUCTS" >"$OUT/inventory.txt" || return 1
	say "mix:       $(cut -d'"' -f4 "$OUT/inventory.txt" | sort | uniq -c | awk '{ printf "%s%s %s", sep, $1, $2; sep = ", " }') (1-3 lines of 1-3 units over $PRODUCTS products)"
	count_start "$INVENTORY_EVENTS_TOPIC" "$P-a-" "$BENCH_N" "$OUT/a.out" || return 1
	cpu_mark
	t0=$(now_ms)
	produce "$OUT/inventory.txt" "$INVENTORY_COMMANDS_TOPIC" || {
		say "kcat failed" >&2
		return 1
	}
	t1=$(now_ms)
	say "produced:  $BENCH_N commands in $((t1 - t0)) ms by kcat ($(rate "$BENCH_N" $((t1 - t0))) commands/s into Kafka)"
	if ! count_wait; then
		tail -n 5 "$OUT/a.out.err" >&2
		say "answers:   $(get "$OUT/a.out" seen) of $BENCH_N within ${BENCH_TIMEOUT_SECS} s" >&2
		return 1
	fi
	last=$(get "$OUT/a.out" last_ms)
	secs=$(awk -v a="$t0" -v b="$last" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
	R[a_rate]=$(rate "$BENCH_N" "$(awk -v a="$t0" -v b="$last" 'BEGIN { print b - a }')")
	R[a_secs]=$secs
	say "answers:   $(get "$OUT/a.out" seen) distinct idempotency keys on $INVENTORY_EVENTS_TOPIC ($(outcomes "$OUT/a.out"))"
	say "           duplicates (resent events): $(get "$OUT/a.out" duplicates)"
	say "time:      $secs s from the first command produced to the last answer consumed"
	outage "$OUT/a.out" A1
	cpu_report "$BENCH_N" command
	say "THROUGHPUT ${R[a_rate]} commands/s"
	R[a_rss]=$(vmhwm_kb "${PID[inventory-svc]}")
	say "inventory-svc peak RSS (VmHWM): $(mib "${R[a_rss]}") MiB"
}

stage_a_paced() {
	local f=$OUT/paced.out
	head1 "A2. inventory-svc latency: ${BENCH_PACED_RATE} commands/s for ${BENCH_PACED_SECS} s (vxbench, librdkafka)"
	say "same mix; latency = command handed to librdkafka -> its answer consumed from $INVENTORY_EVENTS_TOPIC"
	say "producer: Valerix's defaults (vx_kafka: idempotent, acks=all, linger.ms=0) plus any KAFKA_* set"
	cpu_mark
	if ! run "$VXBENCH" paced "$INVENTORY_COMMANDS_TOPIC" "$INVENTORY_EVENTS_TOPIC" "$P-p-" "$BENCH_PACED_RATE" \
		"$BENCH_PACED_SECS" "$PRODUCTS" 60 >"$f" 2>"$f.err"; then
		tail -n 5 "$f.err" >&2
		say "answers:   $(get "$f" received) of $(get "$f" sent)" >&2
		return 1
	fi
	say "sent:      $(get "$f" sent) in $(get "$f" send_secs) s; answered: $(get "$f" received); duplicates: $(get "$f" duplicates)"
	outage "$f" A2
	cpu_report "$(get "$f" sent)" command
	for k in p50 p90 p99 p99.9 max mean; do R[paced_$k]=$(get "$f" "${k}_ms"); done
	printf 'LATENCY ms  p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (mean %s)\n' "${R[paced_p50]}" "${R[paced_p90]}" \
		"${R[paced_p99]}" "${R[paced_p99.9]}" "${R[paced_max]}" "${R[paced_mean]}"
}

if [[ $BENCH_STAGES == *A* ]]; then
	if stage_a_throughput; then
		stage_a_paced || fail A2 "paced latency did not complete"
	else
		fail A1 "inventory throughput did not complete"
		fail A2 "skipped: inventory-svc may still be working through A1's backlog"
	fi
fi

# ----------------------------------------------------------------------------------- order path up

orders_up() {
	# order-svc reads inventory.events in its group from the earliest offset: start it past stage A's answers.
	# The gateway fails to start while the results topic order-svc just created has no leader yet.
	"$VXBENCH" group-to-end "$ORDERS_GROUP_ID" "$INVENTORY_EVENTS_TOPIC" >/dev/null &&
		start order-svc "$ORDERS_HTTP_ADDR" &&
		"$VXBENCH" wait-topics 60 "$ORDERS_COMMANDS_TOPIC" "$ORDERS_RESULTS_TOPIC" 2>>"$OUT/vxbench.log" &&
		start gateway "$GATEWAY_HTTP_ADDR"
}

# ------------------------------------------------------------------------------------------ stage B

# wrk_run NAME THREADS CONNECTIONS
wrk_run() {
	local name=$1 t=$2 c=$3 f=$OUT/wrk-$1.out before=$OUT/metrics-$1.before after=$OUT/metrics-$1.after
	head1 "B. HTTP POST /orders, $c connection(s), $t wrk thread(s), ${BENCH_HTTP_SECS} s"
	metrics >"$before" || return 1
	cpu_mark
	run wrk -t"$t" -c"$c" -d"${BENCH_HTTP_SECS}s" --timeout 10s -s tests/bench/post_orders.lua \
		"http://$GATEWAY_HTTP_ADDR/orders" -- "$P-b$c" "$PRODUCTS" >"$f" 2>&1 || {
		cat "$f" >&2
		return 1
	}
	sleep 1 # answers to requests still in flight when wrk stopped
	metrics >"$after" || return 1
	grep -v '^wrk ' "$f" | sed -n '/Requests\/sec\|Socket errors\|Non-2xx/p'
	[[ $(wrkval "$f" requests) =~ ^[1-9] ]] || {
		say "no request completed" >&2
		return 1
	}
	R[${name}_rps]=$(printf '%.0f' "$(wrkval "$f" requests_per_s)")
	for k in p50 p99 p99.9; do R[${name}_$k]=$(us2ms "$(wrkval "$f" "${k}_us")"); done
	R[${name}_err]=$(awk '$1 == "wrk" && $2 ~ /^errors_/ { s += $3 } END { printf "%d", s }' "$f")
	R[${name}_non2xx]=$(printf '%.0f' "$(wrkval "$f" non_2xx_3xx)")
	say "requests:  $(printf '%.0f' "$(wrkval "$f" requests)") in $(awk -v us="$(wrkval "$f" duration_us)" 'BEGIN { printf "%.1f", us / 1e6 }') s"
	say "THROUGHPUT ${R[${name}_rps]} requests/s"
	printf 'LATENCY ms  p50 %s  p99 %s  p99.9 %s  max %s\n' "${R[${name}_p50]}" "${R[${name}_p99]}" "${R[${name}_p99.9]}" \
		"$(us2ms "$(wrkval "$f" max_us)")"
	say "errors:    socket $(awk '$1 == "wrk" && $2 ~ /^errors_/ { printf "%s%s=%d", sep, substr($2, 8), $3; sep = " " }' "$f"); non-2xx/3xx ${R[${name}_non2xx]}"
	R[${name}_codes]=$(awk 'NR == FNR { b[$1] = $2; next } $1 ~ /^code_/ && $1 != "code_200" && $2 - b[$1] > 0 { printf "%s%s=%d", sep, substr($1, 6), $2 - b[$1]; sep = " " }' "$before" "$after")
	say "answers by status (gateway /metrics; POST only, with those still in flight when wrk stopped): ${R[${name}_codes]:-none}"
	cpu_report "$(wrkval "$f" requests)" request "$name"
	say "request-reply: $(awk 'NR == FNR { b[$1] = $2; next } $1 ~ /^valerix_gateway/ { n = $1; sub(/^valerix_gateway_/, "", n); sub(/_total$/, "", n); printf "%s%s=%d", sep, n, $2 - b[$1]; sep = " " }' "$before" "$after")"
}

stage_b() {
	local code
	head1 "B. HTTP: warm-up"
	code=$(curl -sS -o "$OUT/warmup.json" -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' \
		-H "Idempotency-Key: $P-warmup" -d '{"customer_id":"cust-000","items":[{"product_id":"SKU-BENCH-001","quantity":1}]}' \
		"http://$GATEWAY_HTTP_ADDR/orders")
	say "one POST /orders: HTTP $code $(head -c 200 "$OUT/warmup.json")"
	[[ $code == 201 ]] || return 1
	wrk_run b1 1 1 || fail B1 "wrk at 1 connection did not complete"
	wrk_run b64 2 64 || fail B64 "wrk at 64 connections did not complete"
}

# ------------------------------------------------------------------------------------------ stage E

# gremlin ADDR DELAY_MS EVERY: sets a service's latency gremlin (0: off) through /admin/chaos.
gremlin() {
	curl -fsS -o /dev/null --max-time 5 -H "Authorization: Bearer $VX_CHAOS_TOKEN" -H 'Content-Type: application/json' \
		-d "{\"gremlin\":{\"delay_ms\":$2,\"every\":$3,\"fraction\":0}}" "http://$1/admin/chaos"
}

# load NAME CONNS [MARKED]: closed-loop clients for BENCH_CHAOS_SECS, results in $OUT/e-NAME.out.
load() {
	local f=$OUT/e-$1.out
	run "$VXBENCH" http-load "http://$GATEWAY_HTTP_ADDR/orders" "$2" "$BENCH_CHAOS_SECS" "$P-e-$1" "$PRODUCTS" 2500 \
		${3:+"$3"} >"$f" 2>>"$OUT/vxbench.log" || return 1
	R[e_$1_rate]=$(get "$f" accepted_per_s)
	R[e_$1_p50]=$(get "$f" p50_ms)
	R[e_$1_fast]=$(get "$f" fast_p50_ms)
	R[e_$1_codes]="201=$(get "$f" s201) 202=$(get "$f" s202) 409=$(get "$f" s409) 429=$(get "$f" s429) 503=$(get "$f" s503) other=$(get "$f" sother) failed=$(get "$f" failed)"
	say "$1, $2 connections: ${R[e_$1_rate]} accepted orders/s; p50 ${R[e_$1_p50]} ms, p99 $(get "$f" p99_ms) ms; answers ${R[e_$1_codes]}"
	say "           answered in under 2.5 s: $(get "$f" fast) (p50 ${R[e_$1_fast]} ms); slower: $(get "$f" slow)"
}

# streams: the no-fault 16-connection load again with BENCH_STREAMS dashboard streams (GET /events)
# open and read meanwhile; its p50 against the run without them.
streams() {
	local f=$OUT/e-streams.out spid
	"$VXBENCH" streams "http://$GATEWAY_HTTP_ADDR/events" "$BENCH_STREAMS" $((BENCH_CHAOS_SECS + 3)) >"$f" 2>>"$OUT/vxbench.log" &
	spid=$!
	sleep 1
	load str16 16 || return 1
	wait "$spid" || {
		say "!! not every stream was answered 200: $(tr '\n' ' ' <"$f")" >&2
		return 1
	}
	R[e_streams]="$(get "$f" answered_200) streams open (each read $(get "$f" events_min)+ events): p50 ${R[e_str16_p50]} ms, ${R[e_str16_rate]} orders/s; without them p50 ${R[e_base16_p50]} ms, ${R[e_base16_rate]} orders/s"
	say "           ${R[e_streams]}"
}

# verdict NAME CONNS BASE: the closed-loop bound, the share of it reached and the undelayed p50 against
# the no-fault run BASE.
verdict() {
	local bound
	bound=$(awk -v c="$2" -v l="${R[e_$3_p50]}" 'BEGIN { printf "%.1f", c * 5 / (4 * l / 1000 + 3) }')
	R[e_$1_bound]=$bound
	R[e_$1_share]=$(awk -v r="${R[e_$1_rate]}" -v b="$bound" 'BEGIN { printf "%.0f", 100 * r / b }')
	R[e_$1_ok]=$(awk -v s="${R[e_$1_share]}" -v f="${R[e_$1_fast]}" -v l="${R[e_$3_p50]}" -v codes="${R[e_$1_codes]}" \
		'BEGIN { ok = s >= 90 && f <= 2 * l && codes ~ /202=0 / && codes ~ /503=0 /; print ok ? "meets" : "misses" }')
	say "           bound ${bound} orders/s ($2 x 5 / (4 x ${R[e_$3_p50]} ms + 3 s)): ${R[e_$1_share]} % of it; undelayed p50 ${R[e_$1_fast]} ms against ${R[e_$3_p50]} ms without faults: ${R[e_$1_ok]} the target (>= 90 %, <= 2x, no 202, no 503)"
}

# books: once no order is PENDING, the units inventory holds for order-svc's orders are exactly what
# the CONFIRMED ones asked for (none for any other), and every unit is on a shelf or held: nothing
# lost, nothing applied twice. (Stage A's reservations, made straight to Kafka, are held too.)
books() {
	local pending i held other confirmed total stock
	for ((i = 0; i < 120; i++)); do
		pending=$("${PSQL[@]}" -d orders_bench -Atc "SELECT count(*) FROM orders WHERE status = 'PENDING'")
		[[ $pending == 0 ]] && break
		sleep 1
	done
	"${PSQL[@]}" -d orders_bench -Atc "COPY (SELECT id, status FROM orders) TO STDOUT" >"$OUT/e-orders.tsv" || return 1
	read -r held other < <("${PSQL[@]}" -d inventory_bench -At -F ' ' \
		-c "CREATE TEMP TABLE o (id text PRIMARY KEY, status text)" -c "\\copy o FROM '$OUT/e-orders.tsv'" \
		-c "SELECT coalesce(sum(h.quantity) FILTER (WHERE o.status = 'CONFIRMED'), 0), coalesce(sum(h.quantity) FILTER (WHERE o.status <> 'CONFIRMED'), 0) FROM holds h JOIN o ON o.id = h.order_id")
	stock=$("${PSQL[@]}" -d inventory_bench -Atc "SELECT coalesce(sum(stock), 0) + (SELECT coalesce(sum(quantity), 0) FROM holds) FROM products")
	total=$("${PSQL[@]}" -d inventory_bench -Atc "SELECT coalesce(sum((payload::jsonb->>'quantity')::bigint), 0) FROM outbox WHERE payload::jsonb->>'type' = 'Restocked'")
	confirmed=$("${PSQL[@]}" -d orders_bench -Atc "SELECT coalesce(sum((l->>'quantity')::bigint), 0) FROM orders, jsonb_array_elements(items) l WHERE status = 'CONFIRMED'")
	R[e_books]="pending $pending; units held for CONFIRMED orders $held (they asked $confirmed), for others $other; on shelves and held $stock of $total restocked"
	say "books:     ${R[e_books]}"
	[[ $pending == 0 && $held == "$confirmed" && $other == 0 && $stock == "$total" ]]
}

stage_e() {
	local lock_pid
	head1 "E. chaos: closed-loop clients, ${BENCH_CHAOS_SECS} s each"
	load base16 16 || return 1
	load base64 64 || return 1
	streams || return 1
	gremlin "$INVENTORY_HTTP_ADDR" 3000 5 || return 1
	say "gremlin:   inventory-svc holds back every 5th command for 3,000 ms"
	load inv16 16 && verdict inv16 16 base16 || return 1
	load inv64 64 && verdict inv64 64 base64 || return 1
	gremlin "$INVENTORY_HTTP_ADDR" 0 0 && sleep 4 || return 1
	gremlin "$ORDERS_HTTP_ADDR" 3000 5 || return 1
	say "gremlin:   order-svc holds back every 5th command for 3,000 ms"
	load ord16 16 && verdict ord16 16 base16 || return 1
	load ord64 64 && verdict ord64 64 base64 || return 1
	gremlin "$ORDERS_HTTP_ADDR" 0 0 && sleep 4 || return 1
	say "lock:      a row lock on SKU-BENCH-001 held 3 s at a time, 1 s apart, from another connection"
	(while :; do "${PSQL[@]}" -d inventory_bench -c "BEGIN; SELECT 1 FROM products WHERE id = 'SKU-BENCH-001' FOR UPDATE; SELECT pg_sleep(3); COMMIT" >/dev/null 2>&1; sleep 1; done) 8>&- &
	lock_pid=$!
	BG+=("$lock_pid")
	load lock16 16 SKU-BENCH-001
	kill "$lock_pid" 2>/dev/null
	wait "$lock_pid" 2>/dev/null
	BG=("${BG[@]/$lock_pid/}")
	R[e_lock_other]=$(get "$OUT/e-lock16.out" other_p50_ms)
	R[e_lock_marked]=$(get "$OUT/e-lock16.out" marked_p50_ms)
	say "           orders without SKU-BENCH-001: p50 ${R[e_lock_other]} ms ($(get "$OUT/e-lock16.out" other)), with it: p50 ${R[e_lock_marked]} ms ($(get "$OUT/e-lock16.out" marked)); no faults: ${R[e_base16_p50]} ms"
	books || {
		say "!! the books do not balance" >&2
		return 1
	}
}

# ------------------------------------------------------------------------------------------ stage C

stage_c() {
	local t0 t1 last
	head1 "C. order path over Kafka: $BENCH_ORDERS_N PlaceOrder through kcat, until the last OrderResult"
	"$VXBENCH" orders "$P-c-" "$BENCH_ORDERS_N" "$PRODUCTS" >"$OUT/orders.txt" || return 1
	count_start "$ORDERS_RESULTS_TOPIC" "$P-c-" "$BENCH_ORDERS_N" "$OUT/c.out" || return 1
	cpu_mark
	t0=$(now_ms)
	produce "$OUT/orders.txt" "$ORDERS_COMMANDS_TOPIC" || return 1
	t1=$(now_ms)
	say "produced:  $BENCH_ORDERS_N PlaceOrder in $((t1 - t0)) ms by kcat"
	if ! count_wait; then
		tail -n 5 "$OUT/c.out.err" >&2
		say "results:   $(get "$OUT/c.out" seen) of $BENCH_ORDERS_N within ${BENCH_TIMEOUT_SECS} s" >&2
		return 1
	fi
	last=$(get "$OUT/c.out" last_ms)
	R[c_secs]=$(awk -v a="$t0" -v b="$last" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
	R[c_rate]=$(rate "$BENCH_ORDERS_N" "$(awk -v a="$t0" -v b="$last" 'BEGIN { print b - a }')")
	say "results:   $(get "$OUT/c.out" seen) distinct idempotency keys on $ORDERS_RESULTS_TOPIC ($(outcomes "$OUT/c.out"))"
	say "           duplicates (resent results): $(get "$OUT/c.out" duplicates)"
	say "time:      ${R[c_secs]} s from the first PlaceOrder produced to the last OrderResult consumed"
	outage "$OUT/c.out" C
	cpu_report "$BENCH_ORDERS_N" order c
	say "THROUGHPUT ${R[c_rate]} orders/s"
}

if [[ $BENCH_STAGES == *B* || $BENCH_STAGES == *C* || $BENCH_STAGES == *E* ]]; then
	if orders_up; then
		if [[ $BENCH_STAGES == *B* ]]; then stage_b || fail B "HTTP stage did not complete"; fi
		if [[ $BENCH_STAGES == *E* ]]; then stage_e || fail E "chaos stage did not complete"; fi
		# The gateway reads every OrderResult; stage C measures the order path without it.
		stop gateway
		if [[ $BENCH_STAGES == *C* ]]; then stage_c || fail C "order path did not complete"; fi
	else
		fail B/C "order-svc or gateway did not start"
	fi
fi

# ------------------------------------------------------------------------------------------ stage D

# PostgreSQL alone: what the services' calls cost it per order, beside what the contract's rows would
# cost with nothing else done. One database, floor_bench, migrated by the services' own code: order-svc's
# schema in public, inventory-svc's in inv, the bare tables in bare (tests/bench/floor.sql). pgbench
# (one client; prepared statements, the JSON a parameter, as the services send it) runs one kind of
# call at a time and reports each statement's latency: with one client the backend works for all of
# it but the flush of each commit's WAL. (The CPU of every postgres process, read around runs of half a
# second, counted background processes too: more than the wall time of a one-client run.)
FLOOR_DB=floor_bench
floor_pgbench() { # DB NAME SCRIPT CALLS PATTERN [PGOPTIONS]: sets FLOOR_US[NAME], us per call of the statement matching
	# PATTERN, and FLOOR_CPU[NAME] (ticks of every postgres process) and FLOOR_WAL[NAME] (bytes) over the run
	local c0 w0 w1
	pg_settled
	c0=$(comm_ticks postgres)
	w0=$(wal_now)
	PGOPTIONS="-c client_min_messages=warning ${6:-}" pgbench -n -r -M prepared -h 127.0.0.1 -p 55432 -U valerix \
		-t "$4" -f "$3" "$1" >"$OUT/pgbench.$2.log" 2>&1 || {
		tail -n 3 "$OUT/pgbench.$2.log" >&2
		return 1
	}
	pg_settled
	FLOOR_CPU[$2]=$(($(comm_ticks postgres) - c0))
	w1=$(wal_now)
	FLOOR_WAL[$2]=$((${w1%% *} - ${w0%% *}))
	grep -q "number of failed transactions: 0 " "$OUT/pgbench.$2.log" || return 1
	FLOOR_US[$2]=$(awk -v p="$5" '$3 != "" && index($0, p) { printf "%.0f", $1 * 1000; exit }' "$OUT/pgbench.$2.log")
	[[ -n ${FLOOR_US[$2]} ]]
}
floor_setup() { # DB ROOT N BATCHES: database DB migrated by ROOT's migrations, holding the calls of BATCHES batches of N orders
	local db=$1 root=$2 n=$3 batches=$4
	"${PSQL[@]}" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" &&
		"${PSQL[@]}" -d "$db" -c 'CREATE SCHEMA inv' &&
		"$VXBENCH" migrate "$PG_URL/$db" "$root/common/migrations:$root/order-svc/migrations" &&
		"$VXBENCH" migrate "$PG_URL/$db?options=-csearch_path%3Dinv" \
			"$root/common/migrations:$root/inventory-svc/migrations" &&
		"${PSQL[@]}" -d "$db" -v batches="$batches" -v n="$n" -f tests/bench/floor.sql &&
		"${PSQL[@]}" -d "$db" -c "INSERT INTO inv.products (id, name, stock) SELECT 'SKU-' || i, 'floor', 1000000000 FROM generate_series(1, 50) AS i" ||
		return 1
	local kind arg
	for kind in place reserve decide; do # the arrays of the kinds that have a fast path
		floor_path "$db" "$kind" || return 1
		for arg in "${FLOOR_ARGS[@]}"; do
			"${PSQL[@]}" -d "$db" -c "INSERT INTO floor_args SELECT b, kind, '$arg', floor_arg(body, '$arg')
				FROM floor_calls WHERE kind = '$kind'" || return 1
		done
	done
}
floor_add() { # TO FROM US: FLOOR_US[TO] += US, and FROM's CPU and WAL to TO's
	FLOOR_US[$1]=$((${FLOOR_US[$1]:-0} + $3))
	FLOOR_CPU[$1]=$((${FLOOR_CPU[$1]:-0} + FLOOR_CPU[$2]))
	FLOOR_WAL[$1]=$((${FLOOR_WAL[$1]:-0} + FLOOR_WAL[$2]))
}
declare -A FLOOR_TYPE=([place]=PlaceOrder [reserve]=ReserveStock [decide]=StockReserved)
floor_opts() { # KIND: the PGOPTIONS that put the schema of KIND's service first
	[[ $1 == reserve ]] && printf '%s' "-c search_path=inv,public"
	return 0
}
floor_path() { # DB KIND: FLOOR_STEPS, the statements of the fast path that takes KIND's calls on DB
	# (vx_fast_step, common/vx_fast.h) for pgbench, each parameter $j read from a variable :aK, and
	# FLOOR_ARGS, the paths of those parameters (aK is the Kth); both empty when DB has no such path
	local q=(env PGOPTIONS="-c client_min_messages=warning $(floor_opts "$2")" "${PSQL[@]:2}" -At -d "$1") step args sql j k a
	FLOOR_STEPS=() FLOOR_ARGS=()
	[[ $("${q[@]}" -c "SELECT to_regclass('vx_fast_step') IS NOT NULL") == t ]] || return 0
	while IFS=$'\x1f' read -r -d $'\x1e' step args sql || [[ -n $step ]]; do
		IFS=, read -ra a <<<"$args"
		for ((j = ${#a[@]}; j >= 1; j--)); do # $10 before $1
			for ((k = 0; k < ${#FLOOR_ARGS[@]}; k++)); do [[ ${FLOOR_ARGS[k]} == "${a[j - 1]}" ]] && break; done
			((k < ${#FLOOR_ARGS[@]})) || FLOOR_ARGS+=("${a[j - 1]}")
			sql=${sql//\$$j/:a$((k + 1))}
		done
		FLOOR_STEPS+=("$sql;")
		step=
	done < <("${q[@]}" -F $'\x1f' -R $'\x1e' -c "SELECT step, array_to_string(args, ','), sql FROM vx_fast_step
		WHERE '${FLOOR_TYPE[$2]}' = ANY (types) ORDER BY step")
}
floor_fetch() { # SEQUENCE KIND: pgbench's harness, the statements that draw a call's batch from SEQUENCE
	# and fetch that batch's arguments of KIND: into :p, or into :a1, :a2 ... for the fast path that
	# floor_path found last (the calls' scripts and floor_harness share them)
	local k cols=
	printf '%s\n' "SELECT nextval('public.$1') AS b \gset"
	if ((${#FLOOR_ARGS[@]} == 0)); then
		printf '%s\n' "SELECT body AS p FROM public.floor_calls WHERE b = :b AND kind = '$2' \gset"
		return
	fi
	for ((k = 0; k < ${#FLOOR_ARGS[@]}; k++)); do
		cols+="${k:+, }max(v) FILTER (WHERE arg = '${FLOOR_ARGS[k]}') AS a$((k + 1))"
	done
	printf '%s\n' "SELECT ${cols#, } FROM public.floor_args WHERE b = :b AND kind = '$2' \gset"
}
floor_kind() { # DB TAG KIND N CALLS: CALLS more calls of one kind (the database's batch sequence goes on),
	# through the kind's fast path where DB has one, as the service makes them; FLOOR_*[TAG KIND N] add
	# up their time (us), CPU and WAL, FLOOR_US[last] is their us per call
	local db=$1 kind=$3 calls=$5 fn=ord_apply_batch s=$OUT/floor pattern
	[[ $kind == reserve ]] && fn=inv_apply_batch
	floor_path "$db" "$kind" || return 1
	if ((${#FLOOR_STEPS[@]})); then
		{ floor_fetch floor_batch "$kind" && printf '%s\n' '\startpipeline' "${FLOOR_STEPS[@]}" '\endpipeline'; } >"$s.$kind.sql"
		pattern=endpipeline
	else
		{ floor_fetch floor_batch "$kind" && printf '%s\n' "SELECT * FROM $fn(:p::jsonb);"; } >"$s.$kind.sql"
		pattern="$fn("
	fi
	floor_pgbench "$db" last "$s.$kind.sql" "$calls" "$pattern" "$(floor_opts "$kind")" || return 1
	floor_add "$2$3$4" last $((FLOOR_US[last] * calls))
}
floor_mark() { # DB TAG KIND N CALLS: the relay's mark of the outbox rows the calls wrote, in one statement,
	# committed without waiting for the flush as vx_outbox_mark does (the relay marks what many calls
	# wrote at once); FLOOR_US[TAG KIND N] becomes us per call, its share of the mark included
	local k=$2$3$4 opts=
	[[ $3 == reserve ]] && opts="-c search_path=inv,public"
	printf '%s\n' 'DELETE FROM outbox_pending WHERE id = ANY (ARRAY(SELECT id FROM outbox_pending));' >"$OUT/floor.mark.sql"
	floor_pgbench "$1" "mark$k" "$OUT/floor.mark.sql" 1 "DELETE FROM outbox_pending" "$opts -c synchronous_commit=off" || return 1
	floor_add "$k" "mark$k" "${FLOOR_US[mark$k]}"
	FLOOR_US[$k]=$((FLOOR_US[$k] / $5))
}
floor_round() { # N BATCHES: the calls of batches of N orders (and, with BENCH_D_BASE, the same calls on that
	# commit's migrations, in BENCH_D_ROUNDS rounds of each kind, this tree's share of a round right
	# after the base's: this machine's speed drifts within a minute, and a round's pair sees the same
	# speed; FLOOR_WINS[KIND N] counts the rounds in which this tree's calls took less time), then the
	# bare writes of the same orders
	local n=$1 batches=$2 kind r per=$(($2 / BENCH_D_ROUNDS)) s=$OUT/floor t c
	# A checkpoint before the databases are made: no page the runs touch predates the last
	# checkpoint, so no run pays full-page images for its pages (a timed checkpoint in the middle of
	# one tree's share once wrote 12,013 B/order where its pair wrote 3,717). The old databases go
	# first: DROP DATABASE forces a checkpoint of its own, which would leave the pages of the
	# database made before it to pay. One from here to the end of the runs is reported.
	"${PSQL[@]}" -c "DROP DATABASE IF EXISTS $FLOOR_DB WITH (FORCE)" -c "DROP DATABASE IF EXISTS ${FLOOR_DB}_base WITH (FORCE)" \
		-c CHECKPOINT >/dev/null || return 1
	c=$(checkpoints)
	floor_setup "$FLOOR_DB" "$REPO" "$n" "$batches" || return 1
	if [[ -n $BENCH_D_BASE ]]; then floor_setup "${FLOOR_DB}_base" "$OUT/base" "$n" "$batches" || return 1; fi
	for kind in place reserve decide; do
		"${PSQL[@]}" -d "$FLOOR_DB" -c "SELECT setval('floor_batch', 1, false)" >/dev/null || return 1
		if [[ -z $BENCH_D_BASE ]]; then
			floor_kind "$FLOOR_DB" "" "$kind" "$n" "$batches" && floor_mark "$FLOOR_DB" "" "$kind" "$n" "$batches" || return 1
			continue
		fi
		"${PSQL[@]}" -d "${FLOOR_DB}_base" -c "SELECT setval('floor_batch', 1, false)" >/dev/null || return 1
		FLOOR_WINS[$kind$n]=0
		for ((r = 0; r < BENCH_D_ROUNDS; r++)); do
			floor_kind "${FLOOR_DB}_base" base "$kind" "$n" "$per" || return 1
			t=${FLOOR_US[last]}
			floor_kind "$FLOOR_DB" "" "$kind" "$n" "$per" || return 1
			((FLOOR_US[last] < t)) && FLOOR_WINS[$kind$n]=$((FLOOR_WINS[$kind$n] + 1))
		done
		floor_mark "$FLOOR_DB" "" "$kind" "$n" $((per * BENCH_D_ROUNDS)) &&
			floor_mark "${FLOOR_DB}_base" base "$kind" "$n" $((per * BENCH_D_ROUNDS)) || return 1
	done
	# The bare writes: the three transactions of each batch, the rows the contract names and no more
	# (floor_bare, tests/bench/floor.sql), each kind a statement of its own as the services' calls are;
	# FLOOR_*[bare N] add up the three
	for kind in place reserve decide; do
		printf '%s\n' "CALL floor_bare(nextval('public.floor_batch')::int, '$kind');" >"$s.bare.sql"
		"${PSQL[@]}" -d "$FLOOR_DB" -c "SELECT setval('floor_batch', 1, false)" >/dev/null &&
			floor_pgbench "$FLOOR_DB" "bare$kind$n" "$s.bare.sql" "$batches" "CALL floor_bare" || return 1
		floor_add "bare$n" "bare$kind$n" "${FLOOR_US[bare$kind$n]}"
	done
	floor_harness "$n" "$batches"
	[[ $(checkpoints) == "$c" ]] ||
		say "!! a checkpoint ran while the calls of $n order(s) were made or run: the full-page images after it count in their figures" >&2
}
checkpoints() { "${PSQL[@]}" -At -c "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"; }
floor_harness() { # N CALLS: FLOOR_CPU[harness N], the CPU of the two statements by which pgbench
	# draws each call's batch and fetches its arguments, alone: floor_figures takes it out of the calls'
	# CPU (the bare writes have no such statements: their CALL draws its batch itself)
	local kind s=$OUT/floor.harness.sql fetch
	for kind in place reserve decide; do
		floor_path "$FLOOR_DB" "$kind" && floor_fetch floor_harness "$kind" >"$s" || return 1
		fetch="SELECT body" # (pgbench -r prints a statement's first 80 characters or so)
		((${#FLOOR_ARGS[@]} == 0)) || fetch="SELECT max(v)"
		"${PSQL[@]}" -d "$FLOOR_DB" -c "SELECT setval('floor_harness', 1, false)" >/dev/null &&
			floor_pgbench "$FLOOR_DB" "harness$kind$1" "$s" "$2" "$fetch" || return 1
		FLOOR_CPU[harness$1]=$((${FLOOR_CPU[harness$1]:-0} + FLOOR_CPU[harness$kind$1]))
	done
}
floor_figures() { # TAG N ORDERS: R[d_<TAG>calls N], us per order of the three kinds of call, and their CPU and WAL
	local t=$1 n=$2 o=$3 k
	for k in place reserve decide; do FLOOR_US[$t$k$n]=$(awk -v us="${FLOOR_US[$t$k$n]}" -v n="$n" 'BEGIN { printf "%.0f", us / n }'); done
	R[d_${t}calls$n]=$((FLOOR_US[${t}place$n] + FLOOR_US[${t}reserve$n] + FLOOR_US[${t}decide$n]))
	# CPU of the backends (every postgres process, 1/CLK_TCK s resolution) and WAL, per order
	# less the harness's statements, the same calls on both trees
	R[d_${t}callscpu$n]=$(awk -v t=$((FLOOR_CPU[${t}place$n] + FLOOR_CPU[${t}reserve$n] + FLOOR_CPU[${t}decide$n] -
		FLOOR_CPU[harness$n])) -v hz="$TCK" -v o="$o" 'BEGIN { printf "%.1f", t / hz * 1e6 / o }')
	R[d_${t}callswal$n]=$(((FLOOR_WAL[${t}place$n] + FLOOR_WAL[${t}reserve$n] + FLOOR_WAL[${t}decide$n]) / o))
}
stage_d() {
	local n b
	declare -gA FLOOR_US=() FLOOR_CPU=() FLOOR_WAL=() FLOOR_WINS=()
	head1 "D. PostgreSQL alone: time per order, the services' calls against the bare writes (pgbench, 1 client)"
	command -v pgbench >/dev/null || {
		say "pgbench not found (Debian package postgresql-client-common)" >&2
		return 1
	}
	if [[ -n $BENCH_D_BASE ]]; then
		# The migrations of the commit to compare with, as they were in it.
		rm -rf "$OUT/base" && mkdir -p "$OUT/base" &&
			git -C "$REPO" archive "$BENCH_D_BASE" common/migrations order-svc/migrations inventory-svc/migrations |
			tar -x -C "$OUT/base" || {
			say "BENCH_D_BASE=$BENCH_D_BASE: no migrations at that commit" >&2
			return 1
		}
	fi
	for n in 1000 10 1; do
		case $n in 1000) b=$BENCH_FLOOR_BATCHES ;; 10) b=$BENCH_FLOOR_BATCHES10 ;; 1) b=500 ;; esac
		if [[ -n $BENCH_D_BASE ]]; then
			((b >= BENCH_D_ROUNDS)) || {
				say "BENCH_D_ROUNDS=$BENCH_D_ROUNDS: more rounds than the $b calls of $n order(s)" >&2
				return 1
			}
			b=$((b / BENCH_D_ROUNDS * BENCH_D_ROUNDS)) # whole rounds
		fi
		floor_round "$n" "$b" || return 1
		floor_figures "" "$n" $((n * b))
		R[d_bare$n]=$(awk -v us="${FLOOR_US[bare$n]}" -v n="$n" 'BEGIN { printf "%.0f", us / n }')
		R[d_barecpu$n]=$(awk -v t="${FLOOR_CPU[bare$n]}" -v hz="$TCK" -v o=$((n * b)) 'BEGIN { printf "%.1f", t / hz * 1e6 / o }')
		R[d_barewal$n]=$((FLOOR_WAL[bare$n] / (n * b)))
		say "calls of $n order(s), $b calls: services' calls ${R[d_calls$n]} us/order (place ${FLOOR_US[place$n]}, reserve ${FLOOR_US[reserve$n]}, decide ${FLOOR_US[decide$n]}, each with its mark); bare writes ${R[d_bare$n]} us/order (place $((FLOOR_US[bareplace$n] / n)), reserve $((FLOOR_US[barereserve$n] / n)), decide $((FLOOR_US[baredecide$n] / n)))"
		say "           PostgreSQL CPU: calls ${R[d_callscpu$n]} us/order (the harness's statements, $(awk -v t="${FLOOR_CPU[harness$n]}" -v hz="$TCK" -v o=$((n * b)) 'BEGIN { printf "%.1f", t / hz * 1e6 / o }') us/order, taken out), bare ${R[d_barecpu$n]} us/order; WAL: calls ${R[d_callswal$n]} B/order, bare ${R[d_barewal$n]} B/order"
		if [[ -n $BENCH_D_BASE ]]; then
			floor_figures base "$n" $((n * b))
			say "           at $BENCH_D_BASE: calls ${R[d_basecalls$n]} us/order (place ${FLOOR_US[baseplace$n]}, reserve ${FLOOR_US[basereserve$n]}, decide ${FLOOR_US[basedecide$n]}); CPU ${R[d_basecallscpu$n]} us/order; WAL ${R[d_basecallswal$n]} B/order"
			say "           rounds in which this tree's calls took less time: place ${FLOOR_WINS[place$n]}, reserve ${FLOOR_WINS[reserve$n]}, decide ${FLOOR_WINS[decide$n]} of $BENCH_D_ROUNDS"
		fi
	done
	"${PSQL[@]}" -c "DROP DATABASE IF EXISTS $FLOOR_DB WITH (FORCE)" -c "DROP DATABASE IF EXISTS ${FLOOR_DB}_base WITH (FORCE)" >/dev/null
	n=$(nproc)
	say "budget:    on $n cores, 20,000 orders/s leave $((n * 1000000 / 20000)) us of CPU per order for everything, 5,000 requests/s $((n * 1000000 / 5000)) us"
}
if [[ $BENCH_STAGES == *D* ]]; then
	# The services would only add their upkeep's noise.
	stop order-svc
	stop inventory-svc
	stage_d || fail D "PostgreSQL stage did not complete"
fi

# ------------------------------------------------------------------------------------------ summary

for name in inventory-svc order-svc gateway; do
	[[ -n ${PID[$name]:-} ]] && R[rss_$name]=$(vmhwm_kb "${PID[$name]}")
done
for name in inventory-svc order-svc gateway; do
	n=$(grep -c '"level":"\(warn\|error\)"' "$OUT/$name.log" 2>/dev/null)
	R[logw_$name]=${n:-0}
done

head1 "Summary ($(nproc) CPUs, commit $(git rev-parse --short HEAD 2>/dev/null), load now $(cut -d' ' -f1-3 /proc/loadavg))"
row() { printf '%-46s %s\n' "$1" "$2"; }
# fig KEY TEXT: TEXT when figure KEY was measured, else says it was not.
fig() { if [[ -n ${R[$1]:-} ]]; then echo "$2"; else echo "not measured"; fi; }
row "A1 inventory-svc (N=$BENCH_N)" "$(fig a_rate "${R[a_rate]:-} commands/s (${R[a_secs]:-} s)${OUTAGE[A1]:-}")"
row "A1 inventory-svc peak RSS (VmHWM) after A1" "$(fig a_rss "$(mib "${R[a_rss]:-0}") MiB")"
row "A2 latency @${BENCH_PACED_RATE}/s for ${BENCH_PACED_SECS} s, ms" \
	"$(fig paced_p50 "p50 ${R[paced_p50]:-}  p90 ${R[paced_p90]:-}  p99 ${R[paced_p99]:-}  p99.9 ${R[paced_p99.9]:-}  max ${R[paced_max]:-}${OUTAGE[A2]:-}")"
for b in b1:1 b64:64; do
	k=${b%%:*}
	row "B  POST /orders, ${b##*:} conn: req/s; ms" "$(fig "${k}_rps" "${R[${k}_rps]:-} req/s  p50 ${R[${k}_p50]:-}  p99 ${R[${k}_p99]:-}  p99.9 ${R[${k}_p99.9]:-}  errors ${R[${k}_err]:-}  non-2xx ${R[${k}_non2xx]:-}  [${R[${k}_codes]:-}]")"
done
row "E  16 conn with $BENCH_STREAMS /events streams open" "$(fig e_streams "${R[e_streams]:-}")"
for e in inv16:16:inventory-svc inv64:64:inventory-svc ord16:16:order-svc ord64:64:order-svc; do
	IFS=: read -r k c svc <<<"$e"
	row "E  gremlin 3 s/5th in $svc, $c conn" "$(fig "e_${k}_share" "${R[e_${k}_rate]:-} orders/s = ${R[e_${k}_share]:-} % of ${R[e_${k}_bound]:-}; undelayed p50 ${R[e_${k}_fast]:-} ms; [${R[e_${k}_codes]:-}] ${R[e_${k}_ok]:-}")"
done
row "E  row lock 3 s/4 s on one product, 16 conn" "$(fig e_lock_other "p50 without it ${R[e_lock_other]:-} ms, with it ${R[e_lock_marked]:-} ms; no faults ${R[e_base16_p50]:-} ms")"
row "E  books after E" "$(fig e_books "${R[e_books]:-}")"
row "N  null pipeline (N=$BENCH_ORDERS_N)" "$(fig n_rate "${R[n_rate]:-} orders/s (${R[n_secs]:-} s)${OUTAGE[N]:-}; p50 ${R[n_p50]:-} ms, p99 ${R[n_p99]:-} ms at ${BENCH_NULL_PACED_RATE}/s; CPU ${R[n_cpu]:-} us/order (broker ${R[cpu_n_kafka]:-}, forwarders ${R[cpu_n_fwd-order]:-} + ${R[cpu_n_fwd-inventory]:-})")"
row "C  order path (N=$BENCH_ORDERS_N)" "$(fig c_rate "${R[c_rate]:-} orders/s (${R[c_secs]:-} s)${OUTAGE[C]:-}")"
for n in 1000 10 1; do
	row "D  PostgreSQL per order, calls of $n" "$(fig "d_calls$n" "services' calls ${R[d_calls$n]:-} us, bare writes ${R[d_bare$n]:-} us; backend CPU ${R[d_callscpu$n]:-} / ${R[d_barecpu$n]:-} us")"
done
for name in inventory-svc order-svc gateway; do
	row "   $name peak RSS (VmHWM), whole run" "$(fig "rss_$name" "$(mib "${R[rss_$name]:-0}") MiB")"
done
row "   warn/error lines in the service logs" "inventory-svc ${R[logw_inventory-svc]}, order-svc ${R[logw_order-svc]}, gateway ${R[logw_gateway]} ($OUT)"

# ------------------------------------------------------------------------------------------ ratios

# Each ratio from figures of this run only; a row whose figures are missing names the stages it needs.
# ratio LABEL STAGES "NUM_DESC" NUM "DEN_DESC" DEN [UNIT]: NUM / DEN to two places, with both figures.
ratio() {
	local label=$1 stages=$2 nd=$3 num=$4 dd=$5 den=$6
	if [[ -z $num || -z $den ]] || ! awk -v d="$den" 'BEGIN { exit !(d > 0) }'; then
		row "$label" "not measured: needs stage(s) $stages of this run"
	else
		row "$label" "$(awk -v a="$num" -v b="$den" 'BEGIN { printf "%.2f", a / b }')  ($nd $num / $dd $den)"
	fi
}
# sum KEY...: the sum of figures R[KEY], empty when any is missing.
sum() {
	local k t=0
	for k; do
		[[ -n ${R[$k]:-} ]] || return 0
		t=$(awk -v a="$t" -v b="${R[$k]}" 'BEGIN { printf "%.1f", a + b }')
	done
	echo "$t"
}
# minus A B: figure A less figure B (values, not keys), empty when either is missing.
minus() { [[ -n $1 && -n $2 ]] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }
head1 "Ratios (each from this run's figures)"
ratio "kcat path / null pipeline, orders/s" "C, N" "C" "${R[c_rate]:-}" "N" "${R[n_rate]:-}"
for n in 1000 10; do
	ratio "SQL / bare writes, backend CPU, calls of $n" "D" "calls" "${R[d_callscpu$n]:-}" "bare" "${R[d_barecpu$n]:-}"
	ratio "SQL / bare writes, latency, calls of $n" "D" "calls" "${R[d_calls$n]:-}" "bare" "${R[d_bare$n]:-}"
done
if [[ -n $BENCH_D_BASE ]]; then
	for n in 1000 10 1; do
		ratio "SQL now / SQL at $BENCH_D_BASE, CPU, calls of $n" "D" "now" "${R[d_callscpu$n]:-}" "then" "${R[d_basecallscpu$n]:-}"
		ratio "SQL now / SQL at $BENCH_D_BASE, latency, calls of $n" "D" "now" "${R[d_calls$n]:-}" "then" "${R[d_basecalls$n]:-}"
	done
	ratio "WAL now / WAL at $BENCH_D_BASE, calls of 1000" "D" "now" "${R[d_callswal1000]:-}" "then" "${R[d_basecallswal1000]:-}"
	# The distance to the floor, now and then: what either tree's SQL costs above the same bare writes.
	for n in 1000 10 1; do
		ratio "distance to bare now / at $BENCH_D_BASE, CPU, calls of $n" "D" \
			"now" "$(minus "${R[d_callscpu$n]:-}" "${R[d_barecpu$n]:-}")" \
			"then" "$(minus "${R[d_basecallscpu$n]:-}" "${R[d_barecpu$n]:-}")"
		ratio "distance to bare now / at $BENCH_D_BASE, latency, calls of $n" "D" \
			"now" "$(minus "${R[d_calls$n]:-}" "${R[d_bare$n]:-}")" \
			"then" "$(minus "${R[d_basecalls$n]:-}" "${R[d_bare$n]:-}")"
	done
	ratio "distance to bare now / at $BENCH_D_BASE, WAL, calls of 1000" "D" \
		"now" "$(minus "${R[d_callswal1000]:-}" "${R[d_barewal1000]:-}")" \
		"then" "$(minus "${R[d_basecallswal1000]:-}" "${R[d_barewal1000]:-}")"
fi
R[c_cpu]=$(sum cpu_c_postgres cpu_c_kafka cpu_c_order-svc cpu_c_inventory-svc)
R[b64_cpu]=$(sum cpu_b64_postgres cpu_b64_kafka cpu_b64_gateway cpu_b64_order-svc cpu_b64_inventory-svc)
R[floor_c]=$(sum d_barecpu1000 n_cpu)
R[floor_b64]=$(sum d_barecpu10 n_cpu)
ratio "CPU/order / (bare SQL@1000 + null), kcat path" "C, D, N" "C us" "${R[c_cpu]:-}" "us" "${R[floor_c]:-}"
ratio "CPU/order / (bare SQL@10 + null), 64 conn" "B, D, N" "B64 us" "${R[b64_cpu]:-}" "us" "${R[floor_b64]:-}"
R[floor_p50]=$(awk -v a="${R[n_p50]:-}" -v b="${R[d_bare1]:-}" 'BEGIN { if (a != "" && b != "") printf "%.2f", a + b / 1000 }')
ratio "1-client p50 / (null p50 + 3 bare commits)" "B, D, N" "B1 ms" "${R[b1_p50]:-}" "ms" "${R[floor_p50]:-}"
for t in "c:kcat path:C" "b64:64 conn:B" "n:null pipeline:N"; do
	IFS=: read -r k label st <<<"$t"
	if [[ -n ${R[produce_$k]:-} ]]; then
		row "Produce, Fetch requests per order, $label" "${R[produce_$k]} Produce, ${R[fetch_$k]} Fetch (the services' or forwarders' clients: valerix_kafka_requests_total)"
	else
		row "Produce, Fetch requests per order, $label" "not measured: needs stage $st of this run"
	fi
done
for k in c n; do
	[[ -n ${R[produce_$k]:-} ]] && R[kreq_$k]=$(awk -v a="${R[produce_$k]}" -v b="${R[fetch_$k]}" 'BEGIN { printf "%.4f", a + b }')
done
ratio "Kafka requests per order, kcat path / null" "C, N" "C" "${R[kreq_c]:-}" "N" "${R[kreq_n]:-}"
ratio "WAL per order / bare WAL, kcat path" "C, D" "C B" "${R[wal_c]:-}" "bare@1000 B" "${R[d_barewal1000]:-}"
ratio "WAL per order / bare WAL, 64 conn" "B, D" "B64 B" "${R[wal_b64]:-}" "bare@10 B" "${R[d_barewal10]:-}"

if ((${#FAILED[@]})); then
	say ""
	say "FAILED: ${FAILED[*]}"
	exit 1
fi
exit 0
