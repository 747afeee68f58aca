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
# Which QEMU is L0 (E2E_NESTED_L0):
#   sid        sid's QEMU 11.1 in its chroot (setup-l0.sh), the default
#   cmdqv      QEMU 10.2.2 + the test-only Tegra241 CMD-QV hardware model
#              (build-qemu-cmdqv.sh, tegra241-cmdqv-hw.patch), run on the host
#              with x-tegra241-cmdqv=on: L1's SMMUv3 probes with its CMD-QV and
#              L1's own invalidations run through VINTF0. The model's
#              tegra241_hw_* trace (and the SMMU CMDQ's opcodes) go to
#              <console log>.l0-trace.
#   cmdqv-off  the same binary with the model off: the control run
NESTED_L0="${E2E_NESTED_L0:-sid}"
# L1's kernel: NESTED_L1_VERSION and NESTED_L1_KERNEL_ARGS (lib.sh).
NESTED_DISK_BDF=0000:00:02.0
NESTED_EDU_BDF=0000:00:03.0
NESTED_DISK2_BDF=0000:00:04.0
NESTED_VFIO_BDFS="$NESTED_DISK_BDF,$NESTED_EDU_BDF,$NESTED_DISK2_BDF"
# L1's PCI shape (a case's CASE_NESTED_SHAPE; run.sh calls nested_shape):
#   one-smmu  the above: QEMU's machine SMMUv3 (-M virt,iommu=smmuv3) over
#             pcie.0, DT boot of L1 (the default; every case but two-smmu)
#   two-smmu  two SMMUv3 instances, like two root complexes of a Grace host:
#             a user-created arm-smmuv3 over pcie.0 with the first disk at
#             00:02.0, and a pxb-pcie root (pcie.1, bus NESTED_PXB_BUS) with
#             its own arm-smmuv3 and the second disk behind a root port
#             there. QEMU describes a user-created SMMUv3 off pcie.0 only
#             in ACPI ("SMMUv3 device only supported with pcie.0 for DT"),
#             so L1 boots through edk2 (QEMU_EFI.fd from the sid chroot) and
#             ACPI (IORT: one SMMUv3 node per root complex). No edu. On the
#             CMD-QV L0 each arm-smmuv3 gets its own CMD-QV model (DSDT
#             NVDA200C, _UID = that SMMUv3's IORT identifier).
#   gpu       the shape of a Grace GPU passthrough (issue 19): one-smmu's
#             machine SMMUv3 and DT boot, the disk at 00:02.0 and an
#             ivshmem-plain function at NESTED_IVSHMEM_BDF whose memory BAR
#             (BAR2, 64-bit prefetchable) is NESTED_IVSHMEM_SIZE, backed by
#             a sparse file (memory-backend-file,share=on) in the run's
#             directory; and two NUMA nodes for L1, one vCPU and half of
#             its RAM on each. After the run L0 prints the 8 bytes at each
#             of NESTED_IVSHMEM_OFFSETS in that file and how much of it was
#             ever allocated ("E2E-L0: ivshmem ..."). No edu, no second disk.
#   nvme      one-smmu plus QEMU's nvme at NESTED_NVME_BDF over a third
#             copy of the known disk (L0 reports its E2E-PATTERN lines as
#             disk 3). Its BAR0 holds the registers, the doorbells and the
#             MSI-X table and PBA; max_ioqpairs=NESTED_NVME_IOQPAIRS puts
#             the table past the first 64 KiB (at 0x11008 of a 128 KiB BAR0),
#             so a 64 KiB-page host maps BAR0's first 64 KiB page (registers
#             and the doorbells Linux uses) and traps the second (table,
#             PBA): a function whose MSI-X table shares a BAR with mappable
#             space (the nested-64k case).
# The pxb's bus number; its root port is bus NESTED_PXB_BUS, the disk behind
# it on the next bus (edk2 numbers the buses, ACPI Linux keeps them).
NESTED_PXB_BUS=0x80
NESTED_SHAPE=one-smmu
NESTED_NVME_BDF=0000:00:05.0
NESTED_NVME_IOQPAIRS=8192
# The gpu shape's ivshmem function and its memory BAR: 128 GiB, what a
# 97,871 MiB GH200 rounds up to. sid's QEMU puts it in the virt machine's
# high PCIe window (highmem-mmio, 512 GiB by default since QEMU 10.0;
# given explicitly so the shape does not depend on that default).
NESTED_IVSHMEM_BDF=0000:00:05.0
NESTED_IVSHMEM_SIZE=128G
NESTED_HIGHMEM_MMIO_SIZE=512G
# Offsets into the BAR a case writes through and L0 reads back from the
# file: the first and the last 4 KiB page of the 128 GiB.
NESTED_IVSHMEM_OFFSETS="0x0 0x1ffffff000"
# The firmware of the two-smmu shape's ACPI boot, inside the sid chroot.
NESTED_EDK2=/usr/share/qemu-efi-aarch64/QEMU_EFI.fd
# The two-smmu shape's arm-smmuv3 options: stage 1 + stage 2 + nesting.
NESTED_SMMU_OPTS="stage=nested"
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

# nested_shape SHAPE: L1's PCI shape for the next nested_qemu (see above):
# sets NESTED_SHAPE, the functions L1 binds to vfio-pci and L1's command line.
nested_shape() {
  NESTED_SHAPE="$1"
  case "$1" in
    one-smmu)
      NESTED_DISK2_BDF=0000:00:04.0
      NESTED_VFIO_BDFS="$NESTED_DISK_BDF,$NESTED_EDU_BDF,$NESTED_DISK2_BDF" ;;
    two-smmu)
      NESTED_DISK2_BDF="$(printf '0000:%02x:00.0' $((NESTED_PXB_BUS + 1)))"
      NESTED_VFIO_BDFS="$NESTED_DISK_BDF,$NESTED_DISK2_BDF" ;;
    gpu)
      NESTED_VFIO_BDFS="$NESTED_DISK_BDF,$NESTED_IVSHMEM_BDF" ;;
    nvme)
      NESTED_DISK2_BDF=0000:00:04.0
      NESTED_VFIO_BDFS="$NESTED_DISK_BDF,$NESTED_EDU_BDF,$NESTED_DISK2_BDF,$NESTED_NVME_BDF" ;;
    *) die "nested L1 shape '$1': expected one-smmu, two-smmu, gpu or nvme" ;;
  esac
  NESTED_L1_APPEND="arm_smmu_v3.test_force_canwbs=1 e2e_vfio=$NESTED_VFIO_BDFS"
}

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

# nested_l0_setup: build or reuse L0 (per NESTED_L0); prints what nested_qemu
# takes as its first argument: the chroot directory (sid) or the QEMU binary.
nested_l0_setup() {
  case "$NESTED_L0" in
    sid) "$NESTED_DIR/setup-l0.sh" ;;
    cmdqv | cmdqv-off) "$NESTED_DIR/build-qemu-cmdqv.sh" ;;
    *) die "E2E_NESTED_L0=$NESTED_L0: expected sid, cmdqv or cmdqv-off" ;;
  esac
}

# nested_qemu L0 TIMEOUT LOG KERNEL INITRD APPEND: boot L1 in L0 (the sid
# chroot, or the CMD-QV QEMU binary), console to LOG (\r stripped); returns
# QEMU's exit status (124: timed out). The chroot'd QEMU sees only the
# chroot, so the kernel, initrd and a private copy of the disk go into a
# per-run directory there (for the host binary: beside LOG), removed
# afterwards.
nested_qemu() {
  local l0="$1" tmo="$2" log="$3" kernel="$4" initrd="$5" append="$6" run r rc=0
  local -a qemu machine_opts=() trace_opts=()
  if [ "$NESTED_L0" = sid ]; then
    run="$(mktemp -d "$l0/tmp/e2e-run.XXXXXX")"
    r="/tmp/$(basename "$run")"
    qemu=(chroot "$l0" qemu-system-aarch64)
  else
    run="$(mktemp -d "$(dirname "$log")/l0-run.XXXXXX")"
    r="$run"
    qemu=("$l0")
    [ "$NESTED_L0" = cmdqv ] && machine_opts=(",x-tegra241-cmdqv=on")
    trace_opts=(-trace 'tegra241_hw_*' -trace smmuv3_cmdq_opcode -D "$log.l0-trace")
  fi
  cp "$kernel" "$run/Image"
  cp "$initrd" "$run/initrd"
  nested_disk "$run/disk.img"
  cp "$run/disk.img" "$run/disk2.img"
  if [ "$NESTED_SHAPE" = two-smmu ]; then
    nested_qemu_two_smmu
  elif [ "$NESTED_SHAPE" = gpu ]; then
    nested_qemu_gpu
  else
    local -a nvme=()
    if [ "$NESTED_SHAPE" = nvme ]; then
      cp "$run/disk.img" "$run/disk3.img"
      nvme=(-drive "if=none,id=disk2,format=raw,file=$r/disk3.img"
        -device "nvme,drive=disk2,serial=e2e-nvme,addr=0x${NESTED_NVME_BDF:8:2},max_ioqpairs=$NESTED_NVME_IOQPAIRS")
    fi
    timeout -k 10 "$tmo" "${qemu[@]}" "${trace_opts[@]}" \
      -M "virt,virtualization=on,gic-version=3,iommu=smmuv3${machine_opts[*]}" -cpu max -smp 2 -m 3072 \
      -nographic -no-reboot -nic none \
      -kernel "$r/Image" -initrd "$r/initrd" \
      -append "console=ttyAMA0 panic=-1 rdinit=/init $append" \
      -drive "if=none,id=disk0,format=raw,file=$r/disk.img" \
      -device "virtio-blk-pci,drive=disk0,addr=0x${NESTED_DISK_BDF:8:2},$NESTED_VIRTIO_OPTS" \
      -device "edu,addr=0x${NESTED_EDU_BDF:8:2},dma_mask=0xffffffffffff" \
      -drive "if=none,id=disk1,format=raw,file=$r/disk2.img" \
      -device "virtio-blk-pci,drive=disk1,addr=0x${NESTED_DISK2_BDF:8:2},$NESTED_VIRTIO_OPTS" \
      "${nvme[@]}" </dev/null 2>&1 | stdbuf -oL tr -d '\r' >"$log" || rc=${PIPESTATUS[0]}
  fi
  local n
  for n in 1 2 3; do
    [ -f "$run/disk${n#1}.img" ] || continue
    grep -a -o 'E2E-PATTERN [ -~]*' "$run/disk${n#1}.img" | sed "s/^/E2E-L0: disk $n has /" >>"$log" || true
  done
  [ "$NESTED_SHAPE" != gpu ] || nested_ivshmem_report "$run/ivshmem.mem" >>"$log"
  rm -rf "$run"
  return "$rc"
}

# nested_qemu_two_smmu: the two-smmu shape's L0 (nested_qemu's locals:
# qemu, r, tmo, log, append, machine_opts, trace_opts, rc). Two arm-smmuv3
# with nesting (stage=nested: S1 + S2, what the machine SMMU of one-smmu
# has), one per root complex, each with a CMD-QV model on the CMD-QV L0;
# edk2 loads L1's kernel and initrd from fw_cfg and hands it ACPI tables.
# (The CMD-QV QEMU runs on this machine: it takes the firmware from the sid
# chroot by its path here.)
nested_qemu_two_smmu() {
  local fw="$NESTED_EDK2"
  [ "$NESTED_L0" = sid ] || fw="$("$NESTED_DIR/setup-l0.sh")$NESTED_EDK2"
  timeout -k 10 "$tmo" "${qemu[@]}" "${trace_opts[@]}" \
    -M "virt,virtualization=on,gic-version=3${machine_opts[*]}" -cpu max -smp 2 -m 3072 \
    -nographic -no-reboot -nic none -bios "$fw" \
    -kernel "$r/Image" -initrd "$r/initrd" \
    -append "console=ttyAMA0 panic=-1 rdinit=/init $append" \
    -device "arm-smmuv3,primary-bus=pcie.0,id=smmu0,$NESTED_SMMU_OPTS" \
    -drive "if=none,id=disk0,format=raw,file=$r/disk.img" \
    -device "virtio-blk-pci,drive=disk0,bus=pcie.0,addr=0x${NESTED_DISK_BDF:8:2},$NESTED_VIRTIO_OPTS" \
    -device "pxb-pcie,id=pcie.1,bus_nr=$((NESTED_PXB_BUS)),bus=pcie.0,addr=0x8" \
    -device "arm-smmuv3,primary-bus=pcie.1,id=smmu1,$NESTED_SMMU_OPTS" \
    -device "pcie-root-port,id=rp1,bus=pcie.1,chassis=1,addr=0x0" \
    -drive "if=none,id=disk1,format=raw,file=$r/disk2.img" \
    -device "virtio-blk-pci,drive=disk1,bus=rp1,$NESTED_VIRTIO_OPTS" \
    </dev/null 2>&1 | stdbuf -oL tr -d '\r' >"$log" || rc=${PIPESTATUS[0]}
}

# nested_qemu_gpu: the gpu shape's L0 (nested_qemu's locals: qemu, run, r,
# tmo, log, append, machine_opts, trace_opts, rc). The ivshmem memory is a
# sparse file of NESTED_IVSHMEM_SIZE: only the pages a guest touches take
# disk space, and the file is removed with the run's directory.
nested_qemu_gpu() {
  truncate -s "$NESTED_IVSHMEM_SIZE" "$run/ivshmem.mem"
  timeout -k 10 "$tmo" "${qemu[@]}" "${trace_opts[@]}" \
    -M "virt,virtualization=on,gic-version=3,iommu=smmuv3,highmem=on,highmem-mmio=on,highmem-mmio-size=$NESTED_HIGHMEM_MMIO_SIZE${machine_opts[*]}" \
    -cpu max -smp 2 -m 3072 \
    -object memory-backend-ram,id=l1mem0,size=1536M -numa node,nodeid=0,cpus=0,memdev=l1mem0 \
    -object memory-backend-ram,id=l1mem1,size=1536M -numa node,nodeid=1,cpus=1,memdev=l1mem1 \
    -numa dist,src=0,dst=1,val=20 \
    -nographic -no-reboot -nic none \
    -kernel "$r/Image" -initrd "$r/initrd" \
    -append "console=ttyAMA0 panic=-1 rdinit=/init $append" \
    -drive "if=none,id=disk0,format=raw,file=$r/disk.img" \
    -device "virtio-blk-pci,drive=disk0,addr=0x${NESTED_DISK_BDF:8:2},$NESTED_VIRTIO_OPTS" \
    -object "memory-backend-file,id=shm0,share=on,size=$NESTED_IVSHMEM_SIZE,mem-path=$r/ivshmem.mem" \
    -device "ivshmem-plain,memdev=shm0,addr=0x${NESTED_IVSHMEM_BDF:8:2}" \
    </dev/null 2>&1 | stdbuf -oL tr -d '\r' >"$log" || rc=${PIPESTATUS[0]}
}

# nested_ivshmem_report FILE: the gpu shape's ivshmem file after the run:
# its size, the KiB the file system allocated for it, and the 8 bytes
# (little-endian, as a guest's 64-bit store leaves them) at each offset of
# NESTED_IVSHMEM_OFFSETS.
nested_ivshmem_report() {
  local file="$1" off
  [ -f "$file" ] || return 0
  echo "E2E-L0: ivshmem file size=$(stat -c %s "$file") allocated-kb=$(du -k "$file" | cut -f1)"
  for off in $NESTED_IVSHMEM_OFFSETS; do
    echo "E2E-L0: ivshmem offset=$off value=0x$(od -A n -t x8 -j $((off)) -N 8 "$file" | tr -d ' ')"
  done
}

# nested_assert: what every nested case needs from L1 (run.sh's helpers).
nested_assert() {
  [ "$NESTED_L0" = cmdqv ] && nested_cmdqv_assert
  expect "E2E-L1: iommu ok" "/dev/iommu missing in L1 (IOMMUFD)"
  local bdf
  if [ "$NESTED_SHAPE" != two-smmu ]; then
    expect "E2E-L1: disk $NESTED_DISK_BDF vda sha256=$NESTED_DISK_SHA256" \
      "L1 did not read the known disk content through virtio-blk before the vfio-pci bind"
  else
    # (ACPI enumerates the pxb's root bridge first: its disk is vda.)
    for bdf in $NESTED_DISK_BDF $NESTED_DISK2_BDF; do
      expect_re "E2E-L1: disk $bdf vd[a-z]+ sha256=$NESTED_DISK_SHA256" \
        "L1 did not read the known content of the disk $bdf through virtio-blk before the vfio-pci bind"
    done
  fi
  for bdf in ${NESTED_VFIO_BDFS//,/ }; do
    expect_re "E2E-L1: vfio $bdf .* driver=vfio-pci cdev=vfio[0-9]+ node=ok" \
      "$bdf is not bound to vfio-pci with a /dev/vfio/devices/vfioN cdev"
  done
}

# nested_cmdqv_assert: with the CMD-QV L0, L1's SMMUv3 driver took the CMD-QV
# (7.2's DT probe) and its own commands ran through VINTF0, counted in the
# model's trace (<console log>.l0-trace).
nested_cmdqv_assert() {
  local l0_trace="$LOG.l0-trace" n_vintf0 n_cfgi n_cmdq
  expect "E2E-L1: cmdqv debugfs=yes" "L1 has no /sys/kernel/debug/iommu/tegra241_cmdqv (CMD-QV not probed)"
  reject "Falling back to standard SMMU CMDQ" "L1's tegra241-cmdqv fell back to the SMMU CMDQ"
  reject "able, STATUS=" "an enable handshake (CMDQV, VINTF or VCMDQ) of L1's driver failed"
  # L1's own kernel messages: its boot (before /init) and the dmesg lines
  # /init prints; an L2 guest's (cmdqv-host provokes one) are not L1's.
  local l1_cmdq_err
  l1_cmdq_err="$(awk '/E2E-L1: init / {init = 1} (!init || /^E2E-L1-DMESG: /) && /CMDQ error/ {print; exit}' "$LOG")"
  [ -z "$l1_cmdq_err" ] || fail "a command of L1's failed in a queue [found: '$l1_cmdq_err']"
  l1_cmdq_err="$(awk '/E2E-L1: init / {init = 1} (!init || /^E2E-L1-DMESG: /) && /CMD_SYNC timeout/ {print; exit}' "$LOG")"
  [ -z "$l1_cmdq_err" ] || fail "a CMD_SYNC of L1's timed out [found: '$l1_cmdq_err']"
  if [ ! -s "$l0_trace" ]; then
    fail "no L0 trace at $l0_trace"
    return
  fi
  expect_trace() { grep -qE -- "$1" "$l0_trace" || fail "$2 [L0 trace: missing /$1/]"; }
  expect_trace "tegra241_hw_config .*en=1" "L1 never enabled the CMD-QV"
  expect_trace "tegra241_hw_vintf_config vintf=0 en=1 vmid=[0-9]+ hyp_own=1" "L1 never enabled VINTF0 host-owned"
  expect_trace "tegra241_hw_vcmdq_base vintf=0 lvcmdq=0 q=0 base=0x[0-9a-f]+ log2size=[0-9]+" "L1 never programmed VINTF0's LVCMDQ0"
  n_vintf0="$(grep -c 'tegra241_hw_cmd vintf=0 ' "$l0_trace" || true)"
  n_cfgi="$(grep -c 'tegra241_hw_cmd vintf=0 .*CFGI_STE' "$l0_trace" || true)"
  n_cmdq="$(grep -c 'smmuv3_cmdq_opcode' "$l0_trace" || true)"
  echo "E2E-L0: tegra241 VINTF0 commands=$n_vintf0 (CFGI_STE=$n_cfgi), SMMU CMDQ commands=$n_cmdq" >>"$LOG"
  [ "$n_cfgi" -gt 0 ] || fail "no CFGI_STE of L1's went through VINTF0 [L0 trace $l0_trace]"
  # VINTF0 is L1's: no error there. A user VINTF's errors are its guest's
  # (cmdqv-host writes an illegal command on purpose) and are the case's to judge.
  grep -q 'tegra241_hw_error vintf=0 ' "$l0_trace" && fail "the model reported a queue error on L1's VINTF0 [$(grep -m1 'tegra241_hw_error vintf=0 ' "$l0_trace")]"
  return 0
}
