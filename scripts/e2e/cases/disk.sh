# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# disk: our VMM boots a Debian root file system (scripts/e2e/rootfs/) from a
# virtio-blk disk with a virtio-console, beside the vSMMU + CMD-QV.
#
# L0 gives L1 two more virtio-blk disks (case_l0_args): the rootfs (a qcow2
# overlay on the cached raw image, so the cache never changes; serial
# e2e-rootfs) and a 1 MiB raw "script disk" holding l2_script below
# (serial e2e-script). L1 finds them by serial and runs our VMM three times:
#   boot        --disk path=<rootfs> --disk path=<script>,readonly=on --console tty
#               --serial file=..., root=/dev/vda: systemd reaches multi-user
#               (e2e-report.service prints "E2E-ROOTFS: is-system-running=running"
#               on hvc0, i.e. our stdout); the script disk's script writes
#               /root/e2e-marker and syncs, and tries to write /dev/vdb (the
#               read-only disk) twice: as is, and after blockdev --setrw with
#               O_DIRECT: both fail (EPERM: the device offers VIRTIO_BLK_F_RO,
#               so Linux refuses them itself; EIO from a device without it);
#               the guest powers off. L1 reads the marker out of the image with
#               debugfs (the VM stopped), checks the script disk is unchanged and
#               e2fsck -fn is clean.
#   kill        the guest starts fio (random 4 KiB writes to a 32 MiB file,
#               fsync every 16) and
#               a file churn as a transient service, says "writer running",
#               stays up (e2e.rootfs=report); L1 SIGKILLs the VMM 3 s later.
#   after-kill  the guest boots again (ext4 replays its journal), reaches
#               multi-user with no failed unit, powers off; then e2fsck -fn
#               in L1 is clean.
#   qcow2       the same root as a qcow2 image (build-rootfs.sh's copy, given
#               by L0 as a raw disk holding the file's bytes, serial
#               e2e-rootq-<MiB>; L1 copies it to a file, since a qcow2 image
#               grows and a block device cannot): --disk path=<file> with no
#               image_type (detected by its magic) boots to multi-user, the
#               guest writes and syncs a marker, powers off; L1 writes the
#               file back onto the disk, and on the host qemu-img check finds
#               no errors, and the marker is in the converted raw image,
#               whose ext4 e2fsck -fn finds clean.
# e2fsck and debugfs in L1 are the image's own arm64 binaries
# (build-rootfs.sh's .tools tree). The VMM syntax is cloud-hypervisor's
# (--disk path=,readonly=on; --console tty|file=|off).
CASE_DESC="Debian bookworm root on virtio-blk (--disk) with --console tty: multi-user with no failed unit, a synced write lands, readonly=on refuses writes, SIGKILL during writes leaves ext4 clean; the same root as qcow2 (qemu-img check clean)"
CASE_DEFAULT=1
CASE_TIMEOUT=1500

# The raw image, its L1 tools and the script disk, built once per run.
# E2E_ROOTFS_IMG: a built image (its .tools beside it) instead of
# build-rootfs.sh's.
case_prepare() {
  local out="$1" img="${E2E_ROOTFS_IMG:-}"
  [ -n "$img" ] || img="$(timed "rootfs image" "$E2E_DIR/rootfs/build-rootfs.sh")" || return 1
  if [ ! -s "$img" ] || [ ! -d "${img%.img}.tools" ]; then log "disk: no image $img with ${img%.img}.tools beside it"; return 1; fi
  DISK_ROOTFS_IMG="$img"
  L1_EXTRA+=("${img%.img}.tools:/")
  disk_l2_script >"$out/script.sh"
  cp "$out/script.sh" "$out/script.img"
  truncate -s 1M "$out/script.img"
}

# Per kernel: a fresh overlay (the guest writes to it) and the script disk.
case_l0_args() {
  local out="$1" v="$2"
  rm -f "$out/rootfs-$v.qcow2"
  qemu-img create -q -f qcow2 -b "$DISK_ROOTFS_IMG" -F raw "$out/rootfs-$v.qcow2" >&2 || return 1
  cp "$out/script.img" "$out/script-$v.img"
  # The qcow2 copy's bytes on a raw disk with room to grow (256 MiB).
  local q="${DISK_ROOTFS_IMG%.img}.qcow2" mib
  [ -s "$q" ] || { log "disk: no qcow2 copy $q"; return 1; }
  mib=$((($(stat -c %s "$q") + 1048575) / 1048576))
  cp --sparse=always "$q" "$out/rootq-$v.img"
  truncate -s $((mib + 256))M "$out/rootq-$v.img"
  printf '%s\n' \
    -drive "if=none,id=e2e-rootq,file=$out/rootq-$v.img,format=raw" \
    -device "virtio-blk-pci,drive=e2e-rootq,serial=e2e-rootq-$mib" \
    -drive "if=none,id=e2e-rootfs,file=$out/rootfs-$v.qcow2,format=qcow2" \
    -device virtio-blk-pci,drive=e2e-rootfs,serial=e2e-rootfs \
    -drive "if=none,id=e2e-script,file=$out/script-$v.img,format=raw" \
    -device virtio-blk-pci,drive=e2e-script,serial=e2e-script
}

# The script disk's content: run by the image's e2e-report.service after its
# report (e2e.rootfs.script=/dev/vdb), the step named by e2e.step=.
disk_l2_script() {
  cat <<'EOS'
step=$(sed -n 's/.*e2e\.step=\([a-z0-9-]*\).*/\1/p' /proc/cmdline)
echo "E2E-L2: step=$step root=$(findmnt -no SOURCE /) vdb-ro=$(cat /sys/block/vdb/ro)"
ro_write() {
  err=$(dd if=/dev/zero of=/dev/vdb bs=4096 count=1 oflag=direct conv=notrunc 2>&1)
  rc=$?
  echo "E2E-L2: ro-write $1 rc=$rc err=$(echo "$err" | head -1)"
}
case "$step" in
  boot)
    marker="e2e-marker boot_id=$(cat /proc/sys/kernel/random/boot_id)"
    echo "$marker" >/root/e2e-marker
    sync
    echo "E2E-L2: marker=$marker"
    ro_write plain
    blockdev --setrw /dev/vdb
    ro_write setrw
    ;;
  writer)
    systemd-run --unit=e2e-fio fio --name=e2e --filename=/root/fio.dat --size=32M \
      --rw=randwrite --bs=4k --ioengine=psync --fsync=16 --time_based --runtime=900 --output=/dev/null
    systemd-run --unit=e2e-churn sh -c 'i=0; while :; do dd if=/dev/urandom of=/root/churn.$((i % 16)) bs=64k count=16 conv=fsync status=none; rm -f /root/churn.$(((i + 8) % 16)); i=$((i + 1)); done'
    n=0
    while [ "$n" -lt 60 ] && [ "$(stat -c %s /root/fio.dat 2>/dev/null || echo 0)" -lt 1048576 ]; do sleep 1; n=$((n + 1)); done
    echo "E2E-L2: writer running fio.dat=$(stat -c %s /root/fio.dat 2>/dev/null) fio=$(systemctl is-active e2e-fio) churn=$(systemctl is-active e2e-churn)"
    ;;
  qcow2)
    marker="e2e-qcow2-marker boot_id=$(cat /proc/sys/kernel/random/boot_id)"
    echo "$marker" >/root/e2e-qcow2-marker
    sync
    echo "E2E-L2: qcow2 marker=$marker"
    ;;
  check)
    echo "E2E-L2: after-kill fio.dat=$(stat -c %s /root/fio.dat 2>/dev/null) marker=$(cat /root/e2e-marker 2>/dev/null)"
    dmesg | grep -i 'EXT4-fs' | sed 's/^/E2E-L2-DMESG: /'
    ;;
esac
echo "E2E-L2: script step=$step done"
EOS
}

case_l1_script() {
  cat <<'EOS'
VMM_TIMEOUT=900
root=$(by_serial e2e-rootfs)
script=$(by_serial e2e-script)
rootq= qmib=
for b in /sys/block/vd*; do
  case "$(cat "$b/serial" 2>/dev/null)" in
    e2e-rootq-*) rootq="/dev/${b##*/}"; qmib=$(sed 's/^e2e-rootq-//' "$b/serial") ;;
  esac
done
echo "E2E-L1: disks root=${root:-none} script=${script:-none} qcow2=${rootq:-none} all=$(echo /sys/block/* | sed "s,/sys/block/,,g")"
{ [ -b "$root" ] && [ -b "$script" ]; } || exit 1
script_sum=$(sha256sum "$script" | cut -d' ' -f1)
fresh() { sync; echo 3 >/proc/sys/vm/drop_caches; }
fsck_l1() {
  fresh
  /usr/sbin/e2fsck -fn "$root" >"/tmp/fsck-$1.log" 2>&1
  rc=$?
  sed "s/^/E2E-L1-FSCK step=$1: /" "/tmp/fsck-$1.log"
  echo "E2E-L1: fsck step=$1 rc=$rc"
}
echo "E2E-L1: rootfs label=$(/usr/sbin/debugfs -R stats "$root" 2>/dev/null | sed -n 's/^Filesystem volume name: *//p') size=$(cat "/sys/block/${root#/dev/}/size")"
fsck_l1 initial

cmdline="root=/dev/vda rw rootwait console=ttyAMA0 console=hvc0 efi=noruntime panic=-1 e2e.rootfs.script=/dev/vdb"
# vm_args STEP [ROOT]
vm_args() {
  echo "--kernel /l2/Image --cpus boot=2 --memory size=1G --serial file=/tmp/serial-$1.log --console tty" \
    "--vsmmu cmdqv,backend=emulated --test-device id=dma0 --disk path=${2:-$root} --disk path=$script,readonly=on"
}
# The PL011's output (kernel messages), after the run, marked as such: the
# lines that start with E2E-ROOTFS came through hvc0, our stdout.
serial_dump() { [ ! -f "/tmp/serial-$1.log" ] || sed "s/^/E2E-L2-SERIAL step=$1: /" "/tmp/serial-$1.log"; }

# vmm_kill STEP PATTERN ARGS...: run the VMM until its output holds PATTERN,
# let the guest go on 3 s, SIGKILL it.
vmm_kill() {
  step="$1"; pat="$2"; shift 2
  echo "E2E-L1: vmm start step=$step args=$*"
  out="/tmp/vmm-$step.log"
  : >"$out"
  /bin/cloud-hypervisor --seccomp "$VMM_SECCOMP" "$@" >>"$out" 2>&1 &
  pid=$!
  waited=0
  while [ "$waited" -lt "$VMM_TIMEOUT" ]; do
    grep -q "$pat" "$out" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
    waited=$((waited + 1))
  done
  seen=no
  grep -q "$pat" "$out" && seen=yes
  sleep 3
  kill -KILL "$pid" 2>/dev/null
  wait "$pid"
  rc=$?
  cat "$out"
  echo "E2E-L1: vmm killed step=$step pattern-seen=$seen"
  echo "E2E-L1: vmm exit=$rc step=$step seconds=$waited"
}

# io_watch WHAT CMD...: run CMD (an L1 disk copy); while it runs past 120 s,
# print every 120 s what L1's kernel shows of it (each disk's in-flight
# requests, the virtio interrupt counts, the command's kernel stack) and ask
# the stuck disk for one more block, whose completion interrupt also reaps
# any completion whose interrupt was lost. (A 6.12 L1 under TCG stalled here
# twice in ~8 runs with no kernel message; this names what it was.)
io_watch() {
  what="$1" dev="$2"; shift 2
  "$@" &
  wpid=$!
  t=0
  while kill -0 "$wpid" 2>/dev/null; do
    sleep 1
    t=$((t + 1))
    [ $((t % 120)) -eq 0 ] || continue
    echo "E2E-L1: io-stall what=$what dev=$dev seconds=$t"
    for b in /sys/block/vd*; do
      echo "E2E-L1-STALL: ${b##*/} inflight=$(cat "$b/inflight") stat=$(cat "$b/stat")"
    done
    grep -i virtio /proc/interrupts | sed 's/^/E2E-L1-STALL: /'
    sed 's/^/E2E-L1-STALL: stack: /' "/proc/$wpid/stack" 2>/dev/null
    echo "E2E-L1-STALL: wchan=$(cat "/proc/$wpid/wchan" 2>/dev/null) state=$(sed -n 's/^State:\t*//p' "/proc/$wpid/status" 2>/dev/null)"
    dd if="$dev" of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null &
  done
  wait "$wpid"
}

# The qcow2 root, copied off its disk into a file (it grows) before any VM
# ran; booted last, then put back.
io_watch copy-off "$rootq" dd if="$rootq" of=/tmp/root.qcow2 bs=1M count="$qmib" 2>/dev/null
echo "E2E-L1: qcow2 file bytes=$(wc -c </tmp/root.qcow2) magic=$(head -c 3 /tmp/root.qcow2)"

# shellcheck disable=SC2046 # vm_args: words
vmm boot $(vm_args boot) --cmdline "$cmdline e2e.rootfs=poweroff e2e.step=boot"
serial_dump boot
fresh
echo "E2E-L1: marker-in-image=$(/usr/sbin/debugfs -R 'cat /root/e2e-marker' "$root" 2>/dev/null)"
if [ "$(sha256sum "$script" | cut -d' ' -f1)" = "$script_sum" ]; then u=yes; else u=no; fi
echo "E2E-L1: script disk unchanged=$u"
fsck_l1 boot

# shellcheck disable=SC2046
vmm_kill kill "E2E-L2: writer running" $(vm_args kill) --cmdline "$cmdline e2e.rootfs=report e2e.step=writer"
serial_dump kill

# shellcheck disable=SC2046
vmm after-kill $(vm_args after-kill) --cmdline "$cmdline e2e.rootfs=poweroff e2e.step=check"
serial_dump after-kill
fsck_l1 after-kill

# The qcow2 root (copied off above): booted, put back.
# shellcheck disable=SC2046
vmm qcow2 $(vm_args qcow2 /tmp/root.qcow2) --cmdline "$cmdline e2e.rootfs=poweroff e2e.step=qcow2"
serial_dump qcow2
qbytes=$(wc -c </tmp/root.qcow2)
if [ "$qbytes" -le "$(($(cat "/sys/block/${rootq#/dev/}/size") * 512))" ]; then
  io_watch write-back "$rootq" dd if=/tmp/root.qcow2 of="$rootq" bs=1M conv=notrunc,fsync 2>/dev/null
  echo "E2E-L1: qcow2 written back bytes=$qbytes"
else
  echo "E2E-L1: qcow2 grew past its disk bytes=$qbytes"
fi
EOS
}

# STEP reached multi-user with no failed unit: its hvc0 line (at the start
# of a line: the PL011's copies are prefixed; section drops a getty prompt
# before it) says running; otherwise the failure names the state and the
# failed units.
disk_running() {
  local step="$1" state units
  state="$(section "$step" | sed -n 's/^E2E-ROOTFS: is-system-running=\([a-z-]*\).*/\1/p' | awk 'NR == 1')"
  [ "$state" = running ] && return 0
  units="$(section "$step" | grep -o 'E2E-ROOTFS: failed unit=[^ ]*' | cut -d= -f2 | sort -u | xargs || true)"
  fail "step $step: the Debian root is not up with no failed unit on hvc0: is-system-running=${state:-no line} failed: ${units:-none}"
}

case_assert() {
  local marker in_image
  expect_re "E2E-L1: disks root=/dev/vd[a-z]+ script=/dev/vd[a-z]+ " "L0's two extra virtio-blk disks (serials e2e-rootfs, e2e-script) are not block devices in L1"
  expect "E2E-L1: rootfs label=e2e-root " "L1 does not see the rootfs image's ext4 (label e2e-root) on its disk"
  expect "E2E-L1: fsck step=initial rc=0" "the rootfs image is not clean before any boot"
  expect "E2E-L1: vmm exit=0 step=boot " "our VMM did not boot the Debian root from --disk and exit 0 at the guest's poweroff"
  disk_running boot
  step_expect_re boot "E2E-L2: step=boot root=/dev/vda " "the guest's root is not /dev/vda (or the script disk never ran)"
  marker="$(section boot | sed -n 's/^E2E-L2: marker=//p' | awk 'NR == 1')"
  in_image="$(sed -n 's/^E2E-L1: marker-in-image=//p' "$LOG" | awk 'NR == 1')"
  if [ -z "$marker" ] || [ "$marker" != "$in_image" ]; then
    fail "the file written and synced in L2 is not in the image afterwards (L2 wrote '${marker:-nothing}', L1 read '${in_image:-nothing}')"
  fi
  # readonly=on: the device offers VIRTIO_BLK_F_RO (as cloud-hypervisor's
  # does), so Linux marks the disk read-only and refuses the write itself
  # (EPERM, even after blockdev --setrw: the disk's own flag stays); a device
  # without the bit must fail the request (EIO). Either way nothing lands:
  # L1 compares the disk's sha256.
  step_expect_re boot "E2E-L2: step=boot root=/dev/vda vdb-ro=1" "the readonly=on disk is not read-only in the guest (VIRTIO_BLK_F_RO not offered?)"
  step_expect_re boot "E2E-L2: ro-write plain rc=[1-9][0-9]* err=.*(Input/output error|Operation not permitted)" "a write to the readonly=on disk did not fail with an I/O or permission error"
  step_expect_re boot "E2E-L2: ro-write setrw rc=[1-9][0-9]* err=.*(Input/output error|Operation not permitted)" "an O_DIRECT write to the readonly=on disk after blockdev --setrw did not fail"
  expect "E2E-L1: script disk unchanged=yes" "the readonly=on disk changed"
  expect "E2E-L1: fsck step=boot rc=0" "e2fsck -fn in L1 is not clean after a clean poweroff"
  step_expect_re kill "E2E-L2: writer running fio.dat=[0-9]+ fio=active churn=active" "the guest's writers did not run before the SIGKILL"
  expect "E2E-L1: vmm killed step=kill pattern-seen=yes" "L1 killed the VMM before the guest was writing"
  expect "E2E-L1: vmm exit=0 step=after-kill " "the second boot after the SIGKILL did not power off cleanly"
  disk_running after-kill
  expect "E2E-L1: fsck step=after-kill rc=0" "e2fsck -fn in L1 is not clean after SIGKILL during writes and a second boot"
  disk_qcow2_assert
  reject "Kernel panic" "a kernel panicked"
  # An L1 copy that stalled and then finished passes (L0 QEMU and L1's
  # kernel, not our VMM, carried it), but is shown.
  grep -a 'E2E-L1: io-stall\|E2E-L1-STALL' "$LOG" | sed 's/^/  disk: L1 disk copy stalled: /' | head -40 || true
}

# The qcow2 step: booted from the detected qcow2 file, the guest's marker in
# the image L1 wrote back, which qemu-img finds consistent and whose ext4 is
# clean.
disk_qcow2_assert() {
  local img="$out/rootq-$E2E_KERNEL.img" marker got check
  expect_re "E2E-L1: qcow2 file bytes=[0-9]+ magic=QFI" "L1 did not get the qcow2 copy off its disk"
  expect "E2E-L1: vmm exit=0 step=qcow2 " "our VMM did not boot the qcow2 root and power off cleanly"
  disk_running qcow2
  step_expect_re qcow2 "E2E-L2: step=qcow2 root=/dev/vda " "the qcow2 guest's root is not /dev/vda"
  expect_re "E2E-L1: qcow2 written back bytes=[0-9]+" "the qcow2 file did not fit back on its disk"
  marker="$(section qcow2 | sed -n 's/^E2E-L2: qcow2 marker=//p' | awk 'NR == 1')"
  [ -n "$marker" ] || { fail "the qcow2 guest did not write its marker"; return; }
  check="$(qemu-img check -f qcow2 "$img" 2>&1)" || true
  echo "$check" | sed 's/^/  disk qcow2: qemu-img check: /'
  echo "$check" | grep -q "No errors were found" || fail "qemu-img check found errors in the qcow2 image our VMM wrote"
  rm -f "$img.raw"
  if qemu-img convert -f qcow2 -O raw "$img" "$img.raw"; then
    got="$(/sbin/debugfs -R 'cat /root/e2e-qcow2-marker' "$img.raw" 2>/dev/null)"
    [ "$got" = "$marker" ] || fail "the marker written in the qcow2 guest is not in the image (wrote '$marker', found '${got:-nothing}')"
    /sbin/e2fsck -fn "$img.raw" >"$img.fsck" 2>&1 || fail "e2fsck -fn of the qcow2 image's ext4 is not clean (see $img.fsck)"
  else
    fail "qemu-img convert could not read the qcow2 image our VMM wrote"
  fi
  rm -f "$img.raw"
}
