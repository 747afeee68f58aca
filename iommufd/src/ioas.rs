//! The VM's IOAS: every guest RAM region mapped at IOVA = GPA, so the
//! nest-parent HWPT (stage 2) translates guest physical addresses, and a HW
//! queue's `nesting_parent_iova` is simply the queue's GPA.

use std::sync::Arc;

use iommufd_bindings::iommufd::{
    iommu_ioas_map, iommufd_ioas_map_flags_IOMMU_IOAS_MAP_FIXED_IOVA,
    iommufd_ioas_map_flags_IOMMU_IOAS_MAP_READABLE,
    iommufd_ioas_map_flags_IOMMU_IOAS_MAP_WRITEABLE,
};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::error::Error;
use crate::fd::{Iommufd, Object, ObjectKind};

/// The host page size the kernel pins at (4 KiB on every host we run on;
/// a larger base page only makes the check stricter than needed).
const PAGE: u64 = 4096;

/// One IOAS. Dropping it destroys the IOAS, which unmaps everything in it.
#[derive(Debug)]
pub struct Ioas {
    object: Object,
}

impl Ioas {
    /// `IOMMU_IOAS_ALLOC`.
    pub fn new(fd: &Arc<Iommufd>) -> Result<Self, Error> {
        let id = fd.ioas_alloc()?;
        Ok(Ioas {
            object: Object::new(fd.clone(), id, ObjectKind::Ioas),
        })
    }

    /// The IOAS id (`pt_id` of the nest parent).
    pub fn id(&self) -> u32 {
        self.object.id()
    }

    /// Map every region of `mem` at IOVA = GPA, readable and writable.
    pub fn map_guest_ram(&self, fd: &Iommufd, mem: &devices::GuestMemory) -> Result<(), Error> {
        map_guest_ram(fd, self.id(), mem)
    }

    /// `IOMMU_IOAS_MAP` of `len` bytes at host VA `user_va` to IOVA `iova`.
    pub fn map(&self, fd: &Iommufd, iova: u64, user_va: u64, len: u64) -> Result<(), Error> {
        map(fd, self.id(), iova, user_va, len)
    }

    /// Destroy the IOAS now, returning the kernel's answer.
    pub fn destroy(self) -> Result<(), Error> {
        self.object.destroy()
    }
}

/// Map every region of `mem` at IOVA = GPA into IOAS `ioas_id` (one this
/// crate did not allocate, e.g. vfio-ioctls' `VfioIommufd`'s), readable and
/// writable.
pub fn map_guest_ram(fd: &Iommufd, ioas_id: u32, mem: &devices::GuestMemory) -> Result<(), Error> {
    for region in mem.iter() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|_| {
                Error::ioctl(
                    crate::ioctl::Ioctl::IoasMap,
                    format!(
                        "region at GPA {:#x} has no host mapping",
                        region.start_addr().0
                    ),
                    libc::EFAULT,
                )
            })?;
        map(
            fd,
            ioas_id,
            region.start_addr().0,
            host as u64,
            region.len(),
        )?;
    }
    Ok(())
}

/// `IOMMU_IOAS_MAP` of `len` bytes at host VA `user_va` to IOVA `iova` in
/// IOAS `ioas_id`. Both must be page aligned: the kernel accepts an
/// unaligned VA and the device attach fails later, far from the cause.
fn map(fd: &Iommufd, ioas_id: u32, iova: u64, user_va: u64, len: u64) -> Result<(), Error> {
    if (iova | user_va | len) % PAGE != 0 {
        return Err(Error::ioctl(
            crate::ioctl::Ioctl::IoasMap,
            format!("IOVA {iova:#x} VA {user_va:#x} length {len:#x} not page aligned"),
            libc::EINVAL,
        ));
    }
    let arg = iommu_ioas_map {
        size: size_of::<iommu_ioas_map>() as u32,
        flags: iommufd_ioas_map_flags_IOMMU_IOAS_MAP_FIXED_IOVA
            | iommufd_ioas_map_flags_IOMMU_IOAS_MAP_READABLE
            | iommufd_ioas_map_flags_IOMMU_IOAS_MAP_WRITEABLE,
        ioas_id,
        __reserved: 0,
        user_va,
        length: len,
        iova,
    };
    fd.ioas_map(&arg)?;
    log::info!(target: "iommufd", "IOAS {ioas_id}: guest RAM {iova:#x}+{len:#x} mapped");
    Ok(())
}
