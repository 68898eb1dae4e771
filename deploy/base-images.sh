#!/usr/bin/env bash
# Base images for machines without a registry (the test machine; an air-gapped build host).
# With a registry you do not need this: the Dockerfiles pull debian:bookworm-slim and
# rust:1.95-slim-bookworm themselves.
#
# Builds, only when missing:
#   debian:bookworm-slim       debootstrap --variant=minbase bookworm, imported
#   rust:1.95-slim-bookworm    that root plus gcc/libc6-dev and this machine's rustup
#                              toolchain 1.95, laid out like the official image
#                              (RUSTUP_HOME=/usr/local/rustup, cargo in /usr/local/cargo/bin)
#
# Environment: DEBIAN_MIRROR (http://deb.debian.org/debian), RUST_TOOLCHAIN_DIR (the host's
# ~/.rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu), DEBIAN_IMAGE, RUST_IMAGE (names).
# Needs root (debootstrap), debootstrap and docker. Idempotent: an existing image is kept.
set -euo pipefail

DEBIAN_IMAGE=${DEBIAN_IMAGE:-debian:bookworm-slim}
RUST_IMAGE=${RUST_IMAGE:-rust:1.95-slim-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
RUST_VERSION=${RUST_VERSION:-1.95.0}
RUST_TOOLCHAIN_DIR=${RUST_TOOLCHAIN_DIR:-${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu}

say() { printf 'base-images: %s\n' "$*" >&2; }
die() { printf 'base-images: %s\n' "$*" >&2; exit 1; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

command -v docker >/dev/null || die "docker is not installed"

work=$(mktemp -d /var/tmp/onionpost-base.XXXXXX)
trap 'rm -rf "$work"' EXIT

# One debootstrapped root serves both images; made only when one of them is missing.
root=""
make_root() {
  [ -n "$root" ] && return
  [ "$(id -u)" = 0 ] || die "debootstrap needs root"
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  root=$work/root
  say "debootstrap bookworm (minbase) from $DEBIAN_MIRROR"
  debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  # What the official slim image carries: bookworm, its updates and security.
  cat >"$root/etc/apt/sources.list" <<SOURCES
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
  # As in the official image: no documentation, no recommends, no apt caches.
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
APT
  echo 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/docker-no-recommends"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
}

import_root() { # image, root dir, extra --change arguments…
  local image=$1 dir=$2
  shift 2
  tar --numeric-owner -C "$dir" -c . | docker import --change 'CMD ["bash"]' "$@" - "$image" >/dev/null
}

if have_image "$DEBIAN_IMAGE"; then
  say "$DEBIAN_IMAGE present"
else
  make_root
  import_root "$DEBIAN_IMAGE" "$root" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  say "$DEBIAN_IMAGE imported"
fi

if have_image "$RUST_IMAGE"; then
  say "$RUST_IMAGE present"
else
  [ -x "$RUST_TOOLCHAIN_DIR/bin/cargo" ] || die "no rust toolchain at $RUST_TOOLCHAIN_DIR (set RUST_TOOLCHAIN_DIR)"
  make_root
  say "rust image: gcc and libc6-dev into the root"
  # A chroot install (no container network needed); /proc is not needed by these packages.
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  chroot "$root" apt-get update -qq >"$work/apt.log" 2>&1 \
    && DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends \
      ca-certificates gcc libc6-dev >>"$work/apt.log" 2>&1 \
    || { tail -n 20 "$work/apt.log" >&2; die "apt-get in the rust root failed"; }
  rm -rf "$root"/var/lib/apt/lists/*
  : >"$root/etc/resolv.conf"
  toolchain=$root/usr/local/rustup/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu
  mkdir -p "$toolchain" "$root/usr/local/cargo/bin"
  # The toolchain without its documentation (800 MB); cargo and rustc called directly, so
  # no rustup proxy and no download at run time.
  tar -C "$(readlink -f "$RUST_TOOLCHAIN_DIR")" --exclude=./share/doc -c . | tar -C "$toolchain" -x
  for tool in cargo rustc rustdoc; do
    ln -s "../../rustup/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu/bin/$tool" "$root/usr/local/cargo/bin/$tool"
  done
  import_root "$RUST_IMAGE" "$root" \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change "ENV RUST_VERSION=$RUST_VERSION" \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  say "$RUST_IMAGE imported"
fi
