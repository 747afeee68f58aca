# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# peer-host: the host-path half of "side by side with QEMU" (docs/perf/peer-qemu.md).
# In the nested lane's L1 (7.2, /dev/iommu, the disk 0000:00:02.0 on
# vfio-pci behind L0's nested SMMUv3), two VMMs one after the other hand the
# same VFIO function to the same L2 behind a vSMMU whose stage 1 is nested on
# the host SMMU (iommufd: vIOMMU, vDEVICE, nested HWPTs, invalidation):
#   qemu-host  sid's qemu-system-aarch64 11.1 (peer/build-qemu.sh) with
#              -device arm-smmuv3,accel=on and -device vfio-pci,iommufd=...
#              QEMU refuses accel=on under DT ("SMMUv3 with accel=on not
#              supported for DT"), so this VM boots by ACPI through edk2's
#              QEMU_EFI.fd (taken from the L0 chroot, which installs
#              qemu-efi-aarch64 for the lane's IORT route anyway).
#   ours-host  cloud-hypervisor --vsmmu smmuv3 --device path=...,iommu=on
# The L2 (iommu.strict=1: every unmap is TLBI + CMD_SYNC) reads the first
# 15 MiB of the disk in 4 KiB requests, checks its sha256 and times the read.
# Host calls per guest CMD_SYNC: QEMU's own trace events (its log backend,
# -trace ... -D FILE in L1's tmpfs): iommufd_backend_invalidate_cache is one
# IOMMU_HWPT_INVALIDATE ioctl, smmuv3_cmdq_opcode one guest command (CMD_SYNC
# among them); ours from its stop-time counters (-v: vsmmu0: ...). L1's kernel
# has no ftrace and there is no strace in L1, so these are the counters.
# Asserted: structure only (both VMMs exit 0, both L2s read the right
# checksum, QEMU's L2 probed its SMMU through the accelerated path, ours made
# one invalidate per CMD_SYNC at most); QEMU's counts and every timing are
# recorded, never asserted. The table: target/e2e/peer-host/table-7.2.txt.
CASE_DESC="nested lane: QEMU 11.1 (arm-smmuv3,accel=on over iommufd, ACPI/edk2) beside ours on the same VFIO disk: checksum, read time, invalidate ioctls per CMD_SYNC, boot-to-init, RSS"
CASE_DEFAULT=1
CASE_TIMEOUT=900
CASE_QEMU=nested
# The L2 guest kernel (L1 is always the nested 7.2).
CASE_KERNELS=7.2
PEER_HOST_STEPS="qemu-host ours-host"
PEER_HOST_FW=/usr/share/qemu-efi-aarch64/QEMU_EFI.fd

# The QEMU payload (binary + libraries) at / and edk2 for its ACPI boot.
case_prepare() {
  local payload chroot="${L0_CHROOT:-}"
  payload="$(timed "peer-host: qemu-system-aarch64 payload (arm64)" "$E2E_DIR/peer/build-qemu.sh")" || return 1
  # On another L0 (E2E_NESTED_L0=cmdqv-off, the control run) edk2 still
  # comes from the sid chroot.
  [ -n "$chroot" ] || chroot="$(timed "peer-host: sid chroot (edk2)" "$NESTED_DIR/setup-l0.sh")" || return 1
  [ -f "$chroot$PEER_HOST_FW" ] || die "peer-host: no $PEER_HOST_FW in the sid chroot (qemu-efi-aarch64)"
  L1_EXTRA+=("$payload:/" "$chroot$PEER_HOST_FW:$PEER_HOST_FW")
}

case_l1_script() {
  echo "fw=$PEER_HOST_FW"
  echo "qtrace=${E2E_PEER_HOST_TRACE:-1}"
  cat <<'EOS'
VMM_TIMEOUT=300
qemu=/usr/bin/qemu-system-aarch64
disk=$(echo "$E2E_VFIO" | cut -d, -f1)
cmdline="console=ttyAMA0 panic=-1 iommu.strict=1"
echo "E2E-L1: peer $($qemu --version | head -1)"
trace=/tmp/qemu-host.trace
# The payload falls back to this machine's release when sid's QEMU cannot
# be resolved (peer/build-qemu.sh); bookworm's 7.2 has no accel=on.
if ! $qemu -device arm-smmuv3,help 2>&1 | grep -q 'accel='; then
  echo "E2E-L1: peer-host: this QEMU's arm-smmuv3 has no accel property; QEMU step skipped"
else
targs=""
[ "$qtrace" = 1 ] && targs="-trace iommufd_backend_invalidate_cache -trace smmuv3_cmdq_opcode
  -trace smmuv3_accel_install_ste -trace smmuv3_accel_set_iommu_device -D $trace"
# shellcheck disable=SC2086
vmm_measured qemu-host $qemu -M virt,gic-version=3 -accel kvm -cpu host -smp 1 -m 512M \
  -nographic -nic none -no-reboot -bios "$fw" -kernel /l2/Image -initrd /l2/initrd -append "$cmdline" \
  -object iommufd,id=ifd0 -device arm-smmuv3,primary-bus=pcie.0,accel=on,id=smmu0 \
  -device vfio-pci,host="$disk",iommufd=ifd0 $targs
[ "$qtrace" = 1 ] && grep -E 'smmuv3_accel' "$trace" | head -8 | sed 's/^/E2E-L1-QTRACE: /'
[ "$qtrace" = 1 ] && echo "E2E-L1: qemu-host counts cmds=$(grep -c smmuv3_cmdq_opcode "$trace") syncs=$(grep -c 'SMMU_CMD_SYNC' "$trace") tlbi=$(grep -c 'SMMU_CMD_TLBI' "$trace") invalidate_ioctls=$(grep -c 'iommufd_backend_invalidate_cache' "$trace") invalidate_failed=$(grep 'iommufd_backend_invalidate_cache' "$trace" | grep -vc '(0)$')"
rm -f "$trace"
echo "E2E-L1: after qemu-host $disk driver=$(basename "$(readlink "/sys/bus/pci/devices/$disk/driver")")"
fi
vmm_measured ours-host /bin/cloud-hypervisor -v --kernel /l2/Image --initramfs /l2/initrd \
  --cpus boot=1 --memory size=512M --serial tty --cmdline "$cmdline" \
  --vsmmu smmuv3 --device "path=/sys/bus/pci/devices/$disk,iommu=on"
echo "E2E-L1: after ours-host $disk driver=$(basename "$(readlink "/sys/bus/pci/devices/$disk/driver")")"
EOS
}

case_l2_script() {
  nested_l2_disk_helpers
  cat <<'EOS'
dmesg | grep -E 'arm-smmu-v3|iommu' | head -8 | sed 's/^/E2E-L2-DMESG: /'
for d in /sys/bus/pci/devices/*; do
  [ -e "$d" ] || continue
  echo "E2E-L2: pci $(basename "$d") $(cat "$d/vendor"):$(cat "$d/device") group=$(basename "$(readlink "$d/iommu_group" 2>/dev/null)") domain=$(cat "$d/iommu_group/type" 2>/dev/null)"
done
for b in /sys/block/vd*; do
  [ -e "$b" ] || continue
  n=$(basename "$b")
  pci=$(disk_pci "$b")
  small_requests "$b"
  t0=$(cut -d' ' -f1 /proc/uptime)
  sum=$(dd if="/dev/$n" bs=4096 count=3840 2>/dev/null | sha256sum | cut -d' ' -f1)
  t1=$(cut -d' ' -f1 /proc/uptime)
  echo "E2E-L2: read $n pci=$pci blocks=3840 sha256=$sum seconds=$(awk "BEGIN{printf \"%.2f\", $t1-$t0}")"
done
EOS
}

# One row per VMM: the read (L2 time, checksum), guest CMD_SYNCs, host
# IOMMU_HWPT_INVALIDATE ioctls and their ratio, boot-to-init, the L2's own
# uptime at /init, RSS at /init.
peer_host_table() {
  local sum="$1" step vmm how read secs ok syncs calls boot rss anon file l2up
  printf '%-5s %-44s %-8s %-9s %-10s %-12s %-13s %-11s %-9s %s\n' \
    VMM "vSMMU (host path)" "read s" "checksum" "CMD_SYNCs" "invalidates" "inv/CMD_SYNC" "boot-init s" "L2 init s" "RSS MiB (anon+file)"
  for step in $PEER_HOST_STEPS; do
    section "$step" | grep -q "E2E-L1: vmm start" || continue
    read -r secs read < <(section "$step" | sed -n 's/.*E2E-L2: read vda .* sha256=\([0-9a-f]*\) seconds=\([0-9.]*\).*/\2 \1/p' | head -1)
    ok=wrong
    [ "${read:-}" = "$sum" ] && ok=ok
    case "$step" in
      qemu-host)
        vmm=QEMU how="arm-smmuv3,accel=on (ACPI, edk2)"
        # (the counts line follows the step's exit line)
        syncs="$(grep -o 'E2E-L1: qemu-host counts .*' "$LOG" | grep -o ' syncs=[0-9]*' | head -1 | cut -d= -f2)"
        calls="$(grep -o 'E2E-L1: qemu-host counts .*' "$LOG" | grep -o 'invalidate_ioctls=[0-9]*' | head -1 | cut -d= -f2)" ;;
      *)
        vmm=ours how="--vsmmu smmuv3 (DT + EFI stub hand-off)"
        syncs="$(section "$step" | grep -oE 'vsmmu0: .*trapped_syncs=[0-9]+' | tail -1 | grep -oE 'trapped_syncs=[0-9]+' | cut -d= -f2)"
        calls="$(section "$step" | grep -oE 'vsmmu0: .*invalidate_calls=[0-9]+' | tail -1 | grep -oE 'invalidate_calls=[0-9]+' | cut -d= -f2)" ;;
    esac
    read -r boot rss anon file < <(section "$step" |
      sed -n 's/.*E2E-L1: measured step=[^ ]* boot-to-init=\([0-9.]*\) vmrss-kb=\([0-9]*\) rssanon-kb=\([0-9]*\) rssfile-kb=\([0-9]*\).*/\1 \2 \3 \4/p' | head -1)
    l2up="$(section "$step" | grep -o 'E2E-L2: booted uptime=[0-9.]*' | head -1 | cut -d= -f2)"
    awk -v vmm="$vmm" -v how="$how" -v secs="${secs:--}" -v ok="$ok" -v s="${syncs:--}" -v c="${calls:--}" \
      -v boot="${boot:--}" -v l2up="${l2up:--}" -v rss="${rss:-}" -v anon="${anon:-}" -v file="${file:-}" 'BEGIN {
        mib = (rss == "") ? "-" : sprintf("%.0f (%.0f+%.0f)", rss / 1024, anon / 1024, file / 1024)
        ratio = (s > 0) ? sprintf("%.3f", c / s) : "-"
        printf "%-5s %-44s %-8s %-9s %-10s %-12s %-13s %-11s %-9s %s\n", vmm, how, secs, ok, s, c, ratio, boot, l2up, mib
      }'
  done
}

case_assert() {
  local sum step table stats
  sum="$(nested_disk_sha $((15 << 20)))"
  expect_re "E2E-L1: peer QEMU emulator version [0-9]" "the QEMU payload does not run in L1 (missing library? see the log)"
  local steps="$PEER_HOST_STEPS" qtrace="${E2E_PEER_HOST_TRACE:-1}"
  if has "E2E-L1: peer-host: this QEMU's arm-smmuv3 has no accel property"; then
    echo "  peer-host: $(grep -o 'E2E-L1: peer QEMU emulator version [^ ]*' "$LOG" | head -1 | cut -d' ' -f6): no arm-smmuv3 accel=on (the payload's fallback release?); only ours checked"
    steps=ours-host qtrace=0
  fi
  for step in $steps; do
    step_expect_re "$step" "E2E-L1: vmm exit=0 step=$step " "the VMM did not exit 0"
    step_expect_re "$step" "E2E-L1: measured step=$step boot-to-init=[0-9.]+ vmrss-kb=[0-9]+ rssanon-kb=[0-9]+ rssfile-kb=[0-9]+" "no boot-to-init / RSS sample (the L2 never reached /init?)"
    step_expect_re "$step" "E2E-L2: read vda pci=0000:00:01.0 blocks=3840 sha256=$sum seconds=[0-9.]+" "the L2 guest did not read the disk's known content through the nested vSMMU"
    step_expect_re "$step" "E2E-L2-DMESG: arm-smmu-v3 .*allocated [0-9]+ entries for cmdq" "the L2 arm-smmu-v3 driver did not probe the vSMMU"
    step_expect_re "$step" "E2E-L2: pci 0000:00:01.0 0x1af4:0x1042 group=[0-9]+ domain=DMA" "the passed-through disk is not in a DMA (translated) domain in L2"
    step_reject_re "$step" "CMD_SYNC timeout|Illegal command" "the guest hit an SMMU command error"
    expect_re "E2E-L1: after $step $NESTED_DISK_BDF driver=vfio-pci" "the disk is not back on vfio-pci after $step"
  done
  # QEMU: (with its tracing: E2E_PEER_HOST_TRACE=0 runs it untraced, for
  # the read time alone) the function went through the accelerated path (a vIOMMU device,
  # a nested HWPT from the guest's STE) and IOMMU_HWPT_INVALIDATE happened.
  # (printed after the step's exit line: outside its section.)
  [ "$qtrace" = 1 ] && expect_re "E2E-L1-QTRACE: smmuv3_accel_set_iommu_device " "QEMU did not attach the VFIO function to its accelerated SMMUv3"
  [ "$qtrace" = 1 ] && expect_re "E2E-L1-QTRACE: smmuv3_accel_install_ste vSID=0x[0-9a-f]+ ste type=translate" "the L2's STE did not become a nested HWPT under QEMU"
  [ "$qtrace" = 1 ] && expect_re "E2E-L1: qemu-host counts cmds=[1-9][0-9]* syncs=[1-9][0-9]* tlbi=[0-9]+ invalidate_ioctls=[1-9][0-9]* invalidate_failed=0" "no (or failed) IOMMU_HWPT_INVALIDATE from QEMU, or no trace counts"
  # Ours: one batched IOMMU_HWPT_INVALIDATE per CMD_SYNC at most, and many.
  stats="$(section ours-host | grep -oE 'vsmmu0: trapped_cmds=[0-9]+ trapped_syncs=[0-9]+ invalidate_calls=[0-9]+' | tail -1)"
  if [[ "$stats" =~ trapped_syncs=([0-9]+)\ invalidate_calls=([0-9]+) ]]; then
    local syncs="${BASH_REMATCH[1]}" calls="${BASH_REMATCH[2]}"
    ((calls >= 100)) || fail "ours-host: only $calls IOMMU_HWPT_INVALIDATE calls for a 15 MiB read with iommu.strict=1"
    ((calls <= syncs)) || fail "ours-host: $calls IOMMU_HWPT_INVALIDATE calls for $syncs CMD_SYNCs: more than one per sync"
  else
    fail "ours-host: no vsmmu0 stats line"
  fi
  step_reject_re ours-host "^\\[[^]]* ERROR " "the VMM logged an error"
  table="$(peer_host_table "$sum")"
  mkdir -p "$E2E_OUT/peer-host"
  echo "$table" | tee "$E2E_OUT/peer-host/table-${E2E_KERNEL:-k}.txt"
}
