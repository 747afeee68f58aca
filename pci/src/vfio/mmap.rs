//! Host mappings of a passthrough function's BARs (the only unsafe code of
//! the VFIO-PCI model): `mmap` of a region's mmappable area through the
//! VFIO device fd, `munmap` on drop. KVM installs the mapping as a guest
//! memory slot, so the guest's accesses to it reach the device without an
//! exit; the VMM itself never dereferences it.

use std::io;
use std::os::fd::RawFd;

/// One shared mapping, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is plain shared memory (or device memory) that the
// VMM never reads through a reference; only its address is handed around.
unsafe impl Send for Mapping {}
// SAFETY: as above: no shared access goes through this type.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Map `len` bytes of `fd` at `offset`, read/write, shared.
    pub fn device(fd: RawFd, offset: u64, len: u64) -> io::Result<Self> {
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        Self::map(fd, off, len, libc::MAP_SHARED)
    }

    /// `len` bytes of anonymous shared memory (a stand-in BAR for tests).
    pub fn anonymous(len: u64) -> io::Result<Self> {
        Self::map(-1, 0, len, libc::MAP_SHARED | libc::MAP_ANONYMOUS)
    }

    fn map(fd: RawFd, offset: libc::off_t, len: u64, flags: i32) -> io::Result<Self> {
        let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a fresh mapping chosen by the kernel (no MAP_FIXED), so
        // no existing memory is replaced; the result is checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { addr, len })
    }

    /// The host virtual address (for KVM_SET_USER_MEMORY_REGION).
    pub fn host_addr(&self) -> u64 {
        self.addr as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Never true: a mapping has at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Read a dword at `offset` (tests look through a stand-in BAR).
    pub fn read_u32(&self, offset: u64) -> Option<u32> {
        let off = usize::try_from(offset).ok()?;
        if off % 4 != 0 || off + 4 > self.len {
            return None;
        }
        // SAFETY: inside the live mapping and aligned; volatile, because a
        // guest or the device may change it concurrently.
        Some(unsafe { std::ptr::read_volatile(self.addr.cast::<u8>().add(off).cast::<u32>()) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; the owner removed the
        // guest memory slot over it first.
        if unsafe { libc::munmap(self.addr, self.len) } != 0 {
            log::error!(target: "vfio", "munmap of a BAR mapping failed: {}", io::Error::last_os_error());
        }
    }
}
