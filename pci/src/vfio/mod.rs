//! VFIO passthrough of host PCI functions (cdev + iommufd only).

pub mod cdev;

pub use cdev::{VfioCdev, VfioCdevError};
