# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# two-smmu: one vSMMU per host SMMU, chosen by the VMM (issue 18). L0 is sid's
# QEMU 11.1 in the two-smmu shape (nested/l0.sh): two SMMUv3 instances, one
# per root complex (pcie.0, and a pxb-pcie with its own arm-smmuv3), one
# known-content disk behind each, L1 booted by ACPI through edk2. L1 (7.2,
# the CANWBS knob) binds both disks to vfio-pci, then:
#   refuse  both functions with pci_segment=0: one vSMMU cannot stand for two
#           host SMMUs, so the VMM refuses before it binds anything (exit
#           non-zero, one sentence naming both devices and both SMMUs)
#   two     the same functions with no segment options: two vSMMUs (segments
#           0 and 1), one host vIOMMU each; vm.info's placement read through
#           ch-remote while the L2 runs; the L2 (iommu.strict=1) probes two
#           arm-smmu-v3 and reads both whole disks; each vSMMU's
#           IOMMU_HWPT_INVALIDATE calls are counted on their own (vm:counters)
# The refusal runs first, so the second run also shows it left nothing bound
# or held. After each run both functions are back on vfio-pci.
# two-cmdqv.sh runs these steps with --vsmmu cmdqv on the CMD-QV L0
# (TWO_SMMU_KIND=cmdqv: guest RAM in huge pages, its own asserts after these).
CASE_DESC="nested lane, two host SMMUs (pxb-pcie + a second arm-smmuv3, ACPI L1): one vSMMU and vIOMMU per host SMMU without options, vm.info placement, two arm-smmu-v3 in L2, both disks under strict, per-vSMMU invalidations; pci_segment=0 on both refused"
CASE_DEFAULT=1
CASE_TIMEOUT=900
CASE_QEMU=nested
CASE_NESTED_L0=sid
CASE_NESTED_SHAPE=two-smmu
# The L2 guest kernel (L1 is always the nested 7.2).
CASE_KERNELS=7.2
# --vsmmu for both runs (and the vIOMMU kind the events name), and the
# case's name for its files under E2E_OUT.
TWO_SMMU_KIND=smmuv3
TWO_SMMU_NAME=two-smmu

case_l1_script() {
  echo "kind=$TWO_SMMU_KIND"
  cat <<'EOS'
VMM_TIMEOUT=300
mem=512M
if [ "$kind" = cmdqv ]; then
  # Each VCMDQ ring physically contiguous in L1 (IOMMU_HW_QUEUE_ALLOC).
  echo 320 >/proc/sys/vm/nr_hugepages
  mem=512M,hugepages=on
fi
IFS=, read -r b0 b1 <<EOF2
$E2E_VFIO
EOF2
f0=/sys/bus/pci/devices/$b0
f1=/sys/bus/pci/devices/$b1
# L1's firmware view: ACPI tables and root bridges (the pxb is one).
dmesg | grep -E 'ACPI: (IORT|MCFG) |PCI Root Bridge|arm-smmu-v3.*features' | sed 's/^/E2E-L1-ACPI: /'
# Each function's host SMMU: what the VMM reads (the sysfs iommu link).
for f in "$f0" "$f1"; do
  echo "E2E-L1: function $(basename "$f") smmu=$(basename "$(readlink "$f/iommu")") group=$(basename "$(readlink "$f/iommu_group")") smmu_dev=$(basename "$(readlink -f "$f/iommu/device")")"
done
after() {
  for f in "$f0" "$f1"; do
    echo "E2E-L1: after $1 $(basename "$f") vfio-dev=$(ls "$f/vfio-dev" | xargs) driver=$(basename "$(readlink "$f/driver")")"
  done
}
l2="--kernel /l2/Image --initramfs /l2/initrd --cpus boot=1 --memory size=$mem --serial tty"
cmdline="console=ttyAMA0 earlycon panic=-1 iommu.strict=1"
# shellcheck disable=SC2086
vmm refuse -v $l2 --cmdline "$cmdline" --vsmmu "$kind" \
  --device "path=$f0,iommu=on,id=disk0,pci_segment=0" --device "path=$f1,iommu=on,id=disk1,pci_segment=0"
after refuse
# vm.info while the L2 runs (l1-lib.sh MEASURE_HOOK, at "E2E-L2: mark ..."): one line.
cat >/tmp/info.sh <<'EOM'
echo "E2E-L1: info step=$1 $(/bin/ch-remote --api-socket "/tmp/ch-$1.sock" info 2>&1 | tr -d '\n')"
EOM
MEASURE_HOOK="sh /tmp/info.sh"
# shellcheck disable=SC2086
vmm_measured two /bin/cloud-hypervisor -v $l2 --cmdline "$cmdline" --vsmmu "$kind" \
  --device "path=$f0,iommu=on,id=disk0" --device "path=$f1,iommu=on,id=disk1" --api-socket /tmp/ch-two.sock
after two
EOS
}

case_l2_script() {
  nested_l2_disk_helpers
  cat <<'EOS'
# The SMMU instance translating each function (its iommu link) and its domain.
for d in /sys/bus/pci/devices/*; do
  [ -e "$d" ] || continue
  echo "E2E-L2: pci $(basename "$d") $(cat "$d/vendor"):$(cat "$d/device") group=$(basename "$(readlink "$d/iommu_group" 2>/dev/null)") smmu=$(basename "$(readlink "$d/iommu" 2>/dev/null)") domain=$(cat "$d/iommu_group/type" 2>/dev/null)"
done
# L1 reads vm.info when it sees the mark: wait for it.
echo "E2E-L2: mark info"
sleep 3
for b in /sys/block/vd*; do
  [ -e "$b" ] || continue
  n=$(basename "$b")
  pci=$(disk_pci "$b")
  # 4 KiB requests: with iommu.strict=1 every one is a map, an unmap and a
  # TLBI + CMD_SYNC on this disk's vSMMU.
  small_requests "$b"
  sum=$(dd if="/dev/$n" bs=4096 count=4096 2>/dev/null | sha256sum | cut -d' ' -f1)
  echo "E2E-L2: read $n pci=$pci blocks=4096 sha256=$sum"
done
EOS
}

# two_smmu_placement: vm.info's placement from the "two" step (JSON), or empty.
two_smmu_placement() {
  section two | sed -n 's/^E2E-L1: info step=two //p' | head -1 | jq -c .placement 2>/dev/null || true
}

case_assert() { two_smmu_assert; }

# two_smmu_assert: the steps' checks, for either kind.
two_smmu_assert() {
  local s0 s1 g0 g1 n
  # L1: booted by ACPI, two SMMUv3 probed, each disk behind its own.
  expect_re "E2E-L1-ACPI: .*ACPI: IORT " "L1 has no IORT (not an ACPI boot?)"
  n="$(grep -oE '^E2E-L1-DMESG: .*arm-smmu-v3 [^ ]+: allocated [0-9]+ entries for cmdq' "$LOG" | awk '{print $(NF - 5)}' | sort -u | wc -l)"
  [ "$n" = 2 ] || fail "L1 probed $n arm-smmu-v3 instances, expected 2"
  s0="$(sed -n "s/^E2E-L1: function $NESTED_DISK_BDF smmu=\([^ ]*\) .*/\1/p" "$LOG" | head -1)"
  s1="$(sed -n "s/^E2E-L1: function $NESTED_DISK2_BDF smmu=\([^ ]*\) .*/\1/p" "$LOG" | head -1)"
  g0="$(sed -n "s/^E2E-L1: function $NESTED_DISK_BDF .* group=\([^ ]*\) .*/\1/p" "$LOG" | head -1)"
  g1="$(sed -n "s/^E2E-L1: function $NESTED_DISK2_BDF .* group=\([^ ]*\) .*/\1/p" "$LOG" | head -1)"
  echo "  $TWO_SMMU_NAME L1: $NESTED_DISK_BDF behind ${s0:-?} (group ${g0:-?}), $NESTED_DISK2_BDF behind ${s1:-?} (group ${g1:-?})"
  if [[ "$s0" != smmu3.* || "$s1" != smmu3.* || "$s0" = "$s1" ]]; then
    fail "the two disks are not behind two different host SMMUs in L1 ('$s0', '$s1')"
    s0="host-smmu-0?" s1="host-smmu-1?"
  fi
  [ -n "$g0" ] && [ "$g0" != "$g1" ] || fail "the two disks share an IOMMU group in L1 ('$g0', '$g1')"

  # refuse: pci_segment=0 on both is refused before anything is bound.
  expect_re "E2E-L1: vmm exit=[1-9][0-9]* step=refuse " "pci_segment=0 on functions of two host SMMUs did not fail"
  local err
  err="$(section refuse | grep -m1 '^cloud-hypervisor: ' || true)"
  echo "  $TWO_SMMU_NAME refuse: ${err:-no error line}"
  local w
  for w in disk0 disk1 "$s0" "$s1"; do
    [[ "$err" == *"$w"* ]] || fail "the refusal does not name '$w' [step refuse: '${err:-no cloud-hypervisor: line}']"
  done
  step_reject_event refuse "vfio:device-bound" "the refused VM bound a function"
  step_reject_event refuse "vsmmu:viommu-ready" "the refused VM built a vIOMMU"

  # two: one vSMMU and one vIOMMU per host SMMU, with no segment options.
  expect "E2E-L1: vmm exit=0 step=two " "the two-vSMMU run did not exit 0"
  step_expect_event two "vfio:device-bound id=disk0 iommu=vsmmu0" "disk0 was not bound behind vsmmu0"
  step_expect_event two "vfio:device-bound id=disk1 iommu=vsmmu1" "disk1 was not bound behind vsmmu1"
  step_expect_event two "vsmmu:vdevice id=vsmmu0 device=disk0" "no vDEVICE for disk0 on vsmmu0"
  step_expect_event two "vsmmu:vdevice id=vsmmu1 device=disk1" "no vDEVICE for disk1 on vsmmu1"
  local v0 v1
  step_expect_event two "vsmmu:viommu-ready id=vsmmu0 kind=$TWO_SMMU_KIND backend=iommufd vdevices=1" "vsmmu0 has no $TWO_SMMU_KIND vIOMMU over one function"
  step_expect_event two "vsmmu:viommu-ready id=vsmmu1 kind=$TWO_SMMU_KIND backend=iommufd vdevices=1" "vsmmu1 has no $TWO_SMMU_KIND vIOMMU over one function"
  step_reject_event two "vsmmu:viommu-ready id=vsmmu2" "a third vSMMU"
  v0="$(ev_prop two "vsmmu:viommu-ready id=vsmmu0" viommu)"
  v1="$(ev_prop two "vsmmu:viommu-ready id=vsmmu1" viommu)"
  echo "  $TWO_SMMU_NAME vIOMMUs: vsmmu0 iommufd object ${v0:-?}, vsmmu1 ${v1:-?}"
  [ -n "$v0" ] && [ "$v0" != "$v1" ] || fail "the two vSMMUs do not have a vIOMMU each ('$v0', '$v1')"

  # vm.info: the placement, each vSMMU with its own segment and host SMMU.
  local pl bdf0 bdf1 i
  pl="$(two_smmu_placement)"
  if [ -z "$pl" ]; then
    fail "no vm.info placement from ch-remote info [step two: E2E-L1: info]"
  else
    mkdir -p "$E2E_OUT/$TWO_SMMU_NAME"
    jq -S . <<<"$pl" >"$E2E_OUT/$TWO_SMMU_NAME/placement-${E2E_KERNEL:-k}.json"
    [ "$(jq '.vsmmus | length' <<<"$pl")" = 2 ] || fail "vm.info shows $(jq '.vsmmus | length' <<<"$pl") vSMMUs, expected 2"
    [ "$(jq '[.vsmmus[].pci_segment] | unique | length' <<<"$pl")" = 2 ] || fail "the two vSMMUs share a PCI segment in vm.info"
    local want=("$s0" "$s1")
    for i in 0 1; do
      [ "$(jq -r ".vsmmus[] | select(.index == $i) | .host_smmu" <<<"$pl")" = "${want[$i]}" ] ||
        fail "vm.info: vsmmu$i's host SMMU is not ${want[$i]} (disk$i's in L1) [$(jq -c ".vsmmus[] | select(.index == $i)" <<<"$pl")]"
      [ "$(jq -c ".vsmmus[] | select(.index == $i) | .devices" <<<"$pl")" = "[\"disk$i\"]" ] ||
        fail "vm.info: vsmmu$i does not translate disk$i alone"
      [ "$(jq -r ".devices[] | select(.id == \"disk$i\") | .host_smmu" <<<"$pl")" = "${want[$i]}" ] ||
        fail "vm.info: disk$i's host SMMU is not ${want[$i]}"
    done
    bdf0="$(jq -r '.devices[] | select(.id == "disk0") | .bdf' <<<"$pl")"
    bdf1="$(jq -r '.devices[] | select(.id == "disk1") | .bdf' <<<"$pl")"
    echo "  $TWO_SMMU_NAME placement: disk0 at $bdf0 (vsmmu0), disk1 at $bdf1 (vsmmu1); $E2E_OUT/$TWO_SMMU_NAME/placement-${E2E_KERNEL:-k}.json"
  fi

  # L2: two arm-smmu-v3, each disk translated by its own, both whole disks read.
  n="$(section two | grep -oE '^E2E-L2-DMESG: .*arm-smmu-v3 [^ ]+: allocated [0-9]+ entries for cmdq' | awk '{print $(NF - 5)}' | sort -u | wc -l)"
  [ "$n" = 2 ] || fail "the L2 probed $n arm-smmu-v3 instances, expected 2"
  step_expect_re two "E2E-L2: cmdline=.* iommu.strict=1" "the L2 does not run with iommu.strict=1"
  local l2s0 l2s1
  for i in 0 1; do
    bdf="$bdf0"
    [ "$i" = 1 ] && bdf="$bdf1"
    step_expect_re two "E2E-L2: read vd[a-z]+ pci=${bdf:-none} blocks=4096 sha256=$NESTED_DISK_SHA256\$" "the L2 did not read disk$i's whole known content (at ${bdf:-?})"
    step_expect_re two "E2E-L2: pci ${bdf:-none} 0x1af4:0x1042 group=[0-9]+ smmu=[^ ]+ domain=DMA" "disk$i is not in a translated (DMA) domain in the L2"
  done
  l2s0="$(section two | sed -n "s/^E2E-L2: pci ${bdf0:-none} .* smmu=\([^ ]*\) .*/\1/p" | head -1)"
  l2s1="$(section two | sed -n "s/^E2E-L2: pci ${bdf1:-none} .* smmu=\([^ ]*\) .*/\1/p" | head -1)"
  echo "  $TWO_SMMU_NAME L2: disk0 behind ${l2s0:-?}, disk1 behind ${l2s1:-?}"
  [ -n "$l2s0" ] && [ "$l2s0" != "$l2s1" ] || fail "the L2 does not see the two disks behind two SMMUs ('$l2s0', '$l2s1')"

  # Each vSMMU's IOMMU_HWPT_INVALIDATE calls on their own (vm:counters at
  # stop): 4096 strict unmaps on each disk, one call per CMD_SYNC at most;
  # with cmdqv the L2's TLBIs go to its VCMDQs, not through these calls.
  local syncs calls
  for i in 0 1; do
    syncs="$(ev_prop two "vm:counters id=vsmmu$i" trapped_syncs)"
    calls="$(ev_prop two "vm:counters id=vsmmu$i" backend_calls.invalidate)"
    echo "  $TWO_SMMU_NAME vsmmu$i: trapped_syncs=${syncs:-?} invalidate_calls=${calls:-?}"
    if [[ "$syncs" =~ ^[0-9]+$ && "$calls" =~ ^[0-9]+$ ]]; then
      if [ "$TWO_SMMU_KIND" = cmdqv ]; then
        ((calls * 4 < 4096)) || fail "vsmmu$i: $calls IOMMU_HWPT_INVALIDATE calls for 4096 strict unmaps: the L2's TLBIs did not go to its VCMDQs"
      else
        ((calls >= 1000)) || fail "vsmmu$i: only $calls IOMMU_HWPT_INVALIDATE calls for a 16 MiB read in 4 KiB requests with iommu.strict=1"
      fi
      ((calls <= syncs)) || fail "vsmmu$i: $calls IOMMU_HWPT_INVALIDATE calls for $syncs CMD_SYNCs"
    else
      fail "no vm:counters event for vsmmu$i in step two"
    fi
  done
  [ "$(ev_count two vfio:device-released)" = 2 ] || fail "not both functions were released [step two]"
  [ "$(ev_count two vsmmu:viommu-released)" = 2 ] || fail "not both vIOMMUs were released [step two]"
  step_reject_re two "^\\[[^]]* ERROR " "the VMM logged an error"
  step_reject_re two "panicked|RUST_BACKTRACE" "the VMM panicked"
  step_reject_re two "CMD_SYNC timeout|Illegal command" "an L2 SMMU command failed"

  # Nothing left bound or held: both functions on vfio-pci after each run
  # (and the refusal's functions served the second run).
  local step
  for step in refuse two; do
    expect_re "E2E-L1: after $step $NESTED_DISK_BDF vfio-dev=vfio[0-9]+ driver=vfio-pci" "$NESTED_DISK_BDF is not back on vfio-pci after $step"
    expect_re "E2E-L1: after $step $NESTED_DISK2_BDF vfio-dev=vfio[0-9]+ driver=vfio-pci" "$NESTED_DISK2_BDF is not back on vfio-pci after $step"
  done
}
