#!/usr/bin/env bash
# The fuzz smoke run, for CI: builds every target once, then runs each for a few seconds from
# its seeds (fuzz/corpus/), as a check that the targets build and the seeds and the first few
# thousand mutations crash nothing. Not a search for bugs: fuzz/long.sh is (README.md,
# "Fuzzing"). Fails, naming the target and the crash, when any target fails.
#
#   fuzz/smoke.sh            every target, FUZZ_SECONDS (default 7) each
#   fuzz/smoke.sh NAME...    only these
#
# Build directory: CARGO_TARGET_DIR if set, else fuzz/target. Needs cargo-fuzz and nightly.
set -euo pipefail
cd "$(dirname "$0")/.."
source fuzz/common.sh

seconds=${FUZZ_SECONDS:-7}
targets=("$@")
((${#targets[@]})) || targets=("${all_targets[@]}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build_all
say "smoke run: ${#targets[@]} targets, ${seconds}s each"
failed=()
for name in "${targets[@]}"; do
  # A fixed seed: the same mutations on every run, so CI does not fail at random on a bug a
  # long run has yet to find (FUZZ_SEED picks another sequence).
  run_target "$name" "$work" -max_total_time="$seconds" -seed="${FUZZ_SEED:-1}" || {
    failed+=("$name")
    mkdir -p fuzz/artifacts/"$name"
    cp "$work/artifacts/$name/"* fuzz/artifacts/"$name"/ 2>/dev/null || true
    tail -n 40 "$work/logs/$name.log" >&2
  }
done
if ((${#failed[@]})); then
  die "fuzz targets failed: ${failed[*]} (inputs in fuzz/artifacts/; reproduce with: cargo +nightly fuzz run NAME fuzz/artifacts/NAME/FILE)"
fi
say "fuzz smoke run passed"
