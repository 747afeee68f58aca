# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# reboot: the guest reboots (PSCI SYSTEM_RESET); the VMM tears the VM down in
# the hardware's order (page0 out, HW queues freed descending) and builds it
# again; the guest's CMD-QV comes back (HW queues allocated ascending). After
# the second boot the operator stops the VMM with SIGTERM: it tears down
# again and exits non-zero, naming the signal.
CASE_DESC="guest reboot rebuilds the VM: CMD-QV freed descending, re-allocated ascending; SIGTERM tears down"
CASE_DEFAULT=1
CASE_TIMEOUT=300

case_l1_script() {
  cat <<'EOS'
# This case runs the filters as operators do (--seccomp true, the default):
# a syscall a filter refuses kills the VMM here, where the other cases log
# it (l1-lib.sh); the reboot's teardown and rebuild and the SIGTERM path
# touch every thread kind (VMM, vCPU, VCMDQ engine, signal handling).
VMM_SECCOMP=true
echo "E2E-L1: seccomp $VMM_SECCOMP (enforcing for this case)"
vmm_until reboot "E2E-L2: booted" 2 -v --kernel /l2/Image --initramfs /l2/initrd \
  --cmdline "console=ttyAMA0 panic=-1 e2e.reboot=1" --cpus boot=1 --memory size=512M \
  --serial tty --vsmmu cmdqv,backend=emulated
EOS
}

case_l2_script() {
  cat <<'EOS'
if grep -q e2e.reboot=1 /proc/cmdline; then
  # Every boot reboots, after a pause long enough for L1 (which polls once a
  # second) to send SIGTERM during the second boot, with CMD-QV up.
  sleep 5
  echo "E2E-L2: rebooting"
  reboot -f
  sleep 10
fi
EOS
}

case_assert() {
  expect "E2E-L1: seccomp true (enforcing for this case)" "the reboot case did not run cloud-hypervisor with --seccomp true"
  in_order reboot "the reboot did not rebuild the VM with the CMD-QV torn down and brought back in order" \
    "@vm:booted boot=1" "@cmdqv:hw-queue-alloc index=0" "@cmdqv:hw-queue-alloc index=1" "E2E-L2: booted" \
    "E2E-L2: rebooting" "@vm:rebooting cause=guest" "@cmdqv:page0-unmapped" \
    "@cmdqv:hw-queue-free index=1" "@cmdqv:hw-queue-free index=0" "@vsmmu:viommu-released" \
    "@vm:booting boot=2" "@vm:booted boot=2" "@vm:rebooted boot=2" \
    "@cmdqv:hw-queue-alloc index=0" "@cmdqv:hw-queue-alloc index=1" "E2E-L2: booted"
  in_order reboot "SIGTERM did not stop the VM with a full teardown" \
    "@vm:rebooted boot=2" "@cmdqv:page0-unmapped" "@cmdqv:hw-queue-free index=1" \
    "@cmdqv:hw-queue-free index=0" "@vsmmu:viommu-released" "@vm:shutdown reason=signal signal=15" "@vmm:shutdown"
  [ "$(ev_count reboot vm:shutdown)" = 1 ] || fail "the guest reboot was reported as a vm:shutdown (libvirt would stop the domain) [step reboot: $(ev_count reboot vm:shutdown) vm:shutdown events]"

  step_expect_re reboot "E2E-L1: vmm exit=1 step=reboot " "cloud-hypervisor did not exit 1 on SIGTERM"
  step_reject_re reboot "panicked|RUST_BACKTRACE" "the VMM panicked"
}
