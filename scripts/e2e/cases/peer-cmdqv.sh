# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# peer-cmdqv: QEMU 11.1 beside ours on the CMD-QV L0 (issue 17 item 4).
# L0 is QEMU 10.2.2 + the test-only Tegra241 CMD-QV hardware model
# (CASE_NESTED_L0=cmdqv); L1's 7.2 tegra241-cmdqv owns it and serves a user
# vIOMMU of type TEGRA241_CMDQV a guest-owned VINTF (VINTF1). One L1 boot,
# four VMM runs one after the other, each handing the disk 0000:00:02.0 to
# the same 7.2 L2 (iommu.strict=1, 1 vCPU, 512 MiB):
#   qemu-cmdqv   sid's qemu-system-aarch64 11.1 (peer/build-qemu.sh),
#                -device arm-smmuv3,accel=on,cmdqv=on over iommufd, ACPI
#                through edk2 (QEMU refuses accel=on under DT), guest RAM
#                in 2 MiB huge pages (memory-backend-memfd,hugetlb=on: a
#                VCMDQ ring must be physically contiguous in L1)
#   qemu-accel   the same QEMU with accel=on and cmdqv=off (as peer-host)
#   ours-cmdqv   cloud-hypervisor --vsmmu cmdqv, --memory ...,hugepages=on
#   ours-smmuv3  cloud-hypervisor --vsmmu smmuv3 (trapped CMDQ, one
#                IOMMU_HWPT_INVALIDATE per CMD_SYNC batch)
# The L2 (2 vCPUs) reads 15 MiB in 4 KiB requests (checksum, time), then
# binds the function to dma_map_benchmark and runs it at granule 1 and 16
# pages with 1 and 2 threads (BENCH_SECONDS each) and at 1023 with 1 (two
# range TLBIs per CMD_SYNC). Around each workload it prints
# "E2E-L2: mark NAME" and L1 snapshots (l1-lib.sh MEASURE_HOOK): ours'
# vm.counters (ch-remote), QEMU's trace line count. QEMU traces (its log
# backend, a file in L1's tmpfs) kvm_run_exit (every exit to QEMU), its
# SMMU/CMD-QV MMIO accesses, smmuv3_cmdq_opcode (each trapped guest command),
# iommufd_backend_invalidate_cache (each IOMMU_HWPT_INVALIDATE), and its
# vIOMMU / HW queue / page0 mmap calls. The L0 trace (<log>.l0-trace) shows
# what each VM ran through VINTF1's VCMDQs: one session per TEGRA241 vIOMMU,
# from "vintf=1 en=1" to its disable (QEMU's first, then ours).
# Asserted: structure only (every VMM exits 0 and its L2 reads the right
# checksum; QEMU's L2 allocated its VCMDQs; ours made 0 IOMMU_HWPT_INVALIDATE
# during the VCMDQ read). Every count and time is recorded, not asserted:
# target/e2e/peer-cmdqv/table-7.2.txt.
CASE_DESC="nested lane, CMD-QV L0: QEMU 11.1 arm-smmuv3,accel=on,cmdqv=on and accel=on beside ours --vsmmu cmdqv and smmuv3 on the same VFIO disk: checksum, read time, exits and invalidate ioctls per workload, VINTF1 commands in L0, boot-to-init, RSS"
CASE_DEFAULT=1
CASE_TIMEOUT=2400
CASE_QEMU=nested
CASE_NESTED_L0=cmdqv
CASE_KERNELS=7.2
PEER_CMDQV_STEPS="qemu-cmdqv qemu-accel ours-cmdqv ours-smmuv3"
# bench_latencies (the E2E-BENCH line parser).
# shellcheck source=scripts/e2e/bench-lib.sh
. "$E2E_DIR/bench-lib.sh"
PEER_CMDQV_FW=/usr/share/qemu-efi-aarch64/QEMU_EFI.fd
PEER_CMDQV_SEGS="read bench-g1 bench-g16 bench-g1023 bench-g1-t2 bench-g16-t2"

# The QEMU payload at / and edk2 (from the sid chroot: this L0 is not it).
case_prepare() {
  local payload chroot="${L0_CHROOT:-}"
  payload="$(timed "peer-cmdqv: qemu-system-aarch64 payload (arm64)" "$E2E_DIR/peer/build-qemu.sh")" || return 1
  [ -n "$chroot" ] || chroot="$(timed "peer-cmdqv: sid chroot (edk2)" "$NESTED_DIR/setup-l0.sh")" || return 1
  [ -f "$chroot$PEER_CMDQV_FW" ] || die "peer-cmdqv: no $PEER_CMDQV_FW in the sid chroot (qemu-efi-aarch64)"
  L1_EXTRA+=("$payload:/" "$chroot$PEER_CMDQV_FW:$PEER_CMDQV_FW")
}

case_l1_script() {
  echo "fw=$PEER_CMDQV_FW"
  echo "segs=\"$PEER_CMDQV_SEGS\""
  cat <<'EOS'
VMM_TIMEOUT=480
qemu=/usr/bin/qemu-system-aarch64
disk=$(echo "$E2E_VFIO" | cut -d, -f1)
cmdline="console=ttyAMA0 panic=-1 iommu.strict=1"
echo "E2E-L1: peer $($qemu --version | head -1)"
# 2 MiB pages for the CMD-QV steps' guest RAM (512 MiB each, one at a time).
echo 300 >/proc/sys/vm/nr_hugepages
echo "E2E-L1: hugepages total=$(awk '/HugePages_Total/ {print $2}' /proc/meminfo) size=$(awk '/Hugepagesize/ {print $2}' /proc/meminfo)kB"
# The snapshot at each "E2E-L2: mark NAME" (l1-lib.sh MEASURE_HOOK).
# (A kernel message may land on the mark's console line: keep NAME up to -begin/-end.)
cat >/tmp/mark.sh <<'EOM'
set -- "$1" "$(echo "$2" | sed -E 's/-(begin|end).*/-\1/')"
case "$1" in
qemu-*)
  n=$(wc -l <"/tmp/$1.trace" 2>/dev/null)
  echo "$2 ${n:-0}" >>"/tmp/$1.marks"
  echo "E2E-L1: mark step=$1 at=$2 trace-lines=${n:-0}" ;;
*) echo "E2E-L1: mark step=$1 at=$2 counters=$(/bin/ch-remote --api-socket "/tmp/ch-$1.sock" counters 2>&1 | tr -d '\n ')" ;;
esac
EOM
MEASURE_HOOK="sh /tmp/mark.sh"
# qcount: counts of a QEMU trace excerpt (stdin).
qcount() {
  awk '
    /kvm_run_exit / { exits++; if ($NF == 6) mmio++ }
    /smmuv3_(read|write)_mmio/ { smmu++ }
    /tegra241_cmdqv_(read|write)_/ { cq++ }
    /iommufd_backend_invalidate_cache/ { inv++; if ($0 !~ /\(0\)$/) invf++ }
    /smmuv3_cmdq_opcode/ { cmds++; if (/SMMU_CMD_SYNC/) syncs++; else if (/SMMU_CMD_TLBI/) tlbi++ }
    END { printf "exits=%d mmio_exits=%d smmu_mmio=%d cmdqv_mmio=%d cmds=%d syncs=%d tlbi=%d invalidate_ioctls=%d invalidate_failed=%d\n", exits, mmio, smmu, cq, cmds, syncs, tlbi, inv, invf }'
}
# qemu_run STEP SMMU_OPTS MEM_OPTS...: QEMU 11.1 with its trace, then the
# whole run's counts and each marked segment's.
qemu_run() {
  step=$1 smmu=$2
  shift 2
  trace=/tmp/$step.trace
  rm -f "$trace" "/tmp/$step.marks"
  : >"$trace"
  # shellcheck disable=SC2086
  vmm_measured "$step" $qemu -M virt,gic-version=3 -accel kvm -cpu host -smp 2 -m 512M "$@" \
    -nographic -nic none -no-reboot -bios "$fw" -kernel /l2/Image -initrd /l2/initrd -append "$cmdline" \
    -object iommufd,id=ifd0 -device "arm-smmuv3,primary-bus=pcie.0,$smmu,id=smmu0" \
    -device vfio-pci,host="$disk",iommufd=ifd0 \
    -trace kvm_run_exit -trace 'smmuv3_*_mmio' -trace 'tegra241_cmdqv_*' -trace smmuv3_cmdq_opcode \
    -trace iommufd_backend_invalidate_cache -trace 'smmuv3_accel_*' -trace iommufd_backend_alloc_viommu \
    -trace iommufd_backend_alloc_vdev -trace iommufd_backend_alloc_hw_queue -trace iommufd_backend_viommu_mmap \
    -trace iommufd_viommu_alloc_eventq -trace virt_acpi_dsdt_tegra241_cmdqv -D "$trace"
  grep -E 'smmuv3_accel_(set_iommu_device|install_ste)|iommufd_backend_(alloc_viommu|alloc_hw_queue|viommu_mmap|alloc_vdev)|iommufd_viommu_alloc_eventq|virt_acpi_dsdt_tegra241|tegra241_cmdqv_init_regs' "$trace" |
    head -16 | sed "s/^/E2E-L1-QTRACE: $step /"
  echo "E2E-L1: qemu-run step=$step viommu_allocs=$(grep -c iommufd_backend_alloc_viommu "$trace") hw_queue_allocs=$(grep -c iommufd_backend_alloc_hw_queue "$trace") page0_mmaps=$(grep -c iommufd_backend_viommu_mmap "$trace")"
  echo "E2E-L1: qemu-counts step=$step seg=all $(qcount <"$trace")"
  for s in $segs; do
    b=$(awk -v k="$s-begin" '$1 == k {print $2}' "/tmp/$step.marks" 2>/dev/null)
    e=$(awk -v k="$s-end" '$1 == k {print $2}' "/tmp/$step.marks" 2>/dev/null)
    [ -n "$b" ] && [ -n "$e" ] || continue
    echo "E2E-L1: qemu-counts step=$step seg=$s $(sed -n "$((b + 1)),${e}p" "$trace" | qcount)"
  done
  rm -f "$trace"
  echo "E2E-L1: after $step $disk driver=$(basename "$(readlink "/sys/bus/pci/devices/$disk/driver")") hugepages_free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)"
}
ours_run() {
  step=$1
  shift
  # shellcheck disable=SC2086
  vmm_measured "$step" /bin/cloud-hypervisor -v --kernel /l2/Image --initramfs /l2/initrd \
    --cpus boot=2 --serial tty --cmdline "$cmdline" "$@" \
    --device "path=/sys/bus/pci/devices/$disk,iommu=on" --api-socket "/tmp/ch-$step.sock"
  echo "E2E-L1: after $step $disk driver=$(basename "$(readlink "/sys/bus/pci/devices/$disk/driver")") hugepages_free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)"
}
qemu_run qemu-cmdqv accel=on,cmdqv=on -object memory-backend-memfd,id=mem0,size=512M,hugetlb=on,hugetlbsize=2M -machine memory-backend=mem0
qemu_run qemu-accel accel=on,cmdqv=off
ours_run ours-cmdqv --memory size=512M,hugepages=on --vsmmu cmdqv
ours_run ours-smmuv3 --memory size=512M --vsmmu smmuv3
dmesg | grep -iE 'smmu|cmdqv|iommufd' | tail -12 | sed 's/^/E2E-L1-DMESG: /'
EOS
}

case_l2_script() {
  nested_l2_disk_helpers
  echo "seconds=${BENCH_SECONDS:-2}"
  cat <<'EOS'
dmesg | grep -iE 'arm-smmu-v3|cmdqv|vcmdq' | head -24 | sed 's/^/E2E-L2-DMESG: /'
for d in /sys/bus/pci/devices/*; do
  [ -e "$d" ] || continue
  echo "E2E-L2: pci $(basename "$d") $(cat "$d/vendor"):$(cat "$d/device") group=$(basename "$(readlink "$d/iommu_group" 2>/dev/null)") domain=$(cat "$d/iommu_group/type" 2>/dev/null)"
done
# L1 takes its snapshot when it reads the mark: wait for it.
mark() { echo "E2E-L2: mark $1"; sleep 3; }
dev=
for b in /sys/block/vd*; do
  [ -e "$b" ] || continue
  n=$(basename "$b")
  dev=$(disk_pci "$b")
  small_requests "$b"
  mark read-begin
  t0=$(cut -d' ' -f1 /proc/uptime)
  sum=$(dd if="/dev/$n" bs=4096 count=3840 2>/dev/null | sha256sum | cut -d' ' -f1)
  t1=$(cut -d' ' -f1 /proc/uptime)
  mark read-end
  echo "E2E-L2: read $n pci=$dev blocks=3840 sha256=$sum seconds=$(awk "BEGIN{printf \"%.2f\", $t1-$t0}")"
done
# The same function under dma_map_benchmark: granule 16 unmaps 16 pages at
# a time, one range TLBI (the host SMMU, and so both vSMMUs, have RIL);
# granule 1023 needs two range TLBIs (31 pages, then 31 x 32) before one
# CMD_SYNC: several invalidations per sync.
if [ -n "$dev" ]; then
  echo "$dev" >/sys/bus/pci/drivers/virtio-pci/unbind
  echo dma_map_benchmark >"/sys/bus/pci/devices/$dev/driver_override"
  echo "$dev" >/sys/bus/pci/drivers/dma_map_benchmark/bind || echo "E2E-BENCH: bind failed"
  sleep 1
  # Segment bench-gG (1 thread) or bench-gG-tT; every result line carries
  # its run's granule and thread count.
  for run in 1:1 16:1 1023:1 1:2 16:2; do
    g=${run%:*} t=${run#*:}
    seg="bench-g$g"
    [ "$t" = 1 ] || seg="$seg-t$t"
    mark "$seg-begin"
    dma_map_benchmark -t "$t" -g "$g" -s "$seconds" 2>&1 | sed "s/^/E2E-BENCH: g=$g t=$t /"
    mark "$seg-end"
  done
fi
EOS
}

# pc_cnt JSON DEVICE KEY: the first "KEY":N after "DEVICE":{ in a vm.counters
# JSON (KEY may be a regex), or empty.
pc_cnt() { sed -n "s/.*\"$2\":{//p" <<<"$1" | grep -oE "\"$3\":[0-9]+" | head -1 | cut -d: -f2; }
# pc_mmio JSON: the sum of every device's mmio_exits.
pc_mmio() { grep -oE '"mmio_exits":[0-9]+' <<<"$1" | cut -d: -f2 | awk '{s += $1} END {print s + 0}'; }
# pc_ours_seg STEP SEG: "MMIO_EXITS IOMMU_EXITS INVALIDATES TRAPPED_CMDS TRAPPED_SYNCS" during SEG (deltas).
pc_ours_seg() {
  local b e d k out=""
  # (at=NAME may carry the tail of a kernel message: see mark.sh.)
  b="$(grep -m1 -oE "E2E-L1: mark step=$1 at=$2-begin[^ ]* counters=\{.*" "$LOG" | sed 's/.*counters=//' || true)"
  e="$(grep -m1 -oE "E2E-L1: mark step=$1 at=$2-end[^ ]* counters=\{.*" "$LOG" | sed 's/.*counters=//' || true)"
  if [ -z "$b" ] || [ -z "$e" ]; then echo "- - - - -"; return; fi
  out="$(($(pc_mmio "$e") - $(pc_mmio "$b")))"
  local ve vb ce cb
  ve="$(pc_cnt "$e" vsmmu0 mmio_exits)" vb="$(pc_cnt "$b" vsmmu0 mmio_exits)"
  ce="$(pc_cnt "$e" cmdqv0 mmio_exits)" cb="$(pc_cnt "$b" cmdqv0 mmio_exits)"
  out+=" $(( ${ve:-0} + ${ce:-0} - ${vb:-0} - ${cb:-0} ))"
  local x y
  for k in '(backend_calls\.)?invalidate' trapped_commands trapped_syncs; do
    x="$(pc_cnt "$e" vsmmu0 "$k")" y="$(pc_cnt "$b" vsmmu0 "$k")"
    d=$(( ${x:-0} - ${y:-0} ))
    out+=" $d"
  done
  echo "$out"
}
# pc_qemu_seg STEP SEG: the same five from QEMU's trace counts.
pc_qemu_seg() {
  local l
  l="$(grep -m1 -oE "E2E-L1: qemu-counts step=$1 seg=$2 .*" "$LOG" || true)"
  [ -n "$l" ] || { echo "- - - - -"; return; }
  awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    END { print v["mmio_exits"], v["smmu_mmio"] + v["cmdqv_mmio"], v["invalidate_ioctls"], v["cmds"], v["syncs"] }' <<<"$l"
}
# pc_l0 STEP: "CMDS SYNCS TLBI VMID_REWRITES ERRORS" the step's VM ran through
# VINTF1 (L0 trace sessions: QEMU's viommu_allocs first, then ours' one).
pc_l0() {
  local tr="$LOG.l0-trace" nq from to
  [ -s "$tr" ] || { echo "- - - - -"; return; }
  nq="$(grep -oE 'E2E-L1: qemu-run step=qemu-cmdqv viommu_allocs=[0-9]+' "$LOG" | head -1 | cut -d= -f3)"
  nq="${nq:-0}"
  case "$1" in
    qemu-cmdqv) from=1 to="$nq" ;;
    ours-cmdqv) from=$((nq + 1)) to=$((nq + 1)) ;;
    *) echo "- - - - -"; return ;;
  esac
  awk -v from="$from" -v to="$to" '
    /tegra241_hw_vintf_config vintf=1 en=1/ { n++; on = 1 }
    on && n >= from && n <= to && /tegra241_hw_cmd vintf=1 / { c++; if (/SMMU_CMD_SYNC/) s++; else if (/SMMU_CMD_TLBI/) t++ }
    on && n >= from && n <= to && /tegra241_hw_cmd_vmid vintf=1 / { v++ }
    on && n >= from && n <= to && /tegra241_hw_error vintf=1 / { e++ }
    /tegra241_hw_vintf_config vintf=1 en=0/ { on = 0 }
    END { print c + 0, s + 0, t + 0, v + 0, e + 0 }' "$tr"
}

peer_cmdqv_table() {
  local sum="$1" step vmm how secs read ok boot rss anon file l2up seg
  printf '%-5s %-38s %-7s %-8s %-7s %-8s %-17s %-28s %s\n' VMM "vSMMU" "read s" checksum "boot s" "L2 init" "RSS MiB (a+f)" "L0 VINTF1 cmds (SYNC/TLBI)" "L0 VMID rewrites/errors"
  for step in $PEER_CMDQV_STEPS; do
    section "$step" | grep "E2E-L1: vmm start" >/dev/null || continue
    read -r secs read < <(section "$step" | sed -n 's/.*E2E-L2: read vda .* sha256=\([0-9a-f]*\) seconds=\([0-9.]*\).*/\2 \1/p' | head -1)
    ok=wrong
    [ "${read:-}" = "$sum" ] && ok=ok
    case "$step" in
      qemu-cmdqv) vmm=QEMU how="arm-smmuv3,accel=on,cmdqv=on (ACPI)" ;;
      qemu-accel) vmm=QEMU how="arm-smmuv3,accel=on (ACPI)" ;;
      ours-cmdqv) vmm=ours how="--vsmmu cmdqv, hugepages=on" ;;
      *) vmm=ours how="--vsmmu smmuv3 (trapped)" ;;
    esac
    read -r boot rss anon file < <(section "$step" |
      sed -n 's/.*E2E-L1: measured step=[^ ]* boot-to-init=\([0-9.]*\) vmrss-kb=\([0-9]*\) rssanon-kb=\([0-9]*\) rssfile-kb=\([0-9]*\).*/\1 \2 \3 \4/p' | head -1)
    l2up="$(section "$step" | grep -o 'E2E-L2: booted uptime=[0-9.]*' | head -1 | cut -d= -f2)"
    local c s t v e
    read -r c s t v e < <(pc_l0 "$step")
    awk -v vmm="$vmm" -v how="$how" -v secs="${secs:--}" -v ok="$ok" -v boot="${boot:--}" -v l2up="${l2up:--}" \
      -v rss="${rss:-}" -v anon="${anon:-}" -v file="${file:-}" -v l0="$c ($s/$t)" -v l0b="$v/$e" 'BEGIN {
        mib = (rss == "") ? "-" : sprintf("%.0f (%.0f+%.0f)", rss / 1024, anon / 1024, file / 1024)
        if (l0 == "- (-/-)") l0 = "- (SMMU CMDQ)"
        printf "%-5s %-38s %-7s %-8s %-7s %-8s %-17s %-28s %s\n", vmm, how, secs, ok, boot, l2up, mib, l0, l0b
      }'
  done
  echo
  echo "Per workload, between the L2's marks (QEMU: its trace; ours: vm.counters):"
  printf '%-12s %-11s %-9s %-11s %-12s %-11s %-8s %-8s %-10s %s\n' step workload "unmap us" "MMIO exits" "IOMMU exits" "invalidate" "trapped" "SYNCs" "cmds/SYNC" "invalidate/SYNC"
  for step in $PEER_CMDQV_STEPS; do
    section "$step" | grep "E2E-L1: vmm start" >/dev/null || continue
    for seg in $PEER_CMDQV_SEGS; do
      local mx ix inv tc ts us g
      case "$step" in qemu-*) read -r mx ix inv tc ts < <(pc_qemu_seg "$step" "$seg") ;; *) read -r mx ix inv tc ts < <(pc_ours_seg "$step" "$seg") ;; esac
      us=-
      if [ "$seg" != read ]; then
        g="${seg#bench-g}" t=1
        case "$g" in *-t*) t="${g#*-t}" g="${g%-t*}" ;; esac
        us="$(bench_latencies "$step" | awk -v g="$g" -v t="$t" '$1 == g && $2 == t { print $4; exit }')"
      fi
      awk -v step="$step" -v seg="$seg" -v us="${us:--}" -v mx="$mx" -v ix="$ix" -v inv="$inv" -v tc="$tc" -v ts="$ts" 'BEGIN {
        r = (ts ~ /^[0-9]+$/ && ts > 0) ? sprintf("%.3f", inv / ts) : "-"
        c = (ts ~ /^[0-9]+$/ && ts > 0) ? sprintf("%.3f", (tc - ts) / ts) : "-"
        printf "%-12s %-11s %-9s %-11s %-12s %-11s %-8s %-8s %-10s %s\n", step, seg, us, mx, ix, inv, tc, ts, c, r
      }'
    done
  done
}

case_assert() {
  local sum step table d
  sum="$(nested_disk_sha $((15 << 20)))"
  expect_re "E2E-L1: peer QEMU emulator version 11\\.[0-9]" "the QEMU 11.x payload does not run in L1 (missing library? the payload's fallback release?)"
  for step in $PEER_CMDQV_STEPS; do
    step_expect_re "$step" "E2E-L1: vmm exit=0 step=$step " "the VMM did not exit 0"
    step_expect_re "$step" "E2E-L1: measured step=$step boot-to-init=[0-9.]+ vmrss-kb=[0-9]+" "no boot-to-init / RSS sample (the L2 never reached /init?)"
    step_expect_re "$step" "E2E-L2: read vda pci=0000:00:01.0 blocks=3840 sha256=$sum seconds=[0-9.]+" "the L2 guest did not read the disk's known content"
    step_reject_re "$step" "CMD_SYNC timeout|Illegal command" "the guest hit an SMMU command error"
    expect_re "E2E-L1: after $step $NESTED_DISK_BDF driver=vfio-pci" "the disk is not back on vfio-pci after $step"
  done
  # QEMU's L2 found its CMD-QV (ACPI NVDA200C) and allocated its VCMDQs.
  step_expect_re qemu-cmdqv "E2E-L2-DMESG: .*allocated [0-9]+ entries for vcmdq" "QEMU's L2 did not allocate tegra241 VCMDQs"
  step_reject_re qemu-cmdqv "E2E-L2-DMESG: .*(Falling back|CMDQV: failed)" "QEMU's L2 tegra241-cmdqv fell back or failed"
  expect_re "E2E-L1: qemu-run step=qemu-cmdqv viommu_allocs=[1-9][0-9]* hw_queue_allocs=[1-9]" "QEMU allocated no vIOMMU or no HW queue for cmdqv=on"
  expect_re "E2E-L1: qemu-counts step=qemu-accel seg=all .*invalidate_ioctls=[1-9][0-9]* invalidate_failed=0" "QEMU accel=on made no (or failed) IOMMU_HWPT_INVALIDATE"
  # Ours: both VCMDQs, and no IOMMU_HWPT_INVALIDATE while the L2 read through them.
  step_expect_re ours-cmdqv "E2E-L2-DMESG: .*allocated [0-9]+ entries for vcmdq1" "our L2 did not allocate both VCMDQs"
  read -r _ _ d _ _ < <(pc_ours_seg ours-cmdqv read)
  [ "$d" = 0 ] || fail "ours-cmdqv: $d IOMMU_HWPT_INVALIDATE during the VCMDQ read (expected 0)"
  step_reject_re ours-cmdqv "^\\[[^]]* ERROR " "our VMM logged an error"
  step_reject_re ours-smmuv3 "^\\[[^]]* ERROR " "our VMM logged an error"
  table="$(peer_cmdqv_table "$sum")"
  mkdir -p "$E2E_OUT/peer-cmdqv"
  echo "$table" | tee "$E2E_OUT/peer-cmdqv/table-${E2E_KERNEL:-k}.txt"
}
