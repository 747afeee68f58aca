#!/usr/bin/env bash
# The nested lane's CMD-QV L0: QEMU 10.2.2 (Debian sid's source package) with
# the test-only Tegra241 CMD-QV hardware model (tegra241-cmdqv-hw.patch), built
# for this x86_64 machine and run directly on it (no sid chroot).
#
#   scripts/e2e/nested/build-qemu-cmdqv.sh      prints the qemu-system-aarch64 path
#
# Steps: sid's qemu 1:10.2.2+ds-1 source through a private deb-src apt state
# (the orig tarball's sha256 is pinned here), dpkg-source -x without Debian's
# patches, then only the two of them the build needs (skip-unpack-edk2-blobs,
# skip-install-dtb: the +ds tarball lacks the edk2 and dtb blobs meson wants),
# the meson and pycotap wheels the +ds tarball strips (pinned sha256), the
# bookworm build dependencies, our patch, configure (aarch64-softmmu, TCG, no
# default features) and ninja; then a DT smoke test and the model's qtest.
#
# The source tree ($E2E_CACHE/qemu-cmdqv/src-<version>) is a git repository
# whose commit "base" is the unpacked source + the two Debian patches + the
# wheels; the build tree is build-e2e inside it (git-excluded). Our patch is
# applied with git apply on top of base, and only when it changed: git reset
# --hard base + git clean restore exactly the files the old patch touched, so
# ninja recompiles those and whatever depends on them, not the 2,700 other
# objects (a model edit rebuilds in about a minute; a cold build takes
# 10-25 min on 2 cores). A patch that does not apply fails here, with the tree
# left at base.
#
# The binary needs no firmware or ROM for the lane's DT -kernel boot with
# -nic none (the two-smmu shape's ACPI boot takes edk2 from the sid chroot by
# path: nested/l0.sh), so it is cached alone in
#   $E2E_CACHE/qemu-cmdqv/qemu-<key>/qemu-system-aarch64
# key = sha256 of the source version, the patch and this script. It links
# this machine's glib, libfdt (and their dependencies). Checkouts with
# different patches share the source and build trees (one build at a time,
# under a lock): each switch re-applies its patch and rebuilds incrementally.
set -euo pipefail
# shellcheck source=scripts/e2e/lib.sh
. "$(dirname "$0")/../lib.sh"

QEMU_SRC_VERSION="1:10.2.2+ds-1"
QEMU_ORIG=qemu_10.2.2+ds.orig.tar.xz
QEMU_ORIG_SHA256=be05230fe47a6937cd29f28f562932c8125f9c93c2a82c625198f7a4aa601dfb
QEMU_DEBIAN=qemu_10.2.2+ds-1.debian.tar.xz
QEMU_DEBIAN_SHA256=ddf75aceab4f8f77374f3cb34fc97b41514895aeb293ce8b2ddd5e072bb0f5c0
DEBIAN_PATCHES=(skip-unpack-edk2-blobs skip-install-dtb)
# QEMU 10.2 needs meson >= 1.5 (bookworm has 1.0.1); its configure installs
# these from python/wheels into its venv.
WHEELS=(
  "meson==1.9.0 45e51ddc41e37d961582d06e78c48e0f9039011587f3495c4d6b0781dad92357"
  "pycotap==1.3.1 1c3a25b3ff89e48f4e00f1f71dbbc1642b4f65c65d416524d07e73492fff25ea"
)
CONFIGURE=(--python=/usr/bin/python3 --target-list=aarch64-softmmu --without-default-features
  --enable-fdt=system --enable-tcg --disable-install-blobs --disable-rust --disable-docs
  --disable-tools --disable-user --disable-download)
BUILD_DEBS=(ninja-build libglib2.0-dev libfdt-dev python3-venv python3-pip pkg-config flex bison
  gcc git dpkg-dev xz-utils debian-archive-keyring)

PATCH="$E2E_DIR/nested/tegra241-cmdqv-hw.patch"
QDIR="$E2E_CACHE/qemu-cmdqv"
SRC="$QDIR/src-${QEMU_SRC_VERSION#*:}"
BUILD="$SRC/build-e2e"
LOG="$QDIR/build.log"
APT_SRC="$QDIR/apt-deb-src"

[ -s "$PATCH" ] || die "missing $PATCH"
mkdir -p "$QDIR"
key="$( { echo "$QEMU_SRC_VERSION $QEMU_ORIG_SHA256"; cat "$PATCH" "$0"; } | sha256sum | cut -c1-16)"
out="$QDIR/qemu-$key"

# One build at a time: they share the source and build trees.
exec 9>"$QDIR/build.lock"
flock -n 9 || { log "CMD-QV QEMU: another build holds $QDIR/build.lock; waiting"; flock 9; }
if [ -x "$out/qemu-system-aarch64" ]; then
  log "CMD-QV QEMU: cached $out"
  echo "$out/qemu-system-aarch64"
  exit 0
fi
: >"$LOG"
fail() { tail -30 "$LOG" >&2; die "CMD-QV QEMU: $* (log: $LOG)"; }
# step NAME CMD...: one log line per step; the command's output goes to $LOG.
step() {
  local name="$1" t0=$SECONDS
  shift
  log "CMD-QV QEMU: $name"
  echo "=== $name" >>"$LOG"
  "$@" >>"$LOG" 2>&1 || fail "$name failed"
  log "CMD-QV QEMU: $name: $((SECONDS - t0)) s"
}

# src_apt CMD ARGS...: apt over sid's Sources only, in a private state
# beside lib.sh's sid_apt (whose list has no deb-src, which the other lanes
# do not need to download).
src_apt() {
  local cmd="$1"
  shift
  "$cmd" -q \
    -o Dir::Etc::SourceList="$APT_SRC/sources.list" \
    -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State::Lists="$APT_SRC/lists" \
    -o Dir::Cache="$APT_SRC/cache" \
    -o APT::Sandbox::User=root \
    "$@"
}

# fetch_source: the .dsc and both tarballs in $APT_SRC/dl, checksums checked.
fetch_source() {
  mkdir -p "$APT_SRC/lists/partial" "$APT_SRC/cache/archives/partial" "$APT_SRC/dl"
  cat >"$APT_SRC/sources.list" <<'SRC'
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
SRC
  if ! echo "$QEMU_ORIG_SHA256  $APT_SRC/dl/$QEMU_ORIG" | sha256sum -c --status 2>/dev/null ||
    ! echo "$QEMU_DEBIAN_SHA256  $APT_SRC/dl/$QEMU_DEBIAN" | sha256sum -c --status 2>/dev/null; then
    src_apt apt-get update
    (cd "$APT_SRC/dl" && src_apt apt-get source --download-only "qemu=$QEMU_SRC_VERSION")
  fi
  echo "$QEMU_ORIG_SHA256  $APT_SRC/dl/$QEMU_ORIG" | sha256sum -c
  echo "$QEMU_DEBIAN_SHA256  $APT_SRC/dl/$QEMU_DEBIAN" | sha256sum -c
}

# unpack_source: $SRC as a git repository at tag base, configured in $BUILD.
unpack_source() {
  local tmp="$SRC.tmp" p spec name sum
  rm -rf "$tmp"
  mkdir -p "$tmp"
  dpkg-source --skip-patches -x "$APT_SRC/dl/qemu_${QEMU_SRC_VERSION#*:}.dsc" "$tmp/qemu"
  for p in "${DEBIAN_PATCHES[@]}"; do
    patch -d "$tmp/qemu" -p1 --forward --no-backup-if-mismatch <"$tmp/qemu/debian/patches/$p.patch"
  done
  mkdir -p "$tmp/qemu/python/wheels"
  for spec in "${WHEELS[@]}"; do
    name="${spec%% *}"
    sum="${spec#* }"
    PIP_FIND_LINKS="" pip3 download --no-deps --only-binary=:all: --no-cache-dir \
      -d "$tmp/qemu/python/wheels" "$name"
    echo "$sum  $(ls "$tmp/qemu/python/wheels/${name%%==*}-${name#*==}-"*.whl)" | sha256sum -c
  done
  (
    cd "$tmp/qemu"
    git init -q
    printf '/build-e2e/\n' >.git/info/exclude
    git -c user.name=e2e -c user.email=e2e@localhost add -A
    git -c user.name=e2e -c user.email=e2e@localhost commit -q \
      -m "qemu $QEMU_SRC_VERSION + ${DEBIAN_PATCHES[*]} + wheels"
    git tag base
  )
  rm -rf "$SRC"
  mv "$tmp/qemu" "$SRC"
  rm -rf "$tmp"
  # Configured in place: meson records absolute paths.
  mkdir "$BUILD"
  (cd "$BUILD" && nice ../configure "${CONFIGURE[@]}")
}

# apply_patch: $SRC = base + $PATCH, touching files only when the patch changed.
apply_patch() {
  local want have
  want="$(sha256sum <"$PATCH" | cut -c1-64)"
  have="$(cat "$SRC/.git/e2e-patch.sha256" 2>/dev/null || true)"
  if [ "$want" = "$have" ]; then
    echo "patch unchanged since the last build"
    return 0
  fi
  rm -f "$SRC/.git/e2e-patch.sha256"
  git -C "$SRC" reset -q --hard base
  git -C "$SRC" clean -q -fd
  git -C "$SRC" apply --whitespace=nowarn "$PATCH"
  echo "$want" >"$SRC/.git/e2e-patch.sha256"
}

t0=$SECONDS
step "build dependencies" ensure_debs "${BUILD_DEBS[@]}"
if [ ! -f "$BUILD/build.ninja" ] || ! git -C "$SRC" rev-parse -q --verify base >/dev/null 2>&1; then
  step "source qemu $QEMU_SRC_VERSION (sid deb-src, sha256 pinned)" fetch_source
  step "unpack + Debian patches ${DEBIAN_PATCHES[*]} + wheels + configure" unpack_source
fi
step "apply $(basename "$PATCH")" apply_patch
log "CMD-QV QEMU: ninja ($(nproc) jobs, progress in $LOG)"
step "ninja qemu-system-aarch64" nice ninja -C "$BUILD" -j"${E2E_JOBS:-$(nproc)}" qemu-system-aarch64
step "smoke test" "$BUILD/qemu-system-aarch64" -M virt,iommu=smmuv3,x-tegra241-cmdqv=on -display none -nic none -S \
  -machine dumpdtb="$QDIR/smoke.dtb"
grep -q 'nvidia,tegra264-cmdqv' "$QDIR/smoke.dtb" || fail "the x-tegra241-cmdqv=on DT has no nvidia,tegra264-cmdqv node"
# The model's own test (the patch's tests/qtest/tegra241-cmdqv-hw-test.c):
# the guest-owned VINTF paths the lane's L1 does not take by itself.
step "ninja tests/qtest/tegra241-cmdqv-hw-test" nice ninja -C "$BUILD" -j"${E2E_JOBS:-$(nproc)}" tests/qtest/tegra241-cmdqv-hw-test
step "qtest tegra241-cmdqv-hw-test" env QTEST_QEMU_BINARY="$BUILD/qemu-system-aarch64" \
  timeout 120 "$BUILD/tests/qtest/tegra241-cmdqv-hw-test"
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
cp "$BUILD/qemu-system-aarch64" "$out.tmp/"
"$out.tmp/qemu-system-aarch64" --version | head -1 >"$out.tmp/version"
rm -rf "$out"
mv "$out.tmp" "$out"
log "CMD-QV QEMU: built $out in $((SECONDS - t0)) s ($(cat "$out/version"))"
# Binaries of other patches stay (~100 MB each): another checkout (an older
# or newer commit of the patch) may be running one; delete them by hand.
echo "$out/qemu-system-aarch64"
