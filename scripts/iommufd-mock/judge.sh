#!/usr/bin/env bash
# The host backend judged by the kernel's own iommufd code: build
# iommufd-judge (static x86_64) and run it as /init of the CONFIG_IOMMUFD_TEST
# kernel under QEMU TCG (scripts/iommufd-mock/run.sh). Exit 0 only when every
# check passed inside the VM. docs/iommufd-mock.md has the checks.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=x86_64-unknown-linux-gnu
# A target dir of its own: static linking flags would otherwise rebuild the
# host workspace's dependencies on every switch.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
  --target "$target" --target-dir target/judge -p iommufd --bin iommufd-judge
exec scripts/iommufd-mock/run.sh "target/judge/$target/release/iommufd-judge"
