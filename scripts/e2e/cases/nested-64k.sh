# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# nested-64k: the nested-vmm steps on a 64 KiB-page L1 (Grace's page size),
# plus an NVMe whose MSI-X table shares BAR0 with mappable space.
#
# L1 is the nested 7.2 build with CONFIG_ARM64_64K_PAGES=y
# (nested/l1-64k.config, CASE_NESTED_L1=64k); L2 keeps 4 KiB pages. L0's
# shape is nested/l0.sh's "nvme": one-smmu (two virtio-blk disks, edu) plus
# QEMU's nvme at 00:05.0, whose 128 KiB BAR0 holds the registers and
# doorbells in its first 64 KiB page and the MSI-X table (0x11008) and PBA
# in its second. Steps:
#   direct, smmuv3, edu, reboot, cmdqv   nested-vmm's, asserted as there,
#        except "more interrupts than trapped BAR accesses": a virtio-blk
#        function's BARs (4 KiB MSI-X, 16 KiB registers and notify) are all
#        smaller than a 64 KiB host page, so they trap (not fatal), and every
#        notify exits; checked instead: they are reported unmapped.
#   nvme the NVMe behind --vsmmu smmuv3 with iommu.strict=1: our VMM maps
#        BAR0's first 64 KiB page (registers, the doorbells Linux rings) and
#        traps the second (table, PBA); the L2 nvme driver reads the whole
#        16 MiB (checksum), writes a block L0 then finds in its image, and
#        its MSI-X interrupts outnumber the trapped BAR accesses.
# nested-vmm's variables, scripts and assertions (the latter renamed nv_*),
# then this case's own.
# shellcheck source=scripts/e2e/cases/nested-vmm.sh
. "$E2E_DIR/cases/nested-vmm.sh"
CASE_DESC="nested lane, 64 KiB-page L1: nested-vmm's steps (disk checksums, writes in L0, MSI-X, edu DMA/fault/abort, reboot, SIGTERM) plus an NVMe whose MSI-X table shares BAR0 with its mapped doorbells"
CASE_DEFAULT=1
CASE_TIMEOUT=1200
CASE_QEMU=nested
CASE_KERNELS=7.2
CASE_NESTED_L1=64k
CASE_NESTED_SHAPE=nvme
eval "nv_l1_script() $(declare -f case_l1_script | tail -n +2)"
eval "nv_l2_script() $(declare -f case_l2_script | tail -n +2)"
eval "nv_assert() $(declare -f case_assert | tail -n +2)"

case_l1_script() {
  nv_l1_script
  cat <<'EOS'
echo "E2E-L1: page-size $(awk '/^KernelPageSize:/ {print $2 $3; exit}' /proc/self/smaps 2>/dev/null)"
nvme=/sys/bus/pci/devices/$nvme
# shellcheck disable=SC2086
vmm nvme -v $l2 --cmdline "console=ttyAMA0 panic=-1 iommu.strict=1 e2e_step=nvme" \
  --vsmmu smmuv3 --device "path=$nvme,iommu=on"
echo "E2E-L1: after nvme $(basename "$nvme") vfio-dev=$(ls "$nvme/vfio-dev" | xargs) driver=$(basename "$(readlink "$nvme/driver")")"
EOS
}

case_l2_script() {
  cat <<'EOS'
if [ "$(tr ' ' '\n' </proc/cmdline | sed -n 's/^e2e_step=//p')" = nvme ]; then
  i=0
  while [ ! -b /dev/nvme0n1 ] && [ "$i" -lt 120 ]; do sleep 0.5; i=$((i + 1)); done
  pci=$(basename "$(readlink -f /sys/block/nvme0n1/device/device)")
  echo 4 >/sys/block/nvme0n1/queue/max_sectors_kb
  echo 0 >/sys/block/nvme0n1/queue/read_ahead_kb
  nirqs() { awk '/nvme/ {s += $2} END {print s + 0}' /proc/interrupts; }
  before=$(nirqs)
  sum=$(dd if=/dev/nvme0n1 bs=4096 count=4096 2>/dev/null | sha256sum | cut -d' ' -f1)
  after=$(nirqs)
  echo "E2E-L2: read nvme0n1 pci=$pci blocks=4096 sha256=$sum irqs=$before..$after"
  printf 'E2E-PATTERN step=nvme pci=%s\n' "$pci" |
    dd of=/dev/nvme0n1 bs=4096 seek=3846 conv=sync,fsync 2>/dev/null
  echo 3 >/proc/sys/vm/drop_caches
  back=$(dd if=/dev/nvme0n1 bs=4096 skip=3846 count=1 2>/dev/null | tr -d '\0' | head -1)
  echo "E2E-L2: wrote nvme0n1: $back"
  grep -E 'MSI' /proc/interrupts | sed 's/  */ /g; s/^/E2E-L2-IRQ: /'
  exit 0
fi
EOS
  nv_l2_script
}

case_assert() {
  NV_IRQS_OVER_TRAPS=0 nv_assert
  expect "E2E-L1: page-size 64kB" "L1 does not run with 64 KiB pages"
  # The virtio disk's BARs: every one below a host page, trapped, not fatal.
  step_expect_re direct "0000:00:02.0: 1af4:1042, host page 0x10000, BAR1 0x1000 mapped \[\], BAR4 0x4000 mapped \[\]" \
    "the virtio-blk function's small BARs are not reported trapped on a 64 KiB host"
  # The NVMe: BAR0's first 64 KiB page mapped, the table's page trapped.
  step_expect_re nvme "0000:00:05.0: 1b36:0010, host page 0x10000, BAR0 0x20000 mapped \[0x0\+0x10000\]" \
    "the NVMe's BAR0 is not cut at the 64 KiB page that holds its MSI-X table"
  step_expect_event nvme "vfio:device-bound guest_bdf=0000:00:01.0 iommu=vsmmu0" "the NVMe was not bound behind the vSMMU"
  step_expect_re nvme "E2E-L2: read nvme0n1 pci=0000:00:01.0 blocks=4096 sha256=$NESTED_DISK_SHA256 " "the L2 nvme driver did not read the whole disk's known content"
  step_expect_re nvme "E2E-L2: wrote nvme0n1: E2E-PATTERN step=nvme pci=0000:00:01.0" "the NVMe write did not read back"
  expect "E2E-L0: disk 3 has E2E-PATTERN step=nvme pci=0000:00:01.0" "L0 did not find the NVMe write in its image"
  step_expect_re nvme "E2E-L2-IRQ: .*ITS-PCI-MSIX.*nvme0q" "the NVMe's interrupts are not MSI-X through the ITS"
  expect "E2E-L1: vmm exit=0 step=nvme " "the NVMe run did not exit 0"
  expect_re "E2E-L1: after nvme 0000:00:05.0 vfio-dev=vfio[0-9]+ driver=vfio-pci" "the NVMe is not back on vfio-pci"
  nv_irqs_over_traps nvme nvme0n1 NVMe
}
