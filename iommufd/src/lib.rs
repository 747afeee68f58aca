//! The host backend of the vSMMUv3 and the Tegra241 CMD-QV: the devices'
//! [`VsmmuBackend`](devices::smmuv3::VsmmuBackend) and
//! [`CmdqvBackend`](devices::cmdqv::CmdqvBackend) over /dev/iommu.
//!
//! Per VM one [`Iommufd`] and one [`Ioas`] holding all guest RAM at IOVA =
//! GPA; per vSMMU one [`Viommu`]: nest-parent HWPT, vIOMMU, its mmap'd
//! region (the VINTF page0 of a CMD-QV), shared abort/bypass nested HWPTs,
//! one vDEVICE per device (virt_id = vSID), a nested HWPT per stage-1 STE,
//! ONE batched `IOMMU_HWPT_INVALIDATE` per guest CMD_SYNC batch, HW queues
//! and vEVENTQs. Every kernel object is an owned handle whose drop destroys
//! it, and the vIOMMU tears its children down in the kernel's order.
//!
//! The sequence logic is written once over a [`Flavour`]: [`ArmSmmuv3`]
//! on a Grace host, [`selftest::Selftest`] under the kernel's iommufd
//! selftest mock (CONFIG_IOMMUFD_TEST), which judges it in CI.
//!
//! Knows nothing of KVM or device registers: the VMM installs the page0
//! region as a memory slot, the models decide every call.

pub mod backend;
pub mod device;
pub mod error;
pub mod fd;
pub mod flavour;
pub mod ioas;
pub mod ioctl;
pub mod selftest;
mod sys;
pub mod veventq;
pub mod viommu;

pub use backend::{IommufdCmdqv, IommufdVsmmu, SharedViommu};
pub use device::IommufdDevice;
pub use error::{Error, HostError};
pub use fd::{Iommufd, Object, ObjectKind};
pub use flavour::{ArmSmmuv3, CmdqvHw, Flavour, HostInfo};
pub use ioas::Ioas;
pub use ioctl::Ioctl;
pub use viommu::Viommu;

/// Open /dev/iommu for a VM, with the host-capability error a person can act on.
pub fn open_host() -> Result<std::sync::Arc<Iommufd>, HostError> {
    match Iommufd::open() {
        Ok(fd) => Ok(std::sync::Arc::new(fd)),
        Err(Error::Open(e)) => Err(HostError::NoIommufd(e)),
        Err(e) => Err(HostError::Setup(e)),
    }
}
