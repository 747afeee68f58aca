//! Positional vectored reads and writes between a buffered raw image and
//! guest memory (preadv / pwritev straight on the guest's buffers): the
//! synchronous path's transfer without the bounce buffer, so a request's
//! bytes are copied once, as io_uring's READV / WRITEV copy them. std's
//! `FileExt::read_vectored_at` is unstable, hence the two calls here; this
//! and [`super::uring`] are the crate's only `unsafe` I/O.
//!
//! Used for raw images opened without O_DIRECT (a file or a block device):
//! O_DIRECT needs the alignment the bounce buffer gives.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use vm_memory::{GuestMemoryBackend, GuestMemoryError};

use super::request::Segment;
use crate::GuestMemory;

/// iovecs one preadv / pwritev takes at most (UIO_MAXIOV).
const IOV_MAX: usize = 1024;

/// The guest's buffers of `data` as iovecs (here and for the ring's
/// READV / WRITEV); Err names the first address that is not guest RAM.
pub(super) fn iovecs(
    mem: &GuestMemory,
    data: &[Segment],
) -> Result<Vec<libc::iovec>, GuestMemoryError> {
    let mut out = Vec::with_capacity(data.len());
    for seg in data {
        let len = usize::try_from(seg.len)
            .map_err(|_| GuestMemoryError::InvalidGuestAddress(seg.addr))?;
        for slice in mem.get_slices(seg.addr, len) {
            let slice = slice?;
            out.push(libc::iovec {
                iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                iov_len: slice.len(),
            });
        }
    }
    Ok(out)
}

/// Read image bytes from `offset` into `data` (`to_guest`), or write
/// `data` to the image at `offset`, until every byte moved: a short
/// transfer goes on from where it stopped, one that moves nothing fails
/// (UnexpectedEof / WriteZero), EINTR is retried.
pub(super) fn transfer(
    file: &File,
    mem: &GuestMemory,
    data: &[Segment],
    mut offset: u64,
    to_guest: bool,
) -> Result<(), VectoredError> {
    let mut iov = iovecs(mem, data).map_err(VectoredError::Guest)?;
    let mut next = 0;
    while next < iov.len() {
        let batch = &iov[next..iov.len().min(next + IOV_MAX)];
        let at = libc::off_t::try_from(offset)
            .map_err(|_| VectoredError::Io(io::Error::from(io::ErrorKind::InvalidInput)))?;
        // SAFETY: `batch` is `batch.len()` iovecs, each pointing into
        // guest memory that `mem` keeps mapped for the call (made from
        // `mem` above); the kernel reads or writes exactly those ranges;
        // `file` keeps the descriptor open.
        let moved = unsafe {
            if to_guest {
                libc::preadv(file.as_raw_fd(), batch.as_ptr(), batch.len() as i32, at)
            } else {
                libc::pwritev(file.as_raw_fd(), batch.as_ptr(), batch.len() as i32, at)
            }
        };
        if moved < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(VectoredError::Io(e));
        }
        if moved == 0 {
            let kind = if to_guest {
                io::ErrorKind::UnexpectedEof
            } else {
                io::ErrorKind::WriteZero
            };
            return Err(VectoredError::Io(io::Error::from(kind)));
        }
        offset += moved as u64;
        advance(&mut iov, &mut next, moved as usize);
    }
    Ok(())
}

/// Account `moved` bytes to `iov` from entry `*next` on: whole entries
/// done move `*next` past them, a partly done one starts where it stopped
/// (here and for the ring's short transfers).
pub(super) fn advance(iov: &mut [libc::iovec], next: &mut usize, mut moved: usize) {
    while moved > 0 {
        let Some(cur) = iov.get_mut(*next) else {
            return;
        };
        if moved < cur.iov_len {
            cur.iov_base = cur.iov_base.wrapping_byte_add(moved);
            cur.iov_len -= moved;
            return;
        }
        moved -= cur.iov_len;
        *next += 1;
    }
}

/// Why a vectored transfer failed.
#[derive(Debug)]
pub(super) enum VectoredError {
    /// A buffer is not guest RAM.
    Guest(GuestMemoryError),
    /// The image's read or write failed.
    Io(io::Error),
}
