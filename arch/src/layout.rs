//! The aarch64 guest physical memory map and interrupt numbering.
//!
//! ```text
//! 0x0800_0000  GICv3 distributor                      64 KiB
//! 0x0808_0000  GICv3 ITS                              128 KiB
//! 0x080A_0000  GICv3 redistributors                   128 KiB per vCPU (max 123)
//! 0x0900_0000  PL011 UART                             4 KiB
//! 0x0A00_0000  vSMMUv3 windows                        128 KiB each, 128 KiB stride
//! 0x0B00_0000  CMDQ-V windows                         0x50000 each, 512 KiB stride
//! 0x1000_0000  PCI 32-bit MMIO windows                16 MiB per segment
//! 0x3000_0000  PCIe ECAM                              16 MiB (16 buses) per segment (max 15)
//! 0x4000_0000  RAM                                    up to 511 GiB
//! 0x80_0000_0000  PCI 64-bit MMIO windows             64 GiB per segment
//! ```
//!
//! Every address the VMM, the ACPI tables and the device tree use comes from
//! a [`Layout`]; nothing else in the workspace types an address.

use std::fmt;

/// Size of one GiB.
pub const GIB: u64 = 1 << 30;
/// Size of one MiB.
pub const MIB: u64 = 1 << 20;

/// GICv3 distributor base (GICD).
pub const GIC_DIST_BASE: u64 = 0x0800_0000;
/// GICv3 distributor size.
pub const GIC_DIST_SIZE: u64 = 0x1_0000;
/// GICv3 ITS base (GITS); its translation register is at +0x1_0040.
pub const GIC_ITS_BASE: u64 = 0x0808_0000;
/// GICv3 ITS size (control frame + translation frame).
pub const GIC_ITS_SIZE: u64 = 0x2_0000;
/// GICv3 redistributor region base (GICR).
pub const GIC_REDIST_BASE: u64 = 0x080A_0000;
/// One redistributor (RD_base + SGI_base frames) per vCPU.
pub const GIC_REDIST_SIZE_PER_CPU: u64 = 0x2_0000;
/// End of the redistributor region (exclusive).
pub const GIC_REDIST_END: u64 = 0x0900_0000;
/// The most vCPUs whose redistributors fit below [`GIC_REDIST_END`].
pub const MAX_VCPUS: u32 = ((GIC_REDIST_END - GIC_REDIST_BASE) / GIC_REDIST_SIZE_PER_CPU) as u32;

/// PL011 UART base.
pub const UART_BASE: u64 = 0x0900_0000;
/// PL011 UART window size.
pub const UART_SIZE: u64 = 0x1000;

/// First vSMMUv3 window.
pub const SMMU_BASE: u64 = 0x0A00_0000;
/// A vSMMUv3 window: register page 0 and page 1 (SMMUv3 spec 6.1).
pub const SMMU_SIZE: u64 = 0x2_0000;
/// Distance between two vSMMUv3 windows.
pub const SMMU_STRIDE: u64 = 0x2_0000;

/// First CMDQ-V window.
pub const CMDQV_BASE: u64 = 0x0B00_0000;
/// A CMDQ-V window: config page, global VCMDQ page0/page1, VINTF0 page0/page1.
pub const CMDQV_SIZE: u64 = 0x5_0000;
/// Distance between two CMDQ-V windows (keeps every page 64 KiB aligned, as
/// page0 is mapped into the guest with the host's page size, 64 KiB on Grace).
pub const CMDQV_STRIDE: u64 = 0x8_0000;
/// Offset of VINTF0 page0 inside a CMDQ-V window.
pub const CMDQV_VINTF0_PAGE0_OFFSET: u64 = 0x3_0000;
/// Size of a CMDQ-V page.
pub const CMDQV_PAGE_SIZE: u64 = 0x1_0000;

/// At most this many vSMMUs (and so CMDQ-Vs) in one VM.
pub const MAX_VSMMUS: u32 = 16;
/// At most this many PCI segments (their ITS DeviceIDs must fit below
/// [`SMMU_DEVICE_ID_BASE`]).
pub const MAX_PCI_SEGMENTS: u16 = 15;

/// First PCI 32-bit MMIO window.
pub const PCI_MMIO32_BASE: u64 = 0x1000_0000;
/// One segment's 32-bit MMIO window.
pub const PCI_MMIO32_SIZE: u64 = 16 * MIB;
/// First PCIe ECAM window.
pub const PCI_ECAM_BASE: u64 = 0x3000_0000;
/// Buses per segment (ECAM spends 1 MiB per bus).
pub const PCI_BUSES_PER_SEGMENT: u16 = 16;
/// One segment's ECAM window.
pub const PCI_ECAM_SIZE: u64 = PCI_BUSES_PER_SEGMENT as u64 * MIB;

/// Guest RAM starts here.
pub const RAM_START: u64 = 0x4000_0000;
/// First PCI 64-bit MMIO window; RAM must end below it.
pub const PCI_MMIO64_BASE: u64 = 0x80_0000_0000;
/// One segment's 64-bit MMIO window.
pub const PCI_MMIO64_SIZE: u64 = 64 * GIB;
/// The most RAM that fits between [`RAM_START`] and [`PCI_MMIO64_BASE`].
pub const MAX_RAM_SIZE: u64 = PCI_MMIO64_BASE - RAM_START;
/// The top of RAM holds what firmware would leave for the kernel: ACPI
/// tables, then the EFI system table, memory map and stub device tree.
pub const FIRMWARE_REGION_SIZE: u64 = 2 * MIB;

/// Shared peripheral interrupts start at INTID 32; an ACPI GSIV is the INTID.
pub const SPI_BASE: u32 = 32;
/// PL011 interrupt (GSIV).
pub const UART_GSIV: u32 = SPI_BASE + 1;
/// First interrupt of the vSMMU block: each vSMMU `i` takes four GSIVs from
/// `SMMU_GSIV_BASE + 4 * i`: eventq, gerror, cmdq-sync, then its CMDQ-V.
pub const SMMU_GSIV_BASE: u32 = SPI_BASE + 16;
/// PCI legacy INTx: segment `s` pin `p` (0 = INTA) is `PCI_INTX_GSIV_BASE + 4 * s + p`.
pub const PCI_INTX_GSIV_BASE: u32 = SPI_BASE + 96;
/// Highest SPI INTID we use, rounded up to the distributor's 32-line granule.
pub const GIC_NR_IRQS: u32 = 256;

/// Architected timer PPIs (INTIDs), as Linux and the GTDT expect them.
pub const TIMER_EL1_SECURE_PPI: u32 = 29;
/// Non-secure EL1 physical timer.
pub const TIMER_EL1_NONSECURE_PPI: u32 = 30;
/// Virtual timer.
pub const TIMER_VIRTUAL_PPI: u32 = 27;
/// Non-secure EL2 physical timer.
pub const TIMER_EL2_PPI: u32 = 26;
/// GIC maintenance interrupt (for a guest hypervisor; unused but described).
pub const GIC_MAINTENANCE_PPI: u32 = 25;

/// KVM's virtual ITS implements 16 DeviceID bits (GITS_TYPER.Devbits), so
/// every DeviceID the IORT hands out must fit in 16 bits.
pub const ITS_DEVICE_ID_BITS: u32 = 16;
/// Requester IDs one segment spans: 256 per bus.
pub const PCI_RIDS_PER_SEGMENT: u32 = PCI_BUSES_PER_SEGMENT as u32 * 256;
/// vSMMU `i`'s own DeviceID (for its MSIs) is `SMMU_DEVICE_ID_BASE + i`,
/// above every PCI DeviceID.
pub const SMMU_DEVICE_ID_BASE: u32 = MAX_PCI_SEGMENTS as u32 * PCI_RIDS_PER_SEGMENT;

/// The ITS DeviceID of requester `rid` on PCI segment `segment`: segments
/// take consecutive blocks of [`PCI_RIDS_PER_SEGMENT`] IDs.
pub fn pci_its_device_id(segment: u16, rid: u16) -> u32 {
    u32::from(segment) * PCI_RIDS_PER_SEGMENT + u32::from(rid)
}

/// The MPIDR affinity KVM gives vCPU `index` (Aff0 holds 16 CPUs, Aff1 the
/// cluster), which the MADT GICC entries must match.
pub fn vcpu_mpidr(index: u32) -> u64 {
    let aff0 = u64::from(index % 16);
    let aff1 = u64::from((index / 16) & 0xff);
    (aff1 << 8) | aff0
}

/// What a VM needs room for; [`Layout::new`] checks it fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest RAM in bytes.
    pub ram_size: u64,
    /// Number of PCI segments (0..n).
    pub pci_segments: u16,
    /// Number of vSMMUs.
    pub vsmmus: u32,
}

/// Why a topology does not fit the address map.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Too many vCPUs for the redistributor region.
    #[error("{0} vCPUs requested; the GICv3 redistributor region holds at most {MAX_VCPUS}")]
    TooManyVcpus(u32),
    /// No vCPU.
    #[error("a VM needs at least one vCPU")]
    NoVcpus,
    /// RAM does not fit below the 64-bit PCI windows.
    #[error(
        "{0:#x} bytes of RAM requested; at most {MAX_RAM_SIZE:#x} fit below the PCI 64-bit windows"
    )]
    TooMuchRam(u64),
    /// RAM size below 4 MiB or not a multiple of 2 MiB.
    #[error("RAM size {0:#x} must be a multiple of 2 MiB and at least 4 MiB")]
    BadRamSize(u64),
    /// Too many PCI segments.
    #[error("{0} PCI segments requested; at most {MAX_PCI_SEGMENTS} are supported")]
    TooManySegments(u16),
    /// Too many vSMMUs.
    #[error("{0} vSMMUs requested; at most {MAX_VSMMUS} are supported")]
    TooManyVsmmus(u32),
    /// The 64-bit BARs of a segment do not fit any guest address.
    #[error(
        "PCI segment {segment} needs {need:#x} bytes of 64-bit BARs, more than a guest address \
         map of {MAX_GUEST_PA_BITS} bits holds; put its functions on more segments"
    )]
    Mmio64TooLarge {
        /// The segment.
        segment: u16,
        /// Bytes of 64-bit BARs.
        need: u64,
    },
}

/// The largest guest physical address size (arm64 LPA: 52 bits).
pub const MAX_GUEST_PA_BITS: u32 = 52;

/// A guest physical address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Range {
    /// The first byte past the range.
    pub fn end(self) -> u64 {
        self.base + self.size
    }

    /// True when `addr` falls inside the range.
    pub fn contains(self, addr: u64) -> bool {
        addr >= self.base && addr - self.base < self.size
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.base, self.end())
    }
}

/// The windows of one PCI segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciSegmentLayout {
    /// Segment (domain) number.
    pub id: u16,
    /// ECAM window.
    pub ecam: Range,
    /// Last bus number the ECAM covers (buses 0..=last_bus).
    pub last_bus: u8,
    /// 32-bit prefetchable-or-not BAR window.
    pub mmio32: Range,
    /// 64-bit BAR window.
    pub mmio64: Range,
    /// GSIV of INTA (INTB..INTD follow).
    pub intx_gsiv: u32,
}

/// The windows and interrupts of one vSMMU and its (optional) CMDQ-V.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VsmmuLayout {
    /// Index of the vSMMU in the VM.
    pub index: u32,
    /// SMMUv3 register window (page 0 + page 1).
    pub smmu: Range,
    /// CMDQ-V window, used when the vSMMU has a CMDQ-V.
    pub cmdqv: Range,
    /// Event queue GSIV.
    pub eventq_gsiv: u32,
    /// Global error GSIV.
    pub gerror_gsiv: u32,
    /// CMD_SYNC completion GSIV.
    pub sync_gsiv: u32,
    /// CMDQ-V error GSIV.
    pub cmdqv_gsiv: u32,
    /// The vSMMU's own ITS DeviceID.
    pub its_device_id: u32,
}

/// The whole guest address map of one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// What the layout was built for.
    pub topology: Topology,
    /// Guest RAM.
    pub ram: Range,
    /// Redistributor region actually used (one frame pair per vCPU).
    pub gic_redist: Range,
    /// Firmware hand-off region at the top of RAM (ACPI tables first).
    pub firmware: Range,
    /// PCI segments, by id.
    pub pci_segments: Vec<PciSegmentLayout>,
    /// vSMMUs, by index.
    pub vsmmus: Vec<VsmmuLayout>,
}

impl Layout {
    /// Lay out a VM, or say which limit the topology exceeds.
    pub fn new(topology: Topology) -> Result<Self, LayoutError> {
        if topology.vcpus == 0 {
            return Err(LayoutError::NoVcpus);
        }
        if topology.vcpus > MAX_VCPUS {
            return Err(LayoutError::TooManyVcpus(topology.vcpus));
        }
        if topology.ram_size < 2 * FIRMWARE_REGION_SIZE || topology.ram_size % (2 * MIB) != 0 {
            return Err(LayoutError::BadRamSize(topology.ram_size));
        }
        if topology.ram_size > MAX_RAM_SIZE {
            return Err(LayoutError::TooMuchRam(topology.ram_size));
        }
        if topology.pci_segments > MAX_PCI_SEGMENTS {
            return Err(LayoutError::TooManySegments(topology.pci_segments));
        }
        if topology.vsmmus > MAX_VSMMUS {
            return Err(LayoutError::TooManyVsmmus(topology.vsmmus));
        }
        let pci_segments = (0..topology.pci_segments).map(segment_layout).collect();
        let vsmmus = (0..topology.vsmmus).map(vsmmu_layout).collect();
        Ok(Layout {
            topology,
            ram: Range {
                base: RAM_START,
                size: topology.ram_size,
            },
            gic_redist: Range {
                base: GIC_REDIST_BASE,
                size: u64::from(topology.vcpus) * GIC_REDIST_SIZE_PER_CPU,
            },
            firmware: Range {
                base: RAM_START + topology.ram_size - FIRMWARE_REGION_SIZE,
                size: FIRMWARE_REGION_SIZE,
            },
            pci_segments,
            vsmmus,
        })
    }
}

impl Layout {
    /// Size each segment's 64-bit window for `needs[s]` bytes of 64-bit
    /// BARs (powers of two, placed largest first and so each naturally
    /// aligned: their sum is what they take). A window is a power of two of
    /// at least [`PCI_MMIO64_SIZE`], aligned to its size, the windows one
    /// after the other from [`PCI_MMIO64_BASE`]: a 128 GiB GPU BAR gets a
    /// 256 GiB window on a 256 GiB boundary, and the segments after it move
    /// up. Without large BARs the windows are the fixed 64 GiB ones.
    pub fn fit_mmio64(mut self, needs: &[u64]) -> Result<Self, LayoutError> {
        let mut base = PCI_MMIO64_BASE;
        for segment in &mut self.pci_segments {
            let need = needs.get(usize::from(segment.id)).copied().unwrap_or(0);
            let too_large = LayoutError::Mmio64TooLarge {
                segment: segment.id,
                need,
            };
            let size = need
                .max(PCI_MMIO64_SIZE)
                .checked_next_power_of_two()
                .ok_or(too_large.clone())?;
            base = base
                .checked_next_multiple_of(size)
                .ok_or(too_large.clone())?;
            let end = base.checked_add(size).ok_or(too_large.clone())?;
            if end > 1 << MAX_GUEST_PA_BITS {
                return Err(too_large);
            }
            segment.mmio64 = Range { base, size };
            base = end;
        }
        Ok(self)
    }
}

fn segment_layout(id: u16) -> PciSegmentLayout {
    let s = u64::from(id);
    PciSegmentLayout {
        id,
        ecam: Range {
            base: PCI_ECAM_BASE + s * PCI_ECAM_SIZE,
            size: PCI_ECAM_SIZE,
        },
        last_bus: (PCI_BUSES_PER_SEGMENT - 1) as u8,
        mmio32: Range {
            base: PCI_MMIO32_BASE + s * PCI_MMIO32_SIZE,
            size: PCI_MMIO32_SIZE,
        },
        mmio64: Range {
            base: PCI_MMIO64_BASE + s * PCI_MMIO64_SIZE,
            size: PCI_MMIO64_SIZE,
        },
        intx_gsiv: PCI_INTX_GSIV_BASE + 4 * u32::from(id),
    }
}

fn vsmmu_layout(index: u32) -> VsmmuLayout {
    let i = u64::from(index);
    let gsiv = SMMU_GSIV_BASE + 4 * index;
    VsmmuLayout {
        index,
        smmu: Range {
            base: SMMU_BASE + i * SMMU_STRIDE,
            size: SMMU_SIZE,
        },
        cmdqv: Range {
            base: CMDQV_BASE + i * CMDQV_STRIDE,
            size: CMDQV_SIZE,
        },
        eventq_gsiv: gsiv,
        gerror_gsiv: gsiv + 1,
        sync_gsiv: gsiv + 2,
        cmdqv_gsiv: gsiv + 3,
        its_device_id: SMMU_DEVICE_ID_BASE + index,
    }
}

/// A bump allocator over one window, for BARs and other guest resources.
#[derive(Clone, Debug)]
pub struct RangeAllocator {
    window: Range,
    next: u64,
}

impl RangeAllocator {
    /// Allocate from `window`.
    pub fn new(window: Range) -> Self {
        RangeAllocator {
            window,
            next: window.base,
        }
    }

    /// Allocate `size` bytes aligned to `align` (a power of two), or `None`
    /// when the window is exhausted or the arguments are not usable.
    pub fn allocate(&mut self, size: u64, align: u64) -> Option<Range> {
        if size == 0 || !align.is_power_of_two() {
            return None;
        }
        let base = self.next.checked_add(align - 1)? & !(align - 1);
        let end = base.checked_add(size)?;
        if end > self.window.end() {
            return None;
        }
        self.next = end;
        Some(Range { base, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        Topology {
            vcpus: 4,
            ram_size: GIB,
            pci_segments: 2,
            vsmmus: 2,
        }
    }

    fn all_ranges(layout: &Layout) -> Vec<(String, Range)> {
        let mut ranges = vec![
            (
                "gicd".into(),
                Range {
                    base: GIC_DIST_BASE,
                    size: GIC_DIST_SIZE,
                },
            ),
            (
                "its".into(),
                Range {
                    base: GIC_ITS_BASE,
                    size: GIC_ITS_SIZE,
                },
            ),
            ("gicr".into(), layout.gic_redist),
            (
                "uart".into(),
                Range {
                    base: UART_BASE,
                    size: UART_SIZE,
                },
            ),
            ("ram".into(), layout.ram),
        ];
        for s in &layout.pci_segments {
            ranges.push((format!("ecam{}", s.id), s.ecam));
            ranges.push((format!("mmio32-{}", s.id), s.mmio32));
            ranges.push((format!("mmio64-{}", s.id), s.mmio64));
        }
        for v in &layout.vsmmus {
            ranges.push((format!("smmu{}", v.index), v.smmu));
            ranges.push((format!("cmdqv{}", v.index), v.cmdqv));
        }
        ranges
    }

    #[test]
    fn no_two_windows_overlap_at_the_limits() {
        let layout = Layout::new(Topology {
            vcpus: MAX_VCPUS,
            ram_size: MAX_RAM_SIZE,
            pci_segments: MAX_PCI_SEGMENTS,
            vsmmus: MAX_VSMMUS,
        })
        .unwrap();
        let ranges = all_ranges(&layout);
        for (i, (a_name, a)) in ranges.iter().enumerate() {
            for (b_name, b) in &ranges[i + 1..] {
                assert!(
                    a.end() <= b.base || b.end() <= a.base,
                    "{a_name} {a} overlaps {b_name} {b}"
                );
            }
        }
    }

    #[test]
    fn its_device_ids_fit_kvm_its_and_never_collide() {
        let last_pci = pci_its_device_id(MAX_PCI_SEGMENTS - 1, (PCI_RIDS_PER_SEGMENT - 1) as u16);
        assert!(last_pci < SMMU_DEVICE_ID_BASE);
        let layout = Layout::new(Topology {
            vsmmus: MAX_VSMMUS,
            ..topology()
        })
        .unwrap();
        let last_smmu = layout.vsmmus.last().unwrap().its_device_id;
        assert!(last_smmu < 1 << ITS_DEVICE_ID_BITS);
        assert_eq!(pci_its_device_id(1, 8), PCI_RIDS_PER_SEGMENT + 8);
    }

    #[test]
    fn mpidr_spreads_cpus_over_clusters_of_16() {
        assert_eq!(vcpu_mpidr(0), 0);
        assert_eq!(vcpu_mpidr(15), 15);
        assert_eq!(vcpu_mpidr(16), 0x100);
        assert_eq!(vcpu_mpidr(33), 0x201);
    }

    #[test]
    fn firmware_region_is_the_top_of_ram() {
        let layout = Layout::new(topology()).unwrap();
        assert_eq!(layout.firmware.end(), layout.ram.end());
        assert!(layout.ram.contains(layout.firmware.base));
    }

    #[test]
    fn cmdqv_pages_are_64k_aligned() {
        let layout = Layout::new(topology()).unwrap();
        for v in &layout.vsmmus {
            assert_eq!(v.cmdqv.base % CMDQV_PAGE_SIZE, 0);
            assert_eq!(
                (v.cmdqv.base + CMDQV_VINTF0_PAGE0_OFFSET) % CMDQV_PAGE_SIZE,
                0
            );
            assert_eq!(v.cmdqv.size, 0x5_0000);
        }
    }

    #[test]
    fn mmio64_windows_grow_for_large_bars_and_stay_aligned_and_apart() {
        let layout = Layout::new(topology()).unwrap();
        let fixed = layout.clone().fit_mmio64(&[]).unwrap();
        assert_eq!(fixed, layout, "small BARs keep the fixed 64 GiB windows");
        let n = layout.pci_segments.len();
        assert!(n >= 2, "the test topology has several segments");
        // Segment 0 holds a 128 GiB GPU BAR and a few MiB more.
        let grown = layout.fit_mmio64(&[(128 * GIB) + (32 * MIB)]).unwrap();
        let w0 = grown.pci_segments[0].mmio64;
        assert_eq!(w0.size, 256 * GIB);
        assert_eq!(w0.base % w0.size, 0);
        let w1 = grown.pci_segments[1].mmio64;
        assert_eq!(w1.base, w0.end(), "the next window follows");
        assert_eq!(w1.size, PCI_MMIO64_SIZE);
        assert!(grown.ram.end() <= w0.base);
        let huge = Layout::new(topology()).unwrap().fit_mmio64(&[1 << 60]);
        assert!(matches!(
            huge,
            Err(LayoutError::Mmio64TooLarge { segment: 0, .. })
        ));
    }

    #[test]
    fn vsmmu_interrupts_are_distinct_spis() {
        let layout = Layout::new(topology()).unwrap();
        let mut gsivs: Vec<u32> = layout
            .vsmmus
            .iter()
            .flat_map(|v| [v.eventq_gsiv, v.gerror_gsiv, v.sync_gsiv, v.cmdqv_gsiv])
            .chain([UART_GSIV])
            .collect();
        let count = gsivs.len();
        gsivs.sort_unstable();
        gsivs.dedup();
        assert_eq!(gsivs.len(), count);
        assert!(gsivs.iter().all(|g| *g >= SPI_BASE && *g < GIC_NR_IRQS));
    }

    #[test]
    fn limits_are_enforced_with_the_bad_value() {
        let mut t = topology();
        t.vcpus = MAX_VCPUS + 1;
        assert_eq!(
            Layout::new(t),
            Err(LayoutError::TooManyVcpus(MAX_VCPUS + 1))
        );
        t = topology();
        t.ram_size = MAX_RAM_SIZE + 2 * MIB;
        assert_eq!(
            Layout::new(t),
            Err(LayoutError::TooMuchRam(MAX_RAM_SIZE + 2 * MIB))
        );
        t = topology();
        t.ram_size = 3 * MIB;
        assert_eq!(Layout::new(t), Err(LayoutError::BadRamSize(3 * MIB)));
        t = topology();
        t.pci_segments = MAX_PCI_SEGMENTS + 1;
        assert_eq!(
            Layout::new(t),
            Err(LayoutError::TooManySegments(MAX_PCI_SEGMENTS + 1))
        );
        t = topology();
        t.vsmmus = 17;
        assert_eq!(Layout::new(t), Err(LayoutError::TooManyVsmmus(17)));
        t = topology();
        t.vcpus = 0;
        assert_eq!(Layout::new(t), Err(LayoutError::NoVcpus));
    }

    #[test]
    fn allocator_aligns_and_stops_at_window_end() {
        let mut alloc = RangeAllocator::new(Range {
            base: 0x1000,
            size: 0x3000,
        });
        assert_eq!(
            alloc.allocate(0x10, 0x10),
            Some(Range {
                base: 0x1000,
                size: 0x10
            })
        );
        assert_eq!(
            alloc.allocate(0x1000, 0x1000),
            Some(Range {
                base: 0x2000,
                size: 0x1000
            })
        );
        assert_eq!(alloc.allocate(0x1001, 0x1000), None);
        assert_eq!(alloc.allocate(0x1000, 3), None);
        assert_eq!(
            alloc.allocate(0x1000, 0x1000),
            Some(Range {
                base: 0x3000,
                size: 0x1000
            })
        );
        assert_eq!(alloc.allocate(1, 1), None);
    }
}
