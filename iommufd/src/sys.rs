//! The few system calls iommufd-ioctls does not wrap, each in one small
//! `unsafe` function: the union read of `IOMMU_GET_HW_INFO`'s answer and
//! `IOMMU_TEST_CMD` (the selftest mock's ioctl is kernel-internal uAPI,
//! absent from iommufd-bindings). Everything above this module is safe.

use std::os::fd::RawFd;

/// `IOMMU_TEST_CMD` = `_IO(';', 0x80 + 32)` (drivers/iommu/iommufd/iommufd_test.h).
pub const IOMMU_TEST_CMD: u64 = 0x3ba0;

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
