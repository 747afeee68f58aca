//! A disk image as the block device's backend: opened once, locked
//! against a second VM, read and written at offsets (pread/pwrite, so
//! every queue's worker shares one file), flushed with fdatasync. A raw
//! image (a regular file or a block device) is the disk byte for byte and
//! is discarded and zeroed with fallocate (files) or BLKDISCARD /
//! BLKZEROOUT (block devices); a qcow2 image goes through [`Qcow2`] and
//! offers neither. The format is the one asked for, or, when none is,
//! qcow2 if the file starts with its magic and raw otherwise (logged).
//!
//! This is the crate's ioctl module: its `unsafe` blocks (fcntl, fallocate,
//! ioctl) are here and nowhere else.
//!
//! Not implemented: formats other than raw and qcow2. io_uring
//! (`super::uring`) reads and writes the file of [`DiskImage::raw_file`]
//! itself (raw images only; qcow2 stays synchronous).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::qcow2::{HeaderError, Qcow2, has_magic};

/// Bytes per virtio-blk sector (always 512, section 5.2.6).
pub const SECTOR_SIZE: u64 = 512;

/// `BLKDISCARD` = `_IO(0x12, 119)` (linux/fs.h): discard a byte range.
const BLKDISCARD: u64 = 0x1277;
/// `BLKZEROOUT` = `_IO(0x12, 127)`: zero a byte range.
const BLKZEROOUT: u64 = 0x127f;

/// Why an image could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// open(2) failed.
    #[error(
        "--disk path={path}: cannot open the image: {source}; check the path and its permissions"
    )]
    Open {
        /// The image.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Another process (another VM) holds a conflicting lock.
    #[error(
        "--disk path={0}: the image is in use by another VM (it holds a conflicting lock); stop \
         that VM, or give this one its own copy (or readonly=on if both only read it)"
    )]
    Locked(PathBuf),
    /// fcntl(F_OFD_SETLK) failed for another reason.
    #[error("--disk path={path}: cannot lock the image: {source}")]
    Lock {
        /// The image.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The size could not be read, or is under one sector.
    #[error(
        "--disk path={path}: the image holds {size} bytes; it needs at least one 512-byte sector"
    )]
    TooSmall {
        /// The image.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// A qcow2 image this backend refuses.
    #[error("--disk path={path}: {source}")]
    Qcow2 {
        /// The image.
        path: PathBuf,
        /// The rule its header breaks.
        source: HeaderError,
    },
    /// direct=on with a qcow2 image.
    #[error(
        "--disk path={0}: direct=on is not supported with qcow2 images (their tables are read \
         and written in pieces smaller than a sector); drop direct=on, or convert the image \
         with `qemu-img convert -O raw`"
    )]
    Qcow2Direct(PathBuf),
}

/// Image formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// The disk byte for byte (a file or a block device).
    Raw,
    /// QEMU's qcow2, versions 2 and 3.
    Qcow2,
}

/// How the image is read and written.
#[derive(Debug)]
enum Backend {
    Raw {
        file: File,
        block_device: bool,
        direct: bool,
    },
    Qcow2(Qcow2),
}

/// An open, locked image.
#[derive(Debug)]
pub struct DiskImage {
    backend: Backend,
    path: PathBuf,
    sectors: u64,
}

/// The format of the image at `path` when none is asked for: qcow2 when
/// it starts with the qcow2 magic. Read through a descriptor of its own
/// (non-blocking, so a FIFO given by mistake does not hang the VMM), so
/// the check works under O_DIRECT too.
fn detect(path: &Path) -> ImageFormat {
    let sniff = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
    match sniff {
        Ok(file) if has_magic(&file) => ImageFormat::Qcow2,
        _ => ImageFormat::Raw,
    }
}

impl DiskImage {
    /// Open `path` as `format` (detected when `None`), with O_DIRECT for
    /// `direct` (raw only), lock it (read lock for a read-only disk,
    /// write lock otherwise) and size it.
    pub fn open(
        path: &Path,
        readonly: bool,
        direct: bool,
        format: Option<ImageFormat>,
    ) -> Result<Self, ImageError> {
        let format = match format {
            Some(format) => format,
            None => {
                let found = detect(path);
                log::info!(target: "virtio-blk", "{}: no image_type given; {found:?} chosen (qcow2 magic {})", path.display(), if found == ImageFormat::Qcow2 { "found" } else { "absent" });
                found
            }
        };
        if format == ImageFormat::Qcow2 && direct {
            return Err(ImageError::Qcow2Direct(path.to_path_buf()));
        }
        let mut options = OpenOptions::new();
        options.read(true).write(!readonly);
        if direct {
            options.custom_flags(libc::O_DIRECT);
        }
        let mut file = options.open(path).map_err(|source| ImageError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        lock(&file, path, readonly)?;
        let block_device = file
            .metadata()
            .map(|m| m.file_type().is_block_device())
            .unwrap_or(false);
        // The end of a block device is its size too.
        let file_len = file.seek(SeekFrom::End(0)).unwrap_or(0);
        let (backend, size) = match format {
            ImageFormat::Raw => (
                Backend::Raw {
                    file,
                    block_device,
                    direct,
                },
                file_len,
            ),
            ImageFormat::Qcow2 => {
                let qcow2 =
                    Qcow2::open(file, file_len, !readonly).map_err(|source| ImageError::Qcow2 {
                        path: path.to_path_buf(),
                        source,
                    })?;
                let size = qcow2.size();
                (Backend::Qcow2(qcow2), size)
            }
        };
        if size < SECTOR_SIZE {
            return Err(ImageError::TooSmall {
                path: path.to_path_buf(),
                size,
            });
        }
        if size % SECTOR_SIZE != 0 {
            log::warn!(target: "virtio-blk", "{}: {size} bytes is not a whole number of sectors; the tail is not visible", path.display());
        }
        Ok(DiskImage {
            backend,
            path: path.to_path_buf(),
            sectors: size / SECTOR_SIZE,
        })
    }

    /// The image's format.
    pub fn format(&self) -> ImageFormat {
        match self.backend {
            Backend::Raw { .. } => ImageFormat::Raw,
            Backend::Qcow2(_) => ImageFormat::Qcow2,
        }
    }

    /// DISCARD and WRITE_ZEROES are served (raw images only).
    pub fn supports_discard(&self) -> bool {
        self.format() == ImageFormat::Raw
    }

    /// Capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// The image's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open image when its bytes are the disk's bytes at the same
    /// offsets (a raw image), for I/O that bypasses [`DiskImage::read_at`]
    /// and [`DiskImage::write_at`] (io_uring); `None` for a format whose
    /// offsets need translating.
    pub fn raw_file(&self) -> Option<&File> {
        match &self.backend {
            Backend::Raw { file, .. } => Some(file),
            Backend::Qcow2(_) => None,
        }
    }

    /// The raw image when it is opened without O_DIRECT (a file or a block
    /// device): its requests may move straight between it and guest memory
    /// ([`super::vectored`]); O_DIRECT needs the bounce buffer's alignment.
    pub fn vectored_file(&self) -> Option<&File> {
        match &self.backend {
            Backend::Raw {
                file,
                direct: false,
                ..
            } => Some(file),
            _ => None,
        }
    }

    /// The raw image when it is a regular file written through the page
    /// cache (no O_DIRECT, not a block device): the one kind of image whose
    /// writes io_uring may hand to its worker threads
    /// ([`super::uring::punts_buffered_writes`]).
    pub fn buffered_file(&self) -> Option<&File> {
        match &self.backend {
            Backend::Raw {
                file,
                block_device: false,
                direct: false,
            } => Some(file),
            _ => None,
        }
    }

    /// Fill `buf` from byte `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match &self.backend {
            Backend::Raw { file, .. } => file.read_exact_at(buf, offset),
            Backend::Qcow2(q) => q.read_at(buf, offset),
        }
    }

    /// Write `buf` at byte `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match &self.backend {
            Backend::Raw { file, .. } => file.write_all_at(buf, offset),
            Backend::Qcow2(q) => q.write_at(buf, offset),
        }
    }

    /// Make written data durable (fdatasync).
    pub fn flush(&self) -> io::Result<()> {
        match &self.backend {
            Backend::Raw { file, .. } => file.sync_data(),
            Backend::Qcow2(q) => q.flush(),
        }
    }

    /// The raw image's file and whether it is a block device; discard and
    /// write-zeroes exist for raw images only.
    fn raw(&self) -> io::Result<(&File, bool)> {
        match &self.backend {
            Backend::Raw {
                file, block_device, ..
            } => Ok((file, *block_device)),
            Backend::Qcow2(_) => Err(io::Error::from(io::ErrorKind::Unsupported)),
        }
    }

    /// Give `len` bytes at `offset` back to the host (reads as zeroes after).
    pub fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.raw()?.1 {
            return self.range_ioctl(BLKDISCARD, offset, len);
        }
        self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    }

    /// Zero `len` bytes at `offset`.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.raw()?.1 {
            return self.range_ioctl(BLKZEROOUT, offset, len);
        }
        self.fallocate(
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
        .or_else(|_| self.write_zero_buffers(offset, len))
    }

    /// Zeroes written out, for file systems without FALLOC_FL_ZERO_RANGE.
    fn write_zero_buffers(&self, offset: u64, len: u64) -> io::Result<()> {
        const CHUNK: u64 = 1 << 16;
        let zeroes = vec![0u8; CHUNK as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            self.write_at(&zeroes[..n as usize], offset + done)?;
            done += n;
        }
        Ok(())
    }

    fn fallocate(&self, mode: i32, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        let fd = self.raw()?.0.as_raw_fd();
        // SAFETY: fallocate on a file descriptor this struct owns; it takes
        // plain integers and touches no memory of ours.
        let ret = unsafe { libc::fallocate(fd, mode, offset, len) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn range_ioctl(&self, request: u64, offset: u64, len: u64) -> io::Result<()> {
        let range: [u64; 2] = [offset, len];
        let fd = self.raw()?.0.as_raw_fd();
        // SAFETY: BLKDISCARD / BLKZEROOUT read a `u64[2]` (start, length)
        // from the pointer, which points at `range`, alive for the call;
        // the fd is this struct's block device.
        let ret = unsafe { libc::ioctl(fd, request as _, range.as_ptr()) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Take an open file description lock on the whole image: a write lock
/// for a writable disk, a read lock for a read-only one, so two VMs never
/// write one image and a reader never sees a writer's half-done blocks.
/// OFD locks belong to the open file, not the process: they go when the
/// image is closed, and a second open in this process conflicts too.
fn lock(file: &File, path: &Path, readonly: bool) -> Result<(), ImageError> {
    let lock_type = if readonly {
        libc::F_RDLCK
    } else {
        libc::F_WRLCK
    };
    let flock = libc::flock {
        l_type: lock_type as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: F_OFD_SETLK reads one `struct flock` from the pointer, which
    // points at `flock`, alive for the call; the fd is `file`'s.
    let ret = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &flock) };
    if ret == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Err(ImageError::Locked(path.to_path_buf())),
        _ => Err(ImageError::Lock {
            path: path.to_path_buf(),
            source: err,
        }),
    }
}
