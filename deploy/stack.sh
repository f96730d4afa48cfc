#!/usr/bin/env bash
# stack.sh: installs, starts and stops Valerix's local stack: a real Kafka 3.9.1 broker (KRaft, one node),
# PostgreSQL from Debian, and the service binaries in build/. Every subcommand is idempotent: a second
# `deps` or `up` does nothing, needs no network, and says so. Everything listens on 127.0.0.1 only.
#
# Usage: deploy/stack.sh deps | up [kafka|postgres|all] | status | down | wipe
#                        | start NAME | stop NAME | kill NAME
#                          (NAME: kafka, postgres, inventory-svc, order-svc, gateway)
#                        | services-up | run
#
# Settings (environment variables, default in brackets):
#   VX_DATA_DIR            [<repo>/var]  all the stack writes: kafka/, pg/, log/, run/
#   VX_KAFKA_LIBS          [$VX_DATA_DIR/kafka/libs]  broker classpath from Maven Central; kept by wipe
#   VX_BROKER_PORT         [9092]   Kafka PLAINTEXT listener
#   VX_CONTROLLER_PORT     [9093]   KRaft controller listener
#   VX_BROKER_HEAP         [512m]   broker JVM heap (-Xms and -Xmx)
#   VX_BROKER_JVM_OPTS     [G1, 20 ms pauses]  the broker JVM's other options (garbage collector and its settings)
#   VX_KAFKA_READY_SECS    [90]     how long `up`/`start` waits for the broker to answer
#   VX_KAFKA_STOP_SECS     [60]     how long `stop` waits after SIGTERM before SIGKILL
#   VX_PG_PORT             [55432]  PostgreSQL TCP port
#   VX_PG_BIN              [newest /usr/lib/postgresql/*/bin]
#   VX_PG_USER             [valerix]  superuser role; also the OS user the server runs as when we are root
#   VX_SERVICE_READY_SECS  [60]     how long services-up waits for each GET /ready
#   VX_SERVICE_STOP_SECS   [20]     how long down waits after SIGTERM to the services before SIGKILL
#   VX_SEED_FILE           [deploy/seed.jsonl]  `key|json` lines produced to inventory.commands when empty
#   VX_SEED_SECS           [30]     how long to wait for the seed to show up in table products
#   INVENTORY_HTTP_ADDR    [127.0.0.1:8082]  host:port of inventory-svc
#   ORDERS_HTTP_ADDR       [127.0.0.1:8081]  host:port of order-svc
#   GATEWAY_HTTP_ADDR      [127.0.0.1:8080]  host:port of gateway
#   VX_AUTH                [off]    scram: authenticated stack (README "Authentication"). Kafka's client listener
#                                   is SASL_PLAINTEXT with SCRAM-SHA-512 users VX_KAFKA_USER and "broker" (made
#                                   when the storage is first formatted); PostgreSQL asks scram-sha-256 passwords
#                                   on 127.0.0.1 (its socket in run/, mode 0700, stays trust for this script).
#                                   scram-tls: the same over TLS (Kafka SASL_SSL, PostgreSQL hostssl only), with
#                                   a CA and a certificate for 127.0.0.1 made by openssl into tls/ (ca.pem)
#   VX_KAFKA_USER          [valerix]  the SCRAM user the services and vxadmin log in as (auth mode)
#   VX_KAFKA_PASSWORD      [a dev default]  its password; VX_KAFKA_BROKER_PASSWORD: the broker's own
#   VX_PG_PASSWORD         [a dev default]  role VX_PG_USER's password, set at every start (auth mode)
#                          Passwords are never printed; Kafka's are made of A-Z a-z 0-9 . _ ~ - only.
# Services and build/vxadmin are started with KAFKA_BOOTSTRAP_SERVERS, INVENTORY_DB, ORDERS_DB, PGHOST, PGPORT, PGUSER,
# the *_HTTP_ADDR and ORDERS_URL/INVENTORY_URL (the gateway's reads: http://<*_HTTP_ADDR>) set;
# in auth mode also KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISMS, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD
# and PGPASSWORD, with TLS KAFKA_SSL_CA_LOCATION, PGSSLMODE=verify-full and PGSSLROOTCERT (each kept when
# already set: a client may present other credentials than the stack's).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPLOY=$REPO/deploy

VX_DATA_DIR=$(realpath -m "${VX_DATA_DIR:-$REPO/var}")
VX_KAFKA_LIBS=$(realpath -m "${VX_KAFKA_LIBS:-$VX_DATA_DIR/kafka/libs}")
VX_BROKER_PORT=${VX_BROKER_PORT:-9092}
VX_CONTROLLER_PORT=${VX_CONTROLLER_PORT:-9093}
VX_BROKER_HEAP=${VX_BROKER_HEAP:-512m}
VX_BROKER_JVM_OPTS=${VX_BROKER_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent}
VX_KAFKA_READY_SECS=${VX_KAFKA_READY_SECS:-90}
VX_KAFKA_STOP_SECS=${VX_KAFKA_STOP_SECS:-60}
VX_PG_PORT=${VX_PG_PORT:-55432}
VX_PG_BIN=${VX_PG_BIN:-}
VX_PG_USER=${VX_PG_USER:-valerix}
VX_SERVICE_READY_SECS=${VX_SERVICE_READY_SECS:-60}
VX_SERVICE_STOP_SECS=${VX_SERVICE_STOP_SECS:-20}
VX_SEED_FILE=${VX_SEED_FILE:-$DEPLOY/seed.jsonl}
VX_SEED_SECS=${VX_SEED_SECS:-30}
INVENTORY_HTTP_ADDR=${INVENTORY_HTTP_ADDR:-127.0.0.1:8082}
ORDERS_HTTP_ADDR=${ORDERS_HTTP_ADDR:-127.0.0.1:8081}
GATEWAY_HTTP_ADDR=${GATEWAY_HTTP_ADDR:-127.0.0.1:8080}
VX_AUTH=${VX_AUTH:-}
VX_KAFKA_USER=${VX_KAFKA_USER:-valerix}
VX_KAFKA_PASSWORD=${VX_KAFKA_PASSWORD:-valerix-dev-kafka}
VX_KAFKA_BROKER_PASSWORD=${VX_KAFKA_BROKER_PASSWORD:-valerix-dev-broker}
VX_PG_PASSWORD=${VX_PG_PASSWORD:-valerix-dev-pg}
AUTH_TLS=
case $VX_AUTH in
'' | off) VX_AUTH= ;;
scram) ;;
scram-tls) AUTH_TLS=1 ;;
*) printf 'stack: error: VX_AUTH=%s: use scram or scram-tls, or leave it unset\n' "$VX_AUTH" >&2 && exit 2 ;;
esac

KAFKA_VERSION=3.9.1
KAFKA_POM=$DEPLOY/kafka/pom.xml
KAFKA_LOG4J=$DEPLOY/kafka/log4j.properties
KAFKA_DIR=$VX_DATA_DIR/kafka
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_PROPS=$KAFKA_DIR/server.properties
KAFKA_CLUSTER_ID=$KAFKA_DIR/cluster.id
KAFKA_AUTH_MARK=$KAFKA_DIR/auth # off or scram: whether the storage was formatted with SCRAM users
TLS_DIR=$VX_DATA_DIR/tls        # scram-tls: ca.pem (what clients trust), the CA's and the server's keys
PG_DATA=$VX_DATA_DIR/pg/data
LOG_DIR=$VX_DATA_DIR/log
RUN_DIR=$VX_DATA_DIR/run
KAFKA_PIDFILE=$RUN_DIR/kafka.pid
KCAT_CONF=$RUN_DIR/kcat.conf # auth mode: kcat's credentials (mode 0600), never on a command line
BROKERS=127.0.0.1:$VX_BROKER_PORT
SERVICES=(inventory-svc order-svc gateway) # start order; down stops them all at once
DATABASES=(inventory orders)
LOG_KEEP_BYTES=$((20 * 1024 * 1024)) # a log over this size is moved to NAME.log.1 at the next start

APT_PACKAGES=(build-essential pkg-config librdkafka-dev kcat libpq-dev libjson-c-dev libmicrohttpd-dev
	libcriterion-dev uuid-dev libcurl4-openssl-dev postgresql maven python3-venv wrk curl jq chromium openssl)
# Installed without their recommendations: Prometheus and promtool for the monitoring checks (its
# recommended node exporter is not ours to run); clang and its libFuzzer runtime for the fuzz targets
# (make fuzz; the recommended llvm-14-dev is not needed).
APT_PACKAGES_LEAN=(prometheus clang libclang-rt-14-dev)
JAVA_PACKAGE=openjdk-17-jdk-headless

# ---------------------------------------------------------------------------------------------- helpers

log() { printf 'stack: %s\n' "$*"; }
die() {
	printf 'stack: error: %s\n' "$*" >&2
	exit 1
}
need_cmd() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found; run: deploy/stack.sh deps"; }
is_root() { [[ $(id -u) -eq 0 ]]; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
since() { awk -v ms=$(($(now_ms) - $1)) 'BEGIN { printf "%.1f s", ms / 1000 }'; }

# pid_of FILE PATTERN: print the pid written in FILE if that process is alive (not a zombie) and its command
# line contains PATTERN. The pattern guards against a recycled pid after a reboot: we never signal a stranger.
pid_of() {
	local file=$1 pattern=$2 pid cmdline
	[[ -r $file ]] || return 1
	read -r pid <"$file" 2>/dev/null || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	cmdline=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null) || return 1
	[[ $cmdline == *"$pattern"* ]] || return 1
	echo "$pid"
}

# group_alive PGID: true while a live (non-zombie) process is in process group PGID. Kafka and the services
# are started as session leaders, so this also sees children orphaned by a SIGKILL of their parent.
group_alive() {
	local pgid=$1 f stat
	for f in /proc/[0-9]*/stat; do
		{ read -r stat <"$f"; } 2>/dev/null || continue
		stat=${stat##*) } # fields after the command name: state ppid pgrp ...
		read -r -a stat <<<"$stat"
		[[ ${stat[2]} == "$pgid" && ${stat[0]} != Z ]] && return 0
	done
	return 1
}

# wait_gone PGID SECS: wait for process group PGID to end; false if it still runs after SECS.
wait_gone() {
	local pgid=$1 deadline=$(($(now_ms) + $2 * 1000))
	while group_alive "$pgid"; do
		(($(now_ms) < deadline)) || return 1
		sleep 0.2
	done
}

# One stack.sh at a time changes the stack (parallel make jobs, several engineers): an flock on fd 9.
# Every long-lived child is started with fd 9 closed, or it would hold the lock after we exit.
lock_stack() {
	mkdir -p "$VX_DATA_DIR"
	exec 9>>"$VX_DATA_DIR/.stack.lock"
	flock -n 9 && return 0
	log "waiting for another deploy/stack.sh to finish"
	flock -w 300 9 || die "another deploy/stack.sh holds $VX_DATA_DIR/.stack.lock"
}
unlock_stack() { flock -u 9 2>/dev/null || true; }

port_in_use() { (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }

# rotate_log FILE: keep one previous generation once a log grows past LOG_KEEP_BYTES.
rotate_log() {
	local size
	size=$(stat -c %s "$1" 2>/dev/null || echo 0)
	((size < LOG_KEEP_BYTES)) || mv -f "$1" "$1.1"
}

# spawn PIDFILE LOGFILE CMD...: run CMD detached in its own session (it outlives this shell and a Ctrl-C),
# stdout and stderr appended to LOGFILE. The pid is written by the process itself, so it is exact.
# Sets LOG_FROM, the size of LOGFILE before this start, so errors show this run's lines only.
LOG_FROM=0 # see spawn
spawn() {
	local pidfile=$1 logfile=$2
	shift 2
	rm -f "$pidfile"
	rotate_log "$logfile"
	LOG_FROM=$(stat -c %s "$logfile" 2>/dev/null || echo 0)
	# shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
	setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >>"$logfile" 2>&1 </dev/null 9>&- &
	local i
	for ((i = 0; i < 50; i++)); do
		[[ -s $pidfile ]] && return 0
		sleep 0.1
	done
	die "could not start $1 (log: $logfile)"
}

# show_log_tail FILE [FROM_BYTE]: the last lines of FILE, only those written after FROM_BYTE.
show_log_tail() {
	log "last lines of $1:" >&2
	tail -c +$((${2:-0} + 1)) "$1" 2>/dev/null | tail -n 30 | sed 's/^/    /' >&2 || true
}

# Environment for our own services and build/vxadmin; libpq reads PGHOST/PGPORT/PGUSER natively.
export_service_env() {
	export VX_DATA_DIR KAFKA_BOOTSTRAP_SERVERS=${KAFKA_BOOTSTRAP_SERVERS:-$BROKERS}
	export PGHOST=127.0.0.1 PGPORT=$VX_PG_PORT PGUSER=$VX_PG_USER
	export INVENTORY_DB=${INVENTORY_DB:-postgresql://$VX_PG_USER@127.0.0.1:$VX_PG_PORT/inventory}
	export ORDERS_DB=${ORDERS_DB:-postgresql://$VX_PG_USER@127.0.0.1:$VX_PG_PORT/orders}
	export INVENTORY_HTTP_ADDR ORDERS_HTTP_ADDR GATEWAY_HTTP_ADDR
	# the gateway's reads go where the services listen, not to their default ports
	export ORDERS_URL=${ORDERS_URL:-http://$ORDERS_HTTP_ADDR} INVENTORY_URL=${INVENTORY_URL:-http://$INVENTORY_HTTP_ADDR}
	if [[ -n $VX_AUTH ]]; then
		local protocol=SASL_PLAINTEXT
		[[ -z $AUTH_TLS ]] || protocol=SASL_SSL
		export KAFKA_SECURITY_PROTOCOL=${KAFKA_SECURITY_PROTOCOL:-$protocol}
		export KAFKA_SASL_MECHANISMS=${KAFKA_SASL_MECHANISMS:-SCRAM-SHA-512}
		export KAFKA_SASL_USERNAME=${KAFKA_SASL_USERNAME:-$VX_KAFKA_USER}
		export KAFKA_SASL_PASSWORD=${KAFKA_SASL_PASSWORD:-$VX_KAFKA_PASSWORD}
		export PGPASSWORD=${PGPASSWORD:-$VX_PG_PASSWORD}
	fi
	if [[ -n $AUTH_TLS ]]; then
		export KAFKA_SSL_CA_LOCATION=${KAFKA_SSL_CA_LOCATION:-$TLS_DIR/ca.pem}
		export PGSSLMODE=${PGSSLMODE:-verify-full} PGSSLROOTCERT=${PGSSLROOTCERT:-$TLS_DIR/ca.pem}
	fi
}

# ------------------------------------------------------------------------------------------------- auth

# Kafka's passwords go into a JAAS line and StorageTool's --add-scram list: characters that need no quoting.
auth_check_passwords() {
	local v
	for v in VX_KAFKA_PASSWORD VX_KAFKA_BROKER_PASSWORD; do
		[[ ${!v} =~ ^[A-Za-z0-9._~-]{8,}$ ]] ||
			die "$v must be 8 or more of A-Z a-z 0-9 . _ ~ - (its value is not shown)"
	done
	[[ $VX_KAFKA_USER =~ ^[A-Za-z0-9._-]+$ && $VX_KAFKA_USER != broker ]] ||
		die "VX_KAFKA_USER=$VX_KAFKA_USER: use A-Z a-z 0-9 . _ - and not the broker's own user, broker"
	[[ -n $VX_PG_PASSWORD ]] || die "VX_PG_PASSWORD is empty"
}

# redact TEXT: TEXT with every password of the stack replaced by ***, for a message that quotes a tool.
redact() {
	local t=$1 v
	for v in VX_KAFKA_PASSWORD VX_KAFKA_BROKER_PASSWORD VX_PG_PASSWORD; do
		[[ -z ${!v} ]] || t=${t//"${!v}"/***}
	done
	printf '%s' "$t"
}

# write_secret FILE: stdin into a new FILE, readable by its owner only from the first byte (an older FILE's
# mode would stay: it is removed first).
write_secret() { (umask 077 && rm -f "$1" && cat >"$1"); }

# kcat's client settings in auth mode, from a file (a command line would show the password in ps).
KCAT_AUTH=()
kcat_auth() {
	[[ -n $VX_AUTH ]] || return 0
	mkdir -p "$RUN_DIR"
	write_secret "$KCAT_CONF" <<EOF
security.protocol=$([[ -n $AUTH_TLS ]] && echo SASL_SSL || echo SASL_PLAINTEXT)
sasl.mechanisms=SCRAM-SHA-512
sasl.username=$VX_KAFKA_USER
sasl.password=$VX_KAFKA_PASSWORD
EOF
	[[ -z $AUTH_TLS ]] || echo "ssl.ca.location=$TLS_DIR/ca.pem" >>"$KCAT_CONF"
	KCAT_AUTH=(-F "$KCAT_CONF")
}

# scram-tls: a CA of the stack's own and a certificate for 127.0.0.1 and localhost signed by it, made once.
tls_make() {
	[[ -n $AUTH_TLS && ! -s $TLS_DIR/ca.pem ]] || return 0
	need_cmd openssl
	mkdir -p "$TLS_DIR"
	local out
	out=$( (umask 077 &&
		openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Valerix local CA" \
			-keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem.tmp" &&
		openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$TLS_DIR/server.key" \
			-out "$TLS_DIR/server.csr" &&
		printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$TLS_DIR/server.ext" &&
		openssl x509 -req -days 3650 -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.pem.tmp" -CAkey "$TLS_DIR/ca.key" \
			-CAcreateserial -extfile "$TLS_DIR/server.ext" -out "$TLS_DIR/server.pem" &&
		cat "$TLS_DIR/server.key" "$TLS_DIR/server.pem" >"$TLS_DIR/kafka.pem") 2>&1) ||
		die "openssl could not make the stack's certificates: $out"
	chmod 644 "$TLS_DIR/ca.pem.tmp" "$TLS_DIR/server.pem"
	mv "$TLS_DIR/ca.pem.tmp" "$TLS_DIR/ca.pem"
	log "tls: made a CA ($TLS_DIR/ca.pem) and a certificate for 127.0.0.1"
}

# ------------------------------------------------------------------------------------------------- deps

java_major() {
	local v
	v=$(java -version 2>&1 | awk -F'"' '/version/ { print $2; exit }') || return 1
	[[ $v == 1.* ]] && v=${v#1.}
	echo "${v%%[.+-]*}"
}

deps_packages() {
	local wanted=("${APT_PACKAGES[@]}") missing=() p major
	if ! command -v dpkg-query >/dev/null; then
		log "no dpkg-query: not Debian; skipping package installation"
		return 0
	fi
	command -v npm >/dev/null || wanted+=(nodejs npm) # the browser tests' driver (tests/web)
	major=$(java_major 2>/dev/null || echo 0)
	[[ $major =~ ^[0-9]+$ ]] && ((major >= 17)) || wanted+=("$JAVA_PACKAGE")
	local lean=()
	for p in "${wanted[@]}"; do
		[[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p")
	done
	for p in "${APT_PACKAGES_LEAN[@]}"; do
		[[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || lean+=("$p")
	done
	if ((${#missing[@]} + ${#lean[@]} == 0)); then
		log "Debian packages: all present"
		return 0
	fi
	is_root || die "missing Debian packages: ${missing[*]} ${lean[*]}; install them as root:" \
		"apt-get update && apt-get install -y ${missing[*]} && apt-get install -y --no-install-recommends ${lean[*]}"
	log "installing Debian packages: ${missing[*]} ${lean[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	((${#missing[@]} == 0)) || apt-get install -y -q "${missing[@]}"
	((${#lean[@]} == 0)) || apt-get install -y -q --no-install-recommends "${lean[@]}"
}

kafka_libs_current() {
	[[ -f $VX_KAFKA_LIBS/.pom.sha256 &&
		$(cat "$VX_KAFKA_LIBS/.pom.sha256") == "$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)" ]]
}

# The broker's classpath: fetched from Maven Central only when missing or when the pom changed.
deps_kafka_libs() {
	local want tmp t0 out
	want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
	if kafka_libs_current; then
		log "Kafka classpath: up to date in $VX_KAFKA_LIBS"
		return 0
	fi
	need_cmd mvn
	need_cmd java
	log "fetching the Kafka $KAFKA_VERSION classpath from Maven Central into $VX_KAFKA_LIBS"
	t0=$(now_ms)
	tmp=$VX_KAFKA_LIBS.tmp
	rm -rf "$tmp"
	mkdir -p "$(dirname "$VX_KAFKA_LIBS")"
	if ! out=$(mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$tmp" 2>&1); then
		printf '%s\n' "$out" | tail -n 30 >&2
		die "mvn could not fetch the Kafka classpath (is Maven Central reachable?)"
	fi
	# Prove the classpath holds a runnable broker with its logging backend before we keep it.
	out=$(java -Dlog4j.configuration="file:$KAFKA_LOG4J" -cp "$tmp/*" kafka.Kafka --version 2>&1) ||
		die "the fetched classpath does not run kafka.Kafka: $out"
	[[ $out == *"$KAFKA_VERSION"* ]] || die "expected Kafka $KAFKA_VERSION, the classpath says: $out"
	[[ $out != *SLF4J* ]] || die "the classpath has no working SLF4J backend: $out"
	echo "$want" >"$tmp/.pom.sha256"
	rm -rf "$VX_KAFKA_LIBS"
	mv "$tmp" "$VX_KAFKA_LIBS"
	log "Kafka classpath: $(find "$VX_KAFKA_LIBS" -name '*.jar' | wc -l) jars in $(since "$t0")"
}

cmd_deps() {
	deps_packages
	deps_kafka_libs
}

# ------------------------------------------------------------------------------------------------ kafka

kafka_pid() { pid_of "$KAFKA_PIDFILE" kafka.Kafka; }

# Ready means the broker answers metadata and lists itself (so it is unfenced and can create topics).
kafka_answers() {
	kcat "${KCAT_AUTH[@]}" -b "$BROKERS" -L -t __none -m 2 2>/dev/null | grep -q '^ *1 brokers:'
}

kafka_write_props() {
	local l=PLAINTEXT
	[[ -z $VX_AUTH ]] || l=SASL_PLAINTEXT
	[[ -z $AUTH_TLS ]] || l=SASL_SSL
	mkdir -p "$KAFKA_DATA"
	write_secret "$KAFKA_PROPS" <<EOF
# Generated by deploy/stack.sh at every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$VX_CONTROLLER_PORT
listeners=$l://127.0.0.1:$VX_BROKER_PORT,CONTROLLER://127.0.0.1:$VX_CONTROLLER_PORT
advertised.listeners=$l://127.0.0.1:$VX_BROKER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=$l
listener.security.protocol.map=CONTROLLER:PLAINTEXT,$l:$l
log.dirs=$KAFKA_DATA
num.partitions=6
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# After a SIGKILL the controller refuses the restarted broker until the old broker session expires
# (DUPLICATE_BROKER_REGISTRATION); 9 s by default. A shorter session makes a chaos restart take ~5 s.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
# Sized for the embedded default on two cores (Kafka's 3 network and 8 I/O threads take turns on them):
# make bench at 64 connections, 134 us of broker CPU per request against 157.
num.network.threads=1
num.io.threads=2
EOF
	[[ -n $VX_AUTH ]] || return 0
	# Auth mode: SCRAM users live in the metadata log (kafka_format adds them); the broker logs in to its
	# own listener as user broker. The controller listener stays PLAINTEXT on 127.0.0.1 (KRaft cannot
	# check SCRAM there: the controller reads the SCRAM users from the log it serves).
	cat >>"$KAFKA_PROPS" <<EOF
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.${l,,}.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="$VX_KAFKA_BROKER_PASSWORD";
EOF
	[[ -n $AUTH_TLS ]] || return 0
	cat >>"$KAFKA_PROPS" <<EOF
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_DIR/kafka.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
EOF
}

# Format the log dir once; the cluster id is kept in a file so a re-run formats with the same id.
kafka_format() {
	local id out
	if [[ ! -s $KAFKA_CLUSTER_ID ]]; then
		# log4j may print to stdout too: the id is the last line, 22 base64url characters
		out=$(java -Dlog4j.configuration="file:$KAFKA_LOG4J" -cp "$VX_KAFKA_LIBS/*" kafka.tools.StorageTool \
			random-uuid) || die "StorageTool random-uuid failed"
		id=$(printf '%s\n' "$out" | tail -n 1)
		[[ $id =~ ^[A-Za-z0-9_-]{22}$ ]] || die "StorageTool random-uuid gave no cluster id: $out"
		printf '%s\n' "$id" >"$KAFKA_CLUSTER_ID"
	fi
	id=$(cat "$KAFKA_CLUSTER_ID")
	# The SCRAM users are added by the first format only: a formatted log keeps the mode it was made in.
	local want=off have
	[[ -z $VX_AUTH ]] || want=scram
	if [[ -f $KAFKA_DATA/meta.properties ]]; then
		have=$(cat "$KAFKA_AUTH_MARK" 2>/dev/null || echo off)
		[[ $have == "$want" ]] || die "Kafka's storage in $KAFKA_DATA was formatted with SCRAM users: $have;" \
			"VX_AUTH=${VX_AUTH:-off} needs $want: use another VX_DATA_DIR, or deploy/stack.sh wipe"
	fi
	# StorageTool's arguments from a file (java @file), so no password is on a command line.
	write_secret "$RUN_DIR/storage.args" <<EOF
kafka.tools.StorageTool
format
-t
$id
-c
$KAFKA_PROPS
--ignore-formatted
EOF
	[[ -z $VX_AUTH ]] || printf '%s\n' --add-scram "SCRAM-SHA-512=[name=$VX_KAFKA_USER,password=$VX_KAFKA_PASSWORD]" \
		--add-scram "SCRAM-SHA-512=[name=broker,password=$VX_KAFKA_BROKER_PASSWORD]" >>"$RUN_DIR/storage.args"
	out=$(java -Dlog4j.configuration="file:$KAFKA_LOG4J" -cp "$VX_KAFKA_LIBS/*" "@$RUN_DIR/storage.args" 2>&1) || {
		rm -f "$RUN_DIR/storage.args"
		die "formatting Kafka storage failed: $(redact "$out")"
	}
	rm -f "$RUN_DIR/storage.args"
	[[ -f $KAFKA_AUTH_MARK ]] || echo "$want" >"$KAFKA_AUTH_MARK"
}

kafka_wait_ready() {
	local t0=$1 deadline=$(($1 + VX_KAFKA_READY_SECS * 1000))
	kcat_auth
	until kafka_answers; do
		if ! kafka_pid >/dev/null; then
			show_log_tail "$LOG_DIR/kafka.log" "$LOG_FROM"
			die "Kafka exited during startup (log: $LOG_DIR/kafka.log)"
		fi
		(($(now_ms) < deadline)) || {
			show_log_tail "$LOG_DIR/kafka.log" "$LOG_FROM"
			die "Kafka did not answer on $BROKERS within ${VX_KAFKA_READY_SECS}s"
		}
		sleep 0.2
	done
}

kafka_start() {
	local pid t0
	t0=$(now_ms)
	if pid=$(kafka_pid); then
		kafka_wait_ready "$t0"
		log "kafka: already up (pid $pid) on $BROKERS"
		return 0
	fi
	need_cmd java
	need_cmd kcat
	kafka_libs_current || deps_kafka_libs
	local port
	for port in "$VX_BROKER_PORT" "$VX_CONTROLLER_PORT"; do
		! port_in_use "$port" || die "port 127.0.0.1:$port is taken by a process that is not our Kafka"
	done
	mkdir -p "$LOG_DIR" "$RUN_DIR" "$LOG_DIR/kafka"
	[[ -z $VX_AUTH ]] || auth_check_passwords
	tls_make
	kafka_write_props
	kafka_format
	local jvm
	read -ra jvm <<<"$VX_BROKER_JVM_OPTS"
	spawn "$KAFKA_PIDFILE" "$LOG_DIR/kafka.log" \
		java -Xms"$VX_BROKER_HEAP" -Xmx"$VX_BROKER_HEAP" \
		"${jvm[@]}" -Djava.awt.headless=true \
		-Dlog4j.configuration="file:$KAFKA_LOG4J" -Dkafka.logs.dir="$LOG_DIR/kafka" \
		-cp "$VX_KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS"
	kafka_wait_ready "$t0"
	log "kafka: up (pid $(cat "$KAFKA_PIDFILE")) on $BROKERS in $(since "$t0")"
}

kafka_stop() {
	local pid
	if ! pid=$(kafka_pid); then
		rm -f "$KAFKA_PIDFILE"
		log "kafka: already stopped"
		return 0
	fi
	log "kafka: stopping (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	if ! wait_gone "$pid" "$VX_KAFKA_STOP_SECS"; then
		log "kafka: still running after ${VX_KAFKA_STOP_SECS}s; sending SIGKILL"
		kill -KILL -- "-$pid" 2>/dev/null || true
		wait_gone "$pid" 10 || die "kafka (pid $pid) survives SIGKILL"
	fi
	rm -f "$KAFKA_PIDFILE"
	log "kafka: stopped"
}

kafka_kill() {
	local pid
	if ! pid=$(kafka_pid); then
		log "kafka: not running"
		return 0
	fi
	kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
	wait_gone "$pid" 10 || die "kafka (pid $pid) survives SIGKILL"
	rm -f "$KAFKA_PIDFILE"
	log "kafka: killed (pid $pid)"
}

# --------------------------------------------------------------------------------------------- postgres

pg_bin() {
	if [[ -z $VX_PG_BIN ]]; then
		VX_PG_BIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
			sort -V | tail -n 1)
		[[ -x $VX_PG_BIN/postgres ]] || die "no PostgreSQL server in /usr/lib/postgresql; run: deploy/stack.sh deps"
	fi
	echo "$VX_PG_BIN"
}

# The server refuses to run as root: as root we run it as the system user VX_PG_USER.
as_pg() {
	if is_root; then
		runuser -u "$VX_PG_USER" -- "$@"
	else
		"$@"
	fi
}

pg_pid() { pid_of "$PG_DATA/postmaster.pid" "$PG_DATA"; }

# Every live process of our server, the postmaster and its backends: they are named postgres and work in
# the data directory. (Backends call setsid(), so a process group would not find them.)
pg_procs() {
	local d
	for d in /proc/[0-9]*; do
		[[ $(cat "$d/comm" 2>/dev/null) == postgres && $(readlink "$d/cwd" 2>/dev/null) == "$PG_DATA" ]] &&
			echo "${d#/proc/}"
	done
	return 0
}

# pg_wait_gone SECS: wait until no process of our server is left; false if some still run after SECS.
pg_wait_gone() {
	local deadline=$(($(now_ms) + $1 * 1000))
	while [[ -n $(pg_procs) ]]; do
		(($(now_ms) < deadline)) || return 1
		sleep 0.2
	done
}

# This script's own connections: TCP, or in auth mode the socket in RUN_DIR (trust, the folder 0700).
pg_admin_host() { if [[ -n $VX_AUTH ]]; then echo "$RUN_DIR"; else echo 127.0.0.1; fi; }
pg_sql() { "$(pg_bin)/psql" -X -q -v ON_ERROR_STOP=1 -h "$(pg_admin_host)" -p "$VX_PG_PORT" -U "$VX_PG_USER" "$@"; }
pg_answers() { "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$VX_PG_PORT" -U "$VX_PG_USER" -d postgres; }

pg_prepare_dirs() {
	mkdir -p "$PG_DATA" "$LOG_DIR" "$RUN_DIR"
	touch "$LOG_DIR/postgres.log"
	if is_root; then
		id -u "$VX_PG_USER" >/dev/null 2>&1 || {
			log "creating system user $VX_PG_USER to run PostgreSQL (it refuses to run as root)"
			useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$VX_PG_USER"
		}
		[[ $(stat -c %U "$VX_DATA_DIR/pg") == "$VX_PG_USER" ]] || chown -R "$VX_PG_USER:" "$VX_DATA_DIR/pg"
		chown "$VX_PG_USER:" "$RUN_DIR" "$LOG_DIR/postgres.log"
		runuser -u "$VX_PG_USER" -- test -w "$PG_DATA" ||
			die "user $VX_PG_USER cannot reach $PG_DATA; every folder above it must be searchable (o+x)," \
				"or set VX_DATA_DIR elsewhere"
	fi
	chmod 700 "$PG_DATA"
}

pg_init() {
	[[ -f $PG_DATA/PG_VERSION ]] && return 0
	log "postgres: initdb into $PG_DATA"
	as_pg "$(pg_bin)/initdb" -D "$PG_DATA" -U "$VX_PG_USER" -E UTF8 --locale=C.UTF-8 --auth=trust \
		>>"$LOG_DIR/postgres.log" 2>&1 || {
		show_log_tail "$LOG_DIR/postgres.log" "$LOG_FROM"
		die "initdb failed"
	}
	echo "include_if_exists = 'valerix.conf'" >>"$PG_DATA/postgresql.conf"
}

# Our settings, rewritten at every start so a changed VX_PG_PORT takes effect. Durability stays on.
pg_write_conf() {
	as_pg tee "$PG_DATA/valerix.conf" >/dev/null <<EOF
# Generated by deploy/stack.sh at every start; edit the script, not this file.
listen_addresses = '127.0.0.1'
port = $VX_PG_PORT
unix_socket_directories = '$RUN_DIR'
max_connections = 200
shared_buffers = 256MB
fsync = on
synchronous_commit = on
# Checkpoints by WAL volume at most every ~2 GiB of WAL (the default, 1 GB, made one every ~100,000
# orders): after each, the first change of every page writes the whole page to the WAL again.
max_wal_size = 4GB
checkpoint_timeout = 15min
EOF
	[[ -n $VX_AUTH ]] || return 0
	# Auth mode: passwords (scram-sha-256) on 127.0.0.1; trust on the socket, which only RUN_DIR's owner
	# reaches. With TLS, TCP without it is rejected.
	local host=host
	as_pg tee -a "$PG_DATA/valerix.conf" >/dev/null <<EOF
password_encryption = scram-sha-256
hba_file = '$PG_DATA/valerix_hba.conf'
EOF
	if [[ -n $AUTH_TLS ]]; then
		host=hostssl
		tls_make
		install -m 600 -o "$(stat -c %U "$PG_DATA")" "$TLS_DIR/server.key" "$PG_DATA/server.key"
		install -m 644 -o "$(stat -c %U "$PG_DATA")" "$TLS_DIR/server.pem" "$PG_DATA/server.crt"
		as_pg tee -a "$PG_DATA/valerix.conf" >/dev/null <<EOF
ssl = on
ssl_cert_file = '$PG_DATA/server.crt'
ssl_key_file = '$PG_DATA/server.key'
EOF
	fi
	as_pg tee "$PG_DATA/valerix_hba.conf" >/dev/null <<EOF
# Generated by deploy/stack.sh (VX_AUTH=$VX_AUTH) at every start.
local all all trust
$host all all 127.0.0.1/32 scram-sha-256
EOF
	chmod 700 "$RUN_DIR"
}

# Auth mode: role VX_PG_USER's password from VX_PG_PASSWORD, read by psql from the environment (\getenv), so
# it is on no command line; the session logs no statement, not even one that fails.
pg_set_password() {
	local out
	[[ -n $VX_AUTH ]] || return 0
	out=$(printf '%s\n' "SET log_min_error_statement = panic; SET log_statement = none;" '\getenv pw VX_PG_PASSWORD' \
		"ALTER ROLE \"$VX_PG_USER\" PASSWORD :'pw';" | VX_PG_PASSWORD=$VX_PG_PASSWORD pg_sql -d postgres 2>&1 >/dev/null) ||
		die "postgres: could not set the password of $VX_PG_USER: $(redact "$out")"
}

# Lock files left by a SIGKILL or a reboot must not block the start. First the backends of the old server
# must be gone (they hold its shared memory). Then a lock whose pid is dead is PostgreSQL's own business, but
# one whose pid still answers kill -0 (a zombie nobody reaps, as under a container init that does not
# reap, or another program after a reboot) makes PostgreSQL refuse to start: such a stale lock is removed.
pg_clear_leftovers() {
	local lock pid state
	pg_wait_gone 30 || die "processes of a killed PostgreSQL are still running: $(pg_procs | xargs)"
	for lock in "$PG_DATA/postmaster.pid" "$RUN_DIR/.s.PGSQL.$VX_PG_PORT.lock"; do
		[[ -f $lock ]] || continue
		read -r pid <"$lock" || true
		if ! [[ $pid =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then continue; fi
		state=$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null || true)
		if [[ $state == Z || $(cat "/proc/$pid/comm" 2>/dev/null) != postgres ]]; then
			log "postgres: removing stale $(basename "$lock") (pid $pid is no running postmaster)"
			rm -f "$lock"
		fi
	done
}

pg_ensure_databases() {
	local db
	for db in "${DATABASES[@]}"; do
		if [[ -z $(pg_sql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
			"$(pg_bin)/createdb" -h "$(pg_admin_host)" -p "$VX_PG_PORT" -U "$VX_PG_USER" -O "$VX_PG_USER" "$db"
			log "postgres: created database $db"
		fi
	done
}

pg_wait_ready() {
	local deadline=$(($(now_ms) + 30000))
	until pg_answers; do
		(($(now_ms) < deadline)) || die "PostgreSQL does not answer on 127.0.0.1:$VX_PG_PORT"
		sleep 0.2
	done
}

pg_start() {
	local pid t0
	t0=$(now_ms)
	pg_bin >/dev/null
	if pid=$(pg_pid); then
		pg_wait_ready
		pg_set_password
		pg_ensure_databases
		log "postgres: already up (pid $pid) on 127.0.0.1:$VX_PG_PORT"
		return 0
	fi
	! port_in_use "$VX_PG_PORT" || die "port 127.0.0.1:$VX_PG_PORT is taken by a process that is not our PostgreSQL"
	rotate_log "$LOG_DIR/postgres.log"
	LOG_FROM=$(stat -c %s "$LOG_DIR/postgres.log" 2>/dev/null || echo 0)
	pg_prepare_dirs
	pg_init
	pg_write_conf
	pg_clear_leftovers
	as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" -l "$LOG_DIR/postgres.log" -w -t 60 -s start 9>&- || {
		show_log_tail "$LOG_DIR/postgres.log" "$LOG_FROM"
		die "PostgreSQL did not start (log: $LOG_DIR/postgres.log)"
	}
	pg_wait_ready
	pg_set_password
	pg_ensure_databases
	log "postgres: up (pid $(pg_pid)) on 127.0.0.1:$VX_PG_PORT in $(since "$t0")"
}

pg_stop() {
	local pid
	if ! pid=$(pg_pid); then
		log "postgres: already stopped"
		return 0
	fi
	log "postgres: stopping (pid $pid)"
	as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 -s stop || die "pg_ctl stop failed"
	pg_wait_gone 10 || die "postgres processes remain after stop: $(pg_procs | xargs)"
	log "postgres: stopped"
}

# A crash: SIGKILL to the postmaster and all its backends at once, as a power cut would.
pg_kill() {
	local pid
	if ! pid=$(pg_pid); then
		log "postgres: not running"
		return 0
	fi
	# shellcheck disable=SC2046 # one pid per word
	kill -KILL $(pg_procs) 2>/dev/null || true
	pg_wait_gone 10 || die "postgres processes survive SIGKILL: $(pg_procs | xargs)"
	log "postgres: killed (pid $pid)"
}

# --------------------------------------------------------------------------------------------- services

service_addr() {
	case $1 in
	inventory-svc) echo "$INVENTORY_HTTP_ADDR" ;;
	order-svc) echo "$ORDERS_HTTP_ADDR" ;;
	gateway) echo "$GATEWAY_HTTP_ADDR" ;;
	*) die "unknown service $1" ;;
	esac
}

service_pid() { pid_of "$RUN_DIR/$1.pid" "$REPO/build/$1"; }

service_start() {
	local name=$1 bin=$REPO/build/$1 addr pid t0 deadline
	addr=$(service_addr "$name")
	t0=$(now_ms)
	if pid=$(service_pid "$name"); then
		log "$name: already running (pid $pid) on $addr"
		return 0
	fi
	! port_in_use "${addr##*:}" "${addr%:*}" ||
		die "$name: $addr is taken by a process not started by stack.sh (stop it first)"
	mkdir -p "$LOG_DIR" "$RUN_DIR"
	export_service_env
	spawn "$RUN_DIR/$name.pid" "$LOG_DIR/$name.log" "$bin"
	deadline=$((t0 + VX_SERVICE_READY_SECS * 1000))
	until curl -fsS -o /dev/null --max-time 2 "http://$addr/ready" 2>/dev/null; do
		if ! service_pid "$name" >/dev/null; then
			show_log_tail "$LOG_DIR/$name.log" "$LOG_FROM"
			die "$name exited during startup (log: $LOG_DIR/$name.log)"
		fi
		(($(now_ms) < deadline)) || {
			show_log_tail "$LOG_DIR/$name.log" "$LOG_FROM"
			curl -sS --max-time 2 "http://$addr/ready" 2>&1 | sed 's/^/    \/ready: /' >&2 || true
			service_kill "$name" >&2 # a half-started service would pass for a started one next time
			die "$name did not answer http://$addr/ready within ${VX_SERVICE_READY_SECS}s"
		}
		sleep 0.2
	done
	log "$name: up (pid $(cat "$RUN_DIR/$name.pid")) on http://$addr in $(since "$t0")"
}

# A crash: SIGKILL to one service's process group, as kill -9 would.
service_kill() {
	local name=$1 pid
	if ! pid=$(service_pid "$name"); then
		log "$name: not running"
		return 0
	fi
	kill -KILL -- "-$pid" 2>/dev/null || true
	wait_gone "$pid" 10 || die "$name (pid $pid) survives SIGKILL"
	rm -f "$RUN_DIR/$name.pid"
	log "$name: killed (pid $pid)"
}

# services_stop [NAME...]: SIGTERM the named services (default: every *.pid in RUN_DIR but Kafka's),
# wait, SIGKILL the stragglers.
services_stop() {
	local f name pid pids=() names=() deadline i files=()
	if (($#)); then
		for name in "$@"; do files+=("$RUN_DIR/$name.pid"); done
	else
		files=("$RUN_DIR"/*.pid)
	fi
	for f in "${files[@]}"; do
		[[ -e $f && $f != "$KAFKA_PIDFILE" ]] || continue
		name=$(basename "$f" .pid)
		if pid=$(pid_of "$f" "$name"); then
			log "$name: stopping (pid $pid)"
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
			names+=("$name")
		fi
		rm -f "$f"
	done
	deadline=$(($(now_ms) + VX_SERVICE_STOP_SECS * 1000))
	for i in "${!pids[@]}"; do
		while group_alive "${pids[i]}" && (($(now_ms) < deadline)); do sleep 0.2; done
		if group_alive "${pids[i]}"; then
			log "${names[i]}: still running after ${VX_SERVICE_STOP_SECS}s; sending SIGKILL"
			kill -KILL -- "-${pids[i]}" 2>/dev/null || true
			wait_gone "${pids[i]}" 10 || die "${names[i]} (pid ${pids[i]}) survives SIGKILL"
		fi
		log "${names[i]}: stopped"
	done
}

# Seed demo products through the real command path, only into an empty catalogue.
seed_products() {
	local count want t0 deadline
	[[ -f $VX_SEED_FILE ]] || {
		log "seed: no $VX_SEED_FILE; skipping"
		return 0
	}
	if ! count=$(pg_sql -d inventory -tAc 'SELECT count(*) FROM products' 2>/dev/null); then
		log "seed: database inventory has no table products yet; skipping"
		return 0
	fi
	want=$(grep -c '|' "$VX_SEED_FILE")
	if ((count > 0)); then
		log "seed: products already has $count rows; not seeding"
		return 0
	fi
	t0=$(now_ms)
	kcat_auth
	# (kcat says on stderr which configuration file it read: noise)
	grep '|' "$VX_SEED_FILE" | kcat "${KCAT_AUTH[@]}" -P -b "$BROKERS" -t inventory.commands -K'|' \
		2> >(grep -v '^% Reading configuration from file' >&2) ||
		die "seed: kcat could not produce to inventory.commands"
	deadline=$((t0 + VX_SEED_SECS * 1000))
	while count=$(pg_sql -d inventory -tAc 'SELECT count(*) FROM products') && ((count < want)); do
		(($(now_ms) < deadline)) || die "seed: products has $count of $want rows after ${VX_SEED_SECS}s"
		sleep 0.2
	done
	log "seed: $want products in $(since "$t0")"
}

cmd_services_up() {
	local name started=0
	for name in "${SERVICES[@]}"; do
		if [[ -x $REPO/build/$name ]]; then
			service_start "$name"
			started=1
		else
			log "$name: no build/$name; skipping"
		fi
	done
	((started)) && seed_products
	return 0
}

# --------------------------------------------------------------------------------------------- commands

cmd_up() {
	local what=${1:-all}
	case $what in
	kafka) kafka_start ;;
	postgres) pg_start ;;
	all)
		pg_start
		kafka_start
		if [[ -x $REPO/build/vxadmin ]]; then
			export_service_env
			"$REPO/build/vxadmin" topics || die "build/vxadmin topics failed"
		else
			log "note: no build/vxadmin yet; topics not created"
		fi
		;;
	*) die "up: unknown component '$what' (kafka, postgres or all)" ;;
	esac
}

cmd_component() {
	local action=$1 name=${2:-}
	case $name in
	kafka | postgres) ;;
	inventory-svc | order-svc | gateway)
		[[ -x $REPO/build/$name ]] || die "$action: no build/$name (run make)"
		case $action in
		start) service_start "$name" ;;
		stop) services_stop "$name" ;;
		kill) service_kill "$name" ;;
		esac
		return 0
		;;
	*) die "$action: name kafka, postgres, inventory-svc, order-svc or gateway" ;;
	esac
	case $action:$name in
	start:kafka) kafka_start ;;
	stop:kafka) kafka_stop ;;
	kill:kafka) kafka_kill ;;
	start:postgres) pg_start ;;
	stop:postgres) pg_stop ;;
	kill:postgres) pg_kill ;;
	esac
}

cmd_down() {
	services_stop
	kafka_stop
	pg_stop
}

cmd_wipe() {
	cmd_down
	log "wiping Kafka data, PostgreSQL data, logs and pid files (keeping $VX_KAFKA_LIBS)"
	rm -rf "$KAFKA_DATA" "$KAFKA_PROPS" "$KAFKA_CLUSTER_ID" "$KAFKA_AUTH_MARK" "$TLS_DIR" "$VX_DATA_DIR/pg" "$LOG_DIR" "$RUN_DIR"
}

cmd_status() {
	local pid name
	if pid=$(kafka_pid); then
		printf '%-14s running (pid %s) %s\n' kafka "$pid" "$BROKERS"
	else
		printf '%-14s stopped\n' kafka
	fi
	if pid=$(pg_pid); then
		printf '%-14s running (pid %s) 127.0.0.1:%s\n' postgres "$pid" "$VX_PG_PORT"
	else
		printf '%-14s stopped\n' postgres
	fi
	for name in "${SERVICES[@]}"; do
		if pid=$(service_pid "$name"); then
			printf '%-14s running (pid %s) http://%s\n' "$name" "$pid" "$(service_addr "$name")"
		else
			printf '%-14s stopped\n' "$name"
		fi
	done
}

cmd_run() {
	local name logs=() tail_pid
	cmd_up all
	cmd_services_up
	unlock_stack
	log "gateway        http://$GATEWAY_HTTP_ADDR"
	log "order-svc      http://$ORDERS_HTTP_ADDR"
	log "inventory-svc  http://$INVENTORY_HTTP_ADDR"
	log "Kafka          $BROKERS"
	log "PostgreSQL     postgresql://$VX_PG_USER@127.0.0.1:$VX_PG_PORT/{inventory,orders}"
	for name in "${SERVICES[@]}"; do
		[[ -f $LOG_DIR/$name.log ]] && logs+=("$LOG_DIR/$name.log")
	done
	((${#logs[@]})) || logs=("$LOG_DIR/kafka.log" "$LOG_DIR/postgres.log")
	log "following ${logs[*]}; Ctrl-C stops everything"
	tail -n 0 -F "${logs[@]}" 9>&- &
	tail_pid=$!
	trap 'kill "$tail_pid" 2>/dev/null || true; echo; log "shutting down"; lock_stack; cmd_down; exit 0' INT TERM
	wait "$tail_pid" || true
}

usage() {
	sed -n '6,8p' "${BASH_SOURCE[0]}" | sed 's/^# //' >&2
	exit 2
}

main() {
	local cmd=${1:-}
	shift || true
	case $cmd in
	deps | up | start | stop | kill | down | wipe | services-up | run) lock_stack ;;
	esac
	case $cmd in
	deps) cmd_deps ;;
	up) cmd_up "$@" ;;
	start | stop | kill) cmd_component "$cmd" "$@" ;;
	down) cmd_down ;;
	wipe) cmd_wipe ;;
	status) cmd_status ;;
	services-up) cmd_services_up ;;
	run) cmd_run ;;
	*) usage ;;
	esac
}

main "$@"
