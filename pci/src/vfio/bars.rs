//! A passthrough function's BARs as the guest sees them: which exist, how
//! they decode, how large the guest's BAR is, and which parts of each may
//! be mapped straight into the guest.
//!
//! Memory BARs keep the device's width and prefetchability; the guest size
//! is the region size rounded up to a power of two of at least 4 KiB, so
//! every BAR starts on its own page and a page never holds two BARs. I/O
//! BARs are hidden (arm64 has no port I/O; they read 0, "not
//! implemented"). The MSI-X table and PBA pages are never mapped: the VMM
//! owns the table (`caps.rs`), and the PBA reads through to the device.

use crate::config::{Bar, BarKind, MIN_BAR_SIZE};

use super::caps::MsixCap;
use super::host::RegionInfo;

/// Page granule of the mappings (the host's and the guest's base page).
pub const PAGE: u64 = 4096;

/// One BAR of a passthrough function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassthroughBar {
    /// BAR index (the VFIO region index).
    pub index: u8,
    /// What the guest's BAR register decodes.
    pub bar: Bar,
    /// Bytes the device implements.
    pub region_size: u64,
    /// Areas mapped into the guest: (offset, length), page aligned.
    pub mapped: Vec<(u64, u64)>,
}

/// Memory BAR register bits.
const BAR_IO: u32 = 1;
const BAR_TYPE_64: u32 = 0b10 << 1;
const BAR_PREFETCH: u32 = 1 << 3;

/// The function's memory BARs from its BAR registers (`raw[i]` = BAR i as
/// the device reports it) and `region(i)`, the host's region info.
pub fn discover(
    raw: [u32; 6],
    region: impl Fn(u32) -> RegionInfo,
    msix: Option<&MsixCap>,
) -> Vec<PassthroughBar> {
    let mut bars = Vec::new();
    let mut i = 0usize;
    while i < raw.len() {
        let reg = raw[i];
        let wide = reg & BAR_IO == 0 && reg & (0b11 << 1) == BAR_TYPE_64;
        let info = region(i as u32);
        let index = i as u8;
        i += if wide { 2 } else { 1 };
        if info.size == 0 {
            continue;
        }
        if reg & BAR_IO != 0 {
            log::info!(target: "vfio", "BAR {index}: I/O BAR ({:#x} bytes) hidden: arm64 has no port I/O", info.size);
            continue;
        }
        let size = info.size.next_power_of_two().max(MIN_BAR_SIZE);
        let bar = Bar {
            kind: if wide {
                BarKind::Mmio64
            } else {
                BarKind::Mmio32
            },
            size,
            prefetchable: reg & BAR_PREFETCH != 0,
        };
        let trapped = trapped_ranges(index, msix);
        let mapped = if info.mmap {
            mappable(&info, &trapped)
        } else {
            Vec::new()
        };
        bars.push(PassthroughBar {
            index,
            bar,
            region_size: info.size,
            mapped,
        });
    }
    bars
}

/// The MSI-X table and PBA ranges inside BAR `index`, widened to pages.
fn trapped_ranges(index: u8, msix: Option<&MsixCap>) -> Vec<(u64, u64)> {
    let Some(m) = msix else {
        return Vec::new();
    };
    [
        (m.table_bar, m.table_offset, m.table_len()),
        (m.pba_bar, m.pba_offset, m.pba_len()),
    ]
    .into_iter()
    .filter(|(bar, _, _)| *bar == index)
    .map(|(_, off, len)| {
        let start = off / PAGE * PAGE;
        (start, (off + len).div_ceil(PAGE) * PAGE)
    })
    .collect()
}

/// The mmappable areas of a region (its sparse areas, or all of it) minus
/// `trapped` page ranges ((start, end) pairs), each page aligned inward.
fn mappable(info: &RegionInfo, trapped: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let areas: Vec<(u64, u64)> = if info.sparse.is_empty() {
        vec![(0, info.size)]
    } else {
        info.sparse.clone()
    };
    let mut out = Vec::new();
    for (offset, len) in areas {
        // Cut [start, end) around every trapped range.
        let mut pieces = vec![(offset.div_ceil(PAGE) * PAGE, (offset + len) / PAGE * PAGE)];
        for (t0, t1) in trapped {
            pieces = pieces
                .into_iter()
                .flat_map(|(a, b)| [(a, b.min(*t0)), (a.max(*t1), b)])
                .filter(|(a, b)| a < b)
                .collect();
        }
        out.extend(pieces.into_iter().map(|(a, b)| (a, b - a)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU's virtio-blk-pci: BAR0 I/O (legacy), BAR1 4 KiB MMIO with the
    /// MSI-X table at 0 and the PBA at 0x800, BAR4 64-bit prefetchable 16 KiB.
    #[test]
    fn virtio_blk_bars_hide_io_trap_msix_and_map_the_rest() {
        let raw = [0xc001, 0x1000_0000, 0, 0, 0x8000_000c, 0];
        let msix = MsixCap {
            offset: 0x98,
            table_size: 2,
            table_bar: 1,
            table_offset: 0,
            pba_bar: 1,
            pba_offset: 0x800,
        };
        let bars = discover(
            raw,
            |i| match i {
                0 => RegionInfo::plain(0x80, false),
                1 => RegionInfo::plain(0x1000, true),
                4 => RegionInfo::plain(0x4000, true),
                _ => RegionInfo::plain(0, false),
            },
            Some(&msix),
        );
        assert_eq!(bars.len(), 2, "{bars:#?}");
        assert_eq!(
            (bars[0].index, bars[0].bar.kind, bars[0].bar.size),
            (1, BarKind::Mmio32, 0x1000)
        );
        assert!(bars[0].mapped.is_empty(), "MSI-X table + PBA page trapped");
        assert_eq!((bars[1].index, bars[1].bar.kind), (4, BarKind::Mmio64));
        assert!(bars[1].bar.prefetchable);
        assert_eq!(bars[1].mapped, [(0, 0x4000)]);
    }

    #[test]
    fn small_bars_grow_to_a_page_and_sparse_areas_lose_the_msix_pages() {
        let info = RegionInfo {
            size: 0x10000,
            sparse: vec![(0, 0x3000), (0x5000, 0xb000)],
            ..RegionInfo::plain(0x10000, true)
        };
        let msix = MsixCap {
            offset: 0x40,
            table_size: 64,
            table_bar: 0,
            table_offset: 0x8000,
            pba_bar: 0,
            pba_offset: 0x9000,
        };
        let bars = discover(
            [0, 0, 0, 0, 0, 0],
            |i| {
                if i == 0 {
                    info.clone()
                } else {
                    RegionInfo::plain(0, false)
                }
            },
            Some(&msix),
        );
        assert_eq!(
            bars[0].mapped,
            [(0, 0x3000), (0x5000, 0x3000), (0xa000, 0x6000)]
        );
        let tiny = discover(
            [0; 6],
            |i| {
                if i == 2 {
                    RegionInfo::plain(0x100, false)
                } else {
                    RegionInfo::plain(0, false)
                }
            },
            None,
        );
        assert_eq!((tiny[0].index, tiny[0].bar.size), (2, MIN_BAR_SIZE));
        assert!(tiny[0].mapped.is_empty(), "not mmappable: all trapped");
    }
}
