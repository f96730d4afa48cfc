#!/usr/bin/env bash
# soak.sh: `make soak` and `make soak-short`. Sets up a Valerix stack of the soak's own, wiped first
# (data in var/soak; Kafka 19092/19093, PostgreSQL 25442, services 18480-18482, so the shared stack
# under var/ on 9092/55432/8080-8082 is never touched), runs build/vxsoak on it (load, kill -9 of any
# component, the invariant checks, the report) and brings the soak stack down. The data folder is
# kept, so a failed run can be inspected; the next soak wipes it.
#
# Exit status: vxsoak's. 0 only with zero violations; 1 violations; 2 the soak could not do its job
# (setup failure, a component that does not come back, too few kills): it fails loudly, never skips.
#
# Settings (environment; the full list with defaults is in tests/soak/README.md):
#   DURATION [600] seconds of load and chaos, KILL_EVERY [10] mean seconds between kills,
#   MIN_KILLS [0] the chaos phase runs on until this many kills are done (at most 2 x DURATION),
#   SOAK_DIR [<repo>/var/soak], SOAK_HTTP_PORT [18480] (gateway; order-svc +1, inventory-svc +2; not 18080:
#   the inventory integration suite listens on 18082),
#   SOAK_* (rates, crash points, gremlin; see the README).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SOAK_DIR=$(realpath -m "${SOAK_DIR:-$REPO/var/soak}")

# The soak stack: every setting deploy/stack.sh and the services read, none left to a default that
# would point at the shared stack.
export VX_DATA_DIR=$SOAK_DIR
export VX_KAFKA_LIBS=${VX_KAFKA_LIBS:-$REPO/var/kafka/libs} # the downloaded broker jars, shared
# PostgreSQL's port is below 32768, outside Linux's ephemeral range (ip_local_port_range 32768-60999):
# a client connection that happens to hold a port in it makes PostgreSQL's bind fail (55462, the
# port this stack had, was taken so once when make test reached it).
export VX_BROKER_PORT=19092 VX_CONTROLLER_PORT=19093 VX_PG_PORT=25442
SOAK_HTTP_PORT=${SOAK_HTTP_PORT:-18480}
export GATEWAY_HTTP_ADDR=127.0.0.1:$SOAK_HTTP_PORT ORDERS_HTTP_ADDR=127.0.0.1:$((SOAK_HTTP_PORT + 1))
export INVENTORY_HTTP_ADDR=127.0.0.1:$((SOAK_HTTP_PORT + 2))
export ORDERS_URL=http://$ORDERS_HTTP_ADDR INVENTORY_URL=http://$INVENTORY_HTTP_ADDR
export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$VX_BROKER_PORT
export INVENTORY_DB=postgresql://valerix@127.0.0.1:$VX_PG_PORT/inventory
export ORDERS_DB=postgresql://valerix@127.0.0.1:$VX_PG_PORT/orders
export VX_SEED_FILE=/dev/null # vxsoak seeds a scarce catalog of its own
export SOAK_REPO=$REPO
# The services' own group settings (static membership, a 10 s session: README, Recovery after a
# crash) are what the soak measures; KAFKA_CONSUMER_SESSION_TIMEOUT_MS and the like still pass through.
# The services start without chaos; vxsoak switches it on and off through POST /admin/chaos.
VX_CHAOS_TOKEN=${VX_CHAOS_TOKEN:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
export VX_CHAOS_TOKEN
unset VX_CRASH_POINTS VX_GREMLIN_DELAY_MS VX_GREMLIN_EVERY VX_GREMLIN_FRACTION

STACK=$REPO/deploy/stack.sh
VXSOAK=${VXSOAK:-$REPO/build/vxsoak} # the soak itself (another build of it, for instance)

say() { printf 'soak: %s\n' "$*"; }

down() { "$STACK" down >>"$SOAK_DIR/soak-stack.log" 2>&1 || say "warning: deploy/stack.sh down failed (see $SOAK_DIR/soak-stack.log)"; }

trap 'echo; say "interrupted; bringing the soak stack down"; down; exit 130' INT TERM

[[ -x $VXSOAK ]] || {
	say "error: no $VXSOAK (run: make build/vxsoak)"
	exit 2
}

say "fresh soak stack in $SOAK_DIR (Kafka :$VX_BROKER_PORT, PostgreSQL :$VX_PG_PORT, gateway $GATEWAY_HTTP_ADDR)"
if ! { "$STACK" wipe && "$STACK" up && "$STACK" services-up; }; then
	say "error: the soak stack did not come up (output above); nothing was tested"
	down
	exit 2
fi

rc=0
"$VXSOAK" run 2>>"$SOAK_DIR/log/vxsoak.log" || rc=$?
down
if ((rc == 0)); then
	say "PASS; the soak stack is down (its data stays in $SOAK_DIR until the next soak)"
else
	say "FAIL (exit $rc). Kept for inspection: $SOAK_DIR (service logs in $SOAK_DIR/log, stack.sh output in" \
		"$SOAK_DIR/soak-stack.log). To look at its databases and topics again:"
	say "  VX_DATA_DIR=$SOAK_DIR VX_BROKER_PORT=$VX_BROKER_PORT VX_CONTROLLER_PORT=$VX_CONTROLLER_PORT" \
		"VX_PG_PORT=$VX_PG_PORT deploy/stack.sh up"
fi
exit "$rc"
