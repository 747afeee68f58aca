#!/usr/bin/env bash
# Build the statically linked aarch64 cloud-hypervisor (and ch-remote, beside
# it) for the L1 initramfs and print the cloud-hypervisor path. Uses Debian's rustc-web (scripts/aarch64-env.sh) and its own
# target dir, so the +crt-static RUSTFLAGS never invalidate the unit-test build.
set -euo pipefail
# shellcheck source=scripts/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
export AARCH64_TARGET_DIR="${E2E_VMM_TARGET_DIR:-$REPO_ROOT/target/aarch64-static}"
# shellcheck source=scripts/aarch64-env.sh
. scripts/aarch64-env.sh
t0=$SECONDS
deps="$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release/deps"
crates() { echo "$(find "$deps" -name '*.rlib' 2>/dev/null | wc -l) crates built"; }
build() {
  RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build -q --release --target aarch64-unknown-linux-gnu -p vmm --bin cloud-hypervisor --bin ch-remote >&2
}
with_progress "vmm: cargo build (aarch64, static)" crates build ||
  die "cargo build of the aarch64 cloud-hypervisor failed"
bin="$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release/cloud-hypervisor"
for b in "$bin" "$(dirname "$bin")/ch-remote"; do
  file "$b" | grep -q 'ARM aarch64.*statically linked' ||
    die "$b is not a static aarch64 executable: $(file -b "$b")"
done
log "vmm: $bin ($(du -h "$bin" | cut -f1), $((SECONDS - t0)) s)"
echo "$bin"
