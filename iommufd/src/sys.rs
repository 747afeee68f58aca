//! The few system calls iommufd-ioctls does not wrap, each in one small
//! `unsafe` function: mmap/munmap of a vIOMMU region on the iommufd fd (the
//! crate has no mmap helper), 32-bit volatile access into such a mapping,
//! and `IOMMU_TEST_CMD` (the selftest mock's ioctl is kernel-internal uAPI,
//! absent from iommufd-bindings). Everything above this module is safe.

use std::os::fd::RawFd;

/// `IOMMU_TEST_CMD` = `_IO(';', 0x80 + 32)` (drivers/iommu/iommufd/iommufd_test.h).
pub const IOMMU_TEST_CMD: u64 = 0x3ba0;

/// A shared, read-write mapping of `len` bytes at `offset` of `fd`.
pub struct Mapping {
    addr: usize,
    len: usize,
}

impl Mapping {
    /// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_SHARED, fd, offset)`:
    /// the kernel requires MAP_SHARED and the exact registered offset and
    /// length of the region (ENXIO otherwise).
    pub fn shared(fd: RawFd, offset: u64, len: usize) -> Result<Self, i32> {
        let offset = libc::off_t::try_from(offset).map_err(|_| libc::EOVERFLOW)?;
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL), so no
        // existing memory is replaced; `fd` is borrowed for the call only and
        // the mapping does not depend on it staying open.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO));
        }
        Ok(Mapping {
            addr: addr as usize,
            len,
        })
    }

    /// Host virtual address of the first byte.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// Length in bytes.
    pub fn length(&self) -> usize {
        self.len
    }

    /// The 32-bit register at `offset`, or `None` when it is outside the
    /// mapping or not 4-byte aligned.
    pub fn read_u32(&self, offset: usize) -> Option<u32> {
        self.check(offset)?;
        // SAFETY: `offset + 4 <= len` and aligned (checked), so the pointer
        // is inside this live mapping and aligned for u32; device memory is
        // read with a volatile access, never cached by the compiler.
        Some(unsafe { std::ptr::read_volatile((self.addr + offset) as *const u32) })
    }

    /// Write the 32-bit register at `offset`; false when out of range.
    pub fn write_u32(&self, offset: usize, value: u32) -> bool {
        if self.check(offset).is_none() {
            return false;
        }
        // SAFETY: as in `read_u32`: in bounds, aligned, mapping alive.
        unsafe { std::ptr::write_volatile((self.addr + offset) as *mut u32, value) };
        true
    }

    fn check(&self, offset: usize) -> Option<()> {
        (offset % 4 == 0 && offset.checked_add(4)? <= self.len).then_some(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `addr`/`len` are exactly what mmap returned, and no
        // reference into the mapping outlives `self` (accessors copy).
        let rc = unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
        if rc != 0 {
            log::error!(target: "iommufd", "munmap of {:#x}+{:#x} failed: {}",
                self.addr, self.len, std::io::Error::last_os_error());
        }
    }
}

/// `out_data_type` of an `IOMMU_GET_HW_INFO` answer (a union with the
/// input type in the uAPI struct).
pub fn hw_info_out_type(arg: &iommufd_bindings::iommufd::iommu_hw_info) -> u32 {
    // SAFETY: both members of the union are plain u32s, so every bit
    // pattern is a valid value of either.
    unsafe { arg.__bindgen_anon_1.out_data_type }
}

/// `ioctl(fd, IOMMU_TEST_CMD, cmd)`: `cmd` is the whole `struct
/// iommu_test_cmd` (size in its first u32), updated in place by the kernel.
pub fn test_cmd(fd: RawFd, cmd: &mut [u8]) -> Result<(), i32> {
    // SAFETY: the kernel reads and writes at most the `size` bytes the
    // first u32 of `cmd` announces; callers set it to `cmd.len()`, so every
    // access stays inside the exclusively borrowed buffer.
    let rc = unsafe { libc::ioctl(fd, IOMMU_TEST_CMD as _, cmd.as_mut_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_bounds_checks_every_access() {
        let file = tempfile_with_len(4096);
        let map = Mapping::shared(std::os::fd::AsRawFd::as_raw_fd(&file), 0, 4096).unwrap();
        assert!(map.write_u32(4092, 0xdead_beef));
        assert_eq!(map.read_u32(4092), Some(0xdead_beef));
        assert_eq!(map.read_u32(4093), None, "unaligned");
        assert_eq!(map.read_u32(4096), None, "past the end");
        assert!(!map.write_u32(usize::MAX - 1, 1));
    }

    #[test]
    fn mapping_failure_returns_the_errno() {
        assert_eq!(Mapping::shared(-1, 0, 4096).err(), Some(libc::EBADF));
    }

    fn tempfile_with_len(len: u64) -> std::fs::File {
        let path = std::env::temp_dir().join(format!("iommufd-sys-test-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file.set_len(len).unwrap();
        file
    }
}
