#!/usr/bin/env bash
# Build (or reuse) the minimal arm64 Image from Debian's linux-source-VERSION.
#
#   scripts/e2e/build-kernel.sh VERSION [--config FRAGMENT]... [--patch FILE]...
#       VERSION e.g. 6.12 or 7.2; prints the Image path
#
# guest-kernel.config is always the base; each --config FRAGMENT is merged on
# top of it (every CONFIG_...=y line of an extra fragment must survive
# olddefconfig). Each --patch FILE (patch -p1, test-only kernel changes such as
# scripts/e2e/nested/canwbs-test-knob.patch) is applied to a private
# hard-linked copy of the source tree, never to the shared one.
#
# Needs scripts/e2e/setup.sh first. The Image is cached in
#   $E2E_CACHE/kernels/Image-<VERSION>-<hash(fragments + source package version + patches)>
# The base Image serves as the L1 host kernel and the L2 guest kernel.
set -euo pipefail
# shellcheck source=scripts/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

usage="usage: $0 VERSION [--config FRAGMENT]... [--patch FILE]..."
VERSION="${1:?$usage}"
shift
FRAGMENT="$E2E_DIR/guest-kernel.config"
EXTRA_FRAGMENTS=()
PATCHES=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --config) EXTRA_FRAGMENTS+=("$(realpath "${2:?$usage}")"); shift 2 ;;
    --patch) PATCHES+=("$(realpath "${2:?$usage}")"); shift 2 ;;
    *) die "$usage" ;;
  esac
done
for f in "${EXTRA_FRAGMENTS[@]}" "${PATCHES[@]}"; do [ -s "$f" ] || die "missing $f"; done
JOBS="${E2E_JOBS:-$(nproc)}"
env_file="$(src_env "$VERSION")"
[ -f "$env_file" ] || die "no linux-source-$VERSION unpacked: run scripts/e2e/setup.sh (E2E_KERNELS=\"$VERSION\")"
# shellcheck disable=SC1090
. "$env_file"

# Options that must survive olddefconfig (a missing one fails the build).
REQUIRED=(DEVMEM UNIX ARM_SMMU_V3 TEGRA241_CMDQV IOMMUFD VFIO KVM ACPI EFI PCI_HOST_GENERIC
  DMA_MAP_BENCHMARK DEBUG_FS IOMMU_DEBUGFS SERIAL_AMBA_PL011_CONSOLE BLK_DEV_INITRD DEVTMPFS
  SECCOMP_FILTER AUDITSYSCALL
  EXT4_FS INOTIFY_USER CGROUPS MEMCG BPF_SYSCALL CGROUP_BPF TMPFS_POSIX_ACL INET VIRTIO_NET TUN)

# Without extras the key is what it always was, so cached base Images stay valid.
key="$( { cat "$FRAGMENT"; echo "$SRC_PKG $SRC_PKGVER"; cat "${EXTRA_FRAGMENTS[@]}" "${PATCHES[@]}" </dev/null; } | sha256sum | cut -c1-16)"
mkdir -p "$E2E_CACHE/kernels"
IMAGE="$E2E_CACHE/kernels/Image-$VERSION-$key"
# Two runs building the same kernel at once: the second waits, then reuses.
reuse_or_lock "$IMAGE" "kernel $VERSION"

if [ "${#PATCHES[@]}" -gt 0 ]; then SRC_DIR="$(patched_tree "$SRC_DIR" "${PATCHES[@]}")"; fi

BUILD="$E2E_CACHE/build/linux-$VERSION-$key"
mkdir -p "$BUILD"
K=(make -C "$SRC_DIR" O="$BUILD" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- -s)
t0=$SECONDS
log "kernel $VERSION ($SRC_PKG $SRC_PKGVER): configuring in $BUILD"
"${K[@]}" allnoconfig >/dev/null
(cd "$SRC_DIR" && ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- \
  scripts/kconfig/merge_config.sh -m -O "$BUILD" "$BUILD/.config" "$FRAGMENT" "${EXTRA_FRAGMENTS[@]}" >"$BUILD/merge.log" 2>&1) ||
  { cat "$BUILD/merge.log" >&2; die "kernel $VERSION: merge_config.sh failed"; }
"${K[@]}" olddefconfig >/dev/null

# Every option an extra fragment turns on is the reason it exists: required too.
while IFS= read -r opt; do REQUIRED+=("$opt"); done < <(sed -n 's/^CONFIG_\([A-Za-z0-9_]*\)=y$/\1/p' "${EXTRA_FRAGMENTS[@]}" </dev/null)
missing=()
for opt in "${REQUIRED[@]}"; do
  grep -qx "CONFIG_$opt=y" "$BUILD/.config" || missing+=("CONFIG_$opt")
done
# Everything else the fragment asks for: warn only (names differ across versions).
while IFS= read -r line; do
  case "$line" in CONFIG_*=y) grep -qx "$line" "$BUILD/.config" || log "kernel $VERSION: warning: $line did not survive olddefconfig" ;; esac
done <"$FRAGMENT"
[ "${#missing[@]}" = 0 ] || die "kernel $VERSION: required option(s) missing after olddefconfig: ${missing[*]} (fix $FRAGMENT)"
log "kernel $VERSION: config ok ($(( SECONDS - t0 )) s); building Image with -j$JOBS"

objects() { echo "$(find "$BUILD" -name '*.o' | wc -l) objects compiled"; }
make_image() { "${K[@]}" -j"$JOBS" Image >"$BUILD/build.log" 2>&1; }
with_progress "kernel $VERSION" objects make_image ||
  { tail -40 "$BUILD/build.log" >&2; die "kernel $VERSION: make Image failed (log: $BUILD/build.log)"; }
cp "$BUILD/arch/arm64/boot/Image" "$IMAGE.tmp"
cp "$BUILD/.config" "$IMAGE.config"
mv "$IMAGE.tmp" "$IMAGE"
# The build tree is keyed like the Image, so it is never reused: drop it (~170 MB).
[ "${E2E_KEEP_BUILD:-0}" = 1 ] || rm -rf "$BUILD"
log "kernel $VERSION: built $IMAGE ($(du -h "$IMAGE" | cut -f1)) in $(( SECONDS - t0 )) s"
echo "$IMAGE"
