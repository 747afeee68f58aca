# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# nested-vmm: our VMM as the L1 user-space VMM on a real (emulated) nested
# SMMUv3. Under sid's QEMU 11.1 the 7.2 L1 has two virtio-blk-pci disks (known
# content) and an edu device on vfio-pci; cloud-hypervisor hands them to the L2
# guest as VFIO-PCI functions:
#   direct   one disk, iommu=off: attached to the IOAS (DMA at GPA); the L2
#            virtio-blk driver reads 15 MiB (checksum), its MSI-X interrupts
#            arrive through irqfds, it writes a pattern L0 finds in the image.
#   smmuv3   both disks behind --vsmmu smmuv3 (iommufd: vIOMMU, two vDEVICEs,
#            nested HWPTs from the L2 SMMU driver's STEs) with iommu.strict=1:
#            every unmap is a trapped TLBI + CMD_SYNC, one IOMMU_HWPT_INVALIDATE
#            each; both disks read and written correctly.
#   reboot   the guest reboots (functions released, reset, rebound), then
#            SIGTERM: a full release again.
#   cmdqv    refused in one sentence naming --vsmmu smmuv3 (no CMD-QV here).
# After every run the functions are back on vfio-pci with their cdevs.
CASE_DESC="nested lane: VFIO-PCI passthrough under sid QEMU 11.1's SMMUv3: iommu=off and --vsmmu smmuv3 (two disks, strict), reads/writes checked in L0, MSI-X via irqfd, reboot + SIGTERM release, the --vsmmu cmdqv refusal"
CASE_DEFAULT=1
CASE_TIMEOUT=900
CASE_QEMU=nested
# The L2 guest kernel (L1 is always the nested 7.2).
CASE_KERNELS=7.2

case_l1_script() {
  cat <<'EOS'
VMM_TIMEOUT=300
IFS=, read -r disk edu disk2 nvme <<EOF2
$E2E_VFIO
EOF2
disk=/sys/bus/pci/devices/$disk
disk2=/sys/bus/pci/devices/$disk2
edu=/sys/bus/pci/devices/$edu
l2="--kernel /l2/Image --initramfs /l2/initrd --cpus boot=1 --memory size=512M --serial tty"
after() {
  for f in "$disk" "$disk2"; do
    echo "E2E-L1: after $1 $(basename "$f") vfio-dev=$(ls "$f/vfio-dev" | xargs) driver=$(basename "$(readlink "$f/driver")")"
  done
}
# shellcheck disable=SC2086
vmm direct -v $l2 --cmdline "console=ttyAMA0 panic=-1 e2e_step=direct" \
  --device "path=$disk"
after direct
# shellcheck disable=SC2086
vmm smmuv3 -v $l2 --cmdline "console=ttyAMA0 earlycon panic=-1 iommu.strict=1 e2e_step=smmuv3" \
  --vsmmu smmuv3 --device "path=$disk,iommu=on" --device "path=$disk2,iommu=on"
dmesg | grep -iE 'smmu|vfio|iommu' | tail -20 | sed 's/^/E2E-L1-DMESG: /'
after smmuv3
# edu behind the vSMMU: DMA lands under a bypass STE, faults (vEVENTQ ->
# the guest's event queue, with the vSID) in an empty DMA domain, and is
# blocked under the abort STE the guest's driver leaves on removal.
# shellcheck disable=SC2086
vmm edu -v $l2 --cmdline "console=ttyAMA0 panic=-1 mem=448M e2e_step=edu" \
  --vsmmu smmuv3 --device "path=$edu,iommu=on"
# shellcheck disable=SC2086
vmm_until reboot "E2E-L2: booted" 2 -v $l2 \
  --cmdline "console=ttyAMA0 panic=-1 iommu.strict=1 e2e_step=reboot" \
  --vsmmu smmuv3 --device "path=$disk,iommu=on"
after reboot
# shellcheck disable=SC2086
vmm cmdqv -v $l2 --cmdline "console=ttyAMA0 panic=-1" \
  --vsmmu cmdqv --device "path=$disk,iommu=on"
after cmdqv
EOS
}

case_l2_script() {
  nested_l2_disk_helpers
  cat <<'EOS'
step=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^e2e_step=//p')
for d in /sys/bus/pci/devices/*; do
  [ -e "$d" ] || continue
  echo "E2E-L2: pci $(basename "$d") $(cat "$d/vendor"):$(cat "$d/device") group=$(basename "$(readlink "$d/iommu_group" 2>/dev/null)") domain=$(cat "$d/iommu_group/type" 2>/dev/null)"
done
# Interrupts of the virtio functions (one vCPU: column 2).
irqs() { awk '/virtio/ {s += $2} END {print s + 0}' /proc/interrupts; }
if [ "$step" = edu ]; then
  d=/sys/bus/pci/devices/0000:00:01.0
  bar=$(($(head -1 "$d/resource" | cut -d' ' -f1)))
  # Memory Space + Bus Master (no driver does it for edu).
  printf '\006' | dd of="$d/config" bs=1 seek=4 conv=notrunc 2>/dev/null
  devmem $((bar + 4)) 32 0x12345678
  echo "E2E-L2: edu id=$(devmem "$bar" 32) liveness=$(devmem $((bar + 4)) 32)"
  # Two pages past mem=448M: guest RAM Linux does not use.
  a=0x5c000000 b=0x5c001000
  dma() { # SRC DST CMD (1: RAM -> edu buffer, 3: edu buffer -> RAM)
    devmem $((bar + 0x80)) 64 "$1"
    devmem $((bar + 0x88)) 64 "$2"
    devmem $((bar + 0x90)) 64 4
    devmem $((bar + 0x98)) 64 "$3"
    i=0
    while [ $(($(devmem $((bar + 0x98)) 32) & 1)) = 1 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  }
  devmem $a 32 0xcafef00d
  devmem $b 32 0
  echo identity >"$d/iommu_group/type"
  dma $a 0x40000 1
  dma 0x40000 $b 3
  echo "E2E-L2: edu bypass b=$(devmem $b 32)"
  devmem $b 32 0
  echo DMA >"$d/iommu_group/type"
  dma 0x40000 $b 3
  sleep 1
  echo "E2E-L2: edu dma-domain b=$(devmem $b 32)"
  dmesg | grep -iE 'arm-smmu-v3.*(event|F_TRANSLATION)' | tail -4 | sed 's/^/E2E-L2-EVT: /'
  echo 1 >"$d/remove"
  dma 0x40000 $b 3
  echo "E2E-L2: edu abort b=$(devmem $b 32)"
  exit 0
fi
k=0
[ "$step" = smmuv3 ] && k=2
[ "$step" = reboot ] && k=4
for b in /sys/block/vd*; do
  [ -e "$b" ] || continue
  n=$(basename "$b")
  pci=$(disk_pci "$b")
  # One completion interrupt per few requests instead of a handful for the
  # whole read.
  small_requests "$b"
  # The first step reads the whole disk (still as L0 wrote it); later ones
  # the 15 MiB no step writes into.
  blocks=3840
  [ "$step" = direct ] && blocks=4096
  before=$(irqs)
  sum=$(dd if="/dev/$n" bs=4096 count=$blocks 2>/dev/null | sha256sum | cut -d' ' -f1)
  after=$(irqs)
  echo "E2E-L2: read $n pci=$pci blocks=$blocks sha256=$sum irqs=$before..$after"
  # A pattern in the last MiB (never hashed), one 4 KiB block per step/disk.
  printf 'E2E-PATTERN step=%s pci=%s\n' "$step" "$pci" |
    dd of="/dev/$n" bs=4096 seek=$((3840 + k)) conv=sync,fsync 2>/dev/null
  echo 3 >/proc/sys/vm/drop_caches
  back=$(dd if="/dev/$n" bs=4096 skip=$((3840 + k)) count=1 2>/dev/null | tr -d '\0' | head -1)
  echo "E2E-L2: wrote $n: $back"
  k=$((k + 1))
done
grep -E 'MSI' /proc/interrupts | sed 's/  */ /g; s/^/E2E-L2-IRQ: /'
if [ "$step" = reboot ]; then
  # Every boot reboots after a pause, so L1 (polling once a second) sends
  # SIGTERM during the second boot.
  sleep 3
  echo "E2E-L2: rebooting"
  reboot -f
  sleep 10
fi
EOS
}

case_assert() {
  local sum
  sum="$(nested_disk_sha $((15 << 20)))"
  # direct: iommu=off, no vSMMU.
  step_expect_event direct "vfio:device-bound guest_bdf=0000:00:01.0 iommu=off" "the iommu=off function was not bound and attached to the IOAS"
  step_expect_re direct "E2E-L2: read vda pci=0000:00:01.0 blocks=4096 sha256=$NESTED_DISK_SHA256 " "the L2 guest did not read the whole disk's known content (iommu=off)"
  step_expect_re direct "E2E-L2: wrote vda: E2E-PATTERN step=direct pci=0000:00:01.0" "the L2 guest's write did not read back (iommu=off)"
  step_expect_re direct "E2E-L2-IRQ: .*ITS-PCI-MSIX.*virtio" "the disk's interrupts are not MSI-X through the ITS"
  expect "E2E-L0: disk 1 has E2E-PATTERN step=direct pci=0000:00:01.0" "L0 did not find the iommu=off write in the disk image"
  # smmuv3: two functions behind one vSMMU, strict invalidation.
  step_expect_event smmuv3 "vsmmu:vdevice id=vsmmu0 vsid=0x8" "no vDEVICE for the first disk at vSID 0x8"
  step_expect_event smmuv3 "vsmmu:vdevice id=vsmmu0 vsid=0x10" "no vDEVICE for the second disk at vSID 0x10"
  step_expect_event smmuv3 "vsmmu:viommu-ready id=vsmmu0 kind=smmuv3 backend=iommufd vdevices=2" "no vIOMMU over both functions"
  expect_re "E2E-L2-DMESG: arm-smmu-v3 .*allocated [0-9]+ entries for cmdq" "the L2 arm-smmu-v3 driver did not probe the vSMMU"
  step_expect_event smmuv3 "vsmmu:ste-installed vsid=0x8" "the L2 SMMU driver's STE for the disk did not become a nested HWPT"
  step_expect_re smmuv3 "E2E-L2: read vda pci=0000:00:01.0 blocks=3840 sha256=$sum " "the L2 guest did not read the first disk through the vSMMU"
  step_expect_re smmuv3 "E2E-L2: read vdb pci=0000:00:02.0 blocks=3840 sha256=$sum " "the L2 guest did not read the second disk through the vSMMU"
  step_expect_re smmuv3 "E2E-L2: wrote vdb: E2E-PATTERN step=smmuv3 pci=0000:00:02.0" "the second disk's write did not read back"
  expect "E2E-L0: disk 1 has E2E-PATTERN step=smmuv3 pci=0000:00:01.0" "L0 did not find the write to the first disk"
  expect "E2E-L0: disk 2 has E2E-PATTERN step=smmuv3 pci=0000:00:02.0" "L0 did not find the write to the second disk"
  # Backend calls per CMD_SYNC: each trapped sync after invalidations is one
  # IOMMU_HWPT_INVALIDATE (never more), and there were many.
  # (The vSMMU's vm.counters when the VM stopped: the vm:counters event.)
  local syncs calls
  syncs="$(ev_prop smmuv3 "vm:counters id=vsmmu0" trapped_syncs)"
  calls="$(ev_prop smmuv3 "vm:counters id=vsmmu0" backend_calls.invalidate)"
  echo "  nested-vmm smmuv3: trapped_syncs=$syncs invalidate_calls=$calls"
  if [[ "$syncs" =~ ^[0-9]+$ && "$calls" =~ ^[0-9]+$ ]]; then
    ((calls >= 100)) || fail "only $calls IOMMU_HWPT_INVALIDATE calls for two 15 MiB reads with iommu.strict=1"
    ((calls <= syncs)) || fail "$calls IOMMU_HWPT_INVALIDATE calls for $syncs CMD_SYNCs: more than one per sync"
  else
    fail "no vm:counters event for vsmmu0 in step smmuv3"
  fi
  # MSI-X through irqfds: far more interrupts than trapped BAR accesses.
  # (4096 requests of 4 KiB in this step.) Not on a 64 KiB-page L1
  # (nested-64k, NV_IRQS_OVER_TRAPS=0): there the disk's 16 KiB notify BAR is
  # smaller than a host page and traps, one exit per request; nested-64k
  # checks the same on an NVMe whose doorbells are mapped.
  [ "${NV_IRQS_OVER_TRAPS:-1}" = 1 ] && nv_irqs_over_traps direct vda disk
  nv_edu_and_teardown_assert
}

# nv_irqs_over_traps STEP DISK WHAT: in STEP, the interrupts the L2 counted
# while reading DISK (its "E2E-L2: read DISK ... irqs=A..B" line) are many
# (>= 100 for 4,096 requests) and outnumber every trapped BAR access of the
# run (the VMM's bar_traps): WHAT's interrupts and doorbells are exit-free.
nv_irqs_over_traps() {
  local step="$1" disk="$2" what="$3" irq_range traps
  irq_range="$(section "$step" | grep -oE "E2E-L2: read $disk .* irqs=[0-9]+\.\.[0-9]+" | grep -oE '[0-9]+\.\.[0-9]+$')"
  traps="$(section "$step" | grep -oE 'bar_traps=[0-9]+' | tail -1 | cut -d= -f2)"
  echo "  $step ($what): interrupts during the read ${irq_range:-?}, trapped BAR accesses in the whole run ${traps:-?}"
  if [[ "$irq_range" =~ ^([0-9]+)\.\.([0-9]+)$ ]] && [ -n "$traps" ]; then
    local n=$((BASH_REMATCH[2] - BASH_REMATCH[1]))
    ((n >= 100)) || fail "only $n $what interrupts during a 16 MiB read in 4 KiB requests"
    ((n > traps)) || fail "$n $what interrupts but $traps trapped BAR accesses: interrupts and doorbells are not exit-free"
  else
    fail "no $what interrupt counts or BAR trap counter in step $step"
  fi
}

nv_edu_and_teardown_assert() {
  local sum
  sum="$(nested_disk_sha $((15 << 20)))"
  # edu: usable (BAR mapped), DMA through a bypass STE, a fault with the vSID
  # in an empty DMA domain, nothing through the abort STE.
  step_expect_re edu "E2E-L2: edu id=0x010000ED liveness=0xEDCBA987" "edu's registers are not reachable through its BAR"
  step_expect_re edu "E2E-L2: edu bypass b=0xCAFEF00D" "edu's DMA did not land under the bypass STE"
  step_expect_re edu "E2E-L2: edu dma-domain b=0x00000000" "edu's DMA landed in a DMA domain with no mapping"
  step_expect_event edu "vsmmu:guest-error kind=F_TRANSLATION vsid=0x8 address=0x5c001000" "the translation fault did not come back from the vEVENTQ with the vSID"
  step_expect_re edu "E2E-L2-EVT: .*(F_TRANSLATION|event 0x10)" "the L2 SMMU driver did not see the fault in its event queue"
  step_expect_event edu "vsmmu:ste-installed vsid=0x8 config=abort" "the removal did not leave an abort STE"
  step_expect_re edu "E2E-L2: edu abort b=0x00000000" "edu's DMA went through an abort STE"
  expect "E2E-L1: vmm exit=0 step=edu " "the edu run did not exit 0"
  # Teardown: functions quiesced (reset), then the vIOMMU, then the IOAS.
  in_order smmuv3 "the teardown did not follow the kernel's order" \
    "@vfio:device-released" "@vsmmu:viommu-released" "@vm:shutdown reason=poweroff"
  [ "$(ev_count smmuv3 vfio:device-released)" = 2 ] || fail "not both functions were released [step smmuv3]"
  # (No event names the IOAS: its release is part of the teardown that
  # vm:shutdown ends.)
  step_expect_re smmuv3 "passthrough functions unbound, IOAS destroyed" "the IOAS was not destroyed"
  step_reject_re smmuv3 "^\\[[^]]* ERROR " "the VMM logged an error"
  step_reject_re direct "^\\[[^]]* ERROR " "the VMM logged an error"
  expect "E2E-L1: vmm exit=0 step=direct " "the iommu=off run did not exit 0"
  expect "E2E-L1: vmm exit=0 step=smmuv3 " "the --vsmmu smmuv3 run did not exit 0"
  # Reboot: released and rebuilt; SIGTERM: released again; the disk still reads.
  in_order reboot "the reboot did not release and rebuild the functions" \
    "E2E-L2: booted" "E2E-L2: rebooting" "@vm:rebooting cause=guest" "@vfio:device-released" \
    "@vsmmu:viommu-released" "@vm:booting boot=2" "@vfio:device-bound" "@vm:rebooted boot=2" "E2E-L2: booted" \
    "@vfio:device-released" "@vsmmu:viommu-released" "@vm:shutdown reason=signal signal=15"
  step_expect_re reboot "E2E-L2: read vda pci=0000:00:01.0 blocks=3840 sha256=$sum " "the disk did not read correctly after the first runs"
  step_reject_re reboot "panicked|RUST_BACKTRACE" "the VMM panicked"
  # --vsmmu cmdqv on an SMMU without CMD-QV: one sentence, naming the way out.
  expect_re "E2E-L1: vmm exit=[1-9][0-9]* step=cmdqv " "cloud-hypervisor --vsmmu cmdqv did not fail on an SMMU without CMD-QV"
  step_expect_re cmdqv "^cloud-hypervisor: .*has no NVIDIA Tegra241 CMD-QV.*use --vsmmu smmuv3" "the cmdqv refusal is not the one-sentence error naming --vsmmu smmuv3"
  local step
  for step in direct smmuv3 reboot cmdqv; do
    expect_re "E2E-L1: after $step 0000:00:02.0 vfio-dev=vfio[0-9]+ driver=vfio-pci" "the first disk is not back on vfio-pci after $step"
    expect_re "E2E-L1: after $step 0000:00:04.0 vfio-dev=vfio[0-9]+ driver=vfio-pci" "the second disk is not back on vfio-pci after $step"
  done
}
