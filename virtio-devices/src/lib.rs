//! Virtio 1.x devices on a modern-only virtio-pci transport, over rust-vmm's
//! `virtio-queue` (split virtqueues) and `virtio-bindings` (constants).
//!
//! Implemented:
//! - [`transport`]: the virtio-pci function (virtio spec 1.2 section 4.1):
//!   common / notify / ISR / device configuration capabilities in BAR0, the
//!   MSI-X table and PBA in the same BAR, one MSI-X vector per queue plus
//!   the configuration vector; feature negotiation (VIRTIO_F_VERSION_1 is
//!   required: FEATURES_OK is refused without it), the device status state
//!   machine, reset. Queue notifications arrive on one eventfd per queue,
//!   which the VMM registers as a KVM ioeventfd on the notify area.
//! - [`block`]: virtio-blk over a raw image file or block device, through
//!   one io_uring per queue where the host has it, else synchronously.
//! - [`console`]: virtio-console with one port.
//! - [`net`]: virtio-net over a Linux tap: up to 16 queue pairs with a
//!   control queue (MQ), MRG_RXBUF, checksum and segmentation offloads.
//! - [`rng`]: virtio-rng over an entropy file.
//! - [`vsock`]: virtio-vsock over the host kernel's vhost-vsock, with
//!   cloud-hypervisor's hybrid vsock Unix socket for host clients.
//! - [`worker`]: every queue is served by its own thread (epoll on the
//!   queue's eventfd and a kill eventfd), never by a vCPU; with
//!   VIRTIO_RING_F_EVENT_IDX (offered by virtio-blk, -net and -console)
//!   it publishes avail_event and honours used_event.
//!
//! Deliberately not implemented: the legacy (0.9.5) and transitional
//! interfaces, INTx (a virtio function here has MSI-X only, which every
//! Linux virtio-pci driver uses), packed virtqueues, VIRTIO_F_RING_RESET (per-queue
//! reset), VIRTIO_F_ACCESS_PLATFORM: the devices sit outside any vIOMMU
//! and read guest-physical addresses.
//!
//! What `virtio-bindings` 0.2.7 lacks is defined here by hand: the
//! virtio_pci capability layout ([`transport::caps`]) and the virtio_console
//! configuration ([`console`]).

pub mod block;
pub mod console;
pub mod error;
pub mod net;
pub mod rng;
pub mod transport;
pub mod vsock;
pub mod worker;

#[cfg(test)]
mod test_chain;

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

pub use error::{ActivateError, TransportError};

pub use transport::{NotifyRegistrar, VirtioPciDevice};

/// Guest memory as the devices see it.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// ISR status bit 0: a queue was used (virtio 1.2 section 4.1.4.5).
const ISR_QUEUE: u8 = 1;

/// How a queue tells the guest it used buffers: the eventfd of its MSI-X
/// vector (an irqfd in KVM) and the ISR status bit.
#[derive(Clone)]
pub struct QueueInterrupt {
    vector: Option<Arc<EventFd>>,
    isr: Arc<AtomicU8>,
}

impl QueueInterrupt {
    /// `vector`: the MSI-X vector's eventfd, `None` when the driver gave
    /// the queue no vector (VIRTIO_MSI_NO_VECTOR).
    pub fn new(vector: Option<Arc<EventFd>>, isr: Arc<AtomicU8>) -> Self {
        QueueInterrupt { vector, isr }
    }

    /// The MSI-X vector's eventfd, for a back-end that signals the guest
    /// itself (vhost); `None` without a vector.
    pub fn vector(&self) -> Option<&EventFd> {
        self.vector.as_deref()
    }

    /// Interrupt the guest for this queue.
    pub fn signal(&self) {
        self.isr.fetch_or(ISR_QUEUE, Ordering::SeqCst);
        if let Some(fd) = &self.vector
            && let Err(e) = fd.write(1)
        {
            log::error!(target: "virtio", "queue interrupt eventfd: {e}");
        }
    }
}

/// A queue the driver enabled, handed to the device on DRIVER_OK.
pub struct ActiveQueue {
    /// Index of the queue in the device.
    pub index: u16,
    /// The split virtqueue (addresses and size as the driver set them).
    pub queue: Queue,
    /// Signalled when the driver notifies the queue.
    pub kick: EventFd,
    /// Signals the guest.
    pub interrupt: QueueInterrupt,
}

/// A virtio device model behind the transport.
pub trait VirtioDevice: Send {
    /// Virtio device ID (virtio 1.2 section 5).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the number of queues is its length.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Feature bits offered (VIRTIO_F_VERSION_1 included).
    fn features(&self) -> u64;
    /// Read the device-specific configuration at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The device's queue workers, for the provided
    /// [`VirtioDevice::activate`] and [`VirtioDevice::reset`]; `None` for a
    /// device that overrides both.
    fn workers(&self) -> Option<&worker::Workers> {
        None
    }
    /// Start serving `queues` with the features the driver accepted: by
    /// default each queue goes to its worker.
    fn activate(
        &mut self,
        mem: GuestMemory,
        _features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        match self.workers() {
            Some(workers) => workers.start_all(&mem, queues),
            None => Err(ActivateError::NoWorkers),
        }
    }
    /// Stop serving: workers stopped and joined, queues given up.
    fn reset(&mut self) {
        if let Some(workers) = self.workers() {
            workers.stop();
        }
    }
}

/// Called first thing in every worker thread with the thread kind's name
/// (the VMM installs its seccomp filter there).
pub type ThreadStartHook = fn(&'static str) -> io::Result<()>;

static THREAD_START: OnceLock<ThreadStartHook> = OnceLock::new();

/// Set the worker thread start hook (once per process).
pub fn set_thread_start_hook(hook: ThreadStartHook) {
    let _ = THREAD_START.set(hook);
}

/// Run the hook for a worker thread.
pub(crate) fn thread_started(kind: &'static str) -> io::Result<()> {
    THREAD_START.get().map_or(Ok(()), |hook| hook(kind))
}

/// Feature bit `bit` as a mask.
pub(crate) const fn feature(bit: u32) -> u64 {
    1 << bit
}
