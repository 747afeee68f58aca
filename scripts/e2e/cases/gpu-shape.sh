# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# gpu-shape: the shape of a Grace GPU passthrough (issue 19) on the nested
# lane. L0 (sid's QEMU 11.1, nested/l0.sh shape gpu) gives L1 the known disk
# at 00:02.0 and an ivshmem-plain function whose memory BAR is 128 GiB
# (64-bit prefetchable, a sparse file in L0), both behind the nested SMMUv3,
# and two NUMA nodes. L1 binds both to vfio-pci; our VMM runs one L2 with:
#   - both functions behind --vsmmu smmuv3 (the ivshmem one as gpu0);
#   - two memory zones bound to L1's host nodes 0 and 1 (host_numa_node=),
#     two vCPU nodes with given distances, 8 Generic Initiator nodes for gpu0.
# L1 reads the VMM's /proc/PID/numa_maps while the L2 runs (each zone on its
# node) and vm.info (gpu0's guest address). The L2 shows from sysfs (busybox
# has no lspci) gpu0 at devfn 0 with its 128G prefetchable 64-bit BAR
# assigned, writes a value through the BAR at its first and last page and
# reads it back (L0 then finds both in its file), prints its NUMA view (nodes,
# CPUs, memory, distances, has_generic_initiator), applies NVIDIA's SRAT
# matching rule (segment + bus + devfn 0) to its SRAT, and dumps SRAT and
# SLIT as hex for iasl on the host.
CASE_DESC="nested lane, Grace GPU shape: a 128 GiB ivshmem BAR behind the nested SMMU at devfn 0 of the L2 (write/read-back checked in L0's file), two memory zones on L1's two host nodes (numa_maps), two vCPU nodes + 8 Generic Initiator nodes, NVIDIA's SRAT rule finds the function, SRAT/SLIT decode with iasl"
CASE_DEFAULT=1
CASE_TIMEOUT=900
CASE_QEMU=nested
CASE_NESTED_L0=sid
CASE_NESTED_SHAPE=gpu
# The L2 guest kernel (L1 is always the nested 7.2): NUMA, ACPI.
CASE_KERNELS=7.2

# The 64-bit value the L2 writes at BAR offset OFF (the L0 check recomputes it).
gpu_shape_value() { printf '0x%016x' $((0x6976736800000000 | ($1 >> 12))); }

case_l1_script() {
  cat <<'EOS'
VMM_TIMEOUT=300
IFS=, read -r disk shm <<EOF2
$E2E_VFIO
EOF2
# L1's own NUMA (L0's -numa): nodes, and each node's CPUs and memory.
echo "E2E-L1: numa online=$(cat /sys/devices/system/node/online)"
for n in /sys/devices/system/node/node[0-9]*; do
  echo "E2E-L1: numa $(basename "$n") cpulist=$(cat "$n/cpulist") memtotal-kb=$(awk '/MemTotal/ {print $4}' "$n/meminfo")"
done
# The ivshmem function as L1 sees it: BAR2 (its memory) from sysfs.
echo "E2E-L1: ivshmem $shm $(cat /sys/bus/pci/devices/$shm/vendor):$(cat /sys/bus/pci/devices/$shm/device) bar2=$(sed -n 3p /sys/bus/pci/devices/$shm/resource)"
# At the L2's mark: the VMM's guest RAM placement (numa_maps lines with a
# bind policy: the zones) and vm.info.
cat >/tmp/hook.sh <<'EOM'
pid=$(pidof cloud-hypervisor | cut -d' ' -f1)
grep 'bind:' "/proc/$pid/numa_maps" | sed "s/^/E2E-L1: numa_maps step=$1 /"
# Each vCPU thread's allowed host CPUs (--cpus affinity=).
for t in /proc/$pid/task/*; do
  c=$(cat "$t/comm")
  case "$c" in vcpu*) echo "E2E-L1: affinity step=$1 $c $(grep Cpus_allowed_list "$t/status" | tr -d '\t ')" ;; esac
done
echo "E2E-L1: info step=$1 $(/bin/ch-remote --api-socket "/tmp/ch-$1.sock" info 2>&1 | tr -d '\n')"
EOM
MEASURE_HOOK="sh /tmp/hook.sh"
gi=""
for n in 2 3 4 5 6 7 8 9; do gi="$gi --numa guest_numa_id=$n,device_id=gpu0"; done
# shellcheck disable=SC2086
vmm_measured gpu /bin/cloud-hypervisor -v --kernel /l2/Image --initramfs /l2/initrd \
  --cpus "boot=2,affinity=[0@[0],1@[1]]" --memory size=0 --serial tty --cmdline "console=ttyAMA0 earlycon panic=-1" \
  --memory-zone id=mem0,size=256M,host_numa_node=0 --memory-zone id=mem1,size=256M,host_numa_node=1 \
  --vsmmu smmuv3 --device "path=/sys/bus/pci/devices/$shm,iommu=on,id=gpu0" \
  --device "path=/sys/bus/pci/devices/$disk,iommu=on,id=disk0" \
  --numa "guest_numa_id=0,cpus=[0],distances=[1@15,2@25],memory_zones=mem0" \
  --numa "guest_numa_id=1,cpus=[1],distances=[0@15],memory_zones=mem1" \
  $gi --api-socket /tmp/ch-gpu.sock
for f in $disk $shm; do
  echo "E2E-L1: after gpu $f vfio-dev=$(ls /sys/bus/pci/devices/$f/vfio-dev | xargs) driver=$(basename "$(readlink /sys/bus/pci/devices/$f/driver)")"
done
EOS
}

case_l2_script() {
  nested_l2_disk_helpers
  # The BAR offsets and values (nested/l0.sh NESTED_IVSHMEM_OFFSETS).
  local off writes=""
  for off in $NESTED_IVSHMEM_OFFSETS; do writes+="$off:$(gpu_shape_value "$off") "; done
  echo "writes=\"$writes\""
  cat <<'EOS'
# Every PCI function from sysfs: name (segment:bus:dev.fn), ids, class, devfn
# and its memory BARs (resource lines 0-5: start end flags).
for d in /sys/bus/pci/devices/*; do
  [ -e "$d" ] || continue
  f=$(basename "$d")
  dev=${f##*:}; dev=${dev%.*}; fn=${f##*.}
  devfn=$(( (0x$dev << 3) | fn ))
  echo "E2E-L2: pci $f $(cat "$d/vendor"):$(cat "$d/device") class=$(cat "$d/class") devfn=$devfn numa_node=$(cat "$d/numa_node")"
  i=0
  while read -r start end flags; do
    if [ $i -lt 6 ] && [ $((end)) -gt 0 ]; then
      echo "E2E-L2: bar $f $i start=$start size=$(printf '0x%x' $((end - start + 1))) flags=$flags"
    fi
    i=$((i + 1))
  done <"$d/resource"
done
# The ivshmem function (1af4:1110): Memory Space on, then a 64-bit value
# through BAR2 at each offset, read back.
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/vendor"):$(cat "$d/device")" = 0x1af4:0x1110 ] || continue
  bar=$(sed -n 3p "$d/resource" | cut -d' ' -f1)
  printf '\002' | dd of="$d/config" bs=1 seek=4 conv=notrunc 2>/dev/null
  for w in $writes; do
    off=${w%%:*} val=${w#*:}
    devmem $((bar + off)) 64 "$val"
    back=$(devmem $((bar + off)) 64)
    ok=no
    [ $((back)) = $((val)) ] && ok=yes
    echo "E2E-L2: ivshmem $(basename "$d") offset=$off wrote=$val read=$back match=$ok"
  done
done
# NUMA: the node masks, then per node its CPUs, memory and distances.
s=/sys/devices/system/node
echo "E2E-L2: numa online=$(cat $s/online) has_cpu=$(cat $s/has_cpu) has_memory=$(cat $s/has_memory) has_generic_initiator=$(cat $s/has_generic_initiator 2>/dev/null)"
for n in $s/node[0-9]*; do
  echo "E2E-L2: numa $(basename "$n") cpulist=$(cat "$n/cpulist") memtotal-kb=$(awk '/MemTotal/ {print $4}' "$n/meminfo") distance=$(cat "$n/distance")"
done
# NVIDIA's rule (open-gpu-kernel-modules, find_gpu_numa_nodes_in_srat): a
# function at devfn 0 only; an SRAT Generic Initiator Affinity structure
# (type 5) is its when segment << 16 | bus << 8 equals the function's
# segment << 16 | bus << 8 | devfn, the bus read from handle byte 2 (or
# byte 3 when byte 2 is 0: the driver's workaround for old hypervisors).
fns=""
for d in /sys/bus/pci/devices/*; do
  f=$(basename "$d")
  dev=${f##*:}; dev=${dev%.*}; fn=${f##*.}
  seg=${f%%:*}; bus=${f#*:}; bus=${bus%%:*}
  fns="$fns $f=$(( (0x$seg << 16) | (0x$bus << 8) | (0x$dev << 3) | fn ))"
done
od -A n -t u1 -v /sys/firmware/acpi/tables/SRAT | awk -v fns="$fns" '
  { for (i = 1; i <= NF; i++) b[n++] = $i }
  END {
    k = split(fns, fl, " ")
    for (off = 48; off + 2 <= n && b[off + 1] > 0; off += b[off + 1]) {
      if (b[off] != 5) continue
      pxm = b[off + 4] + b[off + 5] * 256 + b[off + 6] * 65536 + b[off + 7] * 16777216
      seg = b[off + 8] + b[off + 9] * 256
      b2 = b[off + 10]; b3 = b[off + 11]
      gi = seg * 65536 + (b2 != 0 ? b2 : b3) * 256
      hit = "none"
      for (j = 1; j <= k; j++) {
        split(fl[j], p, "=")
        if (p[2] % 256 == 0 && p[2] + 0 == gi) hit = p[1]
      }
      printf "E2E-L2: srat gi pxm=%d handle_type=%d segment=%d byte2=%d byte3=%d flags=%d nvidia_rule=%s\n", pxm, b[off + 3], seg, b2, b3, b[off + 24], hit
    }
  }'
# SRAT and SLIT as hex, for iasl on the host.
for t in SRAT SLIT; do
  od -A n -t x1 -v /sys/firmware/acpi/tables/$t | sed "s/^/E2E-L2-TABLE: $t /"
done
dmesg | grep -E 'SRAT|SLIT|NUMA|node [0-9]' | head -30 | sed 's/^/E2E-L2-DMESG: /'
# The disk still reads (the known content).
for b in /sys/block/vd*; do
  [ -e "$b" ] || continue
  sum=$(dd if="/dev/$(basename "$b")" bs=4096 count=4096 2>/dev/null | sha256sum | cut -d' ' -f1)
  echo "E2E-L2: read $(basename "$b") pci=$(disk_pci "$b") blocks=4096 sha256=$sum"
done
# L1 reads numa_maps and vm.info at this mark.
echo "E2E-L2: mark gpu"
sleep 3
EOS
}

# gpu_shape_table NAME: the L2's table NAME (SRAT, SLIT) rebuilt from its
# hex dump into $E2E_OUT/gpu-shape/NAME-<kernel>.dat; prints the path.
gpu_shape_table() {
  local out="$E2E_OUT/gpu-shape/$1-${E2E_KERNEL:-k}.dat"
  mkdir -p "$(dirname "$out")"
  section gpu | sed -n "s/^E2E-L2-TABLE: $1 //p" | xxd -r -p >"$out"
  echo "$out"
}

case_assert() {
  local line
  # L1: two NUMA nodes from L0, the 128G BAR (BAR2) on the ivshmem function.
  expect "E2E-L1: numa online=0-1" "L1 does not have two NUMA nodes"
  line="$(grep -m1 "^E2E-L1: ivshmem $NESTED_IVSHMEM_BDF " "$LOG" || true)"
  echo "  gpu-shape L1: ${line:-no ivshmem line}"
  if [[ "$line" =~ bar2=(0x[0-9a-f]+)\ (0x[0-9a-f]+)\ (0x[0-9a-f]+) ]]; then
    (( BASH_REMATCH[2] - BASH_REMATCH[1] + 1 == 128 << 30 )) || fail "L1's ivshmem BAR2 is not 128 GiB [$line]"
  else
    fail "L1 has no ivshmem BAR2 [$line]"
  fi
  expect "E2E-L1: vmm exit=0 step=gpu " "the VMM run did not exit 0"
  step_expect_event gpu "vfio:device-bound id=gpu0 guest_bdf=0000:00:00.0 iommu=vsmmu0" "gpu0 (the function with GI nodes) is not at devfn 0 behind vsmmu0"
  step_expect_event gpu "vfio:device-bound id=disk0 guest_bdf=0000:00:01.0 iommu=vsmmu0" "disk0 is not at 00:01.0 behind vsmmu0"
  step_reject_re gpu "^\\[[^]]* ERROR " "the VMM logged an error"
  step_reject_re gpu "panicked|RUST_BACKTRACE" "the VMM panicked"
  local f
  for f in $NESTED_DISK_BDF $NESTED_IVSHMEM_BDF; do
    expect_re "E2E-L1: after gpu $f vfio-dev=vfio[0-9]+ driver=vfio-pci" "$f is not back on vfio-pci after the run"
  done

  # L1: each vCPU thread pinned to the host CPU of its node.
  step_expect_re gpu "^E2E-L1: affinity step=gpu vcpu0 Cpus_allowed_list:0$" "vCPU 0's thread is not pinned to host CPU 0 (--cpus affinity=[0@[0],...])"
  step_expect_re gpu "^E2E-L1: affinity step=gpu vcpu1 Cpus_allowed_list:1$" "vCPU 1's thread is not pinned to host CPU 1"

  # L1: each zone's pages on its host node (numa_maps of the VMM).
  local maps node pages other
  maps="$(section gpu | grep '^E2E-L1: numa_maps step=gpu ' || true)"
  [ "$(grep -c 'bind:' <<<"$maps")" = 2 ] || fail "the VMM's numa_maps has $(grep -c 'bind:' <<<"$maps") bound mappings, expected 2 (one per zone) [$maps]"
  for node in 0 1; do
    line="$(grep -m1 " bind:$node " <<<"$maps" || true)"
    pages="$(grep -oE " N$node=[0-9]+" <<<"$line" | cut -d= -f2)"
    other="$(grep -oE " N[0-9]+=" <<<"$line" | grep -v " N$node=" || true)"
    echo "  gpu-shape numa_maps zone mem$node: ${line#E2E-L1: numa_maps step=gpu }"
    [ -n "$pages" ] && ((pages > 0)) || fail "zone mem$node has no pages on host node $node [${line:-no bind:$node mapping}]"
    [ -z "$other" ] || fail "zone mem$node has pages off host node $node [$line]"
  done

  # vm.info: gpu0 at 0000:00:00.0.
  local info
  info="$(section gpu | sed -n 's/^E2E-L1: info step=gpu //p' | head -1)"
  [ "$(jq -r '.placement.devices[] | select(.id == "gpu0") | .bdf' <<<"$info" 2>/dev/null)" = 0000:00:00.0 ] ||
    fail "vm.info does not place gpu0 at 0000:00:00.0 [$(jq -c '.placement.devices' <<<"$info" 2>/dev/null || echo "$info")]"

  # L2: the function at devfn 0, its 128G BAR assigned, 64-bit prefetchable.
  step_expect_re gpu "E2E-L2: pci 0000:00:00.0 0x1af4:0x1110 class=0x050000 devfn=0 " "the L2 does not see the ivshmem function at 0000:00:00.0"
  line="$(section gpu | grep -m1 '^E2E-L2: bar 0000:00:00.0 2 ' || true)"
  echo "  gpu-shape L2 BAR2: ${line:-none}"
  if [[ "$line" =~ start=(0x[0-9a-f]+)\ size=(0x[0-9a-f]+)\ flags=(0x[0-9a-f]+) ]]; then
    local start="${BASH_REMATCH[1]}" size="${BASH_REMATCH[2]}" flags="${BASH_REMATCH[3]}"
    ((size == 128 << 30)) || fail "the L2's BAR2 is $size bytes, not 128 GiB"
    ((start != 0 && start % size == 0)) || fail "the L2's BAR2 is not assigned at a size-aligned address ($start)"
    # IORESOURCE_MEM 0x200, IORESOURCE_PREFETCH 0x2000, IORESOURCE_MEM_64 0x100000.
    ((flags & 0x200 && flags & 0x2000 && flags & 0x100000)) || fail "the L2's BAR2 is not a 64-bit prefetchable memory BAR (flags $flags)"
  else
    fail "the L2 shows no BAR2 on 0000:00:00.0"
  fi
  local off val
  for off in $NESTED_IVSHMEM_OFFSETS; do
    val="$(gpu_shape_value "$off")"
    step_expect_re gpu "E2E-L2: ivshmem 0000:00:00.0 offset=$off wrote=$val read=.* match=yes" "the value written at BAR offset $off did not read back in the L2"
    expect "E2E-L0: ivshmem offset=$off value=$val" "L0 did not find the L2's value at offset $off of the ivshmem file"
  done
  grep '^E2E-L0: ivshmem file ' "$LOG" | sed 's/^/  gpu-shape /' || true
  step_expect_re gpu "E2E-L2: read vd[a-z]+ pci=0000:00:01.0 blocks=4096 sha256=$NESTED_DISK_SHA256" "the L2 did not read the known disk at 00:01.0"

  # L2 NUMA: 10 nodes, CPUs and memory on 0 and 1, GI nodes 2-9, distances.
  step_expect_re gpu "E2E-L2: numa online=0-9 has_cpu=0-1 has_memory=0-1 has_generic_initiator=2-9$" "the L2's node masks are not 10 nodes, CPUs and memory on 0-1, GI on 2-9"
  step_expect_re gpu "E2E-L2: numa node0 cpulist=0 memtotal-kb=[1-9][0-9]* distance=10 15 25 20 20 20 20 20 20 20$" "node0: not vCPU 0, memory and distances 10 15 25 20..."
  step_expect_re gpu "E2E-L2: numa node1 cpulist=1 memtotal-kb=[1-9][0-9]* distance=15 10 20 20 20 20 20 20 20 20$" "node1: not vCPU 1, memory and distances 15 10 20..."
  step_expect_re gpu "E2E-L2: numa node2 cpulist= memtotal-kb=0 distance=25 20 10 20 20 20 20 20 20 20$" "node2 (GI): not CPU-less and memory-less with distances 25 20 10 20..."
  local n
  for n in 3 4 5 6 7 8 9; do
    step_expect_re gpu "E2E-L2: numa node$n cpulist= memtotal-kb=0 " "node$n (GI) has CPUs or memory"
  done
  section gpu | grep -E '^E2E-L2: numa ' | sed 's/^E2E-L2: /  gpu-shape L2 /' || true
  # NVIDIA's SRAT rule finds 0000:00:00.0 in all 8 GI entries (PCI handles).
  n="$(section gpu | grep -cE '^E2E-L2: srat gi pxm=[2-9] handle_type=1 segment=0 byte2=0 byte3=0 flags=1 nvidia_rule=0000:00:00.0$' || true)"
  echo "  gpu-shape L2 SRAT: $n GI entries matched by NVIDIA's rule to 0000:00:00.0"
  [ "$n" = 8 ] || fail "NVIDIA's SRAT rule matched $n GI entries to 0000:00:00.0, expected 8"
  step_reject_re gpu "E2E-L2: srat gi .*nvidia_rule=none" "a GI entry matches no function under NVIDIA's rule"

  # iasl decodes the L2's SRAT and SLIT.
  if command -v iasl >/dev/null && command -v xxd >/dev/null; then
    local t dat
    for t in SRAT SLIT; do
      dat="$(gpu_shape_table "$t")"
      if [ ! -s "$dat" ]; then
        fail "no $t hex dump from the L2"
      elif ! (cd "$(dirname "$dat")" && iasl -d "$(basename "$dat")" >/dev/null 2>&1); then
        fail "iasl -d could not decode the L2's $t ($dat)"
      fi
    done
    dat="$E2E_OUT/gpu-shape/SRAT-${E2E_KERNEL:-k}.dsl"
    n="$(grep -c 'Subtable Type : 05 \[Generic Initiator Affinity\]' "$dat" 2>/dev/null || true)"
    echo "  gpu-shape iasl: $dat has $n Generic Initiator Affinity subtables"
    [ "$n" = 8 ] || fail "iasl decodes $n Generic Initiator Affinity subtables in the L2's SRAT, expected 8"
  else
    echo "  gpu-shape: iasl or xxd missing on the host; SRAT/SLIT not decoded"
  fi
}
