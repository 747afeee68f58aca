# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# peer-virtio: QEMU 11.1 beside ours as the L1 VMM of the same Debian root
# (the disk case's image) over virtio-blk and virtio-net, same L2 kernel,
# in rounds:
#   qemu   sid's qemu-system-aarch64 (peer/build-qemu.sh), KVM, DT boot,
#          virtio-blk-pci / virtio-net-pci over a tap, console ttyAMA0
#   ours   --disk ... --net tap=... --serial tty --console off (the
#          defaults: the root, L1's block device, on io_uring; the data
#          disk, a file in L1's tmpfs, synchronous: on tmpfs io_uring would
#          pass every request to its io-wq threads)
#   ours-sync  the same with _disable_io_uring=on on every disk: synchronous
#          preadv/pwritev in each queue's worker and, for reads of 64 KiB
#          or more, its helper thread (L1 has 2 CPUs: one helper; writes to
#          a file stay with the worker, they hold the file's inode lock)
# The three VMMs run in PV_ROUNDS rounds (E2E_PV_ROUNDS, default 3), each
# round's order rotated by one (qemu ours ours-sync, then ours ours-sync
# qemu, then ours-sync qemu ours): with 3 rounds every VMM runs once first,
# once second and once third. The VM after another is sometimes slow as a
# whole, whichever VMM it is (docs/perf/peer-virtio.md); one run per VMM
# in a fixed order ranked that, not the VMMs. Steps are named VMM-ROUND.
# Each VM gets the same three disks (root, the script disk read-only, a
# 256 MiB raw data disk in L1's RAM, so L0's own disk stays out of the
# numbers) and one NIC on the tap vmtap0 (192.168.249.1 in L1). The script
# disk's script (run by the image's e2e-report.service once multi-user is
# reached) measures, in L2:
#   fio on /dev/vdc, O_DIRECT, libaio: sequential write and read (1 MiB,
#   depth 16, wrapping around the disk) and 4 KiB random read (depth 32),
#   10 s each
#   iperf3 to L1's server (the image's own iperf3, run in L1 by chroot into
#   a read-only copy of the image): L2 -> L1 and L1 -> L2, 5 s each
# and the VMM's boot-to-multi-user time and RSS come from l1-lib.sh's
# vmm_measured, stamped at the report's is-system-running line. The table
# goes to target/e2e/peer-virtio/table-<kernel>.txt; the case asserts its
# structure (every VM booted the root to running, every figure present and
# non-zero) and adds each VMM's medians over the rounds, never a comparison:
# docs/perf/peer-virtio.md records the numbers.
CASE_DESC="QEMU 11.1 beside ours on the Debian root over virtio-blk + virtio-net: boot to multi-user, fio sequential MB/s and 4 KiB random IOPS, iperf3 both ways, RSS (table)"
CASE_DEFAULT=1
CASE_KERNELS=7.2
PV_VMMS="qemu ours ours-sync"
PV_ROUNDS="${E2E_PV_ROUNDS:-3}"
[[ "$PV_ROUNDS" =~ ^[1-9][0-9]*$ ]] || {
  echo "E2E_PV_ROUNDS=$PV_ROUNDS: give a whole number of rounds, 1 or more" >&2
  exit 2
}
# One round of three VMs takes about 5 minutes in L1.
CASE_TIMEOUT=$((600 + 360 * PV_ROUNDS))

# The rotated order of round R (1-based), one VMM per line.
pv_order() {
  local -a vmms
  read -ra vmms <<<"$PV_VMMS"
  local i n=${#vmms[@]}
  for ((i = 0; i < n; i++)); do echo "${vmms[$(((i + $1 - 1) % n))]}"; done
}

# Every step, in the order they ran: VMM-ROUND.
pv_steps() {
  local r v
  for ((r = 1; r <= PV_ROUNDS; r++)); do
    for v in $(pv_order "$r"); do echo "$v-$r"; done
  done
}

case_prepare() {
  local out="$1" img="${E2E_ROOTFS_IMG:-}" payload
  [ -n "$img" ] || img="$(timed "rootfs image" "$E2E_DIR/rootfs/build-rootfs.sh")" || return 1
  [ -s "$img" ] || { log "peer-virtio: no image $img"; return 1; }
  PV_ROOTFS_IMG="$img"
  payload="$(timed "peer: qemu-system-aarch64 payload (arm64)" "$E2E_DIR/peer/build-qemu.sh")" || return 1
  L1_EXTRA+=("$payload:/")
  pv_l2_script >"$out/pv-script.img"
  truncate -s 1M "$out/pv-script.img"
}

# The root as a fresh qcow2 overlay on the cached image (both VMs boot it,
# one after the other), the script disk, and the image again, read-only, for
# L1's iperf3 server.
case_l0_args() {
  local out="$1" v="$2"
  rm -f "$out/pv-root-$v.qcow2"
  qemu-img create -q -f qcow2 -b "$PV_ROOTFS_IMG" -F raw "$out/pv-root-$v.qcow2" >&2 || return 1
  printf '%s\n' \
    -drive "if=none,id=pv-root,file=$out/pv-root-$v.qcow2,format=qcow2" \
    -device virtio-blk-pci,drive=pv-root,serial=e2e-rootfs \
    -drive "if=none,id=pv-script,file=$out/pv-script.img,format=raw,readonly=on" \
    -device virtio-blk-pci,drive=pv-script,serial=e2e-script \
    -drive "if=none,id=pv-tools,file=$PV_ROOTFS_IMG,format=raw,readonly=on" \
    -device virtio-blk-pci,drive=pv-tools,serial=e2e-tools
}

# In L2 (Debian): the NIC, then each measurement as one line
#   E2E-PV: fio job=NAME mibps=X iops=Y
#   E2E-PV: iperf3 dir=l2-l1|l1-l2 mbps=X
pv_l2_script() {
  cat <<'EOS'
ip link set eth0 up
ip addr add 192.168.249.2/24 dev eth0
# L1 refusing a connection to a closed port is the link being up (the
# image has no ping; iperf3's own port is left to the measurements).
n=$(python3 -c 'import socket, time
for n in range(60):
    try:
        socket.create_connection(("192.168.249.1", 9), timeout=1).close()
        break
    except ConnectionRefusedError:
        break
    except OSError:
        time.sleep(0.5)
print(n)')
echo "E2E-PV: net up after=${n} $(ip -4 -o addr show eth0 | awk '{print $4}')"
fio_job() {
  name="$1"
  shift
  fio --name="$name" --filename=/dev/vdc --direct=1 --ioengine=libaio --runtime=10 \
    --output-format=json "$@" 2>/dev/null |
    python3 -c 'import json, sys
j = json.load(sys.stdin)["jobs"][0]
d = j["write"] if j["write"]["io_bytes"] > 0 else j["read"]
print("E2E-PV: fio job=%s mibps=%.1f iops=%.0f" % (sys.argv[1], d["bw"] / 1024.0, d["iops"]))' "$name" ||
    echo "E2E-PV: fio job=$name failed"
}
# Every job runs its 10 s (the sequential ones wrap around the 256 MiB):
# one pass of 256 MiB took 0.3-0.6 s, too short a sample to rank anything.
fio_job seqwrite --rw=write --bs=1M --iodepth=16 --size=256M --time_based
fio_job seqread --rw=read --bs=1M --iodepth=16 --size=256M --time_based
fio_job randread --rw=randread --bs=4k --iodepth=32 --size=256M --time_based
iperf_run() {
  dir="$1"
  shift
  iperf3 -c 192.168.249.1 -t 5 -J "$@" 2>/dev/null |
    python3 -c 'import json, sys
j = json.load(sys.stdin)
print("E2E-PV: iperf3 dir=%s mbps=%.1f" % (sys.argv[1], j["end"]["sum_received"]["bits_per_second"] / 1e6))' "$dir" ||
    echo "E2E-PV: iperf3 dir=$dir failed"
}
iperf_run l2-l1
iperf_run l1-l2 -R
# The guest's side of it: frames its NIC dropped, segments TCP queued out
# of order or dropped for want of receive memory.
echo "E2E-PV: l2 rx-dropped=$(cat /sys/class/net/eth0/statistics/rx_dropped) $(awk '/^TcpExt:/ {
  if (!h) { for (i = 2; i <= NF; i++) col[$i] = i; h = 1; next }
  printf "ofo-queued=%s rcvq-drop=%s", $(col["TCPOFOQueue"]), $(col["TCPRcvQDrop"]); exit }' /proc/net/netstat)"
EOS
}

case_l1_script() {
  echo "steps=\"$(pv_steps | xargs)\""
  cat <<'EOS'
VMM_TIMEOUT=600
echo "E2E-L1: peer-virtio steps $steps"
root=$(by_serial e2e-rootfs)
script=$(by_serial e2e-script)
tools=$(by_serial e2e-tools)
echo "E2E-L1: disks root=${root:-none} script=${script:-none} tools=${tools:-none}"
{ [ -b "$root" ] && [ -b "$script" ] && [ -b "$tools" ]; } || exit 1
# L1's iperf3 server: the image's own, chrooted into its read-only copy.
mkdir -p /mnt/pv
# iperf3 keeps its buffers in a file under $TMPDIR: a tmpfs there.
mount -t ext4 -o ro,noload "$tools" /mnt/pv && mount --bind /dev /mnt/pv/dev &&
  mount -t proc proc /mnt/pv/proc && mount -t tmpfs tmpfs /mnt/pv/tmp &&
  TMPDIR=/tmp chroot /mnt/pv iperf3 -s -D
sleep 1
echo "E2E-L1: iperf3 server $(pidof iperf3 >/dev/null && echo running || echo missing)"
data=/tmp/pv-data.img
cmdline="root=/dev/vda rw rootwait console=ttyAMA0 efi=noruntime panic=-1 net.ifnames=0 e2e.rootfs.script=/dev/vdb e2e.rootfs=poweroff"
fresh_data() { rm -f "$data"; sync; echo 3 >/proc/sys/vm/drop_caches; prefault "$1"; truncate -s 256M "$data"; }
# QEMU's tap comes up without an address: L1 gives it one once it exists.
tap_address() {
  i=0
  while [ ! -e /sys/class/net/vmtap0 ] && [ "$i" -lt 600 ]; do sleep 0.5; i=$((i + 1)); done
  ip addr add 192.168.249.1/24 dev vmtap0 && ip link set vmtap0 up
}
# tap_watch STEP (in the background while the VM runs): the tap's frames
# toward the guest and those it dropped (its queue full: the VMM had not
# read them, or the guest had no buffer), and L1's TCP retransmits over
# the VM's life (L1 sends for L1 -> L2), as the tap last showed them.
# and of those, what TCP said each was for (TcpExt: RTO timeouts, tail
# loss probes, spurious RTOs, DSACKs received, fast retransmits).
tcp_retrans() { awk '/^Tcp:/ { if (h) { print $13; exit } h = 1 }' /proc/net/snmp; }
TCP_WHY="TCPTimeouts TCPLossProbes TCPSpuriousRTOs TCPDSACKRecv TCPFastRetrans"
tcp_why() {
  awk -v want="$TCP_WHY" '/^TcpExt:/ {
    if (!h) { for (i = 2; i <= NF; i++) col[$i] = i; h = 1; next }
    n = split(want, w, " "); for (k = 1; k <= n; k++) printf "%s ", (w[k] in col) ? $(col[w[k]]) : 0; exit }' /proc/net/netstat
}
# Also each VMM thread's CPU time (utime + stime, clock ticks) as last seen:
# what the VMM burns beside its vCPUs, on the same 2 CPUs.
thread_ticks() {
  for t in /proc/"$1"/task/*; do
    (
      s=$(cat "$t/stat" 2>/dev/null) || exit 0
      c=$(tr ' ' '_' <"$t/comm")
      # shellcheck disable=SC2086 # the fields after the command name
      set -- ${s##*) }
      echo "$c:$((${12} + ${13}))"
    )
  done | xargs
}
tap_watch() {
  i=0
  while [ ! -e /sys/class/net/vmtap0 ] && [ "$i" -lt 1200 ]; do sleep 0.5; i=$((i + 1)); done
  r0=$(tcp_retrans) w0=$(tcp_why)
  pid=$(pidof cloud-hypervisor qemu-system-aarch64 | awk '{print $1}')
  st=/sys/class/net/vmtap0/statistics
  last="" ticks=""
  while now="$(cat $st/tx_packets $st/tx_dropped 2>/dev/null | xargs)" && [ -n "$now" ]; do
    last="$now" r1=$(tcp_retrans) w1=$(tcp_why)
    # The fullest sample: at teardown the tap outlives the VMM's threads.
    t=$(thread_ticks "$pid")
    [ "$(echo "$t" | wc -w)" -ge "$(echo "$ticks" | wc -w)" ] && ticks="$t"
    sleep 1
  done
  echo "E2E-L1: threads step=$1 $ticks"
  why=$(echo "$TCP_WHY $w0 ${w1:-$w0}" | awk '{ n = NF / 3; for (i = 1; i <= n; i++) printf "%s%s:%d", (i > 1 ? "," : ""), $i, $(2 * n + i) - $(n + i) }')
  echo "E2E-L1: tap step=$1 to-guest=${last% *} dropped=${last#* } l1-tcp-retrans=$((${r1:-0} - ${r0:-0})) ($why)"
}
export MEASURE_MARK="E2E-ROOTFS: is-system-running="
qemu=/usr/bin/qemu-system-aarch64
echo "E2E-L1: peer $($qemu --version | head -1)"

# Every free page of L1's RAM written once before each VMM (prefault).
# L0 (TCG) backs an L1 page on its first touch, which the first VMM paid
# alone (QEMU's sequential write: 100-190 MiB/s without, 411-461 with). And
# with one prefault before the first VMM only, a VMM after another wrote
# at 32-108 MiB/s in 9 runs of 10, its data disk's worker burning 2.6x the
# CPU for the same writes with no reclaim in L1; the prefault after a VM
# takes 12 s, the one after that 4 s. Pages the previous VM ran code from
# (TCG watches those for writes) are the suspect. The case measures the
# VMMs, not that: with a prefault before each, no run was slow (2 of 2).
# The prefault's own time is in the table: a slow one (24 s against 6)
# came before the one slow VM of a run.
prefault() {
  free_mb=$(awk '/MemAvailable/ {print int($2 / 1024)}' /proc/meminfo)
  t0=$(cut -d' ' -f1 /proc/uptime)
  dd if=/dev/zero of=/tmp/pv-prefault bs=1M count=$((free_mb - 256)) 2>/dev/null
  rm -f /tmp/pv-prefault
  echo "E2E-L1: prefaulted $((free_mb - 256)) MiB in $(awk -v t0="$t0" '{print $1 - t0}' /proc/uptime) s before step=$1"
}

# qemu_vm STEP
qemu_vm() {
  fresh_data "$1"
  tap_watch "$1" &
  tap_address &
  vmm_measured "$1" $qemu -M virt,gic-version=3 -accel kvm -cpu host -smp 2 -m 1G \
    -nographic -no-reboot -kernel /l2/Image -append "$cmdline" \
    -drive "if=none,id=d0,file=$root,format=raw" -device virtio-blk-pci,drive=d0 \
    -drive "if=none,id=d1,file=$script,format=raw,readonly=on" -device virtio-blk-pci,drive=d1 \
    -drive "if=none,id=d2,file=$data,format=raw" -device virtio-blk-pci,drive=d2 \
    -netdev tap,id=n0,ifname=vmtap0,script=no,downscript=no \
    -device virtio-net-pci,netdev=n0,mac=52:54:00:e2:e0:02,romfile=
  wait
  sleep 1
}

# ours STEP ENGINE_OPTION: ours, with "" (io_uring) or ",_disable_io_uring=on".
ours() {
  fresh_data "$1"
  tap_watch "$1" &
  vmm_measured "$1" /bin/cloud-hypervisor -v --kernel /l2/Image --cpus boot=2 --memory size=1G \
    --serial tty --console off --cmdline "$cmdline" \
    --disk path="$root$2" --disk path="$script,readonly=on$2" --disk path="$data$2" \
    --net tap=vmtap0,ip=192.168.249.1,mask=255.255.255.0,mac=52:54:00:e2:e0:02,id=net0
  wait
}
for step in $steps; do
  case "$step" in
    qemu-*) qemu_vm "$step" ;;
    ours-sync-*) ours "$step" ",_disable_io_uring=on" ;;
    ours-*) ours "$step" "" ;;
  esac
done
EOS
}

# One row per step (VMM-ROUND, in the order they ran), then each VMM's
# medians over its rounds (RSS: VmRSS alone).
pv_table() {
  local step vmm boot rss anon file prefault tap cpu rows="" row marks
  local fmt='%-17s %-10s %-10s %-8s %-14s %-13s %-13s %-14s %-14s %-9s %-10s %-9s %-9s %s\n'
  # shellcheck disable=SC2059 # the format is the one above
  printf "$fmt" step "prefault s" "boot-mu s" "in-L2 s" "seqwrite MiB/s" "seqread MiB/s" "randread IOPS" "L2->L1 Mbit/s" "L1->L2 Mbit/s" "tap drops" "L1 retrans" "vCPU s" "other s" "RSS MiB (anon+file)"
  # L1's own lines about each step, read from the log once.
  marks="$(sed -e 's/\x1b\[[0-9;]*m//g' "$LOG" | tr -d '\r' | grep -aE 'E2E-L1: (prefaulted|tap|threads) ')"
  for step in $(pv_steps); do
    read -r boot rss anon file < <(section "$step" |
      sed -n 's/.*E2E-L1: measured step=[^ ]* boot-to-init=\([0-9.]*\) vmrss-kb=\([0-9]*\) rssanon-kb=\([0-9]*\) rssfile-kb=\([0-9]*\).*/\1 \2 \3 \4/p' | head -1)
    prefault="$(awk -v s="step=$step" '/E2E-L1: prefaulted / && $NF == s {print $(NF - 3); exit}' <<<"$marks")"
    tap="$(sed -n "s/.*E2E-L1: tap step=$step to-guest=[0-9]* dropped=\([0-9]*\) l1-tcp-retrans=\([0-9-]*\).*/\1 \2/p" <<<"$marks" | head -1)"
    # CPU seconds of the VMM's vCPU threads (ours: vcpuN; QEMU: CPU N/KVM)
    # and of all its others (100 ticks a second).
    cpu="$(awk -v s="step=$step" '
      $2 == "threads" && $3 == s { for (i = 4; i <= NF; i++) { n = split($i, f, ":"); if (f[1] ~ /^(vcpu[0-9]+|CPU_[0-9]+\/KVM)$/) v += f[n]; else o += f[n] }; printf "%.1f %.1f", v / 100, o / 100; found = 1; exit }
      END { if (!found) print "- -" }' <<<"$marks")"
    pv_val() { section "$step" | sed -n "s/^.*E2E-PV: $1.*$2=\([0-9.]*\).*/\1/p" | head -1; }
    row="$(printf '%s ' "${prefault:--}" "${boot:--}" \
      "$(section "$step" | sed -n 's/^.*E2E-ROOTFS: uptime=\([0-9.]*\).*/\1/p' | head -1)" \
      "$(pv_val 'fio job=seqwrite' mibps)" "$(pv_val 'fio job=seqread' mibps)" "$(pv_val 'fio job=randread' iops)" \
      "$(pv_val 'iperf3 dir=l2-l1' mbps)" "$(pv_val 'iperf3 dir=l1-l2' mbps)" "${tap:-- -}" "$cpu" \
      "$(awk -v r="${rss:-0}" 'BEGIN { printf "%.0f", r / 1024 }')")"
    row="${row% }"
    rows+="${step%-*} $row"$'\n'
    # shellcheck disable=SC2059,SC2086 # the format above; the row splits into its cells
    printf "$fmt" "$step" ${row% *} \
      "$(awk -v r="${rss:-0}" -v a="${anon:-0}" -v fl="${file:-0}" 'BEGIN { printf "%.0f (%.0f+%.0f)", r / 1024, a / 1024, fl / 1024 }')"
  done
  echo
  for vmm in $PV_VMMS; do
    printf '%s' "$rows" | awk -v v="$vmm" -v fmt="$fmt" '
      $1 == v { n++; for (c = 2; c <= NF; c++) cell[c, n] = $c }
      function median(c,   i, j, t, k, a) {
        k = 0
        for (i = 1; i <= n; i++) if (cell[c, i] ~ /^[0-9.]+$/) a[++k] = cell[c, i] + 0
        if (k == 0) return "-"
        for (i = 2; i <= k; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
      }
      END {
        printf fmt, "median " (v == "qemu" ? "QEMU" : v), median(2), median(3), median(4), median(5), median(6), median(7), median(8), median(9), median(10), median(11), median(12), median(13), median(14) " (of " n ")"
      }'
  done
}

case_assert() {
  local step table f
  expect_re "E2E-L1: disks root=/dev/vd[a-z]+ script=/dev/vd[a-z]+ tools=/dev/vd[a-z]+" "L0's three extra virtio-blk disks are not block devices in L1"
  expect "E2E-L1: iperf3 server running" "the image's iperf3 server does not run in L1 (chroot into the read-only copy)"
  expect_re "E2E-L1: peer QEMU emulator version [0-9]" "the QEMU payload does not run in L1 (missing library? see the log)"
  expect "E2E-L1: peer-virtio steps $(pv_steps | xargs)" "L1 did not get the rounds' steps"
  for step in $(pv_steps); do
    step_expect_re "$step" "E2E-L1: vmm exit=0 step=$step " "the VMM did not power off cleanly"
    step_expect_re "$step" "E2E-ROOTFS: is-system-running=running" "the Debian root did not reach multi-user with no failed unit"
    step_expect_re "$step" "E2E-L1: measured step=$step boot-to-init=[0-9.]+ vmrss-kb=[1-9][0-9]*" "no boot-to-multi-user / RSS sample"
    step_expect_re "$step" "E2E-PV: net up after=[0-9]+ 192.168.249.2/24" "the guest's NIC is not up"
    step_expect_re "$step" "E2E-ROOTFS: script exit=0" "the measuring script did not finish"
    expect_re "E2E-L1: tap step=$step to-guest=[1-9][0-9]* dropped=[0-9]+ l1-tcp-retrans=-?[0-9]+" "L1 saw no frame go to the guest through the tap"
    for f in "fio job=seqwrite mibps=[0-9.]*[1-9]" "fio job=seqread mibps=[0-9.]*[1-9]" "fio job=randread mibps=[0-9.]+ iops=[1-9]" \
      "iperf3 dir=l2-l1 mbps=[0-9.]*[1-9]" "iperf3 dir=l1-l2 mbps=[0-9.]*[1-9]"; do
      step_expect_re "$step" "E2E-PV: $f" "a measurement is missing or zero"
    done
  done
  # Which engine each of ours ran its disks on: the requests their io_uring
  # served (vm.counters at stop). ours: the root (L1's /dev/vda, a block
  # device) on io_uring; the data disk, a file in L1's tmpfs (no
  # RWF_NOWAIT: io_uring would pass every request to io-wq), synchronous
  # by the VMM's own choice, which it logs. ours-sync: nothing on io_uring.
  local n h r
  for ((r = 1; r <= PV_ROUNDS; r++)); do
    n="$(ev_prop "ours-$r" "vm:counters id=_disk0" io_uring_ops)"
    [[ "$n" =~ ^[0-9]+$ ]] && ((n > 100)) || fail "ours-$r: the root disk's boot did not run on io_uring (io_uring_ops=${n:-none})"
    n="$(ev_prop "ours-$r" "vm:counters id=_disk2" io_uring_ops)"
    [ "$n" = 0 ] || fail "ours-$r: the tmpfs data disk ran on io_uring (io_uring_ops=${n:-none})"
    step_expect_re "ours-$r" "disk _disk2: /tmp/pv-data.img is on a file system where io_uring would pass every request to its worker threads" \
      "ours-$r: no log line for the data disk's synchronous I/O"
    # The data disk's helper (L1 has 2 CPUs: one per queue) served some of
    # fio's 1 MiB reads and none of its writes (a buffered file: they stay
    # with the worker).
    for n in "ours-$r" "ours-sync-$r"; do
      step_expect_re "$n" "disk _disk2: 1 helper thread\\(s\\) per queue " "$n: the data disk's queue has no helper thread (L1 has 2 CPUs)"
      h="$(ev_prop "$n" "vm:counters id=_disk2" helper_ops)"
      [[ "$h" =~ ^[0-9]+$ ]] && ((h > 0)) || fail "$n: the data disk's helper thread served none of fio's 1 MiB reads (helper_ops=${h:-none})"
      h="$(ev_prop "$n" "vm:counters id=_disk2" helper_write_ops)"
      [ "$h" = 0 ] || fail "$n: a helper wrote to the tmpfs data disk beside the worker (helper_write_ops=${h:-none}); writes to a buffered file stay with the worker"
    done
    for n in 0 2; do
      [ "$(ev_prop "ours-sync-$r" "vm:counters id=_disk$n" io_uring_ops)" = 0 ] || fail "ours-sync-$r: _disk$n did not run synchronously"
    done
  done
  table="$(pv_table)"
  mkdir -p "$E2E_OUT/peer-virtio"
  echo "$table" | tee "$E2E_OUT/peer-virtio/table-${E2E_KERNEL:-k}.txt"
  reject "Kernel panic" "a kernel panicked"
}
