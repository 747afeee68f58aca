//! PCI addressing for the VM's PCIe host bridges: bus/device/function
//! numbers, requester IDs and device slot assignment on a segment.
//!
//! Each PCI segment is one ECAM host bridge; device 0 on bus 0 is the host
//! bridge itself, endpoints take devices 1..=31 on bus 0.
//!
//! [`host_bridge::PciSegment`] serves a segment's ECAM window,
//! [`device::PciDevice`] is what a function plugged into it implements, and
//! [`config::ConfigSpace`] is a type 0 header with BAR sizing for emulated
//! functions.

pub mod config;
pub mod device;
pub mod host_bridge;
pub mod test_endpoint;
pub mod vfio;

use std::fmt;

pub use device::{GuestMapper, MapError, PciDevice, SlotId};
pub use host_bridge::{PciError, PciSegment};

/// Device numbers on a bus.
pub const DEVICES_PER_BUS: u8 = 32;
/// Functions per device.
pub const FUNCTIONS_PER_DEVICE: u8 = 8;

/// A PCI function address within a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    /// Bus number.
    pub bus: u8,
    /// Device number (0..32).
    pub device: u8,
    /// Function number (0..8).
    pub function: u8,
}

impl Bdf {
    /// The requester ID the function puts on its transactions:
    /// `bus << 8 | device << 3 | function` (PCIe base spec 2.2.6.2).
    pub fn rid(self) -> u16 {
        (u16::from(self.bus) << 8)
            | (u16::from(self.device & 0x1f) << 3)
            | u16::from(self.function & 0x7)
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// Why a device could not be placed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// Every device number on bus 0 is taken.
    #[error("PCI segment {segment} has no free device slot (at most {max} devices per segment)")]
    SegmentFull {
        /// The segment.
        segment: u16,
        /// How many endpoints fit.
        max: u8,
    },
}

/// Hands out device numbers on bus 0 of one segment, in order.
#[derive(Clone, Debug)]
pub struct SlotAllocator {
    segment: u16,
    next_device: u8,
    device_zero_taken: bool,
}

impl SlotAllocator {
    /// Slots for `segment`; device 0 is kept for the host bridge.
    pub fn new(segment: u16) -> Self {
        SlotAllocator {
            segment,
            next_device: 1,
            device_zero_taken: false,
        }
    }

    /// 00:00.0 instead of the host bridge, once per segment: a function
    /// whose driver insists on devfn 0 (NVIDIA's, for a Grace GPU) takes
    /// the host bridge's place; `None` once taken.
    pub fn take_device_zero(&mut self) -> Option<Bdf> {
        if self.device_zero_taken {
            return None;
        }
        self.device_zero_taken = true;
        Some(Bdf {
            bus: 0,
            device: 0,
            function: 0,
        })
    }

    /// The next free function-0 address.
    pub fn allocate(&mut self) -> Result<Bdf, SlotError> {
        if self.next_device >= DEVICES_PER_BUS {
            return Err(SlotError::SegmentFull {
                segment: self.segment,
                max: DEVICES_PER_BUS - 1,
            });
        }
        let bdf = Bdf {
            bus: 0,
            device: self.next_device,
            function: 0,
        };
        self.next_device += 1;
        Ok(bdf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rid_packs_bus_device_function() {
        let bdf = Bdf {
            bus: 1,
            device: 2,
            function: 3,
        };
        assert_eq!(bdf.rid(), 0x0113);
        assert_eq!(bdf.to_string(), "01:02.3");
    }

    #[test]
    fn device_zero_is_handed_out_once_and_apart_from_the_others() {
        let mut slots = SlotAllocator::new(0);
        assert_eq!(slots.allocate().unwrap().rid(), 0x08);
        assert_eq!(slots.take_device_zero().map(Bdf::rid), Some(0));
        assert_eq!(slots.take_device_zero(), None);
        assert_eq!(slots.allocate().unwrap().rid(), 0x10);
    }

    #[test]
    fn slots_start_after_the_host_bridge_and_run_out_at_31() {
        let mut slots = SlotAllocator::new(2);
        assert_eq!(slots.allocate().unwrap().rid(), 0x08);
        for _ in 2..32 {
            slots.allocate().unwrap();
        }
        assert_eq!(
            slots.allocate(),
            Err(SlotError::SegmentFull {
                segment: 2,
                max: 31
            })
        );
    }
}
