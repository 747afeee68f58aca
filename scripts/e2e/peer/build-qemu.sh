#!/usr/bin/env bash
# The peer case's L1 payload: Debian sid's qemu-system-aarch64 for arm64 and
# every shared library it links, as a directory tree to merge into the L1
# initramfs at / (so the binary's own interpreter and Debian's multiarch
# search path find everything, with no ld.so.cache):
#
#   usr/bin/qemu-system-aarch64
#   lib/ld-linux-aarch64.so.1
#   usr/lib/aarch64-linux-gnu/<soname>...   only what the binary needs (ELF NEEDED, transitively)
#   usr/share/doc/e2e-peer-qemu/packages    the resolved package list (the cache key)
#   usr/share/doc/e2e-peer-qemu/summary     package version, file count, size
#
#   scripts/e2e/peer/build-qemu.sh          prints the payload directory
#
# Dependencies are resolved by apt itself, against sid's arm64 Packages of the
# private apt state (lib.sh: sid_apt) with an empty dpkg status and arm64 as the
# native architecture, so nothing of this machine's dpkg state counts as
# installed and its /etc/apt is never written. The .debs are only downloaded
# and unpacked (dpkg-deb -x), never installed.
# Where the packages come from: sid (QEMU 11.1, the nested lane's L0 version);
# when apt cannot resolve the package there (sid in the middle of a library
# transition), or with E2E_PEER_SOURCE=machine, this machine's own release and
# its arm64 lists (bookworm: QEMU 7.2; scripts/install-deps.sh adds arm64).
# Cached in $E2E_CACHE/peer/qemu-<key>, key = sha256 of the resolved list
# (file names, sizes and checksums of every .deb) and of this script; the
# .debs are deleted once it is built, older payloads when a newer one is.
set -euo pipefail
# shellcheck source=scripts/e2e/lib.sh
. "$(dirname "$0")/../lib.sh"

PEER_PACKAGE=qemu-system-arm
PEER_BINARY=usr/bin/qemu-system-aarch64
PEER_DIR="$E2E_CACHE/peer"
APT_ARM64="$PEER_DIR/apt-arm64"
PEER_SOURCE="${E2E_PEER_SOURCE:-sid}"

# arm64_apt CMD ARGS...: apt over the $PEER_SOURCE lists with this script's
# own (empty) dpkg status, arm64 as the only architecture and a private
# package cache.
arm64_apt() {
  local wrap=()
  [ "$PEER_SOURCE" = machine ] || wrap=(sid_apt)
  "${wrap[@]}" "$@" \
    -o APT::Sandbox::User=root \
    -o Dir::State::status="$APT_ARM64/status" \
    -o Dir::Cache="$APT_ARM64/cache" \
    -o APT::Architecture=arm64 \
    -o APT::Architectures::=arm64
}

# resolve: "FILE SIZE CHECKSUM" of every .deb the package needs (no
# Recommends), sorted. apt leaves out what its archives directory already
# holds, so this asks with one that stays empty.
resolve() {
  arm64_apt apt-get install -y --no-install-recommends --print-uris \
    -o Dir::Cache::Archives="$APT_ARM64/empty" "$PEER_PACKAGE" |
    awk -v q="'" 'index($0, q) == 1 { print $2, $3, $4 }' | LC_ALL=C sort
}

# find_lib STAGE SONAME: the file SONAME resolves to in the unpacked tree.
find_lib() {
  local stage="$1" name="$2" d
  for d in usr/lib/aarch64-linux-gnu lib/aarch64-linux-gnu usr/lib lib; do
    if [ -e "$stage/$d/$name" ]; then echo "$stage/$d/$name"; return 0; fi
  done
  return 1
}

needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'; }

# copy_closure STAGE OUT: the binary, its interpreter and the transitive
# NEEDED closure of its libraries from STAGE into OUT.
copy_closure() {
  local stage="$1" out="$2" interp lib file
  local -a todo
  local -A seen
  mkdir -p "$out/usr/bin" "$out/lib" "$out/usr/lib/aarch64-linux-gnu"
  cp "$stage/$PEER_BINARY" "$out/$PEER_BINARY"
  interp="$(readelf -l "$stage/$PEER_BINARY" | sed -n 's/.*Requesting program interpreter: \(.*\)\]$/\1/p')"
  [ "$interp" = /lib/ld-linux-aarch64.so.1 ] || die "$PEER_BINARY asks for interpreter '$interp'"
  file="$(find_lib "$stage" ld-linux-aarch64.so.1)" || die "no ld-linux-aarch64.so.1 among the unpacked packages"
  cp -L "$file" "$out$interp"
  seen[ld-linux-aarch64.so.1]=1
  mapfile -t todo < <(needed "$stage/$PEER_BINARY")
  while [ "${#todo[@]}" -gt 0 ]; do
    lib="${todo[0]}"
    todo=("${todo[@]:1}")
    [ -z "${seen[$lib]:-}" ] || continue
    seen[$lib]=1
    file="$(find_lib "$stage" "$lib")" || die "$lib (needed by the QEMU closure) is in none of the resolved packages"
    cp -L "$file" "$out/usr/lib/aarch64-linux-gnu/$lib"
    mapfile -t -O "${#todo[@]}" todo < <(needed "$file")
  done
}

ensure_debs debian-archive-keyring binutils
mkdir -p "$APT_ARM64/cache/archives/partial" "$APT_ARM64/empty/partial"
: >>"$APT_ARM64/status"
[ "$PEER_SOURCE" = machine ] || sid_update
list="$(resolve)" || list=""
if [ -z "$list" ] && [ "$PEER_SOURCE" = sid ]; then
  log "peer QEMU: apt cannot resolve $PEER_PACKAGE:arm64 in sid now; taking this machine's release instead"
  PEER_SOURCE=machine
  list="$(resolve)" || list=""
fi
[ -n "$list" ] || die "apt resolved no packages for $PEER_PACKAGE:arm64 ($PEER_SOURCE lists)"
key="$( (echo "$list"; cat "$0") | sha256sum | cut -c1-16)"
out="$PEER_DIR/qemu-$key"

exec 9>"$out.lock"
flock -n 9 || { log "peer QEMU: another build holds $out.lock; waiting"; flock 9; }
# The tree is renamed into place only once complete.
summary="usr/share/doc/e2e-peer-qemu/summary"
if [ -f "$out/$summary" ]; then
  log "peer QEMU: cached $out ($(cat "$out/$summary"))"
  echo "$out"
  exit 0
fi

t0=$SECONDS
log "peer QEMU: $PEER_PACKAGE:arm64 from $PEER_SOURCE, $(echo "$list" | wc -l) packages"
arm64_apt apt-get install -y --no-install-recommends --download-only "$PEER_PACKAGE" >"$PEER_DIR/download.log" 2>&1 ||
  { tail -20 "$PEER_DIR/download.log" >&2; die "download of $PEER_PACKAGE:arm64 and its dependencies failed (log: $PEER_DIR/download.log)"; }
tmp="$out.tmp"
rm -rf "$tmp"
mkdir -p "$tmp/stage"
while read -r name _; do
  dpkg-deb -x "$APT_ARM64/cache/archives/$name" "$tmp/stage"
done <<<"$list"
copy_closure "$tmp/stage" "$tmp/root"
version="$(dpkg-deb -f "$APT_ARM64/cache/archives/$(echo "$list" | awk -v p="${PEER_PACKAGE}_" 'index($1, p) == 1 { print $1 }')" Version)"
mkdir -p "$tmp/root/usr/share/doc/e2e-peer-qemu"
echo "$list" >"$tmp/root/usr/share/doc/e2e-peer-qemu/packages"
# Every library the closure names is there: a check that needs no arm64 CPU.
for f in "$tmp/root/$PEER_BINARY" "$tmp"/root/usr/lib/aarch64-linux-gnu/*; do
  for lib in $(needed "$f"); do
    [ -e "$tmp/root/usr/lib/aarch64-linux-gnu/$lib" ] || [ "$lib" = ld-linux-aarch64.so.1 ] ||
      die "$f needs $lib, which the payload lacks"
  done
done
# With qemu-user (the aarch64 Rust lane installs it) the binary runs here too;
# the loader is told to skip this machine's ld.so.cache, which may name its
# own arm64 libraries.
if command -v qemu-aarch64 >/dev/null; then
  qemu-aarch64 -L "$tmp/root" "$tmp/root/lib/ld-linux-aarch64.so.1" --inhibit-cache \
    --library-path /usr/lib/aarch64-linux-gnu "$tmp/root/$PEER_BINARY" --version | head -1 >&2 ||
    die "the payload's qemu-system-aarch64 does not run under qemu-aarch64"
fi
rm -rf "$tmp/stage"
echo "$PEER_PACKAGE $version, $(find "$tmp/root" -type f | wc -l) files, $(du -sh "$tmp/root" | cut -f1)" >"$tmp/root/$summary"
rm -rf "$out"
mv "$tmp/root" "$out"
rmdir "$tmp"
rm -f "$APT_ARM64"/cache/archives/*.deb
log "peer QEMU: built $out in $((SECONDS - t0)) s ($(cat "$out/$summary"))"
# Payloads of older package lists (sid moved on) go, unless a build holds them.
for lock in "$PEER_DIR"/qemu-*.lock; do
  [ "$lock" != "$out.lock" ] || continue
  exec {lockfd}>>"$lock"
  if flock -n "$lockfd"; then rm -rf "${lock%.lock}" "${lock%.lock}.tmp" "$lock"; fi
  exec {lockfd}>&-
done
echo "$out"
