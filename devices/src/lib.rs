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
pub mod irq;
pub mod legacy;
pub mod regs;
pub mod replay;
pub mod smmuv3;

/// The guest memory type every model reads queues and tables from.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;
