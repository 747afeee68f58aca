# Common helpers for scripts/e2e/*.sh. Source it; do not run it.
# shellcheck shell=bash

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$E2E_DIR/../.." && pwd)"
E2E_CACHE="${E2E_CACHE:-$HOME/.cache/ch-e2e}"
export E2E_CACHE
# Everything a run produces that is not worth caching across runs.
E2E_OUT="${E2E_OUT:-$REPO_ROOT/target/e2e}"
export E2E_OUT

# Kernel source versions the harness builds and boots (override: E2E_KERNELS="6.12").
E2E_KERNELS="${E2E_KERNELS:-6.12 7.2}"

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[e2e] FAIL: %s\n' "$*" >&2; exit 1; }

# timed NAME CMD...: run CMD, print how long it took (also on failure).
timed() {
  local name="$1"; shift
  local t0=$SECONDS rc=0
  "$@" || rc=$?
  log "$name: $((SECONDS - t0)) s$([ "$rc" = 0 ] || echo " (FAILED rc=$rc)")"
  return "$rc"
}

need_root_or_die() {
  [ "$(id -u)" = 0 ] || die "must run as root to install Debian packages: $*"
}

# Private apt state for sid: never touches the machine's own sources or lists.
SID_APT_DIR="$E2E_CACHE/apt-sid"
sid_apt() {
  local cmd="$1"; shift
  "$cmd" -q \
    -o Dir::Etc::SourceList="$SID_APT_DIR/sources.list" \
    -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State::Lists="$SID_APT_DIR/lists" \
    -o Dir::Cache="$SID_APT_DIR/cache" \
    -o APT::Sandbox::User=root \
    -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
    -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false \
    -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false \
    "$@"
}

# Where setup.sh records the source tree of kernel VERSION:
#   $E2E_CACHE/src/linux-source-VERSION.env  (SRC_DIR=..., SRC_PKG=..., SRC_PKGVER=...)
src_env() { echo "$E2E_CACHE/src/linux-source-$1.env"; }

# shellcheck disable=SC2034 # used by the scripts that source this
BUSYBOX="$E2E_CACHE/busybox-arm64/bin/busybox"
