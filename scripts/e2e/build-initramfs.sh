#!/usr/bin/env bash
# Build the e2e initramfs images (uncompressed newc cpio: unpacks fastest under TCG).
#
#   scripts/e2e/build-initramfs.sh l2 OUT [L2_SCRIPT [SRC:DEST]...]
#       L2 guest: busybox + initramfs/l2-init (+ L2_SCRIPT as /e2e/l2.sh,
#       none when empty; + each extra file SRC as DEST, a case's own tools)
#   scripts/e2e/build-initramfs.sh l1 OUT CASE_SCRIPT VMM_BIN L2_IMAGE L2_INITRD [SRC:DEST]...
#       L1 host: busybox, /bin/cloud-hypervisor (+ /bin/ch-remote when built
#       beside it), /l2/Image, /l2/initrd, /init (initramfs/l1-init),
#       /e2e/lib.sh, /e2e/run.sh (= CASE_SCRIPT), and each extra file SRC as
#       DEST (a case's own tools, mode kept); an extra directory SRC is
#       merged as a tree at DEST (e.g. a payload with usr/ and lib/ at /)
#
# /dev/console comes from the kernel's built-in default initramfs.
set -euo pipefail
# shellcheck source=scripts/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

[ -x "$BUSYBOX" ] || die "no arm64 busybox at $BUSYBOX: run scripts/e2e/setup.sh"

new_root() {
  local root="$1"
  rm -rf "$root"
  mkdir -p "$root"/{bin,dev,proc,sys,tmp,e2e}
  cp "$BUSYBOX" "$root/bin/busybox"
  ln -s busybox "$root/bin/sh"
}

pack() {
  local root="$1" out="$2"
  mkdir -p "$(dirname "$out")"
  (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$out.tmp"
  mv "$out.tmp" "$out"
  rm -rf "$root"
  log "initramfs: $out ($(du -h "$out" | cut -f1))"
}

kind="${1:?usage: $0 l2 OUT [L2_SCRIPT] | l1 OUT CASE_SCRIPT VMM_BIN L2_IMAGE L2_INITRD [SRC:DEST]...}"
out="${2:?missing OUT}"
root="$out.root"
case "$kind" in
  l2)
    new_root "$root"
    install -m 0755 "$E2E_DIR/initramfs/l2-init" "$root/init"
    [ -z "${3:-}" ] || install -m 0755 "$3" "$root/e2e/l2.sh"
    # The DMA-API benchmark tool, when run.sh built it.
    [ -z "${E2E_DMA_BENCH:-}" ] || install -m 0755 "$E2E_DMA_BENCH" "$root/bin/dma_map_benchmark"
    for extra in "${@:4}"; do
      install -D -m 0755 "${extra%%:*}" "$root/${extra#*:}"
    done
    pack "$root" "$out"
    ;;
  l1)
    [ "$#" -ge 6 ] || die "usage: $0 l1 OUT CASE_SCRIPT VMM_BIN L2_IMAGE L2_INITRD [SRC:DEST]..."
    case_script="$3" vmm_bin="$4" l2_image="$5" l2_initrd="$6"
    for f in "$case_script" "$vmm_bin" "$l2_image" "$l2_initrd"; do [ -s "$f" ] || die "missing $f"; done
    new_root "$root"
    mkdir -p "$root/l2"
    install -m 0755 "$E2E_DIR/initramfs/l1-init" "$root/init"
    install -m 0644 "$E2E_DIR/initramfs/l1-lib.sh" "$root/e2e/lib.sh"
    install -m 0755 "$case_script" "$root/e2e/run.sh"
    install -m 0755 "$vmm_bin" "$root/bin/cloud-hypervisor"
    ch_remote="$(dirname "$vmm_bin")/ch-remote"
    [ ! -x "$ch_remote" ] || install -m 0755 "$ch_remote" "$root/bin/ch-remote"
    install -m 0644 "$l2_image" "$root/l2/Image"
    install -m 0644 "$l2_initrd" "$root/l2/initrd"
    shift 6
    for extra in "$@"; do
      src="${extra%%:*}" dest="${extra#*:}"
      if [ ! -s "$src" ] || [ "${dest#/}" = "$dest" ]; then die "extra '$extra': want SRC:/DEST with SRC present"; fi
      if [ -d "$src" ]; then
        mkdir -p "$root$dest"
        cp -a "$src/." "$root$dest"
      else
        mkdir -p "$root$(dirname "$dest")"
        cp -p "$src" "$root$dest"
      fi
    done
    pack "$root" "$out"
    ;;
  *) die "unknown initramfs kind '$kind' (l1 or l2)" ;;
esac
