#!/usr/bin/env bash
# Prepare a machine for the end-to-end harness, from Debian's packages only.
# Idempotent: every step checks its result first and is skipped when done.
#
#   scripts/e2e/setup.sh           deps, busybox, linux sources for $E2E_KERNELS
#
# Never changes the machine's apt sources: sid's linux-source comes through a
# private apt state under $E2E_CACHE/apt-sid (see docs/e2e.md).
set -euo pipefail
# shellcheck source=scripts/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

T0=$SECONDS
mkdir -p "$E2E_CACHE"/{debs,src}

# --- 1. Debian packages -------------------------------------------------------
install_packages() {
  # The aarch64 Rust lane (rustc-web + arm64 std, cross gcc, qemu-user).
  "$REPO_ROOT/scripts/install-deps.sh"
  ensure_debs qemu-system-arm bc bison flex libssl-dev libelf-dev make cpio xz-utils gcc-aarch64-linux-gnu
  qemu-system-aarch64 --version | head -1 >&2
}

# --- 2. busybox (static, arm64), without installing it -------------------------
get_busybox() {
  if [ -x "$BUSYBOX" ] && file -L "$BUSYBOX" 2>/dev/null | grep -q 'ARM aarch64.*statically'; then
    return 0
  fi
  # A foreign arm64 architecture is already needed by the Rust lane (install-deps.sh).
  dpkg --print-foreign-architectures | grep -qx arm64 || die "dpkg arch arm64 missing (scripts/install-deps.sh adds it)"
  local deb
  deb="$(apt_download busybox-static:arm64)"
  rm -rf "$E2E_CACHE/busybox-arm64.tmp"
  dpkg-deb -x "$deb" "$E2E_CACHE/busybox-arm64.tmp"
  rm -rf "$E2E_CACHE/busybox-arm64"
  mv "$E2E_CACHE/busybox-arm64.tmp" "$E2E_CACHE/busybox-arm64"
  [ -x "$BUSYBOX" ] || die "busybox-static:arm64 has no bin/busybox"
  log "busybox: $(basename "$deb")"
}

# --- 3. linux-source from bookworm (machine's apt); sid's: get_sid_source (lib.sh)
get_bookworm_source() {
  local version="$1" deb
  deb="$(apt_download "linux-source-$version")"
  extract_source "$deb" "$version"
}

timed "setup: Debian packages" install_packages
timed "setup: busybox-static:arm64" get_busybox
for v in $E2E_KERNELS; do
  cand="$(apt-cache policy "linux-source-$v" 2>/dev/null | awk '/Candidate:/ {print $2}')"
  if [ -n "$cand" ] && [ "$cand" != "(none)" ]; then
    timed "setup: linux-source-$v (bookworm)" get_bookworm_source "$v"
  else
    timed "setup: linux-source-$v (sid, private apt state)" get_sid_source "$v"
  fi
done
log "setup: total $((SECONDS - T0)) s"
