# shellcheck shell=bash
# tests/ops/lib.sh: what the operator's tests (drill.sh, toolkit.sh) share, sourced by each: the
# verdicts (pass, fail, check, abort: every failure is counted and named in the last line), clocks,
# psql, and starting and stopping a service of the run's own stack. Invariant: a service started
# here is in PID until stopped, so the caller's EXIT trap can stop whatever still runs.
# The caller sets REPO, OUT, PG_URL, PSQL, STOP_SECS and defines say() (its prefix) before sourcing.

declare -A PID=() # service name -> pid
FAILS=()
NPASS=0
now_ms() { date +%s%3N; }
secs_since() { awk -v ms=$(($(now_ms) - $1)) 'BEGIN { printf "%.1f", ms / 1000 }'; }
pass() {
	NPASS=$((NPASS + 1))
	say "PASS $*"
}
fail() {
	local what="$*"
	say "FAIL $what"
	what=${what%%:*}
	FAILS+=("${what:0:50}")
}
# check COND MESSAGE: pass or fail MESSAGE on COND (a string: 1 or 0).
check() { if (($1)); then pass "$2"; else fail "$2"; fi; }
# abort WHY: a part that cannot go on; the caller's EXIT trap stops what was started.
abort() {
	fail "$*"
	exit 1
}
sql() { "${PSQL[@]}" -d "$PG_URL/$1" -c "$2"; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# show FILE: a file's lines, indented, for a failure's context.
show() { sed 's/^/    | /' "$1" | head -n 40 >&2; }

# start NAME ADDR: build/NAME in the background, logging to $OUT/NAME.log, until its /ready answers.
start() {
	local name=$1 addr=$2 t0 deadline
	t0=$(now_ms)
	deadline=$((t0 + 60000))
	port_free "${addr##*:}" || abort "$addr is already taken (another run of $(basename "$0")?)"
	"$REPO/build/$name" >>"$OUT/$name.log" 2>&1 </dev/null 8>&- &
	PID[$name]=$!
	until curl -fsS -o /dev/null --max-time 2 "http://$addr/ready" 2>/dev/null; do
		if ! kill -0 "${PID[$name]}" 2>/dev/null; then
			tail -n 20 "$OUT/$name.log" >&2
			unset "PID[$name]"
			abort "$name exited during start-up (log: $OUT/$name.log)"
		fi
		(($(now_ms) < deadline)) || abort "$name did not answer http://$addr/ready within 60 s"
		sleep 0.1
	done
	say "$name: ready (pid ${PID[$name]}) on $addr in $(($(now_ms) - t0)) ms"
}

# stop NAME: SIGTERM, wait up to STOP_SECS, then SIGKILL.
stop() {
	local name=$1 pid=${PID[$1]:-} i
	[[ -n $pid ]] || return 0
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < STOP_SECS * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "$name did not stop within $STOP_SECS s of SIGTERM: SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
	unset "PID[$name]"
}
