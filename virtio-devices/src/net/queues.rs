//! The two queues of a virtio-net device (virtio 1.2 section 5.1.6):
//! [`Transmit`] writes each guest chain to the host as one frame,
//! [`Receive`] copies each host frame into one guest chain.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes};

use super::{FrameIo, HEADER_LEN, MAX_FRAME, NetCounters};
use crate::GuestMemory;
use crate::worker::{QueueHandler, serve_chains};

/// Offset of `num_buffers` in `virtio_net_hdr_v1`.
const NUM_BUFFERS: usize = 10;
/// Frames read from the host per wake-up before the guest is interrupted.
const RX_BATCH: usize = 64;

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
    fn process_queue(&mut self, queue: &mut Queue, mem: &GuestMemory) -> bool {
        serve_chains(queue, mem, "virtio-net", |chain| self.send(chain, mem))
    }
}

/// The receive queue: each host frame into the next guest chain.
pub struct Receive<T> {
    io: Arc<T>,
    counters: Arc<NetCounters>,
    /// The frame read last (header and frame as the host gave them).
    frame: Vec<u8>,
    /// Bytes of `frame` not yet delivered (0: none waiting).
    pending: usize,
}

impl<T: FrameIo> Receive<T> {
    /// The receive side over `io`.
    pub fn new(io: Arc<T>, counters: Arc<NetCounters>) -> Self {
        Receive {
            io,
            counters,
            frame: vec![0; HEADER_LEN + MAX_FRAME],
            pending: 0,
        }
    }

    /// Copy the pending frame into `chain`; its length is the used length.
    fn fill(
        &mut self,
        chain: impl Iterator<Item = Descriptor>,
        mem: &GuestMemory,
    ) -> Result<u32, ChainError> {
        let descriptors: Vec<Descriptor> = chain.collect();
        if descriptors.iter().any(|d| !d.is_write_only()) {
            return Err(ChainError::ReadOnly);
        }
        let room: u64 = descriptors.iter().map(|d| u64::from(d.len())).sum();
        let len = self.pending;
        if room < len as u64 {
            return Err(ChainError::TooSmall { frame: len, room });
        }
        // Without MRG_RXBUF every frame takes exactly one chain; the tap
        // leaves these two bytes alone.
        self.frame[NUM_BUFFERS..HEADER_LEN].copy_from_slice(&1u16.to_le_bytes());
        let mut done = 0;
        for d in descriptors {
            if done == len {
                break;
            }
            let n = (d.len() as usize).min(len - done);
            mem.write_slice(&self.frame[done..done + n], d.addr())
                .map_err(|_| ChainError::BadAddress(d.addr().raw_value()))?;
            done += n;
        }
        Ok(len as u32)
    }

    /// Deliver the pending frame if the guest has a chain for it; true
    /// when a chain was used (delivered or dropped into).
    fn deliver(&mut self, queue: &mut Queue, mem: &GuestMemory) -> bool {
        if self.pending == 0 {
            return false;
        }
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            return false;
        };
        let head = chain.head_index();
        let used = match self.fill(chain, mem) {
            Ok(len) => {
                bump(&self.counters.rx_frames, 1);
                bump(&self.counters.rx_bytes, self.pending - HEADER_LEN);
                len
            }
            Err(e) => {
                bump(&self.counters.rx_dropped, 1);
                devices::guest_log!(warn, target: "virtio-net", "receive: {e}; frame dropped");
                0
            }
        };
        self.pending = 0;
        if let Err(e) = queue.add_used(mem, head, used) {
            log::error!(target: "virtio-net", "used ring: {e}");
        }
        true
    }
}

impl<T: FrameIo> QueueHandler for Receive<T> {
    /// The guest posted receive buffers: the waiting frame goes first.
    fn process_queue(&mut self, queue: &mut Queue, mem: &GuestMemory) -> bool {
        self.deliver(queue, mem)
    }

    fn input_fd(&self) -> Option<RawFd> {
        Some(self.io.as_raw_fd())
    }

    /// The host is read only while no frame waits for a guest buffer.
    fn wants_input(&self) -> bool {
        self.pending == 0
    }

    fn input_ready(&mut self, queue: &mut Queue, mem: &GuestMemory) -> io::Result<bool> {
        let mut used = false;
        for _ in 0..RX_BATCH {
            if self.pending != 0 {
                break;
            }
            let n = match self.io.recv_frame(&mut self.frame) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n < HEADER_LEN {
                bump(&self.counters.rx_dropped, 1);
                devices::guest_log!(warn, target: "virtio-net", "receive: a {n}-byte frame from the host has no header; dropped");
                continue;
            }
            self.pending = n;
            used |= self.deliver(queue, mem);
        }
        Ok(used)
    }
}
