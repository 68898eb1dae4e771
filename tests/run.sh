#!/usr/bin/env bash
# The whole onionpost test suite, with the real parts: a private Tor network (the real `tor`),
# a real PostgreSQL, GnuPG. Installs what is missing (Debian/Ubuntu, as root) and starts
# PostgreSQL itself; fails loudly when it cannot.
#
#   tests/run.sh            everything (format, lints, every test, the fuzz smoke run)
#   tests/run.sh -p NAME    only the tests of one crate (extra arguments go to cargo test)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }
die() { printf '\ntests/run.sh: %s\n' "$*" >&2; exit 1; }

# --- system packages ---------------------------------------------------------------------
# tor + tor-gencert: the private Tor network; postgresql: the second store backend;
# gnupg: OpenPGP interoperability; libclang-dev: bindgen for sequoia's nettle backend;
# nettle-dev/pkg-config: sequoia's crypto; ca-certificates for cargo; isync: mbsync for the IMAP tests;
# unbound, postfix, python3-dkim, python3-dnspython: the clearnet side of the gateway test (DNS,
# the outside MTA, DKIM verification); tshark: the mail-flow test's capture (no DNS for .onion,
# no connection but to tor); debootstrap: base images for the compose test
# (deploy/base-images.sh); python3-venv: the Python packages of the Helm chart test and the
# portal's browser test; chromium + chromium-driver: the real browser the portal test drives;
# rspamd: the gateway test's spam scorer (GTUBE to Junk).
packages=(tor postgresql gnupg libclang-dev nettle-dev pkg-config isync unbound postfix python3-dkim python3-dnspython tshark debootstrap python3-venv chromium chromium-driver rspamd)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  [ "$(id -u)" = 0 ] || die "missing packages ${missing[*]} and not root: install them first"
  export DEBIAN_FRONTEND=noninteractive
  # Postfix without a system configuration: the gateway test runs its own instance.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
fi
command -v tor >/dev/null || die "tor is not installed"
command -v tor-gencert >/dev/null || die "tor-gencert is not installed"
command -v rspamd >/dev/null || die "rspamd is not installed"
# Debian may start a system rspamd on install; the gateway test runs its own instance.
if command -v systemctl >/dev/null && systemctl is-active --quiet rspamd 2>/dev/null; then systemctl stop rspamd || true; fi
# Debian starts a system tor on install; the tests run their own network and need no other.
if command -v systemctl >/dev/null && systemctl is-active --quiet tor 2>/dev/null; then systemctl stop tor || true; fi

# --- PostgreSQL ----------------------------------------------------------------------------
say "starting PostgreSQL"
if [ -z "${ONIONPOST_TEST_POSTGRES_URL:-}" ]; then
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  [ -n "$version" ] || die "PostgreSQL is not installed"
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -q "^$version main$"; then
    pg_createcluster "$version" main >/dev/null || die "cannot create a PostgreSQL cluster"
  fi
  pg_ctlcluster "$version" main start 2>/dev/null || pg_lsclusters -h | grep -q " online " || die "cannot start PostgreSQL $version"
  for _ in $(seq 1 30); do
    su postgres -c "psql -qAtc 'select 1'" >/dev/null 2>&1 && break
    sleep 0.5
  done
  su postgres -c "psql -qAtc 'select 1'" >/dev/null || die "PostgreSQL does not answer"
  su postgres -c "psql -qc \"DO \\\$\\\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'onionpost') THEN CREATE ROLE onionpost LOGIN PASSWORD 'onionpost'; END IF; END \\\$\\\$;\"" >/dev/null
  su postgres -c "psql -qAtc \"SELECT 1 FROM pg_database WHERE datname = 'onionpost_test'\"" | grep -q 1 \
    || su postgres -c "createdb -O onionpost onionpost_test" || die "cannot create the test database"
  port=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')
  export ONIONPOST_TEST_POSTGRES_URL="postgres://onionpost:onionpost@127.0.0.1:${port:-5432}/onionpost_test"
fi
echo "PostgreSQL: ${ONIONPOST_TEST_POSTGRES_URL%%@*}@…"

# --- Python packages ---------------------------------------------------------------------
# The Helm chart test (tests/tests/helm_chart.rs runs tests/helm with pytest): Helm's library
# and the Kubernetes schemas from PyPI; the portal test's browser driver (Selenium) and QR code
# reader (zxing-cpp, Pillow). In a virtualenv of their own.
venv=${ONIONPOST_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/onionpost-tests-venv}
python_packages=(helm-python-sdk kubernetes-validate pytest pyyaml selenium zxing-cpp pillow)
if ! "$venv/bin/python" -c "import helm_python, kubernetes_validate, pytest, yaml, selenium, zxingcpp, PIL" 2>/dev/null; then
  say "installing ${python_packages[*]} into $venv"
  python3 -m venv "$venv" || die "cannot create a virtualenv at $venv"
  "$venv/bin/pip" install -q "${python_packages[@]}" || die "pip install ${python_packages[*]} failed"
fi
export ONIONPOST_TEST_PYTHON="$venv/bin/python"

# --- build and test ------------------------------------------------------------------------
if [ "$#" -gt 0 ]; then
  say "cargo test $*"
  cargo test "$@"
  exit
fi
say "cargo fmt --check"
cargo fmt --all --check
say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# --- fuzz build, in the background ----------------------------------------------------------
# The fuzz smoke run's targets (nightly, address sanitizer; fuzz/smoke.sh, README.md "Fuzzing")
# compile every dependency again, so they get a target directory of their own next to the
# tests' (outside the clone when CARGO_TARGET_DIR is set). The build runs at the lowest priority
# while the tests run: most of the tests' time is spent waiting on the private Tor network, and
# on a fresh machine it would otherwise add twenty minutes after them.
fuzz_target_dir="${CARGO_TARGET_DIR:-$PWD/target}-fuzz"
fuzz_log=$(mktemp)
(
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked || exit 1
  rustup run nightly rustc --version >/dev/null 2>&1 \
    || rustup toolchain install nightly --profile minimal || exit 1
  CARGO_TARGET_DIR="$fuzz_target_dir" nice -n 19 cargo +nightly fuzz build
) >"$fuzz_log" 2>&1 &
fuzz_build=$!

say "cargo test"
log=$(mktemp)
trap 'rm -f "$log" "$fuzz_log"; kill "$fuzz_build" 2>/dev/null || true' EXIT
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line over every test binary (cargo's own last line is the doc-tests' count).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1) } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"

# --- fuzz smoke run ------------------------------------------------------------------------
say "fuzz smoke run"
if ! wait "$fuzz_build"; then
  tail -n 40 "$fuzz_log" >&2
  die "building the fuzz targets failed (cargo-fuzz, the nightly toolchain or cargo fuzz build)"
fi
CARGO_TARGET_DIR="$fuzz_target_dir" fuzz/smoke.sh || status=1
exit "$status"
