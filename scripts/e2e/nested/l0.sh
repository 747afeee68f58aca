# The nested lane's L0 (sourced by scripts/e2e/run.sh for CASE_QEMU=nested cases).
# shellcheck shell=bash disable=SC2034 # the NESTED_* settings are read by run.sh
#
# L0 is sid's QEMU (setup-l0.sh) with a nested-capable SMMUv3 in front of
# three PCI functions, all handed to vfio-pci by L1's /init:
#   0000:00:02.0  virtio-blk-pci, a 16 MiB raw disk of known content
#   0000:00:03.0  QEMU's edu device (DMA engine: proves translated DMA; its
#                 DMA mask widened from 28 to 48 bits so it reaches guest RAM)
#   0000:00:04.0  a second virtio-blk-pci disk, same content (two devices
#                 behind one vSMMU)
# After the run L0 reports which E2E-PATTERN lines the guests wrote into the
# disk images ("E2E-L0: disk N has ..."), so a write is checked where it lands.
# L1 is 7.2 with l1-kernel.config and the CANWBS test knob, booted with DT.

NESTED_DIR="$E2E_DIR/nested"
# L1 must be 7.2: 6.12's arm-smmu-v3 has no nest parent and no vIOMMU.
NESTED_L1_VERSION=7.2
NESTED_L1_KERNEL_ARGS=(--config "$NESTED_DIR/l1-kernel.config" --patch "$NESTED_DIR/canwbs-test-knob.patch")
NESTED_DISK_BDF=0000:00:02.0
NESTED_EDU_BDF=0000:00:03.0
NESTED_DISK2_BDF=0000:00:04.0
NESTED_VFIO_BDFS="$NESTED_DISK_BDF,$NESTED_EDU_BDF,$NESTED_DISK2_BDF"
# The disks' DMA goes through the SMMU only with iommu_platform=on: without
# VIRTIO_F_ACCESS_PLATFORM QEMU's virtio reads guest physical memory
# directly, which for a function passed on to L2 is the wrong address space
# (L2's virtio-blk then saw "Looped descriptor"). Modern-only: no I/O BAR.
NESTED_VIRTIO_OPTS="iommu_platform=on,disable-legacy=on"
# L1's command line: the CANWBS knob (canwbs-test-knob.patch) and the
# functions its /init binds to vfio-pci.
NESTED_L1_APPEND="arm_smmu_v3.test_force_canwbs=1 e2e_vfio=$NESTED_VFIO_BDFS"
# The disk: one 64-byte line (with its newline) repeated to 16 MiB; its sha256
# is fixed here so a change of the generator (or of what L1 reads) is caught.
NESTED_DISK_LINE="ch-e2e nested lane: virtio-blk-pci disk, known content, 64 B/ln"
NESTED_DISK_SIZE=$((16 << 20))
NESTED_DISK_SHA256=52aec3149640e5a85741c000b9ea74e1a9afa9409e5f238ce7d87eefbecde716

# nested_disk_bytes N: the first N bytes of the known disk, to stdout.
nested_disk_bytes() {
  # (yes dies of SIGPIPE when head is done: not an error.)
  { yes "$NESTED_DISK_LINE" || true; } | head -c "$1"
}

# nested_disk_sha N: the sha256 of the known disk's first N bytes.
nested_disk_sha() {
  nested_disk_bytes "$1" | sha256sum | cut -d' ' -f1
}

# nested_l2_disk_helpers: shell functions for a case's L2 script (print it
# before the script's own lines): disk_pci B, the PCI function of block
# device B (/sys/block/vdX); small_requests B, 4 KiB requests and no
# readahead on B, so a read is one DMA map/unmap (and, with
# iommu.strict=1, one TLBI + CMD_SYNC) per 4 KiB.
nested_l2_disk_helpers() {
  cat <<'EOS'
disk_pci() { basename "$(readlink -f "$1/device/..")"; }
small_requests() {
  echo 4 >"$1/queue/max_sectors_kb"
  echo 0 >"$1/queue/read_ahead_kb"
}
EOS
}

# nested_disk OUT: write the known-content disk image to OUT.
nested_disk() {
  local out="$1" sum
  nested_disk_bytes "$NESTED_DISK_SIZE" >"$out.tmp"
  sum="$(sha256sum "$out.tmp" | cut -d' ' -f1)"
  [ "$sum" = "$NESTED_DISK_SHA256" ] || die "nested disk: sha256 $sum, expected $NESTED_DISK_SHA256"
  mv "$out.tmp" "$out"
}

# nested_qemu CHROOT TIMEOUT LOG KERNEL INITRD APPEND: boot L1 in sid's QEMU
# inside CHROOT, console to LOG (\r stripped); returns QEMU's exit status
# (124: timed out). The chroot'd QEMU sees only the chroot, so the kernel,
# initrd and a private copy of the disk go into a per-run directory there,
# removed afterwards.
nested_qemu() {
  local chroot="$1" tmo="$2" log="$3" kernel="$4" initrd="$5" append="$6" run r rc=0
  run="$(mktemp -d "$chroot/tmp/e2e-run.XXXXXX")"
  r="/tmp/$(basename "$run")"
  cp "$kernel" "$run/Image"
  cp "$initrd" "$run/initrd"
  nested_disk "$run/disk.img"
  cp "$run/disk.img" "$run/disk2.img"
  timeout -k 10 "$tmo" chroot "$chroot" qemu-system-aarch64 \
    -M virt,virtualization=on,gic-version=3,iommu=smmuv3 -cpu max -smp 2 -m 3072 \
    -nographic -no-reboot -nic none \
    -kernel "$r/Image" -initrd "$r/initrd" \
    -append "console=ttyAMA0 panic=-1 rdinit=/init $append" \
    -drive "if=none,id=disk0,format=raw,file=$r/disk.img" \
    -device "virtio-blk-pci,drive=disk0,addr=0x${NESTED_DISK_BDF:8:2},$NESTED_VIRTIO_OPTS" \
    -device "edu,addr=0x${NESTED_EDU_BDF:8:2},dma_mask=0xffffffffffff" \
    -drive "if=none,id=disk1,format=raw,file=$r/disk2.img" \
    -device "virtio-blk-pci,drive=disk1,addr=0x${NESTED_DISK2_BDF:8:2},$NESTED_VIRTIO_OPTS" \
    </dev/null 2>&1 | tr -d '\r' >"$log" || rc=${PIPESTATUS[0]}
  local n
  for n in 1 2; do
    grep -a -o 'E2E-PATTERN [ -~]*' "$run/disk${n#1}.img" | sed "s/^/E2E-L0: disk $n has /" >>"$log" || true
  done
  rm -rf "$run"
  return "$rc"
}

# nested_assert: what every nested case needs from L1 (run.sh's helpers).
nested_assert() {
  expect "E2E-L1: iommu ok" "/dev/iommu missing in L1 (IOMMUFD)"
  expect "E2E-L1: disk $NESTED_DISK_BDF vda sha256=$NESTED_DISK_SHA256" \
    "L1 did not read the known disk content through virtio-blk before the vfio-pci bind"
  local bdf
  for bdf in ${NESTED_VFIO_BDFS//,/ }; do
    expect_re "E2E-L1: vfio $bdf .* driver=vfio-pci cdev=vfio[0-9]+ node=ok" \
      "$bdf is not bound to vfio-pci with a /dev/vfio/devices/vfioN cdev"
  done
}
