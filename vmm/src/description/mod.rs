//! The VM description: where every segment, vSMMU and device sits. Built
//! from a validated [`VmConfig`] and the [`HostTopology`] read before it,
//! without touching the host itself, so the firmware tables of a VM can be
//! produced and inspected anywhere.
//!
//! The functions come from the configuration one device kind at a time
//! ([`functions`]); where each sits is decided in [`placement`], whose
//! documentation gives the rules; what it produces is in [`placed`].

mod functions;
mod placed;
mod placement;

use arch::layout::{Layout, Topology};

use crate::config::VmConfig;
use crate::host_topology::HostTopology;

pub use placed::{
    CONSOLE_ID, DescriptionError, DeviceKind, PlacedDevice, RNG_ID, VsmmuDescription,
};

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

/// IORT node identifier of the ITS group. vSMMU `i` is `i + 1`; the PCI
/// root complex of segment `s` is `1 + vsmmus + s`.
pub const IORT_ITS_ID: u32 = 0;

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
