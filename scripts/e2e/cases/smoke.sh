# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# smoke: L1 boots with KVM; the static aarch64 cloud-hypervisor runs inside it.
CASE_DESC="L1 boots, /dev/kvm present, cloud-hypervisor --version and --dump-acpi exit 0 inside L1"
CASE_DEFAULT=1
CASE_TIMEOUT=180

# Runs inside L1 as /e2e/run.sh (busybox sh; /e2e/lib.sh is sourced first).
case_l1_script() {
  cat <<'EOS'
vmm version --version
vmm dump-acpi --vsmmu cmdqv,backend=emulated --dump-acpi /tmp/acpi
for f in /tmp/acpi/*; do echo "E2E-L1: acpi table: $(basename "$f") $(wc -c <"$f")"; done
EOS
}

# Runs on the host against the console log (helpers: expect, expect_re, reject, fail).
case_assert() {
  expect "E2E-L1: vmm exit=0 step=version " "cloud-hypervisor --version did not exit 0 inside L1 (static aarch64 binary broken?)"
  expect "E2E-L1: vmm exit=0 step=dump-acpi " "cloud-hypervisor --vsmmu cmdqv,backend=emulated --dump-acpi /tmp/acpi did not exit 0 inside L1"
  expect "E2E-L1: acpi table: IORT.dat " "--dump-acpi inside L1 wrote no IORT.dat"
}
