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

    /// Map every region of `mem` at IOVA = GPA, readable and writable, in
    /// whole host pages of `host_page` bytes.
    pub fn map_guest_ram(
        &self,
        fd: &Iommufd,
        mem: &devices::GuestMemory,
        host_page: u64,
    ) -> Result<(), Error> {
        map_guest_ram(fd, self.id(), mem, host_page)
    }

    /// `IOMMU_IOAS_MAP` of `len` bytes at host VA `user_va` to IOVA `iova`,
    /// all multiples of `host_page`.
    pub fn map(
        &self,
        fd: &Iommufd,
        iova: u64,
        user_va: u64,
        len: u64,
        host_page: u64,
    ) -> Result<(), Error> {
        map(fd, self.id(), iova, user_va, len, host_page)
    }

    /// Destroy the IOAS now, returning the kernel's answer.
    pub fn destroy(self) -> Result<(), Error> {
        self.object.destroy()
    }
}

/// Map every region of `mem` at IOVA = GPA into IOAS `ioas_id` (one this
/// crate did not allocate, e.g. vfio-ioctls' `VfioIommufd`'s), readable and
/// writable. `host_page` is the host's page size: the kernel pins and maps
/// whole host pages, so every address and length must be a multiple of it.
pub fn map_guest_ram(
    fd: &Iommufd,
    ioas_id: u32,
    mem: &devices::GuestMemory,
    host_page: u64,
) -> Result<(), Error> {
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
            host_page,
        )?;
    }
    Ok(())
}

/// `IOMMU_IOAS_MAP` of `len` bytes at host VA `user_va` to IOVA `iova` in
/// IOAS `ioas_id`. All must be aligned to the host page: the kernel
/// accepts an unaligned VA and the device attach fails later, far from the
/// cause (and on a 64 KiB host a 4 KiB-aligned IOVA is refused).
fn map(
    fd: &Iommufd,
    ioas_id: u32,
    iova: u64,
    user_va: u64,
    len: u64,
    host_page: u64,
) -> Result<(), Error> {
    check_host_pages(iova, user_va, len, host_page)?;
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

/// Refuse a map that is not whole host pages of `host_page` bytes.
fn check_host_pages(iova: u64, user_va: u64, len: u64, host_page: u64) -> Result<(), Error> {
    if !host_page.is_power_of_two() || (iova | user_va | len) % host_page != 0 {
        return Err(Error::ioctl(
            crate::ioctl::Ioctl::IoasMap,
            format!(
                "IOVA {iova:#x} VA {user_va:#x} length {len:#x} not aligned to the host page \
                 {host_page:#x}"
            ),
            libc::EINVAL,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_must_be_whole_host_pages() {
        let ram = 0x4000_0000;
        assert!(check_host_pages(ram, 0x7f00_0000_0000, 64 << 20, 4 << 10).is_ok());
        assert!(check_host_pages(ram, 0x7f00_0000_0000, 64 << 20, 64 << 10).is_ok());
        // 4 KiB-aligned VA: fine on a 4 KiB host, refused on a 64 KiB one.
        assert!(check_host_pages(ram, 0x7f00_0000_1000, 64 << 20, 4 << 10).is_ok());
        let err = check_host_pages(ram, 0x7f00_0000_1000, 64 << 20, 64 << 10).unwrap_err();
        assert!(err.to_string().contains("host page 0x10000"), "{err}");
        assert!(check_host_pages(ram, 0, (64 << 20) + 0x1000, 64 << 10).is_err());
        assert!(
            check_host_pages(ram, 0, 64 << 20, 3).is_err(),
            "not a page size"
        );
    }
}
