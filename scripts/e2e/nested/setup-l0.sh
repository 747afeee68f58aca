#!/usr/bin/env bash
# The nested lane's L0: Debian sid's QEMU (11.1: an SMMUv3 with stage 1, stage 2
# and nesting) in a debootstrap chroot, so the machine's own apt and QEMU stay as
# they are. Cached and idempotent: a complete chroot carries a marker holding
# its key (the package list); a different list or a half-built chroot is rebuilt.
#
#   scripts/e2e/nested/setup-l0.sh     prints the chroot directory
#
# ~2 min and ~63 MB of .debs on first run (network-bound); ~410 MB on disk.
set -euo pipefail
# shellcheck source=scripts/e2e/lib.sh
. "$(dirname "$0")/../lib.sh"

# What the chroot holds: QEMU and the UEFI firmware (only an ACPI boot of L1 uses it).
L0_PACKAGES="qemu-system-arm,qemu-efi-aarch64"
L0_SUITE=sid
L0_MIRROR=http://deb.debian.org/debian
CHROOT="$E2E_CACHE/chroot-sid-qemu"
MARKER="$CHROOT/.e2e-complete"
key="debootstrap --variant=minbase --include=$L0_PACKAGES $L0_SUITE $L0_MIRROR"

mkdir -p "$E2E_CACHE"
exec 9>"$CHROOT.lock"
flock -n 9 || { log "L0 chroot: another setup holds $CHROOT.lock; waiting"; flock 9; }

if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$key" ] && [ -x "$CHROOT/usr/bin/qemu-system-aarch64" ]; then
  log "L0 chroot: cached $CHROOT"
else
  ensure_debs debootstrap
  need_root_or_die "debootstrap of $CHROOT"
  t0=$SECONDS
  tmp="$CHROOT.tmp"
  rm -rf "$tmp"
  log "L0 chroot: $key -> $CHROOT"
  debootstrap --variant=minbase --include="$L0_PACKAGES" "$L0_SUITE" "$tmp" "$L0_MIRROR" >"$E2E_CACHE/chroot-sid-qemu.log" 2>&1 ||
    { tail -20 "$E2E_CACHE/chroot-sid-qemu.log" >&2; die "debootstrap failed (log: $E2E_CACHE/chroot-sid-qemu.log)"; }
  # The downloaded .debs are not needed once installed (~63 MB).
  rm -rf "$tmp"/var/cache/apt/archives/*.deb
  echo "$key" >"$tmp/.e2e-complete"
  rm -rf "$CHROOT"
  mv "$tmp" "$CHROOT"
  log "L0 chroot: built in $((SECONDS - t0)) s ($(du -sh "$CHROOT" | cut -f1))"
fi
chroot "$CHROOT" qemu-system-aarch64 --version | head -1 >&2
echo "$CHROOT"
