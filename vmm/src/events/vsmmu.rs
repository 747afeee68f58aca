//! The vSMMU's host calls as events, the way [`super::cmdqv`] does it for
//! the CMD-QV: the model talks to this wrapper as to its backend. An STE
//! the host installed is `vsmmu:ste-installed`; an event record the host
//! reported for a guest stream (a translation fault, a bad STE...), which
//! the model then writes into the guest's event queue, is
//! `vsmmu:guest-error`.

use devices::backend::BackendError;
use devices::smmuv3::cmd::Command;
use devices::smmuv3::{HostSmmuInfo, InvalidateError, NestedSte, SteConfig, VsmmuBackend};

use super::{Event, GuestErrorDevice};

/// A vSMMU backend whose installed STEs and host event records are emitted
/// as events.
pub struct EventingVsmmu {
    inner: Box<dyn VsmmuBackend>,
    vsmmu: u32,
    emit: fn(Event),
}

impl EventingVsmmu {
    /// Wrap `inner`, the backend of vSMMU `vsmmu`.
    pub fn new(inner: Box<dyn VsmmuBackend>, vsmmu: u32) -> Self {
        Self::with_sink(inner, vsmmu, super::emit)
    }

    fn with_sink(inner: Box<dyn VsmmuBackend>, vsmmu: u32, emit: fn(Event)) -> Self {
        EventingVsmmu { inner, vsmmu, emit }
    }
}

/// The SMMUv3 event names (spec 7.3) of the records a host reports.
fn event_name(id: u64) -> String {
    match id {
        0x01 => "F_UUT".into(),
        0x02 => "C_BAD_STREAMID".into(),
        0x03 => "F_STE_FETCH".into(),
        0x04 => "C_BAD_STE".into(),
        0x05 => "F_BAD_ATS_TREQ".into(),
        0x06 => "F_STREAM_DISABLED".into(),
        0x07 => "F_TRANSL_FORBIDDEN".into(),
        0x08 => "C_BAD_SUBSTREAMID".into(),
        0x09 => "F_CD_FETCH".into(),
        0x0a => "C_BAD_CD".into(),
        0x0b => "F_WALK_EABT".into(),
        0x10 => "F_TRANSLATION".into(),
        0x11 => "F_ADDR_SIZE".into(),
        0x12 => "F_ACCESS".into(),
        0x13 => "F_PERMISSION".into(),
        0x20 => "F_TLB_CONFLICT".into(),
        0x21 => "F_CFG_CONFLICT".into(),
        0x24 => "E_PAGE_REQUEST".into(),
        0x25 => "F_VMS_FETCH".into(),
        other => format!("EVENT_{other:#04x}"),
    }
}

impl VsmmuBackend for EventingVsmmu {
    fn hw_info(&self) -> Result<HostSmmuInfo, BackendError> {
        self.inner.hw_info()
    }

    fn install_ste(&mut self, vsid: u32, ste: &NestedSte) -> Result<(), BackendError> {
        self.inner.install_ste(vsid, ste)?;
        (self.emit)(Event::SteInstalled {
            vsmmu: self.vsmmu,
            vsid,
            config: match ste.config {
                SteConfig::Abort => "abort",
                SteConfig::Bypass => "bypass",
                SteConfig::S1Translate => "translate",
            },
        });
        Ok(())
    }

    fn invalidate(&mut self, commands: &[Command]) -> Result<(), InvalidateError> {
        self.inner.invalidate(commands)
    }

    fn poll_events(&mut self) -> Vec<[u64; 4]> {
        let records = self.inner.poll_events();
        for record in &records {
            (self.emit)(Event::GuestError {
                device: GuestErrorDevice::Vsmmu(self.vsmmu),
                kind: event_name(record[0] & 0xff),
                queue: None,
                vsid: Some((record[0] >> 32) as u32),
                address: Some(record[2]),
            });
        }
        records
    }

    fn take_events_lost(&mut self) -> bool {
        self.inner.take_events_lost()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use devices::backend::Errno;

    static SEEN: Mutex<Vec<Event>> = Mutex::new(Vec::new());

    fn record(event: Event) {
        SEEN.lock().unwrap().push(event);
    }

    /// A host with one translation fault pending for vSID 8, refusing STEs
    /// for vSID 9.
    struct Fake {
        events: Vec<[u64; 4]>,
    }

    impl VsmmuBackend for Fake {
        fn hw_info(&self) -> Result<HostSmmuInfo, BackendError> {
            Err(BackendError::new(Errno::Inval, "fake"))
        }
        fn install_ste(&mut self, vsid: u32, _: &NestedSte) -> Result<(), BackendError> {
            if vsid == 9 {
                return Err(BackendError::new(Errno::Inval, "no vDEVICE for vSID 0x9"));
            }
            Ok(())
        }
        fn invalidate(&mut self, _: &[Command]) -> Result<(), InvalidateError> {
            Ok(())
        }
        fn poll_events(&mut self) -> Vec<[u64; 4]> {
            std::mem::take(&mut self.events)
        }
    }

    #[test]
    fn installed_stes_and_host_fault_records_become_events() {
        let fake = Fake {
            events: vec![[0x10 | (8 << 32), 0, 0x5c00_1000, 0]],
        };
        let mut vsmmu = EventingVsmmu::with_sink(Box::new(fake), 0, record);
        vsmmu.install_ste(8, &NestedSte::abort()).unwrap();
        vsmmu.install_ste(9, &NestedSte::abort()).unwrap_err();
        assert_eq!(vsmmu.poll_events().len(), 1);
        assert!(vsmmu.poll_events().is_empty());
        let seen = std::mem::take(&mut *SEEN.lock().unwrap());
        assert_eq!(
            seen,
            [
                Event::SteInstalled {
                    vsmmu: 0,
                    vsid: 8,
                    config: "abort"
                },
                Event::GuestError {
                    device: GuestErrorDevice::Vsmmu(0),
                    kind: "F_TRANSLATION".into(),
                    queue: None,
                    vsid: Some(8),
                    address: Some(0x5c00_1000),
                },
            ]
        );
    }
}
