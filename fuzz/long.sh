#!/usr/bin/env bash
# Long fuzz runs: each target for RUNS executions, one after another, from its seeds plus
# whatever earlier long runs found (a corpus kept across runs). Prints a line per target
# (executions, seconds, exec/s, peak RSS, result) for the figures in README.md, "Fuzzing".
#
#   fuzz/long.sh RUNS [NAME...]
#
# FUZZ_MAX_SECONDS caps each target's time (default: none), for slow targets that would
# take days to reach RUNS. FUZZ_WORK (default: fuzz/target/long, or $CARGO_TARGET_DIR/long)
# holds the corpora, crash inputs and logs. Run it under `nice -n 19` on a shared machine.
# Stops at nothing: a failing target is reported and the next one runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source fuzz/common.sh

[[ ${1:-} =~ ^[0-9]+$ ]] || die "usage: fuzz/long.sh RUNS [NAME...]"
runs=$1
shift
targets=("$@")
((${#targets[@]})) || targets=("${all_targets[@]}")
work=${FUZZ_WORK:-${CARGO_TARGET_DIR:-fuzz/target}/long}
limit=()
[ -n "${FUZZ_MAX_SECONDS:-}" ] && limit=(-max_total_time="$FUZZ_MAX_SECONDS")

build_all
say "long run: ${#targets[@]} targets, $runs executions each${FUZZ_MAX_SECONDS:+, at most ${FUZZ_MAX_SECONDS}s}; logs in $work/logs"
status=0
for name in "${targets[@]}"; do
  run_target "$name" "$work" -runs="$runs" "${limit[@]}" || status=1
done
exit "$status"
