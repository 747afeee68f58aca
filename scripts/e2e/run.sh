#!/usr/bin/env bash
# End-to-end harness: QEMU (TCG, aarch64, virtualization=on) boots our minimal
# Linux as the L1 host (real KVM inside); the L1 /init runs the case's script,
# which runs our static aarch64 cloud-hypervisor (and later an L2 guest).
# Cases with CASE_QEMU=nested run under sid's QEMU 11.1 instead, with a
# nested-capable SMMUv3 and two PCI functions that L1 hands to vfio-pci
# (scripts/e2e/nested/, docs/e2e.md "Nested lane").
#
#   scripts/e2e/run.sh                 default cases (CASE_DEFAULT=1: smoke)
#   scripts/e2e/run.sh CASE...         named cases (scripts/e2e/cases/CASE.sh)
#   scripts/e2e/run.sh --list          list cases
#
# Environment: E2E_KERNELS ("6.12 7.2"), E2E_CACHE (~/.cache/ch-e2e), E2E_OUT
# (target/e2e), E2E_SKIP_SETUP=1, E2E_JOBS, E2E_QEMU_TIMEOUT (overrides the case's),
# E2E_NESTED_PROBE, E2E_NESTED_L1_IMAGE and E2E_NESTED_L0 (nested lane, docs/e2e.md),
# E2E_L2_IMAGE (a prebuilt Image for every kernel version), E2E_VMM_BIN
# (a prebuilt static aarch64 cloud-hypervisor instead of building this tree's).
# The assertion helpers below are called from the cases' case_assert:
# shellcheck disable=SC2317
set -euo pipefail
# shellcheck source=scripts/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
T_START=$SECONDS

case_file() { echo "$E2E_DIR/cases/$1.sh"; }
all_cases() { for f in "$E2E_DIR"/cases/*.sh; do basename "$f" .sh; done; }

load_case() {
  unset CASE_DESC CASE_DEFAULT CASE_TIMEOUT CASE_QEMU CASE_L2_APPEND CASE_KERNELS CASE_NESTED_L0 CASE_NESTED_SHAPE CASE_NESTED_L1
  unset -f case_prepare case_l0_args case_l1_script case_l2_script case_assert 2>/dev/null || true
  # shellcheck disable=SC1090
  . "$(case_file "$1")"
}

if [ "${1:-}" = --list ]; then
  for c in $(all_cases); do load_case "$c"; printf '%-14s default=%s  %s\n' "$c" "$CASE_DEFAULT" "$CASE_DESC"; done
  exit 0
fi

CASES=("$@")
if [ "${#CASES[@]}" = 0 ]; then
  for c in $(all_cases); do load_case "$c"; [ "${CASE_DEFAULT:-0}" = 1 ] && CASES+=("$c"); done
fi
NESTED=0
for c in "${CASES[@]}"; do
  [ -f "$(case_file "$c")" ] || die "no case '$c' (have: $(all_cases | xargs))"
  load_case "$c"
  [ "${CASE_QEMU:-l1}" = nested ] && NESTED=1
done

# --- assertion helpers for case_assert (LOG is the console log, \r stripped) ---
FAILURES=()
has() { grep -qF -- "$1" "$LOG"; }
fail() { FAILURES+=("$1"); }
expect() { has "$1" || fail "$2 [missing marker: '$1']"; }
expect_re() { grep -qE -- "$1" "$LOG" || fail "$2 [missing pattern: /$1/]"; }
reject() { if has "$1"; then fail "$2 [found: '$(grep -m1 -F -- "$1" "$LOG")']"; fi; }
# The console lines of one VMM run: between "vmm start step=STEP" and its exit line.
# (The Debian root's getty shares hvc0 with the report: its "e2e-rootfs
# login: " prompt, which ends in no newline, may start a report's line.)
section() { sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^e2e-rootfs login: //' "$LOG" | awk -v s="$1" '$0 ~ "E2E-L1: vmm start step="s" " {f=1} f {print} $0 ~ "E2E-L1: vmm exit=[0-9]+ step="s" " {f=0}'; }
# Every item of "$@" appears in section $STEP, each after the previous one: a
# fixed string, or with a leading @ an event spec (see ev_needles).
in_order() {
  local step="$1" why="$2" last=0 n pat
  shift 2
  for pat in "$@"; do
    if [ "${pat:0:1}" = @ ]; then
      n="$(ev_lines "$step" "${pat:1}" | awk -v after="$last" '$1 > after {print $1; exit}' || true)"
    else
      n="$(section "$step" | grep -nF -- "$pat" | awk -F: -v after="$last" '$1 > after {print $1; exit}' || true)"
    fi
    if [ -z "$n" ]; then fail "$why [step $step: '$pat' missing after line $last]"; return; fi
    last="$n"
  done
}
# Section $STEP has a line matching ERE "$2".
# (grep reads all its input: with pipefail, grep -q would make the writer die of SIGPIPE.)
step_expect_re() { section "$1" | grep -E -- "$2" >/dev/null || fail "$3 [step $1: missing /$2/]"; }
# --- events: the VMM's --event-monitor stream, one "E2E-EVENT step=STEP {json}"
# line per event (initramfs/l1-lib.sh; names and properties: docs/events.md) ---
# ev_needles "SOURCE:EVENT [KEY=VALUE]...": the fixed strings an event's JSON
# line holds (every property value is a string), tab-separated.
ev_needles() {
  local spec="$1" head kv out
  head="${spec%% *}"
  out="\"source\":\"${head%%:*}\",\"event\":\"${head#*:}\""
  if [ "$head" != "$spec" ]; then
    for kv in ${spec#* }; do out+=$'\t'"\"${kv%%=*}\":\"${kv#*=}\""; done
  fi
  printf '%s' "$out"
}
# ev_lines STEP SPEC: line numbers, within section STEP, of the events matching SPEC.
ev_lines() {
  section "$1" | awk -v n="$(ev_needles "$2")" -v p="E2E-EVENT step=$1 " '
    BEGIN { k = split(n, w, "\t") }
    index($0, p) { for (i = 1; i <= k; i++) if (!index($0, w[i])) next; print NR }'
}
# An event matching SPEC happened in step STEP (step_expect_event), or never
# did (step_reject_event); ev_count prints how many did.
step_expect_event() { [ -n "$(ev_lines "$1" "$2")" ] || fail "$3 [step $1: no event '$2']"; }
step_reject_event() {
  local n
  n="$(ev_lines "$1" "$2" | awk 'NR == 1')"
  [ -z "$n" ] || fail "$3 [step $1: event '$2' at section line $n]"
}
ev_count() { ev_lines "$1" "$2" | awk 'END {print NR}'; }
# ev_prop STEP SPEC KEY: property KEY of the last event matching SPEC in step
# STEP (empty when there is none), e.g. ev_prop smmuv3 "vm:counters id=vsmmu0" trapped_syncs.
ev_prop() {
  local lines
  lines=" $(ev_lines "$1" "$2" | xargs) "
  section "$1" | awk -v want="$lines" -v key="\"$3\":\"" '
    index(want, " " NR " ") && (i = index($0, key)) { rest = substr($0, i + length(key)); v = substr(rest, 1, index(rest, "\"") - 1) }
    END { print v }'
}
step_reject_re() { if section "$1" | grep -E -- "$2" >/dev/null; then fail "$3 [step $1: found '$(section "$1" | grep -E -- "$2" | head -1)']"; fi; }

# --- build everything ------------------------------------------------------------
[ "${E2E_SKIP_SETUP:-0}" = 1 ] || timed "setup" "$E2E_DIR/setup.sh"
declare -A IMAGES
for v in $E2E_KERNELS; do
  # E2E_L2_IMAGE: that Image for every kernel version instead of building
  # (debugging a case whose L2 is never booted, e.g. nested-probe).
  IMAGES[$v]="${E2E_L2_IMAGE:-$(timed "kernel $v" build_l2_kernel "$v")}"
done
if [ "$NESTED" = 1 ]; then
  # shellcheck source=scripts/e2e/nested/l0.sh
  . "$E2E_DIR/nested/l0.sh"
  case " $E2E_KERNELS " in
    *" $NESTED_L1_VERSION "*) ;;
    *) [ "${E2E_SKIP_SETUP:-0}" = 1 ] || E2E_KERNELS="$NESTED_L1_VERSION" timed "setup (nested L1 source)" "$E2E_DIR/setup.sh" ;;
  esac
  # L0: sid's QEMU chroot, or the CMD-QV QEMU binary (E2E_NESTED_L0, nested/l0.sh).
  # A case that needs one L0 says so (CASE_NESTED_L0, e.g. cmdqv-host: the
  # CMD-QV model) and gets it whatever E2E_NESTED_L0 says; the others run on
  # E2E_NESTED_L0's (default sid). Each L0 needed is set up once.
  NESTED_L0_DEFAULT="$NESTED_L0"
  declare -A L0S
  for c in "${CASES[@]}"; do
    load_case "$c"
    [ "${CASE_QEMU:-l1}" = nested ] || continue
    NESTED_L0="${CASE_NESTED_L0:-$NESTED_L0_DEFAULT}"
    [ -n "${L0S[$NESTED_L0]:-}" ] || L0S[$NESTED_L0]="$(timed "nested L0 ($NESTED_L0)" nested_l0_setup)"
  done
  # L1's kernel: 4 KiB pages, or 64 KiB for a case with CASE_NESTED_L1=64k;
  # each one needed is built once. E2E_NESTED_L1_IMAGE: boot that L1 kernel
  # instead, for every case (debugging the lane).
  declare -A L1S
  for c in "${CASES[@]}"; do
    load_case "$c"
    [ "${CASE_QEMU:-l1}" = nested ] || continue
    p="${CASE_NESTED_L1:-4k}"
    [ -n "${L1S[$p]:-}" ] || L1S[$p]="${E2E_NESTED_L1_IMAGE:-$(timed "kernel $NESTED_L1_VERSION (nested L1, $p pages)" build_l1_kernel "$p")}"
  done
fi
# E2E_VMM_BIN: an already built static aarch64 cloud-hypervisor (e.g. another
# worktree's, same sources) instead of building this tree's.
VMM_BIN="${E2E_VMM_BIN:-$(timed "cloud-hypervisor (aarch64, static)" "$E2E_DIR/build-vmm.sh")}"
E2E_DMA_BENCH="$(timed "dma_map_benchmark (aarch64, static)" "$E2E_DIR/build-dma-bench.sh")"
export E2E_DMA_BENCH

# --- run the cases -----------------------------------------------------------------
RESULTS=()
rc_all=0
for c in "${CASES[@]}"; do
  load_case "$c"
  if [ "${CASE_QEMU:-l1}" = nested ]; then
    NESTED_L0="${CASE_NESTED_L0:-$NESTED_L0_DEFAULT}"
    L0="${L0S[$NESTED_L0]}"
    # L1's PCI shape (nested/l0.sh nested_shape): one SMMU (default) or two.
    nested_shape "${CASE_NESTED_SHAPE:-one-smmu}"
    NESTED_L1_IMAGE="${L1S[${CASE_NESTED_L1:-4k}]}"
    # shellcheck disable=SC2034 # read by cases/peer-host.sh (its firmware is in the sid chroot)
    if [ "$NESTED_L0" = sid ]; then L0_CHROOT="$L0"; else L0_CHROOT=""; fi
  fi
  out="$E2E_OUT/$c"
  mkdir -p "$out"
  if declare -F case_l1_script >/dev/null; then case_l1_script >"$out/run.sh"; fi
  l2_script=""
  if declare -F case_l2_script >/dev/null; then case_l2_script >"$out/l2.sh"; l2_script="$out/l2.sh"; fi
  # A case may build its own tools: case_prepare OUT fills L1_EXTRA (L1) and
  # L2_EXTRA (the L2 initramfs) with SRC:DEST pairs for build-initramfs.sh.
  L1_EXTRA=()
  L2_EXTRA=()
  if declare -F case_prepare >/dev/null; then case_prepare "$out" || die "case $c: case_prepare failed"; fi
  "$E2E_DIR/build-initramfs.sh" l2 "$out/l2.cpio" "$l2_script" "${L2_EXTRA[@]}"
  for v in ${CASE_KERNELS:-$E2E_KERNELS}; do
    # shellcheck disable=SC2034 # read by the cases (bench.sh names its tables by it)
    E2E_KERNEL="$v"
    [ -n "${IMAGES[$v]:-}" ] || IMAGES[$v]="${E2E_L2_IMAGE:-$(timed "kernel $v" build_l2_kernel "$v")}"
    image="${IMAGES[$v]}"
    l1="$out/l1-$v.cpio"
    LOG="$out/console-$v.log"
    tmo="${E2E_QEMU_TIMEOUT:-${CASE_TIMEOUT:-300}}"
    # One retry, only when L1's own KVM (nested under TCG) warned during a
    # failed attempt: KVM_BUG_ON in kvm_vcpu_load_debug (7.2.13, PREEMPT_LAZY)
    # once left the guest's system registers loaded on return to user space,
    # and the VMM's vCPU thread died of SIGSEGV on its next TLS access. That
    # is L1's kernel, not the case; the first log is kept and the result
    # line says so.
    attempt=1
    retried=""
    while :; do
      t0=$SECONDS
      qrc=0
      if [ "${CASE_QEMU:-l1}" = l2-direct ]; then
        # Harness self-check: QEMU itself boots the L2 kernel + initramfs (DT, with
        # QEMU's SMMUv3), no L1, no VMM: proves the L2 side and its markers.
        log "case $c, kernel $v: booting L2 initramfs directly in QEMU (timeout $tmo s, log $LOG)"
        timeout -k 10 "$tmo" qemu-system-aarch64 \
          -M virt,gic-version=3,iommu=smmuv3 -cpu max -smp 1 -m 512 \
          -nographic -no-reboot -nic none \
          -kernel "$image" -initrd "$out/l2.cpio" \
          -append "console=ttyAMA0 panic=-1 ${CASE_L2_APPEND:-}" \
          </dev/null 2>&1 | stdbuf -oL tr -d '\r' >"$LOG" || qrc=${PIPESTATUS[0]}
      elif [ "${CASE_QEMU:-l1}" = nested ]; then
        # L0 = sid's QEMU in its chroot; L1 = the nested 7.2 kernel; IMAGE is
        # the L2 guest kernel our VMM boots inside L1.
        "$E2E_DIR/build-initramfs.sh" l1 "$l1" "$out/run.sh" "$VMM_BIN" "$image" "$out/l2.cpio" "${L1_EXTRA[@]}"
        log "case $c, L2 kernel $v: booting nested L1 in L0 $NESTED_L0 (timeout $tmo s, log $LOG)"
        nested_qemu "$L0" "$tmo" "$LOG" "$NESTED_L1_IMAGE" "$l1" "$NESTED_L1_APPEND ${E2E_L1_APPEND:-}" || qrc=$?
      else
        "$E2E_DIR/build-initramfs.sh" l1 "$l1" "$out/run.sh" "$VMM_BIN" "$image" "$out/l2.cpio" "${L1_EXTRA[@]}"
        # A case may give L1 more QEMU devices (e.g. disks): case_l0_args OUT
        # KERNEL prints extra qemu-system-aarch64 arguments, one per line,
        # afresh for each kernel (a disk the run writes to is a new copy).
        L0_EXTRA=()
        if declare -F case_l0_args >/dev/null; then
          case_l0_args "$out" "$v" >"$out/l0-args-$v" || die "case $c: case_l0_args failed"
          mapfile -t L0_EXTRA <"$out/l0-args-$v"
        fi
        log "case $c, kernel $v: booting L1 (timeout $tmo s, log $LOG)"
        timeout -k 10 "$tmo" qemu-system-aarch64 \
          -M virt,virtualization=on,gic-version=3 -cpu max -smp 2 -m 3072 \
          -nographic -no-reboot -nic none "${L0_EXTRA[@]}" \
          -kernel "$image" -initrd "$l1" \
          -append "console=ttyAMA0 panic=-1 rdinit=/init ${E2E_L1_APPEND:-}" \
          </dev/null 2>&1 | stdbuf -oL tr -d '\r' >"$LOG" || qrc=${PIPESTATUS[0]}
      fi
      wall=$((SECONDS - t0))
      # Event lines the L1 reader wrote into the middle of a console line go
      # back to lines of their own (lib.sh unsplit_events).
      unsplit_events "$LOG" >"$LOG.tmp" && mv "$LOG.tmp" "$LOG"
      FAILURES=()
      [ "$qrc" = 124 ] && fail "QEMU timed out after $tmo s (the guest never powered off)"
      [ "$qrc" = 124 ] || [ "$qrc" = 0 ] || fail "qemu-system-aarch64 exited $qrc"
      if [ "${CASE_QEMU:-l1}" = l2-direct ]; then
        case_assert
      else
        expect "E2E-L1: init " "L1 never reached /init (kernel or initramfs broken; see the log's last lines)"
        expect "E2E-L1: kvm ok" "/dev/kvm missing in L1 (KVM did not initialise at EL2)"
        [ "${CASE_QEMU:-l1}" = nested ] && nested_assert
        case_assert
        expect "E2E-L1: done" "L1's /init did not finish the case script"
        reject "E2E-SECCOMP: " "a cloud-hypervisor thread made a syscall its seccomp filter refuses: add it to vmm/src/seccomp/rules.rs (comm= names the thread, syscall= the number)"
        reject "cloud-hypervisor: seccomp: the " "cloud-hypervisor died of SIGSYS: a thread made a syscall its seccomp filter refuses"
      fi
      if [ "${#FAILURES[@]}" != 0 ] && [ "$attempt" = 1 ] && grep -q "^E2E-L1-DMESG: WARNING: arch/arm64/kvm/" "$LOG"; then
        mv "$LOG" "$LOG.attempt1"
        printf '    attempt 1: %s\n' "${FAILURES[@]}" >&2
        log "case $c, kernel $v: L1's KVM warned ($(grep -m1 -o 'WARNING: arch/arm64/kvm/[^ ]*' "$LOG.attempt1")); running the case once more (first log: $LOG.attempt1)"
        retried=", attempt 2: L1's KVM warned in attempt 1, log $LOG.attempt1"
        attempt=2
        continue
      fi
      l1_up="$(grep -oE 'E2E-L[12]: (init|booted) uptime=[0-9.]*' "$LOG" | head -1 | cut -d= -f2 || true)"
      grep -E '^E2E-|^cloud-hypervisor' "$LOG" | sed 's/^/    /' >&2 || true
      if [ "${#FAILURES[@]}" = 0 ]; then
        RESULTS+=("PASS $c kernel=$v (QEMU wall $wall s, first /init at ${l1_up:-?} s guest time$retried)")
      else
        rc_all=1
        RESULTS+=("FAIL $c kernel=$v (QEMU wall $wall s; log $LOG$retried)")
        for f in "${FAILURES[@]}"; do RESULTS+=("     - $f"); done
        echo "---- last 25 lines of $LOG ----" >&2
        tail -25 "$LOG" >&2
      fi
      break
    done
  done
done

echo "==== e2e results ====" >&2
printf '%s\n' "${RESULTS[@]}" >&2
log "total: $((SECONDS - T_START)) s"
exit "$rc_all"
