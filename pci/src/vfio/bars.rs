//! A passthrough function's BARs as the guest sees them: which exist, how
//! they decode, how large the guest's BAR is, and which parts of each may
//! be mapped straight into the guest.
//!
//! Memory BARs keep the device's width and prefetchability; the guest size
//! is the region size rounded up to a power of two of at least 4 KiB (the
//! guest's page), so every BAR starts on its own guest page and a page
//! never holds two BARs. I/O BARs are hidden (arm64 has no port I/O; they
//! read 0, "not implemented"). The MSI-X table and PBA are never mapped:
//! the VMM owns the table (`caps.rs`), and the PBA reads through to the
//! device.
//!
//! Mapped pieces are cut at the HOST page size, which the caller passes in
//! (4 KiB on most hosts, 64 KiB on Grace's usual kernels): the host can
//! only `mmap` a region at a host-page offset (EINVAL otherwise) and KVM
//! only accepts a memory slot of whole host pages at a host-page-aligned
//! guest address. So the MSI-X table and PBA are widened to host pages, a
//! sparse area is shrunk inward to host pages, and whatever is left smaller
//! than one host page (a small BAR, a sliver beside the table) traps. A
//! piece that starts at a host-page offset lands on a host-page-aligned
//! guest address, because a BAR of at least a host page is aligned to its
//! own size.

use crate::config::{Bar, BarKind, MIN_BAR_SIZE};

use super::caps::MsixCap;
use super::host::RegionInfo;

/// One BAR of a passthrough function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassthroughBar {
    /// BAR index (the VFIO region index).
    pub index: u8,
    /// What the guest's BAR register decodes.
    pub bar: Bar,
    /// Bytes the device implements.
    pub region_size: u64,
    /// Areas mapped into the guest: (offset, length), host page aligned.
    pub mapped: Vec<(u64, u64)>,
}

/// Memory BAR register bits.
const BAR_IO: u32 = 1;
const BAR_TYPE_64: u32 = 0b10 << 1;
const BAR_PREFETCH: u32 = 1 << 3;

/// The function's memory BARs from its BAR registers (`raw[i]` = BAR i as
/// the device reports it) and `region(i)`, the host's region info, with
/// mapped pieces cut at `host_page` (a power of two).
pub fn discover(
    raw: [u32; 6],
    region: impl Fn(u32) -> RegionInfo,
    msix: Option<&MsixCap>,
    host_page: u64,
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
        let trapped = trapped_ranges(index, msix, host_page);
        let mapped = if info.mmap {
            mappable(&info, &trapped, host_page)
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

/// The MSI-X table and PBA ranges inside BAR `index`, widened to host pages.
fn trapped_ranges(index: u8, msix: Option<&MsixCap>, page: u64) -> Vec<(u64, u64)> {
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
        let start = off / page * page;
        (start, (off + len).div_ceil(page) * page)
    })
    .collect()
}

/// The mmappable areas of a region (its sparse areas, or all of it) minus
/// `trapped` page ranges ((start, end) pairs), each aligned inward to host
/// pages; what is left of an area is at least one host page or nothing.
fn mappable(info: &RegionInfo, trapped: &[(u64, u64)], page: u64) -> Vec<(u64, u64)> {
    let areas: Vec<(u64, u64)> = if info.sparse.is_empty() {
        vec![(0, info.size)]
    } else {
        info.sparse.clone()
    };
    let mut out = Vec::new();
    for (offset, len) in areas {
        // Cut [start, end) around every trapped range.
        // A sparse area past the region's end is the host's mistake: clip.
        let end = offset.saturating_add(len).min(info.size);
        let mut pieces = vec![(offset.div_ceil(page) * page, end / page * page)];
        for (t0, t1) in trapped {
            pieces = pieces
                .into_iter()
                .flat_map(|(a, b)| [(a, b.min(*t0)), (a.max(*t1), b)])
                .filter(|(a, b)| a < b)
                .collect();
        }
        out.extend(
            pieces
                .into_iter()
                .filter(|(a, b)| a < b)
                .map(|(a, b)| (a, b - a)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const K4: u64 = 4 << 10;
    const K64: u64 = 64 << 10;

    /// BAR `index` is `info`; every other region is absent.
    fn one_bar(index: u32, info: RegionInfo) -> impl Fn(u32) -> RegionInfo {
        move |i| {
            if i == index {
                info.clone()
            } else {
                RegionInfo::plain(0, false)
            }
        }
    }

    /// A 64-bit BAR 0 of `size` bytes with the MSI-X table and PBA in it.
    fn msix_in_bar0(table_offset: u64, pba_offset: u64) -> MsixCap {
        MsixCap {
            offset: 0x40,
            table_size: 64,
            table_bar: 0,
            table_offset,
            pba_bar: 0,
            pba_offset,
        }
    }

    const BAR0_64: [u32; 6] = [0b100, 0, 0, 0, 0, 0];

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
        let region = |i| match i {
            0 => RegionInfo::plain(0x80, false),
            1 => RegionInfo::plain(0x1000, true),
            4 => RegionInfo::plain(0x4000, true),
            _ => RegionInfo::plain(0, false),
        };
        let bars = discover(raw, region, Some(&msix), K4);
        assert_eq!(bars.len(), 2, "{bars:#?}");
        assert_eq!(
            (bars[0].index, bars[0].bar.kind, bars[0].bar.size),
            (1, BarKind::Mmio32, 0x1000)
        );
        assert!(bars[0].mapped.is_empty(), "MSI-X table + PBA page trapped");
        assert_eq!((bars[1].index, bars[1].bar.kind), (4, BarKind::Mmio64));
        assert!(bars[1].bar.prefetchable);
        assert_eq!(bars[1].mapped, [(0, 0x4000)]);

        // On a 64 KiB host the 16 KiB BAR4 is smaller than a host page: the
        // guest still sees 16 KiB, all of it trapped.
        let bars = discover(raw, region, Some(&msix), K64);
        assert_eq!((bars[1].index, bars[1].bar.size), (4, 0x4000));
        assert!(bars[1].mapped.is_empty(), "{:x?}", bars[1].mapped);
    }

    #[test]
    fn table_and_pba_are_cut_out_at_4k_on_a_4k_host() {
        let bars = discover(
            BAR0_64,
            one_bar(0, RegionInfo::plain(0x4_0000, true)),
            Some(&msix_in_bar0(0x2_0000, 0x2_1000)),
            K4,
        );
        assert_eq!(bars[0].bar.size, 0x4_0000);
        assert_eq!(bars[0].mapped, [(0, 0x2_0000), (0x2_2000, 0x1_e000)]);
    }

    #[test]
    fn table_and_pba_are_cut_out_at_64k_on_a_64k_host() {
        // The same device as above: on a 64 KiB host the table's and PBA's
        // host page is 0x20000..0x30000, and every piece starts at a
        // multiple of 64 KiB (a 4 KiB offset would be EINVAL for mmap).
        let bars = discover(
            BAR0_64,
            one_bar(0, RegionInfo::plain(0x4_0000, true)),
            Some(&msix_in_bar0(0x2_0000, 0x2_1000)),
            K64,
        );
        assert_eq!(bars[0].mapped, [(0, 0x2_0000), (0x3_0000, 0x1_0000)]);
        for (offset, len) in &bars[0].mapped {
            assert_eq!((offset % K64, len % K64), (0, 0), "{:x?}", bars[0].mapped);
        }
        // A PBA in the next 64 KiB page takes that page too.
        let bars = discover(
            BAR0_64,
            one_bar(0, RegionInfo::plain(0x4_0000, true)),
            Some(&msix_in_bar0(0x2_0000, 0x3_8000)),
            K64,
        );
        assert_eq!(bars[0].mapped, [(0, 0x2_0000)]);
    }

    #[test]
    fn sparse_areas_lose_the_msix_pages_and_shrink_to_host_pages() {
        let info = RegionInfo {
            sparse: vec![(0, 0x3000), (0x5000, 0xb000)],
            ..RegionInfo::plain(0x10000, true)
        };
        let msix = msix_in_bar0(0x8000, 0x9000);
        let bars = discover([0; 6], one_bar(0, info.clone()), Some(&msix), K4);
        assert_eq!(
            bars[0].mapped,
            [(0, 0x3000), (0x5000, 0x3000), (0xa000, 0x6000)]
        );
        // One 64 KiB host page holds the whole 64 KiB BAR: no sparse area
        // covers a whole host page, so all of it traps.
        let bars = discover([0; 6], one_bar(0, info), Some(&msix), K64);
        assert!(bars[0].mapped.is_empty(), "{:x?}", bars[0].mapped);
    }

    #[test]
    fn sparse_areas_of_a_big_bar_keep_whole_64k_pages_only() {
        // nvgrace-gpu style: a BAR rounded up to a power of two whose
        // sparse area covers the real memory, here ending mid-page.
        let info = RegionInfo {
            sparse: vec![(0x1000, 0x2_f000), (0x4_0000, 0x1_8000)],
            ..RegionInfo::plain(0x8_0000, true)
        };
        let bars = discover(BAR0_64, one_bar(0, info.clone()), None, K64);
        assert_eq!(bars[0].mapped, [(0x1_0000, 0x2_0000), (0x4_0000, 0x1_0000)]);
        let bars = discover(BAR0_64, one_bar(0, info), None, K4);
        assert_eq!(bars[0].mapped, [(0x1000, 0x2_f000), (0x4_0000, 0x1_8000)]);
    }

    #[test]
    fn small_bars_grow_to_a_guest_page_and_trap_when_below_a_host_page() {
        for host_page in [K4, K64] {
            let tiny = discover(
                [0; 6],
                one_bar(2, RegionInfo::plain(0x100, true)),
                None,
                host_page,
            );
            assert_eq!((tiny[0].index, tiny[0].bar.size), (2, MIN_BAR_SIZE));
            assert!(tiny[0].mapped.is_empty(), "a 256-byte BAR always traps");
        }
        let eight_k = |host_page| {
            discover(
                [0; 6],
                one_bar(0, RegionInfo::plain(0x2000, true)),
                None,
                host_page,
            )
        };
        assert_eq!(eight_k(K4)[0].mapped, [(0, 0x2000)]);
        assert!(
            eight_k(K64)[0].mapped.is_empty(),
            "8 KiB < one 64 KiB host page"
        );
        assert_eq!(
            eight_k(K64)[0].bar.size,
            0x2000,
            "the guest's BAR keeps its size"
        );
        let not_mmappable = discover(
            [0; 6],
            one_bar(0, RegionInfo::plain(0x1_0000, false)),
            None,
            K4,
        );
        assert!(
            not_mmappable[0].mapped.is_empty(),
            "not mmappable: all trapped"
        );
    }
}
