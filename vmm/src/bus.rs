//! The VM's MMIO bus: the vm-device `IoManager` that maps guest physical
//! addresses to device models, plus per-device exit counters (the figures
//! `VM exits per unmap` are computed from) and read-as-zero / write-ignored
//! handling for addresses no device claims.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arch::layout::Range;
use vm_device::DeviceMmio;
use vm_device::bus::{MmioAddress, MmioRange};
use vm_device::device_manager::{IoManager, MmioManager};

/// Why a device could not be put on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The range is empty or overlaps a registered one.
    #[error("cannot place {name} at {range}: {reason}")]
    Register {
        /// Device name.
        name: &'static str,
        /// Its window.
        range: Range,
        /// What vm-device said.
        reason: String,
    },
}

struct Window {
    name: &'static str,
    range: Range,
    exits: AtomicU64,
}

/// Address -> device dispatch with exit accounting.
#[derive(Default)]
pub struct MmioBus {
    io: IoManager,
    windows: Vec<Window>,
    unclaimed: AtomicU64,
}

impl MmioBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Put `device` on the bus at `range`, counted as `name`.
    pub fn register(
        &mut self,
        name: &'static str,
        range: Range,
        device: Arc<dyn DeviceMmio + Send + Sync>,
    ) -> Result<(), BusError> {
        let err = |reason: String| BusError::Register {
            name,
            range,
            reason,
        };
        let mmio_range = MmioRange::new(MmioAddress(range.base), range.size)
            .map_err(|e| err(format!("{e:?}")))?;
        self.io
            .register_mmio(mmio_range, device)
            .map_err(|e| err(format!("{e:?}")))?;
        self.windows.push(Window {
            name,
            range,
            exits: AtomicU64::new(0),
        });
        Ok(())
    }

    fn count(&self, addr: u64) {
        if let Some(window) = self.windows.iter().find(|w| w.range.contains(addr)) {
            window.exits.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn unclaimed(&self, kind: &str, addr: u64, len: usize) {
        self.unclaimed.fetch_add(1, Ordering::Relaxed);
        devices::guest_log!(warn, target: "bus", "guest {kind} of {len} bytes at {addr:#x}: no device there (reads as zero)");
    }

    /// A guest read: the device's answer, or zeros where no device is.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        self.count(addr);
        if self.io.mmio_read(MmioAddress(addr), data).is_err() {
            data.fill(0);
            self.unclaimed("read", addr, data.len());
        }
    }

    /// A guest write: to the device, or dropped where no device is.
    pub fn write(&self, addr: u64, data: &[u8]) {
        self.count(addr);
        if self.io.mmio_write(MmioAddress(addr), data).is_err() {
            self.unclaimed("write", addr, data.len());
        }
    }

    /// MMIO exits of the window registered at exactly `range` (0 if none).
    pub fn exits_in(&self, range: Range) -> u64 {
        self.windows
            .iter()
            .filter(|w| w.range == range)
            .map(|w| w.exits.load(Ordering::Relaxed))
            .sum()
    }

    /// MMIO exits per device window, in registration order, and the count
    /// of accesses nobody claimed.
    pub fn exit_counts(&self) -> (Vec<(&'static str, u64)>, u64) {
        (
            self.windows
                .iter()
                .map(|w| (w.name, w.exits.load(Ordering::Relaxed)))
                .collect(),
            self.unclaimed.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use vm_device::MutDeviceMmio;
    use vm_device::bus::MmioAddressOffset;

    use super::*;

    #[derive(Default)]
    struct Scratch(Vec<(u64, Vec<u8>)>);

    impl MutDeviceMmio for Scratch {
        fn mmio_read(&mut self, _: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn mmio_write(&mut self, _: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn accesses_reach_the_device_at_its_offset_and_are_counted() {
        let dev = Arc::new(Mutex::new(Scratch::default()));
        let mut bus = MmioBus::new();
        bus.register(
            "scratch",
            Range {
                base: 0x1000,
                size: 0x100,
            },
            dev.clone(),
        )
        .unwrap();
        let mut data = [0u8; 4];
        bus.read(0x1010, &mut data);
        assert_eq!(data, [0x10; 4]);
        bus.write(0x10fc, &[1, 2, 3, 4]);
        assert_eq!(dev.lock().unwrap().0, vec![(0xfc, vec![1, 2, 3, 4])]);
        assert_eq!(bus.exit_counts(), (vec![("scratch", 2)], 0));
    }

    #[test]
    fn unclaimed_reads_are_zero_and_writes_are_dropped() {
        let mut bus = MmioBus::new();
        bus.register(
            "scratch",
            Range {
                base: 0x1000,
                size: 0x100,
            },
            Arc::new(Mutex::new(Scratch::default())),
        )
        .unwrap();
        let mut data = [0xffu8; 8];
        bus.read(0x2000, &mut data);
        assert_eq!(data, [0; 8]);
        bus.write(0x0fff, &[1]);
        // An access straddling the window's end is not the device's either.
        bus.read(0x10fe, &mut data[..4]);
        assert_eq!(bus.exit_counts().1, 3);
    }

    #[test]
    fn a_guest_flooding_unclaimed_addresses_logs_a_few_lines_and_counts_the_rest() {
        let bus = MmioBus::new();
        let before = devices::guest_log::dropped();
        let mut data = [0u8; 4];
        for _ in 0..1000 {
            bus.read(0x2000, &mut data);
        }
        // At most the burst and one line per power of two of the call
        // site's count are logged, whoever else used the site before.
        let logged_at_most = devices::guest_log::BURST + u64::BITS as u64;
        assert!(devices::guest_log::dropped() - before >= 1000 - logged_at_most);
        assert_eq!(bus.exit_counts().1, 1000);
    }

    #[test]
    fn overlapping_windows_are_refused() {
        let mut bus = MmioBus::new();
        let dev = Arc::new(Mutex::new(Scratch::default()));
        bus.register(
            "a",
            Range {
                base: 0x1000,
                size: 0x100,
            },
            dev.clone(),
        )
        .unwrap();
        let err = bus
            .register(
                "b",
                Range {
                    base: 0x1080,
                    size: 0x100,
                },
                dev,
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot place b at [0x1080, 0x1180)"),
            "{err}"
        );
    }
}
