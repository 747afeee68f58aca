# shellcheck shell=bash disable=SC2034 # sourced by scripts/e2e/run.sh
# kata: what Kata's clh driver does to run a pod's VM, from L1. Our VMM
# starts with only --api-socket; vm.create gets the body Kata's generated
# client serialises for CreateVM (its constructors' defaults and clh.go's
# fields: memory.shared, rng, vsock with cid 3 and the sandbox's hybrid
# vsock socket; serial Tty here so the L2 console reaches the log), then
# vm.boot. The L2 guest runs an agent stand-in listening on AF_VSOCK port
# 1024 (tools/vsock-kata.c); L1 talks to it as Kata's runtime does: connect
# to the hybrid socket, "CONNECT 1024\n", "OK <port>\n", then 1 MiB each
# way, each side checking the other's pattern (FNV-1a sums printed on both
# ends). Also: a bad line and a port nobody listens on get an error line;
# the socket exists from boot to the VMM's exit only. Needs vhost-vsock in
# L1 and virtio-vsock in L2: the 7.2 build has both (6.12 has no vsock).
CASE_DESC="Kata's CreateVM body with vsock through the API; L1 reaches the L2 agent stand-in over the hybrid vsock socket (CONNECT/OK, 1 MiB each way, checksummed)"
CASE_DEFAULT=1
CASE_TIMEOUT=420
CASE_KERNELS=7.2

# The agent stand-in and the runtime's client, one static aarch64 tool.
case_prepare() {
  aarch64-linux-gnu-gcc -static -O2 -Wall -Wextra -o "$1/vsock-kata" "$E2E_DIR/tools/vsock-kata.c" || return 1
  L1_EXTRA+=("$1/vsock-kata:/bin/vsock-kata")
  L2_EXTRA+=("$1/vsock-kata:/bin/vsock-kata")
}

case_l1_script() {
  cat <<'EOS'
log=/tmp/vmm-kata.log
sock=/tmp/ch-kata.sock
sandbox=/tmp/vc/vm/sandbox
vs=$sandbox/clh.sock
: > $log
note() { echo "$*" >> $log; }
remote() { /bin/ch-remote --api-socket $sock "$@" 2>&1; }
socket_state() { if [ -S $vs ]; then echo present; else echo absent; fi; }
# Kata creates the sandbox directory before it starts the VMM.
mkdir -p $sandbox
echo "E2E-L1: vhost-vsock $(ls -l /dev/vhost-vsock 2>&1)"
cat > /tmp/kata-vm.json <<'JSON'
{"payload": {"kernel": "/l2/Image", "initramfs": "/l2/initrd",
             "cmdline": "console=ttyAMA0 panic=-1 e2e.kata=1"},
 "cpus": {"boot_vcpus": 1, "max_vcpus": 8, "kvm_hyperv": false, "nested": true,
          "topology": {"threads_per_core": 1, "cores_per_die": 8, "dies_per_package": 1, "packages": 1}},
 "memory": {"size": 536870912, "hotplug_size": 8589934592, "mergeable": false,
            "hotplug_method": "Acpi", "shared": true, "hugepages": false, "prefault": false,
            "thp": true},
 "rng": {"src": "/dev/urandom", "iommu": false},
 "serial": {"mode": "Tty", "iommu": false},
 "console": {"mode": "Off", "iommu": false},
 "iommu": false, "watchdog": false, "pvpanic": false, "landlock_enable": false,
 "vsock": {"cid": 3, "socket": "/tmp/vc/vm/sandbox/clh.sock", "iommu": false}}
JSON
echo "E2E-L1: vmm start step=kata args=--api-socket path=$sock"
events_start kata $log
t0=$(cut -d' ' -f1 /proc/uptime)
/bin/cloud-hypervisor -v --seccomp "$VMM_SECCOMP" --api-socket path=$sock --event-monitor "$EVENTS_ARG" </dev/null >> $log 2>&1 &
vmm_pid=$!
n=0
while [ $n -lt 10 ] && [ ! -S $sock ]; do sleep 1; n=$((n + 1)); done
out=$(remote create /tmp/kata-vm.json); note "E2E-KATA: create exit=$? $out"
note "E2E-KATA: info created $(remote info)"
note "E2E-KATA: socket before boot $(socket_state)"
out=$(remote boot); note "E2E-KATA: boot exit=$? $out"
note "E2E-KATA: socket after boot $(socket_state)"
note "$(/bin/vsock-kata line $vs 'HELLO 1024' 2>&1)"
# Kata's agent dial: retried until the agent listens (the guest boots:
# about a minute under nested TCG on a loaded machine).
n=0
while [ $n -lt 120 ]; do
  out=$(/bin/vsock-kata connect $vs 1024 1048576 2>&1)
  rc=$?
  [ $rc = 0 ] && break
  case "$out" in *"handshake 'OK"*) break ;; esac
  n=$((n + 1)); sleep 2
done
note "E2E-KATA: agent dial tries=$((n + 1)) rc=$rc"
note "$out"
# The agent stand-in is gone (it served one connection): nobody listens.
note "E2E-KATA: no-listener $(/bin/vsock-kata connect $vs 5555 16 2>&1 | tr '\n' ' ')"
note "E2E-KATA: info running $(remote info)"
# Kata stops the sandbox's VM with vmm.shutdown (the guest is still up).
out=$(remote shutdown-vmm); note "E2E-KATA: shutdown-vmm exit=$? $out"
vmm_reap $vmm_pid
note "E2E-KATA: socket after exit $(socket_state)"
cat $log
vmm_exit_line kata
EOS
}

case_l2_script() {
  cat <<'EOS'
case "$(cat /proc/cmdline)" in *e2e.kata=1*) ;; *) exit 0 ;; esac
echo "E2E-L2: virtio-vsock driver $(ls /sys/bus/virtio/drivers/vmw_vsock_virtio_transport 2>/dev/null | grep -c virtio)"
/bin/vsock-kata listen 1024
# Up while L1 checks a port nobody listens on and shuts the VMM down
# (bounded: the guest powers off by itself if nobody does).
sleep 60
EOS
}

# kata_fnv SIDE VERB: the FNV-1a sum that SIDE printed for what it VERB
# (sent or received).
kata_fnv() {
  section kata | grep -E "E2E-VSOCK: $1 $2 " | grep -o 'fnv=[0-9a-f]*' | head -1 | cut -d= -f2 || true
}

case_assert() {
  expect_re "E2E-L1: vhost-vsock c" "L1 has no /dev/vhost-vsock (CONFIG_VHOST_VSOCK)"
  step_expect_re kata "E2E-KATA: create exit=0" "vm.create refused Kata's CreateVM body"
  step_expect_re kata 'E2E-KATA: info created .*"vsock":\{[^}]*"cid":3' "vm.info does not show the vsock Kata asked for"
  step_expect_re kata "E2E-KATA: socket before boot absent" "the hybrid socket existed before vm.boot"
  step_expect_re kata "E2E-KATA: boot exit=0" "vm.boot failed"
  step_expect_re kata "E2E-KATA: socket after boot present" "the hybrid socket was not there once vm.boot returned"
  step_expect_re kata "E2E-L2: virtio-vsock driver 1" "the L2's virtio-vsock driver did not bind"
  step_expect_re kata "E2E-VSOCK: line 'HELLO 1024' answered 'ERROR " "a bad line was not answered with an error line"
  step_expect_re kata "E2E-VSOCK: guest accepted cid 2 port [0-9]+ on cid 3 port 1024" "the agent stand-in was not reached from the host (CID 2) at its CID 3"
  step_expect_re kata "E2E-VSOCK: host handshake 'OK [0-9]+'" "CONNECT 1024 was not answered OK <port>"
  step_expect_re kata "E2E-VSOCK: guest received 1048576 bytes fnv=[0-9a-f]+ pattern1 ok" "the guest did not receive the host's 1 MiB intact"
  step_expect_re kata "E2E-VSOCK: host received 1048576 bytes fnv=[0-9a-f]+ pattern2 ok" "the host did not receive the guest's 1 MiB intact"
  local hs gr gs hr
  hs="$(kata_fnv host sent)"; gr="$(kata_fnv guest received)"
  gs="$(kata_fnv guest sent)"; hr="$(kata_fnv host received)"
  echo "kata: host->guest fnv $hs / $gr, guest->host fnv $gs / $hr" >&2
  [ -n "$hs" ] && [ "$hs" = "$gr" ] || fail "the sums of the host's bytes differ: sent $hs, the guest received $gr"
  [ -n "$gs" ] && [ "$gs" = "$hr" ] || fail "the sums of the guest's bytes differ: sent $gs, the host received $hr"
  step_expect_re kata "E2E-KATA: agent dial tries=[0-9]+ rc=0" "the agent dial did not succeed"
  step_expect_re kata "E2E-KATA: no-listener .*handshake 'ERROR guest port 5555: " "a port nobody listens on was not refused naming it"
  step_expect_re kata 'E2E-KATA: info running .*"state":"Running"' "vm.info did not say Running after boot"
  step_expect_re kata "E2E-KATA: shutdown-vmm exit=0" "ch-remote shutdown-vmm failed"
  step_expect_re kata "E2E-KATA: socket after exit absent" "the hybrid socket was left behind"
  step_expect_re kata "E2E-L1: vmm exit=0 step=kata " "cloud-hypervisor did not exit 0"
  step_reject_re kata "panicked|RUST_BACKTRACE" "the VMM panicked"
  in_order kata "the VM did not boot and power off in order" \
    "@vm:booting boot=1" "@vm:booted boot=1" "E2E-VSOCK: host handshake 'OK" "@vm:shutdown reason=api" "@vmm:shutdown"
}
