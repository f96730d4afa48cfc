#!/usr/bin/env bash
# disk.sh: `make faults-disk` (opt-in: it needs root with CAP_SYS_ADMIN to mount two tmpfs). A full
# disk is the one fault that may stop Valerix: it must stop without losing an accepted order, and
# resume when space returns. PostgreSQL's data folder and Kafka's log folder each live on a tmpfs of
# their own (FAULTS_DISK_MB [512] each), so either can be filled to its last byte alone (dd until it refuses),
# under the soak's load (build/vxsoak, SOAK_COMPONENTS=none):
#   1. PostgreSQL's disk full for FAULTS_DISK_FULL_S [30]: what the gateway answers meanwhile is
#      counted; the filler is removed, PostgreSQL started again if it stopped;
#   2. then Kafka's disk full for as long: likewise, the broker started again if it stopped;
#   3. the soak's five checks: every accepted order has one final outcome, stock adds up, nothing
#      applied twice, no valid command dead-lettered, every client got the same answer each time.
# Its own stack in $VX_DATA_DIR/faults-disk (wiped first), the ports of faults.sh (FAULTS_*_PORT);
# the stack is brought down and the tmpfs unmounted on every exit path.
FAULTS_NAME=faults-disk
FAULTS_DISK_MB=${FAULTS_DISK_MB:-512}
FAULTS_DISK_FULL_S=${FAULTS_DISK_FULL_S:-30}

# shellcheck disable=SC2317 # called by faults_up and the EXIT trap
faults_before_up() {
	local d
	stack wipe
	for d in pg kafka; do
		mountpoint -q "$FAULTS_DIR/$d" && umount "$FAULTS_DIR/$d"
		rm -rf "${FAULTS_DIR:?}/$d"
		mkdir -p "$FAULTS_DIR/$d"
		mount -t tmpfs -o "size=${FAULTS_DISK_MB}m,mode=0755" "faults-$d" "$FAULTS_DIR/$d" ||
			abort "cannot mount a tmpfs on $FAULTS_DIR/$d: make faults-disk needs root with CAP_SYS_ADMIN"
	done
}
# shellcheck disable=SC2317
faults_cleanup() { rm -f "$FAULTS_DIR"/pg/filler* "$FAULTS_DIR"/kafka/filler*; }
# shellcheck disable=SC2317
faults_after_down() {
	local d
	for d in pg kafka; do mountpoint -q "$FAULTS_DIR/$d" && umount "$FAULTS_DIR/$d"; done
}
# shellcheck source=tests/faults/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

faults_up
soak_start $((5 + 2 * FAULTS_DISK_FULL_S + 45))
sleep 5

# fill WHAT NAME: fills WHAT's tmpfs (pg or kafka) to its last byte (dd until it refuses) for FAULTS_DISK_FULL_S, POSTs an
# order every second meanwhile, then frees the space and starts NAME (postgres or kafka) again if it
# stopped. Prints what happened.
fill() {
	local what=$1 name=$2 dir=$FAULTS_DIR/$1 avail t0 n=0 code alive=1 restarted=no
	avail=$(df --output=avail -B1 "$dir" | tail -n 1)
	say "$name's disk full: $((avail / 1048576)) MiB free on $dir filled for $FAULTS_DISK_FULL_S s"
	# written until the disk refuses (a preallocation of "all that is free" races the server's writes)
	dd if=/dev/zero of="$dir/filler" bs=1M status=none 2>/dev/null
	dd if=/dev/zero of="$dir/filler.tail" bs=4k status=none 2>/dev/null
	(($(df --output=avail -B1 "$dir" | tail -n 1) == 0)) || abort "cannot fill $dir"
	: >"$OUT/$what-codes.txt"
	t0=$(now_ms)
	while (($(now_ms) - t0 < FAULTS_DISK_FULL_S * 1000)); do
		n=$((n + 1))
		code=$(curl -s -o /dev/null --max-time 10 -w '%{http_code}' -X POST "http://$GATEWAY_HTTP_ADDR/orders" \
			-H 'Content-Type: application/json' -H "Idempotency-Key: fault-disk-$what-$n" \
			-d '{"customer_id":"fault-probe","items":[{"product_id":"FAULT-NONE","quantity":1}]}')
		echo "$code" >>"$OUT/$what-codes.txt"
		sleep 1
	done
	"$STACK" status | grep "^$name " | grep -q running || alive=0
	rm -f "$dir/filler" "$dir/filler.tail"
	say "$name's disk has space again ($name $( ((alive)) && echo 'still running' || echo 'had stopped'))"
	if ! ((alive)); then
		stack start "$name" || abort "$name did not start again once the disk had space"
		restarted=yes
	fi
	FILL_SUMMARY="POST /orders answered $(sort "$OUT/$what-codes.txt" | uniq -c | awk '{ printf "%s%s x%s", s, $2, $1; s = ", " }') meanwhile; $name stopped: $( ((alive)) && echo no || echo yes), started again: $restarted"
}

PG_LOG=$FAULTS_DIR/log/postgres.log
pg_from=$(stat -c %s "$PG_LOG")
res_before=$(($(metric "$ORDERS_HTTP_ADDR" valerix_apply_retries_total 'reason=') + $(metric "$INVENTORY_HTTP_ADDR" valerix_apply_retries_total 'reason=')))
fill pg postgres
sleep 3
nospace=$(tail -c +$((pg_from + 1)) "$PG_LOG" | grep -c 'No space left on device')
res_after=$(($(metric "$ORDERS_HTTP_ADDR" valerix_apply_retries_total 'reason=') + $(metric "$INVENTORY_HTTP_ADDR" valerix_apply_retries_total 'reason=')))
check "$((nospace > 0))" "PostgreSQL's disk full: $nospace 'No space left on device' lines in its log; the services retried $((res_after - res_before)) calls; $FILL_SUMMARY"
sleep 15

KAFKA_LOG=$FAULTS_DIR/log/kafka.log
k_from=$(stat -c %s "$KAFKA_LOG")
fill kafka kafka
nospace=$(tail -c +$((k_from + 1)) "$KAFKA_LOG" "$FAULTS_DIR"/log/kafka/server.log 2>/dev/null | grep -c 'No space left on device')
check "$((nospace > 0))" "Kafka's disk full: $nospace 'No space left on device' lines in its logs; $FILL_SUMMARY"
for s in inventory-svc order-svc gateway; do
	stack start "$s" || fail "$s did not run again after the full disks"
done

soak_check "PostgreSQL's and Kafka's disks full"
