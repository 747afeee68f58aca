//! virtio-vsock (virtio 1.2 section 5.10) whose data path is the host
//! kernel's vhost-vsock ([`backend`]), with cloud-hypervisor's "hybrid
//! vsock" Unix socket in front of it for host clients ([`proxy`]).
//!
//! Queues: rx (0) and tx (1) are handed to vhost-vsock on DRIVER_OK; the
//! event queue (2) stays with the VMM, which never posts an event (the
//! only one, TRANSPORT_RESET, follows a live migration, which this VMM
//! does not do), so nothing the guest puts there is ever parsed. The
//! device configuration is `guest_cid` (le64), read-only.
//!
//! Features: what vhost-vsock offers among VIRTIO_F_VERSION_1,
//! VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_RING_F_EVENT_IDX and
//! VIRTIO_VSOCK_F_SEQPACKET; the driver's choice goes to the kernel as is.
//! Never VIRTIO_F_ACCESS_PLATFORM: like every virtio device here it sits
//! outside any vIOMMU, and the kernel reads guest-physical addresses
//! through the memory table.
//!
//! Deliberately not implemented: guest-initiated connections to host Unix
//! sockets (upstream's `PATH_<port>`), datagrams, live migration (the
//! event queue), VHOST_F_LOG_ALL (dirty logging).

pub mod backend;
pub mod command;
mod conn;
pub mod guest;
pub mod proxy;
pub mod sys;

use std::path::Path;
use std::sync::Arc;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use crate::{ActivateError, ActiveQueue, GuestMemory, VirtioDevice, feature};
pub use backend::{Backend, BackendError, VHOST_VSOCK_PATH};
pub use proxy::{PROXY_KIND, Proxy, ProxyError, VhostPorts};

/// VIRTIO_VSOCK_F_SEQPACKET (virtio 1.2 section 5.10.3); not in
/// `virtio-bindings` 0.2.7.
pub const VIRTIO_VSOCK_F_SEQPACKET: u32 = 1;
/// Size of each queue (cloud-hypervisor's and vhost-vsock's usual).
pub const QUEUE_SIZE: u16 = 256;
/// rx, tx, event.
const QUEUES: usize = 3;
/// Index of the event queue, which stays in the VMM.
const EVENT_QUEUE: u16 = 2;
/// Lowest CID a guest can have (0, 1 and 2 are the hypervisor, local and
/// host).
pub const MIN_GUEST_CID: u64 = 3;

/// The features this device model can pass on, if vhost-vsock has them.
const SUPPORTED: u64 = feature(VIRTIO_F_VERSION_1)
    | feature(VIRTIO_RING_F_INDIRECT_DESC)
    | feature(VIRTIO_RING_F_EVENT_IDX)
    | feature(VIRTIO_VSOCK_F_SEQPACKET);

/// Why the device could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// vhost-vsock refused.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The hybrid socket could not be served.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// vhost-vsock lacks VIRTIO_F_VERSION_1 (every kernel since 4.8 has it).
    #[error("vhost-vsock offers features {0:#x}, without VIRTIO_F_VERSION_1")]
    NoVersion1(u64),
}

/// A virtio-vsock device.
pub struct Vsock {
    id: String,
    cid: u64,
    offered: u64,
    backend: Backend,
    /// The event queue while the driver runs the device.
    event_queue: Option<ActiveQueue>,
    running: bool,
    // Dropped after the backend: no client reaches a CID nobody owns.
    _proxy: Proxy,
}

impl Vsock {
    /// Own `cid` through vhost-vsock for the guest RAM `mem` and serve the
    /// hybrid socket at `socket`.
    pub fn new(id: String, cid: u64, socket: &Path, mem: &GuestMemory) -> Result<Self, VsockError> {
        let backend = Backend::open(Arc::new(mem.clone()), cid)?;
        let offered = backend.features()? & SUPPORTED;
        if offered & feature(VIRTIO_F_VERSION_1) == 0 {
            return Err(VsockError::NoVersion1(offered));
        }
        let ports = VhostPorts {
            cid: u32::try_from(cid).map_err(|_| BackendError::Cid {
                cid,
                err: std::io::ErrorKind::InvalidInput.into(),
            })?,
        };
        let proxy = Proxy::start(format!("{id}-proxy"), socket, ports)?;
        log::info!(
            target: "vsock",
            "{id}: guest cid {cid}, hybrid socket {}, features {offered:#x}",
            socket.display()
        );
        Ok(Vsock {
            id,
            cid,
            offered,
            backend,
            event_queue: None,
            running: false,
            _proxy: proxy,
        })
    }
}

/// `struct virtio_vsock_config`: `guest_cid` (le64).
fn config_bytes(cid: u64) -> [u8; 8] {
    cid.to_le_bytes()
}

/// Read `data.len()` bytes of `config` at `offset`; past it reads zero.
fn read_from(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let src = usize::try_from(offset)
        .ok()
        .and_then(|o| config.get(o..))
        .unwrap_or_default();
    let n = src.len().min(data.len());
    data[..n].copy_from_slice(&src[..n]);
}

/// The rx and tx rings of `queues`, each with its eventfds; the event
/// queue apart. Refuses a ring missing or without an MSI-X vector.
fn split_queues(
    queues: Vec<ActiveQueue>,
) -> Result<([ActiveQueue; 2], Option<ActiveQueue>), ActivateError> {
    let mut rings: [Option<ActiveQueue>; 2] = [None, None];
    let mut event = None;
    for queue in queues {
        match queue.index {
            EVENT_QUEUE => event = Some(queue),
            i => {
                let slot = rings
                    .get_mut(usize::from(i))
                    .ok_or(ActivateError::NoSuchQueue(i))?;
                if queue.interrupt.vector().is_none() {
                    return Err(ActivateError::NoVector(i));
                }
                *slot = Some(queue);
            }
        }
    }
    match rings {
        [Some(rx), Some(tx)] => Ok(([rx, tx], event)),
        [None, _] => Err(ActivateError::QueueNotEnabled(0)),
        [_, None] => Err(ActivateError::QueueNotEnabled(1)),
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; QUEUES]
    }

    fn features(&self) -> u64 {
        self.offered
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_from(&config_bytes(self.cid), offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        let (rings, event) = split_queues(queues)?;
        let vhost_rings: Vec<backend::Ring<'_>> = rings
            .iter()
            .filter_map(|q| {
                Some(backend::Ring {
                    queue: &q.queue,
                    kick: &q.kick,
                    call: q.interrupt.vector()?,
                })
            })
            .collect();
        self.backend
            .start(&mem, features & self.offered, &vhost_rings)?;
        self.event_queue = event;
        self.running = true;
        Ok(())
    }

    fn reset(&mut self) {
        if self.running
            && let Err(e) = self.backend.stop()
        {
            log::error!(target: "vsock", "{}: {e}", self.id);
        }
        self.running = false;
        self.event_queue = None;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU8;

    use virtio_queue::{Queue, QueueT};
    use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

    use super::*;
    use crate::QueueInterrupt;

    fn queue(index: u16, vector: bool) -> ActiveQueue {
        let fd = vector.then(|| Arc::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        ActiveQueue {
            index,
            queue: Queue::new(QUEUE_SIZE).unwrap(),
            kick: EventFd::new(EFD_NONBLOCK).unwrap(),
            interrupt: QueueInterrupt::new(fd, Arc::new(AtomicU8::new(0))),
        }
    }

    #[test]
    fn the_configuration_is_the_guest_cid_little_endian() {
        let config = config_bytes(0x1_0000_0003);
        let mut low = [0xffu8; 4];
        read_from(&config, 0, &mut low);
        assert_eq!(low, [3, 0, 0, 0]);
        let mut high = [0xffu8; 4];
        read_from(&config, 4, &mut high);
        assert_eq!(high, [1, 0, 0, 0]);
        let mut past = [0xffu8; 4];
        read_from(&config, 8, &mut past);
        assert_eq!(past, [0; 4]);
        read_from(&config, u64::MAX, &mut past);
        assert_eq!(past, [0; 4]);
    }

    #[test]
    fn rx_and_tx_go_to_vhost_and_the_event_queue_stays() {
        let (rings, event) =
            split_queues(vec![queue(2, true), queue(1, true), queue(0, true)]).unwrap();
        assert_eq!([rings[0].index, rings[1].index], [0, 1]);
        assert_eq!(event.map(|q| q.index), Some(2));
    }

    #[test]
    fn a_ring_missing_or_without_a_vector_is_refused_naming_it() {
        let err = |queues| split_queues(queues).err().map(|e| e.to_string());
        assert_eq!(
            err(vec![queue(0, true), queue(2, true)]).as_deref(),
            Some("the driver did not enable queue 1")
        );
        assert_eq!(
            err(vec![queue(1, true)]).as_deref(),
            Some("the driver did not enable queue 0")
        );
        assert_eq!(
            err(vec![queue(0, true), queue(1, false)]).as_deref(),
            Some("queue 1 has no MSI-X vector; vhost-vsock interrupts through one")
        );
        assert_eq!(
            err(vec![queue(5, true)]).as_deref(),
            Some("queue 5 does not exist")
        );
    }

    #[test]
    fn only_what_the_model_handles_is_offered() {
        // vhost-vsock's usual offer: VERSION_1, ACCESS_PLATFORM,
        // NOTIFY_ON_EMPTY, ANY_LAYOUT, INDIRECT_DESC, EVENT_IDX, LOG_ALL,
        // SEQPACKET.
        let kernel: u64 = (1 << 32)
            | (1 << 33)
            | (1 << 24)
            | (1 << 27)
            | (1 << 28)
            | (1 << 29)
            | (1 << 26)
            | (1 << 1);
        let offered = kernel & SUPPORTED;
        assert_eq!(offered, (1 << 32) | (1 << 28) | (1 << 29) | (1 << 1));
    }
}
