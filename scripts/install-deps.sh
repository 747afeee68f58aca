#!/usr/bin/env bash
# Install what building and testing this project needs, from Debian's
# packages and crates.io only. Idempotent: installs only what is missing.
#
#   scripts/install-deps.sh            everything (host tests, aarch64 lane)
#   scripts/install-deps.sh --acpi     only iasl (for scripts/demo.sh)
#   scripts/install-deps.sh --fuzz     also cargo-fuzz and cargo-machete (for .ci/run)
#
# One line per step; apt's and cargo's output go to the log (scripts/steps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/steps.sh
. scripts/steps.sh

want_cross=1
want_fuzz=0
case "${1:-}" in
  --acpi) want_cross=0 ;;
  --fuzz) want_fuzz=1 ;;
  "") ;;
  *) echo "usage: $0 [--acpi|--fuzz]" >&2; exit 2 ;;
esac

installed=0
missing=()
command -v iasl >/dev/null || missing+=(acpica-tools)
# The qcow2 tests check our images with QEMU's own qemu-img and qemu-io.
[ "$want_cross" = 0 ] || command -v qemu-img >/dev/null || missing+=(qemu-utils)
# The control API's tests talk to the VMM with a client nobody here wrote.
[ "$want_cross" = 0 ] || command -v curl >/dev/null || missing+=(curl)
if [ "$want_cross" = 1 ]; then
  # Debian's rustc-web ships an arm64 std that matches its compiler exactly;
  # rustup's toolchains here have only the x86_64 std.
  [ -x /usr/bin/rustc ] && /usr/bin/rustc --version | grep -q . || missing+=(rustc-web cargo-web)
  dpkg -s libstd-rust-web-dev:arm64 >/dev/null 2>&1 || missing+=(libstd-rust-web-dev:arm64 rustc-web cargo-web)
  dpkg -s rust-web-clippy >/dev/null 2>&1 || missing+=(rust-web-clippy)
  command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
  command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "run as root: dpkg --add-architecture arm64 && apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  steps_init install-deps
  installed=1
  export DEBIAN_FRONTEND=noninteractive
  step "deps: dpkg --add-architecture arm64" dpkg --add-architecture arm64
  step "deps: apt-get update" apt-get update -q
  # One transaction, so rustc-web and its arm64 std get the same version.
  STEP_PROGRESS=progress_apt step "deps: apt-get install (${missing[*]})" \
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 ca-certificates "${missing[@]}"
fi

if [ "$want_fuzz" = 1 ] && ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  steps_init install-deps
  installed=1
  STEP_PROGRESS=progress_cargo step "deps: cargo install cargo-fuzz" cargo +nightly install cargo-fuzz --locked
fi
# CI's unused-dependency check: reads the manifests and sources only (no
# build, no nightly, ~1 s); pinned so a new release cannot fail CI by itself.
if [ "$want_fuzz" = 1 ] && ! cargo machete --version >/dev/null 2>&1; then
  steps_init install-deps
  installed=1
  STEP_PROGRESS=progress_cargo step "deps: cargo install cargo-machete" \
    cargo install cargo-machete --version 0.9.2 --locked
fi
[ "$installed" = 1 ] || echo "[$(date +%H:%M:%S)] deps: all installed"
