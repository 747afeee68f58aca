//! virtio-blk (virtio 1.2 section 5.2) over a raw or qcow2 image.
//!
//! Implemented: requests IN, OUT, FLUSH, GET_ID, DISCARD, WRITE_ZEROES
//! ([`request`]); features VIRTIO_BLK_F_FLUSH, SEG_MAX, MQ (one worker
//! thread per queue), RO (read-only disk: every write-type request is
//! answered VIRTIO_BLK_S_IOERR), DISCARD and WRITE_ZEROES (writable raw
//! disks; not offered for qcow2, whose requests of these types are
//! answered VIRTIO_BLK_S_UNSUPP); raw files and block devices, and qcow2
//! images ([`qcow2`]), with an OFD lock ([`image`]), O_DIRECT with
//! `direct=on` (raw only).
//!
//! I/O: each queue's worker serves IN, OUT and FLUSH of a raw image
//! through its own io_uring ([`uring`], [`batch`]) when the host has one
//! and `_disable_io_uring` is off, the whole batch of available chains at
//! a time; otherwise (qcow2 images included), and for every other request,
//! synchronously in the worker ([`request`]: preadv/pwritev straight on
//! the guest's buffers, [`vectored`], or pread/pwrite through a bounce
//! buffer for qcow2 and O_DIRECT; fdatasync), as
//! is every request of an image on a file system without RWF_NOWAIT (tmpfs:
//! io_uring would pass each to its io-wq threads). On that synchronous path
//! a raw image's queue has helper threads (one fewer than the host's CPUs,
//! at most three) that take a batch's IN and OUT of 64 KiB or more beside
//! the worker ([`helpers`]). OUT
//! on a buffered image file is written by the worker too when io_uring
//! would hand each such write to its io-wq threads (every file system but
//! xfs and btrfs: [`uring::punts_buffered_writes`]).
//!
//! Deliberately not implemented (yet): other image formats, AIO, CONFIG_WCE,
//! TOPOLOGY, BLK_SIZE (512-byte sectors are the default),
//! rate limiting, zoned devices, secure erase. (VIRTIO_RING_F_INDIRECT_DESC
//! is offered: virtio-queue follows indirect tables; so is
//! VIRTIO_RING_F_EVENT_IDX, served by the worker.)

mod batch;
mod helpers;
pub mod image;
pub mod qcow2;
pub mod request;
mod uring;
mod vectored;

use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_ID_BYTES,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::Queue;

use crate::worker::{Progress, QueueHandler, Signal, Workers, serve_chains};
use crate::{GuestMemory, VirtioDevice, feature};
use batch::UringQueue;
use helpers::Helpers;
pub use image::{DiskImage, ImageError, ImageFormat};
pub use request::BlockCounters;
use request::RequestContext;
pub use uring::Unavailable as IoUringUnavailable;

/// Largest discard / write-zeroes request, in sectors (2 GiB).
const MAX_RANGE_SECTORS: u32 = 1 << 22;

/// How the disk is presented.
#[derive(Clone, Debug)]
pub struct BlockParams {
    /// Name in log lines and thread names.
    pub id: String,
    /// Refuse writes (VIRTIO_BLK_F_RO).
    pub readonly: bool,
    /// Queues (VIRTIO_BLK_F_MQ when more than one).
    pub num_queues: u16,
    /// Size of each queue.
    pub queue_size: u16,
    /// GET_ID's answer, up to 20 bytes.
    pub serial: String,
    /// Serve IN/OUT/FLUSH through io_uring when the host has it
    /// (cloud-hypervisor's `_disable_io_uring=on` turns it off).
    pub io_uring: bool,
    /// Helper threads per queue on the synchronous path of a raw image
    /// ([`helpers`]); `None`: one fewer than the CPUs this process may
    /// run on, at most three.
    pub helper_threads: Option<usize>,
}

/// How a disk's queues do their I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoEngine {
    /// One io_uring per queue for IN, OUT and FLUSH.
    IoUring,
    /// pread/pwrite/fdatasync in the queue's worker.
    Sync,
}

impl std::fmt::Display for IoEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IoEngine::IoUring => "io_uring",
            IoEngine::Sync => "synchronous I/O",
        })
    }
}

/// Submission entries per queue's ring (at most the queue size: a batch
/// larger than the ring waits for room).
const RING_ENTRIES: u16 = 256;

/// One ring per queue for a raw image, made here on the VMM thread so the
/// workers only need io_uring_enter; `None` (logged once, with the reason)
/// when the host has no usable io_uring, or when io_uring could serve this
/// image only through its io-wq threads ([`uring::issues_without_workers`]).
fn rings(image: &DiskImage, params: &BlockParams) -> Option<Vec<uring::Ring>> {
    if !params.io_uring {
        return None;
    }
    let file = image.raw_file()?;
    if !uring::issues_without_workers(file) {
        log::info!(target: "virtio-blk", "disk {}: {} is on a file system where io_uring would pass every request to its worker threads (no RWF_NOWAIT, e.g. tmpfs); using synchronous I/O", params.id, image.path().display());
        return None;
    }
    let entries = u32::from(params.queue_size.clamp(2, RING_ENTRIES));
    let made: Result<Vec<_>, _> = (0..params.num_queues)
        .map(|_| uring::Ring::new(entries, file))
        .collect();
    match made {
        Ok(rings) => Some(rings),
        Err(reason) => {
            log::warn!(target: "virtio-blk", "disk {}: io_uring unavailable ({reason}); using synchronous I/O", params.id);
            None
        }
    }
}

/// A virtio-blk device.
pub struct Block {
    params: BlockParams,
    image: Arc<DiskImage>,
    counters: Arc<BlockCounters>,
    engine: IoEngine,
    helper_threads: usize,
    workers: Workers,
}

impl Block {
    /// A disk over `image`, its queue workers started (parked).
    pub fn new(image: DiskImage, params: BlockParams) -> std::io::Result<Self> {
        let mut serial = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        for (dst, src) in serial.iter_mut().zip(params.serial.bytes()) {
            *dst = src;
        }
        let image = Arc::new(image);
        let counters = Arc::new(BlockCounters::default());
        let mut rings = rings(&image, &params).map(Vec::into_iter);
        let engine = match rings {
            Some(_) => IoEngine::IoUring,
            None => IoEngine::Sync,
        };
        // A buffered image on a file system whose writes io_uring would
        // pass to io-wq one at a time: OUT goes through the worker itself.
        let inline_writes = rings.is_some()
            && image
                .buffered_file()
                .is_some_and(uring::punts_buffered_writes);
        if inline_writes {
            log::info!(target: "virtio-blk", "disk {}: writes to {} go through the queue workers (io_uring would pass each buffered write on that file system to its io-wq threads); reads and flushes through io_uring", params.id, image.path().display());
        }
        // The synchronous path of a raw image shares a batch's large
        // requests with helper threads ([`helpers`]); qcow2 keeps one
        // thread per queue (its metadata is not shared between threads).
        let helper_count = if rings.is_none() && image.raw_file().is_some() {
            params.helper_threads.unwrap_or_else(|| {
                helpers::count_for(std::thread::available_parallelism().map_or(1, |n| n.get()))
            })
        } else {
            0
        };
        let handoff = helpers::Handoff::for_image(&image);
        if helper_count > 0 {
            let (what, rest) = if handoff.writes {
                ("reads and writes", "")
            } else {
                (
                    "reads",
                    "; writes stay with the worker (a buffered write to one file holds its inode lock)",
                )
            };
            log::info!(target: "virtio-blk", "disk {}: {} helper thread(s) per queue share {} of {} KiB or more with its worker{}", params.id, helper_count, what, handoff.min >> 10, rest);
        }
        let mut workers = Workers::new()?;
        for index in 0..params.num_queues {
            let name = format!("{}-q{index}", params.id);
            let helpers = match helper_count {
                0 => None,
                n => Some(Helpers::spawn(
                    &name,
                    n,
                    image.clone(),
                    params.readonly,
                    serial,
                    counters.clone(),
                    handoff,
                )?),
            };
            let handler = BlockQueue {
                image: image.clone(),
                readonly: params.readonly,
                serial,
                counters: counters.clone(),
                buffer: Vec::new(),
                uring: rings
                    .as_mut()
                    .and_then(Iterator::next)
                    .map(|ring| UringQueue::new(ring, inline_writes)),
                helpers,
            };
            workers.spawn(name, handler)?;
        }
        Ok(Block {
            params,
            image,
            counters,
            engine,
            helper_threads: helper_count,
            workers,
        })
    }

    /// How the queues do their I/O (decided when the disk was built).
    pub fn io_engine(&self) -> IoEngine {
        self.engine
    }

    /// Helper threads beside each queue's worker (0: the workers alone).
    pub fn helper_threads(&self) -> usize {
        self.helper_threads
    }

    /// The disk's I/O counters.
    pub fn counters(&self) -> Arc<BlockCounters> {
        self.counters.clone()
    }

    /// `virtio_blk_config` (section 5.2.4), little endian.
    fn config_bytes(&self) -> [u8; 60] {
        let mut b = [0u8; 60];
        let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, &self.image.sectors().to_le_bytes());
        // seg_max: the queue less the header and status descriptors.
        put(
            12,
            &u32::from(self.params.queue_size.saturating_sub(2)).to_le_bytes(),
        );
        put(34, &self.params.num_queues.to_le_bytes());
        put(36, &MAX_RANGE_SECTORS.to_le_bytes());
        put(40, &1u32.to_le_bytes());
        put(44, &1u32.to_le_bytes());
        put(48, &MAX_RANGE_SECTORS.to_le_bytes());
        put(52, &1u32.to_le_bytes());
        b
    }
}

/// A raw disk's queue on the synchronous path with helper threads that take
/// every IN and OUT, served on the caller's thread: the batch code the
/// device's workers run, for the fuzz target (`fuzz/fuzz_targets/virtio_blk.rs`).
#[doc(hidden)]
pub struct SyncQueue(BlockQueue, crate::QueueInterrupt);

impl SyncQueue {
    /// `image`'s queue with `helper_threads` helpers (at least one).
    pub fn new(image: DiskImage, readonly: bool, helper_threads: usize) -> std::io::Result<Self> {
        let image = Arc::new(image);
        let counters = Arc::new(BlockCounters::default());
        let serial = *b"fuzz-serial\0\0\0\0\0\0\0\0\0";
        let helpers = Helpers::spawn(
            "sync",
            helper_threads.max(1),
            image.clone(),
            readonly,
            serial,
            counters.clone(),
            helpers::Handoff::EVERY,
        )?;
        // The mid-batch interrupts go to an eventfd nobody reads: the
        // target exercises the decision (the driver's used_event in guest
        // memory), not the delivery.
        let vector = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK)?;
        let interrupt = crate::QueueInterrupt::new(Some(Arc::new(vector)), Default::default());
        Ok(SyncQueue(
            BlockQueue {
                image,
                readonly,
                serial,
                counters,
                buffer: Vec::new(),
                uring: None,
                helpers: Some(helpers),
            },
            interrupt,
        ))
    }

    /// Serve every chain available on `queue`; true when any was used.
    pub fn serve(&mut self, queue: &mut Queue, mem: &GuestMemory) -> bool {
        let signal = Signal::new(self.1.clone(), queue);
        self.0.process_queue(queue, mem, Progress::new(&signal))
    }

    /// The queue's counters.
    pub fn counters(&self) -> &BlockCounters {
        &self.0.counters
    }
}

/// One queue's request loop.
struct BlockQueue {
    image: Arc<DiskImage>,
    readonly: bool,
    serial: [u8; VIRTIO_BLK_ID_BYTES as usize],
    counters: Arc<BlockCounters>,
    buffer: Vec<u8>,
    /// The io_uring path; `None` for synchronous I/O.
    uring: Option<UringQueue>,
    /// Threads sharing the synchronous path's large requests, if any.
    helpers: Option<Helpers>,
}

impl QueueHandler for BlockQueue {
    fn process_queue(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemory,
        progress: Progress<'_>,
    ) -> bool {
        let mut ctx = RequestContext {
            image: &self.image,
            readonly: self.readonly,
            serial: &self.serial,
            counters: &self.counters,
            buffer: &mut self.buffer,
        };
        if let Some(uring) = self.uring.as_mut().filter(|u| u.usable()) {
            return uring.process(queue, mem, &mut ctx);
        }
        if let Some(helpers) = self.helpers.as_mut() {
            return helpers::process(helpers, queue, mem, &mut ctx, progress);
        }
        serve_chains(queue, mem, "virtio-blk", |chain| {
            request::execute(chain, mem, &mut ctx)
        })
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![self.params.queue_size; usize::from(self.params.num_queues)]
    }

    fn features(&self) -> u64 {
        // INDIRECT_DESC: a request takes one ring slot whatever its
        // segments (virtio-queue's chain iterator follows the table), so a
        // 128-entry queue holds up to 128 requests instead of one 126-segment
        // request (measured: 1 MiB sequential reads ran at a third of QEMU's
        // without it).
        // EVENT_IDX: the driver notifies only when it passes where the
        // worker stopped reading, and takes one interrupt per batch it asks
        // for (the worker's rearm/notify), not one per request.
        let mut f = feature(VIRTIO_F_VERSION_1)
            | feature(VIRTIO_RING_F_INDIRECT_DESC)
            | feature(VIRTIO_RING_F_EVENT_IDX)
            | feature(VIRTIO_BLK_F_FLUSH)
            | feature(VIRTIO_BLK_F_SEG_MAX);
        if self.params.num_queues > 1 {
            f |= feature(VIRTIO_BLK_F_MQ);
        }
        if self.params.readonly {
            f |= feature(VIRTIO_BLK_F_RO);
        } else if self.image.supports_discard() {
            f |= feature(VIRTIO_BLK_F_DISCARD) | feature(VIRTIO_BLK_F_WRITE_ZEROES);
        }
        f
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let config = self.config_bytes();
        let at = offset as usize;
        if let Some(src) = config.get(at..at.saturating_add(data.len())) {
            data.copy_from_slice(src);
        }
    }

    fn workers(&self) -> Option<&Workers> {
        Some(&self.workers)
    }
}

#[cfg(test)]
mod tests;
