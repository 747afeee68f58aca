# Helpers for case scripts inside L1 (/e2e/lib.sh, sourced before /e2e/run.sh).

# Seconds the VMM may run before it is killed (E2E-L1: vmm exit=124 then).
: "${VMM_TIMEOUT:=240}"

# vmm STEP ARGS...: run cloud-hypervisor ARGS under a timeout and print
#   E2E-L1: vmm start step=STEP args=ARGS
#   E2E-L1: vmm exit=N step=STEP seconds=S
# The VMM's own stdout/stderr (and the L2 serial console) go to the console.
vmm() {
  step="$1"; shift
  echo "E2E-L1: vmm start step=$step args=$*"
  t0=$(cut -d' ' -f1 /proc/uptime)
  timeout "$VMM_TIMEOUT" /bin/cloud-hypervisor "$@"
  rc=$?
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
  /bin/cloud-hypervisor "$@" >"$out" 2>&1 &
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
  cat "$out"
  echo "E2E-L1: vmm exit=$rc step=$step seconds=$waited"
  return $rc
}
