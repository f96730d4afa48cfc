#!/usr/bin/env bash
# backup.sh: backs up and restores Valerix's state without losing an accepted command. For each
# consuming service it reads the consumer group's committed offsets FIRST, then dumps the service's
# database (pg_dump -Fc). Offsets are committed only after a batch's transaction has committed, so the
# dump holds at least everything before them; a restore puts both back and the services replay the
# topics from those offsets, re-applying some commands the dump already holds, which the outbox's
# unique idempotency keys turn into no-ops (their recorded answers are sent again).
#
# Usage: deploy/backup.sh backup | restore [--start] [DIR] | list | prune | help
#
# Settings (environment variables, default in brackets):
#   VX_BACKUP_DIR             [$VX_DATA_DIR/backup, <repo>/var/backup]  one folder per backup, named by its UTC time
#   VX_BACKUP_RETENTION_DAYS  [7]     prune (run after every backup) deletes backups older than this;
#                                     the newest complete backup is always kept
#   VXADMIN                   [<repo>/build/vxadmin]  reads and resets the consumer groups' offsets
#   VX_PG_BIN                 [newest /usr/lib/postgresql/*/bin]  pg_dump, pg_restore, psql
#   INVENTORY_DB, ORDERS_DB   [postgresql://valerix@127.0.0.1:55432/inventory, .../orders]
#   INVENTORY_GROUP_ID, ORDERS_GROUP_ID  [inventory-svc, order-svc]
#   INVENTORY_COMMANDS_TOPIC, INVENTORY_EVENTS_TOPIC, ORDERS_COMMANDS_TOPIC  [the contract's names]
#   INVENTORY_HTTP_ADDR, ORDERS_HTTP_ADDR, GATEWAY_HTTP_ADDR  [127.0.0.1:8082, 8081, 8080]: restore
#                                     refuses while any of them answers /health
#   KAFKA_BOOTSTRAP_SERVERS   [127.0.0.1:9092]
# Exit status: 0 done, 1 failed (nothing half-done is left behind that could lose data), 2 usage.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

VX_PG_PORT=${VX_PG_PORT:-55432}
VX_PG_USER=${VX_PG_USER:-valerix}
DEV_INVENTORY_DB=postgresql://$VX_PG_USER@127.0.0.1:$VX_PG_PORT/inventory
DEV_ORDERS_DB=postgresql://$VX_PG_USER@127.0.0.1:$VX_PG_PORT/orders
VX_BACKUP_DIR=$(realpath -m "${VX_BACKUP_DIR:-${VX_DATA_DIR:-$REPO/var}/backup}")
VX_BACKUP_RETENTION_DAYS=${VX_BACKUP_RETENTION_DAYS:-7}
VXADMIN=${VXADMIN:-$REPO/build/vxadmin}
VX_PG_BIN=${VX_PG_BIN:-}
INVENTORY_DB=${INVENTORY_DB:-$DEV_INVENTORY_DB}
ORDERS_DB=${ORDERS_DB:-$DEV_ORDERS_DB}
INVENTORY_GROUP_ID=${INVENTORY_GROUP_ID:-inventory-svc}
ORDERS_GROUP_ID=${ORDERS_GROUP_ID:-order-svc}
INVENTORY_COMMANDS_TOPIC=${INVENTORY_COMMANDS_TOPIC:-inventory.commands}
INVENTORY_EVENTS_TOPIC=${INVENTORY_EVENTS_TOPIC:-inventory.events}
ORDERS_COMMANDS_TOPIC=${ORDERS_COMMANDS_TOPIC:-orders.commands}
INVENTORY_HTTP_ADDR=${INVENTORY_HTTP_ADDR:-127.0.0.1:8082}
ORDERS_HTTP_ADDR=${ORDERS_HTTP_ADDR:-127.0.0.1:8081}
GATEWAY_HTTP_ADDR=${GATEWAY_HTTP_ADDR:-127.0.0.1:8080}
export KAFKA_BOOTSTRAP_SERVERS=${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}
# vxadmin reads the same variables as the services.
export INVENTORY_DB ORDERS_DB INVENTORY_GROUP_ID ORDERS_GROUP_ID
export INVENTORY_COMMANDS_TOPIC INVENTORY_EVENTS_TOPIC ORDERS_COMMANDS_TOPIC

MANIFEST_FORMAT=1
NAME_RE='^[0-9]{8}T[0-9]{6}Z$' # a complete backup's folder; a backup in progress is NAME.partial

# The consuming services, in the order they are backed up: name, database URL, group, topics consumed.
SVC_NAMES=(inventory-svc order-svc)
declare -A SVC_DB=([inventory-svc]=$INVENTORY_DB [order-svc]=$ORDERS_DB)
declare -A SVC_GROUP=([inventory-svc]=$INVENTORY_GROUP_ID [order-svc]=$ORDERS_GROUP_ID)
declare -A SVC_TOPICS=([inventory-svc]=$INVENTORY_COMMANDS_TOPIC [order-svc]="$ORDERS_COMMANDS_TOPIC $INVENTORY_EVENTS_TOPIC")

# ---------------------------------------------------------------------------------------------- helpers

log() { printf 'backup: %s\n' "$*"; }
die() {
	printf 'backup: error: %s\n' "$*" >&2
	exit 1
}
usage_die() {
	printf 'backup: %s (deploy/backup.sh help)\n' "$*" >&2
	exit 2
}
need_cmd() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found; run: deploy/stack.sh deps"; }
now_ms() { date +%s%3N; }
since() { awk -v ms=$(($(now_ms) - $1)) 'BEGIN { printf "%.1f s", ms / 1000 }'; }

usage() {
	cat <<'EOF'
Usage: deploy/backup.sh COMMAND

  backup              reads each consuming service's committed offsets (vxadmin offsets GROUP), then
                      dumps its database (pg_dump -Fc), into VX_BACKUP_DIR/<UTC time>/ with a
                      manifest.json (time, git commit, per service: database, dump, sha256, group,
                      offsets file); then prunes backups older than VX_BACKUP_RETENTION_DAYS.
                      The services may keep running.
  restore [--start] [DIR]
                      restores DIR (default: the newest complete backup in VX_BACKUP_DIR). Refuses
                      while a service answers /health or a group has members. Verifies every sha256,
                      resets each group to the backup's offsets (vxadmin offsets reset --from-file),
                      then replaces each database with its dump (restored beside it, then swapped in).
                      Started afterwards, the services replay what arrived after the backup.
                      --start: then starts the services with deploy/stack.sh services-up, when the
                      databases are the dev stack's.
  list                the backups in VX_BACKUP_DIR, oldest first
  prune               deletes backups older than VX_BACKUP_RETENTION_DAYS (keeps the newest)
  help                this text

Settings: VX_BACKUP_DIR, VX_BACKUP_RETENTION_DAYS, VXADMIN, VX_PG_BIN, INVENTORY_DB, ORDERS_DB,
INVENTORY_GROUP_ID, ORDERS_GROUP_ID, the topic variables, *_HTTP_ADDR, KAFKA_BOOTSTRAP_SERVERS
(see the head of deploy/backup.sh). Exit status: 0 done, 1 failed, 2 usage.
EOF
}

pg_bin() {
	if [[ -z $VX_PG_BIN ]]; then
		VX_PG_BIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
			sort -V | tail -n 1)
	fi
	[[ -x $VX_PG_BIN/pg_dump && -x $VX_PG_BIN/pg_restore && -x $VX_PG_BIN/psql ]] ||
		die "no pg_dump/pg_restore/psql in '${VX_PG_BIN:-/usr/lib/postgresql/*/bin}' (set VX_PG_BIN, or run deploy/stack.sh deps)"
	echo "$VX_PG_BIN"
}

# db_split URL: sets DB_NAME, and DB_BASE and DB_PARAMS for db_url. Only URLs are understood
# (postgresql://[user[:password]@]host[:port]/dbname[?params]), as the services take them.
DB_NAME='' DB_BASE='' DB_PARAMS=''
db_split() {
	local re='^(postgres(ql)?://[^/?]*)/([A-Za-z0-9_]+)(\?.*)?$'
	[[ $1 =~ $re ]] || die "cannot read the database name from '$(db_redact "$1")'; want postgresql://user@host:port/dbname"
	DB_BASE=${BASH_REMATCH[1]}
	DB_NAME=${BASH_REMATCH[3]}
	DB_PARAMS=${BASH_REMATCH[4]}
}
# db_url NAME: the URL of database NAME on the server of the last db_split.
db_url() { echo "$DB_BASE/$1$DB_PARAMS"; }

# db_redact URL: the URL without its password, fit for a manifest or a log.
db_redact() { sed -E 's#^(postgres(ql)?://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

psql_admin() { PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" "$(pg_bin)/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$1" "${@:2}"; }

vxadmin_ok() {
	[[ -x $VXADMIN ]] || die "$VXADMIN not found; run: make build/vxadmin"
	"$VXADMIN" offsets --help >/dev/null 2>&1 ||
		die "$VXADMIN has no 'offsets' command (vxadmin offsets GROUP); rebuild it: make build/vxadmin"
}

# One backup, restore or prune at a time in a backup folder: an flock on fd 7.
lock_dir() {
	mkdir -p "$VX_BACKUP_DIR" || die "cannot create $VX_BACKUP_DIR"
	exec 7>>"$VX_BACKUP_DIR/.lock"
	flock -n 7 || die "another deploy/backup.sh is working in $VX_BACKUP_DIR (lock $VX_BACKUP_DIR/.lock)"
}

# check_offsets FILE: lines of TOPIC<TAB>PARTITION<TAB>OFFSET, as vxadmin offsets prints them; OFFSET
# "-" is a partition without a committed offset (read from its beginning after a restore).
check_offsets() {
	awk -F'\t' 'NF != 3 || $2 !~ /^[0-9]+$/ || $3 !~ /^([0-9]+|-)$/ { print "line " NR ": " $0; bad = 1; exit }
		END { exit bad }' "$1"
}

# The complete backups in VX_BACKUP_DIR, oldest first (names sort by time).
backups() {
	local d
	for d in "$VX_BACKUP_DIR"/*/; do
		d=${d%/}
		[[ $(basename "$d") =~ $NAME_RE && -f $d/manifest.json ]] && echo "$d"
	done
	return 0
}

# ----------------------------------------------------------------------------------------------- backup

cmd_backup() {
	local stamp started dir part svc url group t0 t1 file n entries=() commit
	(($# == 0)) || usage_die "backup takes no arguments"
	need_cmd jq
	need_cmd sha256sum
	pg_bin >/dev/null
	vxadmin_ok
	lock_dir
	t0=$(now_ms)
	stamp=$(date -u +%Y%m%dT%H%M%SZ)
	started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	while [[ -e $VX_BACKUP_DIR/$stamp || -e $VX_BACKUP_DIR/$stamp.partial ]]; do
		sleep 1
		stamp=$(date -u +%Y%m%dT%H%M%SZ)
	done
	dir=$VX_BACKUP_DIR/$stamp
	part=$dir.partial
	PARTIAL=$part
	mkdir -p "$part"
	# A failure leaves no folder that list or restore would take for a backup.
	trap 'rm -rf "$PARTIAL"' EXIT
	for svc in "${SVC_NAMES[@]}"; do
		url=${SVC_DB[$svc]}
		group=${SVC_GROUP[$svc]}
		db_split "$url"
		t1=$(now_ms)
		# First the offsets: everything before them is in the database by now.
		"$VXADMIN" offsets "$group" >"$part/$svc.offsets" ||
			die "$svc: vxadmin offsets $group failed"
		check_offsets "$part/$svc.offsets" >"$part/bad" ||
			die "$svc: vxadmin offsets $group printed an unexpected $(cat "$part/bad")"
		rm -f "$part/bad"
		n=$(wc -l <"$part/$svc.offsets")
		# Then the dump: one consistent snapshot (pg_dump runs in one repeatable-read transaction).
		"$(pg_bin)/pg_dump" -Fc --no-password -d "$url" -f "$part/$svc.dump" ||
			die "$svc: pg_dump of $(db_redact "$url") failed"
		file=$part/$svc.dump
		entries+=("$(jq -n --arg service "$svc" --arg database "$DB_NAME" --arg url "$(db_redact "$url")" \
			--arg dump "$svc.dump" --arg sha "$(sha256sum "$file" | cut -d' ' -f1)" \
			--argjson bytes "$(stat -c %s "$file")" --arg group "$group" \
			--arg topics "${SVC_TOPICS[$svc]}" --arg offsets "$svc.offsets" \
			--arg osha "$(sha256sum "$part/$svc.offsets" | cut -d' ' -f1)" \
			'{service: $service, database: $database, db_url: $url, dump: $dump, sha256: $sha, bytes: $bytes,
			  group: $group, topics: ($topics | split(" ")), offsets: $offsets, offsets_sha256: $osha}')")
		log "$svc: $n committed offsets of group $group, then database $DB_NAME ($(stat -c %s "$file") bytes) in $(since "$t1")"
	done
	commit=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)
	[[ $commit == unknown || -z $(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null) ]] ||
		commit="$commit-dirty"
	printf '%s\n' "${entries[@]}" | jq -s --argjson format "$MANIFEST_FORMAT" --arg time "$started" \
		--arg completed "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg name "$stamp" --arg commit "$commit" \
		--arg kafka "$KAFKA_BOOTSTRAP_SERVERS" \
		'{format: $format, name: $name, time: $time, completed: $completed, git_commit: $commit, kafka: $kafka,
		  services: .}' \
		>"$part/manifest.json"
	sync -f "$part/manifest.json" 2>/dev/null || sync
	mv "$part" "$dir"
	trap - EXIT
	log "backup $dir complete in $(since "$t0")"
	prune_locked
}

# ------------------------------------------------------------------------------------------------ prune

cmd_prune() {
	(($# == 0)) || usage_die "prune takes no arguments"
	lock_dir
	prune_locked
}

prune_locked() {
	local days=$VX_BACKUP_RETENTION_DAYS limit d all newest gone=0 t
	[[ $days =~ ^[0-9]+$ ]] || die "VX_BACKUP_RETENTION_DAYS must be a whole number of days, not '$days'"
	limit=$(($(date +%s) - days * 86400))
	mapfile -t all < <(backups)
	newest=${all[-1]:-}
	for d in "${all[@]}"; do
		[[ $d != "$newest" ]] || continue
		t=$(jq -r .time "$d/manifest.json" 2>/dev/null) && t=$(date -u -d "$t" +%s 2>/dev/null) ||
			t=$(stat -c %Y "$d")
		if ((t < limit)); then
			rm -rf "$d"
			gone=$((gone + 1))
			log "pruned $(basename "$d") (older than $days days)"
		fi
	done
	# Folders of a backup that died half-way (.partial), once a day old: never complete, never restorable.
	for d in "$VX_BACKUP_DIR"/*.partial; do
		[[ -d $d ]] || continue
		(($(stat -c %Y "$d") < $(date +%s) - 86400)) || continue
		rm -rf "$d"
		log "removed unfinished $(basename "$d")"
	done
	log "prune: $((${#all[@]} - gone)) backup(s) kept in $VX_BACKUP_DIR (retention $days days)"
}

# ------------------------------------------------------------------------------------------------- list

cmd_list() {
	local d m ok svc all
	(($# == 0)) || usage_die "list takes no arguments"
	mapfile -t all < <(backups)
	if ((${#all[@]} == 0)); then
		log "no backups in $VX_BACKUP_DIR"
		return 0
	fi
	printf '%-18s %-20s %-10s %-8s %s\n' NAME TIME SIZE FILES COMMIT
	for d in "${all[@]}"; do
		m=$d/manifest.json
		ok=ok
		for svc in $(jq -r '.services[] | .dump, .offsets' "$m" 2>/dev/null || echo '?'); do
			[[ -f $d/$svc ]] || ok=missing
		done
		printf '%-18s %-20s %-10s %-8s %s\n' "$(basename "$d")" "$(jq -r .time "$m" 2>/dev/null || echo '?')" \
			"$(du -sh "$d" | cut -f1)" "$ok" "$(jq -r .git_commit "$m" 2>/dev/null | cut -c1-12)"
	done
}

# ---------------------------------------------------------------------------------------------- restore

# service_answers ADDR: true when something answers http://ADDR/health, whatever the status.
service_answers() {
	local code
	code=$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "http://$1/health" 2>/dev/null) || true
	[[ -n $code && $code != 000 ]]
}

# group_members GROUP: the number of members vxadmin lag reports for GROUP.
group_members() {
	local out n
	out=$("$VXADMIN" lag "$1" 2>&1) || die "vxadmin lag $1 failed: $out"
	n=$(awk -v g="$1" '$1 == g && $2 == "members" { print $3 }' <<<"$out" | tail -n 1)
	[[ $n =~ ^[0-9]+$ ]] || die "vxadmin lag $1 did not say how many members the group has: $out"
	echo "$n"
}

cmd_restore() {
	local start=0 dir="" m svc i n name sha url group file t0 t1 topic running=() all kept db tmp admin low reset
	local -a msvc=()
	while (($#)); do
		case $1 in
		--start) start=1 ;;
		-h | --help) usage; return 0 ;;
		-*) usage_die "restore: unknown option $1" ;;
		*)
			[[ -z $dir ]] || usage_die "restore takes one backup folder"
			dir=$1
			;;
		esac
		shift
	done
	need_cmd jq
	need_cmd sha256sum
	need_cmd curl
	need_cmd kcat
	pg_bin >/dev/null
	vxadmin_ok
	lock_dir
	t0=$(now_ms)
	if [[ -z $dir ]]; then
		mapfile -t all < <(backups)
		((${#all[@]})) || die "no complete backup in $VX_BACKUP_DIR (make backup makes one)"
		dir=${all[-1]}
	fi
	dir=$(realpath -m "$dir")
	m=$dir/manifest.json
	[[ -f $m ]] || die "$dir is not a backup: no manifest.json (an unfinished backup ends in .partial)"
	jq -e --argjson f "$MANIFEST_FORMAT" '.format == $f and (.services | length) > 0' "$m" >/dev/null ||
		die "$m is not a manifest this script understands (format $MANIFEST_FORMAT)"
	log "restoring $dir (taken $(jq -r .time "$m") at commit $(jq -r .git_commit "$m"))"

	# 1. Nothing may run against what is about to change.
	for i in "inventory-svc $INVENTORY_HTTP_ADDR" "order-svc $ORDERS_HTTP_ADDR" "gateway $GATEWAY_HTTP_ADDR"; do
		service_answers "${i#* }" && running+=("${i% *} (http://${i#* }/health answers)")
	done
	((${#running[@]} == 0)) || die "the services are running: ${running[*]}. Stop them first," \
		"e.g. for s in gateway order-svc inventory-svc; do deploy/stack.sh stop \$s; done"

	# 2. Everything is checked before anything changes: files, checksums, offsets, groups, Kafka.
	mapfile -t msvc < <(jq -r '.services[].service' "$m")
	for svc in "${msvc[@]}"; do
		[[ -n ${SVC_DB[$svc]:-} ]] || die "the manifest names an unknown service '$svc'"
		for i in "dump sha256" "offsets offsets_sha256"; do
			name=$(jq -r --arg s "$svc" ".services[] | select(.service == \$s) | .${i% *}" "$m")
			sha=$(jq -r --arg s "$svc" ".services[] | select(.service == \$s) | .${i#* }" "$m")
			[[ -f $dir/$name ]] || die "$svc: $dir/$name is missing"
			[[ $(sha256sum "$dir/$name" | cut -d' ' -f1) == "$sha" ]] ||
				die "$svc: $dir/$name does not match its sha256 in the manifest: the backup is damaged"
		done
		file=$dir/$(jq -r --arg s "$svc" '.services[] | select(.service == $s) | .offsets' "$m")
		check_offsets "$file" >/dev/null || die "$svc: $file is not an offsets file (TOPIC TAB PARTITION TAB OFFSET)"
		"$(pg_bin)/pg_restore" --list "$dir/$svc.dump" >/dev/null 2>&1 ||
			die "$svc: pg_restore cannot read $dir/$svc.dump"
		group=${SVC_GROUP[$svc]}
		[[ $group == "$(jq -r --arg s "$svc" '.services[] | select(.service == $s) | .group' "$m")" ]] ||
			log "$svc: note: the backup was of group $(jq -r --arg s "$svc" '.services[] | select(.service == $s) | .group' "$m"); restoring into group $group"
		n=$(group_members "$group")
		((n == 0)) || die "consumer group $group has $n member(s): an instance of $svc still runs somewhere; stop it first"
		# Rolling forward needs every message after the backup's offsets: refuse when Kafka has
		# deleted some already (topic retention), since restoring would then lose them for good.
		while IFS=$'\t' read -r topic i n; do
			[[ $n != - ]] || continue
			low=$(kcat -Q -b "$KAFKA_BOOTSTRAP_SERVERS" -t "$topic:$i:-2" 2>/dev/null | awk '/offset/ { print $NF; exit }')
			[[ $low =~ ^[0-9]+$ ]] || die "$svc: cannot read where $topic [$i] begins from Kafka ($KAFKA_BOOTSTRAP_SERVERS)"
			((n >= low)) || die "$svc: $topic [$i] now begins at offset $low, after the backup's $n: the messages" \
				"in between are gone (topic retention), so this backup cannot roll forward without loss; use a newer one"
		done <"$file"
	done

	# 3. Offsets first: if a later step fails, the databases as they are now replay from the backup's
	#    offsets, which changes nothing (idempotency keys); the other order could skip messages.
	for svc in "${msvc[@]}"; do
		group=${SVC_GROUP[$svc]}
		file=$dir/$(jq -r --arg s "$svc" '.services[] | select(.service == $s) | .offsets' "$m")
		t1=$(now_ms)
		reset=$(mktemp)
		grep -v $'\t-$' "$file" >"$reset" || true
		if [[ -s $reset ]]; then
			"$VXADMIN" offsets reset "$group" --from-file "$reset" | sed "s/^/backup:   $svc: /" || {
				rm -f "$reset"
				die "$svc: vxadmin offsets reset $group --from-file $file failed; the databases are untouched"
			}
		fi
		rm -f "$reset"
		# A partition without a committed offset at the backup is read from its beginning.
		while IFS=$'\t' read -r topic i n; do
			[[ $n == - ]] || continue
			"$VXADMIN" offsets reset "$group" --to earliest --topic "$topic" --partition "$i" |
				sed "s/^/backup:   $svc: /" ||
				die "$svc: vxadmin offsets reset $group --to earliest --topic $topic --partition $i failed"
		done <"$file"
		# A topic the group had not committed on at the backup is read from its beginning.
		for topic in ${SVC_TOPICS[$svc]}; do
			awk -F'\t' -v t="$topic" '$1 == t { found = 1 } END { exit !found }' "$file" && continue
			"$VXADMIN" offsets reset "$group" --to earliest --topic "$topic" | sed "s/^/backup:   $svc: /" ||
				die "$svc: vxadmin offsets reset $group --to earliest --topic $topic failed"
			log "$svc: group $group had no offsets on $topic at the backup: reset to its beginning"
		done
		log "$svc: group $group reset to the backup's $(wc -l <"$file") offsets in $(since "$t1")"
	done

	# 4. Each database: restored beside the old one, then swapped in, so a failure keeps the old one.
	for svc in "${msvc[@]}"; do
		url=${SVC_DB[$svc]}
		db_split "$url"
		db=$DB_NAME
		tmp=${db}_restoring
		admin=$(db_url postgres)
		t1=$(now_ms)
		psql_admin "$admin" -c "DROP DATABASE IF EXISTS \"$tmp\"" -c "CREATE DATABASE \"$tmp\" TEMPLATE template0" ||
			die "$svc: cannot create database $tmp on $(db_redact "$admin")"
		"$(pg_bin)/pg_restore" --no-password --exit-on-error --single-transaction \
			-d "$(db_url "$tmp")" "$dir/$svc.dump" ||
			die "$svc: pg_restore into $tmp failed; database $db is unchanged (the offsets were reset: replaying onto it is harmless)"
		kept=$(psql_admin "$admin" -c "SELECT count(*) FROM pg_stat_activity WHERE datname = '$db'")
		((kept == 0)) || die "$svc: database $db has $kept open connection(s); close them and run the restore again"
		psql_admin "$admin" -c "DROP DATABASE IF EXISTS \"$db\"" -c "ALTER DATABASE \"$tmp\" RENAME TO \"$db\"" ||
			die "$svc: could not swap $tmp in for $db"
		log "$svc: database $db restored from $svc.dump in $(since "$t1")"
	done

	log "restore of $(basename "$dir") complete in $(since "$t0")."
	log "The services may be started now: they replay what arrived after the backup and roll forward."
	if ((start)); then
		if [[ $INVENTORY_DB == "$DEV_INVENTORY_DB" && $ORDERS_DB == "$DEV_ORDERS_DB" ]]; then
			"$REPO/deploy/stack.sh" services-up 7>&- || die "deploy/stack.sh services-up failed"
		else
			log "--start: these are not the dev stack's databases; start the services yourself"
		fi
	else
		log "(the dev stack: deploy/stack.sh services-up)"
	fi
}

# ------------------------------------------------------------------------------------------------- main

main() {
	local cmd=${1:-}
	shift || true
	case $cmd in
	backup | restore | list | prune) ;;
	help | -h | --help)
		usage
		return 0
		;;
	"") usage_die "name a command: backup, restore, list or prune" ;;
	*) usage_die "unknown command '$cmd'" ;;
	esac
	case " $* " in
	*" --help "* | *" -h "*)
		usage
		return 0
		;;
	esac
	"cmd_$cmd" "$@"
}

main "$@"
