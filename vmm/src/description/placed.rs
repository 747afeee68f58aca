//! What placement produces: each vSMMU ([`VsmmuDescription`]), each PCI
//! function ([`PlacedDevice`]) with what backs it ([`DeviceKind`]), and
//! why a configuration cannot be placed ([`DescriptionError`]).

use arch::layout::{LayoutError, VsmmuLayout};
use pci::{Bdf, SlotError};

/// The virtio-console's device id (counters, logs).
pub const CONSOLE_ID: &str = "_console";
/// The id of the virtio-rng (there is at most one).
pub const RNG_ID: &str = "_rng";

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
