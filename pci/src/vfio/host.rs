//! The host side of a passthrough function as the VFIO-PCI model uses it:
//! regions (configuration space, BARs), interrupts and reset. The real one
//! is vfio-ioctls' `VfioDevice` on the function's cdev, bound to the VM's
//! iommufd, inside the [`CdevDevice`] guard that releases it without
//! panicking; the model's tests use an in-memory function.

use std::os::fd::AsRawFd;

use vfio_bindings::bindings::vfio::{
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_ioctls::{VfioDevice, VfioRegionInfoCap};
use vmm_sys_util::eventfd::EventFd;

use devices::mapping::{Mapping, MmapError};

use super::cdev::CdevDevice;

/// vfio-pci's region indexes (linux/vfio.h `VFIO_PCI_*_REGION_INDEX`).
pub const CONFIG_REGION: u32 = 7;
/// vfio-pci's IRQ indexes.
pub const IRQ_MSI: u32 = 1;
/// MSI-X.
pub const IRQ_MSIX: u32 = 2;

/// What the host says about one region.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionInfo {
    /// Size in bytes (0: the function has no such region).
    pub size: u64,
    /// The guest may read / write it.
    pub readable: bool,
    /// Writable.
    pub writable: bool,
    /// It may be mmapped: wholly (`sparse` empty) or only `sparse`.
    pub mmap: bool,
    /// Sparse mmap areas (offset, length), from the region's capability.
    pub sparse: Vec<(u64, u64)>,
}

impl RegionInfo {
    /// A readable, writable region of `size` bytes (none when 0), wholly
    /// mmappable or not.
    pub fn plain(size: u64, mmap: bool) -> Self {
        RegionInfo {
            size,
            readable: size > 0,
            writable: size > 0,
            mmap,
            sparse: Vec::new(),
        }
    }
}

/// A host call of a passthrough function that failed.
#[derive(Debug, thiserror::Error)]
pub enum VfioHostError {
    /// `VFIO_DEVICE_SET_IRQS` refused the eventfds (vfio-ioctls 0.10 does
    /// not keep the kernel's errno of this call).
    #[error("VFIO_DEVICE_SET_IRQS(index {index}, {count} eventfds)")]
    EnableIrqs {
        /// IRQ index.
        index: u32,
        /// Eventfds passed.
        count: usize,
        /// vfio-ioctls' error.
        #[source]
        source: vfio_ioctls::VfioError,
    },
    /// `VFIO_DEVICE_SET_IRQS` would not disable the index.
    #[error("VFIO_DEVICE_SET_IRQS(index {index}, disable)")]
    DisableIrqs {
        /// IRQ index.
        index: u32,
        /// vfio-ioctls' error.
        #[source]
        source: vfio_ioctls::VfioError,
    },
    /// A region piece could not be mmapped (it then traps).
    #[error("region {index} at {offset:#x} ({len:#x} bytes)")]
    Map {
        /// Region index.
        index: u32,
        /// Offset inside the region.
        offset: u64,
        /// Length.
        len: u64,
        /// The refused mmap, with its errno.
        #[source]
        source: MmapError,
    },
    /// The host refused the call (a fake host in tests).
    #[error("{0} refused by the host")]
    Refused(&'static str),
}

/// A passthrough function's host interface.
pub trait VfioHost: Send {
    /// Region `index` (BAR n = n, configuration space = [`CONFIG_REGION`]).
    fn region(&self, index: u32) -> RegionInfo;
    /// Read region bytes (all-ones when the host refuses).
    fn read(&self, index: u32, offset: u64, data: &mut [u8]);
    /// Write region bytes.
    fn write(&self, index: u32, offset: u64, data: &[u8]);
    /// Vectors of IRQ index `index` ([`IRQ_MSI`], [`IRQ_MSIX`]).
    fn irq_count(&self, index: u32) -> u32;
    /// `VFIO_DEVICE_SET_IRQS` trigger eventfds for vectors `0..fds.len()`.
    fn enable_irqs(&self, index: u32, fds: &[&EventFd]) -> Result<(), VfioHostError>;
    /// Disable every vector of `index`.
    fn disable_irqs(&self, index: u32) -> Result<(), VfioHostError>;
    /// `VFIO_DEVICE_RESET`, if the function supports it.
    fn reset(&self);
    /// Map `len` bytes of region `index` at `offset`.
    fn map(&self, index: u32, offset: u64, len: u64) -> Result<Mapping, VfioHostError>;
}

impl VfioHost for CdevDevice {
    fn region(&self, index: u32) -> RegionInfo {
        let flags = self.get_region_flags(index);
        let sparse = self
            .get_region_caps(index)
            .into_iter()
            .filter_map(|cap| match cap {
                VfioRegionInfoCap::SparseMmap(s) => {
                    Some(s.areas.into_iter().map(|a| (a.offset, a.size)))
                }
                _ => None,
            })
            .flatten()
            .collect();
        RegionInfo {
            size: if flags == 0 {
                0
            } else {
                self.get_region_size(index)
            },
            readable: flags & VFIO_REGION_INFO_FLAG_READ != 0,
            writable: flags & VFIO_REGION_INFO_FLAG_WRITE != 0,
            mmap: flags & VFIO_REGION_INFO_FLAG_MMAP != 0,
            sparse,
        }
    }

    fn read(&self, index: u32, offset: u64, data: &mut [u8]) {
        // vfio-ioctls logs a refused read and leaves the buffer alone:
        // what a master abort reads.
        data.fill(0xff);
        self.region_read(index, data, offset);
    }

    fn write(&self, index: u32, offset: u64, data: &[u8]) {
        self.region_write(index, data, offset);
    }

    fn irq_count(&self, index: u32) -> u32 {
        self.get_irq_info(index).map_or(0, |i| i.count)
    }

    fn enable_irqs(&self, index: u32, fds: &[&EventFd]) -> Result<(), VfioHostError> {
        self.enable_irq(index, fds.to_vec())
            .map_err(|source| VfioHostError::EnableIrqs {
                index,
                count: fds.len(),
                source,
            })
    }

    fn disable_irqs(&self, index: u32) -> Result<(), VfioHostError> {
        self.disable_irq(index)
            .map_err(|source| VfioHostError::DisableIrqs { index, source })
    }

    fn reset(&self) {
        VfioDevice::reset(self);
    }

    fn map(&self, index: u32, offset: u64, len: u64) -> Result<Mapping, VfioHostError> {
        Mapping::shared(
            self.as_raw_fd(),
            self.get_region_offset(index).saturating_add(offset),
            len,
        )
        .map_err(|source| VfioHostError::Map {
            index,
            offset,
            len,
            source,
        })
    }
}
