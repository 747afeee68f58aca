//! What a PCI function plugged into a [`crate::PciSegment`] implements.

use std::sync::Arc;

use devices::mapping::Mapping;

use crate::config::Bar;

/// A PCI function as its segment sees it.
///
/// `reg` is the offset inside the function's 4 KiB configuration space;
/// the segment only passes naturally aligned 1-, 2- and 4-byte accesses
/// inside it ([`crate::config::valid_access`]). BAR accesses that trap
/// (the segment serves its mmio32 / mmio64 windows) arrive at
/// [`PciDevice::bar_read`] / [`PciDevice::bar_write`] with the offset
/// inside the BAR the guest programmed.
pub trait PciDevice: Send {
    /// Read `data.len()` bytes of configuration space at `reg`.
    fn read_config(&mut self, reg: u16, data: &mut [u8]);

    /// Write `data` to configuration space at `reg`.
    fn write_config(&mut self, reg: u16, data: &[u8]);

    /// The BARs the function implements, by index, so the VMM can allocate
    /// them in the segment's mmio32 / mmio64 windows.
    fn bars(&self) -> Vec<(u8, Bar)> {
        Vec::new()
    }

    /// Program BAR `index` with the address the VMM allocated for it.
    fn set_bar_address(&mut self, _index: u8, _addr: u64) {}

    /// The BARs decoding now: (index, guest address, size), empty while
    /// Memory Space is disabled.
    fn decoded_bars(&self) -> Vec<(u8, u64, u64)> {
        Vec::new()
    }

    /// A trapped read of BAR `index` at `offset`.
    fn bar_read(&mut self, _index: u8, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    /// A trapped write of BAR `index` at `offset`.
    fn bar_write(&mut self, _index: u8, _offset: u64, _data: &[u8]) {}

    /// Give back whatever the function holds on the host (VM teardown).
    fn release(&mut self) {}
}

/// A guest memory slot installed by a [`GuestMapper`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotId(u32);

impl SlotId {
    /// The mapper's slot number `n` (only a mapper makes these).
    pub fn new(n: u32) -> Self {
        SlotId(n)
    }

    /// The slot number.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Why a memory slot could not be installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// Every memory slot the VM may have is in use.
    #[error("no free memory slot for {len:#x} bytes at {gpa:#x} ({used} in use)")]
    NoFreeSlot {
        /// Guest address asked for.
        gpa: u64,
        /// Length.
        len: u64,
        /// Slots in use.
        used: usize,
    },
    /// The hypervisor refused the slot (EEXIST: it overlaps another; EINVAL:
    /// address or length not host-page aligned).
    #[error("memory slot {slot} at {gpa:#x} ({len:#x} bytes) refused")]
    Install {
        /// Slot number.
        slot: u32,
        /// Guest address.
        gpa: u64,
        /// Length.
        len: u64,
        /// The kernel's errno.
        #[source]
        source: std::io::Error,
    },
    /// The hypervisor would not delete the slot; it and its mapping stay.
    #[error("memory slot {slot} at {gpa:#x} could not be removed")]
    Remove {
        /// Slot number.
        slot: u32,
        /// Guest address.
        gpa: u64,
        /// The kernel's errno.
        #[source]
        source: std::io::Error,
    },
    /// The slot is not one of this mapper's.
    #[error("memory slot {0} is not installed")]
    Unknown(u32),
}

/// The VM's memory slots over host memory (KVM on aarch64): CMD-QV page0
/// and passthrough BARs reach the guest this way, with no VM exit per
/// access.
///
/// A slot holds a share of its [`Mapping`] for as long as it exists, so the
/// memory can only be unmapped after the guest lost access to it: the order
/// is kept by ownership. There is no way to install a raw host address.
pub trait GuestMapper: Send + Sync {
    /// Install `mapping` at guest address `gpa` as a new slot.
    fn add_region(&self, gpa: u64, mapping: Arc<Mapping>) -> Result<SlotId, MapError>;
    /// Remove `slot` and hand its mapping back. When the removal fails the
    /// slot keeps the mapping (the guest may still reach it).
    fn remove_region(&self, slot: SlotId) -> Result<Arc<Mapping>, MapError>;
}
