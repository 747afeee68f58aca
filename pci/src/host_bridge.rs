//! One PCIe segment: its ECAM window, the host bridge at 00:00.0 and the
//! functions plugged into it.
//!
//! ECAM (PCIe base spec 7.2.2, and Linux drivers/pci/ecam.c
//! `pci_ecam_map_bus()`): an offset into the window decodes as bus =
//! bits 27:20, device = 19:15, function = 14:12, register = 11:0. The
//! window covers buses `0..=last_bus` of the segment's layout.
//!
//! Implemented: 1-, 2- and 4-byte naturally aligned accesses (Linux's
//! generic ECAM accessors use 4-byte reads and 1/2/4-byte writes); an
//! 8-byte aligned access is split into two 4-byte ones (Linux never issues
//! one, but a guest may); any other access reads all-ones and is ignored.
//! A function that is not present reads all-ones for the whole access,
//! which is how Linux's scan learns "no device" (vendor 0xffff); writes to
//! it are dropped. 00:00.0 is a host bridge, 1b36:0008 class 060000 like
//! QEMU's "PCIe host bridge" (gpex), type 0 header.
//!
//! The segment also serves its mmio32 / mmio64 windows: a trapped access
//! goes to the function whose BAR decodes it now (Memory Space on, the
//! address the guest programmed), reads of nothing decode as all-ones like
//! a master abort. Functions map what they can into the guest as memory
//! slots, so only what must trap arrives here.
//!
//! Deliberately not implemented: bridges and secondary buses (every
//! endpoint is on bus 0; buses 1..=last_bus are empty) and legacy INTx
//! routing.

use std::collections::BTreeMap;

use arch::layout::{PciSegmentLayout, Range, RangeAllocator};
use thiserror::Error;
use vm_device::MutDeviceMmio;
use vm_device::bus::{MmioAddress, MmioAddressOffset};

use crate::config::{Bar, BarKind, ConfigSpace, DeviceIds, valid_access};
use crate::device::PciDevice;
use crate::{Bdf, DEVICES_PER_BUS, FUNCTIONS_PER_DEVICE};

/// Log target of the ECAM trace points.
const LOG_TARGET: &str = "pci-ecam";

/// Red Hat, Inc. (QEMU's PCI vendor ID).
pub const HOST_BRIDGE_VENDOR: u16 = 0x1b36;
/// QEMU "PCIe host bridge".
pub const HOST_BRIDGE_DEVICE: u16 = 0x0008;
/// Bridge device (06), host bridge (00), programming interface 00.
pub const HOST_BRIDGE_CLASS: u32 = 0x06_00_00;

/// ECAM offset fields.
const ECAM_BUS_SHIFT: u32 = 20;
const ECAM_DEVICE_SHIFT: u32 = 15;
const ECAM_FUNCTION_SHIFT: u32 = 12;
const ECAM_REG_MASK: u64 = 0xfff;

/// The host bridge function at 00:00.0.
#[derive(Clone, Debug)]
pub struct HostBridge {
    config: ConfigSpace,
}

impl Default for HostBridge {
    fn default() -> Self {
        HostBridge {
            config: ConfigSpace::type0(DeviceIds {
                vendor: HOST_BRIDGE_VENDOR,
                device: HOST_BRIDGE_DEVICE,
                class: HOST_BRIDGE_CLASS,
                revision: 0,
                subsystem_vendor: 0,
                subsystem: 0,
            }),
        }
    }
}

impl PciDevice for HostBridge {
    fn read_config(&mut self, reg: u16, data: &mut [u8]) {
        self.config.read(reg, data);
    }

    fn write_config(&mut self, reg: u16, data: &[u8]) {
        self.config.write(reg, data);
    }
}

/// Why a function cannot be plugged or its BARs placed.
#[derive(Debug, PartialEq, Eq, Error)]
pub enum PciError {
    /// Device or function number out of range, or a bus past the window.
    #[error("{bdf} is not addressable on segment {segment} (buses 0..={last_bus})")]
    BadBdf {
        /// The address.
        bdf: Bdf,
        /// The segment.
        segment: u16,
        /// Last bus of the segment's ECAM window.
        last_bus: u8,
    },
    /// Something is already plugged there.
    #[error("{bdf} on segment {segment} is already taken")]
    Taken {
        /// The address.
        bdf: Bdf,
        /// The segment.
        segment: u16,
    },
    /// A BAR does not fit its window.
    #[error("BAR {index} ({size:#x} bytes) of {bdf} does not fit the segment's {window} window")]
    BarSpaceExhausted {
        /// The function.
        bdf: Bdf,
        /// BAR index.
        index: u8,
        /// BAR size.
        size: u64,
        /// "mmio32" or "mmio64".
        window: &'static str,
    },
}

/// Where one BAR was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarAllocation {
    /// The function.
    pub bdf: Bdf,
    /// BAR index.
    pub index: u8,
    /// Its window in guest physical memory.
    pub range: Range,
}

/// One PCI segment: ECAM decoding and the functions on it.
pub struct PciSegment {
    layout: PciSegmentLayout,
    functions: BTreeMap<Bdf, Box<dyn PciDevice>>,
    /// 00:00.0 still holds the host bridge (a function placed there takes
    /// its place).
    host_bridge: bool,
}

impl PciSegment {
    /// The segment laid out as `layout`, with its host bridge at 00:00.0
    /// until a function is added there.
    pub fn new(layout: PciSegmentLayout) -> Self {
        let mut functions: BTreeMap<Bdf, Box<dyn PciDevice>> = BTreeMap::new();
        functions.insert(
            Bdf {
                bus: 0,
                device: 0,
                function: 0,
            },
            Box::new(HostBridge::default()),
        );
        PciSegment {
            layout,
            functions,
            host_bridge: true,
        }
    }

    /// The segment's windows.
    pub fn layout(&self) -> &PciSegmentLayout {
        &self.layout
    }

    /// Plug `device` in at `bdf`.
    pub fn add_device(&mut self, bdf: Bdf, device: Box<dyn PciDevice>) -> Result<(), PciError> {
        if bdf.device >= DEVICES_PER_BUS
            || bdf.function >= FUNCTIONS_PER_DEVICE
            || bdf.bus > self.layout.last_bus
        {
            return Err(PciError::BadBdf {
                bdf,
                segment: self.layout.id,
                last_bus: self.layout.last_bus,
            });
        }
        let device_zero = Bdf {
            bus: 0,
            device: 0,
            function: 0,
        };
        if bdf == device_zero && self.host_bridge {
            // The host bridge gives way: ACPI's root bridge needs no
            // function at 00:00.0, and a Grace GPU's driver needs devfn 0.
            self.host_bridge = false;
            self.functions.insert(bdf, device);
            return Ok(());
        }
        if self.functions.contains_key(&bdf) {
            return Err(PciError::Taken {
                bdf,
                segment: self.layout.id,
            });
        }
        self.functions.insert(bdf, device);
        Ok(())
    }

    /// Place every BAR of every function (largest first within each window,
    /// so alignment padding stays small) and program the BARs.
    pub fn allocate_bars(&mut self) -> Result<Vec<BarAllocation>, PciError> {
        let mut mmio32 = RangeAllocator::new(self.layout.mmio32);
        let mut mmio64 = RangeAllocator::new(self.layout.mmio64);
        let mut wanted: Vec<(Bdf, u8, Bar)> = self
            .functions
            .iter()
            .flat_map(|(bdf, f)| f.bars().into_iter().map(move |(i, bar)| (*bdf, i, bar)))
            .collect();
        wanted.sort_by_key(|w| std::cmp::Reverse(w.2.size));
        let mut placed = Vec::with_capacity(wanted.len());
        for (bdf, index, bar) in wanted {
            let (allocator, window) = match bar.kind {
                BarKind::Mmio32 => (&mut mmio32, "mmio32"),
                BarKind::Mmio64 => (&mut mmio64, "mmio64"),
            };
            let range =
                allocator
                    .allocate(bar.size, bar.size)
                    .ok_or(PciError::BarSpaceExhausted {
                        bdf,
                        index,
                        size: bar.size,
                        window,
                    })?;
            if let Some(function) = self.functions.get_mut(&bdf) {
                function.set_bar_address(index, range.base);
            }
            placed.push(BarAllocation { bdf, index, range });
        }
        Ok(placed)
    }

    /// Decode an ECAM offset into a function address and register, or
    /// `None` when it lies past the segment's last bus.
    pub fn decode(&self, offset: u64) -> Option<(Bdf, u16)> {
        let bus = u8::try_from(offset >> ECAM_BUS_SHIFT).ok()?;
        if bus > self.layout.last_bus {
            return None;
        }
        let bdf = Bdf {
            bus,
            device: ((offset >> ECAM_DEVICE_SHIFT) & 0x1f) as u8,
            function: ((offset >> ECAM_FUNCTION_SHIFT) & 0x7) as u8,
        };
        Some((bdf, (offset & ECAM_REG_MASK) as u16))
    }

    /// Guest read of `data.len()` bytes at `offset` in the ECAM window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if data.len() == 8 && offset % 8 == 0 {
            let (low, high) = data.split_at_mut(4);
            self.read(offset, low);
            self.read(offset + 4, high);
            return;
        }
        let Some((bdf, reg)) = self.decode(offset) else {
            log::debug!(target: LOG_TARGET, "read past the last bus at {offset:#x}");
            return;
        };
        if !valid_access(reg, data.len()) {
            log::debug!(target: LOG_TARGET, "bad {}-byte read of {bdf} at {reg:#x}", data.len());
            return;
        }
        if let Some(function) = self.functions.get_mut(&bdf) {
            function.read_config(reg, data);
        }
    }

    /// Guest write of `data` at `offset` in the ECAM window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() == 8 && offset % 8 == 0 {
            let (low, high) = data.split_at(4);
            self.write(offset, low);
            self.write(offset + 4, high);
            return;
        }
        let Some((bdf, reg)) = self.decode(offset) else {
            log::debug!(target: LOG_TARGET, "write past the last bus at {offset:#x}");
            return;
        };
        if !valid_access(reg, data.len()) {
            log::debug!(target: LOG_TARGET, "bad {}-byte write of {bdf} at {reg:#x}", data.len());
            return;
        }
        match self.functions.get_mut(&bdf) {
            Some(function) => {
                log::trace!(target: LOG_TARGET, "{bdf} write {reg:#x} {data:02x?}");
                function.write_config(reg, data);
            }
            None => log::trace!(target: LOG_TARGET, "write to absent {bdf} dropped"),
        }
    }

    /// The function and BAR decoding guest address `addr`, with the offset.
    fn decode_bar(&self, addr: u64) -> Option<(Bdf, u8, u64)> {
        self.functions.iter().find_map(|(bdf, f)| {
            f.decoded_bars()
                .into_iter()
                .find(|(_, base, size)| addr >= *base && addr - base < *size)
                .map(|(index, base, _)| (*bdf, index, addr - base))
        })
    }

    /// A trapped guest read of the BAR windows at `addr`.
    pub fn bar_read(&mut self, addr: u64, data: &mut [u8]) {
        match self.decode_bar(addr) {
            Some((bdf, index, offset)) => {
                if let Some(f) = self.functions.get_mut(&bdf) {
                    f.bar_read(index, offset, data);
                }
            }
            None => data.fill(0xff),
        }
    }

    /// A trapped guest write of the BAR windows at `addr`.
    pub fn bar_write(&mut self, addr: u64, data: &[u8]) {
        match self.decode_bar(addr) {
            Some((bdf, index, offset)) => {
                if let Some(f) = self.functions.get_mut(&bdf) {
                    f.bar_write(index, offset, data);
                }
            }
            None => log::debug!(target: LOG_TARGET, "write to {addr:#x}: no BAR decodes it"),
        }
    }

    /// Release every function's host resources (VM teardown).
    pub fn release(&mut self) {
        for f in self.functions.values_mut() {
            f.release();
        }
    }
}

impl MutDeviceMmio for PciSegment {
    fn mmio_read(&mut self, base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        if base.0 == self.layout.ecam.base {
            self.read(offset, data);
        } else {
            self.bar_read(base.0 + offset, data);
        }
    }

    fn mmio_write(&mut self, base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        if base.0 == self.layout.ecam.base {
            self.write(offset, data);
        } else {
            self.bar_write(base.0 + offset, data);
        }
    }
}

#[cfg(test)]
#[path = "host_bridge_tests.rs"]
mod tests;
