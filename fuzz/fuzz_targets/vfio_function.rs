//! The guest-visible VFIO-PCI function: configuration space and trapped BAR
//! accesses of every size and offset, over an in-memory virtio-blk-shaped
//! function. Besides "never panics": the BAR and ROM registers the guest
//! writes never reach the device's own configuration space, and a released
//! function reads as absent.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use arch::layout::Range;
use devices::mapping::Mapping;
use libfuzzer_sys::fuzz_target;
use pci::vfio::caps::MsiMessage;
use pci::vfio::memhost::MemoryFunction;
use pci::vfio::{MsiError, MsiRouter, VfioPciDevice, Wiring};
use pci::{GuestMapper, MapError, PciDevice, SlotId};
use vmm_sys_util::eventfd::EventFd;

/// Routes accepted and forgotten; GSIs from a counter.
struct Sink(std::sync::atomic::AtomicU32);

impl MsiRouter for Sink {
    fn allocate_gsi(&self) -> Option<u32> {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (n < 4096).then_some(n)
    }
    fn set_msi_route(&self, _: u32, _: MsiMessage, _: u32) -> Result<(), MsiError> {
        Ok(())
    }
    fn free_gsi(&self, _: u32) {}
    fn irqfd(&self, _: &EventFd, _: u32, _: bool) -> Result<(), MsiError> {
        Ok(())
    }
}

/// Slots accepted: their mappings are held until the slot is removed.
struct Slots(std::sync::Mutex<Vec<Option<Arc<Mapping>>>>);

impl GuestMapper for Slots {
    fn add_region(&self, _: u64, mapping: Arc<Mapping>) -> Result<SlotId, MapError> {
        let mut slots = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slots.push(Some(mapping));
        Ok(SlotId::new(slots.len() as u32 - 1))
    }
    fn remove_region(&self, slot: SlotId) -> Result<Arc<Mapping>, MapError> {
        let mut slots = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .get_mut(slot.get() as usize)
            .and_then(Option::take)
            .ok_or(MapError::Unknown(slot.get()))
    }
}

#[derive(Arbitrary, Debug)]
enum Access {
    ConfigRead {
        reg: u16,
        size: u8,
    },
    ConfigWrite {
        reg: u16,
        size: u8,
        value: u32,
    },
    BarRead {
        index: u8,
        offset: u16,
        size: u8,
    },
    BarWrite {
        index: u8,
        offset: u16,
        size: u8,
        value: u64,
    },
    Place {
        index: u8,
        addr: u64,
    },
}

fn len(size: u8) -> usize {
    [1, 2, 4, 8][usize::from(size % 4)]
}

fn aligned(reg: u16, len: usize) -> u16 {
    (reg % 4096) & !(len as u16 - 1)
}

fuzz_target!(|accesses: Vec<Access>| {
    let host = MemoryFunction::virtio_blk();
    let sink = Arc::new(Sink(Default::default()));
    let wiring = Wiring {
        name: "fuzz".into(),
        devid: 8,
        windows: vec![
            Range {
                base: 0x1000_0000,
                size: 0x100_0000,
            },
            Range {
                base: 0x80_0000_0000,
                size: 0x10_0000_0000,
            },
        ],
        router: sink,
        mapper: Arc::new(Slots(Default::default())),
        host_page: 4096,
    };
    let Ok(mut f) = VfioPciDevice::new(Box::new(host.clone()), wiring) else {
        return;
    };
    for a in accesses.iter().take(256) {
        match *a {
            Access::ConfigRead { reg, size } => {
                let n = len(size).min(4);
                let mut b = vec![0; n];
                f.read_config(aligned(reg, n), &mut b);
            }
            Access::ConfigWrite { reg, size, value } => {
                let n = len(size).min(4);
                f.write_config(aligned(reg, n), &value.to_le_bytes()[..n]);
            }
            Access::BarRead {
                index,
                offset,
                size,
            } => {
                let mut b = vec![0; len(size)];
                f.bar_read(index % 6, u64::from(offset), &mut b);
            }
            Access::BarWrite {
                index,
                offset,
                size,
                value,
            } => {
                f.bar_write(
                    index % 6,
                    u64::from(offset),
                    &value.to_le_bytes()[..len(size)],
                );
            }
            Access::Place { index, addr } => f.set_bar_address(index % 6, addr),
        }
    }
    let state = host.state.lock().unwrap();
    for (offset, bytes) in &state.config_writes {
        let end = offset + bytes.len() as u64;
        assert!(
            end <= 0x10 || (*offset >= 0x28 && end <= 0x30) || *offset >= 0x34,
            "a BAR or ROM write reached the device: {offset:#x} {bytes:02x?}"
        );
    }
    drop(state);
    f.release();
    let mut id = [0u8; 4];
    f.read_config(0, &mut id);
    assert_eq!(id, [0xff; 4]);
});
