//! The guest event queue (SMMUv3 spec 3.5.2, 7.3 "Event records").
//!
//! The SMMU owns EVENTQ_PROD, the guest owns EVENTQ_CONS. Records come from
//! the host (the ARM_SMMUV3 vEVENTQ, StreamID already the vSID) and from the
//! model itself (configuration errors it finds on CFGI_STE). A full queue
//! drops the record and toggles EVENTQ_PROD.OVFLG once until the guest
//! acknowledges with EVENTQ_CONS.OVACKFLG. A write that aborts raises
//! GERROR.EVTQ_ABT_ERR. A batch of new records signals once (when
//! IRQ_CTRL.EVENTQ_IRQEN is set): an MSI to the EVENTQ_IRQ_CFG0/1 doorbell
//! when the VM advertises IDR0.MSI and the guest programmed an address (the
//! VMM routes it to the ITS with the vSMMU's IORT DeviceID), otherwise the
//! wired eventq line. Not modelled: event merging, stall events.

use vm_memory::{Bytes, GuestAddress};

use super::Smmuv3;
use super::queue::QueueGeometry;
use super::regs::{cr0, evtq, gerror, irq_ctrl, qbase};
use crate::irq::IrqLine;
use crate::regs::Field;

/// Bytes per event record.
pub const EVT_BYTES: u64 = 32;

/// Event record word 0 fields (7.3).
mod evt0 {
    use crate::regs::Field;
    pub const TYPE: Field = Field::new(0, 8);
    pub const STREAMID: Field = Field::new(32, 32);
}

/// F_STE_FETCH word 3: FetchAddr[51:3] (7.3.4).
const FETCH_ADDR: Field = Field::new(3, 49);

/// Event type numbers (7.3).
pub mod event_id {
    pub const F_STE_FETCH: u64 = 0x03;
    pub const C_BAD_STE: u64 = 0x04;
}

/// One 32-byte event record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRecord(pub [u64; 4]);

impl EventRecord {
    fn with_sid(kind: u64, sid: u32) -> Self {
        EventRecord([
            evt0::TYPE.make(kind) | evt0::STREAMID.make(u64::from(sid)),
            0,
            0,
            0,
        ])
    }

    /// C_BAD_STE: the STE for `sid` is not valid for this SMMU.
    pub fn bad_ste(sid: u32) -> Self {
        Self::with_sid(event_id::C_BAD_STE, sid)
    }

    /// F_STE_FETCH: reading `sid`'s STE at `addr` aborted.
    pub fn ste_fetch(sid: u32, addr: u64) -> Self {
        let mut record = Self::with_sid(event_id::F_STE_FETCH, sid);
        record.0[3] = FETCH_ADDR.make(addr >> FETCH_ADDR.shift);
        record
    }

    /// The event type byte.
    pub fn kind(&self) -> u64 {
        evt0::TYPE.get(self.0[0])
    }

    fn to_le_bytes(self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        bytes
    }
}

impl Smmuv3 {
    fn evtq_geometry(&self) -> QueueGeometry {
        let log2size = qbase::LOG2SIZE.get(self.state.evtq_base) as u32;
        QueueGeometry::new(log2size.min(self.idr.evtq_log2size()))
    }

    /// Write one record into the guest event queue. Returns true when it
    /// was written (the caller raises the interrupt once per batch).
    pub(super) fn push_event(&mut self, record: EventRecord) -> bool {
        if !cr0::EVTQEN.is_set(self.state.cr0) {
            log::debug!(target: "smmuv3", "event {:#x} dropped: EVTQEN = 0", record.kind());
            return false;
        }
        let geometry = self.evtq_geometry();
        let prod = evtq::PTR.get(self.state.evtq_prod) as u32;
        let cons = evtq::PTR.get(self.state.evtq_cons) as u32;
        if geometry.is_full(prod, cons) {
            self.note_evtq_overflow(record);
            return false;
        }
        let base = self.state.evtq_base & qbase::ADDR.mask();
        let addr = base + u64::from(geometry.index(prod)) * EVT_BYTES;
        if self
            .mem
            .write_slice(&record.to_le_bytes(), GuestAddress(addr))
            .is_err()
        {
            crate::guest_log!(warn, target: "smmuv3", "event queue write at {addr:#x} aborted");
            self.raise_gerror(gerror::EVTQ_ABT_ERR);
            return false;
        }
        let next = u64::from(geometry.next(prod));
        self.state.evtq_prod = evtq::PTR.set(self.state.evtq_prod, next);
        log::trace!(target: "smmuv3", "event {:#x} written, EVENTQ_PROD = {:#x}",
            record.kind(), self.state.evtq_prod);
        self.events_delivered = self.events_delivered.saturating_add(1);
        true
    }

    /// Queue full: drop the record; OVFLG toggles only when no overflow is
    /// outstanding (OVFLG == CONS.OVACKFLG), as the spec requires.
    fn note_evtq_overflow(&mut self, record: EventRecord) {
        self.raise_evtq_overflow();
        log::debug!(target: "smmuv3", "event {:#x} dropped: queue full", record.kind());
    }

    /// Toggle EVENTQ_PROD.OVFLG unless an overflow is still unacknowledged.
    fn raise_evtq_overflow(&mut self) {
        let ovflg = evtq::OVFLG.get(self.state.evtq_prod);
        let ovack = evtq::OVFLG.get(self.state.evtq_cons);
        if ovflg == ovack {
            self.state.evtq_prod = evtq::OVFLG.set(self.state.evtq_prod, ovflg ^ 1);
            crate::guest_log!(warn, target: "smmuv3", "event queue overflow, EVENTQ_PROD = {:#x}",
                self.state.evtq_prod);
        }
    }

    /// Write the model's own events and pulse the event interrupt once.
    pub(super) fn report_events(&mut self, records: &[EventRecord]) {
        let mut written = false;
        for record in records {
            written |= self.push_event(*record);
        }
        if written && irq_ctrl::EVENTQ_IRQEN.is_set(self.state.irq_ctrl) {
            let (cfg0, cfg1) = (self.state.evtq_irq_cfg0, self.state.evtq_irq_cfg1);
            self.signal(IrqLine::SmmuEventq, cfg0, cfg1);
        }
    }

    /// Drain the backend's vEVENTQ into the guest event queue. The VMM calls
    /// this when the vEVENTQ fd becomes readable; the replay tool after an
    /// injected event.
    pub fn process_events(&mut self) {
        let records: Vec<EventRecord> = self
            .backend
            .poll_events()
            .into_iter()
            .map(EventRecord)
            .collect();
        for r in &records {
            log::info!(
                target: "smmuv3",
                "host event {:#04x} for vSID {:#x} (address {:#x}) into the guest's event queue",
                r.0[0] & 0xff,
                r.0[0] >> 32,
                r.0[2]
            );
        }
        if !records.is_empty() {
            self.report_events(&records);
        }
        // Events the host dropped are events this queue never got: the
        // guest sees the overflow flag, as if its own queue had been full,
        // and an interrupt so that it looks.
        if self.backend.take_events_lost() {
            crate::guest_log!(warn, target: "smmuv3", "host vEVENTQ lost events");
            self.raise_evtq_overflow();
            if irq_ctrl::EVENTQ_IRQEN.is_set(self.state.irq_ctrl) {
                let (cfg0, cfg1) = (self.state.evtq_irq_cfg0, self.state.evtq_irq_cfg1);
                self.signal(IrqLine::SmmuEventq, cfg0, cfg1);
            }
        }
    }
}
