//! A type 0 (endpoint) configuration space with BAR sizing, for emulated
//! functions and the host bridge.
//!
//! Implemented (PCI Local Bus spec 3.0 chapter 6, PCIe base spec 7.5.1):
//! the 64-byte type 0 header with per-bit write masks; Status error bits are
//! write-one-to-clear; BARs (32- and 64-bit memory) answer the sizing
//! protocol: a BAR's address bits below its size are read-only zero, so
//! writing all-ones and reading back gives `!(size - 1) | flags`.
//!
//! Deliberately not implemented: I/O BARs (arm64 has no port I/O), an
//! expansion ROM (the ROM BAR reads 0, "no ROM"), capabilities (Status
//! bit 4 clear, pointer 0), and extended configuration space: offsets
//! 0x100..0x1000 read 0, which Linux reads as "no extended capabilities".
//! Accesses must be 1, 2 or 4 bytes inside one dword; others read all-ones
//! and are ignored (the ECAM layer only passes valid ones).

use thiserror::Error;

/// Size of the conventional configuration space in bytes.
pub const CONFIG_HEADER_SIZE: u16 = 256;
/// Size of a PCIe function's configuration space (ECAM spends 4 KiB each).
pub const CONFIG_SPACE_SIZE: u16 = 4096;
/// Number of BARs in a type 0 header.
pub const NUM_BARS: u8 = 6;

/// Offset of Vendor ID (16) / Device ID (16).
pub const VENDOR_ID: u16 = 0x00;
/// Offset of Command (16) / Status (16).
pub const COMMAND: u16 = 0x04;
/// Offset of Revision ID (8) / Class Code (24).
pub const CLASS_REVISION: u16 = 0x08;
/// Offset of Cache Line Size, Latency Timer, Header Type, BIST.
pub const HEADER_TYPE_DWORD: u16 = 0x0c;
/// Offset of BAR0; BAR n is at `BAR0 + 4 * n`.
pub const BAR0: u16 = 0x10;
/// Offset of Subsystem Vendor ID / Subsystem ID.
pub const SUBSYSTEM: u16 = 0x2c;
/// Offset of Interrupt Line / Interrupt Pin / Min_Gnt / Max_Lat.
pub const INTERRUPT_DWORD: u16 = 0x3c;

/// Command bits a guest may set: Memory Space (1), Bus Master (2), Parity
/// Error Response (6), SERR# Enable (8), Interrupt Disable (10). I/O Space
/// stays 0: there are no I/O BARs.
pub const COMMAND_WRITABLE: u32 = 0x0546;
/// Status bits that are RW1C: Master Data Parity Error (8), Signaled /
/// Received Target Abort, Received Master Abort, Signaled System Error,
/// Detected Parity Error (11-15), in dword position.
pub const STATUS_W1C: u32 = 0xf900 << 16;
/// Command.Memory Space Enable.
pub const COMMAND_MEMORY: u16 = 1 << 1;

/// Memory BAR flag: 64-bit (type 0b10 in bits 2:1).
const BAR_MEM64: u32 = 0b10 << 1;
/// Memory BAR flag: prefetchable.
const BAR_PREFETCH: u32 = 1 << 3;
/// Low BAR bits that are flags, not address.
const BAR_FLAG_BITS: u32 = 0xf;
/// Smallest memory BAR (PCI 3.0 section 6.2.5.1: 16 bytes); we use the
/// 4 KiB page so no two BARs share a page when mapped into the guest.
pub const MIN_BAR_SIZE: u64 = 4096;

/// How a BAR decodes addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory BAR, allocated in the segment's mmio32 window.
    Mmio32,
    /// 64-bit memory BAR (takes two BAR slots), in the mmio64 window.
    Mmio64,
}

/// A BAR a function implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Address decoding.
    pub kind: BarKind,
    /// Size in bytes: a power of two, at least [`MIN_BAR_SIZE`].
    pub size: u64,
    /// Prefetchable memory.
    pub prefetchable: bool,
}

/// Why a BAR cannot be declared.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum BarError {
    /// BAR index past the last BAR (or past BAR4 for a 64-bit BAR).
    #[error("BAR index {0} does not exist (or has no room for a 64-bit BAR)")]
    BadIndex(u8),
    /// The BAR slot (or the upper half of a 64-bit BAR) is taken.
    #[error("BAR {0} is already declared")]
    Taken(u8),
    /// Size not a power of two or too small, or too large for its kind.
    #[error("BAR size {size:#x} must be a power of two in [{MIN_BAR_SIZE:#x}, {max:#x}]")]
    BadSize {
        /// The size asked for.
        size: u64,
        /// The largest size for the BAR's kind.
        max: u64,
    },
}

/// Identity fields of a type 0 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceIds {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class code (base class << 16 | subclass << 8 | programming interface).
    pub class: u32,
    /// Revision ID.
    pub revision: u8,
    /// Subsystem vendor ID.
    pub subsystem_vendor: u16,
    /// Subsystem ID.
    pub subsystem: u16,
}

/// What a BAR slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Empty,
    /// A BAR (the low half of a 64-bit one).
    Bar(Bar),
    /// The upper half of the 64-bit BAR in the previous slot.
    Upper,
}

const DWORDS: usize = CONFIG_HEADER_SIZE as usize / 4;

/// A type 0 configuration space.
#[derive(Clone, Debug)]
pub struct ConfigSpace {
    regs: [u32; DWORDS],
    writable: [u32; DWORDS],
    w1c: [u32; DWORDS],
    slots: [Slot; NUM_BARS as usize],
}

fn dword(reg: u16) -> usize {
    usize::from(reg / 4)
}

impl ConfigSpace {
    /// A header for `ids`, no BARs, no interrupt pin.
    pub fn type0(ids: DeviceIds) -> Self {
        let mut regs = [0u32; DWORDS];
        let mut writable = [0u32; DWORDS];
        let mut w1c = [0u32; DWORDS];
        regs[dword(VENDOR_ID)] = u32::from(ids.vendor) | u32::from(ids.device) << 16;
        regs[dword(CLASS_REVISION)] = u32::from(ids.revision) | (ids.class & 0xff_ffff) << 8;
        regs[dword(SUBSYSTEM)] = u32::from(ids.subsystem_vendor) | u32::from(ids.subsystem) << 16;
        writable[dword(COMMAND)] = COMMAND_WRITABLE;
        w1c[dword(COMMAND)] = STATUS_W1C;
        // Cache Line Size is RW (software bookkeeping); Latency Timer is RO 0 on PCIe.
        writable[dword(HEADER_TYPE_DWORD)] = 0xff;
        // Interrupt Line is RW (software bookkeeping).
        writable[dword(INTERRUPT_DWORD)] = 0xff;
        ConfigSpace {
            regs,
            writable,
            w1c,
            slots: [Slot::Empty; NUM_BARS as usize],
        }
    }

    /// Set the Interrupt Pin (1 = INTA .. 4 = INTD, 0 = none).
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        let d = dword(INTERRUPT_DWORD);
        self.regs[d] = (self.regs[d] & !0xff00) | u32::from(pin.min(4)) << 8;
    }

    /// Mark the function as part of a multi-function device (header type bit 7).
    pub fn set_multifunction(&mut self, multifunction: bool) {
        let d = dword(HEADER_TYPE_DWORD);
        let bit = 0x80 << 16;
        self.regs[d] = if multifunction {
            self.regs[d] | bit
        } else {
            self.regs[d] & !bit
        };
    }

    /// Declare BAR `index`.
    pub fn add_bar(&mut self, index: u8, bar: Bar) -> Result<(), BarError> {
        let wide = bar.kind == BarKind::Mmio64;
        let last = if wide { NUM_BARS - 2 } else { NUM_BARS - 1 };
        if index > last {
            return Err(BarError::BadIndex(index));
        }
        let max = if wide { 1 << 63 } else { 1 << 31 };
        if !bar.size.is_power_of_two() || bar.size < MIN_BAR_SIZE || bar.size > max {
            return Err(BarError::BadSize {
                size: bar.size,
                max,
            });
        }
        let i = usize::from(index);
        let span = if wide { i..i + 2 } else { i..i + 1 };
        if self.slots[span].iter().any(|s| *s != Slot::Empty) {
            return Err(BarError::Taken(index));
        }
        let mut flags = if wide { BAR_MEM64 } else { 0 };
        if bar.prefetchable {
            flags |= BAR_PREFETCH;
        }
        let mask = !(bar.size - 1);
        let d = dword(BAR0) + i;
        self.regs[d] = flags;
        self.writable[d] = mask as u32 & !BAR_FLAG_BITS;
        self.slots[i] = Slot::Bar(bar);
        if wide {
            self.writable[d + 1] = (mask >> 32) as u32;
            self.slots[i + 1] = Slot::Upper;
        }
        Ok(())
    }

    /// The BARs declared, by index.
    pub fn bars(&self) -> Vec<(u8, Bar)> {
        (0..NUM_BARS)
            .zip(self.slots.iter())
            .filter_map(|(i, s)| match s {
                Slot::Bar(bar) => Some((i, *bar)),
                _ => None,
            })
            .collect()
    }

    /// Program BAR `index` with `addr` (aligned down to its size), as
    /// firmware would. Returns false when there is no such BAR.
    pub fn set_bar_address(&mut self, index: u8, addr: u64) -> bool {
        let i = usize::from(index);
        let Some(Slot::Bar(bar)) = self.slots.get(i).copied() else {
            return false;
        };
        let d = dword(BAR0) + i;
        let low = self.regs[d] & BAR_FLAG_BITS;
        self.regs[d] = low | (addr as u32 & self.writable[d]);
        if bar.kind == BarKind::Mmio64 {
            self.regs[d + 1] = (addr >> 32) as u32 & self.writable[d + 1];
        }
        true
    }

    /// The address BAR `index` decodes, or `None` when there is no such BAR.
    pub fn bar_address(&self, index: u8) -> Option<u64> {
        let i = usize::from(index);
        let Some(Slot::Bar(bar)) = self.slots.get(i).copied() else {
            return None;
        };
        let d = dword(BAR0) + i;
        let low = u64::from(self.regs[d] & !BAR_FLAG_BITS);
        let high = match bar.kind {
            BarKind::Mmio64 => u64::from(self.regs[d + 1]) << 32,
            BarKind::Mmio32 => 0,
        };
        Some(high | low)
    }

    /// Command.Memory Space Enable: the BARs decode.
    pub fn memory_enabled(&self) -> bool {
        self.regs[dword(COMMAND)] as u16 & COMMAND_MEMORY != 0
    }

    /// Read `data.len()` bytes at config offset `reg`.
    pub fn read(&self, reg: u16, data: &mut [u8]) {
        if !valid_access(reg, data.len()) {
            data.fill(0xff);
            return;
        }
        let value = self.regs.get(dword(reg)).copied().unwrap_or(0);
        let bytes = (value >> (8 * u32::from(reg % 4))).to_le_bytes();
        for (d, s) in data.iter_mut().zip(bytes) {
            *d = s;
        }
    }

    /// Write `data` at config offset `reg`: writable bits take the new
    /// value, RW1C bits written 1 clear, everything else stays.
    pub fn write(&mut self, reg: u16, data: &[u8]) {
        if !valid_access(reg, data.len()) {
            return;
        }
        let d = dword(reg);
        let (Some(&writable), Some(&w1c)) = (self.writable.get(d), self.w1c.get(d)) else {
            return;
        };
        let Some(old) = self.regs.get_mut(d) else {
            return;
        };
        let shift = 8 * u32::from(reg % 4);
        let mut raw = [0u8; 4];
        raw.iter_mut().zip(data).for_each(|(r, s)| *r = *s);
        let value = u32::from_le_bytes(raw) << shift;
        let lanes = (u32::MAX >> (32 - 8 * data.len() as u32)) << shift;
        let set = writable & lanes;
        *old = ((*old & !set) | (value & set)) & !(value & w1c & lanes);
    }
}

/// 1, 2 or 4 bytes, naturally aligned, inside the 4 KiB space.
pub fn valid_access(reg: u16, len: usize) -> bool {
    matches!(len, 1 | 2 | 4) && usize::from(reg) % len == 0 && reg < CONFIG_SPACE_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> DeviceIds {
        DeviceIds {
            vendor: 0x1af4,
            device: 0x1234,
            class: 0x01_08_02,
            revision: 7,
            subsystem_vendor: 0x1af4,
            subsystem: 0x0001,
        }
    }

    fn r32(c: &ConfigSpace, reg: u16) -> u32 {
        let mut b = [0u8; 4];
        c.read(reg, &mut b);
        u32::from_le_bytes(b)
    }

    fn w32(c: &mut ConfigSpace, reg: u16, v: u32) {
        c.write(reg, &v.to_le_bytes());
    }

    #[test]
    fn header_carries_ids_class_and_revision() {
        let c = ConfigSpace::type0(ids());
        assert_eq!(r32(&c, 0x00), 0x1234_1af4);
        assert_eq!(r32(&c, 0x08), 0x0108_0207);
        assert_eq!(r32(&c, 0x2c), 0x0001_1af4);
        let mut b = [0u8; 1];
        c.read(0x0e, &mut b);
        assert_eq!(b, [0], "header type 0, single function");
    }

    #[test]
    fn identity_is_read_only_and_command_keeps_only_its_bits() {
        let mut c = ConfigSpace::type0(ids());
        w32(&mut c, 0x00, 0);
        w32(&mut c, 0x08, 0);
        assert_eq!(r32(&c, 0x00), 0x1234_1af4);
        c.write(COMMAND, &0xffffu16.to_le_bytes());
        assert_eq!(r32(&c, COMMAND) & 0xffff, COMMAND_WRITABLE);
        assert!(c.memory_enabled());
    }

    #[test]
    fn status_error_bits_are_write_one_to_clear() {
        let mut c = ConfigSpace::type0(ids());
        c.regs[dword(COMMAND)] |= 0x8100 << 16;
        // A command write of 0 in the same dword must not clear status.
        w32(&mut c, COMMAND, 0x0006);
        assert_eq!(r32(&c, COMMAND), 0x8100_0006);
        c.write(COMMAND + 2, &0x8000u16.to_le_bytes());
        assert_eq!(r32(&c, COMMAND), 0x0100_0006);
    }

    #[test]
    fn bar_sizing_reads_back_the_size_mask_and_flags() {
        let mut c = ConfigSpace::type0(ids());
        c.add_bar(
            0,
            Bar {
                kind: BarKind::Mmio32,
                size: 0x4000,
                prefetchable: false,
            },
        )
        .unwrap();
        c.add_bar(
            2,
            Bar {
                kind: BarKind::Mmio64,
                size: 0x2_0000_0000,
                prefetchable: true,
            },
        )
        .unwrap();
        w32(&mut c, BAR0, u32::MAX);
        assert_eq!(r32(&c, BAR0), 0xffff_c000);
        w32(&mut c, BAR0 + 8, u32::MAX);
        w32(&mut c, BAR0 + 12, u32::MAX);
        assert_eq!(r32(&c, BAR0 + 8), 0x0000_000c, "64-bit, prefetchable");
        assert_eq!(r32(&c, BAR0 + 12), 0xffff_fffe);
        // Undeclared BARs and the ROM BAR stay 0.
        w32(&mut c, BAR0 + 4, u32::MAX);
        w32(&mut c, 0x30, u32::MAX);
        assert_eq!(r32(&c, BAR0 + 4), 0);
        assert_eq!(r32(&c, 0x30), 0);
        // Programming an address keeps the flags and drops bits below the size.
        w32(&mut c, BAR0, 0x1000_5678);
        assert_eq!(c.bar_address(0), Some(0x1000_4000));
        assert!(c.set_bar_address(2, 0x80_0000_0000));
        assert_eq!(c.bar_address(2), Some(0x80_0000_0000));
        assert_eq!(r32(&c, BAR0 + 8), 0xc);
        assert_eq!(c.bars().len(), 2);
    }

    #[test]
    fn bad_bars_are_refused_with_the_reason() {
        let mut c = ConfigSpace::type0(ids());
        let bar = |kind, size| Bar {
            kind,
            size,
            prefetchable: false,
        };
        assert_eq!(
            c.add_bar(5, bar(BarKind::Mmio64, 0x1000)),
            Err(BarError::BadIndex(5))
        );
        assert_eq!(
            c.add_bar(0, bar(BarKind::Mmio32, 0x1800)),
            Err(BarError::BadSize {
                size: 0x1800,
                max: 1 << 31
            })
        );
        assert!(matches!(
            c.add_bar(0, bar(BarKind::Mmio32, 0x10)),
            Err(BarError::BadSize { .. })
        ));
        c.add_bar(1, bar(BarKind::Mmio32, 0x1000)).unwrap();
        assert_eq!(
            c.add_bar(0, bar(BarKind::Mmio64, 0x1000)),
            Err(BarError::Taken(0))
        );
        assert!(!c.set_bar_address(0, 0x1000));
        assert_eq!(c.bar_address(3), None);
    }

    #[test]
    fn sub_dword_and_invalid_accesses() {
        let mut c = ConfigSpace::type0(ids());
        let mut w = [0u8; 2];
        c.read(0x02, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x1234);
        c.write(INTERRUPT_DWORD, &[0x2a]);
        c.set_interrupt_pin(1);
        assert_eq!(r32(&c, INTERRUPT_DWORD), 0x012a);
        let mut odd = [0u8; 2];
        c.read(0x01, &mut odd);
        assert_eq!(odd, [0xff, 0xff], "misaligned reads all-ones");
        let mut three = [0u8; 3];
        c.read(0x00, &mut three);
        assert_eq!(three, [0xff; 3]);
        assert_eq!(r32(&c, 0x100), 0, "no extended capabilities");
        assert_eq!(r32(&c, 0xffc), 0);
        w32(&mut c, 0x100, u32::MAX);
        assert_eq!(r32(&c, 0x100), 0);
        c.set_multifunction(true);
        assert_eq!(r32(&c, HEADER_TYPE_DWORD) >> 16 & 0xff, 0x80);
    }
}
