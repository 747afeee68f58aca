//! Why the devices could not be built: one variant per step that can
//! refuse, each keeping the typed cause.

use devices::mapping::Sentence;

use crate::bus::BusError;
use crate::virtio::VirtioError;

/// Why the devices could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A model refused its configuration.
    #[error("vSMMU {index}: {reason}")]
    Vsmmu {
        /// vSMMU index.
        index: u32,
        /// What went wrong.
        reason: String,
    },
    /// The host cannot back the vSMMU (one sentence naming the fix).
    #[error(transparent)]
    Host(#[from] iommufd::HostError),
    /// Passthrough devices need the iommufd backend.
    #[error(
        "--device {0}: passthrough needs backend=iommufd (VFIO); with backend=emulated the VM \
         has no host device to pass through"
    )]
    PassthroughNeedsIommufd(String),
    /// A passthrough function could not be set up (its BARs, MSI-X, host
    /// handles): the typed cause is kept, and shown with its errno.
    #[error("device {id}: {}", Sentence(cause))]
    Function {
        /// The device's id.
        id: String,
        /// What the VFIO function setup reported.
        cause: pci::vfio::FunctionError,
    },
    /// A function could not take its slot on the segment's bus.
    #[error("device {id}: {cause}")]
    Slot {
        /// The device's id.
        id: String,
        /// What the host bridge refused.
        cause: pci::PciError,
    },
    /// The segment's BARs do not fit its windows.
    #[error("segment {segment}: {cause}")]
    Bars {
        /// The PCI segment.
        segment: u16,
        /// What the allocator refused.
        cause: pci::PciError,
    },
    /// The emulated backend refused a vDEVICE.
    #[error("vSMMU {index}: vDEVICE for {id}: {cause}")]
    Vdevice {
        /// vSMMU index.
        index: u32,
        /// The device's id.
        id: String,
        /// The backend's refusal, with its errno.
        cause: devices::backend::BackendError,
    },
    /// Bus placement failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A virtio function could not be built (image missing or locked...).
    #[error(transparent)]
    Virtio(#[from] VirtioError),
}
