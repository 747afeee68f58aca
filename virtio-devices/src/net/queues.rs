//! The data queues of a virtio-net device (virtio 1.2 section 5.1.6), one
//! of each per queue pair: [`Transmit`] writes each guest chain to the
//! host as one frame, [`Receive`] copies each host frame into one guest
//! chain or, with VIRTIO_NET_F_MRG_RXBUF, into as many as it takes
//! (`num_buffers` in the first chain's header says how many).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_NONE,
};

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes};

use super::ctrl::PairLink;
use super::{FrameIo, HEADER_LEN, MAX_FRAME, NetCounters};
use crate::worker::{Progress, QueueHandler, add_used_batch, serve_chains};
use crate::{GuestMemory, feature};

/// Offset of `num_buffers` in `virtio_net_hdr_v1`.
const NUM_BUFFERS: usize = 10;
/// Frames read from the host per wake-up before the worker looks at its
/// other events.
const RX_BATCH: usize = 64;
/// Bytes delivered after which the guest hears of them before the round of
/// [`RX_BATCH`] frames ends ([`Progress`]): one TSO frame of 64 KiB. The
/// guest's stack then takes the frames already delivered while the worker
/// copies the next ones, where it waited for up to 64 frames (4 MiB).
const RX_PUBLISH_BYTES: usize = 64 << 10;

fn bump(counter: &AtomicU64, by: usize) {
    counter.fetch_add(by as u64, Ordering::Relaxed);
}

/// Why a chain was not used for a frame.
#[derive(Debug, thiserror::Error)]
enum ChainError {
    #[error("a device-readable descriptor in a receive chain")]
    ReadOnly,
    #[error("a device-writable descriptor in a transmit chain")]
    WriteOnly,
    #[error("a {frame}-byte frame does not fit the chain's {room} bytes")]
    TooSmall { frame: usize, room: u64 },
    #[error("a {0}-byte chain is shorter than the {HEADER_LEN}-byte header")]
    NoHeader(u64),
    #[error("a {0}-byte chain is larger than a frame can be")]
    TooLarge(u64),
    #[error("guest address {0:#x} is not RAM")]
    BadAddress(u64),
    #[error("a {frame}-byte frame does not fit the {room} bytes of every posted buffer")]
    NeverFits { frame: usize, room: u64 },
    #[error(
        "a frame with header flags {flags:#x}, gso_type {gso_type:#x} the driver did not accept"
    )]
    NotNegotiated { flags: u8, gso_type: u8 },
}

/// The transmit queue: each chain (header, then the frame, in readable
/// descriptors) goes to the host in one write.
pub struct Transmit<T> {
    io: Arc<T>,
    counters: Arc<NetCounters>,
    buffer: Vec<u8>,
}

impl<T: FrameIo> Transmit<T> {
    /// The transmit side over `io`.
    pub fn new(io: Arc<T>, counters: Arc<NetCounters>) -> Self {
        Transmit {
            io,
            counters,
            buffer: Vec::with_capacity(HEADER_LEN + MAX_FRAME),
        }
    }

    /// Gather `chain` into the buffer.
    fn gather(
        &mut self,
        chain: impl Iterator<Item = Descriptor>,
        mem: &GuestMemory,
    ) -> Result<(), ChainError> {
        self.buffer.clear();
        let descriptors: Vec<Descriptor> = chain.collect();
        if descriptors.iter().any(|d| d.is_write_only()) {
            return Err(ChainError::WriteOnly);
        }
        let total: u64 = descriptors.iter().map(|d| u64::from(d.len())).sum();
        if total < HEADER_LEN as u64 {
            return Err(ChainError::NoHeader(total));
        }
        if total > (HEADER_LEN + MAX_FRAME) as u64 {
            return Err(ChainError::TooLarge(total));
        }
        for d in descriptors {
            let start = self.buffer.len();
            self.buffer.resize(start + d.len() as usize, 0);
            mem.read_slice(&mut self.buffer[start..], d.addr())
                .map_err(|_| ChainError::BadAddress(d.addr().raw_value()))?;
        }
        Ok(())
    }

    /// Send the frame of one chain; the used length is 0 (nothing written).
    fn send(&mut self, chain: impl Iterator<Item = Descriptor>, mem: &GuestMemory) -> u32 {
        if let Err(e) = self.gather(chain, mem) {
            bump(&self.counters.tx_dropped, 1);
            devices::guest_log!(warn, target: "virtio-net", "transmit: {e}; frame dropped");
            return 0;
        }
        match self.io.send_frame(&self.buffer) {
            Ok(_) => {
                bump(&self.counters.tx_frames, 1);
                bump(&self.counters.tx_bytes, self.buffer.len() - HEADER_LEN);
            }
            Err(e) => {
                bump(&self.counters.tx_dropped, 1);
                devices::guest_log!(
                    warn, target: "virtio-net",
                    "transmit: the host refused a {}-byte frame: {e}; frame dropped",
                    self.buffer.len() - HEADER_LEN
                );
            }
        }
        0
    }
}

impl<T: FrameIo> QueueHandler for Transmit<T> {
    fn process_queue(&mut self, queue: &mut Queue, mem: &GuestMemory, _: Progress<'_>) -> bool {
        serve_chains(queue, mem, "virtio-net", |chain| self.send(chain, mem))
    }
}

/// The receive queue: each host frame into the next guest chain (or
/// chains, with MRG_RXBUF).
pub struct Receive<T> {
    io: Arc<T>,
    counters: Arc<NetCounters>,
    link: Arc<PairLink>,
    /// The features the driver accepted.
    features: Arc<AtomicU64>,
    /// The frame read last (header and frame as the host gave them).
    frame: Vec<u8>,
    /// Bytes of `frame` not yet delivered (0: none waiting).
    pending: usize,
}

/// A popped receive chain: its head and writable descriptors.
struct RxChain {
    head: u16,
    descriptors: Vec<Descriptor>,
    room: u64,
}

impl RxChain {
    fn new(chain: impl Iterator<Item = Descriptor>, head: u16) -> Result<Self, (u16, ChainError)> {
        let descriptors: Vec<Descriptor> = chain.collect();
        if descriptors.iter().any(|d| !d.is_write_only()) {
            return Err((head, ChainError::ReadOnly));
        }
        let room = descriptors.iter().map(|d| u64::from(d.len())).sum();
        Ok(RxChain {
            head,
            descriptors,
            room,
        })
    }

    /// Copy `bytes` into the chain's descriptors, in order.
    fn write(&self, bytes: &[u8], mem: &GuestMemory) -> Result<(), ChainError> {
        let mut done = 0;
        for d in &self.descriptors {
            if done == bytes.len() {
                break;
            }
            let n = (d.len() as usize).min(bytes.len() - done);
            mem.write_slice(&bytes[done..done + n], d.addr())
                .map_err(|_| ChainError::BadAddress(d.addr().raw_value()))?;
            done += n;
        }
        Ok(())
    }
}

impl<T: FrameIo> Receive<T> {
    /// The receive side of pair `link` over `io`; `features` holds what the
    /// driver accepted (set before the queue is served).
    pub fn new(
        io: Arc<T>,
        counters: Arc<NetCounters>,
        link: Arc<PairLink>,
        features: Arc<AtomicU64>,
    ) -> Self {
        Receive {
            io,
            counters,
            link,
            features,
            frame: vec![0; HEADER_LEN + MAX_FRAME],
            pending: 0,
        }
    }

    fn merged(&self) -> bool {
        self.features.load(Ordering::Relaxed) & feature(VIRTIO_NET_F_MRG_RXBUF) != 0
    }

    /// A frame needing a receive offload the driver did not accept: the
    /// tap is set from the accepted ones, so only a frame read before a
    /// reset (and kept for the next driver) can be one.
    fn refused_offload(&self) -> Option<ChainError> {
        let features = self.features.load(Ordering::Relaxed);
        let (flags, gso_type) = (self.frame[0], self.frame[1]);
        let csum = flags & VIRTIO_NET_HDR_F_NEEDS_CSUM as u8 != 0
            && features & feature(VIRTIO_NET_F_GUEST_CSUM) == 0;
        let gso = [
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_UFO,
        ]
        .iter()
        .all(|bit| features & feature(*bit) == 0);
        let segmented = gso_type != VIRTIO_NET_HDR_GSO_NONE as u8 && gso;
        (csum || segmented).then_some(ChainError::NotNegotiated { flags, gso_type })
    }

    /// Without MRG_RXBUF: the pending frame into one chain, all of it.
    fn fill_one(&mut self, chain: &RxChain, mem: &GuestMemory) -> Result<u32, ChainError> {
        let len = self.pending;
        if chain.room < len as u64 {
            return Err(ChainError::TooSmall {
                frame: len,
                room: chain.room,
            });
        }
        // One chain per frame; the tap leaves these two bytes alone.
        self.frame[NUM_BUFFERS..HEADER_LEN].copy_from_slice(&1u16.to_le_bytes());
        chain.write(&self.frame[..len], mem)?;
        Ok(len as u32)
    }

    /// Deliver the pending frame if the guest has buffers for it; true
    /// when chains were used (delivered or dropped into).
    fn deliver(&mut self, queue: &mut Queue, mem: &GuestMemory) -> bool {
        if self.pending == 0 {
            return false;
        }
        if let Some(e) = self.refused_offload() {
            self.dropped(&e);
            return false;
        }
        if self.merged() {
            return self.deliver_merged(queue, mem);
        }
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            return false;
        };
        let head = chain.head_index();
        let used = match RxChain::new(chain, head)
            .map_err(|(_, e)| e)
            .and_then(|c| self.fill_one(&c, mem))
        {
            Ok(len) => {
                self.delivered();
                len
            }
            Err(e) => {
                self.dropped(&e);
                0
            }
        };
        if let Err(e) = queue.add_used(mem, head, used) {
            log::error!(target: "virtio-net", "used ring: {e}");
        }
        true
    }

    /// With MRG_RXBUF: take chains until the frame fits, then spread it
    /// over them, `num_buffers` saying how many. Too few chains posted:
    /// they are left for later (next_avail rewound) and the frame waits;
    /// a frame that would not fit even every chain the ring can hold is
    /// dropped.
    fn deliver_merged(&mut self, queue: &mut Queue, mem: &GuestMemory) -> bool {
        // Each retry follows buffers the driver added while the gathering
        // fell short; a driver that keeps adding fills the ring, and the
        // frame then fits or is dropped, so few rounds are ever taken. The
        // bound only keeps a driver that rewrites its index from holding
        // the worker.
        for _ in 0..=usize::from(queue.size()) {
            if let Some(used) = self.try_merged(queue, mem) {
                return used;
            }
        }
        false
    }

    /// One gathering for [`Self::deliver_merged`]: `Some(used)`, or `None`
    /// when too few chains were posted but the driver added some since the
    /// worker asked to be notified (try again).
    fn try_merged(&mut self, queue: &mut Queue, mem: &GuestMemory) -> Option<bool> {
        let start = queue.next_avail();
        let mut chains: Vec<RxChain> = Vec::new();
        let mut room: u64 = 0;
        while room < self.pending as u64 {
            if chains.len() >= usize::from(queue.size()) {
                queue.set_next_avail(start);
                self.dropped(&ChainError::NeverFits {
                    frame: self.pending,
                    room,
                });
                return Some(false);
            }
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                queue.set_next_avail(start);
                return if notify_on_more(queue, mem, start) {
                    None
                } else {
                    Some(false)
                };
            };
            let head = chain.head_index();
            match RxChain::new(chain, head) {
                Ok(c) => {
                    room += c.room;
                    chains.push(c);
                }
                Err((head, e)) => {
                    // A bad buffer is returned unused; the frame goes on.
                    devices::guest_log!(warn, target: "virtio-net", "receive: {e}; buffer returned unused");
                    if let Err(e) = queue.add_used(mem, head, 0) {
                        log::error!(target: "virtio-net", "used ring: {e}");
                    }
                    // The chains taken so far stay taken: rewinding past a
                    // used entry would serve that chain twice.
                    return Some(self.spread(queue, mem, chains) | true);
                }
            }
        }
        Some(self.spread(queue, mem, chains))
    }

    /// Write the pending frame over `chains` (enough of them, or fewer
    /// when a bad buffer cut the gathering short: the frame is dropped and
    /// each chain returned with nothing written).
    fn spread(&mut self, queue: &mut Queue, mem: &GuestMemory, chains: Vec<RxChain>) -> bool {
        if chains.is_empty() {
            return false;
        }
        let room: u64 = chains.iter().map(|c| c.room).sum();
        let count = u16::try_from(chains.len()).unwrap_or(u16::MAX);
        let mut result = if room < self.pending as u64 {
            Err(ChainError::TooSmall {
                frame: self.pending,
                room,
            })
        } else {
            Ok(())
        };
        self.frame[NUM_BUFFERS..HEADER_LEN].copy_from_slice(&count.to_le_bytes());
        let mut lens = Vec::with_capacity(chains.len());
        let mut done = 0;
        for chain in &chains {
            let n = (chain.room.min((self.pending - done) as u64)) as usize;
            if result.is_ok() {
                result = chain.write(&self.frame[done..done + n], mem);
            }
            lens.push(n as u32);
            done += n;
        }
        match &result {
            Ok(()) => self.delivered(),
            Err(e) => {
                self.dropped(e);
                lens.fill(0);
            }
        }
        // All of the frame's chains in one index update: a driver that
        // sees the first before the rest drops the frame.
        let entries: Vec<(u16, u32)> = chains.iter().map(|c| c.head).zip(lens).collect();
        if let Err(e) = add_used_batch(queue, mem, &entries) {
            log::error!(target: "virtio-net", "used ring: {e}");
        }
        true
    }

    fn delivered(&mut self) {
        bump(&self.counters.rx_frames, 1);
        bump(&self.counters.rx_bytes, self.pending - HEADER_LEN);
        self.pending = 0;
    }

    fn dropped(&mut self, e: &ChainError) {
        bump(&self.counters.rx_dropped, 1);
        devices::guest_log!(warn, target: "virtio-net", "receive: {e}; frame dropped");
        self.pending = 0;
    }
}

/// Too few buffers for the waiting frame, `next_avail` rewound to `start`
/// past chains the driver did post: ask it to notify once it adds more.
/// With EVENT_IDX that means avail_event = the driver's current index
/// (virtio-queue's `enable_notification` publishes `next_avail`, an index
/// the driver has already passed: it would never notify, and the frame
/// would wait for ever); without it, clear VRING_USED_F_NO_NOTIFY. True
/// when the driver added buffers before the request was visible: gather
/// again.
fn notify_on_more(queue: &mut Queue, mem: &GuestMemory, start: u16) -> bool {
    let Ok(idx) = queue.avail_idx(mem, Ordering::Acquire) else {
        return false;
    };
    queue.set_next_avail(idx.0);
    let more = queue.enable_notification(mem).unwrap_or(false);
    queue.set_next_avail(start);
    more
}

impl<T: FrameIo> QueueHandler for Receive<T> {
    /// The guest posted receive buffers: the waiting frame goes first.
    fn process_queue(&mut self, queue: &mut Queue, mem: &GuestMemory, _: Progress<'_>) -> bool {
        self.deliver(queue, mem)
    }

    fn input_fd(&self) -> Option<RawFd> {
        Some(self.io.as_raw_fd())
    }

    /// The host is read only while the pair is enabled and no frame waits
    /// for a guest buffer.
    fn wants_input(&self) -> bool {
        self.pending == 0 && self.link.enabled()
    }

    fn input_ready(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemory,
        progress: Progress<'_>,
    ) -> io::Result<bool> {
        let mut used = false;
        let mut unpublished = 0;
        for _ in 0..RX_BATCH {
            // A pair being disabled: its host queue is about to be (or
            // was) detached, and polls as an error; it is not read.
            if self.pending != 0 || !self.link.enabled() {
                break;
            }
            let n = match self.io.recv_frame(&mut self.frame) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) if !self.link.enabled() => break,
                Err(e) => return Err(e),
            };
            if n < HEADER_LEN {
                bump(&self.counters.rx_dropped, 1);
                devices::guest_log!(warn, target: "virtio-net", "receive: a {n}-byte frame from the host has no header; dropped");
                continue;
            }
            self.pending = n;
            if self.deliver(queue, mem) {
                used = true;
                unpublished += n;
                if unpublished >= RX_PUBLISH_BYTES {
                    progress.publish(queue, mem);
                    unpublished = 0;
                }
            }
        }
        Ok(used)
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.link.wake_fd())
    }

    /// The control queue enabled or disabled the pair: a frame read
    /// before it was disabled is not delivered after.
    fn woken(&mut self, queue: &mut Queue, mem: &GuestMemory) -> bool {
        self.link.drain();
        if !self.link.enabled() {
            if self.pending != 0 {
                bump(&self.counters.rx_dropped, 1);
                self.pending = 0;
            }
            return false;
        }
        self.deliver(queue, mem)
    }
}
