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
