#!/usr/bin/env bash
# The main job on its embedded default, on any x86_64 (or aarch64) Debian 12
# machine: a VM with a vSMMUv3 + Tegra241 CMD-QV (emulated backend).
#  1. dump its ACPI tables and disassemble them with iasl, showing what the
#     guest kernel matches: the IORT SMMUv3 node and its NVDA200C companion;
#  2. boot a real Linux guest with them: QEMU (TCG, virtualization=on) runs a
#     Linux host with KVM, in which our aarch64 cloud-hypervisor boots the
#     guest, whose own arm-smmu-v3 / tegra241-cmdqv drivers probe and use the
#     devices (scripts/e2e, case boot-cmdqv; the first run builds a guest
#     kernel, ~6 minutes, then it is cached).
# DEMO_KERNELS picks the guest kernel(s): 6.12 (default) and/or 7.2.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --acpi
cargo build -q -p vmm
out=target/demo-acpi
rm -rf "$out"
./target/debug/cloud-hypervisor \
  --cpus boot=2 --memory size=1G \
  --vsmmu cmdqv,backend=emulated \
  --device path=/sys/bus/pci/devices/0000:01:00.0,iommu=on,id=gpu0 \
  --device path=/sys/bus/pci/devices/0000:02:00.0,iommu=on,id=nic0 \
  --dump-acpi "$out" >/dev/null
status=0
for table in "$out"/*.dat; do
  name=$(basename "$table" .dat)
  [ "$name" = RSDP ] && continue # iasl disassembles SDT-headed tables only
  if ! log=$(cd "$out" && iasl -d "$name.dat" 2>&1) || grep -qiE 'error|warning' <<<"$log"; then
    echo "$name: iasl reported a problem:"; echo "$log"; status=1
  else
    echo "$name: disassembled cleanly -> $out/$name.dsl"
  fi
done
echo
echo "IORT SMMUv3 node (the identifier is the node header field after Revision):"
grep -A4 'Type : 04' "$out/IORT.dsl" | sed 's/^/  /'
echo "DSDT CMDQ-V companion:"
sed -n '/Device (CV/,/^        }/p' "$out/DSDT.dsl" | sed 's/^/  /'
[ "$status" = 0 ] || exit "$status"

echo
echo "Booting a real guest with the vSMMUv3 + CMD-QV (scripts/e2e/run.sh boot-cmdqv) ..."
E2E_KERNELS="${DEMO_KERNELS:-6.12}" scripts/e2e/run.sh boot-cmdqv
for log in target/e2e/boot-cmdqv/console-*.log; do
  echo
  echo "== $log: the guest's view"
  grep -E 'E2E-L2-DMESG: (arm-smmu-v3|efi: ACPI)|E2E-L2: (cpus|test endpoint)' "$log" | sed 's/^/  /'
  echo "== the VMM's view (CMD-QV bring-up and teardown)"
  sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E 'HYP_OWN|hw_queue_(alloc|free)|page0 slot|vIOMMU released|mmio exits|vsmmu0:|vmm exit=' | sed 's/^/  /'
  echo "== the VMM's events (--event-monitor, docs/events.md)"
  grep -o '"source":"[a-z]*","event":"[a-z0-9-]*","properties":.*' "$log" | grep -v '"event":"counters"' | sed 's/^/  /'
done
