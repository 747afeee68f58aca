# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# nested-probe: the nested lane's host check, no VMM. Under sid's QEMU 11.1
# (nested-capable SMMUv3), the 7.2 L1 runs the shared host diagnostic
# nested-smmu-probe on each vfio-pci function: VFIO cdev + iommufd, HW info,
# nest parent, ARM_SMMUV3 vIOMMU, vDEVICE, nested HWPTs from abort / bypass /
# S1 STEs, IOMMU_HWPT_INVALIDATE, and real DMA by QEMU's edu device through
# each. It proves L0 + L1 can do what our VMM asks of them, so a nested-vmm
# failure is ours. The probe is not part of this repository: it is compiled
# here from $E2E_NESTED_PROBE (default ../shared/tools/nested-smmu-probe.c
# beside the repository) and never committed.
CASE_DESC="nested lane host check: sid QEMU 11.1 SMMUv3 + 7.2 L1, the shared nested-smmu-probe on both vfio-pci functions (not in the repo)"
CASE_DEFAULT=0
CASE_TIMEOUT=300
CASE_QEMU=nested
# No L2 guest: one run, with L1's own kernel version as the label.
CASE_KERNELS=7.2

# Runs on the host before the initramfs is packed: a static aarch64 probe
# compiled against sid's 7.2 uAPI headers (linux-libc-dev carries every
# architecture's asm/ directory; the arm64 one goes first).
case_prepare() {
  local out="$1" src="${E2E_NESTED_PROBE:-$REPO_ROOT/../shared/tools/nested-smmu-probe.c}" inc
  [ -f "$src" ] || { log "nested-probe: no probe source at $src (set E2E_NESTED_PROBE)"; return 1; }
  if [ -x "$REPO_ROOT/scripts/uapi-headers.sh" ]; then
    inc="$("$REPO_ROOT/scripts/uapi-headers.sh")"
  else
    # Until scripts/uapi-headers.sh is on this branch: its cache.
    inc="$(find "$E2E_CACHE/uapi" -path '*/usr/include/linux/iommufd.h' 2>/dev/null | sort -V | tail -1)"
    inc="${inc%/linux/iommufd.h}"
  fi
  if [ -z "$inc" ] || [ ! -d "$inc/aarch64-linux-gnu/asm" ]; then
    log "nested-probe: no sid uAPI headers with aarch64-linux-gnu/asm (scripts/uapi-headers.sh)"
    return 1
  fi
  aarch64-linux-gnu-gcc -O2 -static -I "$inc/aarch64-linux-gnu" -I "$inc" \
    -o "$out/nested-smmu-probe" "$src" || return 1
  L1_EXTRA+=("$out/nested-smmu-probe:/bin/nested-smmu-probe")
}

case_l1_script() {
  cat <<'EOS'
for bdf in $(echo "$E2E_VFIO" | tr , ' '); do
  echo "E2E-L1: probe start bdf=$bdf"
  /bin/nested-smmu-probe "$bdf"
  echo "E2E-L1: probe exit=$? bdf=$bdf"
done
dmesg | grep -iE 'smmu|vfio|iommu' | tail -20 | sed 's/^/E2E-L1-DMESG: /'
EOS
}

case_assert() {
  # NESTED_* come from scripts/e2e/nested/l0.sh (sourced by run.sh).
  local bdf
  for bdf in ${NESTED_VFIO_BDFS//,/ }; do
    expect "E2E-L1: probe exit=0 bdf=$bdf" "nested-smmu-probe failed on $bdf (see its FAIL lines)"
  done
  expect_re "IOMMU_GET_HW_INFO +OK" "IOMMU_GET_HW_INFO failed in L1"
  expect "=> nesting-capable (S1P && S2P): YES" "L0's SMMUv3 does not advertise S1 + S2 (QEMU older than 11.1, or iommu= missing)"
  expect_re "IOMMU_HWPT_ALLOC\\(NEST_PARENT\\) +OK" "no nest-parent HWPT (L1 kernel lacks ARM_SMMU_V3_IOMMUFD?)"
  expect_re "IOMMU_VIOMMU_ALLOC\\(ARM_SMMUV3\\) +OK" "no ARM_SMMUV3 vIOMMU (CANWBS knob not applied? arm_smmu_v3.test_force_canwbs=1)"
  expect_re "IOMMU_VDEVICE_ALLOC\\(vSID=0x10\\) +OK" "no vDEVICE"
  expect_re "IOMMU_HWPT_ALLOC\\(nested s1trans STE\\) +OK" "no nested HWPT from an S1 STE"
  expect_re "DMA nested S1\\+S2 VA->IPA->PA .*PASS" "edu DMA through S1 + S2 did not land where the page tables say"
  expect_re "vEVENTQ read .*vSID=0x10 " "the translation fault did not reach the vEVENTQ with the vSID"
  expect_re "DMA after S1 remap\\+TLBI: lands in ALT .*PASS" "IOMMU_HWPT_INVALIDATE did not make the new S1 mapping take effect"
  expect "RESULT: ALL NESTED STEPS OK" "some nested step failed"
}
