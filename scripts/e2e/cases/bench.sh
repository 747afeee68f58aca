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
BENCH_SECONDS=2
BENCH_STEPS="a-cmdqv b-bypass c-smmuv3 d-lazy"

case_l1_script() {
  cat <<'EOS'
common="--kernel /l2/Image --initramfs /l2/initrd --cpus boot=2 --memory size=512M --serial tty --test-device id=dma0"
cmdline="console=ttyAMA0 panic=-1 iommu.strict=1"
vmm a-cmdqv -v $common --vsmmu cmdqv,backend=emulated,page0=mapped --cmdline "$cmdline e2e.bench=1"
vmm b-bypass -v $common --vsmmu cmdqv,backend=emulated,page0=mapped --cmdline "$cmdline e2e.bench=1 e2e.bypass=1"
vmm c-smmuv3 -v $common --vsmmu smmuv3,backend=emulated --cmdline "$cmdline e2e.bench=1"
vmm d-lazy -v $common --vsmmu cmdqv,backend=emulated,page0=mapped --cmdline "console=ttyAMA0 panic=-1 iommu.strict=0 e2e.bench=1"
EOS
}

case_l2_script() {
  cat <<EOS
seconds=$BENCH_SECONDS
EOS
  cat <<'EOS'
case "$(cat /proc/cmdline)" in *e2e.bench=1*) ;; *) exit 0 ;; esac
if grep -q e2e.bypass=1 /proc/cmdline; then
  echo 1 > /sys/kernel/debug/iommu/tegra241_cmdqv/bypass_vcmdq
  echo "E2E-BENCH: bypass_vcmdq=$(cat /sys/kernel/debug/iommu/tegra241_cmdqv/bypass_vcmdq)"
fi
dev=0000:00:01.0
echo dma_map_benchmark > /sys/bus/pci/devices/$dev/driver_override
echo $dev > /sys/bus/pci/drivers/dma_map_benchmark/bind || echo "E2E-BENCH: bind failed"
for g in 1 16; do
  for t in 1 2; do
    echo "E2E-BENCH: run granule=$g threads=$t"
    dma_map_benchmark -t $t -g $g -s $seconds 2>&1 | sed 's/^/E2E-BENCH: /'
  done
done
EOS
}

# One row per (step, granule, threads): latency from the guest, per-unmap
# figures from the VMM's stop-time counters of that step (not for d-lazy,
# whose CMD_SYNCs are not one per unmap).
bench_table() {
  local step
  printf '%-9s %-8s %-7s %-18s %-14s %-16s\n' run granule threads "unmap lat (us)" "exits/unmap" "backend/unmap"
  for step in $BENCH_STEPS; do
    section "$step" | awk -v step="$step" '
      /E2E-BENCH: run granule=/ { split($0, a, /granule=| threads=/); g = a[2]; t = a[3] + 0; next }
      /E2E-BENCH: average unmap latency\(us\):/ { split($0, b, /latency\(us\):| standard/); lat[g " " t] = b[2] + 0; order[++n] = g " " t; next }
      /mmio exits:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^smmuv3=/) { sub(/smmuv3=/, "", $i); ex += $i } if ($i ~ /^cmdqv=/) { sub(/cmdqv=/, "", $i); ex += $i } } }
      /vsmmu0: / { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] + 0 } }
      END {
        unmaps = v["trapped_syncs"] + v["vcmdq_syncs"]
        if (unmaps == 0) unmaps = 1
        for (i = 1; i <= n; i++) { split(order[i], k, " ")
          if (step == "d-lazy")
            printf "%-9s %-8s %-7s %-18.1f %-14s %-16s\n", step, k[1] "pg", k[2], lat[order[i]], "-", "-"
          else
            printf "%-9s %-8s %-7s %-18.1f %-14.3f %-16.3f\n", step, k[1] "pg", k[2], lat[order[i]], ex / unmaps, v["invalidate_calls"] / unmaps }
      }'
  done
}

# "EXITS INVALIDATE_CALLS UNMAPS" of one step, from the VMM's stop-time
# counters (unmaps = CMD_SYNCs of both queues).
step_counts() {
  section "$1" | awk '
    /mmio exits:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^smmuv3=/) { sub(/smmuv3=/, "", $i); ex += $i } if ($i ~ /^cmdqv=/) { sub(/cmdqv=/, "", $i); ex += $i } } }
    /vsmmu0: / { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] + 0 } }
    END { printf "%d %d %d\n", ex, v["invalidate_calls"], v["trapped_syncs"] + v["vcmdq_syncs"] }'
}

# The floor, from bench_table's output on stdin: per (granule, threads) the
# strict latencies a) and b), the lazy one d), the invalidation overhead of
# each strict path over the floor, and a)'s overhead as a share of b)'s.
floor_table() {
  awk '
    NR > 1 { lat[$1 " " $2 " " $3] = $4; if (!seen[$2 " " $3]++) order[++n] = $2 " " $3 }
    END {
      printf "%-8s %-7s %-11s %-11s %-11s %-16s %-16s %s\n", "granule", "threads", "a) us", "b) us", "d) us", "a-d VCMDQ us", "b-d trapped us", "VCMDQ share"
      for (i = 1; i <= n; i++) {
        split(order[i], k, " "); key = order[i]
        a = lat["a-cmdqv " key]; b = lat["b-bypass " key]; d = lat["d-lazy " key]
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
    step_expect_re "$step" "E2E-BENCH: average unmap latency" "dma_map_benchmark produced no result"
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
  # Every row of the floor table has all three latencies.
  echo "$floor" | awk 'NR > 1 && ($3 + 0 <= 0 || $4 + 0 <= 0 || $5 + 0 <= 0) { bad = 1 } END { exit bad || NR < 2 }' \
    || fail "the floor table is missing a latency (did d-lazy run every granule and thread count?)"
}
