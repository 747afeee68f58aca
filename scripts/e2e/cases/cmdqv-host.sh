# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# cmdqv-host: our VMM's --vsmmu cmdqv host path on Linux's real
# tegra241-cmdqv driver. L0 is the CMD-QV L0 (QEMU 10.2.2 + the Tegra241
# CMD-QV hardware model, CASE_NESTED_L0=cmdqv: run.sh picks it for this case
# whatever E2E_NESTED_L0 says); L1's 7.2 driver owns the CMD-QV (VINTF0 for
# its own commands) and serves our VMM's TEGRA241 vIOMMU a guest-owned VINTF
# (VINTF1 in the model). The L2 guest's tegra241-cmdqv driver runs its two
# VCMDQs on that VINTF's page0, mapped into L2 as a KVM memory slot: its
# TLBIs execute in L0 with no exit of our VMM. Steps (one VMM run each):
#   cmdqv    --vsmmu cmdqv + the disk (iommu=on), hugepages=on, L2 strict:
#            the vIOMMU, page0 memslot, vDEVICE -> SID_MATCH, both VCMDQs
#            (BASE = the L1 PA of the pinned guest ring: L1 reads it from
#            the VMM's pagemap), the disk read with its checksum, TLBIs in
#            L0 with the nest parent's VMID, 0 IOMMU_HWPT_INVALIDATE per unmap.
#   reboot   the guest reboots, then SIGTERM: queues freed descending, SID
#            slot cleared, page0 memslot gone before the vIOMMU, each time.
#   again    a second VM on the same L1 starts clean (no stale error).
#   illegal  the L2 writes CFGI_STE (not allowed on a guest-owned VINTF)
#            into LVCMDQ1 (a ring of its own past mem=, the driver's queue
#            for another CPU: idle here) and bumps PROD through the mapped
#            page0 (tools/cmdqv-illegal.c, which then rewrites the refused
#            entry as a CMD_SYNC): L0 raises CERROR_ILL, L1 reports it on the TEGRA241
#            vEVENTQ, our VMM sets the guest's error map + interrupt, the L2
#            driver skips the command and acks; the queue then completes,
#            and a later disk read (LVCMDQ0) is right.
#   edu      edu (iommu=on) driven by tools/edu-stale.c in L2 (iommufd +
#            VFIO cdev): IOVA X -> A, DMA reads A; LVCMDQ0 disabled through
#            page0, X remapped to B (its TLBI waits in the ring): DMA still
#            reads A (stale IOTLB in L0); LVCMDQ0 re-enabled, the TLBI runs
#            in L0 with VINTF1's VMID: DMA reads B.
# Evidence: our events and vm:counters, the L0 trace (<log>.l0-trace),
# L2 dmesg lines.
CASE_DESC="nested lane, CMD-QV L0: --vsmmu cmdqv on L1's real tegra241-cmdqv: TEGRA241 vIOMMU, page0 memslot, SID_MATCH, the L2's VCMDQs in L0 (no exits, no invalidate ioctls, nest parent's VMID), reboot/SIGTERM order, a second VM clean, an illegal guest command recovered"
CASE_DEFAULT=1
CASE_TIMEOUT=1500
CASE_QEMU=nested
CASE_NESTED_L0=cmdqv
# The L2 guest kernel (L1 is always the nested 7.2).
CASE_KERNELS=7.2
# L2: RAM past mem= (448M of 512M) for the illegal-command ring.
CMDQV_HOST_RING=0x5c000000

# The L2's illegal-command writer (tools/cmdqv-illegal.c), static aarch64.
case_prepare() {
  local src="$E2E_DIR/tools/cmdqv-illegal.c" bin="$1/cmdqv-illegal"
  aarch64-linux-gnu-gcc -static -O2 -Wall -o "$bin" "$src" || return 1
  L2_EXTRA+=("$bin:/bin/cmdqv-illegal")
  # The edu stale-TLB helper (iommufd + VFIO cdev uAPI of the 7.2 headers).
  local inc
  inc="$("$REPO_ROOT/scripts/uapi-headers.sh")" || return 1
  aarch64-linux-gnu-gcc -static -O2 -Wall -I"$inc" -o "$1/edu-stale" "$E2E_DIR/tools/edu-stale.c" || return 1
  L2_EXTRA+=("$1/edu-stale:/bin/edu-stale")
}

case_l1_script() {
  cat <<'EOS'
VMM_TIMEOUT=400
disk=/sys/bus/pci/devices/$(echo "$E2E_VFIO" | cut -d, -f1)
# Guest RAM in 2 MiB huge pages: each VCMDQ ring is physically contiguous
# in L1, as IOMMU_HW_QUEUE_ALLOC requires.
echo 320 >/proc/sys/vm/nr_hugepages
echo "E2E-L1: hugepages total=$(awk '/HugePages_Total/ {print $2}' /proc/meminfo) size=$(awk '/Hugepagesize/ {print $2}' /proc/meminfo)kB"
l2="--kernel /l2/Image --initramfs /l2/initrd --cpus boot=1 --memory size=512M,hugepages=on --serial tty"
cmd="console=ttyAMA0 panic=-1 iommu.strict=1 mem=448M"
cmdqv_state() {
  echo "E2E-L1: after $1 $(basename "$disk") vfio-dev=$(ls "$disk/vfio-dev" | xargs) driver=$(basename "$(readlink "$disk/driver")") hugepages_free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)"
}
# l1_pa PID GPA: the L1 physical address behind guest address GPA of
# cloud-hypervisor PID (its 512 MiB guest RAM mapping at GPA 0x40000000).
l1_pa() {
  start=
  while read -r range _; do
    [ $((0x${range#*-} - 0x${range%-*})) = 536870912 ] && { start=${range%-*}; break; }
  done <"/proc/$1/maps"
  [ -n "$start" ] || { echo none; return; }
  hva=$((0x$start + $2 - 0x40000000))
  e=$(dd if="/proc/$1/pagemap" bs=8 skip=$((hva / 4096)) count=1 2>/dev/null | od -An -tx8 | tr -d ' ')
  [ -n "$e" ] || { echo none; return; }
  printf '0x%x\n' $(( ((0x$e & 0x7fffffffffffff) << 12) | (hva & 4095) ))
}
# vmm_pa STEP ARGS...: vmm STEP ARGS --api-socket ..., in the background;
# each HW queue allocation it reports (cmdqv:hw-queue-alloc) is printed with
# the L1 PA of its ring, read from the VMM's pagemap while it runs:
#   E2E-L1: ring step=STEP index=I gpa=G l1pa=P
# and when the L2 prints "E2E-L2: read-begin" / "E2E-L2: read-end" (then
# waits), the VMM's vm.counters at that moment:
#   E2E-L1: counters step=STEP at=begin|end {json}
vmm_pa() {
  step=$1
  log=/tmp/vmm-pa-$step.log
  sock=/tmp/ch-$step.sock
  : >"$log"
  vmm "$@" --api-socket "$sock" >"$log" 2>&1 &
  bg=$!
  seen=""
  while kill -0 "$bg" 2>/dev/null; do
    pid=$(pidof cloud-hypervisor | cut -d' ' -f1)
    for at in begin end; do
      case " $seen " in *" at-$at "*) continue ;; esac
      unsplit "$log" | grep -q "E2E-L2: read-$at" || continue
      seen="$seen at-$at"
      echo "E2E-L1: counters step=$step at=$at $(/bin/ch-remote --api-socket "$sock" counters 2>&1 | tr -d '\n ')" >>/tmp/vmm-pa-$step.rings
    done
    for line in $(grep -o '"event":"hw-queue-alloc","properties":{"gpa":"0x[0-9a-f]*","id":"cmdqv0","index":"[0-9]*"' "$log" | tr -d '"' | sed 's/.*gpa:\([^,]*\),id:cmdqv0,index:\(.*\)/\2=\1/'); do
      case " $seen " in *" $line "*) continue ;; esac
      seen="$seen $line"
      [ -n "$pid" ] && echo "E2E-L1: ring step=$step index=${line%%=*} gpa=${line#*=} l1pa=$(l1_pa "$pid" "${line#*=}")" >>/tmp/vmm-pa-$step.rings
    done
    sleep 1
  done
  wait "$bg"
  rc=$?
  cat "$log"
  cat /tmp/vmm-pa-$step.rings 2>/dev/null
  return $rc
}
# shellcheck disable=SC2086
vmm_pa cmdqv -v $l2 --cmdline "$cmd e2e_step=cmdqv" --vsmmu cmdqv --device "path=$disk,iommu=on"
cmdqv_state cmdqv
# shellcheck disable=SC2086
vmm_until reboot "E2E-L2: booted" 2 -v $l2 --cmdline "$cmd e2e_step=reboot" \
  --vsmmu cmdqv --device "path=$disk,iommu=on"
cmdqv_state reboot
# shellcheck disable=SC2086
vmm again -v $l2 --cmdline "$cmd e2e_step=again" --vsmmu cmdqv --device "path=$disk,iommu=on"
cmdqv_state again
# shellcheck disable=SC2086
vmm illegal -v $l2 --cmdline "$cmd e2e_step=illegal" --vsmmu cmdqv --device "path=$disk,iommu=on"
cmdqv_state illegal
# edu behind the vSMMU + CMD-QV: a remap whose TLBI waits in a disabled
# VCMDQ leaves edu's DMA on the old page until the TLBI runs in L0.
edu=/sys/bus/pci/devices/$(echo "$E2E_VFIO" | cut -d, -f2)
# shellcheck disable=SC2086
vmm edu -v $l2 --cmdline "$cmd e2e_step=edu" --vsmmu cmdqv --device "path=$edu,iommu=on"
cmdqv_state edu
dmesg | grep -iE 'smmu|cmdqv|iommufd' | tail -20 | sed 's/^/E2E-L1-DMESG: /'
EOS
}

case_l2_script() {
  nested_l2_disk_helpers
  echo "ring=$CMDQV_HOST_RING"
  cat <<'EOS'
step=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^e2e_step=//p')
dmesg | grep -iE 'cmdqv|vcmdq' | sed 's/^/E2E-L2-DMESG: /'
# The guest's CMD-QV (cloud-hypervisor's layout): VINTF0 page0/page1.
P0=$((0x0b030000))
P1=$((0x0b040000))
hx() { printf '0x%x' "$1"; }
r32() { echo $(($(devmem "$1" 32))); }
read_disk() { # BLOCKS
  for b in /sys/block/vd*; do
    [ -e "$b" ] || continue
    n=$(basename "$b")
    small_requests "$b"
    sum=$(dd if="/dev/$n" bs=4096 count="$1" 2>/dev/null | sha256sum | cut -d' ' -f1)
    echo "E2E-L2: read $n pci=$(disk_pci "$b") blocks=$1 sha256=$sum"
  done
}
for l in 0 1; do
  echo "E2E-L2: lvcmdq$l base=$(hx $(( ($(r32 $((P1 + 0x80 * l + 4))) << 32) | $(r32 $((P1 + 0x80 * l))) ))) cons=$(hx "$(r32 $((P0 + 0x80 * l)))") prod=$(hx "$(r32 $((P0 + 0x80 * l + 4)))") status=$(r32 $((P0 + 0x80 * l + 0xc))) gerror=$(hx "$(r32 $((P0 + 0x80 * l + 0x10)))") gerrorn=$(hx "$(r32 $((P0 + 0x80 * l + 0x14)))")"
done
case "$step" in
edu)
  d=/sys/bus/pci/devices/0000:00:01.0
  echo vfio-pci >"$d/driver_override"
  echo 0000:00:01.0 >/sys/bus/pci/drivers_probe
  cdev=$(ls "$d/vfio-dev" 2>/dev/null | head -1)
  echo "E2E-L2: edu driver=$(basename "$(readlink "$d/driver")") cdev=${cdev:-none}"
  edu-stale "/dev/vfio/devices/$cdev" "$P0"
  dmesg | grep -iE 'CMD_SYNC timeout|CMDQ error' | tail -4 | sed 's/^/E2E-L2-ERR: /'
  ;;
cmdqv)
  # L1 takes the VMM's counters at each marker (it polls once a second).
  echo "E2E-L2: read-begin"
  sleep 4
  read_disk 3840
  echo "E2E-L2: read-end"
  sleep 4
  ;;
reboot)
  read_disk 256
  sleep 3
  echo "E2E-L2: rebooting"
  reboot -f
  sleep 10
  ;;
again) read_disk 256 ;;
illegal)
  read_disk 256
  q0=$((P0 + 0x80)) q1=$((P1 + 0x80))
  drv=$(( ($(r32 $((q1 + 4))) << 32) | $(r32 "$q1") ))
  log2=$((drv & 31))
  size=$((1 << log2))
  # LVCMDQ1 onto our ring (RAM past mem=, so /dev/mem may write it):
  # disable, BASE, enable (the VMM frees and re-allocates its HW queue).
  devmem $((q0 + 8)) 32 0
  i=0; while [ $(($(r32 $((q0 + 0xc))) & 1)) = 1 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  devmem "$q1" 64 $((ring | log2))
  devmem $((q0 + 8)) 32 1
  i=0; while [ $(($(r32 $((q0 + 0xc))) & 1)) = 0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  # The command, PROD and the rewrite of the refused entry in one go.
  cmdqv-illegal "$P0" 1 "$ring" "$log2" 0x8
  prod=$(r32 $((q0 + 4)))
  i=0
  while [ $i -lt 100 ]; do
    c=$(r32 "$q0")
    [ $((c & 0x00ffffff)) = "$prod" ] && [ "$(r32 $((q0 + 0x10)))" = "$(r32 $((q0 + 0x14)))" ] && break
    sleep 0.1; i=$((i + 1))
  done
  # (CONS.ERR keeps the last error's code: only the index moves on.)
  c=$(r32 "$q0")
  echo "E2E-L2: illegal final cons=$(hx $((c & 0x00ffffff))) prod=$(hx "$(r32 $((q0 + 4)))") gerror=$(hx "$(r32 $((q0 + 0x10)))") gerrorn=$(hx "$(r32 $((q0 + 0x14)))") cons-err=$(((c >> 24) & 0x7f)) waited=$i"
  dmesg | grep -iE 'CMDQ error|skipping command|Illegal|cmdqv' | tail -8 | sed 's/^/E2E-L2-ERR: /'
  # Back to the driver's ring, then more TLBIs through LVCMDQ0.
  devmem $((q0 + 8)) 32 0
  i=0; while [ $(($(r32 $((q0 + 0xc))) & 1)) = 1 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  devmem "$q1" 64 "$drv"
  devmem $((q0 + 8)) 32 1
  echo 3 >/proc/sys/vm/drop_caches
  read_disk 512
  ;;
esac
EOS
}

case_assert() {
  local tr="$LOG.l0-trace" sum
  sum="$(nested_disk_sha $((15 << 20)))"
  if ! has "E2E-L2: booted"; then
    fail "the L2 guest never booted; see the L1 console and $tr"
  fi
  # --- cmdqv: the host path up, in order --------------------------------------
  step_expect_event cmdqv "vsmmu:vdevice id=vsmmu0 vsid=0x8" "no vDEVICE for the disk at vSID 0x8"
  step_expect_event cmdqv "vsmmu:viommu-ready id=vsmmu0 kind=cmdqv backend=iommufd vdevices=1" "no TEGRA241 vIOMMU on iommufd"
  in_order cmdqv "the CMD-QV host path did not come up in order" \
    "@vsmmu:viommu-ready id=vsmmu0 kind=cmdqv backend=iommufd" \
    "@cmdqv:page0-mapped id=cmdqv0" "@cmdqv:hw-queue-alloc id=cmdqv0 index=0" "@cmdqv:hw-queue-alloc id=cmdqv0 index=1"
  step_expect_re cmdqv "E2E-L2-DMESG: .*allocated [0-9]+ entries for vcmdq1" "the L2 tegra241-cmdqv driver did not allocate both VCMDQs"
  step_reject_re cmdqv "E2E-L2-DMESG: .*(Falling back|CMDQV: failed)" "the L2 tegra241-cmdqv driver fell back or failed"
  step_expect_re cmdqv "E2E-L2: read vda pci=0000:00:01.0 blocks=3840 sha256=$sum" "the L2 guest did not read the disk's known content through its VCMDQs"
  step_reject_event cmdqv "cmdqv:guest-error" "the host reported a VCMDQ error in a clean run"
  expect "E2E-L1: vmm exit=0 step=cmdqv " "the cmdqv run did not exit 0"
  # During the read (vm.counters before and after it, through the API): no
  # exit and no IOMMU_HWPT_INVALIDATE at all for its 3840 unmaps.
  local unmaps=3840 exits vexits inval allocs held frees cb ce
  cnt() { # JSON DEVICE KEY: the counter, or -1
    local v
    v="$(grep -oE "\"$2\":\{[^}]*\}" <<<"$1" | grep -oE "\"$3\":[0-9]+" | cut -d: -f2 || true)"
    echo "${v:--1}"
  }
  cb="$(grep -m1 -oE 'E2E-L1: counters step=cmdqv at=begin \{.*' "$LOG" | cut -d' ' -f5- || true)"
  ce="$(grep -m1 -oE 'E2E-L1: counters step=cmdqv at=end \{.*' "$LOG" | cut -d' ' -f5- || true)"
  local d_exits d_vexits d_inval d_allocs
  d_exits=$(( $(cnt "$ce" cmdqv0 mmio_exits) - $(cnt "$cb" cmdqv0 mmio_exits) ))
  d_vexits=$(( $(cnt "$ce" vsmmu0 mmio_exits) - $(cnt "$cb" vsmmu0 mmio_exits) ))
  d_inval=$(( $(cnt "$ce" vsmmu0 backend_calls.invalidate) - $(cnt "$cb" vsmmu0 backend_calls.invalidate) ))
  d_allocs=$(( $(cnt "$ce" cmdqv0 hw_queue_allocs) - $(cnt "$cb" cmdqv0 hw_queue_allocs) ))
  echo "  cmdqv-host cmdqv: during the read of $unmaps unmaps: cmdqv0.mmio_exits +$d_exits vsmmu0.mmio_exits +$d_vexits IOMMU_HWPT_INVALIDATE +$d_inval hw_queue_allocs +$d_allocs"
  if [ -z "$cb" ] || [ -z "$ce" ]; then
    fail "no vm.counters around the L2's read (E2E-L1: counters step=cmdqv at=begin/end)"
  else
    [ "$d_exits" = 0 ] || fail "$d_exits CMD-QV exits during $unmaps unmaps (expected 0: the VCMDQ page0 is mapped)"
    [ "$d_vexits" = 0 ] || fail "$d_vexits vSMMU exits during $unmaps unmaps (expected 0: TLBIs go to the VCMDQ)"
    [ "$d_inval" = 0 ] || fail "$d_inval IOMMU_HWPT_INVALIDATE ioctls during $unmaps unmaps (expected 0)"
  fi
  # The whole run's totals (at stop: the vm:counters events).
  exits="$(ev_prop cmdqv "vm:counters id=cmdqv0" mmio_exits)"
  vexits="$(ev_prop cmdqv "vm:counters id=vsmmu0" mmio_exits)"
  inval="$(ev_prop cmdqv "vm:counters id=vsmmu0" backend_calls.invalidate)"
  allocs="$(ev_prop cmdqv "vm:counters id=cmdqv0" hw_queue_allocs)"
  held="$(ev_prop cmdqv "vm:counters id=cmdqv0" hw_queues_allocated)"
  frees="$(ev_prop cmdqv "vm:counters id=cmdqv0" hw_queue_frees)"
  echo "  cmdqv-host cmdqv: unmaps>=$unmaps cmdqv0.mmio_exits=$exits vsmmu0.mmio_exits=$vexits invalidate_ioctls=$inval hw_queue_allocs=$allocs hw_queues_allocated=$held hw_queue_frees=$frees (whole run, boot included)"
  if [[ "$exits" =~ ^[0-9]+$ && "$vexits" =~ ^[0-9]+$ && "$inval" =~ ^[0-9]+$ ]]; then
    # Boot and probe included, still far below one per unmap.
    ((exits * 4 < unmaps)) || fail "$exits CMD-QV exits in a run of $unmaps unmaps: the VCMDQ page0 traps"
    ((inval * 4 < unmaps)) || fail "$inval IOMMU_HWPT_INVALIDATE ioctls in a run of $unmaps unmaps"
  else
    fail "no vm:counters events for cmdqv0/vsmmu0 in step cmdqv"
  fi
  [ "$allocs" = 2 ] || fail "hw_queue_allocs=$allocs in step cmdqv, expected 2"
  # (At stop the queues are still held: the teardown follows the counters.)
  [ "$held" = 2 ] || fail "hw_queues_allocated=$held at stop in step cmdqv, expected 2"
  # --- the L0 trace: VINTF1 sessions (one per vIOMMU) ------------------------
  if [ ! -s "$tr" ]; then
    fail "no L0 trace at $tr"
    return
  fi
  # Session k: from the k-th "VINTF1 enabled" to its disable. Steps: cmdqv=1,
  # reboot=2 and 3, again=4, illegal=5.
  sess() { awk -v k="$1" '/tegra241_hw_vintf_config vintf=1 en=1/ {n++} n == k {print} n == k && /tegra241_hw_vintf_config vintf=1 en=0/ {exit}' "$tr"; }
  local s1 vmid pvmid bad ntlbi nsync
  s1="$(sess 1)"
  vmid="$(grep -m1 -oE 'tegra241_hw_vintf_config vintf=1 en=1 vmid=[0-9]+ hyp_own=0' <<<"$s1" | grep -oE 'vmid=[0-9]+' | cut -d= -f2 || true)"
  [ -n "$vmid" ] || fail "L1 never enabled a guest-owned VINTF1 (HYP_OWN=0) [L0 trace]"
  pvmid="$(grep -m1 -oE 'tegra241_hw_vintf_config vintf=0 en=1 vmid=[0-9]+' "$tr" | grep -oE 'vmid=[0-9]+' | cut -d= -f2 || true)"
  grep -qE 'tegra241_hw_sid_match vintf=1 slot=[0-9]+ en=1 vsid=0x8' <<<"$s1" || fail "the vDEVICE did not program a SID_MATCH slot of VINTF1 for vSID 0x8 [L0 trace]"
  grep -qE 'tegra241_hw_sid_replace vintf=1 slot=[0-9]+ psid=0x[0-9a-f]+' <<<"$s1" || fail "no SID_REPLACE on VINTF1 [L0 trace]"
  local l base
  for l in 0 1; do
    base="$(grep -oE "tegra241_hw_vcmdq_base vintf=1 lvcmdq=$l q=[0-9]+ base=0x[0-9a-f]+" <<<"$s1" | grep -v 'base=0x0$' | tail -1 | grep -oE 'base=0x[0-9a-f]+' | cut -d= -f2 || true)"
    local pa
    pa="$(grep -oE "E2E-L1: ring step=cmdqv index=$l gpa=0x[0-9a-f]+ l1pa=0x[0-9a-f]+" "$LOG" | tail -1 | grep -oE 'l1pa=0x[0-9a-f]+' | cut -d= -f2 || true)"
    echo "  cmdqv-host cmdqv: VINTF1 LVCMDQ$l BASE=${base:-none} (L0 trace), ring L1 PA=${pa:-none} (pagemap)"
    if [ -z "$base" ]; then
      fail "L1 never programmed VINTF1 LVCMDQ$l's BASE [L0 trace]"
    elif [ -z "$pa" ] || [ $((base)) != $((pa)) ]; then
      fail "VINTF1 LVCMDQ$l BASE=$base is not the L1 PA of the guest ring (${pa:-unknown})"
    fi
  done
  ntlbi="$(grep -cE 'tegra241_hw_cmd vintf=1 lvcmdq=0 .*hyp_own=0 .*TLBI_NH_(VA|ASID)' <<<"$s1" || true)"
  nsync="$(grep -cE 'tegra241_hw_cmd vintf=1 lvcmdq=0 .*CMD_SYNC' <<<"$s1" || true)"
  bad="$(grep -E 'tegra241_hw_cmd_vmid vintf=1 ' <<<"$s1" | grep -vcE -- "-> $vmid\$" || true)"
  echo "  cmdqv-host cmdqv: VINTF1 VMID=$vmid (VINTF0 VMID=${pvmid:-?}), L2 TLBIs executed in L0=$ntlbi, CMD_SYNCs=$nsync, TLBIs with another VMID=$bad"
  ((ntlbi >= unmaps)) || fail "only $ntlbi TLBI_NH_* of the L2 ran on VINTF1 LVCMDQ0 for $unmaps unmaps [L0 trace]"
  [ "$bad" = 0 ] || fail "$bad L2 TLBIs ran with a VMID other than VINTF1's $vmid [L0 trace]"
  # VINTF1's VMID is the nest parent's: L1 invalidates that S2 with it
  # (TLBI_S12_VMALL on its own VINTF0; VMID = bits 47:32, in w1).
  local s2vmids
  s2vmids="$(grep -oE 'tegra241_hw_cmd vintf=0 .*TLBI_S12_VMALL w0=0x[0-9a-f]+ w1=0x[0-9a-f]+' "$tr" | grep -oE 'w1=0x[0-9a-f]+$' | while read -r w; do echo $((${w#w1=} & 0xffff)); done | sort -u | xargs || true)"
  echo "  cmdqv-host cmdqv: VMIDs of L1's TLBI_S12_VMALL on VINTF0 (the nest parents' S2): ${s2vmids:-none}"
  [[ " $s2vmids " == *" $vmid "* ]] || fail "VINTF1's VMID $vmid is not one L1 invalidates a nest parent's S2 with (TLBI_S12_VMALL VMIDs: ${s2vmids:-none}) [L0 trace]"
  grep -q 'tegra241_hw_error vintf=1 ' <<<"$s1" && fail "a VCMDQ error in the clean step [L0 trace: $(grep -m1 'tegra241_hw_error' <<<"$s1")]"
  # --- reboot + SIGTERM: the release order, twice --------------------------------
  in_order reboot "the reboot did not release and rebuild the CMD-QV host path in order" \
    "E2E-L2: rebooting" "@vm:rebooting cause=guest" "@cmdqv:page0-unmapped id=cmdqv0" \
    "@cmdqv:hw-queue-free id=cmdqv0 index=1" "@cmdqv:hw-queue-free id=cmdqv0 index=0" \
    "@vsmmu:viommu-released id=vsmmu0" "@vm:booting boot=2" "@vsmmu:viommu-ready id=vsmmu0 kind=cmdqv" \
    "@vm:rebooted boot=2" "@cmdqv:page0-mapped id=cmdqv0" "@cmdqv:hw-queue-alloc id=cmdqv0 index=1" "E2E-L2: booted" \
    "@cmdqv:page0-unmapped id=cmdqv0" "@cmdqv:hw-queue-free id=cmdqv0 index=1" "@cmdqv:hw-queue-free id=cmdqv0 index=0" \
    "@vsmmu:viommu-released id=vsmmu0" "@vm:shutdown reason=signal signal=15"
  step_reject_event reboot "cmdqv:guest-error" "a VCMDQ error across the reboot"
  local k s
  for k in 1 2 3 4 5 6; do
    s="$(sess $k)"
    # The kernel's teardown on VINTF1: the SID slot cleared, the queues'
    # BASE zeroed, the VINTF disabled, in that order at the end.
    grep -qE 'tegra241_hw_sid_match vintf=1 slot=[0-9]+ en=0' <<<"$s" || fail "vIOMMU $k: the SID_MATCH slot was not cleared [L0 trace]"
    grep -qE 'tegra241_hw_vintf_config vintf=1 en=0' <<<"$s" || fail "vIOMMU $k: VINTF1 was not disabled [L0 trace]"
  done
  # --- again: a second VM, clean ------------------------------------------------
  step_expect_re again "E2E-L2: read vda pci=0000:00:01.0 blocks=256 sha256=$(nested_disk_sha $((1 << 20)))" "the second VM did not read the disk"
  step_reject_event again "cmdqv:guest-error" "the second VM saw a stale VCMDQ error"
  local l
  for l in 0 1; do
    step_expect_re again "E2E-L2: lvcmdq$l base=0x[0-9a-f]+ cons=(0x[0-9a-f]+) prod=\\1 status=1 gerror=(0x[0-9a-f]+) gerrorn=\\2\$" "the second VM's LVCMDQ$l did not start clean (CONS = PROD, no error, enabled)"
  done
  expect "E2E-L1: vmm exit=0 step=again " "the second VM did not exit 0"
  # --- illegal: a guest's CFGI_STE on its VCMDQ ------------------------------------
  local s5
  s5="$(sess 5)"
  grep -qE 'tegra241_hw_cmd_ill vintf=1 lvcmdq=1 .*CFGI_STE' <<<"$s5" || fail "L0 did not refuse the guest's CFGI_STE on VINTF1 LVCMDQ1 [L0 trace]"
  local nerr nev
  nerr="$(grep -cE 'tegra241_hw_error vintf=1 lvcmdq=1 .*CERROR=1' <<<"$s5" || true)"
  nev="$(ev_count illegal "cmdqv:guest-error id=cmdqv0 kind=CERROR_ILL queue=1")"
  echo "  cmdqv-host illegal: CERROR_ILL raised in L0 $nerr time(s), cmdqv:guest-error events $nev"
  [ "$nerr" -ge 1 ] || fail "L0 raised no CERROR_ILL on VINTF1 LVCMDQ1 [L0 trace]"
  # The error repeats until the helper's rewrite of the entry lands: the
  # driver's recovery fixes its own ring, not this one, and the L2's one
  # vCPU takes the interrupt between the PROD write and the rewrite when
  # L1 is quick (1 error in some runs, tens in others). Each one must reach
  # the guest once, as one TEGRA241 vEVENT -> one guest-error.
  [ "$nev" = "$nerr" ] || fail "$nev guest-error events for $nerr host errors (each host error once)"
  step_expect_re illegal "E2E-L2: illegal after-prod cons=0x[0-9a-f]+ err=1 " "the queue did not stop with CONS.ERR = CERROR_ILL"
  step_expect_event illegal "cmdqv:guest-error id=cmdqv0 kind=CERROR_ILL queue=1" "the host error did not reach the guest's LVCMDQ1 error map"
  step_expect_re illegal "E2E-L2-ERR: .*CMDQ error.*Illegal" "the L2 driver did not handle the error"
  step_expect_re illegal "E2E-L2: illegal final cons=(0x[0-9a-f]+) prod=\\1 gerror=(0x[0-9a-f]+) gerrorn=\\2 " "LVCMDQ1 did not recover (CONS = PROD, error acknowledged)"
  step_expect_re illegal "E2E-L2: read vda pci=0000:00:01.0 blocks=512 sha256=$(nested_disk_sha $((2 << 20)))" "the disk read after the error failed"
  expect "E2E-L1: vmm exit=0 step=illegal " "the illegal-command run did not exit 0"
  # LVCMDQ1 moved twice (to the helper's ring and back): the counters are
  # the model's, what the host holds (not IOMMU_HW_QUEUE_ALLOC calls minus
  # frees the iommufd backend never counted).
  local ia ifr ih
  ia="$(ev_prop illegal "vm:counters id=cmdqv0" hw_queue_allocs)"
  ifr="$(ev_prop illegal "vm:counters id=cmdqv0" hw_queue_frees)"
  ih="$(ev_prop illegal "vm:counters id=cmdqv0" hw_queues_allocated)"
  echo "  cmdqv-host illegal: cmdqv0 hw_queue_allocs=$ia hw_queue_frees=$ifr hw_queues_allocated=$ih at stop"
  [ "$ia/$ifr/$ih" = 4/2/2 ] || fail "cmdqv0 counters at stop allocs/frees/held = $ia/$ifr/$ih, expected 4/2/2 (LVCMDQ1 moved twice)"
  # --- edu: a stale IOTLB entry until the guest's TLBI has run in L0 ------------
  local s6
  s6="$(sess 6)"
  step_expect_re edu "E2E-L2: edu-stale id=0x010000ed before x=0xaaaaaaaa" "edu's DMA through the L2's IOAS did not read page A"
  step_expect_re edu "E2E-L2: edu-stale remapped-no-tlbi x=0xaaaaaaaa " "after a remap whose TLBI waits in a disabled VCMDQ, edu's DMA did not still read the old page"
  step_expect_re edu "E2E-L2: edu-stale after-tlbi x=0xbbbbbbbb " "once the TLBI ran through the VCMDQ, edu's DMA did not read the new page"
  # In L0: LVCMDQ0 disabled, re-enabled, and the first command it runs
  # then is the waiting TLBI_NH_VA, with VINTF1's VMID.
  local pend
  # (A disable + enable with no BASE write between: the helper's, not the
  # driver's init or teardown.)
  pend="$(awk '/tegra241_hw_vcmdq_config vintf=1 lvcmdq=0 .*config=0x0/ {off = 1; on = 0; next}
    /tegra241_hw_vcmdq_base vintf=1 lvcmdq=0 / {off = 0; on = 0; next}
    off && /tegra241_hw_vcmdq_config vintf=1 lvcmdq=0 .*config=0x1/ {on = 1; off = 0; next}
    on && /tegra241_hw_cmd_vmid vintf=1 lvcmdq=0 / {last = $0; on = 0}
    on && /tegra241_hw_cmd vintf=1 lvcmdq=0 / {on = 0}
    END {print last}' <<<"$s6")"
  echo "  cmdqv-host edu: first command after LVCMDQ0 re-enabled: ${pend:-none}"
  [[ "$pend" =~ TLBI_NH_VA\ vmid\ [0-9]+\ -\>\ $vmid$ ]] || fail "the waiting TLBI_NH_VA did not run with VMID $vmid when LVCMDQ0 was re-enabled [L0 trace: ${pend:-none}]"
  local st
  for st in cmdqv reboot again illegal edu; do
    step_reject_re "$st" "panicked|RUST_BACKTRACE" "the VMM panicked"
    step_reject_re "$st" "^\\[[^]]* ERROR " "the VMM logged an error"
    expect_re "E2E-L1: after $st 0000:00:02.0 vfio-dev=vfio[0-9]+ driver=vfio-pci" "the disk is not back on vfio-pci after $st"
  done
}
