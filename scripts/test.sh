#!/usr/bin/env bash
# Every test, lane by lane, each lane's time printed:
#   host        the host workspace (unit tests, ACPI/iasl, replay traces, the
#               API from outside, uAPI conformance against sid's 7.2 headers)
#   aarch64     the aarch64 build with its unit tests under qemu-user
#   iommufd     the iommufd backend judged by the kernel's own iommufd code:
#               a CONFIG_IOMMUFD_TEST x86_64 kernel under QEMU TCG
#               (scripts/iommufd-mock, docs/iommufd-mock.md)
#   e2e         the end-to-end guests (scripts/e2e: QEMU + KVM + our VMM +
#               real Linux guests from Debian's 6.12 and 7.2 sources;
#               E2E_KERNELS narrows it)
# TEST_LANES picks lanes (default "host aarch64 iommufd e2e").
#
# One line per step and per lane with its time, cargo test's "test result:"
# lines, the iommufd judge's verdicts and the e2e step lines and results
# table; everything else goes to target/logs/test-<date>.log, whose path is
# printed first and again, with the step's last lines, when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/steps.sh
. scripts/steps.sh
steps_init test
T0=$SECONDS
TIMES=()
LANES=" ${TEST_LANES:-host aarch64 iommufd e2e} "
lane() {
  local name="$1" t=$SECONDS
  shift
  case "$LANES" in *" $name "*) ;; *) return 0 ;; esac
  echo "=== lane $name"
  "$@"
  TIMES+=("$name $((SECONDS - t)) s")
  echo "=== lane $name: $((SECONDS - t)) s"
}
# What of cargo test's output stays on the terminal: each test binary's
# summary (CI reads them to know tests ran) and the names of failed tests.
CARGO_TEST_SHOW='^test result:|^test .* FAILED$'

scripts/install-deps.sh
# The iommufd and e2e lanes' kernels, QEMU builds, chroot and root
# filesystem: built in the background from here on (two tracks,
# scripts/e2e/prebuild.sh), beside the cargo lanes; waited for before the
# iommufd lane. A prebuild .ci/run started already is not started twice.
PREBUILD=0
case "$LANES" in
  *" iommufd "* | *" e2e "*)
    PREBUILD=1
    step "prebuild: sources now, kernels/QEMU/rootfs in the background" scripts/e2e/prebuild.sh --start ;;
esac
prebuild_wait() {
  [ "$PREBUILD" = 1 ] || return 0
  STEP_SHOW='^\[prebuild ' step "prebuild: wait for the background tracks" scripts/e2e/prebuild.sh --wait ||
    echo "prebuild: a step failed (above); the lane that needs it builds it again and shows why"
}
# The uAPI conformance test compiles against sid's 7.2 headers and the
# selftest mock's header from the 7.2 tree.
step_capture IOMMUFD_UAPI_INCLUDE "uAPI headers (sid's linux-libc-dev)" scripts/uapi-headers.sh
step_capture IOMMUFD_TEST_H "iommufd selftest header (7.2 source)" scripts/iommufd-mock/build-kernel.sh --test-header
export IOMMUFD_UAPI_INCLUDE IOMMUFD_TEST_H

# Tests that need something a machine may lack are #[ignore = "needs ..."];
# each lane runs those its machine has:
# - "needs a host without /dev/iommu" (the refusals such a host gives): the
#   host and aarch64 lanes, where this machine has no /dev/iommu;
# - "needs an aarch64 KVM host" (kvm::tests): no lane, qemu-user has no KVM;
#   run it by hand on one: cargo test -p vmm --lib -- --ignored kvm:: (the
#   e2e lane's L1 creates VMs through the same KvmVm code on every case).
IGNORED=()
if [ -e /dev/iommu ]; then
  echo "this machine has /dev/iommu: the no-iommufd refusal tests are not run"
else
  IGNORED=(--include-ignored)
fi
lane_host() {
  STEP_SHOW="$CARGO_TEST_SHOW" STEP_PROGRESS=progress_cargo step "host: cargo test --workspace" \
    cargo test --workspace -- "${IGNORED[@]}"
}
lane_aarch64() (
  # A subshell: the cross environment must not leak into later lanes.
  # shellcheck source=scripts/aarch64-env.sh
  . scripts/aarch64-env.sh
  # Unit tests only: the integration tests spawn our binaries, which are
  # aarch64 here and would need binfmt_misc; the host lane runs them.
  # qemu-user emulates neither io_uring (io_uring_setup: ENOSYS) nor the
  # SIOCETHTOOL ioctl: the io_uring tests (which fail, not pass, on a host
  # without io_uring) and the multi-queue tap's offload read-back run in the
  # host lane only.
  STEP_SHOW="$CARGO_TEST_SHOW" STEP_PROGRESS=progress_cargo step "aarch64: cargo test (qemu-user)" \
    cargo test --workspace --target aarch64-unknown-linux-gnu --lib --bins -- \
    "${IGNORED[@]}" --skip kvm::tests::vm_creation_works_on_a_real_kvm_host \
    --skip seccomp::tests::in_child:: \
    --skip block::uring::tests:: --skip block::tests::uring:: \
    --skip net::tap::tests::a_multi_queue_tap_takes_offloads_and_detaches_and_attaches_its_queues
)
lane_iommufd() {
  # The mock's step lines, the judge's verdict per check and its count.
  STEP_SHOW='^\[mock[] ]|^JUDGE |^[0-9]+ passed, [0-9]+ failed' STEP_PROGRESS=progress_cargo \
    step "iommufd: the judge under the selftest mock" scripts/iommufd-mock/judge.sh
}
lane_e2e() {
  # stdout (the cases' tables) whole; of stderr the [e2e]/[mock] step lines
  # and everything from the results table on; the rest (apt, cargo, make,
  # patch, the guests' console markers) to the log.
  step_e2e "e2e: scripts/e2e/run.sh" scripts/e2e/run.sh
}
lane host lane_host
lane aarch64 lane_aarch64
prebuild_wait
lane iommufd lane_iommufd
lane e2e lane_e2e
echo "=== lanes: ${TIMES[*]}; total $((SECONDS - T0)) s"
