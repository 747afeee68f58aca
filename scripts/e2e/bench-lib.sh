# The dma_map_benchmark measurement, shared by the cases that run it
# (cases/bench.sh: our vSMMU paths; cases/peer.sh: QEMU beside ours): the
# L2 script, our VMM's benchmark arguments, and the parsers of one step's
# console section (run.sh's section()). Source it; do not run it.
# shellcheck shell=bash

# Seconds per dma_map_benchmark run.
BENCH_SECONDS=2

# The first lines of a case's L1 script: our VMM's arguments common to every
# benchmark VM, and the guest command line with strict invalidation (every
# unmap is a TLBI_NH_VA + CMD_SYNC).
bench_l1_vars() {
  cat <<'EOS'
common="--kernel /l2/Image --initramfs /l2/initrd --cpus boot=2 --memory size=512M --serial tty --test-device id=dma0"
cmdline="console=ttyAMA0 panic=-1 iommu.strict=1"
EOS
}

# The L2 script: with e2e.bench=1 on the guest's command line, bind the PCI
# function 0000:00:01.0 (our --test-device, or the peer VMM's test device)
# to dma_map_benchmark and run it at granule 1 and 16 pages with 1 and 2
# threads, BENCH_SECONDS each; e2e.bypass=1 first sends every command to
# the trapped SMMU CMDQ (tegra241_cmdqv's bypass_vcmdq).
bench_l2_script() {
  echo "seconds=$BENCH_SECONDS"
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
    # Every output line carries its run's key, so a line of another
    # writer interleaved on the console cannot move a result to another run.
    dma_map_benchmark -t $t -g $g -s $seconds 2>&1 | sed "s/^/E2E-BENCH: g=$g t=$t /"
  done
done
EOS
}

# bench_latencies STEP: "GRANULE THREADS MAP_US UNMAP_US", one line per
# dma_map_benchmark run of STEP that printed its unmap latency, in the order
# they ran.
bench_latencies() {
  section "$1" | awk '
    match($0, /E2E-BENCH: g=[0-9]+ t=[0-9]+ average (map|unmap) latency\(us\):[0-9.]+/) {
      split(substr($0, RSTART, RLENGTH), f, /g=| t=| average | latency\(us\):/)
      key = f[2] " " f[3]
      if (f[4] == "map") { map[key] = f[5] + 0; next }
      print key, (key in map ? map[key] : 0), f[5] + 0
    }'
}

# step_counts STEP: "EXITS INVALIDATE_CALLS UNMAPS" of one run of our VMM,
# from its stop-time counters (-v): MMIO exits of the vSMMU and the CMD-QV
# window, IOMMU_HWPT_INVALIDATE calls, and unmaps = CMD_SYNCs of the
# trapped queue plus the VCMDQs.
step_counts() {
  section "$1" | awk '
    /mmio exits:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^smmuv3=/) { sub(/smmuv3=/, "", $i); ex += $i } if ($i ~ /^cmdqv=/) { sub(/cmdqv=/, "", $i); ex += $i } } }
    /vsmmu0: / { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] + 0 } }
    END { printf "%d %d %d\n", ex, v["invalidate_calls"], v["trapped_syncs"] + v["vcmdq_syncs"] }'
}
