#!/usr/bin/env bash
# A Debian arm64 root file system for the L2 guest's virtio-blk disk (the
# `disk` case; boot-in-qemu.sh boots it by hand), built from Debian's
# packages with mmdebstrap:
#
#   scripts/e2e/rootfs/build-rootfs.sh      prints the raw image's path
#
# Out, in $E2E_CACHE/rootfs/ (KEY: sha256 of this script, overlay/, the
# package list, suite, mirror and SOURCE_DATE_EPOCH):
#   debian-bookworm-arm64-KEY.img       raw ext4, no partition table, 1 GiB
#                                       sparse, label e2e-root: root=/dev/vda
#   debian-bookworm-arm64-KEY.qcow2     the same as qcow2
#   debian-bookworm-arm64-KEY.packages  "package version arch" of every package
#   debian-bookworm-arm64-KEY.tools/    arm64 e2fsck and debugfs with their
#                                       libraries, a tree to merge at L1's /
# The .img is renamed into place last: its presence means all are there.
# A successful build removes the files of other keys.
#
# The image: bookworm's Essential set + systemd systemd-sysv udev dbus
# iproute2 e2fsprogs fio iperf3 (no Recommends, no docs/man/locales);
# default target multi-user; e2e-report.service (overlay/) prints
# "E2E-ROOTFS: is-system-running=<state>" and the failed units on hvc0 and
# ttyAMA0, runs the script on the block device e2e.rootfs.script= names,
# then powers off (e2e.rootfs=poweroff, the default) or stays up
# (e2e.rootfs=report). Empty /etc/machine-id (systemd makes one up at each
# boot), no SSH host keys, no network configuration, root has no password
# (locked); the root file system is mounted by the kernel (root=/dev/vda rw).
#
# Foreign architecture: mmdebstrap runs arm64 maintainer scripts through
# qemu-aarch64-static and binfmt_misc. Nothing is registered on the machine:
# when arm64 programs do not already run here, the build runs in a user
# namespace of its own (uids and gids mapped 1:1, we are root) with a private
# binfmt_misc instance (Linux >= 6.7) holding qemu-aarch64 with the F flag.
#
# Reproducible: snapshot.debian.org is not reachable here, so the mirror is
# deb.debian.org's bookworm (main changes only at point releases; no
# -updates, no -security); E2E_ROOTFS_MIRROR=http://snapshot.debian.org/archive/debian/<stamp>
# pins it exactly where that is reachable (it enters the key).
# SOURCE_DATE_EPOCH (default below) is the mtime ceiling of every file and
# the file system's times; the ext4 UUID and hash seed are fixed.
# E2E_ROOTFS_REBUILD=1 rebuilds a cached key. Tool output:
# target/logs/rootfs-<date>.log.
set -euo pipefail
# shellcheck source=scripts/e2e/lib.sh
. "$(dirname "$0")/../lib.sh"

SUITE=bookworm
MIRROR="${E2E_ROOTFS_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=(systemd systemd-sysv udev dbus iproute2 e2fsprogs fio iperf3)
SIZE=1G
FS_UUID=6e2e0b1c-7a11-4d15-8c0d-00000000e2e0
: "${SOURCE_DATE_EPOCH:=1764547200}" # 2025-12-01 00:00 UTC
export SOURCE_DATE_EPOCH
ROOTFS_DIR="$E2E_DIR/rootfs"
# Units enabled by the packages that cannot work in these VMs, masked (the
# reason beside each). None so far: bookworm's set boots to "running" under
# QEMU virt and under our VMM (boot-in-qemu.sh).
MASK=()

# --- inside the user namespace (re-executed by in_userns) -------------------------
if [ "${1:-}" = --in-userns ]; then
  tree="$2" logf="$3"
  mount --make-rprivate /
  if ! arch-test arm64 >/dev/null 2>&1; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    # qemu-user-static's own registration (magic, mask, flags OPF).
    cat /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register
  fi
  arch-test arm64 >/dev/null || die "arm64 programs do not run even with a private qemu-aarch64 binfmt entry"
  shift 3
  exec mmdebstrap "$@" >>"$logf" 2>&1
fi

# in_userns ARGS...: run this script with --in-userns ARGS in new user, mount
# and PID namespaces whose uid/gid maps are the identity (file owners in the
# tree are the real ones), after the maps are written.
in_userns() {
  local fifo pid rc=0
  fifo="$(mktemp -u "${TMPDIR:-/tmp}/rootfs-userns.XXXXXX")"
  mkfifo "$fifo"
  # shellcheck disable=SC2016 # $0 and $@ belong to the inner bash
  unshare --user --mount --pid --fork -- bash -c 'read -r _ <"$0"; exec "$@"' "$fifo" "$0" --in-userns "$@" &
  pid=$!
  while [ "$(readlink "/proc/$pid/ns/user")" = "$(readlink /proc/self/ns/user)" ]; do
    kill -0 "$pid" 2>/dev/null || { rm -f "$fifo"; die "unshare --user failed"; }
    sleep 0.05
  done
  echo '0 0 4294967295' >"/proc/$pid/uid_map"
  echo '0 0 4294967295' >"/proc/$pid/gid_map"
  echo go >"$fifo"
  rm -f "$fifo"
  wait "$pid" || rc=$?
  return "$rc"
}

# copy_tools TREE OUT: e2fsck and debugfs of TREE with the arm64 loader and
# the libraries they need (ELF NEEDED, transitively) under OUT, laid out as
# Debian has them, for L1's initramfs (busybox has no e2fsck).
tree_lib() {
  local tree="$1" name="$2" d
  for d in usr/lib/aarch64-linux-gnu lib/aarch64-linux-gnu; do
    if [ -e "$tree/$d/$name" ]; then echo "$tree/$d/$name"; return 0; fi
  done
  return 1
}
copy_tools() {
  local tree="$1" out="$2" bin lib file
  local -a queue=()
  local -A have=([ld-linux-aarch64.so.1]=1)
  mkdir -p "$out/usr/sbin" "$out/usr/lib/aarch64-linux-gnu" "$out/lib"
  for bin in e2fsck debugfs; do
    file="$tree/usr/sbin/$bin"
    [ -f "$file" ] || file="$tree/sbin/$bin"
    [ -f "$file" ] || die "rootfs: no $bin in the tree"
    cp -L "$file" "$out/usr/sbin/$bin"
    mapfile -t -O "${#queue[@]}" queue < <(readelf -d "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p')
  done
  file="$(tree_lib "$tree" ld-linux-aarch64.so.1)" || die "rootfs: no ld-linux-aarch64.so.1 in the tree"
  cp -L "$file" "$out/lib/ld-linux-aarch64.so.1"
  while [ "${#queue[@]}" -gt 0 ]; do
    lib="${queue[0]}"
    queue=("${queue[@]:1}")
    [ -z "${have[$lib]:-}" ] || continue
    have[$lib]=1
    file="$(tree_lib "$tree" "$lib")" || die "rootfs: $lib (needed by e2fsck/debugfs) is not in the tree"
    cp -L "$file" "$out/usr/lib/aarch64-linux-gnu/$lib"
    mapfile -t -O "${#queue[@]}" queue < <(readelf -d "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p')
  done
}

# --- key, cache -------------------------------------------------------------------
key="$( {
  cat "$0"
  (cd "$ROOTFS_DIR/overlay" && find . -type f | LC_ALL=C sort | xargs sha256sum)
  echo "$SUITE $MIRROR ${PACKAGES[*]} $SIZE $SOURCE_DATE_EPOCH"
} | sha256sum | cut -c1-16)"
mkdir -p "$E2E_CACHE/rootfs"
base="$E2E_CACHE/rootfs/debian-$SUITE-arm64-$key"
IMG="$base.img"
[ "${E2E_ROOTFS_REBUILD:-0}" != 1 ] || rm -f "$IMG"
reuse_or_lock "$IMG" "rootfs"

mkdir -p "$REPO_ROOT/target/logs"
LOGF="$REPO_ROOT/target/logs/rootfs-$(date +%Y%m%d-%H%M%S).log"
log "rootfs: building $IMG (tool output: $LOGF)"
T0=$SECONDS

step_deps() {
  ensure_debs mmdebstrap qemu-user-static arch-test e2fsprogs qemu-utils binutils debian-archive-keyring >>"$LOGF" 2>&1
}
timed "rootfs: Debian packages (mmdebstrap, qemu-user-static, qemu-utils)" step_deps

tree="$base.tree"
rm -rf "$tree" "$base.tools.tmp" "$IMG.tmp" "$base.qcow2.tmp"
mkdir -p "$tree"

run_mmdebstrap() {
  local -a args=(--mode=root --variant=essential --architectures=arm64
    --include="$(IFS=,; echo "${PACKAGES[*]}")"
    --aptopt='APT::Install-Recommends "false"'
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-include=/usr/share/locale/locale.alias'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --customize-hook="sh $(printf '%q ' "$ROOTFS_DIR/customize.sh") \"\$1\" $(printf '%q ' "$ROOTFS_DIR/overlay" "${MASK[@]}")"
    "$SUITE" "$tree" "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $SUITE main")
  if arch-test arm64 >/dev/null 2>&1; then
    log "rootfs: arm64 programs run here already (binfmt_misc): mmdebstrap directly"
    mmdebstrap "${args[@]}" >>"$LOGF" 2>&1
  else
    local kv
    kv="$(uname -r | awk -F. '{print $1 * 1000 + $2}')"
    [ "$kv" -ge 6007 ] || die "arm64 programs do not run here and Linux $(uname -r) has no private binfmt_misc (6.7+): install qemu-user-static with binfmt-support, or build on a newer kernel"
    log "rootfs: mmdebstrap in a user namespace with a private binfmt_misc (qemu-aarch64-static)"
    in_userns "$tree" "$LOGF" "${args[@]}"
  fi
}
timed "rootfs: mmdebstrap $SUITE arm64 (${#PACKAGES[@]} packages + Essential, maintainer scripts under qemu-aarch64)" run_mmdebstrap ||
  { tail -30 "$LOGF" >&2; die "mmdebstrap failed (log: $LOGF)"; }
[ -x "$tree/usr/lib/systemd/systemd" ] || [ -x "$tree/lib/systemd/systemd" ] || die "rootfs: no systemd in the tree"
cp "$tree/usr/share/e2e-rootfs/packages" "$base.packages"

tidy() {
  # What differs between two builds and is no use in the image.
  rm -rf "$tree"/var/cache/apt/* "$tree"/var/lib/apt/lists/* "$tree"/var/log/* \
    "$tree"/var/cache/ldconfig/aux-cache "$tree"/var/lib/dpkg/*-old
  # Byte code compiled at install time (fio pulls in python3): not needed to
  # boot, and its bytes differ from build to build.
  find "$tree" -name '__pycache__' -type d -prune -exec rm -rf {} +
  # Every mtime at most SOURCE_DATE_EPOCH (files the maintainer scripts wrote
  # carry the build's time).
  find "$tree" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch -h -d "@$SOURCE_DATE_EPOCH"
}
timed "rootfs: tidy the tree" tidy

tools() { copy_tools "$tree" "$base.tools.tmp"; }
timed "rootfs: e2fsck + debugfs (arm64) for L1" tools

# used_inodes IMAGE: the numbers of the inodes mkfs.ext4 -d filled (the root
# directory and 11 on), from dumpe2fs's free ranges per group.
used_inodes() {
  dumpe2fs "$1" 2>/dev/null | awk '
    /^Inodes per group:/ { ipg = $4 }
    /^Group [0-9]+:/ { g = $2 + 0 }
    /^  Free inodes:/ {
      split("", free)
      n = split(substr($0, index($0, ":") + 2), r, ", ")
      for (i = 1; i <= n; i++) {
        if (r[i] == "") continue
        split(r[i], ab, "-")
        for (j = ab[1] + 0; j <= (ab[2] == "" ? ab[1] : ab[2]) + 0; j++) free[j] = 1
      }
      for (j = g * ipg + 1; j <= (g + 1) * ipg; j++) if (!(j in free) && (j == 2 || j >= 11)) print j
    }'
}
make_image() {
  truncate -s "$SIZE" "$IMG.tmp"
  E2FSPROGS_FAKE_TIME="$SOURCE_DATE_EPOCH" mkfs.ext4 -q -F -L e2e-root -U "$FS_UUID" \
    -E "hash_seed=$FS_UUID,root_owner=0:0" -d "$tree" "$IMG.tmp" >>"$LOGF" 2>&1
  # mkfs.ext4 -d copies each file's ctime, which is when this build wrote it
  # (no call can set a ctime): every ctime becomes SOURCE_DATE_EPOCH.
  used_inodes "$IMG.tmp" | awk -v t="$SOURCE_DATE_EPOCH" '{ printf "sif <%d> ctime @%d\n", $1, t }' >"$IMG.ctime"
  [ -s "$IMG.ctime" ] || die "rootfs: dumpe2fs listed no used inode"
  E2FSPROGS_FAKE_TIME="$SOURCE_DATE_EPOCH" debugfs -w -f "$IMG.ctime" "$IMG.tmp" >>"$LOGF" 2>&1
  rm -f "$IMG.ctime"
  e2fsck -fn "$IMG.tmp" >>"$LOGF" 2>&1 || die "rootfs: e2fsck -fn of the new image is not clean (log: $LOGF)"
  qemu-img convert -f raw -O qcow2 "$IMG.tmp" "$base.qcow2.tmp" >>"$LOGF" 2>&1
}
timed "rootfs: mkfs.ext4 -d ($SIZE sparse) + qcow2" make_image

rm -rf "$base.tools"
mv "$base.tools.tmp" "$base.tools"
mv "$base.qcow2.tmp" "$base.qcow2"
mv "$IMG.tmp" "$IMG"
[ "${E2E_KEEP_BUILD:-0}" = 1 ] || rm -rf "$tree"
log "rootfs: built $IMG in $((SECONDS - T0)) s: $(wc -l <"$base.packages") packages, $(du -h "$IMG" | cut -f1) used of $SIZE, qcow2 $(du -h "$base.qcow2" | cut -f1), sha256 $(sha256sum "$IMG" | cut -c1-16)"
# Images of other keys (an older script or package list) go, unless a build
# or a run holds their lock.
for lock in "$E2E_CACHE"/rootfs/debian-*-arm64-*.img.lock; do
  [ "$lock" != "$IMG.lock" ] || continue
  exec {lockfd}>>"$lock"
  if flock -n "$lockfd"; then
    old="${lock%.img.lock}"
    rm -rf "$old.img" "$old.qcow2" "$old.packages" "$old.tools" "$old.tree" "$lock"
    log "rootfs: removed the older $(basename "$old").*"
  fi
  exec {lockfd}>&-
done
echo "$IMG"
