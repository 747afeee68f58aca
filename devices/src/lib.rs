//! Device models for the cloud-hypervisor aarch64 VMM.
//!
//! Every model here is a pure state machine: it is driven by MMIO accesses
//! (through [`vm_device::MutDeviceMmio`], with offsets relative to the
//! device's own window), reads and writes guest memory through
//! [`vm_memory`], raises interrupts through [`irq::InterruptSink`], and talks
//! to the host only through the backend traits ([`smmuv3::VsmmuBackend`],
//! [`cmdqv::CmdqvBackend`]). The [`emulated`] backend is a software model of
//! the kernel's iommufd contract for CI, fuzzing and development machines.

pub mod backend;
pub mod cmdqv;
pub mod emulated;
pub mod guest_error;
pub mod guest_log;
pub mod irq;
pub mod legacy;
pub mod mapping;
pub mod regs;
pub mod replay;
pub mod smmuv3;

/// The guest memory type every model reads queues and tables from.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Lock `mutex` even if a thread panicked while holding it. Device state is
/// updated register by register, so it stays consistent after a panic
/// elsewhere; a VMM that already lost one thread should not lose the next
/// one to the poison too.
pub fn lock_unpoisoned<T: ?Sized>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a thread this crate spawns runs first, before it reads guest
/// memory: the VMM installs the thread's seccomp filter there. Given the
/// thread's name; an error stops the thread before it starts its work.
pub type ThreadStartHook = fn(&'static str) -> std::io::Result<()>;

static THREAD_START: std::sync::OnceLock<ThreadStartHook> = std::sync::OnceLock::new();

/// Set the hook every thread of this crate calls first (once per process;
/// a second call is ignored). Without one, threads start unfiltered.
pub fn set_thread_start_hook(hook: ThreadStartHook) {
    let _ = THREAD_START.set(hook);
}

/// Run the thread-start hook for the thread `name`.
pub(crate) fn thread_started(name: &'static str) -> std::io::Result<()> {
    THREAD_START.get().map_or(Ok(()), |hook| hook(name))
}
