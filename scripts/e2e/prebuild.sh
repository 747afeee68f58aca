#!/usr/bin/env bash
# Build every cached artifact the iommufd and e2e lanes need, ahead of them
# and two at a time, so a cold machine overlaps what is single-threaded or
# waits on the network (the sid chroot, the Debian root filesystem under
# qemu-user, downloads) with what fills both cores (kernels, QEMU), and the
# cargo lanes run beside both.
#
#   scripts/e2e/prebuild.sh            build now, in the foreground
#   scripts/e2e/prebuild.sh --start    the network step in the foreground,
#                                      the two tracks in the background
#                                      (nothing if a started one still runs)
#   scripts/e2e/prebuild.sh --wait     wait for the started one; print its
#                                      step lines; its exit status
#
# Nothing here is new work: each step is the script the lanes call later
# (same arguments, same content-keyed cache, same flock per artifact), which
# then finds it cached. A step that fails fails only the prebuild: --wait
# says so and the lane that needs the artifact builds it again and shows
# the error where it belongs.
#
# What is built follows TEST_LANES (iommufd: the mock kernel; e2e: the rest)
# and E2E_KERNELS, as scripts/test.sh uses them.
set -euo pipefail
E2E_LOG_TAG=prebuild
# shellcheck source=scripts/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

STATE="$REPO_ROOT/target/prebuild"
LANES=" ${TEST_LANES:-host aarch64 iommufd e2e} "
want() { case "$LANES" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# step LABEL CMD...: run CMD, its output to the track's log; one line with
# its time and result on stderr (the tracks' lines interleave by time).
step() {
  local label="$1" t=$SECONDS rc=0
  shift
  "$@" >>"$STATE/$TRACK.log" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then
    log "$TRACK: $label: $((SECONDS - t)) s"
  else
    log "$TRACK: $label: FAILED (exit $rc, $((SECONDS - t)) s; log $STATE/$TRACK.log)"
    FAILED=1
  fi
}

# The network step: Debian packages, busybox and the kernel sources (7.2 is
# also the nested L1's and the mock's). Serial, before the tracks: both
# would otherwise refresh the private sid lists at once.
fetch() {
  TRACK=fetch
  local kernels="${E2E_KERNELS:-6.12 7.2}"
  want e2e || kernels=""
  step "setup.sh (packages, busybox, linux sources $kernels 7.2)" \
    env E2E_KERNELS="$(echo "$kernels 7.2" | xargs -n1 | sort -u | xargs)" "$E2E_DIR/setup.sh"
}

# Track "cpu": what fills both cores, one build at a time.
track_cpu() (
  TRACK=cpu FAILED=0
  # shellcheck source=scripts/e2e/nested/l0.sh
  . "$E2E_DIR/nested/l0.sh"
  if want iommufd; then step "kernel 7.2 (iommufd mock)" "$REPO_ROOT/scripts/iommufd-mock/build-kernel.sh"; fi
  if want e2e; then
    for v in ${E2E_KERNELS:-6.12 7.2}; do
      step "kernel $v (L2)" build_l2_kernel "$v"
    done
    step "kernel $NESTED_L1_VERSION (nested L1)" build_l1_kernel 4k
    step "kernel $NESTED_L1_VERSION (nested L1, 64 KiB pages)" build_l1_kernel 64k
  fi
  exit "$FAILED"
)

# Track "io": single-threaded work and downloads.
track_io() (
  TRACK=io FAILED=0
  if want e2e; then
    step "sid chroot (nested L0 sid)" "$E2E_DIR/nested/setup-l0.sh"
    step "QEMU payload for the peer cases (arm64)" "$E2E_DIR/peer/build-qemu.sh"
    step "Debian root filesystem (disk case)" "$E2E_DIR/rootfs/build-rootfs.sh"
    # Last here, not in the cpu track: measured cold, this track is done
    # with its three steps when the cpu track still has three kernels to
    # build, and the QEMU build runs niced (build-qemu-cmdqv.sh), so it
    # takes what the kernel builds leave idle (their link and modpost
    # phases) and the rest after them.
    step "QEMU with the CMD-QV model (nested L0 cmdqv)" "$E2E_DIR/nested/build-qemu-cmdqv.sh"
  fi
  exit "$FAILED"
)

run_tracks() {
  local t=$SECONDS a=0 b=0
  track_cpu & local pa=$!
  track_io & local pb=$!
  wait "$pa" || a=$?
  wait "$pb" || b=$?
  log "tracks done in $((SECONDS - t)) s"
  [ "$a" = 0 ] && [ "$b" = 0 ]
}

mkdir -p "$STATE"
case "${1:-}" in
  "")
    : >"$STATE/fetch.log"; : >"$STATE/cpu.log"; : >"$STATE/io.log"
    FAILED=0
    fetch
    [ "$FAILED" = 0 ] || exit 1
    run_tracks
    ;;
  --start)
    if [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
      log "already running (pid $(cat "$STATE/pid"))"
      exit 0
    fi
    rm -f "$STATE/status"
    : >"$STATE/fetch.log"; : >"$STATE/cpu.log"; : >"$STATE/io.log"; : >"$STATE/lines.log"
    FAILED=0
    fetch
    if [ "$FAILED" != 0 ]; then
      # No tracks without the sources: the lanes fetch again and show why.
      echo 1 >"$STATE/status"
      exit 0
    fi
    # The tracks outlive this script: their step lines go to lines.log,
    # their status to status, for --wait.
    (
      rc=0
      run_tracks 2>>"$STATE/lines.log" || rc=$?
      echo "$rc" >"$STATE/status"
    ) </dev/null >/dev/null 2>&1 &
    echo $! >"$STATE/pid"
    log "tracks started in the background (pid $!; logs in $STATE)"
    ;;
  --wait)
    if [ -f "$STATE/pid" ]; then
      pid="$(cat "$STATE/pid")"
      t=$SECONDS
      while kill -0 "$pid" 2>/dev/null; do sleep 5; done
      rm -f "$STATE/pid"
    elif [ ! -f "$STATE/status" ]; then
      log "none started"
      exit 0
    fi
    cat "$STATE/lines.log" >&2
    rc="$(cat "$STATE/status" 2>/dev/null || echo 1)"
    log "waited $((SECONDS - ${t:-$SECONDS})) s; exit $rc"
    rm -f "$STATE/status"
    exit "$rc"
    ;;
  *) echo "usage: $0 [--start|--wait]" >&2; exit 2 ;;
esac
