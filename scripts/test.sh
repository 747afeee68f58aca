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
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS
TIMES=()
lane() {
  local name="$1" t=$SECONDS
  shift
  echo "=== lane $name"
  "$@"
  TIMES+=("$name $((SECONDS - t)) s")
  echo "=== lane $name: $((SECONDS - t)) s"
}

scripts/install-deps.sh
# The uAPI conformance test compiles against sid's 7.2 headers and the
# selftest mock's header from the 7.2 tree.
IOMMUFD_UAPI_INCLUDE="$(scripts/uapi-headers.sh)"
IOMMUFD_TEST_H="$(scripts/iommufd-mock/build-kernel.sh --test-header)"
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
lane host cargo test --workspace -- "${IGNORED[@]}"
aarch64_unit() (
  # A subshell: the cross environment must not leak into later lanes.
  # shellcheck source=scripts/aarch64-env.sh
  . scripts/aarch64-env.sh
  # Unit tests only: the integration tests spawn our binaries, which are
  # aarch64 here and would need binfmt_misc; the host lane runs them.
  cargo test --workspace --target aarch64-unknown-linux-gnu --lib --bins -- \
    "${IGNORED[@]}" --skip kvm::tests::vm_creation_works_on_a_real_kvm_host
)
lane aarch64 aarch64_unit
lane iommufd scripts/iommufd-mock/judge.sh
lane e2e scripts/e2e/run.sh
echo "=== lanes: ${TIMES[*]}; total $((SECONDS - T0)) s"
