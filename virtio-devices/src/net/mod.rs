//! virtio-net (virtio 1.2 section 5.1) over a Linux tap ([`tap`]): 1 to
//! [`MAX_QUEUE_PAIRS`] queue pairs (receiveq N at 2N, transmitq N at
//! 2N+1), each queue served by its own worker thread ([`queues`]), and
//! with more than one pair the control queue last ([`ctrl`]).
//!
//! Implemented: VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC (the configured or a
//! random locally administered unicast address), VIRTIO_NET_F_STATUS (the
//! link is always up), VIRTIO_NET_F_MRG_RXBUF (a frame spread over as many
//! receive chains as it needs), the checksum and segmentation offloads of
//! [`offloads`] (as far as the tap takes them and the operator allows),
//! and with more than one pair VIRTIO_NET_F_MQ + VIRTIO_NET_F_CTRL_VQ
//! (`max_virtqueue_pairs` in the configuration, VQ_PAIRS_SET on the
//! control queue, one tap queue per pair). Every frame carries the
//! 12-byte `virtio_net_hdr_v1`, which the tap reads and writes as is
//! (TUNSETVNETHDRSZ): a transmitted chain is written to the tap in one
//! call; a received frame is copied into receive chains, header first.
//! While the guest has no receive buffer, one frame waits in the device
//! and the tap is not read until the guest posts buffers (the tap's own
//! queue holds the rest, and drops past it, as a NIC's ring would).
//!
//! Guest mistakes never reach the host: a receive chain too small for a
//! frame, or with a device-readable descriptor, gets the frame dropped
//! (used length 0), a transmit chain with a device-writable descriptor,
//! no full header or more than [`MAX_FRAME`] bytes is dropped; each is
//! counted ([`NetCounters`]) and logged, rate-limited; a malformed control
//! command is answered VIRTIO_NET_ERR.
//!
//! Deliberately not implemented: the control queue's RX mode, MAC table,
//! VLAN filter, announce, guest offloads and coalescing classes (their
//! features are not offered; the tap passes every frame), RSS and hash
//! reports, USO, MTU, SPEED_DUPLEX, rate limiting, vhost-net
//! and vhost-user.

mod ctrl;
mod mac;
pub mod offloads;
mod queues;
pub mod tap;

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP, virtio_net_hdr_v1,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

use crate::error::ActivateError;
use crate::worker::Workers;
use crate::{ActiveQueue, GuestMemory, VirtioDevice, feature};
pub use ctrl::{Control, PairLink, Pairs};
pub use mac::{MacAddr, MacError};
pub use offloads::Offloads;
pub use queues::{Receive, Transmit};
pub use tap::{Tap, TapError};

/// Bytes of `virtio_net_hdr_v1` on every frame (VERSION_1: num_buffers
/// is always there).
pub const HEADER_LEN: usize = std::mem::size_of::<virtio_net_hdr_v1>();
/// Largest Ethernet frame either way, header excluded: a GSO frame of
/// 64 KiB (the tap's and Linux virtio_net's GSO limit) with its Ethernet
/// header and a VLAN tag.
pub const MAX_FRAME: usize = (64 << 10) + 14 + 4;
/// Default size of every queue (cloud-hypervisor's).
pub const DEFAULT_QUEUE_SIZE: u16 = 256;
/// Most queue pairs a device has (`num_queues` up to twice this).
pub const MAX_QUEUE_PAIRS: usize = 16;
/// Bytes of the device configuration this device fills: `mac`, `status`
/// and `max_virtqueue_pairs` of `struct virtio_net_config`.
const CONFIG_LEN: usize = 10;

/// Where the device's frames go and come from: one frame (header
/// included) per call. A tap queue, or in tests any datagram socket.
pub trait FrameIo: AsRawFd + Send + Sync + 'static {
    /// Read one frame into `buf` (non-blocking: WouldBlock when none).
    fn recv_frame(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Write one frame.
    fn send_frame(&self, frame: &[u8]) -> io::Result<usize>;
    /// Let the host hand over frames with these TUN_F_* offloads.
    fn set_offloads(&self, _flags: u32) -> io::Result<()> {
        Ok(())
    }
    /// Attach (or detach) this queue: whether the host steers frames to it.
    fn set_attached(&self, _attached: bool) -> io::Result<()> {
        Ok(())
    }
}

/// A datagram socket carries one frame per datagram, as a tap does.
impl FrameIo for UnixDatagram {
    fn recv_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(buf)
    }

    fn send_frame(&self, frame: &[u8]) -> io::Result<usize> {
        self.send(frame)
    }
}

/// Per-device traffic counters, cloud-hypervisor's four names plus the
/// frames dropped each way.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Frame bytes delivered to the guest (virtio headers excluded).
    pub rx_bytes: AtomicU64,
    /// Frames delivered to the guest.
    pub rx_frames: AtomicU64,
    /// Frame bytes the guest sent to the tap (virtio headers excluded).
    pub tx_bytes: AtomicU64,
    /// Frames the guest sent to the tap.
    pub tx_frames: AtomicU64,
    /// Frames for the guest dropped (a receive chain that could not take
    /// them, a runt from the tap).
    pub rx_dropped: AtomicU64,
    /// Guest frames dropped (malformed chain, refused by the tap).
    pub tx_dropped: AtomicU64,
}

/// How the device is presented.
#[derive(Clone, Debug)]
pub struct NetParams {
    /// Name in log lines and thread names.
    pub id: String,
    /// The guest's MAC address.
    pub mac: MacAddr,
    /// Size of every queue.
    pub queue_size: u16,
    /// The offloads the operator allows.
    pub offloads: Offloads,
    /// The TUN_F_* flags the tap takes ([`Tap::probe_offloads`]).
    pub host_offloads: u32,
}

/// The device's view of its pairs, whatever their host queue type.
trait Host: Send + Sync {
    fn enable(&self, count: usize) -> io::Result<()>;
    fn set_offloads(&self, flags: u32) -> io::Result<()>;
}

impl<T: FrameIo> Host for Pairs<T> {
    fn enable(&self, count: usize) -> io::Result<()> {
        Pairs::enable(self, count)
    }

    fn set_offloads(&self, flags: u32) -> io::Result<()> {
        self.first().map_or(Ok(()), |io| io.set_offloads(flags))
    }
}

/// A virtio-net device.
pub struct Net {
    params: NetParams,
    counters: Arc<NetCounters>,
    /// Declared before `host`: dropping the workers joins them first.
    workers: Workers,
    host: Arc<dyn Host>,
    pairs: usize,
    offered: u64,
    /// What the driver accepted, for the workers.
    features: Arc<AtomicU64>,
}

impl Net {
    /// A device over `ios`, one host queue (a [`Tap`] queue) per queue
    /// pair; its workers started (parked), pair 0 alone attached.
    pub fn new<T: FrameIo>(ios: Vec<T>, params: NetParams) -> io::Result<Self> {
        let pairs = ios.len();
        if !(1..=MAX_QUEUE_PAIRS).contains(&pairs) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{pairs} queue pairs: 1 to {MAX_QUEUE_PAIRS} are supported"),
            ));
        }
        let counters = Arc::new(NetCounters::default());
        let features = Arc::new(AtomicU64::new(0));
        let host = Arc::new(Pairs::new(ios.into_iter().map(Arc::new).collect())?);
        host.enable(1)?;
        let mut workers = Workers::new()?;
        for index in 0..pairs {
            let (io, link) = host
                .pair(index)
                .ok_or_else(|| io::Error::other("a pair without a queue"))?;
            let receive = Receive::new(io.clone(), counters.clone(), link, features.clone());
            workers.spawn(format!("{}-rx{index}", params.id), receive)?;
            workers.spawn(
                format!("{}-tx{index}", params.id),
                Transmit::new(io, counters.clone()),
            )?;
        }
        let mut offered = feature(VIRTIO_F_VERSION_1)
            | feature(VIRTIO_NET_F_MAC)
            | feature(VIRTIO_NET_F_STATUS)
            | feature(VIRTIO_NET_F_MRG_RXBUF)
            | feature(VIRTIO_RING_F_EVENT_IDX)
            | params.offloads.features(params.host_offloads);
        if pairs > 1 {
            offered |= feature(VIRTIO_NET_F_MQ) | feature(VIRTIO_NET_F_CTRL_VQ);
            workers.spawn(
                format!("{}-ctl", params.id),
                Control::new(host.clone(), features.clone()),
            )?;
        }
        Ok(Net {
            params,
            counters,
            workers,
            host,
            pairs,
            offered,
            features,
        })
    }

    /// The device's traffic counters.
    pub fn counters(&self) -> Arc<NetCounters> {
        self.counters.clone()
    }

    /// `struct virtio_net_config` (section 5.1.4): mac, status and, with
    /// MQ offered, max_virtqueue_pairs.
    fn config_bytes(&self) -> [u8; CONFIG_LEN] {
        let mut b = [0u8; CONFIG_LEN];
        b[..6].copy_from_slice(&self.params.mac.0);
        b[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        if self.offered & feature(VIRTIO_NET_F_MQ) != 0 {
            let pairs = u16::try_from(self.pairs).unwrap_or(1);
            b[8..10].copy_from_slice(&pairs.to_le_bytes());
        }
        b
    }

    /// The worker of queue `index` under `features`: data queues are
    /// their own index; the control queue is 2 * max_virtqueue_pairs with
    /// MQ and 2 without (section 5.1.2), its worker the last.
    fn worker_of(&self, index: u16, features: u64) -> Option<usize> {
        let data = if features & feature(VIRTIO_NET_F_MQ) != 0 {
            2 * self.pairs
        } else {
            2
        };
        let index = usize::from(index);
        if index < data {
            Some(index)
        } else if index == data && features & feature(VIRTIO_NET_F_CTRL_VQ) != 0 {
            Some(2 * self.pairs)
        } else {
            None
        }
    }

    fn start(
        &self,
        mem: GuestMemory,
        features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        let host_error = |what, source| ActivateError::Host {
            queue: 0,
            what,
            source,
        };
        self.features.store(features, Ordering::SeqCst);
        self.host
            .set_offloads(offloads::tap_flags(features))
            .map_err(|e| host_error("TUNSETOFFLOAD", e))?;
        self.host
            .enable(1)
            .map_err(|e| host_error("TUNSETQUEUE", e))?;
        for queue in queues {
            let index = queue.index;
            let worker = self
                .worker_of(index, features)
                .ok_or(ActivateError::NoSuchQueue(index))?;
            self.workers.start_on(worker, mem.clone(), queue)?;
        }
        log::info!(
            target: "virtio-net",
            "{}: tap offloads {:#x}, receive buffers {}",
            self.params.id, offloads::tap_flags(features),
            if features & feature(VIRTIO_NET_F_MRG_RXBUF) != 0 { "merged" } else { "one chain per frame" }
        );
        Ok(())
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        let control = usize::from(self.pairs > 1);
        vec![self.params.queue_size; 2 * self.pairs + control]
    }

    fn features(&self) -> u64 {
        self.offered
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // Bytes past the structure read as zero.
        data.fill(0);
        let config = self.config_bytes();
        let src = config.get(offset as usize..).unwrap_or_default();
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }

    fn workers(&self) -> Option<&Workers> {
        Some(&self.workers)
    }

    /// The tap's offloads from the receive offloads the driver accepted,
    /// pair 0 alone enabled, each queue to its worker.
    fn activate(
        &mut self,
        mem: GuestMemory,
        features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        let started = self.start(mem, features, queues);
        if started.is_err() {
            self.workers.stop();
        }
        started
    }

    /// Workers stopped; the tap hands over no offloaded frame until the
    /// next driver accepts offloads again.
    fn reset(&mut self) {
        self.workers.stop();
        self.features.store(0, Ordering::SeqCst);
        if let Err(e) = self.host.set_offloads(0) {
            log::error!(target: "virtio-net", "{}: TUNSETOFFLOAD 0: {e}", self.params.id);
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_mq;
