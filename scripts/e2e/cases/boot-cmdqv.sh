# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# boot-cmdqv: inside L1, cloud-hypervisor boots the L2 guest with a vSMMUv3 +
# Tegra241 CMDQ-V (emulated backend); the guest's own drivers must probe them.
CASE_DESC="cloud-hypervisor boots an L2 Linux with --vsmmu cmdqv,backend=emulated; guest SMMU/CMDQ-V drivers probe"
# Not run by default until the VMM can boot guests: scripts/e2e/run.sh boot-cmdqv
CASE_DEFAULT=0
CASE_TIMEOUT=420

case_l1_script() {
  cat <<'EOS'
vmm boot --kernel /l2/Image --initramfs /l2/initrd \
  --cmdline "console=ttyAMA0 earlycon efi=noruntime panic=-1" \
  --cpus boot=1 --memory size=512M --serial tty \
  --vsmmu cmdqv,backend=emulated
EOS
}

case_assert() {
  if ! has "E2E-L2: booted"; then
    local exit_line why
    exit_line="$(grep -o 'E2E-L1: vmm exit=[0-9]* step=boot' "$LOG" | head -1)"
    why="$(grep -m1 '^cloud-hypervisor: ' "$LOG" || true)"
    if [ -n "$exit_line" ] && [ "$exit_line" != "E2E-L1: vmm exit=0 step=boot" ]; then
      fail "VMM cannot boot guests yet: ${exit_line#E2E-L1: } before the L2 guest reached /init${why:+ ($why)}"
    else
      fail "the L2 guest never printed 'E2E-L2: booted' (${exit_line:-VMM did not exit}); see the L2 console in the log"
    fi
    return
  fi
  expect_re "E2E-L2-DMESG: .*arm-smmu-v3" "the L2 guest's arm-smmu-v3 driver logged nothing (no IORT/SMMU seen?)"
  expect "found companion CMDQV device" "the L2 guest's tegra241-cmdqv did not find its NVDA200C companion"
  reject "CMDQV: failed" "the L2 guest's CMD-QV probe failed"
  reject "probe with driver arm-smmu-v3 failed" "the L2 guest's SMMUv3 probe failed"
  expect "E2E-L2: done" "the L2 guest did not finish its /init"
  expect "E2E-L1: vmm exit=0 step=boot " "cloud-hypervisor did not exit 0 after the L2 guest powered off"
}
