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

# The nested lane's L1 kernel. It must be 7.2 (6.12's arm-smmu-v3 has no nest
# parent and no vIOMMU): guest-kernel.config + nested/l1-kernel.config + the
# CANWBS test knob (off unless arm_smmu_v3.test_force_canwbs=1 is on the
# command line).
NESTED_L1_VERSION=7.2
NESTED_L1_KERNEL_ARGS=(--config "$E2E_DIR/nested/l1-kernel.config" --patch "$E2E_DIR/nested/canwbs-test-knob.patch")
# The 64 KiB-page L1 (a case's CASE_NESTED_L1=64k): the same plus
# nested/l1-64k.config.
NESTED_L1_64K_KERNEL_ARGS=(--config "$E2E_DIR/nested/l1-kernel.config" --config "$E2E_DIR/nested/l1-64k.config"
  --patch "$E2E_DIR/nested/canwbs-test-knob.patch")

# build_l1_kernel PAGES: build (or reuse) the nested L1 kernel with PAGES
# (4k or 64k) and print its Image.
build_l1_kernel() {
  case "$1" in
    4k) "$E2E_DIR/build-kernel.sh" "$NESTED_L1_VERSION" "${NESTED_L1_KERNEL_ARGS[@]}" ;;
    64k) "$E2E_DIR/build-kernel.sh" "$NESTED_L1_VERSION" "${NESTED_L1_64K_KERNEL_ARGS[@]}" ;;
    *) die "nested L1 '$1': expected 4k or 64k" ;;
  esac
}

# build_l2_kernel VERSION: build (or reuse) the L2 guest kernel of VERSION and
# print its Image. The 7.2 L2 kernel is the L1 build: l1-kernel.config only
# adds options to guest-kernel.config and the knob is inert without its
# parameter, so one 7.2 build serves both sides (one kernel build fewer on a
# cold machine, and L2 gets the L1's NUMA and hugetlbfs too).
build_l2_kernel() {
  if [ "$1" = "$NESTED_L1_VERSION" ]; then
    "$E2E_DIR/build-kernel.sh" "$1" "${NESTED_L1_KERNEL_ARGS[@]}"
  else
    "$E2E_DIR/build-kernel.sh" "$1"
  fi
}

# unsplit_events FILE: FILE with every event line that the L1 reader wrote
# into the middle of a console line (the guest's serial output reaches the
# log a few bytes per write, the reader's whole event lines between them)
# moved out: the event stays a line of its own, and the console line's two
# halves are joined again (a marker "E2" + event + "E-API: ..." became
# unreadable to grep). Prints the repaired text.
unsplit_events() {
  awk '{ i = index($0, "E2E-EVENT step="); if (i > 0) { pre = pre substr($0, 1, i - 1); print substr($0, i); next } if (pre != "") { $0 = pre $0; pre = "" } print } END { if (pre != "") print pre }' "$1"
}

# Tag of log lines (scripts/iommufd-mock sets "mock").
E2E_LOG_TAG="${E2E_LOG_TAG:-e2e}"
log() { printf '[%s %s] %s\n' "$E2E_LOG_TAG" "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[%s] FAIL: %s\n' "$E2E_LOG_TAG" "$*" >&2; exit 1; }

# timed NAME CMD...: run CMD, print how long it took (also on failure).
timed() {
  local name="$1"; shift
  local t0=$SECONDS rc=0
  "$@" || rc=$?
  log "$name: $((SECONDS - t0)) s$([ "$rc" = 0 ] || echo " (FAILED rc=$rc)")"
  return "$rc"
}

# with_progress LABEL STATUS_FN CMD...: run CMD; while it runs, log
# "LABEL: $(STATUS_FN), N s" every 30 s (e.g. a kernel build's objects).
# Redirect CMD's output inside CMD (a function), not around this call, or
# the progress lines go with it.
with_progress() {
  local label="$1" status="$2" rc=0 ticker parent=$$
  shift 2
  (
    n=0
    while sleep 5; do
      kill -0 "$parent" 2>/dev/null || exit 0
      n=$((n + 5))
      if [ $((n % 30)) = 0 ]; then log "$label: $("$status" 2>/dev/null || true), $n s"; fi
    done
  ) >/dev/null &
  ticker=$!
  "$@" || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
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

# installed PKG: the Debian package PKG (may carry :arch) is installed.
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -qx 'install ok installed'; }

# ensure_debs PKG...: install those of the Debian packages PKG that are missing
# (machine's apt, --no-install-recommends; lists updated only when needed).
ensure_debs() {
  local missing=() p
  for p in "$@"; do installed "$p" || missing+=("$p"); done
  [ "${#missing[@]}" = 0 ] && return 0
  need_root_or_die "${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  for p in "${missing[@]}"; do
    if ! apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [^(]'; then
      apt-get update -q >&2
      break
    fi
  done
  log "installing ${#missing[@]} Debian packages: ${missing[*]}"
  # Other users of the machine may hold the dpkg lock for a while: wait for it.
  apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >&2
  for p in "${missing[@]}"; do installed "$p" || die "Debian package $p did not install"; done
}

# fetch_deb APT_WRAPPER PKG VER: download PKG=VER once into $E2E_CACHE/debs
# and print the path. APT_WRAPPER is "" (machine's apt) or sid_apt.
fetch_deb() {
  local wrap="$1" pkg="$2" ver="$3" name file tmp
  name="${pkg%%:*}_${ver//:/%3a}.deb"
  file="$E2E_CACHE/debs/$name"
  if [ ! -s "$file" ]; then
    mkdir -p "$E2E_CACHE/debs"
    tmp="$(mktemp -d "$E2E_CACHE/debs/dl.XXXXXX")"
    (cd "$tmp" && $wrap apt-get download -q -o APT::Sandbox::User=root "$pkg=$ver" >&2)
    mv "$tmp"/*.deb "$file"
    rmdir "$tmp"
  fi
  [ -s "$file" ] || die "download of $pkg=$ver failed"
  echo "$file"
}

# apt_download PKG: PKG's candidate from the machine's apt lists (updated if
# they do not know PKG yet), downloaded with fetch_deb.
apt_download() {
  local pkg="$1" ver
  ver="$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')"
  if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
    need_root_or_die "apt-get update (no candidate for $pkg)"
    apt-get update -q >&2
    ver="$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')"
  fi
  if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then die "no Debian candidate for $pkg"; fi
  fetch_deb "" "$pkg" "$ver"
}

# sid_update: write the private sid apt state; refresh its lists at most once
# a day (E2E_REFRESH=1 forces it). Sets SID_REFRESHED=1 when it refreshed.
sid_update() {
  mkdir -p "$SID_APT_DIR"/lists/partial "$SID_APT_DIR"/cache/archives/partial
  cat >"$SID_APT_DIR/sources.list" <<'SRC'
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
SRC
  SID_REFRESHED=0
  if [ "${E2E_REFRESH:-0}" = 1 ] || [ -z "$(find "$SID_APT_DIR/lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    sid_apt apt-get update >&2
    SID_REFRESHED=1
  fi
}

# sid_candidate PKG: PKG's version in sid (after sid_update), or "".
sid_candidate() {
  local ver
  ver="$(sid_apt apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')"
  [ "$ver" = "(none)" ] && ver=""
  echo "$ver"
}

# extract_source DEB VERSION: unpack linux-source-VERSION's tarball once and
# record where it is in $(src_env VERSION). Serialised by a lock per tree.
extract_source() {
  local deb="$1" version="$2" pkgver dir env lockfd
  pkgver="$(dpkg-deb -f "$deb" Version)"
  env="$(src_env "$version")"
  dir="$E2E_CACHE/src/linux-source-${version}_${pkgver}"
  mkdir -p "$E2E_CACHE/src"
  exec {lockfd}>"$dir.lock"
  flock "$lockfd"
  if [ -f "$env" ] && grep -qx "SRC_PKGVER=$pkgver" "$env" && [ -f "$dir/Makefile" ]; then
    log "linux-source-$version $pkgver: already unpacked in $dir"
    exec {lockfd}>&-
    return 0
  fi
  local tmp="$dir.tmp" deb_tmp="$dir.deb"
  rm -rf "$tmp" "$deb_tmp" && mkdir -p "$tmp" "$deb_tmp"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$deb_tmp" --wildcards './usr/src/linux-source-*.tar.*'
  local tarball
  tarball="$(find "$deb_tmp/usr/src" -maxdepth 1 -name 'linux-source-*.tar.*' | head -1)"
  [ -n "$tarball" ] || die "$deb holds no usr/src/linux-source-*.tar.*"
  tar -xf "$tarball" -C "$tmp" --strip-components=1
  rm -rf "$deb_tmp"
  rm -rf "$dir" && mv "$tmp" "$dir"
  [ -f "$dir/Makefile" ] || die "linux-source-$version: no Makefile after unpacking $deb"
  printf 'SRC_PKG=linux-source-%s\nSRC_PKGVER=%s\nSRC_DIR=%s\n' "$version" "$pkgver" "$dir" >"$env.tmp"
  mv "$env.tmp" "$env"
  exec {lockfd}>&-
  log "linux-source-$version $pkgver unpacked in $dir"
}

# get_sid_source VERSION: sid's linux-source-VERSION, downloaded and unpacked
# once (private apt state). If sid no longer has it, the newest
# linux-source-X.Y there is used instead and named in the log.
get_sid_source() {
  local version="$1" pkg ver deb
  sid_update
  # Lists not refreshed and this version already unpacked: nothing can have changed.
  if [ "$SID_REFRESHED" = 0 ] && [ -f "$(src_env "$version")" ]; then
    log "linux-source-$version: $(grep SRC_PKGVER "$(src_env "$version")" | cut -d= -f2) already unpacked (sid lists < 1 day old)"
    return 0
  fi
  pkg="linux-source-$version"
  if ! sid_apt apt-cache show "$pkg" >/dev/null 2>&1; then
    # That version left sid: take the newest linux-source-X.Y there and say so.
    pkg="$(sid_apt apt-cache pkgnames linux-source- | grep -E '^linux-source-[0-9]+\.[0-9]+$' | sort -V | tail -1)"
    [ -n "$pkg" ] || die "sid has no linux-source-* package"
    log "sid has no linux-source-$version; using $pkg (set E2E_KERNELS to match)"
    version="${pkg#linux-source-}"
  fi
  ver="$(sid_candidate "$pkg")"
  [ -n "$ver" ] || die "sid: no candidate for $pkg"
  log "sid: $pkg $ver"
  deb="$(fetch_deb sid_apt "$pkg" "$ver")"
  extract_source "$deb" "$version"
}

# Where setup.sh records the source tree of kernel VERSION:
#   $E2E_CACHE/src/linux-source-VERSION.env  (SRC_DIR=..., SRC_PKG=..., SRC_PKGVER=...)
src_env() { echo "$E2E_CACHE/src/linux-source-$1.env"; }

# reuse_or_lock IMAGE LABEL: take IMAGE's build lock (fd 9, held until the
# script exits; a concurrent build of the same kernel makes us wait), then,
# if IMAGE is already built, print its path and exit the calling script.
reuse_or_lock() {
  local image="$1" label="$2"
  exec 9>"$image.lock"
  flock -n 9 || { log "$label: another build holds $image.lock; waiting"; flock 9; }
  if [ -s "$image" ]; then
    log "$label: cached $image"
    echo "$image"
    exit 0
  fi
}

# patched_tree SRC PATCH...: print a copy of the kernel tree SRC with the
# test-only PATCHes applied (patch -p1), made once per patch set: a
# hard-linked copy (cheap) in which the files a patch touches are real
# copies, so the shared tree and the builds that use it never change.
patched_tree() {
  local src="$1" pkey dir tmp p f lockfd
  shift
  pkey="$(cat "$@" | sha256sum | cut -c1-12)"
  dir="$src+patched-$pkey"
  exec {lockfd}>"$dir.lock"
  flock "$lockfd"
  if [ ! -f "$dir/.e2e-patched" ]; then
    tmp="$dir.tmp"
    rm -rf "$tmp"
    cp -al "$src" "$tmp"
    for p in "$@"; do
      while IFS= read -r f; do
        cp --remove-destination "$src/$f" "$tmp/$f"
      done < <(sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "$p")
      patch -d "$tmp" -p1 --forward --no-backup-if-mismatch -s <"$p" >&2 ||
        die "$p does not apply to $src"
    done
    printf '%s\n' "$@" >"$tmp/.e2e-patched"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    log "patched tree $dir"
  fi
  exec {lockfd}>&-
  echo "$dir"
}

# shellcheck disable=SC2034 # used by the scripts that source this
BUSYBOX="$E2E_CACHE/busybox-arm64/bin/busybox"
