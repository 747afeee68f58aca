#!/usr/bin/env bash
# Build tools/testing/selftests/dma/dma_map_benchmark.c from a kernel source
# package as a static arm64 binary for the L2 initramfs; cached. Prints its path.
#   scripts/e2e/build-dma-bench.sh [VERSION]   (default: the first of E2E_KERNELS)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
version="${1:-${E2E_KERNELS%% *}}"
env_file="$(src_env "$version")"
[ -f "$env_file" ] || die "no unpacked linux-source-$version (run scripts/e2e/setup.sh)"
# shellcheck disable=SC1090
. "$env_file"
src="$SRC_DIR/tools/testing/selftests/dma/dma_map_benchmark.c"
hdr="$SRC_DIR/include/linux/map_benchmark.h"
[ -f "$hdr" ] || hdr="$SRC_DIR/include/uapi/linux/map_benchmark.h"
[ -f "$src" ] && [ -f "$hdr" ] || die "linux-source-$version has no dma_map_benchmark.c / map_benchmark.h"
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
