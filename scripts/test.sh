#!/usr/bin/env bash
# Every test: the host workspace (unit tests, uAPI/ACPI/replay integration
# tests), then the aarch64 build with its unit tests under qemu-user.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace
(
  # shellcheck source=scripts/aarch64-env.sh
  . scripts/aarch64-env.sh
  cargo test --workspace --target aarch64-unknown-linux-gnu
)
