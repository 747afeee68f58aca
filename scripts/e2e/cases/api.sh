# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# api: the control API on a running guest. Inside L1, cloud-hypervisor boots
# the L2 guest with --api-socket, a vSMMUv3 + CMD-QV (emulated backend, page0
# mapped) and a test endpoint; the guest runs dma_map_benchmark (TLBI +
# CMD_SYNC through its VCMDQs) in a loop. From L1, ch-remote:
#   ping; counters twice (HW queues allocated, VCMDQ commands growing);
#   pause (counters stop, info says Paused); resume (they grow again);
#   remove-device dma0 (refused: behind the vSMMU, fixed at boot);
#   power-button and snapshot (refused, with their reasons);
#   reboot (torn down descending, rebuilt ascending, the guest runs again);
#   shutdown (the descending teardown in the VMM log); info (Shutdown);
#   shutdown-vmm (the VMM exits 0).
# Then the same VM defined through the API alone (--api-socket, create, boot,
# counters, shutdown-vmm). The VMM, the guest console and every ch-remote
# answer append to one file in the order they happen; it is printed whole at
# the end of each step.
CASE_DESC="ch-remote on a running CMD-QV guest: counters grow, pause stops them, resume, remove-device refused, shutdown tears down"
CASE_DEFAULT=1
CASE_TIMEOUT=420

case_l1_script() {
  cat <<'EOS'
log=/tmp/vmm-api.log
sock=/tmp/ch.sock
: > $log
note() { echo "$*" >> $log; }
remote() { /bin/ch-remote --api-socket $sock "$@" 2>&1; }
echo "E2E-L1: vmm start step=api args=--api-socket path=$sock ..."
events_start api $log
t0=$(cut -d' ' -f1 /proc/uptime)
/bin/cloud-hypervisor -v --seccomp "$VMM_SECCOMP" --api-socket path=$sock --event-monitor "$EVENTS_ARG" --kernel /l2/Image --initramfs /l2/initrd \
  --cmdline "console=ttyAMA0 panic=-1 iommu.strict=1 e2e.api=1" --cpus boot=2 --memory size=512M \
  --serial tty --vsmmu cmdqv,backend=emulated,page0=mapped --test-device id=dma0 \
  </dev/null >> $log 2>&1 &
vmm_pid=$!
n=0
while [ $n -lt 200 ] && ! unsplit $log | grep -q "E2E-API: benchmark started"; do
  kill -0 $vmm_pid 2>/dev/null || break
  sleep 1; n=$((n + 1))
done
note "E2E-API: guest ready after ${n}s"
note "E2E-API: ping $(remote ping)"
note "E2E-API: counters running-1 $(remote counters)"
sleep 3
note "E2E-API: counters running-2 $(remote counters)"
out=$(remote pause); note "E2E-API: pause exit=$? $out"
# The VCMDQ engine finishes what the guest had queued before it parked.
sleep 1
note "E2E-API: counters paused-1 $(remote counters)"
note "E2E-API: info paused $(remote info)"
sleep 3
note "E2E-API: counters paused-2 $(remote counters)"
out=$(remote resume); note "E2E-API: resume exit=$? $out"
sleep 3
note "E2E-API: counters resumed $(remote counters)"
out=$(remote remove-device dma0); note "E2E-API: remove-device exit=$? $out"
out=$(remote power-button); note "E2E-API: power-button exit=$? $out"
out=$(remote snapshot file:///tmp/snap); note "E2E-API: snapshot exit=$? $out"
note "E2E-API: reboot"
out=$(remote reboot); note "E2E-API: reboot exit=$? $out"
n=0
while [ $n -lt 200 ] && [ "$(unsplit $log | grep -c "E2E-API: benchmark started")" -lt 2 ]; do
  sleep 1; n=$((n + 1))
done
sleep 3
note "E2E-API: counters rebooted $(remote counters)"
note "E2E-API: shutdown"
out=$(remote shutdown); note "E2E-API: shutdown exit=$? $out"
note "E2E-API: info after-shutdown $(remote info)"
out=$(remote shutdown-vmm); note "E2E-API: shutdown-vmm exit=$? $out"
vmm_reap $vmm_pid
cat $log
vmm_exit_line api

# The same VM defined through the API alone: --api-socket, vm.create, vm.boot.
log=/tmp/vmm-create.log
sock=/tmp/ch2.sock
: > $log
cat > /tmp/vm.json <<'JSON'
{"cpus": {"boot_vcpus": 2, "max_vcpus": 2}, "memory": {"size": 536870912},
 "payload": {"kernel": "/l2/Image", "initramfs": "/l2/initrd",
             "cmdline": "console=ttyAMA0 panic=-1 iommu.strict=1 e2e.api=1"},
 "serial": {"mode": "Tty"},
 "vsmmu": {"kind": "cmdqv", "backend": "emulated", "page0": "mapped"},
 "test_devices": [{"id": "dma0"}]}
JSON
echo "E2E-L1: vmm start step=api-create args=--api-socket path=$sock"
events_start api-create $log
t0=$(cut -d' ' -f1 /proc/uptime)
/bin/cloud-hypervisor -v --seccomp "$VMM_SECCOMP" --api-socket path=$sock --event-monitor "$EVENTS_ARG" </dev/null >> $log 2>&1 &
vmm_pid=$!
n=0
while [ $n -lt 10 ] && [ ! -S $sock ]; do sleep 1; n=$((n + 1)); done
out=$(remote create /tmp/vm.json); note "E2E-API: create exit=$? $out"
note "E2E-API: info created $(remote info)"
out=$(remote boot); note "E2E-API: boot exit=$? $out"
n=0
while [ $n -lt 200 ] && ! unsplit $log | grep -q "E2E-API: benchmark started"; do
  kill -0 $vmm_pid 2>/dev/null || break
  sleep 1; n=$((n + 1))
done
sleep 2
note "E2E-API: info booted $(remote info)"
note "E2E-API: counters booted $(remote counters)"
out=$(remote shutdown-vmm); note "E2E-API: shutdown-vmm exit=$? $out"
vmm_reap $vmm_pid
cat $log
vmm_exit_line api-create
EOS
}

case_l2_script() {
  cat <<'EOS'
case "$(cat /proc/cmdline)" in *e2e.api=1*) ;; *) exit 0 ;; esac
dev=0000:00:01.0
echo dma_map_benchmark > /sys/bus/pci/devices/$dev/driver_override
echo $dev > /sys/bus/pci/drivers/dma_map_benchmark/bind || echo "E2E-API: bind failed"
echo "E2E-API: benchmark started"
# Until the API shuts the VM down (bounded: the guest powers off by itself
# after ~100 runs if nobody does).
n=0
while [ $n -lt 100 ]; do
  dma_map_benchmark -t 1 -g 1 -s 2 >/dev/null 2>&1
  n=$((n + 1))
done
EOS
}

# api_counter STAGE DEVICE FIELD: a counter from the "counters STAGE" line
# (empty when missing). awk reads all of section's output: grep -m1 would
# make it die of SIGPIPE under pipefail.
api_counter() {
  section api | awk -v p="E2E-API: counters $1 " 'index($0, p) && !n++' |
    grep -o "\"$2\":{[^}]*}" | grep -o "\"$3\":[0-9]*" | cut -d: -f2 || true
}

case_assert() {
  step_expect_re api "E2E-API: benchmark started" "the guest never started dma_map_benchmark"
  step_reject_re api "E2E-API: bind failed" "dma_map_benchmark could not bind to the test endpoint"
  step_expect_re api 'E2E-API: ping \{"build_version"' "ch-remote ping did not print the VMM's JSON"
  local r1 r2 p1 p2 r3 hwq t1 t2
  hwq="$(api_counter running-1 cmdqv0 hw_queues_allocated)"
  r1="$(api_counter running-1 cmdqv0 vcmdq_commands)"
  r2="$(api_counter running-2 cmdqv0 vcmdq_commands)"
  p1="$(api_counter paused-1 cmdqv0 vcmdq_commands)"
  p2="$(api_counter paused-2 cmdqv0 vcmdq_commands)"
  r3="$(api_counter resumed cmdqv0 vcmdq_commands)"
  t1="$(api_counter paused-1 vsmmu0 trapped_commands)"
  t2="$(api_counter paused-2 vsmmu0 trapped_commands)"
  echo "api counters: hw_queues_allocated=$hwq vcmdq_commands running $r1 -> $r2, paused $p1 -> $p2, resumed $r3; trapped paused $t1 -> $t2" >&2
  [ "${hwq:-0}" -ge 2 ] || fail "counters do not show the CMD-QV's two HW queues (hw_queues_allocated=$hwq)"
  [ -n "$r1" ] && [ -n "$r2" ] && [ "$r2" -gt "$r1" ] ||
    fail "VCMDQ commands did not grow while the guest ran dma_map_benchmark ($r1 -> $r2)"
  step_expect_re api "E2E-API: pause exit=0" "ch-remote pause failed"
  in_order api "pause and resume did not go through their events in order" \
    "@vm:booted boot=1" "@vm:pausing" "@vm:paused" "@vm:resuming" "@vm:resumed" "@vm:rebooting cause=api"
  step_expect_re api '"state":"Paused"' "vm.info did not say Paused"
  [ -n "$p1" ] && [ "$p1" = "$p2" ] && [ "$t1" = "$t2" ] ||
    fail "the guest made progress while paused (VCMDQ $p1 -> $p2, trapped $t1 -> $t2)"
  step_expect_re api "E2E-API: resume exit=0" "ch-remote resume failed"
  [ -n "$r3" ] && [ "$r3" -gt "${p2:-0}" ] || fail "VCMDQ commands did not grow again after resume ($p2 -> $r3)"
  step_expect_re api "E2E-API: remove-device exit=1 .*Server responded with 404: vm.remove-device: device dma0 is behind vSMMU 0.*fixed at boot" \
    "remove-device of the endpoint behind the vSMMU was not refused with its reason"
  step_expect_re api "E2E-API: power-button exit=1 .*500: this VM has no power button" \
    "power-button was not refused with its reason"
  step_expect_re api "E2E-API: snapshot exit=1 .*500: vm.snapshot is refused: vSMMU 0 holds host state" \
    "snapshot of a VM with a vSMMU was not refused with its reason"
  # (An event written before the API reply can reach the log after the
  # reply's note: the two travel by different pipes. Each chain below only
  # orders what happens seconds apart, or in one stream.)
  in_order api "ch-remote reboot did not rebuild the VM with the CMD-QV torn down and brought back in order" \
    "E2E-API: reboot" "@vm:rebooting cause=api" "@cmdqv:page0-unmapped" "@cmdqv:hw-queue-free index=1" \
    "@cmdqv:hw-queue-free index=0" "@vsmmu:viommu-released" "@vm:booting boot=2" "@vm:booted boot=2" \
    "@vm:rebooted boot=2" "@cmdqv:hw-queue-alloc index=0" "@cmdqv:hw-queue-alloc index=1" "E2E-API: benchmark started"
  in_order api "the HW queues were allocated before vm.reboot returned" \
    "E2E-API: reboot" "E2E-API: reboot exit=0" "@cmdqv:hw-queue-alloc index=0" "@cmdqv:hw-queue-alloc index=1"
  local rb
  rb="$(api_counter rebooted cmdqv0 vcmdq_commands)"
  [ -n "$rb" ] && [ "$rb" -gt 0 ] || fail "the rebooted guest's VCMDQs did not run ($rb commands)"
  in_order api "ch-remote shutdown did not run the descending teardown" \
    "E2E-API: shutdown" "@cmdqv:page0-unmapped" "@cmdqv:hw-queue-free index=1" \
    "@cmdqv:hw-queue-free index=0" "@vsmmu:viommu-released" "@vm:shutdown reason=api" "E2E-API: info after-shutdown"
  step_expect_re api "E2E-API: shutdown exit=0" "ch-remote shutdown failed"
  step_expect_re api '"state":"Shutdown"' "vm.info after vm.shutdown did not say Shutdown"
  step_expect_re api "E2E-API: shutdown-vmm exit=0" "ch-remote shutdown-vmm failed"
  in_order api "vmm.shutdown did not end the event stream" "@vm:shutdown reason=api" "@vmm:shutdown"
  [ "$(ev_count api vm:shutdown)" = 1 ] || fail "vm.reboot was reported as a vm:shutdown (libvirt would stop the domain) [step api: $(ev_count api vm:shutdown) vm:shutdown events]"
  step_expect_re api "E2E-L1: vmm exit=0 step=api " "cloud-hypervisor did not exit 0 after vmm.shutdown"
  step_reject_re api "panicked|RUST_BACKTRACE" "the VMM panicked"
  # Defined through the API alone.
  in_order api-create "a VM defined through vm.create did not boot and shut down in order" \
    "@vmm:starting" "E2E-API: create exit=0" '"state":"Created"' "@vm:booting boot=1" "@vm:booted boot=1" \
    "@cmdqv:hw-queue-alloc index=1" "E2E-API: benchmark started" '"state":"Running"' "@cmdqv:hw-queue-free index=1" \
    "@cmdqv:hw-queue-free index=0" "@vsmmu:viommu-released" "@vm:shutdown reason=api" "@vmm:shutdown"
  in_order api-create "vm.boot or vmm.shutdown did not answer" \
    "E2E-API: boot exit=0" "@cmdqv:hw-queue-alloc index=1" '"state":"Running"' "E2E-API: shutdown-vmm exit=0"
  local booted
  booted="$(section api-create | awk '/E2E-API: counters booted /' | grep -o '"cmdqv0":{[^}]*}' |
    grep -o '"vcmdq_commands":[0-9]*' | cut -d: -f2 || true)"
  [ -n "$booted" ] && [ "$booted" -gt 0 ] || fail "the API-defined guest's VCMDQs did not run ($booted commands)"
  step_expect_re api-create "E2E-L1: vmm exit=0 step=api-create " "cloud-hypervisor did not exit 0 after vmm.shutdown"
  step_reject_re api-create "panicked|RUST_BACKTRACE" "the VMM panicked"
}
