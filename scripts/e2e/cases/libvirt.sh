# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# libvirt: libvirt's ch driver's request sequence against our VMM, inside the
# nested lane's L1 (sid QEMU 11.1, one-smmu: the known disk at 0000:00:02.0
# on vfio-pci). tools/ch-libvirt.c does what libvirt does to the VMM when a
# domain starts and stops (its header lists the steps, from libvirt's
# src/ch): the version probe; a listening socket bound before the VMM starts
# and passed as --api-socket fd=N; the event-monitor FIFO made with mkfifo
# and opened for reading, blocking, once the VMM runs; vm.create with the
# body virCHMonitorBuildVMJson builds for the domain below (same fields, same
# order, compact JSON); the empty vm.add-net connection of a domain without
# NICs; vm.boot; the vCPU threads from /proc/PID/task/*/comm; vm.info for
# the serial pty; the guest's console read through that pty; vm.shutdown and
# the vm:shutdown event; vmm.shutdown and the vmm:shutdown event.
#
# The domain (what its XML gives virCHMonitorBuildVMJson):
#   <vcpu>2</vcpu> <memory unit='MiB'>512</memory>
#   <os><kernel>/l2/Image</kernel><initrd>/l2/initrd</initrd>
#       <cmdline>console=ttyAMA0 panic=-1 e2e_step=libvirt</cmdline></os>
#   <serial type='pty'/>   (libvirt adds <console type='pty'> with target
#                            serial for it: the body has both, console first)
#   <hostdev mode='subsystem' type='pci'><source><address domain='0'
#     bus='0' slot='2' function='0'/></source></hostdev>
# The L2 guest reads the whole disk (known sha256) through the passthrough
# function and then waits for libvirt to shut it down. Two domains, the same
# body: step libvirt starts /bin/cloud-hypervisor (the function attached
# with iommu off: libvirt cannot ask for a vSMMU), step libvirt-vsmmu an
# <emulator> wrapper that adds --vsmmu smmuv3 (the VMM's default vSMMU for
# bodies that name none: the function behind it, as the issue asks).
CASE_DESC="nested lane: libvirt's ch driver sequence (fd= socket, event-monitor FIFO, its vm.create body with a pty serial/console and a <hostdev>, vm.info ptys, vcpuN threads, shutdown events) boots L2 with the disk passed through, iommu off and behind an <emulator> wrapper's --vsmmu smmuv3"
CASE_DEFAULT=1
CASE_TIMEOUT=900
CASE_QEMU=nested
CASE_KERNELS=7.2

case_prepare() {
  aarch64-linux-gnu-gcc -static -O2 -Wall -o "$1/ch-libvirt" "$E2E_DIR/tools/ch-libvirt.c" || return 1
  L1_EXTRA+=("$1/ch-libvirt:/bin/ch-libvirt")
}

case_l1_script() {
  cat <<'EOS'
# Pseudo-terminals, as on any host libvirt runs on (L1's init mounts no devpts).
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
disk=$(echo "$E2E_VFIO" | cut -d, -f1)
state=/run/libvirt/ch
mkdir -p $state
# virCHMonitorBuildVMJson's output for the domain (case header), one line.
printf '%s' '{"console":{"mode":"Pty"},"serial":{"mode":"Pty"},"cpus":{"boot_vcpus":2,"max_vcpus":2},"memory":{"size":536870912},"payload":{"kernel":"/l2/Image","cmdline":"console=ttyAMA0 panic=-1 e2e_step=libvirt","initramfs":"/l2/initrd"},"devices":[{"path":"/sys/bus/pci/devices/'"$disk"'/"}]}' >/tmp/vm.json
# An <emulator> wrapper: the operator's default vSMMU for libvirt's domains.
printf '#!/bin/sh\nexec /bin/cloud-hypervisor --vsmmu smmuv3 "$@"\n' >/tmp/cloud-hypervisor-vsmmu
chmod +x /tmp/cloud-hypervisor-vsmmu
domain() { # STEP EMULATOR
  echo "E2E-L1: vmm start step=$1 args=$2 $(cat /tmp/vm.json)"
  t0=$(cut -d' ' -f1 /proc/uptime)
  timeout 400 /bin/ch-libvirt "$2" $state "$1" /tmp/vm.json "E2E-L2: waiting for vm.shutdown"
  rc=$?
  sed 's/^/E2E-VMM-LOG: /' "$state/$1.log"
  t1=$(cut -d' ' -f1 /proc/uptime)
  echo "E2E-L1: vmm exit=$rc step=$1 seconds=$(awk "BEGIN{print $t1-$t0}")"
  f=/sys/bus/pci/devices/$disk
  echo "E2E-L1: after $1 $disk vfio-dev=$(ls "$f/vfio-dev" | xargs) driver=$(basename "$(readlink "$f/driver")")"
}
domain libvirt /bin/cloud-hypervisor
domain libvirt-vsmmu /tmp/cloud-hypervisor-vsmmu
ls $state | sed 's/^/E2E-L1: state left: /'
EOS
}

case_l2_script() {
  cat <<'EOS'
for b in /sys/block/vd*; do
  [ -e "$b" ] || continue
  n=$(basename "$b")
  sum=$(dd if="/dev/$n" bs=4096 count=4096 2>/dev/null | sha256sum | cut -d' ' -f1)
  echo "E2E-L2: read $n pci=$(basename "$(readlink -f "$b/device/..")") sha256=$sum"
done
echo "E2E-L2: waiting for vm.shutdown"
sleep 600
EOS
}

# libvirt_expect STEP: what libvirt needs from one domain's start and stop.
libvirt_expect() {
  local s=$1
  step_expect_re $s "E2E-LIBVIRT: version 'cloud-hypervisor v[0-9.]+' -> [0-9.]+ start=yes payload=yes" "libvirt's version probe did not parse or is below 28"
  step_expect_re $s "E2E-LIBVIRT: start /.* --api-socket fd=[0-9]+ --event-monitor path=/run/libvirt/ch/$s-event-monitor-fifo" "the VMM was not started with libvirt's arguments"
  step_expect_re $s "E2E-LIBVIRT: pid [0-9]+, event monitor FIFO open" "libvirt's blocking open of the FIFO's read end did not return"
  step_expect_re $s "E2E-LIBVIRT: PUT vm.create -> 204 " "vm.create with libvirt's body was not accepted"
  step_expect_re $s "E2E-LIBVIRT: PUT vm.boot -> 204 " "vm.boot was not accepted"
  step_expect_re $s "E2E-LIBVIRT: thread tid=[0-9]+ comm=vcpu0 type=vcpu id=0" "no vCPU thread named vcpu0 in /proc/PID/task/*/comm"
  step_expect_re $s "E2E-LIBVIRT: thread tid=[0-9]+ comm=vcpu1 type=vcpu id=1" "no vCPU thread named vcpu1 in /proc/PID/task/*/comm"
  step_expect_re $s "E2E-LIBVIRT: vcpu threads 2$" "libvirt would not count two vCPU threads"
  step_expect_re $s "E2E-LIBVIRT: GET vm.info -> 200 .*\"state\":\"Running\"" "vm.info did not say Running"
  step_expect_re $s "E2E-LIBVIRT: serial pty /dev/pts/[0-9]+$" "vm.info's config.serial.file is not a pty"
  step_expect_re $s "E2E-LIBVIRT: console pty /dev/pts/[0-9]+$" "vm.info's config.console.file is not a pty"
  step_expect_re $s "E2E-PTY: E2E-L2: booted " "the guest's console did not come through the pty"
  step_expect_re $s "E2E-PTY: E2E-L2: read vda pci=0000:00:[0-9a-f]{2}\\.0 sha256=$NESTED_DISK_SHA256" "the L2 guest did not read the passed-through disk's known content"
  step_expect_event $s "vm:booted" "no vm:booted event in the FIFO"
  step_expect_re $s "E2E-LIBVIRT: PUT vm.shutdown -> 204 " "vm.shutdown was not accepted"
  step_expect_re $s "E2E-LIBVIRT: event vm:shutdown read" "libvirt did not read {\"source\":\"vm\",\"event\":\"shutdown\"} from the FIFO"
  step_expect_re $s "E2E-LIBVIRT: PUT vmm.shutdown -> 204 " "vmm.shutdown was not accepted"
  step_expect_re $s "E2E-LIBVIRT: event vmm:shutdown read" "libvirt did not read {\"source\":\"vmm\",\"event\":\"shutdown\"} from the FIFO"
  step_expect_re $s "E2E-LIBVIRT: event monitor end-of-file" "the FIFO did not reach end-of-file when the VMM exited"
  step_expect_re $s "E2E-LIBVIRT: vmm exit=0$" "the VMM did not exit 0 after vmm.shutdown"
  in_order $s "the lifecycle events are out of order" \
    "@vmm:starting" "@vm:booting" "@vm:booted" "E2E-LIBVIRT: PUT vm.shutdown" "@vm:shutdown reason=api" "@vmm:shutdown"
  step_expect_re $s "E2E-LIBVIRT: domain started and stopped" "the libvirt sequence did not complete"
  step_reject_re $s "E2E-VMM-LOG: .*(ERROR|panicked)" "the VMM logged an error"
  expect_re "E2E-L1: vmm exit=0 step=$s " "ch-libvirt did not exit 0"
  expect_re "E2E-L1: after $s 0000:00:02.0 vfio-dev=vfio[0-9]+ driver=vfio-pci" "the disk is not back on vfio-pci after the domain stopped"
}

case_assert() {
  libvirt_expect libvirt
  # The plain domain: libvirt cannot ask for a vSMMU, the function is
  # attached with iommu off.
  step_expect_event libvirt "vfio:device-bound iommu=off" "the hostdev was not attached with iommu off"
  step_reject_event libvirt "vsmmu:viommu-ready" "a vSMMU appeared that the domain did not ask for"
  libvirt_expect libvirt-vsmmu
  # Through the wrapper: the same body, the function behind the vSMMU.
  step_expect_event libvirt-vsmmu "vsmmu:viommu-ready id=vsmmu0 kind=smmuv3 backend=iommufd vdevices=1" "the wrapper's --vsmmu did not give the domain a vSMMU over its hostdev"
  step_expect_event libvirt-vsmmu "vfio:device-bound iommu=vsmmu0" "the hostdev was not bound behind vsmmu0"
  step_expect_event libvirt-vsmmu "vsmmu:ste-installed config=translate" "the L2 SMMU driver's translating STE did not become a nested HWPT"
}
