#!/usr/bin/env bash
# Prepare a machine for the end-to-end harness, from Debian's packages only.
# Idempotent: every step checks its result first and is skipped when done.
#
#   scripts/e2e/setup.sh           deps, busybox, linux sources for $E2E_KERNELS
#
# Never changes the machine's apt sources: sid's linux-source comes through a
# private apt state under $E2E_CACHE/apt-sid (see docs/e2e.md).
set -euo pipefail
# shellcheck source=scripts/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

T0=$SECONDS
mkdir -p "$E2E_CACHE"/{debs,src}

# --- 1. Debian packages -------------------------------------------------------
install_packages() {
  # The aarch64 Rust lane (rustc-web + arm64 std, cross gcc, qemu-user).
  "$REPO_ROOT/scripts/install-deps.sh"
  local missing=() p
  command -v qemu-system-aarch64 >/dev/null || missing+=(qemu-system-arm)
  for p in bc bison flex libssl-dev libelf-dev make cpio xz-utils gcc-aarch64-linux-gnu; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    need_root_or_die "${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
  qemu-system-aarch64 --version | head -1 >&2
}

# fetch_deb APT_WRAPPER PKG VER: download PKG=VER once into $E2E_CACHE/debs
# and print the path. APT_WRAPPER is "" (machine's apt) or sid_apt.
fetch_deb() {
  local wrap="$1" pkg="$2" ver="$3" name file tmp
  name="${pkg%%:*}_${ver//:/%3a}.deb"
  file="$E2E_CACHE/debs/$name"
  if [ ! -s "$file" ]; then
    tmp="$(mktemp -d "$E2E_CACHE/debs/dl.XXXXXX")"
    (cd "$tmp" && $wrap apt-get download -q -o APT::Sandbox::User=root "$pkg=$ver" >&2)
    mv "$tmp"/*.deb "$file"
    rmdir "$tmp"
  fi
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
  [ -n "$ver" ] && [ "$ver" != "(none)" ] || die "no Debian candidate for $pkg"
  fetch_deb "" "$pkg" "$ver"
}

# --- 2. busybox (static, arm64), without installing it -------------------------
get_busybox() {
  if [ -x "$BUSYBOX" ] && file -L "$BUSYBOX" 2>/dev/null | grep -q 'ARM aarch64.*statically'; then
    return 0
  fi
  # A foreign arm64 architecture is already needed by the Rust lane (install-deps.sh).
  dpkg --print-foreign-architectures | grep -qx arm64 || die "dpkg arch arm64 missing (scripts/install-deps.sh adds it)"
  local deb
  deb="$(apt_download busybox-static:arm64)"
  rm -rf "$E2E_CACHE/busybox-arm64.tmp"
  dpkg-deb -x "$deb" "$E2E_CACHE/busybox-arm64.tmp"
  rm -rf "$E2E_CACHE/busybox-arm64"
  mv "$E2E_CACHE/busybox-arm64.tmp" "$E2E_CACHE/busybox-arm64"
  [ -x "$BUSYBOX" ] || die "busybox-static:arm64 has no bin/busybox"
  log "busybox: $(basename "$deb")"
}

# extract_source DEB VERSION: unpack linux-source-VERSION's tarball once and
# record where it is in $(src_env VERSION).
extract_source() {
  local deb="$1" version="$2" pkgver dir env
  pkgver="$(dpkg-deb -f "$deb" Version)"
  env="$(src_env "$version")"
  dir="$E2E_CACHE/src/linux-source-${version}_${pkgver}"
  if [ -f "$env" ] && grep -qx "SRC_PKGVER=$pkgver" "$env" && [ -f "$dir/Makefile" ]; then
    log "linux-source-$version $pkgver: already unpacked in $dir"
    return 0
  fi
  local tmp="$dir.tmp" deb_tmp="$dir.deb"
  rm -rf "$tmp" "$deb_tmp" && mkdir -p "$tmp" "$deb_tmp"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$deb_tmp" --wildcards './usr/src/linux-source-*.tar.*'
  local tarball
  tarball="$(ls "$deb_tmp"/usr/src/linux-source-*.tar.* | head -1)"
  tar -xf "$tarball" -C "$tmp" --strip-components=1
  rm -rf "$deb_tmp"
  rm -rf "$dir" && mv "$tmp" "$dir"
  [ -f "$dir/Makefile" ] || die "linux-source-$version: no Makefile after unpacking $deb"
  printf 'SRC_PKG=linux-source-%s\nSRC_PKGVER=%s\nSRC_DIR=%s\n' "$version" "$pkgver" "$dir" >"$env"
  log "linux-source-$version $pkgver unpacked in $dir"
}

# --- 3. linux-source from bookworm (machine's apt) -----------------------------
get_bookworm_source() {
  local version="$1" deb
  deb="$(apt_download "linux-source-$version")"
  extract_source "$deb" "$version"
}

# --- 4. linux-source from sid (private apt state) ------------------------------
sid_update() {
  mkdir -p "$SID_APT_DIR"/lists/partial "$SID_APT_DIR"/cache/archives/partial
  cat >"$SID_APT_DIR/sources.list" <<'SRC'
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
SRC
  # Refresh at most once a day (E2E_REFRESH=1 forces it).
  SID_REFRESHED=0
  if [ "${E2E_REFRESH:-0}" = 1 ] || [ -z "$(find "$SID_APT_DIR/lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    sid_apt apt-get update >&2
    SID_REFRESHED=1
  fi
}

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
  ver="$(sid_apt apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')"
  [ -n "$ver" ] && [ "$ver" != "(none)" ] || die "sid: no candidate for $pkg"
  log "sid: $pkg $ver"
  deb="$(fetch_deb sid_apt "$pkg" "$ver")"
  extract_source "$deb" "$version"
}

timed "setup: Debian packages" install_packages
timed "setup: busybox-static:arm64" get_busybox
for v in $E2E_KERNELS; do
  cand="$(apt-cache policy "linux-source-$v" 2>/dev/null | awk '/Candidate:/ {print $2}')"
  if [ -n "$cand" ] && [ "$cand" != "(none)" ]; then
    timed "setup: linux-source-$v (bookworm)" get_bookworm_source "$v"
  else
    timed "setup: linux-source-$v (sid, private apt state)" get_sid_source "$v"
  fi
done
log "setup: total $((SECONDS - T0)) s"
