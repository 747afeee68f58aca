//! The VM description: where every segment, vSMMU and device sits. Built
//! from a validated [`VmConfig`] and the [`HostTopology`] read before it,
//! without touching the host itself, so the firmware tables of a VM can be
//! produced and inspected anywhere.
//!
//! The functions come from the configuration one device kind at a time
//! ([`functions`]); where each sits is decided in [`placement`], whose
//! documentation gives the rules.

mod functions;
mod placement;

use arch::layout::{Layout, LayoutError, Topology, VsmmuLayout};
use pci::{Bdf, SlotError};

use crate::config::VmConfig;
use crate::host_topology::HostTopology;

/// The host kernel's software MSI window for an SMMUv3 (`MSI_IOVA_BASE`,
/// `MSI_IOVA_LENGTH` in arm-smmu-v3; `msi` in a function's
/// `iommu_group/reserved_regions`): iommufd maps the host ITS doorbell there
/// in stage 2 and vfio-pci programs the physical MSI address inside it. The
/// IORT gives passthrough functions behind a vSMMU an identity RMR over it,
/// and the host backend checks each function's group reports the same.
pub const HOST_SW_MSI: arch::layout::Range = arch::layout::Range {
    base: 0x0800_0000,
    size: 0x10_0000,
};

/// The virtio-console's device id (counters, logs).
pub const CONSOLE_ID: &str = "_console";
/// The id of the virtio-rng (there is at most one).
pub const RNG_ID: &str = "_rng";

/// IORT node identifier of the ITS group. vSMMU `i` is `i + 1`; the PCI
/// root complex of segment `s` is `1 + vsmmus + s`.
pub const IORT_ITS_ID: u32 = 0;

/// One vSMMU of the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsmmuDescription {
    /// Index in the VM (and in the layout).
    pub index: u32,
    /// The PCI segment whose devices it translates.
    pub segment: u16,
    /// Has a Tegra241 CMDQ-V.
    pub cmdqv: bool,
    /// IORT SMMUv3 node identifier; the NVDA200C `_UID`.
    pub iort_id: u32,
    /// Windows and interrupts.
    pub layout: VsmmuLayout,
    /// The host SMMU behind it (`None`: the emulated backend's unnamed one).
    pub host_smmu: Option<String>,
}

/// What backs a placed PCI function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A host device through VFIO (`--device`).
    Passthrough,
    /// An emulated test endpoint (`--test-device`).
    TestEndpoint,
    /// A virtio-blk disk (`--disk`); never behind a vSMMU.
    VirtioBlock,
    /// The virtio-console (`--console`, one per VM, segment 0); never
    /// behind a vSMMU.
    VirtioConsole,
    /// The virtio-rng (`--rng`).
    VirtioRng,
    /// A virtio-net device (`--net`); never behind a vSMMU.
    VirtioNet,
    /// The virtio-vsock (`--vsock`, at most one); never behind a vSMMU.
    VirtioVsock,
}

/// One PCI function of the VM, placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedDevice {
    /// Passthrough or emulated.
    pub kind: DeviceKind,
    /// Index of its `--device` / `--test-device` option.
    pub config_index: usize,
    /// Its id.
    pub id: String,
    /// Segment.
    pub segment: u16,
    /// Address on the segment.
    pub bdf: Bdf,
    /// The vSMMU translating it, if `iommu=on`.
    pub vsmmu: Option<u32>,
    /// The host SMMU it sits behind, if `iommu=on` and known.
    pub host_smmu: Option<String>,
}

impl PlacedDevice {
    /// The StreamID the guest sees for this device through IORT (the RID:
    /// the root complex maps RIDs to StreamIDs one to one); this is the
    /// `virt_id` of its vDEVICE.
    pub fn stream_id(&self) -> u32 {
        u32::from(self.bdf.rid())
    }
}

/// The whole VM.
#[derive(Clone, Debug)]
pub struct VmDescription {
    /// The configuration it was built from.
    pub config: VmConfig,
    /// The address map.
    pub layout: Layout,
    /// The host's page size (the granule of BAR mappings and IOAS maps).
    pub host_page_size: u64,
    /// Ids of the passthrough functions whose BARs KVM must map cacheable
    /// (a Grace GPU on nvgrace-gpu-vfio-pci).
    pub cacheable_devices: Vec<String>,
    /// vSMMUs, by index.
    pub vsmmus: Vec<VsmmuDescription>,
    /// Devices, in command-line order.
    pub devices: Vec<PlacedDevice>,
}

/// Why a configuration cannot be laid out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DescriptionError {
    /// The address map has no room.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A segment has too many devices.
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// More devices behind a CMD-QV than it has SID_MATCH slots.
    #[error(
        "{count} devices with iommu=on on PCI segment {segment}, but its CMD-QV has {max} \
         StreamID slots; move devices to another pci_segment"
    )]
    TooManyVsids {
        /// Segment.
        segment: u16,
        /// Devices behind its vSMMU.
        count: usize,
        /// SID slots of the CMD-QV.
        max: usize,
    },
    /// Two host SMMUs behind one vSMMU.
    #[error(
        "{first} (host SMMU {first_smmu}) and {second} (host SMMU {second_smmu}) are both on \
         PCI segment {segment}, but one vSMMU can only stand for one host SMMU: drop \
         pci_segment= from one of them (each host SMMU then gets a segment of its own) or give \
         them different segments"
    )]
    HostSmmusShareSegment {
        /// The segment.
        segment: u16,
        /// The device that claimed it first.
        first: String,
        /// Its host SMMU.
        first_smmu: String,
        /// The device that would join it.
        second: String,
        /// Its host SMMU.
        second_smmu: String,
    },
    /// A device without iommu on a segment with a vSMMU, or the reverse, is fine; a device
    /// with iommu=on needs a vSMMU, which validate() checked. This variant covers a config
    /// that was not validated.
    #[error("device {0} has iommu=on but the VM has no vSMMU")]
    NoVsmmu(String),
}

impl VmDescription {
    /// Place everything. `host` is the host's shape (page size, the host
    /// SMMU of each function); `cmdqv_sid_slots` is how many vDEVICEs one
    /// CMD-QV takes (1 << log2vsids of the CMD-QV the VM exposes).
    pub fn new(
        config: VmConfig,
        host: &HostTopology,
        cmdqv_sid_slots: usize,
    ) -> Result<Self, DescriptionError> {
        // RAM is whole 2 MiB blocks (the layout refuses anything else), so
        // whole host pages on every arm64 page size: IOAS maps and KVM
        // slots of it need no further check.
        let functions = functions::all(&config, host);
        let placed_segments = placement::place_segments(&functions)?;
        let segments = placement::segment_count(&placed_segments);
        let vsmmu_segments = placement::vsmmu_segments(&config, &functions, &placed_segments);
        let bar64_needs = placement::bar64_needs(host, &functions, &placed_segments, segments);
        let layout = Layout::new(Topology {
            vcpus: config.cpus.boot,
            ram_size: config.memory.total(),
            pci_segments: segments,
            vsmmus: u32::try_from(vsmmu_segments.len()).unwrap_or(u32::MAX),
        })?
        .fit_mmio64(&bar64_needs)?;
        let vsmmus = placement::vsmmus(&config, &vsmmu_segments, &layout);
        let devices = placement::devices(
            &config,
            host,
            &functions,
            placed_segments,
            &vsmmus,
            segments,
        )?;
        placement::check_cmdqv_sid_slots(&config, &vsmmus, &devices, cmdqv_sid_slots)?;
        Ok(VmDescription {
            config,
            layout,
            host_page_size: host.page_size,
            cacheable_devices: host.cacheable_bar_devices.clone(),
            vsmmus,
            devices,
        })
    }

    /// The vSMMU of a segment, if it has one.
    pub fn vsmmu_of_segment(&self, segment: u16) -> Option<&VsmmuDescription> {
        self.vsmmus.iter().find(|v| v.segment == segment)
    }

    /// IORT identifier of segment `s`'s root complex node.
    pub fn iort_rc_id(&self, segment: u16) -> u32 {
        1 + self.vsmmus.len() as u32 + u32::from(segment)
    }
}

#[cfg(test)]
mod tests;
