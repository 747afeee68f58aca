//! Multiqueue: the device's queue pairs ([`Pairs`]: which ones carry
//! traffic) and its control queue ([`Control`], virtio 1.2 section
//! 5.1.6.5).
//!
//! Until the driver says otherwise only pair 0 carries traffic (section
//! 5.1.6.5.5); VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET with 1 to
//! `max_virtqueue_pairs` enables that many. A pair's tap queue is
//! attached while the pair is enabled and detached (TUNSETQUEUE) while it
//! is not, so the host's kernel steers frames only to enabled pairs; the
//! pair's receive worker stops reading it first (a detached tap queue
//! polls as an error) and is woken to start again after it is attached.
//!
//! Every other command class (RX mode, MAC table, VLAN filter, announce,
//! RSS, guest offloads, coalescing, statistics) is answered
//! VIRTIO_NET_ERR: the device offers none of their features, and the tap
//! passes every frame (accept-all, as promiscuous mode would). A chain
//! that is not a command (no header, no status byte, a readable
//! descriptor after a writable one, memory outside RAM) is answered ERR
//! when it has a status byte to write, and returned unused otherwise.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_net::{
    VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, VIRTIO_NET_ERR, VIRTIO_NET_F_MQ,
    VIRTIO_NET_OK,
};
use virtio_queue::Queue;
use virtio_queue::desc::split::Descriptor;
use vm_memory::Bytes;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::FrameIo;
use crate::worker::{Progress, QueueHandler, serve_chains};
use crate::{GuestMemory, feature};

/// Bytes of a command read: `virtio_net_ctrl_hdr` (class, command) and
/// the 2-byte `virtqueue_pairs`, the largest payload a supported command
/// has.
const COMMAND_LEN: usize = 4;

/// One queue pair, as its workers see the control queue's decisions.
#[derive(Debug)]
pub struct PairLink {
    enabled: AtomicBool,
    wake: EventFd,
}

impl PairLink {
    /// A pair link, enabled or not; its wake eventfd made.
    pub fn new(enabled: bool) -> io::Result<Self> {
        Ok(PairLink {
            enabled: AtomicBool::new(enabled),
            wake: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Whether the driver has the pair enabled.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// The eventfd the pair's receive worker waits on for a change.
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Consume a wake-up.
    pub fn drain(&self) {
        let _ = self.wake.read();
    }

    /// What [`Pairs::enable`] does to one pair's link, for the tests.
    #[cfg(test)]
    pub(crate) fn set_for_test(&self, enabled: bool) {
        self.set(enabled);
    }

    fn set(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::SeqCst);
        if let Err(e) = self.wake.write(1) {
            log::error!(target: "virtio-net", "pair wake eventfd: {e}");
        }
    }
}

/// The queue pairs of one device: each pair's host queue and link, and
/// which host queues are attached.
pub struct Pairs<T> {
    ios: Vec<Arc<T>>,
    links: Vec<Arc<PairLink>>,
    attached: Mutex<Vec<bool>>,
}

impl<T: FrameIo> Pairs<T> {
    /// Pairs over `ios` (one host queue each, all attached as opened),
    /// none enabled until [`Pairs::enable`].
    pub fn new(ios: Vec<Arc<T>>) -> io::Result<Self> {
        let links = ios
            .iter()
            .map(|_| PairLink::new(false).map(Arc::new))
            .collect::<io::Result<_>>()?;
        let attached = Mutex::new(vec![true; ios.len()]);
        Ok(Pairs {
            ios,
            links,
            attached,
        })
    }

    /// How many pairs the device has.
    pub fn max(&self) -> usize {
        self.ios.len()
    }

    /// Pair `index`'s host queue and link.
    pub fn pair(&self, index: usize) -> Option<(Arc<T>, Arc<PairLink>)> {
        Some((self.ios.get(index)?.clone(), self.links.get(index)?.clone()))
    }

    /// The first host queue (device-wide settings: offloads).
    pub fn first(&self) -> Option<&T> {
        self.ios.first().map(|io| &**io)
    }

    /// Let pairs 0..`count` carry traffic, and no other: a pair going off
    /// stops its receive worker reading before its host queue is
    /// detached; one coming on is attached before its worker is woken.
    pub fn enable(&self, count: usize) -> io::Result<()> {
        let mut attached = self.attached.lock().unwrap_or_else(|p| p.into_inner());
        for (index, ((io, link), on)) in self
            .ios
            .iter()
            .zip(&self.links)
            .zip(attached.iter_mut())
            .enumerate()
        {
            let want = index < count;
            if !want {
                link.set(false);
            }
            if *on != want {
                io.set_attached(want)?;
                *on = want;
            }
            if want && !link.enabled() {
                link.set(true);
            }
        }
        log::info!(target: "virtio-net", "{count} of {} queue pairs enabled", self.ios.len());
        Ok(())
    }

    /// How many pairs are enabled.
    pub fn enabled(&self) -> usize {
        self.links.iter().filter(|l| l.enabled()).count()
    }
}

/// Why a control chain got VIRTIO_NET_ERR.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error("a {0}-byte command has no class and command bytes")]
    NoHeader(u64),
    #[error("a readable descriptor after a writable one")]
    Order,
    #[error("guest address {0:#x} is not RAM")]
    BadAddress(u64),
    #[error("class {class} command {command} is not supported")]
    Unsupported { class: u8, command: u8 },
    #[error("VQ_PAIRS_SET without VIRTIO_NET_F_MQ negotiated")]
    NoMq,
    #[error("VQ_PAIRS_SET takes a 2-byte count, not {0} bytes")]
    PairsLength(u64),
    #[error("VQ_PAIRS_SET {count}: the device has 1 to {max} queue pairs")]
    PairsRange { count: u16, max: usize },
    #[error("VQ_PAIRS_SET {count}: the host refused: {err}")]
    Host { count: u16, err: io::Error },
}

/// The control queue: each chain is a command (readable: class, command,
/// data) and its status byte (writable).
pub struct Control<T> {
    pairs: Arc<Pairs<T>>,
    features: Arc<AtomicU64>,
}

impl<T: FrameIo> Control<T> {
    /// The control queue of the device with `pairs`; `features` holds the
    /// features the driver accepted (set on DRIVER_OK).
    pub fn new(pairs: Arc<Pairs<T>>, features: Arc<AtomicU64>) -> Self {
        Control { pairs, features }
    }

    /// Serve one chain; the used length is the status byte written (1) or
    /// 0 when the chain has no room for one.
    fn serve(&self, chain: impl Iterator<Item = Descriptor>, mem: &GuestMemory) -> u32 {
        let descriptors: Vec<Descriptor> = chain.collect();
        let split = descriptors
            .iter()
            .position(|d| d.is_write_only())
            .unwrap_or(descriptors.len());
        let (command, status) = descriptors.split_at(split);
        let Some(ack) = status.first().filter(|d| d.len() >= 1) else {
            devices::guest_log!(warn, target: "virtio-net", "control: a chain without a status byte; returned unanswered");
            return 0;
        };
        let result = if status.iter().any(|d| !d.is_write_only()) {
            Err(CommandError::Order)
        } else {
            self.execute(command, mem)
        };
        let answer = match result {
            Ok(()) => VIRTIO_NET_OK as u8,
            Err(e) => {
                devices::guest_log!(warn, target: "virtio-net", "control: {e}; answered VIRTIO_NET_ERR");
                VIRTIO_NET_ERR as u8
            }
        };
        match mem.write_obj(answer, ack.addr()) {
            Ok(()) => 1,
            Err(_) => {
                devices::guest_log!(warn, target: "virtio-net", "control: status byte at {:#x} is not RAM", ack.addr().0);
                0
            }
        }
    }

    /// Read the command in `readable` and carry it out.
    fn execute(&self, readable: &[Descriptor], mem: &GuestMemory) -> Result<(), CommandError> {
        let mut bytes = [0u8; COMMAND_LEN];
        let mut got = 0;
        let mut total: u64 = 0;
        for d in readable {
            total += u64::from(d.len());
            let n = (d.len() as usize).min(COMMAND_LEN - got);
            if n > 0 {
                mem.read_slice(&mut bytes[got..got + n], d.addr())
                    .map_err(|_| CommandError::BadAddress(d.addr().0))?;
                got += n;
            }
        }
        if total < 2 {
            return Err(CommandError::NoHeader(total));
        }
        let (class, command) = (bytes[0], bytes[1]);
        if u32::from(class) != VIRTIO_NET_CTRL_MQ
            || u32::from(command) != VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET
        {
            return Err(CommandError::Unsupported { class, command });
        }
        if self.features.load(Ordering::SeqCst) & feature(VIRTIO_NET_F_MQ) == 0 {
            return Err(CommandError::NoMq);
        }
        if total != COMMAND_LEN as u64 {
            return Err(CommandError::PairsLength(total - 2));
        }
        let count = u16::from_le_bytes([bytes[2], bytes[3]]);
        let max = self.pairs.max();
        if count == 0 || usize::from(count) > max {
            return Err(CommandError::PairsRange { count, max });
        }
        self.pairs
            .enable(usize::from(count))
            .map_err(|err| CommandError::Host { count, err })
    }
}

impl<T: FrameIo> QueueHandler for Control<T> {
    fn process_queue(&mut self, queue: &mut Queue, mem: &GuestMemory, _: Progress<'_>) -> bool {
        serve_chains(queue, mem, "virtio-net", |chain| self.serve(chain, mem))
    }
}
