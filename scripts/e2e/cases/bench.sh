# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# bench: the kernel series' measurement, in a guest of ours. dma_map_benchmark
# (guest kernel's DMA-API benchmark, iommu.strict=1 so every unmap is a
# TLBI_NH_VA + CMD_SYNC) bound to the test endpoint behind the vSMMU, in
#   a) --vsmmu cmdqv,backend=emulated,page0=mapped  (VCMDQs, page0 mapped)
#   b) the same VM with tegra241_cmdqv/bypass_vcmdq = 1 (trapped SMMU CMDQ)
#   c) --vsmmu smmuv3,backend=emulated               (no CMD-QV)
#   d) the VM of a) with iommu.strict=0 (lazy: an unmap queues its IOVA and
#      returns; invalidation is batched off the unmap path), the floor: what
#      an unmap costs with no invalidation to wait for
# The table gives the tool's average unmap latency and, from the VMM's own
# counters, MMIO exits and backend calls per unmap (unmaps = CMD_SYNCs, of
# the trapped queue plus the VCMDQs; boot adds a few dozen of each; in d)
# CMD_SYNCs are not one per unmap, so those two columns read "-"). The
# floor table gives per row the invalidation overhead (strict minus lazy)
# of the VCMDQ path a) and of the trapped path b), and a)'s as a share of b)'s.
CASE_DESC="dma_map_benchmark through VCMDQs vs the trapped CMDQ vs plain SMMUv3 vs lazy invalidation; tables of unmap latency, exits and backend calls per unmap, invalidation overhead"
CASE_DEFAULT=1
CASE_TIMEOUT=900
BENCH_STEPS="a-cmdqv b-bypass c-smmuv3 d-lazy"
# shellcheck source=scripts/e2e/bench-lib.sh
. "$E2E_DIR/bench-lib.sh"

case_l1_script() {
  bench_l1_vars
  cat <<'EOS'
vmm a-cmdqv -v $common --vsmmu cmdqv,backend=emulated,page0=mapped --cmdline "$cmdline e2e.bench=1"
vmm b-bypass -v $common --vsmmu cmdqv,backend=emulated,page0=mapped --cmdline "$cmdline e2e.bench=1 e2e.bypass=1"
vmm c-smmuv3 -v $common --vsmmu smmuv3,backend=emulated --cmdline "$cmdline e2e.bench=1"
vmm d-lazy -v $common --vsmmu cmdqv,backend=emulated,page0=mapped --cmdline "console=ttyAMA0 panic=-1 iommu.strict=0 e2e.bench=1"
EOS
}

case_l2_script() { bench_l2_script; }

# One row per (step, granule, threads): latency from the guest, per-unmap
# figures from the VMM's stop-time counters of that step (not for d-lazy,
# whose CMD_SYNCs are not one per unmap).
bench_table() {
  local step exits calls unmaps
  printf '%-9s %-8s %-7s %-18s %-14s %-16s\n' run granule threads "unmap lat (us)" "exits/unmap" "backend/unmap"
  for step in $BENCH_STEPS; do
    read -r exits calls unmaps < <(step_counts "$step")
    bench_latencies "$step" | awk -v step="$step" -v ex="$exits" -v calls="$calls" -v u="$unmaps" '
      BEGIN { if (u == 0) u = 1 }
      step == "d-lazy" { printf "%-9s %-8s %-7s %-18.1f %-14s %-16s\n", step, $1 "pg", $2, $4, "-", "-"; next }
      { printf "%-9s %-8s %-7s %-18.1f %-14.3f %-16.3f\n", step, $1 "pg", $2, $4, ex / u, calls / u }'
  done
}

# The floor, from bench_table's output on stdin: per (granule, threads) the
# strict latencies a) and b), the lazy one d), the invalidation overhead of
# each strict path over the floor, and a)'s overhead as a share of b)'s.
floor_table() {
  # A run that printed no latency shows "-" (a measured 0.0 stays a number).
  awk '
    function cell(k) { return (k in lat) ? lat[k] : "-" }
    NR > 1 { lat[$1 " " $2 " " $3] = $4; if (!seen[$2 " " $3]++) order[++n] = $2 " " $3 }
    END {
      printf "%-8s %-7s %-11s %-11s %-11s %-16s %-16s %s\n", "granule", "threads", "a) us", "b) us", "d) us", "a-d VCMDQ us", "b-d trapped us", "VCMDQ share"
      for (i = 1; i <= n; i++) {
        split(order[i], k, " "); key = order[i]
        a = cell("a-cmdqv " key); b = cell("b-bypass " key); d = cell("d-lazy " key)
        if (a == "-" || b == "-" || d == "-") {
          printf "%-8s %-7s %-11s %-11s %-11s %-16s %-16s %s\n", k[1], k[2], a, b, d, "-", "-", "n/a"
          continue
        }
        share = (b - d > 0) ? sprintf("%.0f%%", 100 * (a - d) / (b - d)) : "n/a"
        printf "%-8s %-7s %-11.1f %-11.1f %-11.1f %-16.1f %-16.1f %s\n", k[1], k[2], a, b, d, a - d, b - d, share
      }
    }'
}

case_assert() {
  local step table floor
  for step in $BENCH_STEPS; do
    step_expect_re "$step" "E2E-L1: vmm exit=0 step=$step " "cloud-hypervisor did not exit 0"
    step_reject_re "$step" "E2E-BENCH: bind failed" "dma_map_benchmark could not bind to the test endpoint"
    step_expect_re "$step" "E2E-BENCH: g=[0-9]+ t=[0-9]+ average unmap latency" "dma_map_benchmark produced no result"
    step_reject_re "$step" "CMD_SYNC timeout|Illegal command" "the guest hit an SMMU command error"
  done
  step_expect_re b-bypass "E2E-BENCH: bypass_vcmdq=(1|Y)" "bypass_vcmdq did not take"
  table="$(bench_table)"
  floor="$(echo "$table" | floor_table)"
  mkdir -p "$E2E_OUT/bench"
  echo "$table" | tee "$E2E_OUT/bench/table-${E2E_KERNEL:-k}.txt"
  echo "$floor" | tee "$E2E_OUT/bench/floor-${E2E_KERNEL:-k}.txt"
  # Columns: run granule threads latency exits/unmap backend/unmap.
  # The VCMDQ path takes no VM exit and no backend call per unmap; the
  # trapped paths take about one exit (the CMDQ_PROD write; with MSI polling
  # the CMD_SYNC completes by a memory write, and two threads' syncs can
  # share a PROD write, so a little under one) and exactly one batched
  # backend call (one IOMMU_HWPT_INVALIDATE per CMD_SYNC) per unmap.
  # For a) the boot's own exits and calls (probe, STE installs) are taken
  # out: d) boots the same VM and takes none per unmap, so its counters are
  # that baseline. Without this, a slow VCMDQ path (few unmaps in the run,
  # e.g. on a loaded host) makes the fixed boot exits look like per-unmap
  # ones.
  read -r a_exits a_calls a_unmaps < <(step_counts a-cmdqv)
  read -r d_exits d_calls _ < <(step_counts d-lazy)
  echo "a-cmdqv beyond boot (d-lazy's counters): exits $((a_exits - d_exits)) backend calls $((a_calls - d_calls)) over $a_unmaps unmaps"
  awk -v e="$((a_exits - d_exits))" -v c="$((a_calls - d_calls))" -v u="$a_unmaps" 'BEGIN { exit !(u > 0 && e / u <= 0.1 && c / u <= 0.1) }' \
    || fail "the VCMDQ path took VM exits or backend calls per unmap (expected ~0 beyond the boot's)"
  echo "$table" | awk 'NR > 1 && ($1 == "b-bypass" || $1 == "c-smmuv3") && $5 + 0 < 0.9 { bad = 1 } END { exit bad }' \
    || fail "a trapped path took well under one VM exit per unmap (counters wrong?)"
  echo "$table" | awk 'NR > 1 && ($1 == "b-bypass" || $1 == "c-smmuv3") && ($6 + 0 < 0.9 || $6 + 0 > 1.1) { bad = 1 } END { exit bad }' \
    || fail "the trapped path did not make one backend call per unmap (batching broken?)"
  # Every step printed a latency for every granule and thread count.
  local missing
  missing="$(echo "$floor" | awk 'NR > 1 { for (c = 3; c <= 5; c++) if ($c == "-") { printf "%s%s) %s %s thread(s)", sep, substr("abd", c - 2, 1), $1, $2; sep = "; " } }')"
  if [ -n "$missing" ] || [ "$(echo "$floor" | wc -l)" -lt 5 ]; then
    for step in $BENCH_STEPS; do section "$step" | grep 'E2E-BENCH: g=' | sed "s/^/  [$step] /" >&2 || true; done
    fail "no unmap latency for ${missing:-some granule/thread count} (the E2E-BENCH lines are above)"
  fi
}
