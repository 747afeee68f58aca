# Source this to cross-build and unit-test for aarch64 with Debian's rustc-web
# (whose arm64 std matches the compiler exactly) and run tests under qemu-user.
# Debian's tools must win over rustup's proxies in ~/.cargo/bin.
export PATH=/usr/bin:$PATH
export RUSTC=/usr/bin/rustc
export RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64
# Switching compilers in one target dir rebuilds everything: keep them apart.
export CARGO_TARGET_DIR="${AARCH64_TARGET_DIR:-$(pwd)/target/aarch64-cross}"
