# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# l2-direct: harness self-check without L1 or our VMM. QEMU boots the kernel
# with the L2 initramfs (DT, QEMU's own SMMUv3): the L2 /init, its markers and
# the guest kernel's arm-smmu-v3 driver work, so a boot-cmdqv failure is the VMM's.
CASE_DESC="QEMU boots the L2 kernel+initramfs directly (virt,iommu=smmuv3): L2 markers and arm-smmu-v3 probe"
CASE_DEFAULT=1
CASE_TIMEOUT=120
CASE_QEMU=l2-direct

case_assert() {
  expect "E2E-L2: booted" "the L2 initramfs did not reach /init under plain QEMU (kernel or initramfs broken)"
  expect_re "E2E-L2-DMESG: arm-smmu-v3 .*allocated [0-9]+ entries for cmdq" "the guest kernel's arm-smmu-v3 driver did not probe QEMU's SMMUv3"
  expect "E2E-L2: debugfs iommu present" "no /sys/kernel/debug/iommu in L2 (IOMMU_DEBUGFS)"
  expect "E2E-L2: dma_map_benchmark pci driver present" "no dma_map_benchmark PCI driver in L2 (DMA_MAP_BENCHMARK)"
  expect "E2E-L2: done" "the L2 /init did not finish"
}
