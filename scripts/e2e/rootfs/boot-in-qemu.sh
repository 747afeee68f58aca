#!/usr/bin/env bash
# Boot the e2e root file system (build-rootfs.sh) straight under QEMU, L0
# style (TCG, -M virt, -cpu max, no firmware, DT), with an e2e kernel: a
# debugging aid and the check that the image reaches multi-user with no
# failed unit, without L1 or our VMM.
#
#   scripts/e2e/rootfs/boot-in-qemu.sh [--kernel IMAGE | --version V] [--image RAW]
#       [--mode poweroff|report] [--console hvc0|ttyAMA0] [--append ARGS]
#       [--writable] [--script FILE] [--timeout S] [--log FILE]
#
#   --kernel IMAGE   the kernel Image (default: build-kernel.sh V, cached)
#   --version V      kernel source version for that build (default: the
#                    first of $E2E_KERNELS)
#   --image RAW      the raw image (default: build-rootfs.sh's, cached)
#   --mode M         e2e.rootfs=M: poweroff (default) or report (stays up:
#                    QEMU runs until --timeout; ^A x quits by hand)
#   --console C      the kernel's console: hvc0 (virtconsole, default) or
#                    ttyAMA0 (PL011); both reach this terminal and the log
#   --append ARGS    more kernel command line
#   --writable       write into the image (default: QEMU snapshot=on, the
#                    image never changes)
#   --script FILE    a second, read-only virtio-blk disk (/dev/vdb) holding
#                    FILE, which e2e-report.service runs after its report
#                    (e2e.rootfs.script=/dev/vdb): the disk case's L2 script
#                    under QEMU instead of our VMM
#   --timeout S      QEMU's time limit (default 600)
#   --log FILE       console log (default target/e2e/rootfs-boot/console.log)
#
# QEMU: virtio-blk-pci with the image (/dev/vda), virtio-serial-pci with a
# virtconsole (/dev/hvc0), the PL011, both on one multiplexed stdio. Exit
# status 0 when the guest printed "E2E-ROOTFS: is-system-running=running"
# (and, with poweroff, QEMU then exited by itself); prints the failed units
# otherwise, and the boot times.
set -euo pipefail
# shellcheck source=scripts/e2e/lib.sh
. "$(dirname "$0")/../lib.sh"

usage() { sed -n '7,9p' "$0" >&2; exit 2; }
kernel="" version="${E2E_KERNELS%% *}" image="" mode=poweroff console=hvc0 append="" writable=0 script=
tmo=600 logf="$E2E_OUT/rootfs-boot/console.log"
while [ "$#" -gt 0 ]; do
  case "$1" in
    --kernel) kernel="${2:?}"; shift 2 ;;
    --version) version="${2:?}"; shift 2 ;;
    --image) image="${2:?}"; shift 2 ;;
    --mode) mode="${2:?}"; shift 2 ;;
    --console) console="${2:?}"; shift 2 ;;
    --append) append="${2:?}"; shift 2 ;;
    --writable) writable=1; shift ;;
    --script) script="${2:?}"; shift 2 ;;
    --timeout) tmo="${2:?}"; shift 2 ;;
    --log) logf="${2:?}"; shift 2 ;;
    *) usage ;;
  esac
done
case "$mode" in poweroff|report) ;; *) usage ;; esac
case "$console" in hvc0|ttyAMA0) ;; *) usage ;; esac

[ -n "$kernel" ] || kernel="$(timed "kernel $version" build_l2_kernel "$version")"
[ -n "$image" ] || image="$(timed "rootfs" "$E2E_DIR/rootfs/build-rootfs.sh")"
[ -s "$kernel" ] || die "no kernel Image $kernel"
[ -s "$image" ] || die "no image $image"
snap=on
[ "$writable" = 0 ] || snap=off
mkdir -p "$(dirname "$logf")"
extra=()
if [ -n "$script" ]; then
  [ -s "$script" ] || die "no script $script"
  cp "$script" "$logf.script.img"
  truncate -s 1M "$logf.script.img"
  extra=(-drive "if=none,id=script,file=$logf.script.img,format=raw,readonly=on" -device "virtio-blk-pci,drive=script")
  append="$append e2e.rootfs.script=/dev/vdb"
fi

cmdline="root=/dev/vda rw rootwait console=$console earlycon panic=-1 e2e.rootfs=$mode $append"
log "rootfs boot: $(basename "$kernel") + $(basename "$image") (snapshot=$snap), console=$console, timeout $tmo s, log $logf"
t0=$SECONDS
qrc=0
timeout -k 10 "$tmo" qemu-system-aarch64 \
  -M virt,gic-version=3 -cpu max -smp 2 -m 1024 \
  -display none -no-reboot -nic none -monitor none \
  -chardev stdio,id=out,mux=on,signal=off \
  -serial chardev:out \
  -device virtio-serial-pci -device virtconsole,chardev=out \
  -drive "if=none,id=root,file=$image,format=raw,snapshot=$snap" \
  -device virtio-blk-pci,drive=root "${extra[@]}" \
  -kernel "$kernel" -append "$cmdline" \
  </dev/null 2>&1 | sed -u 's/\r//g' | tee "$logf" || qrc=${PIPESTATUS[0]}
wall=$((SECONDS - t0))

state="$(sed -n 's/^.*E2E-ROOTFS: is-system-running=\([a-z-]*\).*/\1/p' "$logf" | head -1)"
startup="$(sed -n 's/^.*E2E-ROOTFS: startup //p' "$logf" | head -1)"
log "rootfs boot: QEMU wall $wall s (exit $qrc), is-system-running=${state:-none}, ${startup:-no systemd-analyze line}"
grep -o 'E2E-ROOTFS: failed unit=.*' "$logf" | sort -u | sed 's/^/  /' >&2 || true
[ "$state" = running ] || die "the image did not reach multi-user with no failed unit (log: $logf)"
if [ "$mode" = poweroff ] && [ "$qrc" != 0 ]; then die "QEMU exited $qrc: the guest did not power off by itself"; fi
exit 0
