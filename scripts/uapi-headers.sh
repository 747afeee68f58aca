#!/usr/bin/env bash
# The 7.2 kernel uAPI headers (linux/iommufd.h, linux/vfio.h, ...) for layout
# conformance tests: sid's linux-libc-dev, fetched through the private sid apt
# state of scripts/e2e (never the machine's apt sources) and unpacked once.
#
#   scripts/uapi-headers.sh        prints the include dir (holds linux/iommufd.h)
#
# Version: the one of the unpacked linux-source-7.2 (the iommufd mock kernel's
# source, so uAPI and mock come from the same release) when sid still offers
# it or it is cached; otherwise sid's current linux-libc-dev. UAPI_VERSION=V
# picks another version. Cached in $E2E_CACHE/uapi/<version>/; the include dir
# also has asm -> x86_64-linux-gnu/asm, so one -I gives matching asm headers.
set -euo pipefail
E2E_LOG_TAG=uapi
# shellcheck source=scripts/e2e/lib.sh
. "$(dirname "$0")/e2e/lib.sh"

PKG=linux-libc-dev:amd64
ARCH_TRIPLET=x86_64-linux-gnu

# The version wanted, before any network access.
want="${UAPI_VERSION:-}"
if [ -z "$want" ] && [ -f "$(src_env 7.2)" ]; then
  want="$(sed -n 's/^SRC_PKGVER=//p' "$(src_env 7.2)")"
fi

incdir() { echo "$E2E_CACHE/uapi/$1/usr/include"; }
is_ready() { [ -f "$(incdir "$1")/linux/iommufd.h" ] && [ -f "$(incdir "$1")/asm/types.h" ]; }

if [ -n "$want" ] && is_ready "$want"; then
  incdir "$want"
  exit 0
fi

sid_update
cand="$(sid_candidate "$PKG")"
[ -n "$cand" ] || die "sid has no candidate for $PKG"
if [ -z "$want" ]; then
  want="$cand"
elif [ "$want" != "$cand" ]; then
  # sid keeps one version: an older one can only come from the cache.
  if [ -n "${UAPI_VERSION:-}" ]; then
    die "sid offers $PKG $cand, not $want (UAPI_VERSION), and $want is not cached"
  fi
  log "sid offers $PKG $cand, not the kernel source's $want: using $cand"
  want="$cand"
fi
mkdir -p "$E2E_CACHE/uapi"
exec 9>"$E2E_CACHE/uapi/.lock"
flock 9
if is_ready "$want"; then
  incdir "$want"
  exit 0
fi

deb="$(fetch_deb sid_apt "$PKG" "$want")"
dest="$E2E_CACHE/uapi/$want"
tmp="$dest.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
dpkg-deb -x "$deb" "$tmp"
[ -f "$tmp/usr/include/linux/iommufd.h" ] || die "$deb has no usr/include/linux/iommufd.h"
[ -d "$tmp/usr/include/$ARCH_TRIPLET/asm" ] || die "$deb has no usr/include/$ARCH_TRIPLET/asm"
ln -s "$ARCH_TRIPLET/asm" "$tmp/usr/include/asm"
grep -q IOMMU_HW_QUEUE_ALLOC "$tmp/usr/include/linux/iommufd.h" ||
  log "warning: $PKG $want's linux/iommufd.h has no IOMMU_HW_QUEUE_ALLOC (older than 6.17?)"
rm -rf "$dest"
mv "$tmp" "$dest"
is_ready "$want" || die "unpacking $deb into $dest failed"
log "$PKG $want unpacked in $dest"
incdir "$want"
