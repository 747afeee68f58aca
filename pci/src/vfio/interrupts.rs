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

use super::caps::MsiMessage;

/// The VM's interrupt routing as a passthrough function needs it (KVM's
/// GSI routing table and irqfds on aarch64; a recorder in tests).
pub trait MsiRouter: Send + Sync {
    /// A GSI for a new vector; `None` when the routing table is full.
    fn allocate_gsi(&self) -> Option<u32>;
    /// Route `gsi` to `msg`, signalled with ITS DeviceID `devid`
    /// (replaces any earlier route of `gsi`).
    fn set_msi_route(&self, gsi: u32, msg: MsiMessage, devid: u32) -> Result<(), String>;
    /// Remove `gsi`'s route and give the GSI back.
    fn free_gsi(&self, gsi: u32);
    /// Make `fd` inject `gsi` (assign) or stop doing so.
    fn irqfd(&self, fd: &EventFd, gsi: u32, assign: bool) -> Result<(), String>;
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
    pub fn new(router: &dyn MsiRouter, count: usize, devid: u32) -> Result<Self, String> {
        let mut made = Vectors {
            devid,
            vectors: Vec::with_capacity(count),
        };
        for i in 0..count {
            let fd = EventFd::new(EFD_NONBLOCK).map_err(|e| format!("eventfd: {e}"))?;
            let Some(gsi) = router.allocate_gsi() else {
                made.release(router);
                return Err(format!("no free GSI for vector {i} of {count}"));
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
                        devices::guest_log!(error, target: "vfio", "vector {i}: MSI route {msg:x?}: {e}");
                        return;
                    }
                    v.routed = Some(msg);
                }
                if !v.irqfd {
                    match router.irqfd(&v.fd, v.gsi, true) {
                        Ok(()) => v.irqfd = true,
                        Err(e) => {
                            devices::guest_log!(error, target: "vfio", "vector {i}: irqfd on GSI {}: {e}", v.gsi)
                        }
                    }
                }
            }
            None if v.irqfd => {
                if let Err(e) = router.irqfd(&v.fd, v.gsi, false) {
                    devices::guest_log!(error, target: "vfio", "vector {i}: irqfd removal: {e}");
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
                devices::guest_log!(error, target: "vfio", "irqfd removal on GSI {}: {e}", v.gsi);
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
        fn set_msi_route(&self, gsi: u32, msg: MsiMessage, devid: u32) -> Result<(), String> {
            self.calls.lock().unwrap().push(format!(
                "route {gsi} {:#x} {:#x} dev {devid:#x}",
                msg.addr, msg.data
            ));
            Ok(())
        }
        fn free_gsi(&self, gsi: u32) {
            self.calls.lock().unwrap().push(format!("free {gsi}"));
        }
        fn irqfd(&self, _fd: &EventFd, gsi: u32, assign: bool) -> Result<(), String> {
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
        assert!(err.contains("vector 2 of 3"), "{err}");
        assert_eq!(router.take(), ["free 300", "free 301"]);
    }
}
