#!/usr/bin/env bash
# Run a test binary as /init of an x86_64 guest whose kernel has the iommufd
# selftest mock (CONFIG_IOMMUFD_TEST), under QEMU TCG (docs/iommufd-mock.md).
#
#   scripts/iommufd-mock/run.sh BINARY [ARGS...]
#
# BINARY: a statically linked x86_64 program that is /init itself: it mounts
# devtmpfs (and proc/sys if it wants them) on its own, prints to its stdout
# (the serial console), and reports its verdict by writing one byte v to
# /dev/port at offset 0xf4 (QEMU's isa-debug-exit, which exits (v << 1) | 1):
# v = 0 is a pass, 1..127 a failure (v >= 128 would wrap to a pass: do not).
# ARGS go on the kernel command line after "--", so init gets them as argv;
# they must not contain whitespace or quotes.
#
# Exit status: 0 only when QEMU exited 1 (v = 0). Anything else (timeout,
# panic or reboot without a verdict: QEMU exits 0, v != 0) is 1 with a
# one-line reason and the console's last lines on stderr. The console goes to
# stdout and to a log whose path is printed on stderr.
#
# Environment:
#   MOCK_TIMEOUT   seconds for the whole QEMU run (default 120)
#   MOCK_KERNEL    bzImage to boot (default: scripts/iommufd-mock/build-kernel.sh)
#   MOCK_APPEND    extra kernel parameters (before "--")
#   MOCK_OUT       directory for run dirs (default $E2E_OUT/iommufd-mock,
#                  i.e. target/e2e/iommufd-mock); each run gets NAME.XXXXXX/
#                  with console.log, and NAME.log points at the newest one
#   MOCK_QUIET=1   do not copy the console to stdout
set -euo pipefail
E2E_LOG_TAG=mock
# shellcheck source=scripts/e2e/lib.sh
. "$(dirname "$0")/../e2e/lib.sh"

MOCK_DIR="$REPO_ROOT/scripts/iommufd-mock"
[ "$#" -ge 1 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
BINARY="$1"
shift
TIMEOUT="${MOCK_TIMEOUT:-120}"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "MOCK_TIMEOUT must be a number of seconds, not '$TIMEOUT'"

# --- the binary -------------------------------------------------------------------
[ -f "$BINARY" ] || die "no such file: $BINARY"
ensure_debs qemu-system-x86 cpio binutils
hdr="$(LC_ALL=C readelf -h "$BINARY" 2>/dev/null)" || die "$BINARY is not an ELF file"
grep -q 'Machine:.*X86-64' <<<"$hdr" || die "$BINARY is not an x86_64 ELF ($(grep Machine: <<<"$hdr" | sed 's/ *Machine: *//'))"
if LC_ALL=C readelf -l "$BINARY" | grep -q 'Requesting program interpreter'; then
  die "$BINARY is dynamically linked: build it static (Rust: -C target-feature=+crt-static; C: -static)"
fi

# --- kernel command line ---------------------------------------------------------------
APPEND="console=ttyS0 panic=-1 quiet${MOCK_APPEND:+ $MOCK_APPEND}"
if [ "$#" -gt 0 ]; then
  for a in "$@"; do
    case "$a" in *[[:space:]\"\']*) die "argument '$a' has whitespace or quotes: the kernel command line cannot carry it" ;; esac
  done
  APPEND="$APPEND -- $*"
fi
[ "${#APPEND}" -lt 2048 ] || die "kernel command line longer than 2047 bytes"

KERNEL="${MOCK_KERNEL:-}"
if [ -z "$KERNEL" ]; then
  KERNEL="$(timed "iommufd mock kernel" "$MOCK_DIR/build-kernel.sh")"
fi
[ -s "$KERNEL" ] || die "no kernel at '$KERNEL'"

# --- initramfs: BINARY as /init, uncompressed newc (unpacks fastest under TCG) --------
name="$(basename "$BINARY")"
OUT="${MOCK_OUT:-$E2E_OUT/iommufd-mock}"
mkdir -p "$OUT"
RUN_DIR="$(mktemp -d "$OUT/$name.XXXXXX")"
LOG="$RUN_DIR/console.log"
stage="$RUN_DIR/root"
mkdir -p "$stage"/{dev,proc,sys,tmp}
cp "$BINARY" "$stage/init"
chmod 0755 "$stage/init"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$RUN_DIR/init.cpio" ||
  die "packing $RUN_DIR/init.cpio failed"
rm -rf "$stage"
[ -s "$RUN_DIR/init.cpio" ] || die "packing $RUN_DIR/init.cpio gave an empty file"
ln -sfn "$(basename "$RUN_DIR")/console.log" "$OUT/$name.log"
# Keep the newest 10 run dirs of this binary.
find "$OUT" -maxdepth 1 -type d -name "$name.??????" -printf '%T@ %p\n' | sort -rn | tail -n +11 |
  cut -d' ' -f2- | while IFS= read -r old; do rm -rf "$old"; done

# --- boot --------------------------------------------------------------------------
log "booting $name (timeout $TIMEOUT s): console log $LOG"
t0=$SECONDS
qrc=0
# -nic none: no NIC to probe (and no iPXE rom needed).
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 \
  -accel tcg -cpu max -m 512 -nographic -no-reboot -nic none \
  -kernel "$KERNEL" -initrd "$RUN_DIR/init.cpio" \
  -append "$APPEND" \
  -device isa-debug-exit,iobase=0xf4,iosize=4 \
  </dev/null 2>&1 | sed -u 's/\r$//' |
  if [ "${MOCK_QUIET:-0}" = 1 ]; then cat >"$LOG"; else tee "$LOG"; fi || qrc=${PIPESTATUS[0]}
wall=$((SECONDS - t0))
rm -f "$RUN_DIR/init.cpio"

# --- verdict -------------------------------------------------------------------------
reason=""
case "$qrc" in
  1) ;;
  0)
    if grep -q 'Kernel panic' "$LOG"; then
      reason="the guest panicked before reporting a verdict: $(grep -m1 'Kernel panic' "$LOG")"
    else
      reason="the guest rebooted or powered off without reporting a verdict on port 0xf4"
    fi ;;
  124|137) reason="timed out after $TIMEOUT s without a verdict (MOCK_TIMEOUT)" ;;
  *)
    if [ $((qrc % 2)) = 1 ] && [ "$qrc" -ge 3 ]; then
      reason="the test reported failure v=$(((qrc - 1) / 2)) (QEMU exit $qrc)"
    else
      reason="qemu-system-x86_64 failed (exit $qrc)"
    fi ;;
esac
if [ -z "$reason" ]; then
  log "PASS $name (QEMU wall $wall s; log $LOG)"
  exit 0
fi
{
  echo "---- last 25 lines of $LOG ----"
  tail -25 "$LOG"
  echo "----"
} >&2
log "FAIL $name: $reason (QEMU wall $wall s; log $LOG)"
exit 1
