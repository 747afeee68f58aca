//! seccomp-bpf filters, one per thread kind (`--seccomp true|false|log`).
//!
//! The VMM parses guest MMIO and untrusted HTTP while it holds KVM, VFIO
//! and iommufd fds; each thread gets the allow-list of what its job needs
//! (see [`rules`]), installed by the thread itself before it touches
//! guest-controlled input:
//!
//! | kind | installed | may |
//! |------|-----------|-----|
//! | `vmm` | after start-up, before the event loop | rebuild a VM (open devices and files, mmap, every KVM/VFIO/iommufd/vhost ioctl, spawn threads, make the disks' io_uring rings) |
//! | `vcpu` | first thing in each vCPU thread | KVM_RUN and the MMIO handlers' calls (vhost-vsock's on a vsock's DRIVER_OK and reset); no open, no thread, no PROT_EXEC |
//! | `api` | first thing in the HTTP thread | epoll, accept, read/write its sockets; no open |
//! | `vcmdq-engine` | first thing in the emulated backend's engine thread | MSI/line injection, eventfd writes |
//! | `console-in` | first thing in the stdin reader | read stdin |
//! | `virtio-worker` | first thing in each virtio queue worker | epoll, eventfds, pread/pwrite/fdatasync/fallocate on its image, io_uring_enter on its disk queue's ring (made by the VMM thread), BLKDISCARD/BLKZEROOUT, console input and output |
//! | `vsock-proxy` | first thing in a virtio-vsock's proxy thread | epoll, accept on its Unix socket, AF_VSOCK sockets connected to the guest, read/write/shutdown; no open |
//!
//! Filters are compiled once, at start ([`init`]), for the host's
//! architecture; seccompiler resolves the syscall names per architecture,
//! and the tests compile every list for x86_64 and aarch64.
//!
//! A refused syscall: with `true` (the default, as cloud-hypervisor) the
//! filter traps it and the SIGSYS handler here prints which thread made
//! which syscall, then the process dies of SIGSYS, as with
//! `SECCOMP_RET_KILL_PROCESS` but with a line that says what to add (a
//! kill alone leaves nothing but an audit record, which a CI guest kernel
//! without CONFIG_AUDIT never prints). With `log` the kernel logs it
//! (audit type 1326, when the kernel has CONFIG_AUDIT) and lets it run.

mod rules;

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::sync::OnceLock;

use seccompiler::{BpfProgram, TargetArch};

/// What `--seccomp` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeccompMode {
    /// `true`: a refused syscall kills the VMM (after one line on stderr).
    #[default]
    Enforce,
    /// `log`: a refused syscall is logged by the kernel and runs.
    Log,
    /// `false`: no filter.
    Off,
}

/// `--seccomp` syntax.
pub const SECCOMP_SYNTAX: &str = "Filter the system calls of every VMM thread: \
    true (a refused syscall kills the VMM, naming the thread and the syscall), \
    log (refused syscalls are logged by the kernel and allowed) or false (no filter)";

impl SeccompMode {
    /// Parse `true`, `false` or `log`.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "true" => Ok(SeccompMode::Enforce),
            "log" => Ok(SeccompMode::Log),
            "false" => Ok(SeccompMode::Off),
            other => Err(format!("--seccomp {other}: expected true, false or log")),
        }
    }
}

/// The kinds of thread the VMM runs, each with its own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// The VMM thread: event loop, API requests, VM (re)builds.
    Vmm,
    /// A vCPU: KVM_RUN and MMIO dispatch.
    Vcpu,
    /// The HTTP API server.
    Api,
    /// The emulated CMD-QV backend's VCMDQ engine (mapped page0 mode).
    VcmdqEngine,
    /// The console's stdin reader.
    ConsoleIn,
    /// A virtio device's queue worker (`virtio_devices::worker`).
    VirtioWorker,
    /// A virtio-vsock's hybrid socket proxy (`virtio_devices::vsock`).
    VsockProxy,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 7] = [
        ThreadKind::Vmm,
        ThreadKind::Vcpu,
        ThreadKind::Api,
        ThreadKind::VcmdqEngine,
        ThreadKind::ConsoleIn,
        ThreadKind::VirtioWorker,
        ThreadKind::VsockProxy,
    ];

    /// The kind's name, in messages and in the compiled filter map.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vmm => "vmm",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Api => "api",
            ThreadKind::VcmdqEngine => "vcmdq-engine",
            ThreadKind::ConsoleIn => "console-in",
            ThreadKind::VirtioWorker => virtio_devices::worker::WORKER_KIND,
            ThreadKind::VsockProxy => virtio_devices::vsock::PROXY_KIND,
        }
    }
}

/// Why filters could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The host kernel cannot filter (no CONFIG_SECCOMP_FILTER) or lacks
    /// the action the mode needs.
    #[error(
        "--seccomp {mode}: the host kernel cannot filter system calls ({err}); it needs \
         CONFIG_SECCOMP_FILTER, or run with --seccomp false"
    )]
    Unsupported { mode: &'static str, err: io::Error },
    /// A list did not compile (a syscall name unknown on this architecture).
    #[error("cannot compile the seccomp filter of the {kind} thread: {err}")]
    Compile {
        kind: &'static str,
        err: seccompiler::Error,
    },
    /// The kernel refused the filter.
    #[error("cannot install the seccomp filter of the {kind} thread: {err}")]
    Apply {
        kind: &'static str,
        err: seccompiler::Error,
    },
    /// The SIGSYS handler could not be installed.
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(io::Error),
}

/// The filters of this process, compiled at start.
struct Filters {
    mode: SeccompMode,
    programs: HashMap<&'static str, BpfProgram>,
}

static FILTERS: OnceLock<Filters> = OnceLock::new();

thread_local! {
    /// The kind of this thread's filter, for the SIGSYS handler's line.
    static CURRENT: Cell<&'static str> = const { Cell::new("") };
}

/// Compile every filter for `mode` (none for `false`), check the kernel
/// can apply them, install the SIGSYS handler (`true`) and the hook the
/// devices crate's threads call. Call once, before any thread starts.
pub fn init(mode: SeccompMode) -> Result<(), SeccompError> {
    let programs = match mode {
        SeccompMode::Off => HashMap::new(),
        SeccompMode::Enforce | SeccompMode::Log => {
            check_kernel(mode)?;
            let programs = compile(mode, host_arch())?;
            if mode == SeccompMode::Enforce {
                vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, sigsys_handler)
                    .map_err(|e| SeccompError::Handler(io::Error::from_raw_os_error(e.errno())))?;
            }
            programs
        }
    };
    let _ = FILTERS.set(Filters { mode, programs });
    devices::set_thread_start_hook(devices_thread_start);
    virtio_devices::set_thread_start_hook(devices_thread_start);
    Ok(())
}

/// Install the filter of `kind` on the calling thread. Nothing happens
/// with `--seccomp false` or before [`init`] (unit tests).
pub fn apply(kind: ThreadKind) -> Result<(), SeccompError> {
    let Some(filters) = FILTERS.get() else {
        return Ok(());
    };
    let Some(program) = filters.programs.get(kind.name()) else {
        return Ok(());
    };
    seccompiler::apply_filter(program).map_err(|err| SeccompError::Apply {
        kind: kind.name(),
        err,
    })?;
    CURRENT.with(|c| c.set(kind.name()));
    log::debug!(target: "seccomp", "{} thread filtered ({:?})", kind.name(), filters.mode);
    Ok(())
}

/// The devices and virtio-devices crates' hook: their threads are named
/// by kind.
fn devices_thread_start(name: &'static str) -> io::Result<()> {
    let kind = match name {
        "vcmdq-engine" => ThreadKind::VcmdqEngine,
        virtio_devices::worker::WORKER_KIND => ThreadKind::VirtioWorker,
        virtio_devices::vsock::PROXY_KIND => ThreadKind::VsockProxy,
        other => {
            return Err(io::Error::other(format!(
                "no seccomp filter for a {other} thread"
            )));
        }
    };
    apply(kind).map_err(io::Error::other)
}

fn host_arch() -> TargetArch {
    if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        TargetArch::x86_64
    }
}

/// `seccomp(SECCOMP_GET_ACTION_AVAIL)` for the mode's mismatch action:
/// fails (ENOSYS, EINVAL) on a kernel without CONFIG_SECCOMP_FILTER,
/// EOPNOTSUPP on one without the action.
fn check_kernel(mode: SeccompMode) -> Result<(), SeccompError> {
    const SECCOMP_GET_ACTION_AVAIL: libc::c_ulong = 2;
    const SECCOMP_RET_TRAP: u32 = 0x0003_0000;
    const SECCOMP_RET_LOG: u32 = 0x7ffc_0000;
    let (name, action) = match mode {
        SeccompMode::Log => ("log", SECCOMP_RET_LOG),
        _ => ("true", SECCOMP_RET_TRAP),
    };
    // SAFETY: the kernel reads one u32 from `&action`, which lives across
    // the call; nothing else is touched.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    if rc != 0 {
        return Err(SeccompError::Unsupported {
            mode: name,
            err: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Every kind's filter for `arch`: refused syscalls trap (`Enforce`) or
/// are logged (`Log`).
fn compile(
    mode: SeccompMode,
    arch: TargetArch,
) -> Result<HashMap<&'static str, BpfProgram>, SeccompError> {
    let mismatch = match mode {
        SeccompMode::Log => "log",
        _ => "trap",
    };
    let mut programs = HashMap::new();
    for kind in ThreadKind::ALL {
        let json = serde_json::json!({
            kind.name(): {
                "mismatch_action": mismatch,
                "match_action": "allow",
                "filter": rules::to_json(&rules::allowed(kind, arch)),
            }
        });
        let compile_err = |err| SeccompError::Compile {
            kind: kind.name(),
            err,
        };
        let bytes = json.to_string().into_bytes();
        let mut map =
            seccompiler::compile_from_json(bytes.as_slice(), arch).map_err(compile_err)?;
        if let Some(program) = map.remove(kind.name()) {
            programs.insert(kind.name(), program);
        }
    }
    Ok(programs)
}

/// SIGSYS from a trapping filter: name the thread and the syscall on
/// stderr, then die of SIGSYS.
extern "C" fn sigsys_handler(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // `si_syscall` of the `_sigsys` member: after si_signo, si_errno,
    // si_code (3 x i32, padded to 16 bytes) and `_call_addr` (a pointer),
    // so at byte 24 on both 64-bit targets (asm-generic/siginfo.h).
    // SAFETY: the kernel passes a full siginfo_t (128 bytes) to an
    // SA_SIGINFO handler; byte 24 is inside it and 4-byte aligned.
    let syscall = unsafe { info.cast::<u8>().add(24).cast::<i32>().read() };
    let kind = CURRENT.with(Cell::get);
    // A thread with no filter of its own runs under the one it inherited
    // (the VMM thread's, which allows prctl): name it by its comm.
    let mut comm = [0u8; 16];
    let (name, inherited): (&[u8], &[u8]) = if kind.is_empty() {
        // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included.
        unsafe { libc::prctl(libc::PR_GET_NAME, comm.as_mut_ptr()) };
        let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        (&comm[..end], b" (under the filter it inherited)")
    } else {
        (kind.as_bytes(), b"")
    };
    let mut line = [0u8; 224];
    let mut len = 0;
    for part in [
        "cloud-hypervisor: seccomp: the ".as_bytes(),
        name,
        b" thread",
        inherited,
        b" made system call ",
        decimal(syscall, &mut [0u8; 12]),
        b", which its filter refuses; the VMM stops (--seccomp log runs on and lets the kernel log it)\n",
    ] {
        let n = part.len().min(line.len() - len);
        line[len..len + n].copy_from_slice(&part[..n]);
        len += n;
    }
    // SAFETY: write(2) of a stack buffer to stderr; async-signal-safe.
    unsafe { libc::write(2, line.as_ptr().cast(), len) };
    // SIGSYS is blocked while this handler runs; a second trapped syscall
    // makes the kernel reset SIGSYS to its default action and deliver it
    // (force_sig_seccomp): the process dies of SIGSYS. getppid is in no
    // list, so it traps in every filtered thread.
    // SAFETY: getppid takes no argument and changes nothing.
    unsafe { libc::getppid() };
    // Not reached while the filter holds; if it ever lets getppid through:
    // SAFETY: _exit is async-signal-safe and ends the process.
    unsafe { libc::_exit(128 + libc::SIGSYS) };
}

/// `value` in decimal, into `buf`.
fn decimal(value: i32, buf: &mut [u8; 12]) -> &[u8] {
    let mut n = value.unsigned_abs();
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if value < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}

#[cfg(test)]
mod tests;
