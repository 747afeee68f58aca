//! virtio-net (virtio 1.2 section 5.1) over a Linux tap ([`tap`]): one
//! queue pair, receiveq 0 and transmitq 1, each served by its own worker
//! thread ([`queues`]).
//!
//! Implemented: VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC (the configured or a
//! random locally administered unicast address) and VIRTIO_NET_F_STATUS
//! (the link is always up). Every frame carries the 12-byte
//! `virtio_net_hdr_v1`, which the tap reads and writes as is
//! (TUNSETVNETHDRSZ): a transmitted chain is written to the tap in one
//! call; a received frame is copied into the next receive chain, header
//! first (`num_buffers` set to 1), across its descriptors. While the guest
//! has no receive buffer, one frame waits in the device and the tap is not
//! read until the guest posts buffers (the tap's own queue holds the
//! rest, and drops past it, as a NIC's ring would).
//!
//! Guest mistakes never reach the host: a receive chain too small for a
//! frame, or with a device-readable descriptor, gets the frame dropped
//! (used length 0), a transmit chain with a device-writable descriptor,
//! no full header or more than [`MAX_FRAME`] bytes is dropped; each is
//! counted ([`NetCounters`]) and logged, rate-limited.
//!
//! Deliberately not implemented: multiqueue (VIRTIO_NET_F_MQ) and the
//! control queue (CTRL_VQ: no RX mode, VLAN or MAC filters; the tap
//! passes every frame), MRG_RXBUF, every checksum and segmentation
//! offload (CSUM, GUEST_*/HOST_* TSO/UFO: the tap is set to no offloads,
//! so it never hands the guest a GSO frame), MTU, SPEED_DUPLEX, RSS,
//! EVENT_IDX, rate limiting, vhost-net and vhost-user.

mod queues;
pub mod tap;

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP, virtio_net_hdr_v1,
};

use crate::worker::Workers;
use crate::{VirtioDevice, feature};
pub use queues::{Receive, Transmit};
pub use tap::{Tap, TapError};

/// Bytes of `virtio_net_hdr_v1` on every frame (VERSION_1: num_buffers
/// is always there).
pub const HEADER_LEN: usize = std::mem::size_of::<virtio_net_hdr_v1>();
/// Largest Ethernet frame either way, header excluded: with no
/// segmentation offload a frame is at most the MTU plus the Ethernet
/// header, and no MTU is above 64 KiB.
pub const MAX_FRAME: usize = 64 << 10;
/// Default size of both queues (cloud-hypervisor's).
pub const DEFAULT_QUEUE_SIZE: u16 = 256;
/// Bytes of the device configuration this device fills: `mac` and
/// `status` of `struct virtio_net_config`.
const CONFIG_LEN: usize = 8;

/// Where the device's frames go and come from: one frame (header
/// included) per call. A tap, or in tests any datagram socket.
pub trait FrameIo: AsRawFd + Send + Sync + 'static {
    /// Read one frame into `buf` (non-blocking: WouldBlock when none).
    fn recv_frame(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Write one frame.
    fn send_frame(&self, frame: &[u8]) -> io::Result<usize>;
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

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

/// Why a `mac=` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// Not six colon-separated hex bytes.
    #[error("mac={0} is not six hex bytes separated by ':' (e.g. 52:54:00:12:34:56)")]
    Syntax(String),
    /// The group bit is set.
    #[error("mac={0} is a multicast address (bit 0 of the first byte); give a unicast one")]
    Multicast(String),
    /// All zeroes.
    #[error("mac={0} is all zeroes; give a real address or leave mac= out for a random one")]
    Zero(String),
}

impl MacAddr {
    /// Parse `aa:bb:cc:dd:ee:ff`; a multicast or all-zero address is
    /// refused (a guest NIC cannot have one).
    pub fn parse(text: &str) -> Result<Self, MacError> {
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts
                .next()
                .filter(|p| p.len() == 2)
                .ok_or_else(|| MacError::Syntax(text.into()))?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacError::Syntax(text.into()))?;
        }
        if parts.next().is_some() {
            return Err(MacError::Syntax(text.into()));
        }
        if bytes[0] & 1 != 0 {
            return Err(MacError::Multicast(text.into()));
        }
        if bytes == [0; 6] {
            return Err(MacError::Zero(text.into()));
        }
        Ok(MacAddr(bytes))
    }

    /// A random locally administered unicast address. The bits come from
    /// std's randomly keyed SipHash (seeded by getrandom(2), which every
    /// seccomp filter here allows): no file is opened, so the API thread,
    /// which may open none, can call this at `vm.create`.
    pub fn random() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let mut bytes = [0u8; 6];
        bytes.copy_from_slice(&hasher.finish().to_le_bytes()[..6]);
        bytes[0] = (bytes[0] & !0x01) | 0x02;
        MacAddr(bytes)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
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
    /// Size of both queues.
    pub queue_size: u16,
}

/// A virtio-net device.
pub struct Net {
    params: NetParams,
    counters: Arc<NetCounters>,
    workers: Workers,
}

impl Net {
    /// A device over `io` (a [`Tap`]); its two queue workers started
    /// (parked).
    pub fn new<T: FrameIo>(io: T, params: NetParams) -> io::Result<Self> {
        let io = Arc::new(io);
        let counters = Arc::new(NetCounters::default());
        let mut workers = Workers::new()?;
        workers.spawn(
            format!("{}-rx", params.id),
            Receive::new(io.clone(), counters.clone()),
        )?;
        workers.spawn(
            format!("{}-tx", params.id),
            Transmit::new(io, counters.clone()),
        )?;
        Ok(Net {
            params,
            counters,
            workers,
        })
    }

    /// The device's traffic counters.
    pub fn counters(&self) -> Arc<NetCounters> {
        self.counters.clone()
    }

    /// `struct virtio_net_config` (section 5.1.4): mac, status.
    fn config_bytes(&self) -> [u8; CONFIG_LEN] {
        let mut b = [0u8; CONFIG_LEN];
        b[..6].copy_from_slice(&self.params.mac.0);
        b[6..].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        b
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![self.params.queue_size; 2]
    }

    fn features(&self) -> u64 {
        feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_NET_F_MAC) | feature(VIRTIO_NET_F_STATUS)
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
}

#[cfg(test)]
mod tests;
