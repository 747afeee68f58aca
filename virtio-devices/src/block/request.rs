//! One virtio-blk request (virtio 1.2 section 5.2.6): a descriptor chain of
//! a 16-byte header (type, reserved, sector) and any data in readable
//! descriptors, then data in writable descriptors, then the one-byte
//! status, the last byte of the last (writable) descriptor.
//!
//! Every guest mistake is answered, never trusted: a chain whose last
//! descriptor is not writable has nowhere to put a status and is returned
//! with nothing written (and a log line); every other malformed request
//! (header short or in a writable descriptor, readable after writable
//! descriptors, data in the wrong direction for its type, a length that is
//! not whole sectors, sectors past the end, an address outside guest RAM,
//! a write to a read-only disk) gets VIRTIO_BLK_S_IOERR; an unknown type
//! VIRTIO_BLK_S_UNSUPP. The chain iterator of `virtio-queue` bounds the
//! chain to the queue size, so a descriptor loop ends.

use std::sync::atomic::{AtomicU64, Ordering};

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryError};

use super::image::{DiskImage, SECTOR_SIZE};
use crate::GuestMemory;

/// Bytes of `virtio_blk_outhdr`.
const HEADER_LEN: usize = 16;
/// Bytes of one `virtio_blk_discard_write_zeroes` segment.
const RANGE_LEN: usize = 16;
/// Largest bounce buffer one request uses at a time.
const CHUNK: usize = 256 << 10;
/// Alignment of the bounce buffer, enough for O_DIRECT on any disk.
const ALIGN: usize = 4096;

/// Per-disk I/O counters, as cloud-hypervisor's `vm.counters` names them.
#[derive(Debug, Default)]
pub struct BlockCounters {
    /// Bytes read from the image for the guest.
    pub read_bytes: AtomicU64,
    /// Bytes written to the image.
    pub write_bytes: AtomicU64,
    /// Read requests completed.
    pub read_ops: AtomicU64,
    /// Write requests completed.
    pub write_ops: AtomicU64,
    /// IN, OUT and FLUSH requests completed through io_uring
    /// (`vm.counters`' `io_uring_ops`).
    pub uring_ops: AtomicU64,
    /// IN and OUT requests a helper thread of the synchronous path served
    /// (`vm.counters`' `helper_ops`; [`super::helpers`]).
    pub helper_ops: AtomicU64,
    /// Of those, the OUT requests (`helper_write_ops`): 0 on a buffered
    /// image file, whose writes stay with the worker ([`super::helpers::Handoff`]).
    pub helper_write_ops: AtomicU64,
}

/// One guest buffer.
#[derive(Clone, Copy, Debug)]
pub(super) struct Segment {
    /// Its guest-physical address.
    pub addr: GuestAddress,
    /// Its length in bytes.
    pub len: u64,
}

/// What the device needs to serve requests.
pub struct RequestContext<'a> {
    /// The image.
    pub image: &'a DiskImage,
    /// Refuse writes.
    pub readonly: bool,
    /// GET_ID's answer (NUL padded).
    pub serial: &'a [u8; VIRTIO_BLK_ID_BYTES as usize],
    /// Counters to bump.
    pub counters: &'a BlockCounters,
    /// The worker's bounce buffer, reused across requests.
    pub buffer: &'a mut Vec<u8>,
}

/// Why a request failed (status IOERR or UNSUPP), for the log line.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    #[error("malformed chain: {0}")]
    Malformed(&'static str),
    #[error("sectors {sector}+{count} past the end ({capacity} sectors)")]
    OutOfRange {
        sector: u64,
        count: u64,
        capacity: u64,
    },
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("guest address {0:#x} is not RAM")]
    BadAddress(u64),
    #[error("image I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("request type {0} is not supported")]
    Unsupported(u32),
}

/// A copy position over guest segments.
struct Cursor<'s> {
    segments: &'s [Segment],
    index: usize,
    offset: u64,
}

impl<'s> Cursor<'s> {
    fn new(segments: &'s [Segment]) -> Self {
        Cursor {
            segments,
            index: 0,
            offset: 0,
        }
    }

    /// Copy between `buf` and the guest at the cursor, advancing it.
    fn copy(&mut self, mem: &GuestMemory, buf: &mut [u8], to_guest: bool) -> Result<(), Failure> {
        let mut done = 0;
        while done < buf.len() {
            let seg = self
                .segments
                .get(self.index)
                .ok_or(Failure::Malformed("data shorter than expected"))?;
            let n = (seg.len - self.offset).min((buf.len() - done) as u64) as usize;
            let addr = seg
                .addr
                .checked_add(self.offset)
                .ok_or(Failure::BadAddress(seg.addr.0))?;
            let part = &mut buf[done..done + n];
            let result = if to_guest {
                mem.write_slice(part, addr)
            } else {
                mem.read_slice(part, addr)
            };
            result.map_err(|_| Failure::BadAddress(addr.0))?;
            done += n;
            self.offset += n as u64;
            if self.offset == seg.len {
                self.index += 1;
                self.offset = 0;
            }
        }
        Ok(())
    }
}

/// Bytes in `segments` together.
pub(super) fn total(segments: &[Segment]) -> u64 {
    segments.iter().map(|s| s.len).sum()
}

/// An aligned window of `len` bytes in `buffer` (grown as needed).
fn bounce(buffer: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buffer.len() < len + ALIGN {
        buffer.resize(len + ALIGN, 0);
    }
    let start = buffer.as_ptr().align_offset(ALIGN).min(ALIGN);
    &mut buffer[start..start + len]
}

/// A request checked against the chain's shape, the disk's size and its
/// read-only flag, before any I/O: what the device is to do.
#[derive(Debug)]
pub(super) enum Plan {
    /// IN: fill `data` (device-writable) from byte `offset`.
    Read {
        /// Byte offset in the image.
        offset: u64,
        /// The guest buffers, whole sectors together.
        data: Vec<Segment>,
    },
    /// OUT: write `data` (device-readable) at byte `offset`.
    Write {
        /// Byte offset in the image.
        offset: u64,
        /// The guest buffers, whole sectors together.
        data: Vec<Segment>,
    },
    /// FLUSH: make earlier writes durable.
    Flush,
    /// GET_ID: the serial into `data`.
    GetId {
        /// The guest buffers.
        data: Vec<Segment>,
    },
    /// DISCARD or WRITE_ZEROES over the 16-byte ranges in `data`.
    Ranges {
        /// VIRTIO_BLK_T_DISCARD or VIRTIO_BLK_T_WRITE_ZEROES.
        kind: u32,
        /// The guest buffers holding the ranges.
        data: Vec<Segment>,
    },
}

impl Plan {
    /// Bytes an IN or OUT moves; 0 for the other requests.
    pub(super) fn bytes(&self) -> u64 {
        match self {
            Plan::Read { data, .. } | Plan::Write { data, .. } => total(data),
            _ => 0,
        }
    }
}

/// A chain with somewhere to put its status byte.
pub(super) struct Parsed {
    /// The status byte: the last byte of the last descriptor.
    pub status: GuestAddress,
    /// What to do, or why the request fails.
    pub plan: Result<Plan, Failure>,
}

/// Serve the request in `chain`; returns the bytes written into the
/// chain's writable descriptors (the used length).
pub fn execute(
    chain: impl Iterator<Item = Descriptor>,
    mem: &GuestMemory,
    ctx: &mut RequestContext<'_>,
) -> u32 {
    let descriptors: Vec<Descriptor> = chain.collect();
    let Some(parsed) = parse(&descriptors, mem, ctx.image, ctx.readonly) else {
        return 0;
    };
    let result = parsed.plan.and_then(|plan| run(plan, mem, ctx));
    finish(mem, ctx.image, parsed.status, result)
}

/// Check the chain (section 5.2.6) and plan the request; `None` when the
/// chain has no writable last byte to put a status in (it is returned
/// with nothing written, and a log line).
pub(super) fn parse(
    descriptors: &[Descriptor],
    mem: &GuestMemory,
    image: &DiskImage,
    readonly: bool,
) -> Option<Parsed> {
    let Some(last) = descriptors
        .last()
        .filter(|d| d.is_write_only() && d.len() > 0)
    else {
        log::warn!(target: "virtio-blk", "{}: request without a writable status byte dropped", image.path().display());
        return None;
    };
    let status = last.addr().checked_add(u64::from(last.len()) - 1)?;
    Some(Parsed {
        status,
        plan: plan(descriptors, mem, image, readonly),
    })
}

/// Write the status byte for `result` and return the used length (0 when
/// the status byte is not RAM: the request is dropped).
pub(super) fn finish(
    mem: &GuestMemory,
    image: &DiskImage,
    status_addr: GuestAddress,
    result: Result<u64, Failure>,
) -> u32 {
    let (status, written) = match result {
        Ok(written) => (VIRTIO_BLK_S_OK, written),
        Err(Failure::Unsupported(t)) => {
            log::debug!(target: "virtio-blk", "request type {t} unsupported");
            (VIRTIO_BLK_S_UNSUPP, 0)
        }
        Err(e) => {
            log::warn!(target: "virtio-blk", "{}: {e}", image.path().display());
            (VIRTIO_BLK_S_IOERR, 0)
        }
    };
    if mem.write_obj(status as u8, status_addr).is_err() {
        log::warn!(target: "virtio-blk", "status byte at {:#x} is not RAM; request dropped", status_addr.0);
        return 0;
    }
    u32::try_from(written + 1).unwrap_or(u32::MAX)
}

/// The bytes from `skip` on of `segments`.
fn after(segments: &[Segment], mut skip: u64) -> Vec<Segment> {
    let mut rest = Vec::new();
    for seg in segments {
        if skip >= seg.len {
            skip -= seg.len;
            continue;
        }
        rest.push(Segment {
            addr: GuestAddress(seg.addr.0.wrapping_add(skip)),
            len: seg.len - skip,
        });
        skip = 0;
    }
    rest
}

/// Split the chain into readable and writable data (the status byte off
/// the end), read the header and check the request.
fn plan(
    descriptors: &[Descriptor],
    mem: &GuestMemory,
    image: &DiskImage,
    readonly: bool,
) -> Result<Plan, Failure> {
    let mut readable = Vec::new();
    let mut writable = Vec::new();
    for (i, d) in descriptors.iter().enumerate() {
        let mut len = u64::from(d.len());
        if i + 1 == descriptors.len() {
            len -= 1; // the status byte
        }
        let seg = Segment {
            addr: d.addr(),
            len,
        };
        if d.is_write_only() {
            writable.push(seg);
        } else if writable.is_empty() {
            readable.push(seg);
        } else {
            return Err(Failure::Malformed(
                "readable descriptor after a writable one",
            ));
        }
    }
    readable.retain(|s| s.len > 0);
    writable.retain(|s| s.len > 0);
    if total(&readable) < HEADER_LEN as u64 {
        return Err(Failure::Malformed("header shorter than 16 readable bytes"));
    }
    let mut header = [0u8; HEADER_LEN];
    Cursor::new(&readable).copy(mem, &mut header, false)?;
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut sector_bytes = [0u8; 8];
    sector_bytes.copy_from_slice(&header[8..16]);
    let sector = u64::from_le_bytes(sector_bytes);
    let readable_data = after(&readable, HEADER_LEN as u64);
    let writes_to_guest = total(&writable) != 0;
    match kind {
        VIRTIO_BLK_T_IN => {
            if !readable_data.is_empty() {
                return Err(Failure::Malformed("IN with readable data"));
            }
            let offset = check_transfer(image, sector, total(&writable))?;
            Ok(Plan::Read {
                offset,
                data: writable,
            })
        }
        VIRTIO_BLK_T_OUT => {
            if writes_to_guest {
                return Err(Failure::Malformed("OUT with writable data"));
            }
            if readonly {
                return Err(Failure::ReadOnly);
            }
            let offset = check_transfer(image, sector, total(&readable_data))?;
            Ok(Plan::Write {
                offset,
                data: readable_data,
            })
        }
        VIRTIO_BLK_T_FLUSH => Ok(Plan::Flush),
        VIRTIO_BLK_T_GET_ID => Ok(Plan::GetId { data: writable }),
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
            // Not offered for qcow2: a driver that sends them anyway
            // learns the type is unsupported.
            if !image.supports_discard() {
                return Err(Failure::Unsupported(kind));
            }
            if readonly {
                return Err(Failure::ReadOnly);
            }
            if writes_to_guest || total(&readable_data) % RANGE_LEN as u64 != 0 {
                return Err(Failure::Malformed(
                    "discard/write-zeroes ranges not 16-byte segments",
                ));
            }
            Ok(Plan::Ranges {
                kind,
                data: readable_data,
            })
        }
        other => Err(Failure::Unsupported(other)),
    }
}

/// A transfer of `len` bytes at `sector`: whole sectors inside the disk;
/// Ok is its byte offset.
fn check_transfer(image: &DiskImage, sector: u64, len: u64) -> Result<u64, Failure> {
    if len % SECTOR_SIZE != 0 {
        return Err(Failure::Malformed("data length is not whole sectors"));
    }
    check_range(image, sector, len / SECTOR_SIZE)?;
    Ok(sector * SECTOR_SIZE)
}

/// Run a planned request synchronously; Ok is the bytes written to the
/// guest.
pub(super) fn run(
    plan: Plan,
    mem: &GuestMemory,
    ctx: &mut RequestContext<'_>,
) -> Result<u64, Failure> {
    match plan {
        Plan::Read { offset, data } => {
            let len = total(&data);
            move_data(ctx, mem, &data, offset, len, true)?;
            Ok(len)
        }
        Plan::Write { offset, data } => {
            let len = total(&data);
            move_data(ctx, mem, &data, offset, len, false)?;
            Ok(0)
        }
        Plan::Flush => {
            ctx.image.flush()?;
            Ok(0)
        }
        Plan::GetId { data } => {
            let n = total(&data).min(u64::from(VIRTIO_BLK_ID_BYTES)) as usize;
            let mut id = *ctx.serial;
            Cursor::new(&data).copy(mem, &mut id[..n], true)?;
            Ok(n as u64)
        }
        Plan::Ranges { kind, data } => {
            let mut reader = Cursor::new(&data);
            for _ in 0..total(&data) / RANGE_LEN as u64 {
                let mut range = [0u8; RANGE_LEN];
                reader.copy(mem, &mut range, false)?;
                let mut start = [0u8; 8];
                start.copy_from_slice(&range[..8]);
                let start = u64::from_le_bytes(start);
                let count = u64::from(u32::from_le_bytes([
                    range[8], range[9], range[10], range[11],
                ]));
                check_range(ctx.image, start, count)?;
                let (offset, len) = (start * SECTOR_SIZE, count * SECTOR_SIZE);
                if kind == VIRTIO_BLK_T_DISCARD {
                    ctx.image.discard(offset, len)?;
                } else {
                    ctx.image.write_zeroes(offset, len)?;
                }
            }
            Ok(0)
        }
    }
}

fn check_range(image: &DiskImage, sector: u64, count: u64) -> Result<(), Failure> {
    let capacity = image.sectors();
    match sector.checked_add(count) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(Failure::OutOfRange {
            sector,
            count,
            capacity,
        }),
    }
}

/// Move a request's `len` bytes between image byte `start` and the guest's
/// buffers `data`: straight (preadv / pwritev) for a raw image without
/// O_DIRECT, else through the bounce buffer ([`transfer`]).
fn move_data(
    ctx: &mut RequestContext<'_>,
    mem: &GuestMemory,
    data: &[Segment],
    start: u64,
    len: u64,
    to_guest: bool,
) -> Result<(), Failure> {
    let Some(file) = ctx.image.vectored_file() else {
        return transfer(ctx, mem, &mut Cursor::new(data), start, len, to_guest);
    };
    super::vectored::transfer(file, mem, data, start, to_guest).map_err(|e| match e {
        super::vectored::VectoredError::Guest(GuestMemoryError::InvalidGuestAddress(a)) => {
            Failure::BadAddress(a.0)
        }
        super::vectored::VectoredError::Guest(_) => Failure::BadAddress(0),
        super::vectored::VectoredError::Io(e) => Failure::Io(e),
    })?;
    count(ctx.counters, to_guest, len);
    Ok(())
}

/// Move `len` bytes between the image at byte `start` and the guest
/// buffers under `cursor`, a bounce buffer at a time.
fn transfer(
    ctx: &mut RequestContext<'_>,
    mem: &GuestMemory,
    cursor: &mut Cursor<'_>,
    start: u64,
    len: u64,
    to_guest: bool,
) -> Result<(), Failure> {
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(CHUNK as u64) as usize;
        let buf = bounce(ctx.buffer, n);
        if to_guest {
            ctx.image.read_at(buf, start + done)?;
            cursor.copy(mem, buf, true)?;
        } else {
            cursor.copy(mem, buf, false)?;
            ctx.image.write_at(buf, start + done)?;
        }
        done += n as u64;
    }
    count(ctx.counters, to_guest, len);
    Ok(())
}

/// Count one completed IN (`to_guest`) or OUT request of `len` bytes.
pub(super) fn count(counters: &BlockCounters, to_guest: bool, len: u64) {
    let (bytes, ops) = if to_guest {
        (&counters.read_bytes, &counters.read_ops)
    } else {
        (&counters.write_bytes, &counters.write_ops)
    };
    bytes.fetch_add(len, Ordering::Relaxed);
    ops.fetch_add(1, Ordering::Relaxed);
}
