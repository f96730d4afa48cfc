#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz/fuzz.c, built into build/fuzz/fuzz_<target> (make fuzz,
# make fuzz-short). Each target reads its seeds (build/fuzz/seeds/<target>, made from
# tests/contract/fixtures by seeds.py), its kept corpus (tests/fuzz/corpus/<target>) and the inputs
# of the crashes it found and that were fixed (tests/fuzz/crashes/<target>, kept whatever coverage
# they add, so every run replays them).
#   fuzz.sh long SECONDS TARGET...   each target for SECONDS (or FUZZ_RUNS inputs, when set and
#                                    reached first), one process at a time, growing a work
#                                    corpus (build/fuzz/work/<target>); then the kept corpus becomes
#                                    what adds coverage over the seeds (libFuzzer -merge=1)
#   fuzz.sh short SECONDS TARGET...  each target replays its seeds and kept corpus, then tries new
#                                    inputs for SECONDS; nothing is kept
# A crash, a leak, undefined behaviour or a broken invariant leaves its input in
# build/fuzz/crashes/<target>/ and fails the run (after the other targets have run).
set -uo pipefail
cd "$(dirname "$0")/../.."
B=build/fuzz
mode=${1:?usage: fuzz.sh long|short SECONDS TARGET...} secs=${2:?seconds}
shift 2
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for t in "$@"; do
	bin=$B/fuzz_$t seeds=$B/seeds/$t keep=tests/fuzz/corpus/$t crashes=$B/crashes/$t fixed=()
	[[ -d tests/fuzz/crashes/$t ]] && fixed=("tests/fuzz/crashes/$t")
	mkdir -p "$keep" "$crashes" "$B/log"
	opts=(-max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$crashes/")
	if [[ $mode == long ]]; then
		work=$B/work/$t
		mkdir -p "$work"
		echo "fuzz: $t for ${secs}s (log $B/log/$t.log)"
		"$bin" "${opts[@]}" -max_total_time="$secs" ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} "$work" "$keep" "$seeds" "${fixed[@]}" >"$B/log/$t.log" 2>&1
		rc=$?
		grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|^#[0-9]+.*DONE' "$B/log/$t.log"
		if ((rc == 0)); then
			merged=$B/merge/$t
			rm -rf "$merged" && mkdir -p "$merged" && cp "$seeds"/* "$merged"/
			if "$bin" -merge=1 -max_len=8192 "$merged" "$keep" "$work" >"$B/log/$t.merge.log" 2>&1; then
				find "$keep" -type f -delete
				for f in "$merged"/*; do [[ -e $seeds/${f##*/} ]] || cp "$f" "$keep"/; done
				echo "fuzz: $t keeps $(find "$keep" -type f | wc -l) inputs in $keep beyond its $(find "$seeds" -type f | wc -l) seeds"
			else
				echo "fuzz: $t: merge failed, see $B/log/$t.merge.log"
				rc=1
			fi
		fi
	else
		tmp=$(mktemp -d)
		"$bin" "${opts[@]}" -max_total_time="$secs" "$tmp" "$keep" "$seeds" "${fixed[@]}" >"$B/log/$t.short.log" 2>&1
		rc=$?
		rm -rf "$tmp"
		echo "fuzz-short: $t: $(grep -Eo '^stat::number_of_executed_units: [0-9]+' "$B/log/$t.short.log" | grep -Eo '[0-9]+$') runs, exit $rc"
	fi
	if ((rc != 0)); then
		failed+=("$t")
		grep -E 'ERROR: |runtime error|fuzz: .* does not hold|Test unit written' "$B/log/$t"*.log | head -20
	fi
done
if ((${#failed[@]})); then
	echo "fuzz: FAILED: ${failed[*]} (inputs in $B/crashes/)"
	exit 1
fi
echo "fuzz: $# targets, no crash"
