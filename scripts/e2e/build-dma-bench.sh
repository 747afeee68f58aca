#!/usr/bin/env bash
# Build tools/testing/selftests/dma/dma_map_benchmark.c from a kernel source
# package as a static arm64 binary for the L2 initramfs; cached. Prints its path.
#   scripts/e2e/build-dma-bench.sh [VERSION]   (default: the first of E2E_KERNELS that ships it)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
# The tool talks to the kernel through one ioctl whose struct has not changed
# since 5.x, so any unpacked source that ships it will do: 7.2's
# linux-source package leaves tools/testing/selftests/dma out, so a 7.2-only
# run falls back to the 6.12 source (unpacked by setup.sh when needed).
found=
for version in ${1:-} $E2E_KERNELS 6.12; do
  env_file="$(src_env "$version")"
  [ -f "$env_file" ] || continue
  # shellcheck disable=SC1090
  . "$env_file"
  src="$SRC_DIR/tools/testing/selftests/dma/dma_map_benchmark.c"
  hdr="$SRC_DIR/include/linux/map_benchmark.h"
  [ -f "$hdr" ] || hdr="$SRC_DIR/include/uapi/linux/map_benchmark.h"
  if [ -f "$src" ] && [ -f "$hdr" ]; then found=1; break; fi
done
[ -n "$found" ] || die "no unpacked linux-source (${1:-} $E2E_KERNELS 6.12) has dma_map_benchmark.c / map_benchmark.h (run scripts/e2e/setup.sh)"
out="$E2E_CACHE/tools/dma_map_benchmark-$SRC_PKGVER"
if [ ! -x "$out" ]; then
  inc="$(mktemp -d)"
  mkdir -p "$inc/linux" "$(dirname "$out")"
  # Only the benchmark's own header: <linux/types.h> etc. come from the
  # cross toolchain's uAPI headers, as with an installed kernel.
  cp "$hdr" "$inc/linux/map_benchmark.h"
  aarch64-linux-gnu-gcc -static -O2 -I"$inc" -o "$out.tmp" "$src"
  mv "$out.tmp" "$out"
  rm -rf "$inc"
fi
echo "$out"
