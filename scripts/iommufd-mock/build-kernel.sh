#!/usr/bin/env bash
# Build (or reuse) the x86_64 kernel whose iommufd selftest mock
# (CONFIG_IOMMUFD_TEST) judges our iommufd backend (docs/iommufd-mock.md).
#
#   scripts/iommufd-mock/build-kernel.sh                 prints the bzImage path
#   scripts/iommufd-mock/build-kernel.sh --test-header   prints the path of the
#       tree's drivers/iommu/iommufd/iommufd_test.h (the mock's layouts and op
#       numbers; kernel-internal, not in linux-libc-dev), without building
#
# Source: sid's linux-source-7.2 (MOCK_KERNEL_VERSION), fetched and unpacked
# through the private sid apt state like scripts/e2e/setup.sh does (skipped
# when already unpacked). Cached, keyed like scripts/e2e/build-kernel.sh:
#   $E2E_CACHE/kernels/bzImage-7.2-<hash(fragment + source package version)>
#   ...same name....include/iommufd_test.h      (+ .config beside the bzImage)
# Builds of the same key are serialised by a flock; a second caller waits and
# reuses. Build deps (bc bison flex libssl-dev libelf-dev make gcc) are
# installed when missing. E2E_JOBS overrides -j$(nproc).
set -euo pipefail
E2E_LOG_TAG=mock
# shellcheck source=scripts/e2e/lib.sh
. "$(dirname "$0")/../e2e/lib.sh"

MOCK_DIR="$REPO_ROOT/scripts/iommufd-mock"
VERSION="${MOCK_KERNEL_VERSION:-7.2}"
FRAGMENT="$MOCK_DIR/kernel-x86_64.config"
JOBS="${E2E_JOBS:-$(nproc)}"

want_header=0
case "${1:-}" in
  --test-header) want_header=1 ;;
  "") ;;
  *) echo "usage: $0 [--test-header]" >&2; exit 2 ;;
esac

# --- the source tree ---------------------------------------------------------
env_file="$(src_env "$VERSION")"
if [ ! -f "$env_file" ]; then
  timed "sid linux-source-$VERSION" get_sid_source "$VERSION" >/dev/null
fi
[ -f "$env_file" ] || die "no linux-source-$VERSION unpacked (sid may have moved on: set MOCK_KERNEL_VERSION)"
# shellcheck disable=SC1090
. "$env_file"
[ -f "$SRC_DIR/Makefile" ] || die "$env_file names $SRC_DIR, which holds no kernel tree: rerun scripts/e2e/setup.sh"

# Test-only fixes to the mock itself (each patch says why), in the key too.
PATCHES=("$MOCK_DIR"/*.patch)
key="$( { cat "$FRAGMENT"; echo "$SRC_PKG $SRC_PKGVER"; cat "${PATCHES[@]}"; } | sha256sum | cut -c1-16)"
mkdir -p "$E2E_CACHE/kernels"
IMAGE="$E2E_CACHE/kernels/bzImage-$VERSION-$key"

# --- iommufd_test.h from the same tree (cheap: no lock, atomic rename) -------
INCLUDE="$IMAGE.include"
HEADER="$INCLUDE/iommufd_test.h"
src_header="$SRC_DIR/drivers/iommu/iommufd/iommufd_test.h"
if ! cmp -s "$src_header" "$HEADER"; then
  [ -f "$src_header" ] || die "$SRC_PKG $SRC_PKGVER has no drivers/iommu/iommufd/iommufd_test.h"
  mkdir -p "$INCLUDE"
  cp "$src_header" "$HEADER.tmp.$$"
  mv "$HEADER.tmp.$$" "$HEADER"
fi
if [ "$want_header" = 1 ]; then
  echo "$HEADER"
  exit 0
fi

# --- the kernel ----------------------------------------------------------------
# Two runs building the same kernel at once: the second waits, then reuses.
reuse_or_lock "$IMAGE" "kernel $VERSION (iommufd mock)"

ensure_debs bc bison flex libssl-dev libelf-dev make gcc patch
SRC_DIR="$(patched_tree "$SRC_DIR" "${PATCHES[@]}")"

BUILD="$E2E_CACHE/build/linux-mock-$VERSION-$key"
rm -rf "$BUILD"
mkdir -p "$BUILD"
K=(make -C "$SRC_DIR" O="$BUILD" ARCH=x86_64 -s)
t0=$SECONDS
log "kernel $VERSION (iommufd mock, $SRC_PKG $SRC_PKGVER): configuring in $BUILD"
"${K[@]}" tinyconfig >"$BUILD/config.log" 2>&1 ||
  { tail -20 "$BUILD/config.log" >&2; die "kernel $VERSION: make tinyconfig failed"; }
(cd "$SRC_DIR" && ARCH=x86_64 scripts/kconfig/merge_config.sh -m -O "$BUILD" "$BUILD/.config" "$FRAGMENT" >"$BUILD/merge.log" 2>&1) ||
  { cat "$BUILD/merge.log" >&2; die "kernel $VERSION: merge_config.sh failed"; }
"${K[@]}" olddefconfig >>"$BUILD/config.log" 2>&1 ||
  { tail -20 "$BUILD/config.log" >&2; die "kernel $VERSION: make olddefconfig failed"; }

# Every line of the fragment is needed: "=y" must have survived olddefconfig,
# "=n" must still be off. The first ones named are the ones that matter most.
missing=()
for opt in IOMMUFD_TEST IOMMUFD IOMMU_PT_AMDV1 GENERIC_PT DEVPORT DEVTMPFS BLK_DEV_INITRD FUTEX; do
  grep -qx "CONFIG_$opt=y" "$BUILD/.config" || missing+=("CONFIG_$opt")
done
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=y)
      grep -qx "$line" "$BUILD/.config" || missing+=("${line%=y}") ;;
    CONFIG_*=n)
      if grep -qx "${line%=n}=y" "$BUILD/.config"; then missing+=("${line} (it is y)"); fi ;;
  esac
done <"$FRAGMENT"
if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
  die "kernel $VERSION: option(s) not as the fragment asks after olddefconfig: ${missing[*]} (fix $FRAGMENT; config: $BUILD/.config)"
fi
log "kernel $VERSION: config ok ($((SECONDS - t0)) s); building bzImage with -j$JOBS"

objects() { echo "$(find "$BUILD" -name '*.o' | wc -l) objects compiled"; }
make_image() { "${K[@]}" -j"$JOBS" bzImage >"$BUILD/build.log" 2>&1; }
with_progress "kernel $VERSION" objects make_image ||
  { tail -40 "$BUILD/build.log" >&2; die "kernel $VERSION: make bzImage failed (log: $BUILD/build.log)"; }
[ -s "$BUILD/arch/x86/boot/bzImage" ] || die "kernel $VERSION: make succeeded but there is no arch/x86/boot/bzImage"
cp "$BUILD/arch/x86/boot/bzImage" "$IMAGE.tmp"
cp "$BUILD/.config" "$IMAGE.config"
mv "$IMAGE.tmp" "$IMAGE"
# The build tree is keyed like the bzImage, so it is never reused: drop it.
[ "${E2E_KEEP_BUILD:-0}" = 1 ] || rm -rf "$BUILD"
log "kernel $VERSION (iommufd mock): built $IMAGE ($(du -h "$IMAGE" | cut -f1)) in $((SECONDS - t0)) s"
echo "$IMAGE"
