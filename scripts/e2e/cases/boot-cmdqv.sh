# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# boot-cmdqv: inside L1, cloud-hypervisor boots the L2 guest with ACPI (EFI
# hand-off, no firmware), a vSMMUv3 + Tegra241 CMD-QV (emulated backend,
# page0 mapped into the guest) and one test endpoint behind it; the guest's
# own arm-smmu-v3 and tegra241-cmdqv drivers must probe and use them.
CASE_DESC="L2 Linux boots under cloud-hypervisor with ACPI; its arm-smmu-v3 + tegra241-cmdqv drivers probe the vSMMU/CMD-QV"
CASE_DEFAULT=1
CASE_TIMEOUT=420

case_l1_script() {
  cat <<'EOS'
vmm boot -v --kernel /l2/Image --initramfs /l2/initrd \
  --cmdline "console=ttyAMA0 earlycon panic=-1 iommu.strict=1" \
  --cpus boot=2 --memory size=512M --serial tty \
  --vsmmu cmdqv,backend=emulated --test-device id=dma0
EOS
}

case_l2_script() {
  cat <<'EOS'
echo "E2E-L2: cpus=$(grep -c ^processor /proc/cpuinfo)"
echo "E2E-L2: acpi tables: $(ls /sys/firmware/acpi/tables | xargs)"
dev=/sys/bus/pci/devices/0000:00:01.0
# A PCI function joins its IOMMU group when a driver binds (the DMA setup of
# really_probe): bind the DMA-API benchmark driver, which does no DMA itself.
echo dma_map_benchmark > $dev/driver_override
echo 0000:00:01.0 > /sys/bus/pci/drivers/dma_map_benchmark/bind
echo "E2E-L2: test endpoint $(cat $dev/vendor):$(cat $dev/device) group=$(basename "$(readlink $dev/iommu_group)") type=$(cat $dev/iommu_group/type)"
dmesg | grep -iE "iommu group" | sed 's/^/E2E-L2-DMESG: /'
grep -i smmu /proc/interrupts | sed 's/^ */E2E-L2: irq /' 
EOS
}

case_assert() {
  if ! has "E2E-L2: booted"; then
    fail "the L2 guest never reached /init ($(grep -o 'E2E-L1: vmm exit=[0-9]* step=boot' "$LOG" | head -1)); see the L2 console in the log"
    return
  fi
  # ACPI, not DT: the tables came through the EFI configuration table.
  expect "efi: ACPI 2.0=" "the guest did not find the RSDP through the EFI system table"
  expect_re "E2E-L2: acpi tables: .*IORT" "the guest has no IORT (booted without ACPI?)"
  expect "E2E-L2: cpus=2" "the second vCPU did not come up (PSCI CPU_ON)"
  # The vSMMU and its CMD-QV, as the guest's own drivers see them.
  expect "found companion CMDQV device: NVDA200C" "tegra241-cmdqv did not find its NVDA200C companion with the matching _UID"
  expect_re "E2E-L2-DMESG: arm-smmu-v3 .*allocated [0-9]+ entries for vcmdq1" "the guest did not set up both VCMDQs"
  reject "CMDQV: failed" "the guest's CMD-QV probe failed"
  reject "probe with driver arm-smmu-v3 failed" "the guest's SMMUv3 probe failed"
  reject "CMD_SYNC timeout" "a guest CMD_SYNC timed out"
  reject "Illegal command" "the guest hit a command queue error"
  expect_re "E2E-L2: test endpoint 0x1b36:0x0005 group=[0-9]+ type=DMA" "the test endpoint has no DMA domain behind the vSMMU"
  # The vSMMU signals by MSI through the ITS (its IORT DeviceID mapping).
  expect_re "E2E-L2: irq .*ITS.*arm-smmu-v3-evtq" "the guest did not set up the event queue MSI through the ITS"
  expect_re "E2E-L2: irq .*ITS.*arm-smmu-v3-gerror" "the guest did not set up the global error MSI through the ITS"
  # The VMM side (its events, docs/events.md): the vSMMU's host side up
  # with the endpoint's vDEVICE; HYP_OWN wired to 0 (the model's register
  # trace: no event carries register values); page0 mapped, queues
  # allocated ascending; the teardown order on power-off.
  in_order boot "the VMM did not build the vSMMU before booting" \
    "@vmm:starting" "@vm:booting boot=1" "@vsmmu:vdevice id=vsmmu0 device=dma0" \
    "@vsmmu:viommu-ready id=vsmmu0 kind=cmdqv backend=emulated vdevices=1" "@vm:booted boot=1"
  in_order boot "the VMM did not see the guest driver's CMD-QV bring-up in order" \
    "STATUS.CMDQV_ENABLED=1" "HYP_OWN wired to 0" "VINTF0_STATUS.ENABLED=1" \
    "@cmdqv:page0-mapped id=cmdqv0" "@cmdqv:hw-queue-alloc id=cmdqv0 index=0" "@cmdqv:hw-queue-alloc id=cmdqv0 index=1"
  in_order boot "the teardown did not follow the hardware order" \
    "@cmdqv:page0-unmapped id=cmdqv0" "@cmdqv:hw-queue-free index=1" "@cmdqv:hw-queue-free index=0" \
    "@vsmmu:viommu-released id=vsmmu0" "@vm:shutdown reason=poweroff" "@vmm:shutdown"
  step_expect_event boot "vsmmu:ste-installed id=vsmmu0" "no STE reached the backend (the endpoint's DMA domain)"
  step_reject_event boot "cmdqv:guest-error" "the host reported a VCMDQ error"
  expect "E2E-L2: done" "the L2 guest did not finish its /init"
  expect "E2E-L1: vmm exit=0 step=boot " "cloud-hypervisor did not exit 0 after the L2 guest powered off"
}
