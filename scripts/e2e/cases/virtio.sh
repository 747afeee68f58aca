# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# virtio: inside L1, cloud-hypervisor boots the L2 guest with two virtio-blk
# disks (one read-write with known content, one readonly=on), a
# virtio-console into a file and a virtio-net NIC over a tap (vmtap0,
# 192.168.249.1/24 on L1's side), beside a vSMMUv3 + CMD-QV (emulated
# backend) with a test endpoint behind it. The guest's virtio-pci,
# virtio_blk, virtio_console and virtio_net drivers must bind; the virtio
# functions must sit outside the vSMMU; a write the guest syncs must be in
# the image after the VM stops; the readonly disk must refuse writes;
# /dev/hvc0 must reach the sink; a 256 KiB file must cross TCP both ways
# (busybox nc, L2 -> L1 then L1 -> L2) with its sha256 intact. The NIC has
# two queue pairs (num_queues=4: MQ + the control queue; the guest's two
# vCPUs make Linux enable both) and the tap's offloads (checksum, TSO, UFO,
# mergeable receive buffers), so the transfers go through TSO both ways.
CASE_DESC="L2 Linux reads, writes and syncs a virtio-blk disk, is refused on a readonly one, writes /dev/hvc0, moves a file both ways over virtio-net; beside a vSMMU + CMD-QV"
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
# virtio-net: L1's side of two TCP transfers, in the background because the
# VMM runs in the foreground until L2 powers off. Once the VMM has created
# vmtap0: receive L2's file on port 5001, then send L1's to L2's port 5002
# (retried: L2 listens once its own send is done). Every wait is bounded.
# A listener's stdin is a FIFO opened read-write: it never reads EOF, so nc
# never half-closes before the peer has sent everything.
yes net-e2e-l1-to-l2 | head -c 262144 >/tmp/net-l1.bin
mkfifo /tmp/net-hold
(
  i=0
  while [ ! -e /sys/class/net/vmtap0 ] && [ "$i" -lt 120 ]; do sleep 1; i=$((i + 1)); done
  echo "E2E-L1: net vmtap0 after ${i}s: $(ip -4 addr show vmtap0 2>&1 | grep -o 'inet [0-9./]*')"
  echo "E2E-L1: vmtap0 tun_flags=$(cat /sys/class/net/vmtap0/tun_flags 2>&1)"
  timeout 180 nc -l -p 5001 >/tmp/net-from-l2.bin 0<>/tmp/net-hold
  echo "E2E-L1: net from L2 rc=$? bytes=$(wc -c </tmp/net-from-l2.bin) sha256=$(sha256sum /tmp/net-from-l2.bin | cut -d' ' -f1)"
  # The tap's queues attached now (the guest's driver has set its pairs).
  echo "E2E-L1: vmtap0 queues=$(ls /sys/class/net/vmtap0/queues | xargs)"
  i=0
  until timeout 30 nc 192.168.249.2 5002 </tmp/net-l1.bin; do
    i=$((i + 1)); [ "$i" -ge 20 ] && break; sleep 1
  done
  echo "E2E-L1: net to L2 tries=$((i + 1))"
  echo "E2E-L1: net side done"
) >/tmp/net-l1.log 2>&1 &
vmm boot -v --kernel /l2/Image --initramfs /l2/initrd \
  --cmdline "console=ttyAMA0 earlycon panic=-1" \
  --cpus boot=2 --memory size=512M --serial tty \
  --vsmmu cmdqv,backend=emulated --test-device id=dma0 \
  --disk path=/tmp/disk.img,id=root,serial=e2e-root \
  --disk path=/tmp/ro.img,readonly=on,id=ro,num_queues=2 \
  --console file=/tmp/hvc0.log \
  --net tap=vmtap0,ip=192.168.249.1,mask=255.255.255.0,mac=52:54:00:e2:e0:01,id=net0,num_queues=4
# L1's side of the transfers (it ends on its own; 15 s more at most).
i=0
while ! grep -q "E2E-L1: net side done" /tmp/net-l1.log && [ "$i" -lt 15 ]; do sleep 1; i=$((i + 1)); done
cat /tmp/net-l1.log
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
# virtio-net: eth0 up at 192.168.249.2/24, L2's file to L1 (port 5001,
# retried until L1 listens), then L1's file from L1 (port 5002).
nic=$(basename "$(readlink -f /sys/class/net/eth0/device/..)")
group=none
[ -e /sys/bus/pci/devices/$nic/iommu_group ] && group=$(basename "$(readlink /sys/bus/pci/devices/$nic/iommu_group)")
echo "E2E-L2: eth0 pci=$nic mac=$(cat /sys/class/net/eth0/address) driver=$(basename "$(readlink /sys/class/net/eth0/device/driver)") iommu_group=$group"
echo "E2E-L2: eth0 features=$(cat /sys/class/net/eth0/device/features) queues=$(ls /sys/class/net/eth0/queues | xargs)"
ip link set eth0 up
ip addr add 192.168.249.2/24 dev eth0
yes net-e2e-l2-to-l1 | head -c 262144 >/tmp/net-l2.bin
i=0
until timeout 30 nc 192.168.249.1 5001 </tmp/net-l2.bin; do
  i=$((i + 1)); [ "$i" -ge 60 ] && break; sleep 1
done
echo "E2E-L2: net to L1 tries=$((i + 1))"
mkfifo /tmp/net-hold
timeout 120 nc -l -p 5002 >/tmp/net-from-l1.bin 0<>/tmp/net-hold
echo "E2E-L2: net from L1 rc=$? bytes=$(wc -c </tmp/net-from-l1.bin) sha256=$(sha256sum /tmp/net-from-l1.bin | cut -d' ' -f1)"
echo "E2E-L2: eth0 $(ip -s link show eth0 | tr -s ' \n' ' ')"
dev=/sys/bus/pci/devices/0000:00:01.0
echo dma_map_benchmark > $dev/driver_override
echo 0000:00:01.0 > /sys/bus/pci/drivers/dma_map_benchmark/bind
echo "E2E-L2: test endpoint group=$(basename "$(readlink $dev/iommu_group)") type=$(cat $dev/iommu_group/type)"
dmesg | grep -iE "virtio|vd[ab]|hvc|eth0" | sed 's/^/E2E-L2-DMESG: /'
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
  # virtio-net: the NIC outside the vSMMU with the MAC given; each file
  # arrived whole (the sha256 of what the sender made, computed here).
  expect_re "E2E-L2: eth0 pci=0000:00:05.0 mac=52:54:00:e2:e0:01 driver=virtio_net iommu_group=none" "eth0 is not the virtio-net NIC at 00:05.0 with mac=52:54:00:e2:e0:01 outside the vSMMU"
  expect "E2E-L1: net vmtap0 after" "the VMM never created vmtap0 in L1"
  # Two queue pairs: a multi-queue tap (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR|
  # IFF_MULTI_QUEUE), two rx/tx queues in the guest, both enabled by the
  # guest's VQ_PAIRS_SET; the offloads the driver accepted (feature bits,
  # character N = bit N: 0 CSUM, 1 GUEST_CSUM, 7 GUEST_TSO4, 8 GUEST_TSO6,
  # 11 HOST_TSO4, 12 HOST_TSO6, 15 MRG_RXBUF, 17 CTRL_VQ, 22 MQ,
  # 29 RING_EVENT_IDX, 32 VERSION_1).
  expect "E2E-L1: vmtap0 tun_flags=0x5102" "vmtap0 is not a multi-queue tap with a virtio-net header"
  expect_re "E2E-L2: eth0 features=[01]+ queues=rx-0 rx-1 tx-0 tx-1$" "the guest does not see two queue pairs"
  local feat bit
  feat="$(sed -n 's/^E2E-L2: eth0 features=\([01]*\) .*/\1/p' "$LOG" | head -1)"
  for bit in 0 1 7 8 11 12 15 17 22 29 32; do
    [ "${feat:$bit:1}" = 1 ] || fail "the guest's virtio_net did not negotiate feature bit $bit (features=$feat)"
  done
  # Both pairs enabled by the guest: both of the tap's queues attached.
  expect "E2E-L1: vmtap0 queues=rx-0 rx-1 tx-0 tx-1" "the guest did not enable both queue pairs (a tap queue stayed detached)"
  local l2_sha l1_sha
  # (yes dies of SIGPIPE when head is done: not an error under pipefail.)
  l2_sha=$({ yes net-e2e-l2-to-l1 || true; } | head -c 262144 | sha256sum | cut -d' ' -f1)
  l1_sha=$({ yes net-e2e-l1-to-l2 || true; } | head -c 262144 | sha256sum | cut -d' ' -f1)
  expect "E2E-L1: net from L2 rc=0 bytes=262144 sha256=$l2_sha" "L2's file did not reach L1 whole over virtio-net (TCP, L2 -> L1)"
  expect "E2E-L2: net from L1 rc=0 bytes=262144 sha256=$l1_sha" "L1's file did not reach L2 whole over virtio-net (TCP, L1 -> L2)"
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
  # The NIC's counters at stop: each direction carried at least the file.
  step_expect_event boot "vm:counters id=net0" "no counters event for the NIC at stop"
  [ "$(ev_prop boot "vm:counters id=net0" tx_bytes)" -ge 262144 ] 2>/dev/null || fail "the NIC's tx_bytes counter ($(ev_prop boot "vm:counters id=net0" tx_bytes)) is below the 256 KiB the guest sent"
  [ "$(ev_prop boot "vm:counters id=net0" rx_bytes)" -ge 262144 ] 2>/dev/null || fail "the NIC's rx_bytes counter ($(ev_prop boot "vm:counters id=net0" rx_bytes)) is below the 256 KiB the guest received"
  [ "$(ev_prop boot "vm:counters id=net0" rx_frames)" -ge 4 ] 2>/dev/null || fail "the NIC's rx_frames counter did not count the frames (a 256 KiB transfer is 4 or more frames even as 64 KiB GSO frames)"
}
