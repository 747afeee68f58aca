//! Passthrough PCI functions through VFIO: the cdev binding to the VM's
//! iommufd ([`cdev`]) and the guest-visible function over it ([`function`]).

pub mod bars;
pub mod caps;
pub mod cdev;
#[cfg(test)]
mod failure_tests;
pub mod function;
pub mod host;
pub mod interrupts;
pub mod memhost;

pub use cdev::{CdevDevice, ReleaseError, VfioCdev, VfioCdevError};
pub use function::{FunctionError, VfioPciDevice, VfioStats, Wiring};
pub use host::VfioHostError;
pub use interrupts::{MsiError, MsiRouter};
pub use vfio_ioctls::VfioIommufd;
