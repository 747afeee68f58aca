//! The trapped SMMU command queue (SMMUv3 spec 3.5.1, chapter 4 "Commands").
//!
//! A CMDQ_PROD write consumes every entry from CONS to PROD before the write
//! returns, so the guest sees CONS catch up at once. Invalidations
//! (TLBI_NH_*, TLBI_NSNH_ALL, ATC_INV, CFGI_CD*) are collected and forwarded
//! as ONE backend call per CMD_SYNC (what is left is flushed at the end of a
//! consume), in guest order. Architecturally, commands between two CMD_SYNCs
//! complete in any order, so batching across a CFGI_STE is allowed.
//!
//! Errors follow 7.1: the queue stops with CONS on the failing entry,
//! CONS.ERR says why, GERROR.CMDQ_ERR is toggled, the gerror line pulses.
//! Until the guest acknowledges through GERRORN nothing is consumed; the
//! acknowledgement resumes from CONS.
//!
//! A failed batch is read the way the kernel wrote it
//! ([`InvalidateOutcome`]), so the guest's CONS agrees with what the host
//! executed (see [`Smmuv3::flush`]): a refused command stops the queue on
//! it with CERROR_ILL, after the commands of its host chunk that the kernel
//! converted but never issued are sent again; a host CMD_SYNC that timed
//! out (an ATC invalidation the device did not complete) has the rest of
//! the batch sent and stops the queue on the guest's next CMD_SYNC with
//! CERROR_ATC_INV_SYNC, which is where hardware reports it (the guest's
//! driver acknowledges and the CMD_SYNC runs again).
//!
//! Not modelled: stage-2/EL2/EL3 TLBIs (illegal: no stage 2, no HYP),
//! PRI_RESP (no PRI), RESUME/STALL_TERM (no stalls), CFGI_VMS_PIDM.

use vm_memory::{Bytes, GuestAddress};

use super::Smmuv3;
use super::backend::InvalidateOutcome;
use super::cmd::{CMD_BYTES, Command, Opcode, SyncSignal, cerror};
use super::queue::QueueGeometry;
use super::regs::{cmdq, cr0, gerror, qbase};
use crate::irq::IrqLine;

/// The invalidations collected since the last flush, in guest order, with
/// the CONS pointer of each one's queue entry. Two parallel vectors, so the
/// commands go to the backend as one slice with no copy.
#[derive(Debug, Default)]
pub(super) struct Batch {
    commands: Vec<Command>,
    cons: Vec<u32>,
}

impl Batch {
    fn push(&mut self, cons: u32, command: Command) {
        self.commands.push(command);
        self.cons.push(cons);
    }

    /// Empty the batch, keeping its capacity.
    fn clear(&mut self) {
        self.commands.clear();
        self.cons.clear();
    }
}

/// What executing one command asks the consume loop to do.
enum Step {
    /// Go on with the next entry.
    Next,
    /// Stop with CONS on the entry at pointer `at` and CONS.ERR = `err`.
    Fail { at: u32, err: u32 },
}

impl Smmuv3 {
    fn cmdq_geometry(&self) -> QueueGeometry {
        let log2size = qbase::LOG2SIZE.get(self.state.cmdq_base) as u32;
        QueueGeometry::new(log2size.min(self.idr.cmdq_log2size()))
    }

    /// Consume the command queue from CONS up to PROD. Bounded by the queue
    /// size per call, whatever the guest wrote.
    pub(super) fn consume_cmdq(&mut self) {
        if !cr0::CMDQEN.is_set(self.state.cr0) || self.cmdq_error_active() {
            return;
        }
        let geometry = self.cmdq_geometry();
        let prod = geometry.pointer_mask() & cmdq::PTR.get(self.state.cmdq_prod) as u32;
        let mut cons = geometry.pointer_mask() & cmdq::PTR.get(self.state.cmdq_cons) as u32;
        // Borrowed out of `self` for the consume (execute needs `&mut self`)
        // and put back with its capacity.
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        self.consume_into(geometry, prod, &mut cons, &mut batch);
        batch.clear();
        self.batch = batch;
    }

    /// The consume loop of [`Self::consume_cmdq`], collecting into `batch`.
    fn consume_into(
        &mut self,
        geometry: QueueGeometry,
        prod: u32,
        cons: &mut u32,
        batch: &mut Batch,
    ) {
        let mut budget = geometry.entries();
        if !geometry.is_empty(prod, *cons) {
            // Consumption resumes: a previous error is no longer reported.
            self.state.cmdq_err = u64::from(cerror::NONE);
        }
        while budget > 0 && !geometry.is_empty(prod, *cons) {
            budget -= 1;
            let step = match self.fetch_command(geometry, *cons) {
                Some(command) => self.execute(command, *cons, batch),
                None => Step::Fail {
                    at: *cons,
                    err: cerror::ABT,
                },
            };
            if let Step::Fail { at, err } = step {
                // Entries before this one were consumed: their pending
                // invalidations must still reach the host first.
                let (at, err) = match self.flush(batch) {
                    Ok(()) => (at, err),
                    Err(failed_at) => (failed_at, cerror::ILL),
                };
                self.stop_on_error(at, err);
                return;
            }
            *cons = geometry.next(*cons);
        }
        if let Err(failed_at) = self.flush(batch) {
            self.stop_on_error(failed_at, cerror::ILL);
            return;
        }
        self.state.cmdq_cons = u64::from(*cons);
        log::trace!(target: "smmuv3", "CMDQ_CONS = {:#x}", *cons);
    }

    fn fetch_command(&mut self, geometry: QueueGeometry, cons: u32) -> Option<Command> {
        let base = self.state.cmdq_base & qbase::ADDR.mask();
        let addr = base + u64::from(geometry.index(cons)) * CMD_BYTES;
        let mut bytes = [0u8; CMD_BYTES as usize];
        match self.mem.read_slice(&mut bytes, GuestAddress(addr)) {
            Ok(()) => Some(Command::from_le_bytes(bytes)),
            Err(err) => {
                crate::guest_log!(warn, target: "smmuv3", "command fetch at {addr:#x} aborted: {err}");
                None
            }
        }
    }

    fn execute(&mut self, command: Command, cons: u32, batch: &mut Batch) -> Step {
        let Some(opcode) = command.opcode() else {
            crate::guest_log!(warn, target: "smmuv3", "unknown command opcode {:#x}", command.opcode_byte());
            return Step::Fail {
                at: cons,
                err: cerror::ILL,
            };
        };
        log::trace!(target: "smmuv3", "command {} {:#x} {:#x}",
            opcode.name(), command.0[0], command.0[1]);
        self.stats.commands += 1;
        if opcode == Opcode::CmdSync {
            self.stats.syncs += 1;
        }
        match opcode {
            Opcode::PrefetchConfig | Opcode::PrefetchAddr => Step::Next,
            Opcode::CfgiSte => {
                self.cfgi_ste_range(u64::from(command.sid()), u64::from(command.sid()));
                Step::Next
            }
            Opcode::CfgiSteRange => {
                let (first, last) = ste_range(command);
                self.cfgi_ste_range(first, last);
                Step::Next
            }
            Opcode::AtcInv if !self.idr.ats() => illegal(opcode, cons, "IDR0.ATS = 0"),
            // A StreamID with no vDEVICE belongs to an emulated function (the
            // host bridge, a test endpoint): the host holds no CD or ATC
            // state for it, so the command completes here; the kernel would
            // refuse it with EIO.
            Opcode::CfgiCd | Opcode::CfgiCdAll | Opcode::AtcInv
                if !self.streams.contains_key(&command.sid()) =>
            {
                log::trace!(target: "smmuv3", "{} for vSID {:#x} (no vDEVICE) completes locally",
                    opcode.name(), command.sid());
                Step::Next
            }
            Opcode::CfgiCd
            | Opcode::CfgiCdAll
            | Opcode::TlbiNhAll
            | Opcode::TlbiNhAsid
            | Opcode::TlbiNhVa
            | Opcode::TlbiNhVaa
            | Opcode::TlbiNsnhAll
            | Opcode::AtcInv => {
                batch.push(cons, command);
                Step::Next
            }
            Opcode::CmdSync => self.cmd_sync(command, cons, batch),
            Opcode::TlbiEl3All
            | Opcode::TlbiEl3Va
            | Opcode::TlbiEl2All
            | Opcode::TlbiEl2Asid
            | Opcode::TlbiEl2Va
            | Opcode::TlbiEl2Vaa => illegal(opcode, cons, "IDR0.HYP = 0"),
            Opcode::TlbiS12Vmall | Opcode::TlbiS2Ipa => illegal(opcode, cons, "IDR0.S2P = 0"),
            Opcode::PriResp => illegal(opcode, cons, "IDR0.PRI = 0"),
            Opcode::Resume | Opcode::StallTerm => illegal(opcode, cons, "stalls not supported"),
            Opcode::CfgiVmsPidm => illegal(opcode, cons, "not implemented"),
        }
    }

    /// CMD_SYNC: everything before it is complete once the batch is flushed;
    /// then signal as CS says.
    fn cmd_sync(&mut self, command: Command, cons: u32, batch: &mut Batch) -> Step {
        let Some(signal) = command.sync_signal() else {
            crate::guest_log!(warn, target: "smmuv3", "CMD_SYNC with reserved CS = 0b11");
            return Step::Fail {
                at: cons,
                err: cerror::ILL,
            };
        };
        if let Err(failed_at) = self.flush(batch) {
            return Step::Fail {
                at: failed_at,
                err: cerror::ILL,
            };
        }
        // The host's sync for earlier invalidations timed out: this is the
        // CMD_SYNC that waits for them. Reported once; run again after the
        // guest's acknowledgement, it completes.
        if std::mem::take(&mut self.state.atc_sync_timeout) {
            return Step::Fail {
                at: cons,
                err: cerror::ATC_INV_SYNC,
            };
        }
        match signal {
            SyncSignal::None => {}
            SyncSignal::Sev => log::trace!(target: "smmuv3", "CMD_SYNC SIG_SEV: no event to send"),
            SyncSignal::Irq => self.sync_irq(command),
        }
        Step::Next
    }

    /// CMD_SYNC SIG_IRQ: a non-zero MSI address gets the 32-bit payload
    /// written there (Linux's MSI polling points it at the queue entry in
    /// RAM); an address outside RAM is an MSI doorbell and goes to the
    /// interrupt sink; no address means the wired cmdq-sync line. IRQ_CTRL
    /// has no CMD_SYNC enable bit (6.3.16), so the line is not gated.
    fn sync_irq(&mut self, command: Command) {
        let addr = command.sync_msi_addr();
        let data = command.sync_msi_data();
        if addr == 0 {
            self.irq.trigger(IrqLine::SmmuCmdqSync);
        } else if self
            .mem
            .write_obj(data.to_le(), GuestAddress(addr))
            .is_err()
        {
            self.irq.msi(addr, data);
        } else {
            log::trace!(target: "smmuv3", "CMD_SYNC wrote {data:#x} at {addr:#x}");
        }
    }

    /// Forward the pending invalidations in one backend call and empty the
    /// batch. On a refused command, returns the CONS pointer of that
    /// command. What a failed call left undone is sent again, so every
    /// command before the one the queue stops on has reached the host:
    /// - refused at k: the kernel never issued k's host chunk, so the
    ///   commands of that chunk before k are sent again;
    /// - a host CMD_SYNC timeout after the chunk ending at k: the commands
    ///   after k were not issued and are sent again, and the next guest
    ///   CMD_SYNC reports the timeout (`atc_sync_timeout`);
    /// - anything else: the queue stops on k.
    ///
    /// Each retry covers strictly fewer commands than the call before it,
    /// so a backend that keeps failing cannot loop.
    fn flush(&mut self, batch: &mut Batch) -> Result<(), u32> {
        let (mut start, mut end) = (0, batch.commands.len());
        let mut stop = None;
        while start < end {
            let commands = &batch.commands[start..end];
            let Err(err) = self.backend.invalidate(commands) else {
                break;
            };
            let outcome = err.outcome(commands.len());
            crate::guest_log!(warn,
                target: "smmuv3",
                "invalidation batch of {}: {err} ({outcome:?})",
                commands.len()
            );
            match outcome {
                InvalidateOutcome::Refused { at, unissued } => {
                    stop = Some(start + at);
                    (start, end) = (start + unissued, start + at);
                }
                InvalidateOutcome::SyncTimedOut { last } => {
                    self.state.atc_sync_timeout = true;
                    start += last + 1;
                }
                InvalidateOutcome::Failed { at } => {
                    stop = Some(start + at);
                    break;
                }
            }
        }
        let outcome = match stop {
            None => Ok(()),
            Some(at) => Err(batch.cons.get(at).copied().unwrap_or_default()),
        };
        batch.clear();
        outcome
    }

    /// Stop the queue on the entry at `cons` with CONS.ERR = `err`.
    fn stop_on_error(&mut self, cons: u32, err: u32) {
        self.state.cmdq_cons = u64::from(cons);
        self.state.cmdq_err = u64::from(err);
        crate::guest_log!(warn, target: "smmuv3", "command queue error {err} at CONS {cons:#x}");
        self.raise_gerror(gerror::CMDQ_ERR);
        self.guest_error(crate::guest_error::cerror_name(u64::from(err)), None);
    }

    /// CFGI_STE / CFGI_STE_RANGE: re-read the STE of every registered
    /// endpoint in [first, last]. Only registered vSIDs are visited, so a
    /// range of 2^32 StreamIDs costs as much as the VM has devices.
    fn cfgi_ste_range(&mut self, first: u64, last: u64) {
        let (Ok(first), Ok(last)) = (u32::try_from(first), u32::try_from(last)) else {
            return;
        };
        let vsids: Vec<u32> = self.streams.range(first..=last).map(|(v, _)| *v).collect();
        for vsid in vsids {
            self.apply_ste(vsid);
        }
    }
}

fn illegal(opcode: Opcode, cons: u32, why: &str) -> Step {
    crate::guest_log!(warn, target: "smmuv3", "illegal command {}: {why}", opcode.name());
    Step::Fail {
        at: cons,
        err: cerror::ILL,
    }
}

/// The StreamIDs CFGI_STE_RANGE covers: 2^(Range+1) IDs aligned down from
/// the command's StreamID; Range = 31 means all of them (CFGI_ALL).
fn ste_range(command: Command) -> (u64, u64) {
    let span = 1u64 << (command.ste_range() + 1);
    let first = u64::from(command.sid()) & !(span - 1);
    (first, first + span - 1)
}
