#!/usr/bin/env bash
# Every test: the host workspace (unit tests, ACPI/iasl and replay
# integration tests), the aarch64 build with its unit tests under qemu-user,
# then the end-to-end guests (scripts/e2e: QEMU + KVM + our VMM + real Linux
# guests built from Debian's 6.12 and 7.2 sources; E2E_KERNELS narrows it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace
(
  # shellcheck source=scripts/aarch64-env.sh
  . scripts/aarch64-env.sh
  # Unit tests only: the integration tests spawn our binaries, which are
  # aarch64 here and would need binfmt_misc; the host lane runs them.
  cargo test --workspace --target aarch64-unknown-linux-gnu --lib --bins
)
scripts/e2e/run.sh
