# Helpers for case scripts inside L1 (/e2e/lib.sh, sourced before /e2e/run.sh).

# Seconds the VMM may run before it is killed (E2E-L1: vmm exit=124 then).
: "${VMM_TIMEOUT:=240}"

# --seccomp of every cloud-hypervisor run: the filters are on, and a syscall
# one refuses is logged by L1's kernel and allowed, not fatal: L1's /init
# prints those kernel lines as E2E-SECCOMP and run.sh fails the case on any,
# naming the thread (comm=) and the syscall. Nobody can debug a VMM killed by
# SIGSYS inside CI's L1; a log line is enough to fix the filter.
: "${VMM_SECCOMP:=log}"
echo "E2E-L1: seccomp $VMM_SECCOMP"

# events_start STEP [FILE]: a FIFO for the next VMM's --event-monitor, as
# libvirt sets one up, and a reader that prints each event as
#   E2E-EVENT step=STEP {json}
# to FILE (appended; default: the console), as it arrives, so events and
# console lines keep their order. Sets EVENTS_ARG ("path=FIFO"). The run.sh
# assertions (expect_event, in_order with @source:event key=value) read
# these lines; docs/events.md names the events.
events_start() {
  ev_fifo="/tmp/events-$1.fifo"
  rm -f "$ev_fifo"
  mkfifo "$ev_fifo"
  ev_step="$1"
  ev_out="${2:-}"
  if [ -n "$ev_out" ]; then
    (while IFS= read -r ev_line; do printf 'E2E-EVENT step=%s %s\n' "$ev_step" "$ev_line"; done <"$ev_fifo" >>"$ev_out") &
  else
    (while IFS= read -r ev_line; do printf 'E2E-EVENT step=%s %s\n' "$ev_step" "$ev_line"; done <"$ev_fifo") &
  fi
  ev_pid=$!
  EVENTS_ARG="path=$ev_fifo"
}

# unsplit FILE: FILE with event lines written into the middle of a console
# line moved out and the line's halves joined (scripts/e2e/lib.sh
# unsplit_events; the host repairs the whole console log the same way).
unsplit() {
  awk '{ i = index($0, "E2E-EVENT step="); if (i > 0) { pre = pre substr($0, 1, i - 1); print substr($0, i); next } if (pre != "") { $0 = pre $0; pre = "" } print } END { if (pre != "") print pre }' "$1"
}

# events_stop: after the VMM exited, let the reader finish. A VMM that never
# opened the FIFO (--version, --dump-acpi, a refused option) left the
# reader blocked in open(): opening the FIFO read-write releases it, and it
# then reads end-of-file.
events_stop() {
  exec 8<>"$ev_fifo"
  exec 8>&-
  wait "$ev_pid"
  rm -f "$ev_fifo"
}

# vmm_reap PID: after an API-driven VMM was told to exit, wait up to 30 s
# for PID, SIGTERM it if it is still there, reap it (its status in rc) and
# let the event reader finish.
vmm_reap() {
  n=0
  while [ $n -lt 30 ] && kill -0 "$1" 2>/dev/null; do sleep 1; n=$((n + 1)); done
  kill -TERM "$1" 2>/dev/null
  wait "$1"
  rc=$?
  events_stop
}

# vmm_exit_line STEP: "E2E-L1: vmm exit=$rc step=STEP seconds=S", S since $t0.
vmm_exit_line() {
  t1=$(cut -d' ' -f1 /proc/uptime)
  echo "E2E-L1: vmm exit=$rc step=$1 seconds=$(awk "BEGIN{print $t1-$t0}")"
}

# vmm STEP ARGS...: run cloud-hypervisor ARGS --event-monitor ... under a
# timeout and print
#   E2E-L1: vmm start step=STEP args=ARGS
#   E2E-EVENT step=STEP {json}          (each event, as it happens)
#   E2E-L1: vmm exit=N step=STEP seconds=S
# The VMM's own stdout/stderr (and the L2 serial console) go to the console.
vmm() {
  step="$1"; shift
  echo "E2E-L1: vmm start step=$step args=$*"
  events_start "$step"
  t0=$(cut -d' ' -f1 /proc/uptime)
  timeout "$VMM_TIMEOUT" /bin/cloud-hypervisor --seccomp "$VMM_SECCOMP" "$@" --event-monitor "$EVENTS_ARG"
  rc=$?
  events_stop
  t1=$(cut -d' ' -f1 /proc/uptime)
  echo "E2E-L1: vmm exit=$rc step=$step seconds=$(awk "BEGIN{print $t1-$t0}")"
  return $rc
}

# vmm_until STEP PATTERN COUNT ARGS...: run cloud-hypervisor ARGS in the
# background until its output holds COUNT lines with PATTERN (e.g. the L2
# guest booted twice, across a guest reboot), then stop it with SIGTERM, as
# an operator would; print its output and the same start/exit markers.
vmm_until() {
  step="$1"; pat="$2"; count="$3"; shift 3
  echo "E2E-L1: vmm start step=$step args=$*"
  out="/tmp/vmm-$step.log"
  : >"$out"
  # Appending, both: the events go into the same file, in order.
  events_start "$step" "$out"
  /bin/cloud-hypervisor --seccomp "$VMM_SECCOMP" "$@" --event-monitor "$EVENTS_ARG" >>"$out" 2>&1 &
  pid=$!
  waited=0
  while [ "$waited" -lt "$VMM_TIMEOUT" ]; do
    [ "$(grep -c "$pat" "$out")" -ge "$count" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
    waited=$((waited + 1))
  done
  kill -TERM "$pid" 2>/dev/null
  wait "$pid"
  rc=$?
  events_stop
  cat "$out"
  echo "E2E-L1: vmm exit=$rc step=$step seconds=$waited"
  return $rc
}

# vmm_measured STEP BIN ARGS...: run any VMM, BIN ARGS (ours or another),
# under the same timeout and with the same start/exit markers as vmm, stdin
# /dev/null, and when the L2's /init prints "E2E-L2: booted", print
#   E2E-L1: measured step=STEP boot-to-init=S vmrss-kb=N rssanon-kb=N rssfile-kb=N
# S: seconds of L1 time from starting BIN to that line; then BIN's resident
# memory at that moment, from /proc/PID/status: VmRSS = RssAnon (guest RAM
# the L2 touched, the VMM's heap) + RssFile + RssShmem; rssfile-kb is the sum
# of the last two, the mapped pages of the binary and its libraries (L1's
# rootfs is shmem-backed, so there they count as RssShmem). Busybox timeout execs BIN in
# its own process, so $! is BIN's pid. The output is read through a FIFO by
# awk (buffered, and it stamps the line as it reads it).
# MEASURE_HOOK (optional): a command run, as "$MEASURE_HOOK STEP NAME", each
# time the L2 prints "E2E-L2: mark NAME" (NAME: [a-z0-9-]+), its output in
# the console at that point; the L2 waits a little after each mark. A case
# snapshots counters around a workload with it (peer-cmdqv: vm.counters
# through ch-remote, the line count of QEMU's trace file).
# MEASURE_MARK (optional): the fixed string that stamps the sample instead
# of "E2E-L2: booted" (peer-virtio: the Debian root's multi-user report).
vmm_measured() {
  step="$1"; bin="$2"; shift 2
  [ "$bin" = /bin/cloud-hypervisor ] && set -- --seccomp "$VMM_SECCOMP" "$@"
  echo "E2E-L1: vmm start step=$step args=$*"
  # Our VMM's events go to the console (another VMM has no --event-monitor).
  ev_on=0
  case "$bin" in */cloud-hypervisor) ev_on=1; events_start "$step"; set -- "$@" --event-monitor "$EVENTS_ARG" ;; esac
  fifo="/tmp/vmm-$step.fifo"
  rm -f "$fifo"
  mkfifo "$fifo"
  t0=$(cut -d' ' -f1 /proc/uptime)
  timeout "$VMM_TIMEOUT" "$bin" "$@" </dev/null >"$fifo" 2>&1 &
  pid=$!
  awk -v step="$step" -v pid="$pid" -v t0="$t0" -v hook="${MEASURE_HOOK:-}" -v mark="${MEASURE_MARK:-E2E-L2: booted}" '
    { print; fflush() }
    hook != "" && match($0, /E2E-L2: mark [a-z0-9-]+/) {
      system(hook " " step " " substr($0, RSTART + 13, RLENGTH - 13))
    }
    !stamped && index($0, mark) {
      stamped = 1
      getline up < "/proc/uptime"; close("/proc/uptime"); split(up, u, " ")
      status = "/proc/" pid "/status"
      while ((getline l < status) > 0) { split(l, f, " "); kb[f[1]] = f[2] }
      close(status)
      printf "E2E-L1: measured step=%s boot-to-init=%.2f vmrss-kb=%s rssanon-kb=%s rssfile-kb=%s\n", step, u[1] - t0, kb["VmRSS:"], kb["RssAnon:"], kb["RssFile:"] + kb["RssShmem:"]
      fflush()
    }' <"$fifo"
  wait "$pid"
  rc=$?
  [ "$ev_on" = 1 ] && events_stop
  rm -f "$fifo"
  t1=$(cut -d' ' -f1 /proc/uptime)
  echo "E2E-L1: vmm exit=$rc step=$step seconds=$(awk "BEGIN{print $t1-$t0}")"
  return $rc
}

# by_serial SERIAL: the /dev/vdX whose virtio-blk serial is SERIAL (L0's
# extra disks, as the disk and peer-virtio cases give them).
by_serial() {
  for b in /sys/block/vd*; do
    [ "$(cat "$b/serial" 2>/dev/null)" = "$1" ] && echo "/dev/${b##*/}"
  done
}
