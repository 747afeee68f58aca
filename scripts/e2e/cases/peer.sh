# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# peer: side by side with QEMU. The same L1 (our e2e L1 under TCG, real KVM)
# runs, one after the other, three VMMs over the same L2 kernel and
# initramfs, each with the bench case's dma_map_benchmark (bench-lib.sh:
# same runs, seconds, granules, threads, same output lines):
#   qemu-smmuv3   sid's qemu-system-aarch64 (peer/build-qemu.sh; this machine's
#                 release's when sid's cannot be resolved), KVM, DT boot,
#                 QEMU's own SMMUv3 in front of its edu device
#   ours-smmuv3   --vsmmu smmuv3,backend=emulated --test-device (bench's c)
#   ours-cmdqv    --vsmmu cmdqv,backend=emulated,page0=mapped (bench's a)
# and per VMM the time from its start to the L2's first /init line and its
# resident memory then (l1-lib.sh: vmm_measured). The table goes to
# target/e2e/peer/table-<kernel>.txt. Assertions are on structure only: every
# L2 ran the benchmark and printed numbers, our trapped queue made one
# backend call per CMD_SYNC, our VCMDQ path took the unmaps; never timings.
CASE_DESC="QEMU 11.1 as the L1 VMM beside ours: same L2, same dma_map_benchmark; table of unmap/map latency, boot-to-init, RSS"
CASE_DEFAULT=1
CASE_TIMEOUT=600
PEER_STEPS="qemu-smmuv3 ours-smmuv3 ours-cmdqv"
# shellcheck source=scripts/e2e/bench-lib.sh
. "$E2E_DIR/bench-lib.sh"

# The QEMU payload (binary + its libraries) merged into the L1 initramfs at /.
case_prepare() {
  local payload
  payload="$(timed "peer: qemu-system-aarch64 payload (arm64)" "$E2E_DIR/peer/build-qemu.sh")" || return 1
  L1_EXTRA+=("$payload:/")
}

case_l1_script() {
  bench_l1_vars
  cat <<'EOS'
qemu=/usr/bin/qemu-system-aarch64
echo "E2E-L1: peer $($qemu --version | head -1)"
vmm_measured qemu-smmuv3 $qemu -M virt,gic-version=3,iommu=smmuv3 -accel kvm -cpu host -smp 2 -m 512M \
  -nographic -nic none -no-reboot -kernel /l2/Image -initrd /l2/initrd \
  -append "$cmdline e2e.bench=1" -device edu,addr=01.0
vmm_measured ours-smmuv3 /bin/cloud-hypervisor -v $common --vsmmu smmuv3,backend=emulated --cmdline "$cmdline e2e.bench=1"
vmm_measured ours-cmdqv /bin/cloud-hypervisor -v $common --vsmmu cmdqv,backend=emulated,page0=mapped --cmdline "$cmdline e2e.bench=1"
EOS
}

case_l2_script() { bench_l2_script; }

# One row per (VMM, granule, threads): the guest's latencies, the VMM's boot
# and memory figures, and for ours the per-unmap counters (boot's few dozen
# exits and calls included; bench.sh subtracts them with its lazy run).
peer_table() {
  local step vmm path boot rss anon file l2up exits calls unmaps
  printf '%-7s %-28s %-8s %-7s %-10s %-9s %-12s %-10s %-20s %-12s %s\n' \
    VMM path granule threads "unmap us" "map us" "boot-init s" "L2 init s" "RSS MiB (anon+file)" "exits/unmap" "backend/unmap"
  for step in $PEER_STEPS; do
    case "$step" in
      qemu-*) vmm=QEMU path="SMMUv3, trapped CMDQ (QEMU)" ;;
      ours-smmuv3) vmm=ours path="SMMUv3, trapped CMDQ" ;;
      ours-cmdqv) vmm=ours path="CMD-QV VCMDQ, page0 mapped" ;;
    esac
    read -r boot rss anon file < <(section "$step" |
      sed -n 's/.*E2E-L1: measured step=[^ ]* boot-to-init=\([0-9.]*\) vmrss-kb=\([0-9]*\) rssanon-kb=\([0-9]*\) rssfile-kb=\([0-9]*\).*/\1 \2 \3 \4/p' | head -1)
    l2up="$(section "$step" | grep -o 'E2E-L2: booted uptime=[0-9.]*' | head -1 | cut -d= -f2)"
    exits=- calls=- unmaps=0
    [ "$vmm" = QEMU ] || read -r exits calls unmaps < <(step_counts "$step")
    bench_latencies "$step" | awk -v vmm="$vmm" -v path="$path" -v boot="${boot:--}" -v l2up="${l2up:--}" \
      -v rss="${rss:-}" -v anon="${anon:-}" -v file="${file:-}" -v ex="$exits" -v calls="$calls" -v u="$unmaps" '
      {
        mib = (rss == "") ? "-" : sprintf("%.0f (%.0f+%.0f)", rss / 1024, anon / 1024, file / 1024)
        per_ex = (u > 0) ? sprintf("%.3f", ex / u) : "-"
        per_call = (u > 0) ? sprintf("%.3f", calls / u) : "-"
        printf "%-7s %-28s %-8s %-7s %-10.1f %-9.1f %-12s %-10s %-20s %-12s %s\n", vmm, path, $1 "pg", $2, $4, $3, boot, l2up, mib, per_ex, per_call
      }'
  done
}

case_assert() {
  local step table exits calls unmaps
  expect_re "E2E-L1: peer QEMU emulator version [0-9]" "the QEMU payload does not run in L1 (missing library? see the log)"
  for step in $PEER_STEPS; do
    step_expect_re "$step" "E2E-L1: vmm exit=0 step=$step " "the VMM did not exit 0"
    step_expect_re "$step" "E2E-L1: measured step=$step boot-to-init=[0-9.]+ vmrss-kb=[0-9]+ rssanon-kb=[0-9]+ rssfile-kb=[0-9]+" "no boot-to-init / RSS sample (the L2 never reached /init?)"
    step_reject_re "$step" "E2E-BENCH: bind failed" "dma_map_benchmark could not bind to the test endpoint"
    step_reject_re "$step" "CMD_SYNC timeout|Illegal command" "the guest hit an SMMU command error"
    [ "$(bench_latencies "$step" | wc -l)" = 4 ] ||
      fail "dma_map_benchmark did not print four unmap latencies [step $step]"
  done
  step_expect_re qemu-smmuv3 "E2E-L2-DMESG: .*arm-smmu-v3" "the L2 under QEMU did not probe QEMU's SMMUv3"
  table="$(peer_table)"
  mkdir -p "$E2E_OUT/peer"
  echo "$table" | tee "$E2E_OUT/peer/table-${E2E_KERNEL:-k}.txt"
  # Ours: one batched IOMMU_HWPT_INVALIDATE per CMD_SYNC on the trapped queue
  # (as bench.sh asserts), and the VCMDQs, not the trapped queue, took the
  # unmaps of the CMD-QV VM.
  read -r exits calls unmaps < <(step_counts ours-smmuv3)
  awk -v c="$calls" -v u="$unmaps" 'BEGIN { exit !(u > 0 && c / u >= 0.9 && c / u <= 1.1) }' ||
    fail "ours-smmuv3: $calls backend calls for $unmaps CMD_SYNCs, not one per CMD_SYNC"
  section ours-cmdqv | awk '/vsmmu0: / { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] + 0 } }
    END { exit !(v["vcmdq_syncs"] > v["trapped_syncs"]) }' ||
    fail "ours-cmdqv: the VCMDQs did not take the unmaps (vcmdq_syncs <= trapped_syncs)"
}
