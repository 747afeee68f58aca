//! An in-memory passthrough function, for the fuzz target and anyone
//! exercising the VFIO-PCI model without a host device: QEMU's
//! virtio-blk-pci shape (modern, MSI-X with 3 vectors: BAR1 4 KiB holds the
//! table at 0 and the PBA at 0x800; BAR4 16 KiB, 64-bit prefetchable), its
//! configuration space as bytes, its BARs as byte arrays. It records what a
//! host would be asked to do, so callers can check what reached "the
//! device".

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use super::host::{CONFIG_REGION, IRQ_MSIX, RegionInfo, VfioHost, VfioHostError};
use devices::mapping::Mapping;

/// What the in-memory function holds; shared with the caller.
#[derive(Debug, Default)]
pub struct MemoryState {
    /// Configuration space (4 KiB).
    pub config: Vec<u8>,
    /// BAR contents by index (empty: no BAR).
    pub bars: Vec<Vec<u8>>,
    /// Configuration writes that reached the device: (offset, bytes).
    pub config_writes: Vec<(u64, Vec<u8>)>,
    /// `SET_IRQS` calls: (index, vectors; 0 = disable).
    pub irq_sets: Vec<(u32, usize)>,
    /// Resets.
    pub resets: u32,
}

/// The in-memory function.
#[derive(Clone, Debug)]
pub struct MemoryFunction {
    /// Shared state.
    pub state: Arc<Mutex<MemoryState>>,
}

impl MemoryFunction {
    /// A virtio-blk-pci-shaped function.
    pub fn virtio_blk() -> Self {
        let mut c = vec![0u8; 4096];
        let mut put = |at: usize, bytes: &[u8]| c[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, &[0xf4, 0x1a, 0x42, 0x10]);
        put(0x06, &[0x10, 0x00]);
        put(0x14, &0u32.to_le_bytes());
        put(0x20, &0x0000_000cu32.to_le_bytes());
        put(0x34, &[0x98]);
        put(
            0x98,
            &[0x11, 0x84, 0x02, 0x00, 0x01, 0, 0, 0, 0x01, 0x08, 0, 0],
        );
        put(0x84, &[0x09, 0x00, 0x10]);
        let mut bars = vec![Vec::new(); 6];
        bars[1] = vec![0; 0x1000];
        bars[4] = vec![0; 0x4000];
        MemoryFunction {
            state: Arc::new(Mutex::new(MemoryState {
                config: c,
                bars,
                ..MemoryState::default()
            })),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut MemoryState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn slice(buf: &[u8], offset: u64, len: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(len)?;
    (end <= buf.len()).then_some(start..end)
}

impl VfioHost for MemoryFunction {
    fn region(&self, index: u32) -> RegionInfo {
        self.with(|s| {
            let size = match index {
                CONFIG_REGION => s.config.len(),
                i => s.bars.get(i as usize).map_or(0, Vec::len),
            } as u64;
            RegionInfo::plain(size, size >= 0x1000 && index != CONFIG_REGION)
        })
    }

    fn read(&self, index: u32, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        self.with(|s| {
            let buf = match index {
                CONFIG_REGION => &s.config,
                i => match s.bars.get(i as usize) {
                    Some(b) => b,
                    None => return,
                },
            };
            if let Some(r) = slice(buf, offset, data.len()) {
                data.copy_from_slice(&buf[r]);
            }
        });
    }

    fn write(&self, index: u32, offset: u64, data: &[u8]) {
        self.with(|s| {
            if index == CONFIG_REGION {
                s.config_writes.push((offset, data.to_vec()));
            }
            let buf = match index {
                CONFIG_REGION => &mut s.config,
                i => match s.bars.get_mut(i as usize) {
                    Some(b) => b,
                    None => return,
                },
            };
            if let Some(r) = slice(buf, offset, data.len()) {
                buf[r].copy_from_slice(data);
            }
        });
    }

    fn irq_count(&self, index: u32) -> u32 {
        if index == IRQ_MSIX { 3 } else { 0 }
    }

    fn enable_irqs(&self, index: u32, fds: &[&EventFd]) -> Result<(), VfioHostError> {
        self.with(|s| s.irq_sets.push((index, fds.len())));
        Ok(())
    }

    fn disable_irqs(&self, index: u32) -> Result<(), VfioHostError> {
        self.with(|s| s.irq_sets.push((index, 0)));
        Ok(())
    }

    fn reset(&self) {
        self.with(|s| s.resets += 1);
    }

    fn map(&self, index: u32, offset: u64, len: u64) -> Result<Mapping, VfioHostError> {
        Mapping::anonymous(len).map_err(|source| VfioHostError::Map {
            index,
            offset,
            len,
            source,
        })
    }
}
