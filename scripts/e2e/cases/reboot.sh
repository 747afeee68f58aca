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
  in_order reboot "the reboot did not rebuild the VM with the CMD-QV torn down and brought back in order" \
    "hw_queue_alloc index=0" "hw_queue_alloc index=1" "E2E-L2: booted" "E2E-L2: rebooting" \
    "system event 2: Reset" "removed from" "hw_queue_free index=1" "hw_queue_free index=0" \
    "vIOMMU released" "guest reset: rebuilding the VM (boot 2)" \
    "hw_queue_alloc index=0" "hw_queue_alloc index=1" "E2E-L2: booted"
  in_order reboot "SIGTERM did not stop the VM with a full teardown" \
    "guest reset: rebuilding the VM (boot 2)" "terminated by signal 15" "hw_queue_free index=1" \
    "hw_queue_free index=0" "vIOMMU released"
  step_expect_re reboot "E2E-L1: vmm exit=1 step=reboot " "cloud-hypervisor did not exit 1 on SIGTERM"
  step_reject_re reboot "panicked|RUST_BACKTRACE" "the VMM panicked"
}
