# Shared by smoke.sh and long.sh (sourced, not run): where the binaries are, the targets, and
# running one target with a summary line. The caller has cd'ed to the repository root.

say() { printf '\n== %s\n' "$*"; }
die() { printf '\nfuzz: %s\n' "$*" >&2; exit 1; }

command -v cargo-fuzz >/dev/null || die "cargo-fuzz is missing: cargo install cargo-fuzz --locked"
rustup run nightly rustc --version >/dev/null 2>&1 || die "no nightly toolchain: rustup toolchain install nightly"

# cargo-fuzz's own layout under the target directory (fuzz/target unless CARGO_TARGET_DIR),
# made absolute so that cargo and this script read a relative one alike.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then CARGO_TARGET_DIR=$(realpath -m "$CARGO_TARGET_DIR"); export CARGO_TARGET_DIR; fi
host=$(rustup run nightly rustc -vV | sed -n 's/^host: //p')
bin_dir="${CARGO_TARGET_DIR:-fuzz/target}/$host/release"
# Every target cargo-fuzz knows, from fuzz/Cargo.toml.
mapfile -t all_targets < <(cargo +nightly fuzz list)

build_all() {
  say "cargo fuzz build (${#all_targets[@]} targets, address sanitizer)"
  cargo +nightly fuzz build
}

# run_target NAME WORK_DIR LIBFUZZER_OPTIONS...: fuzzes NAME from its seeds (fuzz/corpus/NAME,
# never written to) into WORK_DIR/corpus/NAME, crash inputs into WORK_DIR/artifacts/NAME/, the
# log into WORK_DIR/logs/NAME.log. Prints one line: target, executions, seconds, exec/s, peak
# RSS, result. Returns libFuzzer's status: non-zero on a crash, a timeout, an OOM or a leak.
run_target() {
  local name=$1 work=$2
  shift 2
  mkdir -p "$work/corpus/$name" "$work/artifacts/$name" "$work/logs"
  local log="$work/logs/$name.log" status=0 started=$SECONDS
  "$bin_dir/$name" "$work/corpus/$name" "fuzz/corpus/$name" \
    -artifact_prefix="$work/artifacts/$name/" -print_final_stats=1 -timeout=10 "$@" >"$log" 2>&1 || status=$?
  local runs rate rss result=ok
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
  if ((status != 0)); then
    result="FAILED (status $status): $(grep -m 1 -E '^==[0-9]+==|panicked|ERROR: libFuzzer' "$log" || echo "see $log")"
  fi
  printf '%-22s %12s runs %6ss %8s exec/s %6s MB  %s\n' "$name" "${runs:-?}" "$((SECONDS - started))" "${rate:-?}" "${rss:-?}" "$result"
  return "$status"
}
