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
pub mod irq;
pub mod legacy;
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
