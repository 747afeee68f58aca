# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# two-cmdqv: two-smmu's steps on the CMD-QV L0, with --vsmmu cmdqv (issue 18:
# "two CMD-QVs when the CMD-QV hardware model is present"). L0 is QEMU 10.2.2
# + the test-only CMD-QV model in the two-smmu shape: each arm-smmuv3 has its
# own model (DSDT NVDA200C, _UID = its IORT identifier), so L1's 7.2 probes
# two SMMUv3, each with its CMD-QV, and a disk behind each. Our VMM, given
# both functions and no segment option, builds two vSMMUs each with its own
# TEGRA241 vIOMMU: a guest-owned VINTF (VINTF1) of that host SMMU's CMD-QV,
# its page0 mapped into the L2, the L2's VCMDQs allocated there. The L2
# (iommu.strict=1, RAM in 2 MiB huge pages) probes two arm-smmu-v3 each with
# its CMD-QV and reads both whole disks; each disk's TLBIs run in L0 on its
# own host SMMU's VINTF1 (the model's trace names the instance: cmdqv=N).
# The refusal step (pci_segment=0 on both) is two-smmu's, with cmdqv.
# shellcheck source=scripts/e2e/cases/two-smmu.sh
. "$E2E_DIR/cases/two-smmu.sh"
CASE_DESC="nested lane, CMD-QV L0 in the two-smmu shape (two SMMUv3, each with a CMD-QV model, ACPI L1): --vsmmu cmdqv builds two vSMMUs, each a TEGRA241 vIOMMU on its own host CMD-QV (VINTF1, page0, VCMDQs), two CMD-QVs probed in L2, both disks' TLBIs in L0 on their own instance; pci_segment=0 on both refused"
CASE_NESTED_L0=cmdqv
CASE_TIMEOUT=1200
TWO_SMMU_KIND=cmdqv
TWO_SMMU_NAME=two-cmdqv

case_assert() {
  two_smmu_assert
  two_cmdqv_assert
}

# l1_own_lines: L1's own kernel messages (its boot before /init, and the
# dmesg lines /init prints), not an L2's on the same console.
l1_own_lines() {
  awk '/E2E-L1: init / {init = 1} (!init || /^E2E-L1-DMESG: /)' "$LOG"
}

two_cmdqv_assert() {
  local tr="$LOG.l0-trace" n i s vmid ntlbi allocs held
  # L1: each SMMUv3 took its own CMD-QV from the DSDT.
  n="$(l1_own_lines | grep -oE 'arm-smmu-v3 [^ ]+: found companion CMDQV device: [^ ]+' | sort -u | wc -l)"
  echo "  two-cmdqv L1: $n SMMUv3 with a companion CMD-QV: $(l1_own_lines | grep -oE 'arm-smmu-v3 [^ ]+: found companion CMDQV device: [^ ]+' | sort -u | awk '{print $2 $NF}' | xargs)"
  [ "$n" = 2 ] || fail "L1 found $n companion CMD-QVs (NVDA200C), expected one per SMMUv3 (2)"
  # The L2: two arm-smmu-v3, each with its CMD-QV and both VCMDQs.
  n="$(section two | grep -oE '^E2E-L2-DMESG: .*arm-smmu-v3 [^ ]+: found companion CMDQV device' | awk '{print $(NF - 4)}' | sort -u | wc -l)"
  [ "$n" = 2 ] || fail "the L2 found $n companion CMD-QVs, expected 2"
  n="$(section two | grep -oE '^E2E-L2-DMESG: .*arm-smmu-v3 [^ ]+: allocated [0-9]+ entries for vcmdq1' | awk '{print $(NF - 5)}' | sort -u | wc -l)"
  [ "$n" = 2 ] || fail "$n of the L2's CMD-QVs allocated their VCMDQs, expected 2"
  step_reject_re two "E2E-L2-DMESG: .*(Falling back|CMDQV: failed)" "an L2 tegra241-cmdqv fell back or failed"
  step_reject_event two "cmdqv:guest-error" "a VCMDQ error in a clean run"
  for i in 0 1; do
    step_expect_event two "cmdqv:page0-mapped id=cmdqv$i" "cmdqv$i's host VINTF page0 was not mapped into the guest"
    allocs="$(ev_prop two "vm:counters id=cmdqv$i" hw_queue_allocs)"
    held="$(ev_prop two "vm:counters id=cmdqv$i" hw_queues_allocated)"
    echo "  two-cmdqv cmdqv$i: hw_queue_allocs=${allocs:-?} hw_queues_allocated=${held:-?} at stop"
    [ "$allocs/$held" = 2/2 ] || fail "cmdqv$i: hw_queue_allocs/hw_queues_allocated = ${allocs:-?}/${held:-?} at stop, expected 2/2"
  done

  # L0: per model instance, L1's own VINTF0 and our vIOMMU's VINTF1 (its
  # VMID, SID_MATCH, both queues' BASE), the L2's TLBIs run there, and the
  # teardown that disables it.
  if [ ! -s "$tr" ]; then
    fail "no L0 trace at $tr"
    return
  fi
  for i in 0 1; do
    grep -qE "tegra241_hw_vintf_config vintf=0 en=1 vmid=[0-9]+ hyp_own=1 cmdqv=$i\$" "$tr" ||
      fail "L1 never enabled CMD-QV $i's VINTF0 host-owned [L0 trace]"
    vmid="$(grep -m1 -oE "tegra241_hw_vintf_config vintf=1 en=1 vmid=[0-9]+ hyp_own=0 cmdqv=$i\$" "$tr" | grep -oE 'vmid=[0-9]+' | cut -d= -f2 || true)"
    [ -n "$vmid" ] || fail "no guest-owned VINTF1 was enabled on CMD-QV $i [L0 trace]"
    grep -qE "tegra241_hw_sid_match vintf=1 slot=[0-9]+ en=1 vsid=0x[0-9a-f]+ cmdqv=$i\$" "$tr" ||
      fail "no SID_MATCH slot of CMD-QV $i's VINTF1 was programmed (vDEVICE) [L0 trace]"
    for s in 0 1; do
      grep -qE "tegra241_hw_vcmdq_base vintf=1 lvcmdq=$s q=[0-9]+ base=0x0*[1-9a-f][0-9a-f]* log2size=[0-9]+ cmdqv=$i\$" "$tr" ||
        fail "L1 never programmed CMD-QV $i's VINTF1 LVCMDQ$s BASE [L0 trace]"
    done
    ntlbi="$(grep -cE "tegra241_hw_cmd vintf=1 lvcmdq=[0-9]+ q=[0-9]+ hyp_own=0 SMMU_CMD_TLBI_NH_(VA|ASID) .* cmdqv=$i\$" "$tr" || true)"
    echo "  two-cmdqv L0: CMD-QV $i VINTF1 vmid=${vmid:-?}, the L2's TLBI_NH_* run there: $ntlbi"
    ((ntlbi >= 4096)) || fail "only $ntlbi TLBI_NH_* ran on CMD-QV $i's VINTF1 for disk$i's 4096 strict unmaps [L0 trace]"
    grep -qE "tegra241_hw_sid_match vintf=1 slot=[0-9]+ en=0 .* cmdqv=$i\$" "$tr" ||
      fail "CMD-QV $i's SID_MATCH slot was not cleared at teardown [L0 trace]"
    grep -qE "tegra241_hw_vintf_config vintf=1 en=0 .* cmdqv=$i\$" "$tr" ||
      fail "CMD-QV $i's VINTF1 was not disabled at teardown [L0 trace]"
  done
  grep -q 'tegra241_hw_error vintf=1 ' "$tr" && fail "a VCMDQ error on a guest VINTF [L0 trace: $(grep -m1 'tegra241_hw_error vintf=1 ' "$tr")]"
  return 0
}
