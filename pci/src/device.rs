//! What a PCI function plugged into a [`crate::PciSegment`] implements.

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

/// Installs and removes guest memory slots over host memory (KVM on
/// aarch64): CMD-QV page0 and passthrough BARs reach the guest this way,
/// with no VM exit per access.
pub trait GuestMapper: Send + Sync {
    /// Map `len` bytes of host memory at `host_addr` at guest address `gpa`.
    /// The caller keeps the host memory mapped until [`GuestMapper::unmap`]
    /// of `gpa` returns.
    fn map(&self, gpa: u64, host_addr: u64, len: u64) -> Result<(), String>;
    /// Remove the mapping at `gpa`.
    fn unmap(&self, gpa: u64) -> Result<(), String>;
}
