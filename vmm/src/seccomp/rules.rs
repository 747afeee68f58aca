//! The allow-lists, one per thread kind, as data: syscall names (resolved
//! per architecture by seccompiler, so one list serves x86_64 and aarch64)
//! and, for `ioctl`, `mmap` and `mprotect`, the arguments that are allowed.
//!
//! Threads created after the VMM thread installed its filter (vCPUs, the
//! VCMDQ engine and the console reader of a VM booted through the API or
//! rebuilt on reset) inherit that filter and stack their own on it: the
//! kernel lets a syscall through only if both allow it. So every list but
//! the API thread's (started before the VMM thread filters itself) must be
//! a subset of the VMM thread's; a test holds that.

use std::collections::BTreeMap;

use seccompiler::TargetArch;

use super::ThreadKind;

/// `_IOC(dir, type, nr, size)` of asm-generic/ioctl.h, which both x86_64
/// and arm64 use.
const fn ioc(dir: u32, ty: u32, nr: u32, size: u32) -> u32 {
    (dir << 30) | (size << 16) | (ty << 8) | nr
}
const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;

/// The KVM ioctl type (`KVMIO`).
pub(super) const KVMIO: u8 = 0xAE;
/// The VFIO and iommufd ioctl type (`VFIO_TYPE` = `IOMMUFD_TYPE` = ';').
pub(super) const VFIO_IOMMUFD: u8 = b';';
/// The tty ioctl type ('T': TCGETS, TIOCGWINSZ, TIOCGPTN, FIONBIO...).
pub(super) const TTY: u8 = b'T';

// The KVM ioctls a vCPU thread issues: KVM_RUN and the register reads of
// its post-mortem, and what the MMIO handlers it runs may do (map a BAR or
// page0 into the guest, route an MSI, raise a line, inject an MSI).
pub(super) const KVM_RUN: u32 = ioc(IOC_NONE, KVMIO as u32, 0x80, 0);
pub(super) const KVM_GET_ONE_REG: u32 = ioc(IOC_WRITE, KVMIO as u32, 0xab, 16);
pub(super) const KVM_SET_ONE_REG: u32 = ioc(IOC_WRITE, KVMIO as u32, 0xac, 16);
pub(super) const KVM_SET_USER_MEMORY_REGION: u32 = ioc(IOC_WRITE, KVMIO as u32, 0x46, 32);
pub(super) const KVM_IRQ_LINE: u32 = ioc(IOC_WRITE, KVMIO as u32, 0x61, 8);
pub(super) const KVM_SET_GSI_ROUTING: u32 = ioc(IOC_WRITE, KVMIO as u32, 0x6a, 8);
pub(super) const KVM_IRQFD: u32 = ioc(IOC_WRITE, KVMIO as u32, 0x76, 32);
pub(super) const KVM_SIGNAL_MSI: u32 = ioc(IOC_WRITE, KVMIO as u32, 0xa5, 32);
/// A virtio function's BAR placed or moved: its queues' notify ioeventfds.
pub(super) const KVM_IOEVENTFD: u32 = ioc(IOC_WRITE, KVMIO as u32, 0x79, 64);
/// `BLKDISCARD` = `_IO(0x12, 119)` and `BLKZEROOUT` = `_IO(0x12, 127)`:
/// virtio-blk DISCARD and WRITE_ZEROES on a block device.
pub(super) const BLKDISCARD: u32 = ioc(IOC_NONE, 0x12, 119, 0);
pub(super) const BLKZEROOUT: u32 = ioc(IOC_NONE, 0x12, 127, 0);
/// The vhost ioctl type (`VHOST_VIRTIO`, 0xAF): every VHOST_* and
/// VHOST_VSOCK_* request of vhost-vsock.
pub(super) const VHOST: u8 = 0xAF;
/// seccomp(2)'s operation that installs a filter.
const SECCOMP_SET_MODE_FILTER: u64 = 1;
/// `socket(2)`'s domains the VMM thread may create: Unix sockets (the
/// serial socket, the hybrid vsock socket), IPv4 datagram ones only to
/// configure a tap's host side (SIOCSIFADDR and SIOCSIFNETMASK go through
/// an AF_INET socket), and AF_VSOCK for its vsock proxy thread.
pub(super) const SOCKET_DOMAINS: &[u64] = &[
    libc::AF_UNIX as u64,
    libc::AF_INET as u64,
    libc::AF_VSOCK as u64,
];
/// The vsock proxy's only domain.
pub(super) const VSOCK_DOMAIN: &[u64] = &[libc::AF_VSOCK as u64];
/// The interface ioctls of a tap's host side (`net/tap.rs` of
/// virtio-devices): flags read and set (IFF_UP), address and netmask.
pub(super) const SIOCGIFFLAGS: u32 = libc::SIOCGIFFLAGS as u32;
pub(super) const SIOCSIFFLAGS: u32 = libc::SIOCSIFFLAGS as u32;
pub(super) const SIOCSIFADDR: u32 = libc::SIOCSIFADDR as u32;
pub(super) const SIOCSIFNETMASK: u32 = libc::SIOCSIFNETMASK as u32;
/// `TCGETS`: env_logger asks whether stderr is a terminal on every line it
/// writes (found by the e2e boot-cmdqv case under `true`, stderr a tty).
pub(super) const TCGETS: u32 = 0x5401;
/// A virtio-net's DRIVER_OK and reset (vCPU): the tap's offloads from the
/// features the driver accepted.
pub(super) const TUNSETOFFLOAD: u32 = libc::TUNSETOFFLOAD as u32;
/// A virtio-net's queue pairs enabled or disabled: its tap queues attached
/// or detached, by the control queue's worker (VQ_PAIRS_SET) and on
/// DRIVER_OK (vCPU: pair 0 alone).
pub(super) const TUNSETQUEUE: u32 = libc::TUNSETQUEUE as u32;
/// `FIONBIO`: std's `set_nonblocking` on a socket.
pub(super) const FIONBIO: u32 = 0x5421;

/// Which calls of one syscall are allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Args {
    /// Any arguments.
    Any,
    /// `prot` (argument 2 of mmap and mprotect) without `PROT_EXEC`: no
    /// thread of this VMM ever makes memory executable.
    NoExec,
    /// `ioctl` with one of these requests (argument 1).
    Ioctls(Vec<Ioctl>),
    /// Argument 0 equal to one of these values.
    FirstArg(&'static [u64]),
}

/// An allowed ioctl request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ioctl {
    /// Exactly this request number.
    Exact(u32),
    /// Any request of this type (bits 8..16): the whole family of a device
    /// the VMM opened itself.
    Family(u8),
}

/// The syscall no filter allows: the SIGSYS handler repeats it to die of
/// SIGSYS, and the tests make it as the forbidden call. Harmless should a
/// filter ever let it through.
#[cfg(test)]
pub(super) const NEVER_ALLOWED: &str = "getppid";

type List = BTreeMap<&'static str, Args>;

fn add(list: &mut List, names: &[&'static str]) {
    for name in names {
        list.insert(name, Args::Any);
    }
}

/// What every thread needs: memory (never executable), locks, time,
/// sleeping, yielding, its log lines (write to stderr), signal return (the
/// vCPU kick, the SIGSYS handler) and its own exit (glibc and std free the
/// stack and the alternate signal stack).
fn base() -> List {
    let mut list = List::new();
    add(
        &mut list,
        &[
            "brk",
            "clock_gettime",
            "clock_nanosleep",
            "close",
            "exit",
            "exit_group",
            "futex",
            "getpid",
            "getrandom",
            "gettid",
            "madvise",
            "mremap",
            "munmap",
            "nanosleep",
            "restart_syscall",
            "rt_sigprocmask",
            "rt_sigreturn",
            "sched_yield",
            "sigaltstack",
            "write",
            "writev",
        ],
    );
    list.insert("mmap", Args::NoExec);
    list.insert("mprotect", Args::NoExec);
    list
}

fn ioctls(list: &mut List, allowed: &[Ioctl]) {
    list.insert("ioctl", Args::Ioctls(allowed.to_vec()));
}

/// A vCPU: KVM_RUN, then the MMIO handlers of every device: VFIO config
/// space and BAR traps (pread/pwrite on the device fd), MSI-X enable
/// (eventfds, VFIO_DEVICE_SET_IRQS, irqfds, routes), vSMMU commands
/// (iommufd ioctls), BAR and page0 slots, the console's output. It opens
/// no file, creates no thread, never makes memory executable.
fn vcpu() -> List {
    let mut list = base();
    add(
        &mut list,
        &["dup", "eventfd2", "fcntl", "pread64", "pwrite64", "read"],
    );
    ioctls(
        &mut list,
        &[
            Ioctl::Exact(KVM_RUN),
            Ioctl::Exact(KVM_GET_ONE_REG),
            Ioctl::Exact(KVM_SET_ONE_REG),
            Ioctl::Exact(KVM_SET_USER_MEMORY_REGION),
            Ioctl::Exact(KVM_IRQ_LINE),
            Ioctl::Exact(KVM_SET_GSI_ROUTING),
            Ioctl::Exact(KVM_IRQFD),
            Ioctl::Exact(KVM_SIGNAL_MSI),
            Ioctl::Exact(KVM_IOEVENTFD),
            Ioctl::Family(VFIO_IOMMUFD),
            // A virtio-vsock's DRIVER_OK and reset: vhost-vsock's rings,
            // memory table, features and SET_RUNNING.
            Ioctl::Family(VHOST),
            // A virtio-net's DRIVER_OK and reset.
            Ioctl::Exact(TUNSETOFFLOAD),
            Ioctl::Exact(TUNSETQUEUE),
            Ioctl::Exact(TCGETS),
        ],
    );
    list
}

/// The HTTP API: one epoll loop over its listener, connections and two
/// eventfds; it accepts, reads (recvmsg: a request may carry descriptors,
/// `vm.add-net`'s taps), writes and closes, and opens nothing.
fn api(arch: TargetArch) -> List {
    let mut list = base();
    add(
        &mut list,
        &[
            "accept4",
            "epoll_ctl",
            "epoll_pwait",
            "fcntl",
            "getsockopt",
            "read",
            "recvfrom",
            "recvmsg",
            "sendto",
            "setsockopt",
            "shutdown",
        ],
    );
    if arch == TargetArch::x86_64 {
        add(&mut list, &["epoll_wait"]);
    }
    ioctls(&mut list, &[Ioctl::Exact(FIONBIO), Ioctl::Exact(TCGETS)]);
    list
}

/// The emulated backend's VCMDQ engine: reads guest queues (plain memory),
/// completes CMD_SYNCs with an MSI or a line, wakes the VMM thread.
fn vcmdq_engine() -> List {
    let mut list = base();
    add(&mut list, &["read"]);
    ioctls(
        &mut list,
        &[
            Ioctl::Exact(KVM_SIGNAL_MSI),
            Ioctl::Exact(KVM_IRQ_LINE),
            Ioctl::Exact(TCGETS),
        ],
    );
    list
}

/// The console reader: stdin into the UART's FIFO.
fn console_in() -> List {
    let mut list = base();
    add(&mut list, &["read"]);
    ioctls(&mut list, &[Ioctl::Exact(TCGETS)]);
    list
}

/// A virtio queue worker: epoll on its eventfds (and the console's input
/// fd), reads them, signals its MSI-X vector's eventfd (write); a disk's
/// worker reads and writes its image at offsets, flushes it, punches or
/// zeroes ranges (fallocate on a file, BLKDISCARD / BLKZEROOUT on a block
/// device), or submits and reaps its io_uring (io_uring_enter only: the
/// VMM thread made, probed and restricted the ring, so no
/// io_uring_setup or io_uring_register here; the ring accepts READV,
/// WRITEV and FSYNC only, which the kernel runs outside this filter); a
/// console's writes its sink and reads its input; a NIC's reads and writes
/// its tap queue, and its control queue's attaches and detaches tap queues
/// (TUNSETQUEUE). It opens
/// nothing: the VMM thread opened the image, sink and input. `fcntl`:
/// std's debug builds check a descriptor with F_GETFD before closing it
/// (found by the seccomp test that runs a real worker).
fn virtio_worker(arch: TargetArch) -> List {
    let mut list = base();
    add(
        &mut list,
        &[
            "epoll_create1",
            "epoll_ctl",
            "epoll_pwait",
            "fallocate",
            "fcntl",
            "fdatasync",
            "io_uring_enter",
            "pread64",
            // A raw image without O_DIRECT: straight to and from the
            // guest's buffers (virtio_devices::block::vectored).
            "preadv",
            "pwrite64",
            "pwritev",
            "read",
        ],
    );
    if arch == TargetArch::x86_64 {
        add(&mut list, &["epoll_wait"]);
    }
    ioctls(
        &mut list,
        &[
            Ioctl::Exact(BLKDISCARD),
            Ioctl::Exact(BLKZEROOUT),
            Ioctl::Exact(TUNSETQUEUE),
            Ioctl::Exact(TCGETS),
        ],
    );
    list
}

/// A vsock proxy (`virtio_devices::vsock::proxy`): one epoll loop over
/// its Unix listener, its clients and their AF_VSOCK sockets to the
/// guest; it accepts, reads, writes, half-closes, and makes AF_VSOCK
/// sockets only, connected to the guest's CID (non-blocking connect,
/// SO_ERROR, the ports of both ends). It opens no file.
fn vsock_proxy(arch: TargetArch) -> List {
    let mut list = base();
    add(
        &mut list,
        &[
            "accept4",
            "connect",
            "epoll_create1",
            "epoll_ctl",
            "epoll_pwait",
            "fcntl",
            "getpeername",
            "getsockname",
            "getsockopt",
            "read",
            "recvfrom",
            "sendto",
            "shutdown",
        ],
    );
    list.insert("socket", Args::FirstArg(VSOCK_DOMAIN));
    if arch == TargetArch::x86_64 {
        add(&mut list, &["epoll_wait"]);
    }
    ioctls(&mut list, &[Ioctl::Exact(FIONBIO), Ioctl::Exact(TCGETS)]);
    list
}

/// The VMM thread, filtered once start-up is done. What it still does
/// after that, and so must keep: serve the event loop and the API; build a
/// whole VM again on `vm.boot` (API), `vm.reboot` or a guest reset: open
/// /dev/kvm, /dev/iommu, VFIO cdevs, sysfs and the kernel/initramfs/serial
/// files, mmap guest RAM (hugetlb too), BARs and the vIOMMU's page0, issue
/// every KVM, VFIO and iommufd ioctl of a VM's setup and teardown, bind
/// memory zones to host nodes (mbind), install
/// the vCPU kick handler, spawn and name the vCPU, engine and console
/// threads (a new thread runs its first syscalls under this filter), kick
/// vCPUs with a signal, remove the API socket on the way out. A thread it
/// spawns installs its own filter under this one: prctl(NO_NEW_PRIVS) and
/// seccomp(SECCOMP_SET_MODE_FILTER), nothing else of seccomp(). It listens
/// on a serial Unix socket defined by `vm.create` (`serial.mode: Socket`,
/// libvirt's `<serial type='unix'>`): socket(AF_UNIX only), bind, listen,
/// accept4. It builds a virtio-vsock (vhost-vsock's ioctls, the hybrid
/// socket's listener) and starts its proxy thread, whose first syscalls
/// run under this filter: so this list also has `connect` and AF_VSOCK,
/// which only that thread uses. No process started, nothing made
/// executable.
fn vmm(arch: TargetArch) -> List {
    let mut list = base();
    for kind in [
        ThreadKind::Vcpu,
        ThreadKind::VcmdqEngine,
        ThreadKind::ConsoleIn,
        ThreadKind::VirtioWorker,
        ThreadKind::VsockProxy,
    ] {
        for (name, args) in allowed(kind, arch) {
            if name != "ioctl" {
                list.insert(name, args);
            }
        }
    }
    add(
        &mut list,
        &[
            "clone",
            "clone3",
            "dup3",
            "epoll_create1",
            "epoll_ctl",
            "epoll_pwait",
            "fallocate",
            "fdatasync",
            "fstat",
            // A disk's image file system: whether io_uring would punt its
            // buffered writes (virtio_devices::block).
            "fstatfs",
            "fsync",
            "ftruncate",
            "getcwd",
            "getdents64",
            // A disk's rings: made, probed, restricted and enabled here
            // (virtio_devices::block), entered by its queue workers.
            "io_uring_register",
            "io_uring_setup",
            "lseek",
            // Memory zones bound to a host node (memory.rs).
            "mbind",
            "memfd_create",
            "newfstatat",
            "openat",
            "pipe2",
            // A disk's image: a one-byte RWF_NOWAIT read says whether
            // io_uring could serve it without io-wq (virtio_devices::block).
            "preadv2",
            "ppoll",
            "prctl",
            "readlinkat",
            "rseq",
            "rt_sigaction",
            "sched_getaffinity",
            // A pinned vCPU thread pins itself before its own filter
            // (affinity.rs).
            "sched_setaffinity",
            "set_robust_list",
            "statx",
            "tgkill",
            "unlinkat",
        ],
    );
    list.insert("seccomp", Args::FirstArg(&[SECCOMP_SET_MODE_FILTER]));
    // The serial socket's listener (serial_socket.rs); a tap's address.
    list.insert("socket", Args::FirstArg(SOCKET_DOMAINS));
    add(
        &mut list,
        &[
            "accept4", "bind", "listen", "recvfrom", "sendto", "shutdown",
        ],
    );
    if arch == TargetArch::x86_64 {
        add(
            &mut list,
            &[
                "access",
                "dup2",
                "epoll_wait",
                "lstat",
                "open",
                "poll",
                "readlink",
                "stat",
                "unlink",
            ],
        );
    }
    ioctls(
        &mut list,
        &[
            Ioctl::Family(KVMIO),
            Ioctl::Family(VFIO_IOMMUFD),
            // The TTY family holds the TUN ioctls too (TUNSETIFF,
            // TUNGETIFF, TUNSETVNETHDRSZ, TUNSETOFFLOAD, TUNSETQUEUE:
            // type 'T').
            Ioctl::Family(TTY),
            Ioctl::Exact(SIOCGIFFLAGS),
            Ioctl::Exact(SIOCSIFFLAGS),
            Ioctl::Exact(SIOCSIFADDR),
            Ioctl::Exact(SIOCSIFNETMASK),
            // Its virtio workers' (their filters stack on this one).
            Ioctl::Exact(BLKDISCARD),
            Ioctl::Exact(BLKZEROOUT),
            // A virtio-vsock built (VHOST_SET_OWNER, the guest CID) and
            // released.
            Ioctl::Family(VHOST),
        ],
    );
    list
}

/// The allow-list of `kind` on `arch`.
pub(super) fn allowed(kind: ThreadKind, arch: TargetArch) -> BTreeMap<&'static str, Args> {
    match kind {
        ThreadKind::Vmm => vmm(arch),
        ThreadKind::Vcpu => vcpu(),
        ThreadKind::Api => api(arch),
        ThreadKind::VcmdqEngine => vcmdq_engine(),
        ThreadKind::ConsoleIn => console_in(),
        ThreadKind::VirtioWorker => virtio_worker(arch),
        ThreadKind::VsockProxy => vsock_proxy(arch),
    }
}

/// The seccompiler JSON rules of `list`.
pub(super) fn to_json(list: &BTreeMap<&'static str, Args>) -> Vec<serde_json::Value> {
    use serde_json::json;
    let dword = |index: u8, op: serde_json::Value, val: u64| json!({ "index": index, "type": "dword", "op": op, "val": val });
    let mut rules = Vec::new();
    for (name, args) in list {
        match args {
            Args::Any => rules.push(json!({ "syscall": name })),
            Args::FirstArg(values) => {
                for value in *values {
                    rules.push(json!({
                        "syscall": name,
                        "args": [dword(0, json!("eq"), *value)],
                    }));
                }
            }
            Args::NoExec => rules.push(json!({
                "syscall": name,
                "args": [dword(2, json!({ "masked_eq": libc::PROT_EXEC }), 0)],
            })),
            Args::Ioctls(requests) => {
                for request in requests {
                    let condition = match *request {
                        Ioctl::Exact(nr) => dword(1, json!("eq"), u64::from(nr)),
                        Ioctl::Family(ty) => {
                            dword(1, json!({ "masked_eq": 0xff00 }), u64::from(ty) << 8)
                        }
                    };
                    rules.push(json!({ "syscall": name, "args": [condition] }));
                }
            }
        }
    }
    rules
}
