#!/usr/bin/env bash
# auth.sh [scram|scram-tls]: `make auth` and `make test` (each mode in turn). Authenticated connections
# (issue 17), for real: a stack of its own started by deploy/stack.sh with VX_AUTH=MODE (Kafka 3.9.1 with
# a SASL_PLAINTEXT listener and SCRAM-SHA-512 users, PostgreSQL asking scram-sha-256 passwords on
# 127.0.0.1; scram-tls: the same over TLS, SASL_SSL and hostssl only, certificates verified against the
# stack's own CA), passwords made at random for the run. It checks that
#   - auth is on: kcat without credentials or with a wrong password gets no metadata, psql without a
#     password or with a wrong one is refused, while the right ones work; with TLS, kcat and psql
#     without TLS are refused too, and every connection of the services to PostgreSQL is encrypted;
#   - build/vxadmin and the three services, with credentials from the environment only (KAFKA_SASL_*,
#     KAFKA_SECURITY_PROTOCOL; PGPASSWORD for inventory-svc, the password inside ORDERS_DB for
#     order-svc), carry an order from POST /orders through Kafka and both databases to CONFIRMED, and
#     stock falls by what it reserved;
#   - each service (and vxadmin) started with a wrong Kafka password, and each database user with a
#     wrong PostgreSQL password (or one that makes ORDERS_DB unparsable), exits non-zero at start,
#     within AUTH_FAIL_SECS, saying which connection refused which credentials, without the password;
#   - no password (the right ones, the wrong ones, VX_CHAOS_TOKEN and a wrong bearer token, which the
#     gateway's admin relay passes on) is in any file the stack and this test wrote: logs at debug level
#     with librdkafka's configuration dump and SASL debug lines,
#     the saved /health, /ready, /metrics, /system bodies and error bodies, the Kafka and PostgreSQL
#     data, but for the two credential files made for that (the broker's server.properties and kcat's
#     configuration, mode 0600), which must hold them (the grep's own proof that it finds them).
#
# Files: $VX_DATA_DIR/auth (the stack's: kafka/, pg/, log/, run/; this test's outputs in out/); wiped
# at the end unless AUTH_KEEP=1 or a check failed. Every process it starts is stopped on every exit path.
#
# Invariant: any failed check makes the exit status 1; a part that cannot run is a failure, never a skip.
#
# Settings: AUTH_BROKER_PORT [18592], AUTH_CONTROLLER_PORT [18593], AUTH_PG_PORT [25462] and
# AUTH_HTTP_PORT [18595] (gateway; order-svc +1, inventory-svc +2): a stack apart from the dev stack's;
# AUTH_FAIL_SECS [60] how long a start with wrong credentials may take to give up; AUTH_KEEP [0].
set -uo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 1

AUTH_BROKER_PORT=${AUTH_BROKER_PORT:-18592}
AUTH_CONTROLLER_PORT=${AUTH_CONTROLLER_PORT:-18593}
# PostgreSQL's port is below 32768, outside Linux's ephemeral range (ip_local_port_range 32768-60999):
# a client connection that happens to hold a port in it makes PostgreSQL's bind fail (55462, the
# port this stack had, was taken so once when make test reached it).
AUTH_PG_PORT=${AUTH_PG_PORT:-25462}
AUTH_HTTP_PORT=${AUTH_HTTP_PORT:-18595}
AUTH_FAIL_SECS=${AUTH_FAIL_SECS:-60}
AUTH_KEEP=${AUTH_KEEP:-0}
MODE=${1:-scram}
case $MODE in
scram | scram-tls) ;;
*)
	echo "usage: tests/auth/auth.sh [scram|scram-tls]" >&2
	exit 2
	;;
esac
DATA=$(realpath -m "${VX_DATA_DIR:-$REPO/var}")/auth
OUT=$DATA/out
STOP_SECS=20
T0=$(date +%s%3N)

say() { printf 'auth(%s): %s\n' "$MODE" "$*"; }
# shellcheck source=tests/ops/lib.sh
source "$REPO/tests/ops/lib.sh"

# ---------------------------------------------------------------------------------- the environment

# Nothing from the caller's environment may lend a credential or a setting: only what is set here.
for v in "${!KAFKA_@}" "${!PG@}" INVENTORY_DB ORDERS_DB; do unset "$v"; done

secret() { printf '%s-%s' "$1" "$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"; }
KAFKA_PW=$(secret vxkafka)      # user valerix: the services' and vxadmin's
BROKER_PW=$(secret vxbroker)    # user broker: the broker's own
PG_PW=$(secret vxpg)            # role valerix
BAD_KAFKA_PW=$(secret vxbadkafka)
BAD_PG_PW=$(secret vxbadpg)
CHAOS_TOKEN=$(secret vxchaos) # VX_CHAOS_TOKEN, a secret too: the gateway relays it to the services
BAD_CHAOS_TOKEN=$(secret vxbadchaos)
BAD_URL_PW=$(secret vx%zzurl) # not percent-encoded: libpq cannot parse a URL holding it, and quotes it
SECRETS=(KAFKA_PW BROKER_PW PG_PW BAD_KAFKA_PW BAD_PG_PW CHAOS_TOKEN BAD_CHAOS_TOKEN BAD_URL_PW)
export VX_CHAOS_TOKEN=$CHAOS_TOKEN
# The services log all they can: debug lines, and librdkafka's configuration dump and SASL exchanges,
# so that the grep below reads the most a service ever writes.
export VX_LOG_LEVEL=debug KAFKA_DEBUG=conf,security

export VX_AUTH=$MODE VX_DATA_DIR=$DATA VX_KAFKA_USER=valerix VX_KAFKA_PASSWORD=$KAFKA_PW
export VX_KAFKA_BROKER_PASSWORD=$BROKER_PW VX_PG_PASSWORD=$PG_PW VX_PG_USER=valerix
export VX_BROKER_PORT=$AUTH_BROKER_PORT VX_CONTROLLER_PORT=$AUTH_CONTROLLER_PORT VX_PG_PORT=$AUTH_PG_PORT
export GATEWAY_HTTP_ADDR=127.0.0.1:$AUTH_HTTP_PORT ORDERS_HTTP_ADDR=127.0.0.1:$((AUTH_HTTP_PORT + 1))
export INVENTORY_HTTP_ADDR=127.0.0.1:$((AUTH_HTTP_PORT + 2))
export ORDERS_URL=http://$ORDERS_HTTP_ADDR INVENTORY_URL=http://$INVENTORY_HTTP_ADDR
BROKER=127.0.0.1:$AUTH_BROKER_PORT
PG_HOSTPORT=127.0.0.1:$AUTH_PG_PORT
# The client side, as an operator would set it: the user and protocol for every client; each password
# is given only to the process it is for.
PROTOCOL=SASL_PLAINTEXT
if [[ $MODE == scram-tls ]]; then
	# the stack's CA (made by stack.sh up) is what every client trusts; libpq verifies the host name too
	PROTOCOL=SASL_SSL
	export KAFKA_SSL_CA_LOCATION=$DATA/tls/ca.pem PGSSLMODE=verify-full PGSSLROOTCERT=$DATA/tls/ca.pem
fi
export KAFKA_BOOTSTRAP_SERVERS=$BROKER KAFKA_SECURITY_PROTOCOL=$PROTOCOL KAFKA_SASL_MECHANISMS=SCRAM-SHA-512
export KAFKA_SASL_USERNAME=valerix
INV_DB=postgresql://valerix@$PG_HOSTPORT/inventory
ord_db() { printf 'postgresql://valerix:%s@%s/orders' "$1" "$PG_HOSTPORT"; }
PSQL=(psql -X -q -At -w -v ON_ERROR_STOP=1)

stack() { deploy/stack.sh "$@" >>"$OUT/stack.log" 2>&1; }

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop gateway
	stop order-svc
	stop inventory-svc
	stack down || say "deploy/stack.sh down failed (log: $OUT/stack.log)"
	((${#FAILS[@]} == 0 && rc == 0)) || rc=1
	if ((AUTH_KEEP || rc)); then
		say "kept for a look: $DATA (stack log $OUT/stack.log, service logs $OUT/*.log, bodies $OUT/*.body)"
	else
		deploy/stack.sh wipe >/dev/null 2>&1
		rm -rf "$DATA"
	fi
	if ((rc)); then
		say "FAILED ${#FAILS[@]} of $((NPASS + ${#FAILS[@]})) checks in $(secs_since "$T0") s: ${FAILS[*]}"
	else
		say "PASS: $NPASS checks in $(secs_since "$T0") s"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# ------------------------------------------------------------------------------------------ the stack

[[ -x build/gateway && -x build/order-svc && -x build/inventory-svc && -x build/vxadmin ]] ||
	abort "build/ lacks a service or vxadmin: run make"
for p in "$AUTH_BROKER_PORT" "$AUTH_CONTROLLER_PORT" "$AUTH_PG_PORT" "$AUTH_HTTP_PORT" $((AUTH_HTTP_PORT + 1)) \
	$((AUTH_HTTP_PORT + 2)); do
	port_free "$p" || abort "port 127.0.0.1:$p is taken (another make auth? set AUTH_*_PORT)"
done
deploy/stack.sh wipe >/dev/null 2>&1 # a fresh format: the SCRAM users get this run's passwords
rm -rf "$OUT"
mkdir -p "$OUT"
say "starting the authenticated stack in $DATA (Kafka $BROKER, PostgreSQL $PG_HOSTPORT)"
# stack.sh up also creates the topics with build/vxadmin, logged in as valerix
stack up || {
	show "$OUT/stack.log"
	abort "deploy/stack.sh up (VX_AUTH=$MODE) failed"
}
pass "stack up with VX_AUTH=$MODE, topics created by vxadmin over $PROTOCOL"

# --------------------------------------------------------------------------------------- auth is on

# kcat_conf FILE PASSWORD [PROTOCOL]: kcat's SASL settings for user valerix (mode 0600; kcat -F reads it).
kcat_conf() {
	(umask 077 && printf '%s\n' "security.protocol=${3:-$PROTOCOL}" sasl.mechanisms=SCRAM-SHA-512 \
		sasl.username=valerix "sasl.password=$2" >"$1")
	[[ ${3:-$PROTOCOL} != SASL_SSL ]] || echo "ssl.ca.location=$KAFKA_SSL_CA_LOCATION" >>"$1"
}
kcat_conf "$OUT/kcat-good.conf" "$KAFKA_PW"
kcat_conf "$OUT/kcat-bad.conf" "$BAD_KAFKA_PW"
metadata() { timeout 30 kcat "$@" -b "$BROKER" -L -m 5 2>&1; }
out=$(metadata -F "$OUT/kcat-good.conf")
check "$([[ $out == *" 1 brokers:"* ]] && echo 1 || echo 0)" "kcat with user valerix's password gets the metadata"
out=$(metadata)
check "$([[ $out != *" 1 brokers:"* && $out == *"Failed to acquire metadata"* ]] && echo 1 || echo 0)" \
	"kcat without credentials gets no metadata"
out=$(metadata -F "$OUT/kcat-bad.conf")
check "$([[ $out != *" 1 brokers:"* && $out == *"Authentication failed"* ]] && echo 1 || echo 0)" \
	"kcat with a wrong password is refused (Authentication failed)"
printf '%s\n' "$out" >"$OUT/kcat-bad.out"

out=$("${PSQL[@]}" "$INV_DB" -c 'SELECT 1' 2>&1)
check "$([[ $out == *"no password supplied"* ]] && echo 1 || echo 0)" "psql over TCP without a password is refused"
out=$(PGPASSWORD=$BAD_PG_PW "${PSQL[@]}" "$INV_DB" -c 'SELECT 1' 2>&1)
check "$([[ $out == *"password authentication failed"* ]] && echo 1 || echo 0)" "psql with a wrong password is refused"
out=$(PGPASSWORD=$PG_PW "${PSQL[@]}" "$INV_DB" -c "SELECT current_setting('password_encryption'),
	(SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'valerix')" 2>&1)
check "$([[ $out == 'scram-sha-256|SCRAM-SHA-256$' ]] && echo 1 || echo 0)" \
	"psql with the password connects; password_encryption scram-sha-256, the role's stored as a SCRAM verifier ($out)"
if [[ $MODE == scram-tls ]]; then
	kcat_conf "$OUT/kcat-plain.conf" "$KAFKA_PW" SASL_PLAINTEXT
	out=$(metadata -F "$OUT/kcat-plain.conf")
	check "$([[ $out != *" 1 brokers:"* && $out == *"Failed to acquire metadata"* ]] && echo 1 || echo 0)" \
		"kcat with the right password but without TLS gets no metadata"
	out=$(PGPASSWORD=$PG_PW PGSSLMODE=disable "${PSQL[@]}" "$INV_DB" -c 'SELECT 1' 2>&1)
	check "$([[ $out == *"no pg_hba.conf entry"*"no encryption"* ]] && echo 1 || echo 0)" \
		"psql with the right password but without TLS is refused (no encryption)"
	out=$(PGPASSWORD=$PG_PW "${PSQL[@]}" "$INV_DB" -c 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()' 2>&1)
	check "$([[ $out == t ]] && echo 1 || echo 0)" "psql with verify-full against the stack's CA is encrypted ($out)"
fi

# ------------------------------------------------------------------------- the services, end to end

# Seed one product through the real command path, as user valerix.
printf '%s\n' 'auth-P-1|{"type":"Restock","idempotency_key":"auth-P-1","product_id":"AUTH-P-1","quantity":10,"name":"Auth test"}' |
	timeout 30 kcat -F "$OUT/kcat-good.conf" -P -b "$BROKER" -t inventory.commands -K'|' 2>>"$OUT/kcat.err" ||
	abort "kcat could not produce the seed to inventory.commands"


# Each service with the credentials in its environment only: inventory-svc's PostgreSQL password in
# PGPASSWORD, order-svc's inside ORDERS_DB, the gateway's Kafka password alone.
KAFKA_SASL_PASSWORD=$KAFKA_PW INVENTORY_DB=$INV_DB PGPASSWORD=$PG_PW start inventory-svc "$INVENTORY_HTTP_ADDR"
KAFKA_SASL_PASSWORD=$KAFKA_PW ORDERS_DB=$(ord_db "$PG_PW") start order-svc "$ORDERS_HTTP_ADDR"
KAFKA_SASL_PASSWORD=$KAFKA_PW start gateway "$GATEWAY_HTTP_ADDR"
pass "the three services started with credentials from their environment"

GW=http://$GATEWAY_HTTP_ADDR
# get NAME URL [CURL ARGS]: the body into $OUT/NAME.body, the status into CODE.
get() {
	local name=$1 url=$2
	shift 2
	CODE=$(curl -sS -o "$OUT/$name.body" -w '%{http_code}' --max-time 10 "$@" "$url" 2>>"$OUT/curl.err") || CODE=000
}
# The seed reaches the catalogue (inventory-svc read it from Kafka and wrote it to its database).
for ((i = 0; i < 150; i++)); do
	get product "$GW/products/AUTH-P-1"
	[[ $CODE == 200 ]] && break
	sleep 0.2
done
stock0=$(jq -r '.stock // .available // empty' "$OUT/product.body" 2>/dev/null)
check "$([[ $CODE == 200 && $stock0 == 10 ]] && echo 1 || echo 0)" \
	"the restock went through Kafka to inventory-svc's database: GET /products/AUTH-P-1 $CODE, stock ${stock0:-?}"

get order "$GW/orders" -X POST -H 'Content-Type: application/json' -H 'Idempotency-Key: auth-order-1' \
	-d '{"customer_id":"auth-c1","items":[{"product_id":"AUTH-P-1","quantity":3}]}'
id=$(jq -r '.id // empty' "$OUT/order.body" 2>/dev/null)
st=$(jq -r '.status // empty' "$OUT/order.body" 2>/dev/null)
check "$([[ $CODE == 201 && $st == CONFIRMED && -n $id ]] && echo 1 || echo 0)" \
	"POST /orders through the gateway: $CODE, status ${st:-?} (order ${id:-none})"
for ((i = 0; i < 50; i++)); do # the read model may trail the reply by a moment
	get order-read "$GW/orders/$id"
	[[ $CODE == 200 && $(jq -r .status "$OUT/order-read.body" 2>/dev/null) == CONFIRMED ]] && break
	sleep 0.2
done
check "$([[ $CODE == 200 && $(jq -r .status "$OUT/order-read.body" 2>/dev/null) == CONFIRMED ]] && echo 1 || echo 0)" \
	"GET /orders/$id from order-svc's database: CONFIRMED"
for ((i = 0; i < 50; i++)); do
	get product-after "$GW/products/AUTH-P-1"
	stock1=$(jq -r '.stock // .available // empty' "$OUT/product-after.body" 2>/dev/null)
	[[ $stock1 == 7 ]] && break
	sleep 0.2
done
check "$([[ $stock1 == 7 ]] && echo 1 || echo 0)" "stock of AUTH-P-1 fell from 10 to ${stock1:-?} (3 reserved)"

# build/vxadmin against the authenticated broker and database.
# (a group's offsets show once committed, within a second of the order: asked again until they do)
for ((i = 0; i < 20; i++)); do
	KAFKA_SASL_PASSWORD=$KAFKA_PW timeout 120 build/vxadmin lag inventory-svc order-svc >"$OUT/vxadmin-lag.out" 2>&1
	rc=$?
	((rc == 0)) && grep -q '^inventory-svc inventory.commands' "$OUT/vxadmin-lag.out" &&
		grep -q '^order-svc orders.commands' "$OUT/vxadmin-lag.out" && break
	sleep 0.5
done
check "$((rc == 0 && $(grep -c '^\(inventory\|order\)-svc [a-z]*\.commands' "$OUT/vxadmin-lag.out") > 0))" \
	"vxadmin lag over SASL (exit $rc): both groups' committed offsets"
KAFKA_SASL_PASSWORD=$KAFKA_PW INVENTORY_DB=$INV_DB PGPASSWORD=$PG_PW timeout 120 build/vxadmin outbox inventory-svc \
	>"$OUT/vxadmin-outbox.out" 2>&1
rc=$?
check "$((rc == 0))" "vxadmin outbox inventory-svc with PGPASSWORD (exit $rc)"

# What the stack shows of itself, kept for the grep below: health, readiness, metrics, the gateway's
# view of the system, and error bodies.
for svc in gateway:$GATEWAY_HTTP_ADDR order-svc:$ORDERS_HTTP_ADDR inventory-svc:$INVENTORY_HTTP_ADDR; do
	for path in health ready metrics; do
		get "${svc%%:*}-$path" "http://${svc#*:}/$path"
		[[ $CODE == 200 ]] || fail "GET /$path of ${svc%%:*}: $CODE"
	done
done
get system "$GW/system"
[[ $CODE == 200 ]] || fail "GET /system: $CODE"
get err-json "$GW/orders" -X POST -H 'Content-Type: application/json' -H 'Idempotency-Key: auth-bad-1' -d '{"customer_id":'
get err-field "$GW/orders" -X POST -H 'Content-Type: application/json' -H 'Idempotency-Key: auth-bad-2' \
	-d '{"customer_id":"c","items":[{"product_id":"AUTH-P-1","quantity":-1}]}'
get err-missing "$GW/orders/00000000-0000-0000-0000-000000000000"
get err-route "$GW/no/such/route"
get err-chaos "$GW/admin/chaos" -X POST -H "Authorization: Bearer $BAD_CHAOS_TOKEN" -d '{}'
get err-chaos-relay "$GW/admin/chaos/order-svc" -X POST -H "Authorization: Bearer $BAD_CHAOS_TOKEN" -d '{}'
n=$(grep -l '"status"' "$OUT"/err-*.body 2>/dev/null | wc -l)
check "$((n == 6))" "error bodies saved for the grep: $n of 6 are problem+json"
# the admin relay with the right token: it reaches order-svc, which logs the change
get chaos-relay "$GW/admin/chaos/order-svc" -X POST -H "Authorization: Bearer $CHAOS_TOKEN" \
	-d '{"crash_points":"","gremlin":{"delay_ms":0}}'
check "$([[ $CODE == 200 ]] && echo 1 || echo 0)" "POST /admin/chaos/order-svc through the gateway's relay with the token: $CODE"
if [[ $MODE == scram-tls ]]; then
	out=$(PGPASSWORD=$PG_PW "${PSQL[@]}" "$INV_DB" -F ' ' -c "SELECT count(*) FILTER (WHERE s.ssl),
		count(*) FILTER (WHERE NOT s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
		WHERE a.datname IN ('inventory', 'orders') AND a.pid <> pg_backend_pid()" 2>&1)
	check "$([[ $out =~ ^[1-9][0-9]*\ 0$ ]] && echo 1 || echo 0)" \
		"the services' connections to PostgreSQL: encrypted, not encrypted: $out"
fi

stop gateway
stop order-svc
stop inventory-svc

# ------------------------------------------------------------------------------- wrong credentials

# refused NAME WHAT MUST PROG ARGS... (environment given by the caller's prefix assignments): PROG
# must exit non-zero within AUTH_FAIL_SECS, its output holding MUST and no password.
refused() {
	local name=$1 what=$2 must=$3 rc t0 v leak=
	shift 3
	t0=$(now_ms)
	timeout -k 5 "$AUTH_FAIL_SECS" "$@" >"$OUT/$name.log" 2>&1 </dev/null
	rc=$?
	for v in "${SECRETS[@]}"; do grep -qF -- "${!v}" "$OUT/$name.log" && leak+=" $v"; done
	if ((rc == 124 || rc == 137)); then
		fail "$what: still running after $AUTH_FAIL_SECS s"
	elif ((rc == 0)); then
		fail "$what: exit status 0"
	elif ! grep -qF -- "$must" "$OUT/$name.log"; then
		fail "$what: no \"$must\" in its output"
		show "$OUT/$name.log"
	elif [[ -n $leak ]]; then
		fail "$what: its output holds the password(s)$leak"
	else
		pass "$what: exit $rc after $(secs_since "$t0") s, saying: $(grep -F -- "$must" "$OUT/$name.log" | head -n 1 |
			sed 's/.*"error":"//; s/"}$//' | cut -c1-160)"
	fi
}
KAFKA_SASL_PASSWORD=$BAD_KAFKA_PW INVENTORY_DB=$INV_DB PGPASSWORD=$PG_PW \
	refused inv-bad-kafka "inventory-svc, wrong Kafka password" '"msg":"kafka_auth_failed"' build/inventory-svc
KAFKA_SASL_PASSWORD=$BAD_KAFKA_PW ORDERS_DB=$(ord_db "$PG_PW") \
	refused ord-bad-kafka "order-svc, wrong Kafka password" '"msg":"kafka_auth_failed"' build/order-svc
KAFKA_SASL_PASSWORD=$BAD_KAFKA_PW \
	refused gw-bad-kafka "gateway, wrong Kafka password" '"msg":"kafka_auth_failed"' build/gateway
KAFKA_SASL_PASSWORD=$BAD_KAFKA_PW \
	refused vxa-bad-kafka "vxadmin, wrong Kafka password" 'Kafka refused the credentials of user "valerix"' \
	build/vxadmin lag
KAFKA_SASL_PASSWORD=$KAFKA_PW INVENTORY_DB=$INV_DB PGPASSWORD=$BAD_PG_PW \
	refused inv-bad-pg "inventory-svc, wrong PostgreSQL password (PGPASSWORD)" \
	'PostgreSQL refused the credentials of user \"valerix\" on 127.0.0.1:'"$AUTH_PG_PORT"' database inventory' \
	build/inventory-svc
KAFKA_SASL_PASSWORD=$KAFKA_PW ORDERS_DB=$(ord_db "$BAD_PG_PW") \
	refused ord-bad-pg "order-svc, wrong PostgreSQL password (in ORDERS_DB)" \
	'PostgreSQL refused the credentials of user \"valerix\" on 127.0.0.1:'"$AUTH_PG_PORT"' database orders' \
	build/order-svc
KAFKA_SASL_PASSWORD=$KAFKA_PW ORDERS_DB=$(ord_db "$BAD_PG_PW") \
	refused vxa-bad-pg "vxadmin outbox, wrong PostgreSQL password (in ORDERS_DB)" 'password authentication failed' \
	build/vxadmin outbox order-svc
KAFKA_SASL_PASSWORD=$KAFKA_PW ORDERS_DB=$(ord_db "$BAD_URL_PW") \
	refused ord-bad-url "order-svc, a password in ORDERS_DB that libpq cannot parse" \
	'the connection string does not parse (its quoted parts are not shown' build/order-svc
KAFKA_SASL_PASSWORD=$KAFKA_PW ORDERS_DB=$(ord_db "$BAD_URL_PW") \
	refused vxa-bad-url "vxadmin outbox, a password in ORDERS_DB that libpq cannot parse" \
	'the connection string does not parse (its quoted parts are not shown' build/vxadmin outbox order-svc
for f in inv-bad-kafka inv-bad-pg ord-bad-pg; do
	grep -q '"msg":"\(kafka\|database\)_auth_failed"' "$OUT/$f.log" || fail "$f: no *_auth_failed log line"
done

# -------------------------------------------------------------------------------- no secret written

stack down || fail "deploy/stack.sh down"
# The credential files exist to hold them: their mode is 0600 and the grep must find them there.
for f in "$DATA/kafka/server.properties:BROKER_PW" "$DATA/run/kcat.conf:KAFKA_PW" "$OUT/kcat-good.conf:KAFKA_PW"; do
	file=${f%:*} v=${f##*:}
	check "$([[ $(stat -c %a "$file" 2>/dev/null) == 600 ]] && grep -qF -- "${!v}" "$file" && echo 1 || echo 0)" \
		"${file#"$DATA"/} has mode 0600 and holds $v (the grep finds what it looks for)"
done
n=$(cat "$OUT"/{inventory-svc,order-svc,gateway}.log | grep -c 'sasl.password = \[redacted\]')
check "$((n > 0))" "the services' logs hold librdkafka's configuration dump ($n lines 'sasl.password = [redacted]')"
nfiles=$(find "$DATA" -type f | wc -l)
for v in "${SECRETS[@]}"; do
	hits=$(grep -rlaF -- "${!v}" "$DATA" | grep -vxF -e "$DATA/kafka/server.properties" -e "$DATA/run/kcat.conf" |
		grep -vx "$OUT/kcat-[a-z]*\.conf")
	if [[ -n $hits ]]; then
		fail "$v is written in: $(printf '%s\n' "$hits" | sed "s|$DATA/||" | head -n 5 | xargs)"
	else
		pass "$v is in none of the $nfiles files under ${DATA#"$REPO"/} but the credential files"
	fi
done
