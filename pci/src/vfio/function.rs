//! The guest-visible PCI function of a passthrough device.
//!
//! Configuration space: the device's own, read and written through VFIO,
//! except what only the VM can give meaning to: the BARs (a shadow
//! [`ConfigSpace`] answers sizing and holds the guest's addresses), the
//! expansion ROM BAR (hidden: reads 0, "no ROM"), and the MSI / MSI-X
//! capabilities ([`super::caps`]). Command is written to both, so the
//! device decodes and masters as the guest asks and the VMM knows where
//! the BARs decode.
//!
//! BARs: each mmappable area is mapped once and installed as a guest
//! memory slot where the guest placed its BAR, while Memory Space is on and
//! the BAR lies inside the segment's windows; moving the BAR moves the
//! slot. Everything else of a BAR (the MSI-X table and PBA host pages,
//! BARs or pieces smaller than a host page, regions vfio-pci will not
//! mmap, a piece the host refuses to mmap, a slot KVM refuses) traps and is
//! forwarded: a function whose BARs cannot be mapped is slower, not broken.

use std::sync::Arc;

use arch::layout::Range;

use devices::mapping::{Mapping, Sentence};

use crate::config::{BAR0, Bar, BarError, COMMAND, ConfigSpace, DeviceIds, NUM_BARS};
use crate::device::{GuestMapper, PciDevice, SlotId};

use super::bars::{self, PassthroughBar};
use super::caps::{self, MsiState, MsixState};
use super::host::{CONFIG_REGION, IRQ_MSI, IRQ_MSIX, VfioHost};
use super::interrupts::{MsiRouter, Vectors};

/// Expansion ROM BAR of a type 0 header.
const ROM_BAR: u16 = 0x30;
/// Last byte (exclusive) of the six BARs.
const BARS_END: u16 = BAR0 + 4 * NUM_BARS as u16;

/// Where the function sits in the VM and what it talks to.
pub struct Wiring {
    /// Name in log lines (the sysfs path).
    pub name: String,
    /// ITS DeviceID its MSIs carry (as the IORT maps its RID).
    pub devid: u32,
    /// The segment's mmio32 and mmio64 windows: a BAR outside them is
    /// never mapped.
    pub windows: Vec<Range>,
    /// GSI routes and irqfds.
    pub router: Arc<dyn MsiRouter>,
    /// Guest memory slots.
    pub mapper: Arc<dyn GuestMapper>,
    /// The host's page size: the granule of every mmap and memory slot.
    pub host_page: u64,
}

/// Why a passthrough function could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// The function does not answer configuration reads.
    #[error("{name}: configuration space reads all-ones")]
    AllOnes {
        /// The function's name (sysfs path).
        name: String,
    },
    /// The device reports a BAR the shadow configuration space refuses.
    #[error("{name}: BAR {index}")]
    Bar {
        /// The function's name.
        name: String,
        /// BAR index.
        index: u8,
        /// Why the BAR was refused.
        #[source]
        source: BarError,
    },
}

/// One mapped area of a BAR and, while the guest sees it, its slot.
struct BarMap {
    index: u8,
    offset: u64,
    /// Shared with the slot while installed: unmapped after both let go.
    mapping: Arc<Mapping>,
    slot: Option<(SlotId, u64)>,
}

impl BarMap {
    /// The guest address of the installed slot.
    fn gpa(&self) -> Option<u64> {
        self.slot.map(|(_, gpa)| gpa)
    }
}

/// Counters of one passthrough function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VfioStats {
    /// Trapped BAR accesses (reads + writes).
    pub bar_traps: u64,
    /// Of those, MSI-X table accesses.
    pub msix_table: u64,
    /// Memory slot installs (BAR placements).
    pub slot_maps: u64,
}

/// A passthrough PCI function.
pub struct VfioPciDevice {
    host: Option<Box<dyn VfioHost>>,
    wiring: Wiring,
    shadow: ConfigSpace,
    bars: Vec<PassthroughBar>,
    maps: Vec<BarMap>,
    msix: Option<MsixState>,
    msix_vectors: Option<Vectors>,
    msi: Option<MsiState>,
    msi_vectors: Option<Vectors>,
    stats: VfioStats,
}

fn config_read(host: &dyn VfioHost, reg: u16, len: usize) -> u32 {
    let mut b = [0u8; 4];
    host.read(CONFIG_REGION, u64::from(reg), &mut b[..len]);
    u32::from_le_bytes(b)
}

impl VfioPciDevice {
    /// The function of `host`: capabilities walked, BARs discovered and
    /// mapped (not yet placed), MSI / MSI-X disabled.
    pub fn new(host: Box<dyn VfioHost>, wiring: Wiring) -> Result<Self, FunctionError> {
        let read = |reg: u16, len: usize| config_read(&*host, reg, len);
        let ids = read(0, 4);
        if ids & 0xffff == 0xffff {
            return Err(FunctionError::AllOnes {
                name: wiring.name.clone(),
            });
        }
        let caps = caps::walk(&read);
        let raw: [u32; 6] = std::array::from_fn(|i| read(BAR0 + 4 * i as u16, 4));
        let bars = bars::discover(
            raw,
            |i| host.region(i),
            caps.msix.as_ref(),
            wiring.host_page,
        );
        let mut shadow = ConfigSpace::type0(DeviceIds {
            vendor: ids as u16,
            device: (ids >> 16) as u16,
            class: 0,
            revision: 0,
            subsystem_vendor: 0,
            subsystem: 0,
        });
        let mut maps = Vec::new();
        for b in &bars {
            shadow
                .add_bar(b.index, b.bar)
                .map_err(|source| FunctionError::Bar {
                    name: wiring.name.clone(),
                    index: b.index,
                    source,
                })?;
            for (offset, len) in &b.mapped {
                let mapping = match host.map(u32::from(b.index), *offset, *len) {
                    Ok(mapping) => mapping,
                    Err(e) => {
                        log::warn!(
                            target: "vfio",
                            "{}: BAR {} piece {offset:#x}+{len:#x} stays trapped: {}",
                            wiring.name, b.index, Sentence(&e)
                        );
                        continue;
                    }
                };
                maps.push(BarMap {
                    index: b.index,
                    offset: *offset,
                    mapping: Arc::new(mapping),
                    slot: None,
                });
            }
        }
        let msix = caps.msix.map(MsixState::new);
        let msi = caps
            .msi
            .map(|c| MsiState::new(c, read(c.offset, 2) as u16, read(c.offset + 2, 2) as u16));
        // Each BAR with the pieces mapped into the guest (the rest traps),
        // e.g. "BAR0 0x20000 mapped [0x0+0x10000]" on a 64 KiB-page host.
        let layout: Vec<String> = bars
            .iter()
            .map(|b| {
                let pieces: Vec<String> = maps
                    .iter()
                    .filter(|m| m.index == b.index)
                    .map(|m| format!("{:#x}+{:#x}", m.offset, m.mapping.len()))
                    .collect();
                format!(
                    "BAR{} {:#x} mapped [{}]",
                    b.index,
                    b.bar.size,
                    pieces.join(" ")
                )
            })
            .collect();
        log::info!(
            target: "vfio",
            "{}: {:04x}:{:04x}, host page {:#x}, {}, MSI-X {}, MSI {}",
            wiring.name, ids & 0xffff, ids >> 16, wiring.host_page,
            layout.join(", "),
            msix.as_ref().map_or(0, |m| m.vectors()),
            msi.as_ref().map_or(0, |m| 1usize << m.cap.mmc),
        );
        Ok(VfioPciDevice {
            host: Some(host),
            wiring,
            shadow,
            bars,
            maps,
            msix,
            msix_vectors: None,
            msi,
            msi_vectors: None,
            stats: VfioStats::default(),
        })
    }

    /// The function's counters.
    pub fn stats(&self) -> VfioStats {
        self.stats
    }

    /// Install, move or remove the BAR slots to match Command and the BARs.
    fn sync_maps(&mut self) {
        let enabled = self.shadow.memory_enabled();
        for m in &mut self.maps {
            let Some(bar) = self.bars.iter().find(|b| b.index == m.index) else {
                continue;
            };
            let base = self.shadow.bar_address(m.index).unwrap_or(0);
            let inside = self.wiring.windows.iter().any(|w| {
                base >= w.base && base.checked_add(bar.bar.size).is_some_and(|e| e <= w.end())
            });
            // KVM takes a slot only at a host-page-aligned address; a BAR
            // of a host page or more is aligned to its size, so this holds
            // unless the guest placed the BAR where the decode does not.
            let aligned = (base + m.offset) % self.wiring.host_page == 0;
            let want = (enabled && base != 0 && inside && aligned).then_some(base + m.offset);
            if enabled && base != 0 && !inside {
                devices::guest_log!(warn,
                    target: "vfio",
                    "{}: BAR {} at {base:#x} lies outside the PCI windows; not mapped",
                    self.wiring.name, m.index
                );
            }
            if m.gpa() == want {
                continue;
            }
            if let Some((slot, old)) = m.slot.take()
                && let Err(e) = self.wiring.mapper.remove_region(slot)
            {
                devices::guest_log!(error, target: "vfio", "{}: BAR {} slot at {old:#x}: {}", self.wiring.name, m.index, Sentence(&e));
                // The guest still reaches the old slot: keep it.
                m.slot = Some((slot, old));
                continue;
            }
            if let Some(gpa) = want {
                match self.wiring.mapper.add_region(gpa, m.mapping.clone()) {
                    Ok(slot) => {
                        m.slot = Some((slot, gpa));
                        self.stats.slot_maps += 1;
                    }
                    // The area keeps working through traps.
                    Err(e) => {
                        devices::guest_log!(error, target: "vfio", "{}: BAR {} slot at {gpa:#x}: {}", self.wiring.name, m.index, Sentence(&e))
                    }
                }
            }
        }
    }

    /// Bring the host MSI-X vectors and their routes in line with the
    /// guest's capability and table; `entry` limits the sync to one entry.
    fn sync_msix(&mut self, entry: Option<usize>) {
        let (Some(host), Some(msix)) = (&self.host, &self.msix) else {
            return;
        };
        let router = &*self.wiring.router;
        if msix.enabled() && self.msix_vectors.is_none() {
            let count = msix.vectors().min(host.irq_count(IRQ_MSIX) as usize);
            match Vectors::enable(&**host, router, IRQ_MSIX, count, self.wiring.devid) {
                Ok(v) => self.msix_vectors = Some(v),
                Err(e) => {
                    devices::guest_log!(error, target: "vfio", "{}: MSI-X enable: {}", self.wiring.name, Sentence(&e));
                    return;
                }
            }
        }
        if !msix.enabled() {
            if let Some(mut v) = self.msix_vectors.take() {
                v.release(router);
                if let Err(e) = host.disable_irqs(IRQ_MSIX) {
                    devices::guest_log!(error, target: "vfio", "{}: {}", self.wiring.name, Sentence(&e));
                }
            }
            return;
        }
        if let Some(v) = &mut self.msix_vectors {
            let range = match entry {
                Some(i) => i..i + 1,
                None => 0..v.len(),
            };
            for i in range {
                v.sync(router, i, msix.message(i));
            }
        }
    }

    /// The same for MSI.
    fn sync_msi(&mut self) {
        let (Some(host), Some(msi)) = (&self.host, &self.msi) else {
            return;
        };
        let router = &*self.wiring.router;
        let want = msi.enabled().then(|| msi.vectors());
        if self.msi_vectors.as_ref().map(Vectors::len) != want
            && let Some(mut v) = self.msi_vectors.take()
        {
            v.release(router);
            if let Err(e) = host.disable_irqs(IRQ_MSI) {
                devices::guest_log!(error, target: "vfio", "{}: {}", self.wiring.name, Sentence(&e));
            }
        }
        if let Some(count) = want
            && self.msi_vectors.is_none()
        {
            match Vectors::enable(&**host, router, IRQ_MSI, count, self.wiring.devid) {
                Ok(v) => self.msi_vectors = Some(v),
                Err(e) => {
                    devices::guest_log!(error, target: "vfio", "{}: MSI enable: {}", self.wiring.name, Sentence(&e))
                }
            }
        }
        if let Some(v) = &mut self.msi_vectors {
            for i in 0..v.len() {
                v.sync(router, i, msi.message(i));
            }
        }
    }
}

/// Bytes of `reg..reg+len` that fall in `lo..hi`.
fn overlaps(reg: u16, len: usize, lo: u16, hi: u16) -> bool {
    reg < hi && reg + len as u16 > lo
}

impl PciDevice for VfioPciDevice {
    fn read_config(&mut self, reg: u16, data: &mut [u8]) {
        let Some(host) = &self.host else {
            data.fill(0xff);
            return;
        };
        if overlaps(reg, data.len(), BAR0, BARS_END) {
            self.shadow.read(reg, data);
            return;
        }
        if overlaps(reg, data.len(), ROM_BAR, ROM_BAR + 4) {
            data.fill(0);
            return;
        }
        if let Some(msi) = &self.msi
            && msi.covers(reg, data.len())
        {
            msi.read(reg, data);
            return;
        }
        host.read(CONFIG_REGION, u64::from(reg), data);
        if let Some(msix) = &self.msix
            && msix.is_control(reg, data.len())
        {
            let c = msix.cap.offset + 2;
            let device = config_read(&**host, c, 2) as u16;
            let control = msix.control(device).to_le_bytes();
            for (k, byte) in data.iter_mut().enumerate() {
                let at = reg + k as u16;
                if at >= c && at < c + 2 {
                    *byte = control[usize::from(at - c)];
                }
            }
        }
    }

    fn write_config(&mut self, reg: u16, data: &[u8]) {
        let Some(host) = &self.host else {
            return;
        };
        if overlaps(reg, data.len(), BAR0, BARS_END) {
            self.shadow.write(reg, data);
            self.sync_maps();
            return;
        }
        if overlaps(reg, data.len(), ROM_BAR, ROM_BAR + 4) {
            return;
        }
        if let Some(msi) = &mut self.msi
            && msi.covers(reg, data.len())
        {
            msi.write(reg, data);
            self.sync_msi();
            return;
        }
        if let Some(msix) = &mut self.msix
            && msix.is_control(reg, data.len())
        {
            msix.write_control(reg, data);
            self.sync_msix(None);
            return;
        }
        host.write(CONFIG_REGION, u64::from(reg), data);
        if overlaps(reg, data.len(), COMMAND, COMMAND + 2) {
            self.shadow.write(reg, data);
            self.sync_maps();
        }
    }

    fn bars(&self) -> Vec<(u8, Bar)> {
        self.shadow.bars()
    }

    fn set_bar_address(&mut self, index: u8, addr: u64) {
        self.shadow.set_bar_address(index, addr);
        self.sync_maps();
    }

    fn decoded_bars(&self) -> Vec<(u8, u64, u64)> {
        if !self.shadow.memory_enabled() {
            return Vec::new();
        }
        self.bars
            .iter()
            .filter_map(|b| {
                let base = self.shadow.bar_address(b.index)?;
                (base != 0).then_some((b.index, base, b.bar.size))
            })
            .collect()
    }

    fn bar_read(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        self.stats.bar_traps += 1;
        if let Some(msix) = &self.msix
            && msix.in_table(index, offset)
        {
            self.stats.msix_table += 1;
            msix.read_table(offset, data);
            return;
        }
        match (&self.host, self.bars.iter().find(|b| b.index == index)) {
            (Some(host), Some(b)) if offset + data.len() as u64 <= b.region_size => {
                host.read(u32::from(index), offset, data);
            }
            _ => data.fill(0xff),
        }
    }

    fn bar_write(&mut self, index: u8, offset: u64, data: &[u8]) {
        self.stats.bar_traps += 1;
        if let Some(msix) = &mut self.msix
            && msix.in_table(index, offset)
        {
            self.stats.msix_table += 1;
            if let Some(entry) = msix.write_table(offset, data) {
                self.sync_msix(Some(entry));
            }
            return;
        }
        match (&self.host, self.bars.iter().find(|b| b.index == index)) {
            (Some(host), Some(b)) if offset + data.len() as u64 <= b.region_size => {
                host.write(u32::from(index), offset, data);
            }
            _ => {
                log::debug!(target: "vfio", "{}: write past BAR {index} at {offset:#x} dropped", self.wiring.name)
            }
        }
    }

    /// Slots out (before their mappings go), vectors unwired and disabled,
    /// the function reset, then the VFIO device closed.
    fn release(&mut self) {
        let Some(host) = self.host.take() else {
            return;
        };
        for m in &mut self.maps {
            if let Some((slot, gpa)) = m.slot.take()
                && let Err(e) = self.wiring.mapper.remove_region(slot)
            {
                devices::guest_log!(error, target: "vfio", "{}: BAR slot at {gpa:#x}: {}", self.wiring.name, Sentence(&e));
            }
        }
        self.maps.clear();
        let router = &*self.wiring.router;
        for (vectors, index) in [
            (&mut self.msix_vectors, IRQ_MSIX),
            (&mut self.msi_vectors, IRQ_MSI),
        ] {
            if let Some(mut v) = vectors.take() {
                v.release(router);
                if let Err(e) = host.disable_irqs(index) {
                    log::error!(target: "vfio", "{}: {}", self.wiring.name, Sentence(&e));
                }
            }
        }
        host.reset();
        drop(host);
        let st = self.stats;
        log::info!(
            target: "vfio",
            "{}: reset and released (bar_traps={} msix_table={} slot_maps={})",
            self.wiring.name, st.bar_traps, st.msix_table, st.slot_maps
        );
    }
}

impl Drop for VfioPciDevice {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
#[path = "function_tests.rs"]
mod tests;
