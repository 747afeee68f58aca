# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# virtio: inside L1, cloud-hypervisor boots the L2 guest with two virtio-blk
# disks (one read-write with known content, one readonly=on) and a
# virtio-console into a file, beside a vSMMUv3 + CMD-QV (emulated backend)
# with a test endpoint behind it. The guest's virtio-pci, virtio_blk and
# virtio_console drivers must bind; the virtio functions must sit outside
# the vSMMU; a write the guest syncs must be in the image after the VM
# stops; the readonly disk must refuse writes; /dev/hvc0 must reach the sink.
CASE_DESC="L2 Linux reads, writes and syncs a virtio-blk disk, is refused on a readonly one, writes /dev/hvc0; beside a vSMMU + CMD-QV"
CASE_DEFAULT=1
CASE_TIMEOUT=420

case_l1_script() {
  cat <<'EOS'
# 4 MiB images: the first MiB of disk.img is a known pattern (the L2 makes
# the same one and compares checksums); ro.img is zeroes.
dd if=/dev/zero of=/tmp/disk.img bs=1M count=4 2>/dev/null
yes virtio-e2e | head -c 1048576 | dd of=/tmp/disk.img conv=notrunc 2>/dev/null
dd if=/dev/zero of=/tmp/ro.img bs=1M count=4 2>/dev/null
echo "E2E-L1: disk.img md5 $(head -c 1048576 /tmp/disk.img | md5sum | cut -d' ' -f1)"
vmm boot -v --kernel /l2/Image --initramfs /l2/initrd \
  --cmdline "console=ttyAMA0 earlycon panic=-1" \
  --cpus boot=2 --memory size=512M --serial tty \
  --vsmmu cmdqv,backend=emulated --test-device id=dma0 \
  --disk path=/tmp/disk.img,id=root,serial=e2e-root \
  --disk path=/tmp/ro.img,readonly=on,id=ro,num_queues=2 \
  --console file=/tmp/hvc0.log
# What the guest wrote, read back from the image and the console sink.
echo "E2E-L1: disk.img sector 4096: $(dd if=/tmp/disk.img bs=512 skip=4096 count=1 2>/dev/null | head -c 17)"
echo "E2E-L1: ro.img sector 0 md5 $(dd if=/tmp/ro.img bs=512 count=1 2>/dev/null | md5sum | cut -d' ' -f1)"
grep E2E-HVC0 /tmp/hvc0.log | sed 's/^/E2E-L1: hvc0 sink: /'
EOS
}

case_l2_script() {
  cat <<'EOS'
for d in vda vdb; do
  pci=$(basename "$(readlink -f /sys/block/$d/device/..)")
  group=none
  [ -e /sys/bus/pci/devices/$pci/iommu_group ] && group=$(basename "$(readlink /sys/bus/pci/devices/$pci/iommu_group)")
  echo "E2E-L2: $d pci=$pci sectors=$(cat /sys/block/$d/size) ro=$(cat /sys/block/$d/ro) serial=$(cat /sys/block/$d/serial 2>/dev/null) iommu_group=$group"
done
want=$(yes virtio-e2e | head -c 1048576 | md5sum | cut -d' ' -f1)
got=$(head -c 1048576 /dev/vda | md5sum | cut -d' ' -f1)
if [ "$want" = "$got" ]; then echo "E2E-L2: vda checksum ok $got"; else echo "E2E-L2: vda checksum BAD want=$want got=$got"; fi
printf 'E2E-WRITTEN-BY-L2' > /tmp/blk
dd if=/tmp/blk of=/dev/vda bs=512 seek=4096 conv=sync,fsync 2>/tmp/err
echo "E2E-L2: vda write rc=$? $(tr '\n' ' ' </tmp/err)"
sync
dd if=/tmp/blk of=/dev/vdb bs=512 count=1 conv=sync,fsync 2>/tmp/err
echo "E2E-L2: vdb write rc=$? $(tr '\n' ' ' </tmp/err)"
echo "E2E-HVC0-HELLO from the L2 guest" > /dev/hvc0
echo "E2E-L2: hvc0 write rc=$?"
dev=/sys/bus/pci/devices/0000:00:01.0
echo dma_map_benchmark > $dev/driver_override
echo 0000:00:01.0 > /sys/bus/pci/drivers/dma_map_benchmark/bind
echo "E2E-L2: test endpoint group=$(basename "$(readlink $dev/iommu_group)") type=$(cat $dev/iommu_group/type)"
dmesg | grep -iE "virtio|vd[ab]|hvc" | sed 's/^/E2E-L2-DMESG: /'
EOS
}

case_assert() {
  if ! has "E2E-L2: booted"; then
    fail "the L2 guest never reached /init ($(grep -o 'E2E-L1: vmm exit=[0-9]* step=boot' "$LOG" | head -1)); see the L2 console in the log"
    return
  fi
  # Both disks, as the guest's virtio_blk sees them; neither behind the vSMMU.
  expect_re "E2E-L2: vda pci=0000:00:02.0 sectors=8192 ro=0 serial=e2e-root iommu_group=none" "the read-write disk is not /dev/vda at 00:02.0 with 8192 sectors outside the vSMMU"
  expect_re "E2E-L2: vdb pci=0000:00:03.0 sectors=8192 ro=1 serial=ro iommu_group=none" "the readonly disk is not a read-only /dev/vdb at 00:03.0 outside the vSMMU"
  expect "E2E-L2: vda checksum ok" "the guest read other bytes from /dev/vda than the image holds"
  expect "E2E-L2: vda write rc=0 " "the guest's write + fsync on /dev/vda failed"
  expect_re "E2E-L2: vdb write rc=[1-9].*(Read-only|I/O error|Operation not permitted|Permission denied)" "a write to the readonly disk did not fail (EROFS, EIO or EACCES, as the kernel chooses)"
  expect "E2E-L2: hvc0 write rc=0" "the guest could not write /dev/hvc0 (virtio_console not bound?)"
  # The test endpoint still has its DMA domain behind the vSMMU.
  expect_re "E2E-L2: test endpoint group=[0-9]+ type=DMA" "the test endpoint lost its DMA domain behind the vSMMU"
  expect "E2E-L2: done" "the L2 guest did not finish its /init"
  expect "E2E-L1: vmm exit=0 step=boot " "cloud-hypervisor did not exit 0 after the L2 guest powered off"
  # After the VM stopped: the synced block is in the image, the readonly
  # image is untouched (all zeroes), the console line reached the file.
  expect "E2E-L1: disk.img sector 4096: E2E-WRITTEN-BY-L2" "the block the guest wrote and synced is not in disk.img"
  expect "E2E-L1: ro.img sector 0 md5 bf619eac0cdf3f68d496ea9344137e8b" "the readonly image changed"
  expect "E2E-L1: hvc0 sink: E2E-HVC0-HELLO from the L2 guest" "what the guest wrote to /dev/hvc0 did not reach --console file="
  # The VMM side: only the test endpoint is a vDEVICE of the vSMMU; the
  # disks' counters at stop show the guest's reads and its write.
  step_expect_event boot "vsmmu:viommu-ready id=vsmmu0 kind=cmdqv backend=emulated vdevices=1" "the vSMMU did not come up with exactly the test endpoint"
  step_reject_event boot "vsmmu:vdevice id=vsmmu0 device=root" "a virtio disk was registered behind the vSMMU"
  step_expect_event boot "vm:counters id=root" "no counters event for the disk at stop"
  [ "$(ev_prop boot "vm:counters id=root" write_ops)" -ge 1 ] 2>/dev/null || fail "the disk's write_ops counter did not count the guest's write"
  [ "$(ev_prop boot "vm:counters id=root" read_bytes)" -ge 1048576 ] 2>/dev/null || fail "the disk's read_bytes counter did not count the guest's 1 MiB read"
  [ "$(ev_prop boot "vm:counters id=ro" write_ops)" = 0 ] || fail "the readonly disk counted a write"
}
