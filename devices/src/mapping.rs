//! The one host memory mapping type of the VMM: an `mmap` owned by a value
//! and unmapped when the value drops. Everything the guest reaches through
//! a memory slot rather than guest RAM is one of these: a passthrough BAR
//! area (mmap of the VFIO device fd), the CMD-QV VINTF page0 (mmap of the
//! iommufd fd) and the emulated backend's stand-in page0 (anonymous).
//!
//! A guest memory slot holds an `Arc<Mapping>` for as long as it exists
//! (`pci::GuestMapper`), so the `munmap` can only run after the slot is
//! gone: that order is kept by ownership, not by the callers. No safe
//! function takes a raw host address; the address leaves this type only
//! through [`Mapping::host_addr`] for the slot ioctl itself.
//!
//! The only `unsafe` code of the crate is here: `mmap`/`munmap` and the
//! 32-bit accesses into a live mapping.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

/// A refused `mmap`, with the kernel's errno.
#[derive(Debug, thiserror::Error)]
#[error("mmap of {len:#x} bytes at offset {offset:#x}")]
pub struct MmapError {
    /// Offset in the file (0 for anonymous memory).
    pub offset: u64,
    /// Bytes asked for.
    pub len: u64,
    /// The kernel's answer (EINVAL for a length or offset that does not fit).
    #[source]
    pub source: io::Error,
}

impl MmapError {
    /// The errno, when the kernel gave one.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// One shared, read-write mapping, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    addr: usize,
    len: usize,
}

impl Mapping {
    /// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_SHARED, fd, offset)`: a
    /// VFIO region (at the region's offset) or an iommufd vIOMMU region
    /// (the kernel wants its exact registered offset and length).
    /// A bad `fd` is the kernel's EBADF, nothing worse: the fd is only
    /// read for the call.
    pub fn shared(fd: RawFd, offset: u64, len: u64) -> Result<Self, MmapError> {
        Self::map(Some(fd), offset, len)
    }

    /// `len` bytes of zeroed anonymous shared memory (the emulated page0, a
    /// stand-in BAR in tests).
    pub fn anonymous(len: u64) -> Result<Self, MmapError> {
        Self::map(None, 0, len)
    }

    fn map(fd: Option<RawFd>, offset: u64, len: u64) -> Result<Self, MmapError> {
        let fail = |source| MmapError {
            offset,
            len,
            source,
        };
        let einval = || fail(io::Error::from_raw_os_error(libc::EINVAL));
        let size = usize::try_from(len).map_err(|_| einval())?;
        let off = libc::off_t::try_from(offset).map_err(|_| einval())?;
        let (raw_fd, flags) = match fd {
            Some(fd) => (fd, libc::MAP_SHARED),
            None => (-1, libc::MAP_SHARED | libc::MAP_ANONYMOUS),
        };
        // SAFETY: a fresh mapping placed by the kernel (addr NULL, no
        // MAP_FIXED), so no existing memory is replaced; `fd` is borrowed
        // for the call only and the mapping does not need it to stay open;
        // the result is checked before use.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                raw_fd,
                off,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(fail(io::Error::last_os_error()));
        }
        Ok(Mapping {
            addr: addr as usize,
            len: size,
        })
    }

    /// The host virtual address of the first byte, for the memory slot
    /// ioctl (`KVM_SET_USER_MEMORY_REGION`) of whoever holds the mapping.
    pub fn host_addr(&self) -> u64 {
        self.addr as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Never true for a mapping the kernel made (at least one page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The byte offset of the aligned 32-bit word at `offset`, if inside.
    fn word(&self, offset: u64) -> Option<usize> {
        let at = usize::try_from(offset).ok()?;
        (at % 4 == 0 && at.checked_add(4)? <= self.len).then_some(at)
    }

    /// Read the 32-bit register at `offset` with one volatile access (device
    /// memory: never merged or cached by the compiler); `None` when it is
    /// outside the mapping or not 4-byte aligned.
    pub fn read_u32(&self, offset: u64) -> Option<u32> {
        let at = self.word(offset)?;
        // SAFETY: `at + 4 <= len` and aligned (checked), so the pointer is
        // inside this live mapping and aligned for u32.
        Some(unsafe { std::ptr::read_volatile((self.addr + at) as *const u32) })
    }

    /// Write the 32-bit register at `offset` (volatile); false when out of
    /// range.
    pub fn write_u32(&self, offset: u64, value: u32) -> bool {
        let Some(at) = self.word(offset) else {
            return false;
        };
        // SAFETY: as in `read_u32`: in bounds, aligned, mapping alive.
        unsafe { std::ptr::write_volatile((self.addr + at) as *mut u32, value) };
        true
    }

    /// The 32-bit word at `offset` as an atomic, for memory a vCPU and a
    /// VMM thread share (the emulated page0); `None` when out of range.
    pub fn atomic_u32(&self, offset: u64) -> Option<&AtomicU32> {
        let at = self.word(offset)?;
        // SAFETY: in bounds and 4-byte aligned (checked); the mapping lives
        // as long as the returned borrow of `self`; AtomicU32 has u32's
        // layout and every bit pattern is valid; every access through it is
        // atomic, so a guest writing the same word concurrently races with
        // nothing the compiler assumes.
        Some(unsafe { &*((self.addr + at) as *const AtomicU32) })
    }

    /// Atomic load with `order` (0 when out of range).
    pub fn load_u32(&self, offset: u64, order: Ordering) -> u32 {
        self.atomic_u32(offset).map_or(0, |w| w.load(order))
    }
}

// SAFETY: the mapping is process-wide memory, valid from any thread; every
// access through this type is a volatile or atomic 32-bit access.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared access never forms a plain reference to the
// memory, only volatile or atomic accesses.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `addr`/`len` are exactly what mmap returned; no borrow of
        // the memory outlives `self` (accessors copy, `atomic_u32` borrows
        // `self`); a guest memory slot over it holds an `Arc` of it, so this
        // only runs once the slot is gone.
        let rc = unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
        if rc != 0 {
            log::error!(target: "mapping", "munmap of {:#x}+{:#x} failed: {}",
                self.addr, self.len, io::Error::last_os_error());
        }
    }
}

/// An error and its causes as one sentence ("what failed: why: errno"), for
/// the place where it is printed; callers before that keep the typed error.
pub struct Sentence<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for Sentence<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_are_bounds_and_alignment_checked() {
        let map = Mapping::anonymous(4096).unwrap();
        assert!(map.write_u32(4092, 0xdead_beef));
        assert_eq!(map.read_u32(4092), Some(0xdead_beef));
        assert_eq!(map.load_u32(4092, Ordering::Acquire), 0xdead_beef);
        assert_eq!(map.read_u32(4093), None, "unaligned");
        assert_eq!(map.read_u32(4096), None, "past the end");
        assert!(map.atomic_u32(u64::MAX - 3).is_none());
        assert!(!map.write_u32(u64::MAX - 3, 1));
    }

    #[test]
    fn a_refused_mmap_keeps_the_errno_and_names_the_request() {
        let err = Mapping::shared(-1, 0x1000, 0x2000).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EBADF), "{err:?}");
        let sentence = Sentence(&err).to_string();
        assert!(
            sentence.starts_with("mmap of 0x2000 bytes at offset 0x1000: "),
            "{sentence}"
        );
        let err = Mapping::anonymous(u64::MAX).unwrap_err();
        assert!(err.errno().is_some(), "{err:?}");
    }
}
