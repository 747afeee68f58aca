//! How a passthrough function's MSI / MSI-X vectors reach the guest with no
//! exit through the VMM: vfio-pci signals one eventfd per vector
//! (`VFIO_DEVICE_SET_IRQS`), KVM consumes each eventfd as an irqfd on its
//! own GSI, and the GSI's MSI route carries the guest's message and the
//! function's ITS DeviceID, so KVM's ITS translates it like any MSI the
//! device could have written.
//!
//! Masking an entry removes the irqfd (the eventfd keeps counting); the
//! unmask re-adds it and KVM delivers what arrived meanwhile (irqfd
//! assignment checks the eventfd), so nothing is lost and nothing fires
//! while masked.

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use devices::mapping::Sentence;

use super::caps::MsiMessage;
use super::host::{VfioHost, VfioHostError};

/// Why a vector could not be wired.
#[derive(Debug, thiserror::Error)]
pub enum MsiError {
    /// The routing table has no GSI left.
    #[error("no free GSI for vector {vector} of {count}")]
    NoGsi {
        /// The vector.
        vector: usize,
        /// Vectors asked for.
        count: usize,
    },
    /// The vector's eventfd could not be made.
    #[error("eventfd for vector {vector}")]
    Eventfd {
        /// The vector.
        vector: usize,
        /// The kernel's errno.
        #[source]
        source: std::io::Error,
    },
    /// The hypervisor refused the routing table.
    #[error("GSI {gsi}: routing table of {entries} entries refused")]
    Route {
        /// The GSI being routed or freed.
        gsi: u32,
        /// Entries in the table sent.
        entries: usize,
        /// The kernel's errno.
        #[source]
        source: std::io::Error,
    },
    /// An irqfd could not be assigned or removed.
    #[error("irqfd on GSI {gsi} (assign={assign})")]
    Irqfd {
        /// The GSI.
        gsi: u32,
        /// Assign or remove.
        assign: bool,
        /// The kernel's errno.
        #[source]
        source: std::io::Error,
    },
    /// The MSI address is an IOVA the guest's stage 1 does not translate.
    #[error("vSID {vsid:#x}: MSI address {iova:#x} does not translate")]
    Untranslated {
        /// The function's vSID.
        vsid: u32,
        /// The address the guest programmed.
        iova: u64,
        /// Where the vSMMU's stage-1 walk stopped.
        #[source]
        reason: devices::smmuv3::s1walk::WalkError,
    },
    /// This router does not route (a VM without a vGIC ITS, a test).
    #[error("no MSI routing")]
    NoRouting,
}

/// Why a vector set could not be enabled.
#[derive(Debug, thiserror::Error)]
pub enum EnableError {
    /// The VM side (GSIs, eventfds).
    #[error(transparent)]
    Msi(#[from] MsiError),
    /// The host refused the eventfds.
    #[error(transparent)]
    Host(#[from] VfioHostError),
}

/// The VM's interrupt routing as a passthrough function needs it (KVM's
/// GSI routing table and irqfds on aarch64; a recorder in tests).
pub trait MsiRouter: Send + Sync {
    /// A GSI for a new vector; `None` when the routing table is full.
    fn allocate_gsi(&self) -> Option<u32>;
    /// Route `gsi` to `msg`, signalled with ITS DeviceID `devid`
    /// (replaces any earlier route of `gsi`).
    fn set_msi_route(&self, gsi: u32, msg: MsiMessage, devid: u32) -> Result<(), MsiError>;
    /// Remove `gsi`'s route and give the GSI back.
    fn free_gsi(&self, gsi: u32);
    /// Make `fd` inject `gsi` (assign) or stop doing so.
    fn irqfd(&self, fd: &EventFd, gsi: u32, assign: bool) -> Result<(), MsiError>;
}

/// One host vector wired into the guest.
pub struct Vector {
    /// The eventfd vfio-pci signals.
    pub fd: EventFd,
    gsi: u32,
    routed: Option<MsiMessage>,
    irqfd: bool,
}

/// The vectors of one interrupt type (MSI or MSI-X) while it is enabled.
pub struct Vectors {
    devid: u32,
    vectors: Vec<Vector>,
}

impl Vectors {
    /// `count` vectors with eventfds and GSIs, nothing routed yet.
    pub fn new(router: &dyn MsiRouter, count: usize, devid: u32) -> Result<Self, MsiError> {
        let mut made = Vectors {
            devid,
            vectors: Vec::with_capacity(count),
        };
        for vector in 0..count {
            let fd = match EventFd::new(EFD_NONBLOCK) {
                Ok(fd) => fd,
                Err(source) => {
                    made.release(router);
                    return Err(MsiError::Eventfd { vector, source });
                }
            };
            let Some(gsi) = router.allocate_gsi() else {
                made.release(router);
                return Err(MsiError::NoGsi { vector, count });
            };
            made.vectors.push(Vector {
                fd,
                gsi,
                routed: None,
                irqfd: false,
            });
        }
        Ok(made)
    }

    /// `count` vectors of `host`'s IRQ `index` wired: GSIs taken and the
    /// host signalling their eventfds; when the host refuses, the GSIs are
    /// given back.
    pub fn enable(
        host: &dyn VfioHost,
        router: &dyn MsiRouter,
        index: u32,
        count: usize,
        devid: u32,
    ) -> Result<Self, EnableError> {
        let mut vectors = Vectors::new(router, count, devid)?;
        if let Err(e) = host.enable_irqs(index, &vectors.fds()) {
            vectors.release(router);
            return Err(e.into());
        }
        Ok(vectors)
    }

    /// The eventfds, in vector order, for `VFIO_DEVICE_SET_IRQS`.
    pub fn fds(&self) -> Vec<&EventFd> {
        self.vectors.iter().map(|v| &v.fd).collect()
    }

    /// Make vector `i` deliver `msg` (or nothing, `None`: masked/disabled).
    pub fn sync(&mut self, router: &dyn MsiRouter, i: usize, msg: Option<MsiMessage>) {
        let devid = self.devid;
        let Some(v) = self.vectors.get_mut(i) else {
            return;
        };
        match msg {
            Some(msg) => {
                if v.routed != Some(msg) {
                    if let Err(e) = router.set_msi_route(v.gsi, msg, devid) {
                        devices::guest_log!(error, target: "vfio", "vector {i}: MSI route {msg:x?}: {}", Sentence(&e));
                        return;
                    }
                    v.routed = Some(msg);
                }
                if !v.irqfd {
                    match router.irqfd(&v.fd, v.gsi, true) {
                        Ok(()) => v.irqfd = true,
                        Err(e) => {
                            devices::guest_log!(error, target: "vfio", "vector {i}: irqfd on GSI {}: {}", v.gsi, Sentence(&e))
                        }
                    }
                }
            }
            None if v.irqfd => {
                if let Err(e) = router.irqfd(&v.fd, v.gsi, false) {
                    devices::guest_log!(error, target: "vfio", "vector {i}: irqfd removal: {}", Sentence(&e));
                }
                v.irqfd = false;
            }
            None => {}
        }
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    /// No vectors.
    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    /// Unwire everything: irqfds removed, routes and GSIs freed.
    pub fn release(&mut self, router: &dyn MsiRouter) {
        for v in self.vectors.drain(..) {
            if v.irqfd
                && let Err(e) = router.irqfd(&v.fd, v.gsi, false)
            {
                devices::guest_log!(error, target: "vfio", "irqfd removal on GSI {}: {}", v.gsi, Sentence(&e));
            }
            router.free_gsi(v.gsi);
        }
    }
}

#[cfg(test)]
pub mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records routing calls; GSIs count up from 300.
    #[derive(Default)]
    pub struct RecordingRouter {
        /// One line per call.
        pub calls: Mutex<Vec<String>>,
        next: Mutex<u32>,
        /// Refuse GSIs after this many.
        pub limit: Option<u32>,
    }

    impl MsiRouter for RecordingRouter {
        fn allocate_gsi(&self) -> Option<u32> {
            let mut next = self.next.lock().unwrap();
            if self.limit.is_some_and(|l| *next >= l) {
                return None;
            }
            *next += 1;
            Some(299 + *next)
        }
        fn set_msi_route(&self, gsi: u32, msg: MsiMessage, devid: u32) -> Result<(), MsiError> {
            self.calls.lock().unwrap().push(format!(
                "route {gsi} {:#x} {:#x} dev {devid:#x}",
                msg.addr, msg.data
            ));
            Ok(())
        }
        fn free_gsi(&self, gsi: u32) {
            self.calls.lock().unwrap().push(format!("free {gsi}"));
        }
        fn irqfd(&self, _fd: &EventFd, gsi: u32, assign: bool) -> Result<(), MsiError> {
            let what = if assign { "irqfd" } else { "unirqfd" };
            self.calls.lock().unwrap().push(format!("{what} {gsi}"));
            Ok(())
        }
    }

    impl RecordingRouter {
        /// The calls since the last take.
        pub fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
    }

    #[test]
    fn a_vector_is_routed_once_and_its_irqfd_follows_the_mask() {
        let router = RecordingRouter::default();
        let mut v = Vectors::new(&router, 2, 0x10).unwrap();
        let msg = MsiMessage {
            addr: 0x0809_0040,
            data: 3,
        };
        v.sync(&router, 1, Some(msg));
        v.sync(&router, 1, Some(msg));
        v.sync(&router, 1, None);
        v.sync(&router, 1, None);
        v.sync(&router, 1, Some(MsiMessage { data: 4, ..msg }));
        v.sync(&router, 7, Some(msg)); // no such vector: ignored
        v.release(&router);
        assert_eq!(
            router.take(),
            [
                "route 301 0x8090040 0x3 dev 0x10",
                "irqfd 301",
                "unirqfd 301",
                "route 301 0x8090040 0x4 dev 0x10",
                "irqfd 301",
                "free 300",
                "unirqfd 301",
                "free 301",
            ]
        );
    }

    #[test]
    fn running_out_of_gsis_gives_back_the_ones_taken() {
        let router = RecordingRouter {
            limit: Some(2),
            ..Default::default()
        };
        let err = Vectors::new(&router, 3, 0).err().unwrap();
        assert!(
            matches!(
                err,
                MsiError::NoGsi {
                    vector: 2,
                    count: 3
                }
            ),
            "{err}"
        );
        assert_eq!(router.take(), ["free 300", "free 301"]);
    }
}
