# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
CASE_DESC="nested lane: QEMU 11.1 (accel SMMUv3 over iommufd) beside ours on the same VFIO disk"
CASE_DEFAULT=0
CASE_TIMEOUT=900
CASE_QEMU=nested
CASE_KERNELS=7.2

case_prepare() {
  local payload
  payload="$(timed "peer-host: qemu-system-aarch64 payload (arm64)" "$E2E_DIR/peer/build-qemu.sh")" || return 1
  L1_EXTRA+=("$payload:/")
  L1_EXTRA+=("$L0_CHROOT/usr/share/qemu-efi-aarch64/QEMU_EFI.fd:/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")
}

case_l1_script() {
  cat <<'EOS'
VMM_TIMEOUT=120
qemu=/usr/bin/qemu-system-aarch64
echo "E2E-L1: peer $($qemu --version | head -1)"
$qemu -device arm-smmuv3,help 2>&1 | sed 's/^/E2E-L1-HELP: /'
$qemu -trace help 2>&1 | grep -E 'iommufd|smmuv3_cmdq|smmuv3_accel' | head -30 | sed 's/^/E2E-L1-TRACE: /'
disk=$(echo "$E2E_VFIO" | cut -d, -f1)
vmm_measured qemu-host $qemu -M virt,gic-version=3 -accel kvm -cpu host -smp 1 -m 512M \
  -nographic -nic none -no-reboot -bios /usr/share/qemu-efi-aarch64/QEMU_EFI.fd \
  -trace iommufd_backend_invalidate_cache -trace smmuv3_cmdq_opcode -trace smmuv3_accel* -D /tmp/qemu-trace.log -kernel /l2/Image -initrd /l2/initrd \
  -append "console=ttyAMA0 panic=-1 iommu.strict=1" \
  -object iommufd,id=ifd0 -device arm-smmuv3,primary-bus=pcie.0,accel=on,id=smmu0 \
  -device vfio-pci,host=$disk,iommufd=ifd0
ls -la /tmp/qemu-trace.log
head -20 /tmp/qemu-trace.log | sed 's/^/E2E-L1-QT: /'
grep -v smmuv3_cmdq_opcode /tmp/qemu-trace.log | head -20 | sed 's/^/E2E-L1-QT: /'
echo "E2E-L1: trace lines $(wc -l < /tmp/qemu-trace.log) inv=$(grep -c iommufd_backend_invalidate_cache /tmp/qemu-trace.log) sync=$(grep -c 'CMD_SYNC' /tmp/qemu-trace.log)"
tail -5 /tmp/qemu-trace.log | sed 's/^/E2E-L1-QT: /'
EOS
}

case_l2_script() {
  cat <<'EOS'
dmesg | grep -iE 'smmu|iommu|virtio' | sed 's/^/E2E-L2-DMESG: /'
for b in /sys/block/vd*; do
  [ -e "$b" ] || continue
  n=$(basename "$b")
  echo 4 >"$b/queue/max_sectors_kb"
  echo 0 >"$b/queue/read_ahead_kb"
  sum=$(dd if="/dev/$n" bs=4096 count=3840 2>/dev/null | sha256sum | cut -d' ' -f1)
  echo "E2E-L2: read $n sha256=$sum"
done
EOS
}

case_assert() {
  :
}
