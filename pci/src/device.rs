//! What a PCI function plugged into a [`crate::PciSegment`] implements.

use crate::config::Bar;

/// A PCI function as its segment's ECAM sees it.
///
/// `reg` is the offset inside the function's 4 KiB configuration space;
/// the segment only passes naturally aligned 1-, 2- and 4-byte accesses
/// inside it ([`crate::config::valid_access`]). BAR MMIO (the windows the
/// BARs decode) is not routed through this trait: the VMM puts each
/// allocated BAR window on its MMIO bus itself.
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
}
