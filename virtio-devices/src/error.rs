//! The errors at this crate's seams with the VMM: a device's activation
//! ([`crate::VirtioDevice::activate`]), the PCI transport's construction
//! ([`crate::VirtioPciDevice::new`]). Each keeps the host's errno
//! (`io::Error`) or the lower crate's error as its `source()` (not in its
//! own message): `devices::mapping::Sentence` prints the chain once.

use std::io;

/// Why a device did not start serving its queues (DRIVER_OK). The
/// transport logs it with the device's id and sets DEVICE_NEEDS_RESET.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The device neither has queue workers nor overrides `activate`.
    #[error("the device has no queue workers")]
    NoWorkers,
    /// The driver enabled a queue the device has no worker for.
    #[error("no worker for queue {0}")]
    NoWorker(u16),
    /// The driver's size or ring addresses of a queue are not in guest RAM.
    #[error("queue {0} is not valid (size or addresses)")]
    InvalidQueue(u16),
    /// The queue's state is refused by `virtio-queue`.
    #[error("queue {queue}")]
    Queue {
        /// Queue index.
        queue: u16,
        /// What `virtio-queue` found.
        #[source]
        source: virtio_queue::Error,
    },
    /// The driver did not enable a queue the device cannot run without.
    #[error("the driver did not enable queue {0}")]
    QueueNotEnabled(u16),
    /// A queue index past the device's queues.
    #[error("queue {0} does not exist")]
    NoSuchQueue(u16),
    /// A queue without an MSI-X vector where the back-end interrupts the
    /// guest through the vector's eventfd itself (vhost).
    #[error("queue {0} has no MSI-X vector; vhost-vsock interrupts through one")]
    NoVector(u16),
    /// vhost-vsock refused the rings, the memory table or the start.
    #[error(transparent)]
    Vhost(#[from] crate::vsock::BackendError),
    /// A host call failed: an eventfd clone, a worker's wakeup, a
    /// back-end's ioctl.
    #[error("queue {queue}: {what}")]
    Host {
        /// Queue index.
        queue: u16,
        /// The call.
        what: &'static str,
        /// The host's error, with its errno.
        #[source]
        source: io::Error,
    },
}

/// Why a virtio PCI function could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// More queues than the MSI-X table or the notify area holds.
    #[error("{0} queues is too many")]
    TooManyQueues(usize),
    /// BAR 0 could not be declared.
    #[error("BAR 0")]
    Bar(#[source] pci::config::BarError),
    /// A queue's notification eventfd could not be made.
    #[error("eventfd")]
    EventFd(#[source] io::Error),
    /// The MSI-X vectors could not be allocated.
    #[error("MSI-X vectors")]
    Vectors(#[source] pci::vfio::MsiError),
}
