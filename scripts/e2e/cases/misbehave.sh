# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# misbehave: guests that do what drivers do not. (1) A guest whose SMMU driver
# never runs (the SMMU and CMD-QV stay disabled); (2) a guest that disables
# and re-enables CMD-QV and VINTF0 twice from user space; (3) a guest that
# writes garbage into every CMD-QV page and the SMMU from user space. Each
# must boot, power off and leave the VMM exiting 0 with its teardown done.
CASE_DESC="guests that never enable the SMMU, toggle CMD-QV twice, or write garbage: the VMM survives and exits 0"
CASE_DEFAULT=1
CASE_TIMEOUT=480

case_l1_script() {
  cat <<'EOS'
common="--kernel /l2/Image --initramfs /l2/initrd --cpus boot=1 --memory size=512M --serial tty --vsmmu cmdqv,backend=emulated"
vmm no-smmu -v $common --cmdline "console=ttyAMA0 panic=-1 initcall_blacklist=arm_smmu_driver_init e2e.step=no-smmu"
vmm cmdqv-twice -v $common --cmdline "console=ttyAMA0 panic=-1 e2e.step=cmdqv-twice"
vmm garbage -v $common --cmdline "console=ttyAMA0 panic=-1 e2e.step=garbage"
EOS
}

case_l2_script() {
  cat <<'EOS'
cv=0x0b000000      # CMD-QV window (arch/src/layout.rs CMDQV_BASE)
smmu=0x0a000000    # vSMMU window (SMMU_BASE)
case "$(cat /proc/cmdline)" in
*e2e.step=no-smmu*)
  echo "E2E-L2: smmu devices bound: $(ls /sys/bus/platform/drivers/arm-smmu-v3 2>/dev/null | grep -c smmu)"
  ;;
*e2e.step=cmdqv-twice*)
  for i in 1 2; do
    devmem $cv 32 0
    devmem $cv 32 1
    devmem $((cv + 0x1000)) 32 0
    devmem $((cv + 0x1000)) 32 1
    echo "E2E-L2: toggle $i CMDQV STATUS=$(devmem $((cv + 8)) 32) VINTF0 STATUS=$(devmem $((cv + 0x1004)) 32)"
  done
  ;;
*e2e.step=garbage*)
  for off in 0x0 0x4 0x14 0x1c 0x200 0x204 0x1000 0x1040 0x10000 0x10008 0x20000 0x30000 0x30004 0x30008 0x30014 0x40000 0x40080 0x40008 0x4fff8; do
    devmem $((cv + off)) 32 0xffffffff
    devmem $((cv + off)) 32 0xdeadbeef
  done
  for off in 0x40000 0x40080 0x20000; do devmem $((cv + off)) 64 0xfffffffffffffff3; done
  for off in 0x20 0x44 0x80 0x88 0x90 0x98 0x9c 0x4c; do devmem $((smmu + off)) 32 0xffffffff; done
  echo "E2E-L2: garbage written; CMDQV STATUS=$(devmem $((cv + 8)) 32)"
  # A guest hammering a register that does not exist: the VMM logs a few
  # lines and counts the rest (vm.counters guest_log.dropped_lines).
  i=0
  while [ $i -lt 200 ]; do devmem $((cv + 0xff0)) 32 >/dev/null; i=$((i + 1)); done
  sleep 1
  # The garbage CMDQ_PROD makes the vSMMU consume illegal commands: GERROR,
  # delivered by MSI through the ITS to the guest driver's handler.
  grep -i "smmu.*gerror" /proc/interrupts | sed 's/^ */E2E-L2: irq /'
  dmesg | grep -iE "arm-smmu-v3.*(global error|CMDQ error)" | head -3 | sed 's/^/E2E-L2-DMESG: /'

  ;;
esac
EOS
}

case_assert() {
  local step
  for step in no-smmu cmdqv-twice garbage; do
    step_expect_re "$step" "E2E-L2: done" "the L2 guest did not finish its /init"
    step_expect_re "$step" "E2E-L1: vmm exit=0 step=$step " "cloud-hypervisor did not exit 0"
    step_reject_re "$step" "panicked|RUST_BACKTRACE" "the VMM panicked"
  done
  step_expect_re no-smmu "E2E-L2: smmu devices bound: 0" "the SMMU driver ran although blacklisted"
  step_reject_event no-smmu "cmdqv:hw-queue-alloc" "a HW queue was allocated for a guest that never enabled CMD-QV"
  step_reject_event no-smmu "cmdqv:page0-mapped" "page0 was mapped for a guest that never enabled VINTF0"
  in_order no-smmu "the VM without an SMMU driver did not power off cleanly" \
    "@vm:booted boot=1" "@vsmmu:viommu-released" "@vm:shutdown reason=poweroff" "@vmm:shutdown"
  # Each disable frees the queues (descending) and each enable re-allocates
  # them (ascending), without restarting the VM.
  in_order cmdqv-twice "CMD-QV toggled twice did not free/re-allocate in order" \
    "@cmdqv:hw-queue-alloc index=0" "@cmdqv:hw-queue-alloc index=1" \
    "@cmdqv:hw-queue-free index=1" "@cmdqv:hw-queue-free index=0" "@cmdqv:hw-queue-alloc index=0" "@cmdqv:hw-queue-alloc index=1" \
    "@cmdqv:hw-queue-free index=1" "@cmdqv:hw-queue-free index=0" "@cmdqv:hw-queue-alloc index=0" "@cmdqv:hw-queue-alloc index=1"
  step_reject_event cmdqv-twice "vm:booting boot=2" "toggling CMD-QV restarted the VM"
  step_expect_re cmdqv-twice "E2E-L2: toggle 2 CMDQV STATUS=0x0*1 VINTF0 STATUS=0x0*1" "CMD-QV did not come back after the second toggle"
  step_expect_re garbage "E2E-L2: garbage written" "the garbage writes did not complete"
  step_expect_re garbage "E2E-L2: irq [0-9]+: +[1-9][0-9]* .*ITS.*gerror" "the global error raised by the garbage never reached the guest as an ITS MSI"
  step_expect_event garbage "vsmmu:guest-error id=vsmmu0 kind=CERROR_ILL" "the garbage commands did not stop the trapped queue with CERROR_ILL"
  step_reject_event cmdqv-twice "cmdqv:guest-error" "toggling CMD-QV showed the guest a queue error"
  local dropped
  dropped="$(ev_prop garbage "vm:counters id=guest_log" dropped_lines)"
  [ "${dropped:-0}" -ge 150 ] ||
    fail "200 reads of a missing CMD-QV register left ${dropped:-no} log lines out; the rate limit should drop all but a few"
  in_order garbage "the teardown after garbage did not follow the hardware order" \
    "@vsmmu:viommu-released" "@vm:shutdown reason=poweroff" "@vmm:shutdown"
}
