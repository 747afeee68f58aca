//! The emulated backend's vSMMUv3 side: what the kernel's arm-smmu-v3
//! iommufd driver enforces for `IOMMU_HWPT_ALLOC` (nested STE) and
//! `IOMMU_HWPT_INVALIDATE` on a vIOMMU, plus a vEVENTQ tests can fill.
//!
//! Invalidation follows `arm_vsmmu_cache_invalidate`: commands are
//! converted one by one and issued in chunks of
//! [`HOST_INVALIDATE_CHUNK`], each closed by a host CMD_SYNC; a refused
//! command (EIO) stops the call with `entry_num` on it and its chunk
//! unissued; a CMD_SYNC that times out (ETIMEDOUT: here, an ATC_INV for a
//! device made unresponsive with [`EmulatedBackend::set_atc_unresponsive`])
//! stops it with `entry_num` on the chunk's last command. The call log
//! says how many commands were issued (`issued=`) on a failure. No TLB or
//! ATC contents are modelled: issuing is counting.

use std::collections::{BTreeMap, VecDeque};

use super::EmulatedBackend;
use crate::backend::{BackendCall, BackendError, Errno};
use crate::smmuv3::cmd::{Command, Opcode};
use crate::smmuv3::ste::{ste0, ste1};
use crate::smmuv3::{
    HOST_INVALIDATE_CHUNK, HostSmmuInfo, InvalidateError, NestedSte, SteConfig, VsmmuBackend,
};

/// STE.Config values the kernel accepts for a nested HWPT.
const CFG_ABORT: u64 = 0b000;
const CFG_BYPASS: u64 = 0b100;
const CFG_S1_TRANS: u64 = 0b101;
/// STE.EATS values the kernel accepts: abort (0) and full ATS (1).
const EATS_MAX: u64 = 1;

/// The vSMMU state of one emulated vIOMMU.
#[derive(Debug)]
pub struct EmulatedSmmu {
    /// What `IOMMU_GET_HW_INFO` reports.
    hw_info: HostSmmuInfo,
    /// The ARM_SMMUV3 vEVENTQ: records with the vSID already in place.
    events: VecDeque<[u64; 4]>,
    /// What each vSID's device is attached to now: the translation of the
    /// last STE install that succeeded. A refused install changes nothing,
    /// as in the kernel (the old HWPT stays attached).
    translations: BTreeMap<u32, SteConfig>,
    /// Failure injection: STE kinds whose install the host refuses, as a
    /// kernel refuses a nested HWPT alloc or an attach (EINVAL).
    refused: Vec<SteConfig>,
    /// Failure injection: vSIDs whose device never completes an ATC
    /// invalidation, so the host CMD_SYNC after one times out.
    atc_unresponsive: Vec<u32>,
}

impl Default for EmulatedSmmu {
    fn default() -> Self {
        EmulatedSmmu {
            hw_info: HostSmmuInfo::grace_like(),
            events: VecDeque::new(),
            translations: BTreeMap::new(),
            refused: Vec::new(),
            atc_unresponsive: Vec::new(),
        }
    }
}

impl EmulatedBackend {
    /// Make `IOMMU_GET_HW_INFO` report `info` (default: a Grace-like SMMU).
    pub fn set_smmu_hw_info(&self, info: HostSmmuInfo) {
        self.lock().smmu.hw_info = info;
    }

    /// Refuse every later install of an STE of one of `configs` (EINVAL):
    /// failure injection for the host refusing a nested HWPT or an attach.
    pub fn refuse_ste_installs(&self, configs: &[SteConfig]) {
        self.lock().smmu.refused = configs.to_vec();
    }

    /// Make `vsid`'s device ignore ATC invalidations (`true`) or answer
    /// them again: an ATC_INV for it makes the host CMD_SYNC closing its
    /// chunk time out (ETIMEDOUT), as a device that drops ATS invalidation
    /// requests does on real hardware.
    pub fn set_atc_unresponsive(&self, vsid: u32, unresponsive: bool) {
        let list = &mut self.lock().smmu.atc_unresponsive;
        list.retain(|v| *v != vsid);
        if unresponsive {
            list.push(vsid);
        }
    }

    /// The translation `vsid`'s device is attached to now, if any STE was
    /// ever installed for it.
    pub fn stream_translation(&self, vsid: u32) -> Option<SteConfig> {
        self.lock().smmu.translations.get(&vsid).copied()
    }

    /// Queue an event record on the vEVENTQ, as the host SMMU driver would
    /// after a fault on a device with a vDEVICE.
    pub fn inject_event(&self, record: [u64; 4]) {
        self.lock().smmu.events.push_back(record);
        self.notify_events();
    }
}

/// The kernel's `arm_smmu_validate_vste`: a non-valid STE is accepted and
/// zeroed; otherwise only the nesting-allowed bits, Config abort/bypass/S1
/// and EATS 0/1 are accepted (EIO).
fn validate_vste(ste: &NestedSte) -> Result<NestedSte, BackendError> {
    let [w0, w1] = ste.words;
    if !ste0::V.is_set(w0) {
        return Ok(NestedSte {
            config: SteConfig::Abort,
            words: [0, 0],
        });
    }
    if w0 & !ste0::ALLOWED != 0 || w1 & !ste1::ALLOWED != 0 {
        return Err(BackendError::new(
            Errno::Io,
            format!("STE bits outside the nesting mask: {w0:#x} {w1:#x}"),
        ));
    }
    let config = match ste0::CONFIG.get(w0) {
        CFG_ABORT => SteConfig::Abort,
        CFG_BYPASS => SteConfig::Bypass,
        CFG_S1_TRANS => SteConfig::S1Translate,
        other => {
            return Err(BackendError::new(
                Errno::Io,
                format!("STE.Config {other:#05b} is not abort, bypass or S1"),
            ));
        }
    };
    let eats = ste1::EATS.get(w1);
    if eats > EATS_MAX {
        return Err(BackendError::new(
            Errno::Io,
            format!("STE.EATS {eats:#04b} is not 0 or 1"),
        ));
    }
    Ok(NestedSte {
        config,
        words: ste.words,
    })
}

impl EmulatedBackend {
    /// `arm_vsmmu_cache_invalidate` over `commands`: how many were issued
    /// to the host queue, and on failure the written-back `entry_num` with
    /// the errno.
    fn run_invalidation(&self, commands: &[Command]) -> (usize, Option<(usize, BackendError)>) {
        let mut issued = 0;
        for (index, command) in commands.iter().enumerate() {
            if let Err(error) = self.check_invalidation(*command) {
                return (issued, Some((index, error)));
            }
            let end = index + 1;
            if end != commands.len() && end - issued != HOST_INVALIDATE_CHUNK {
                continue;
            }
            // Issue the chunk issued..end with its CMD_SYNC.
            let chunk = &commands[issued..end];
            issued = end;
            if let Some(vsid) = self.atc_timeout(chunk) {
                let error = BackendError::new(
                    Errno::TimedOut,
                    format!("CMD_SYNC timed out: vSID {vsid:#x} did not complete an ATC_INV"),
                );
                return (issued, Some((end - 1, error)));
            }
        }
        (issued, None)
    }

    /// The vSID of an ATC_INV in `chunk` whose device does not answer.
    fn atc_timeout(&self, chunk: &[Command]) -> Option<u32> {
        let state = self.lock();
        chunk
            .iter()
            .filter(|c| c.opcode() == Some(Opcode::AtcInv))
            .map(|c| c.sid())
            .find(|vsid| state.smmu.atc_unresponsive.contains(vsid))
    }

    /// One command of an `IOMMU_HWPT_INVALIDATE` batch, as the kernel's
    /// `arm_vsmmu_convert_user_cmd` checks it.
    fn check_invalidation(&self, command: Command) -> Result<(), BackendError> {
        match command.opcode() {
            Some(
                Opcode::TlbiNsnhAll
                | Opcode::TlbiNhVa
                | Opcode::TlbiNhVaa
                | Opcode::TlbiNhAll
                | Opcode::TlbiNhAsid,
            ) => Ok(()),
            Some(Opcode::AtcInv | Opcode::CfgiCd | Opcode::CfgiCdAll) => {
                let vsid = command.sid();
                match self.vdevice_psid(vsid) {
                    Some(_) => Ok(()),
                    None => Err(BackendError::new(
                        Errno::Io,
                        format!("vSID {vsid:#x} has no vDEVICE"),
                    )),
                }
            }
            _ => Err(BackendError::new(
                Errno::Io,
                format!("opcode {:#x} is not accepted", command.opcode_byte()),
            )),
        }
    }
}

impl VsmmuBackend for EmulatedBackend {
    fn hw_info(&self) -> Result<HostSmmuInfo, BackendError> {
        Ok(self.lock().smmu.hw_info)
    }

    fn install_ste(&mut self, vsid: u32, ste: &NestedSte) -> Result<(), BackendError> {
        let result = validate_vste(ste);
        let mut call = BackendCall::new("install_ste")
            .hex("sid", u64::from(vsid))
            .word("cfg", ste.config.name())
            .hex("ste0", ste.words[0])
            .hex("ste1", ste.words[1]);
        let result = result.and_then(|checked| {
            // Attaching to an S1 nested domain needs the device's vDEVICE.
            if checked.config == SteConfig::S1Translate && self.vdevice_psid(vsid).is_none() {
                return Err(BackendError::new(
                    Errno::NoEnt,
                    format!("vSID {vsid:#x} has no vDEVICE for an S1 attach"),
                ));
            }
            if self.lock().smmu.refused.contains(&checked.config) {
                return Err(BackendError::new(
                    Errno::Inval,
                    format!("{} STE refused (injected)", checked.config.name()),
                ));
            }
            Ok(checked.config)
        });
        match &result {
            Ok(config) => {
                self.lock().smmu.translations.insert(vsid, *config);
            }
            Err(err) => call = call.word("err", &err.errno.to_string()),
        }
        self.record(call);
        result.map(|_| ())
    }

    fn invalidate(&mut self, commands: &[Command]) -> Result<(), InvalidateError> {
        let (issued, failure) = self.run_invalidation(commands);
        let done = failure.as_ref().map_or(commands.len(), |(done, _)| *done);
        // One per trapped CMD_SYNC batch: counted; formatted only where a
        // call log asks for it.
        self.record_data_path("invalidate", None, || {
            let call = BackendCall::new("invalidate")
                .dec("entries", commands.len() as u64)
                .dec("ok", done as u64);
            match &failure {
                Some((_, error)) => call
                    .dec("issued", issued as u64)
                    .word("err", &error.errno.to_string()),
                None => call,
            }
        });
        match failure {
            None => Ok(()),
            Some((done, error)) => Err(InvalidateError { done, error }),
        }
    }

    fn poll_events(&mut self) -> Vec<[u64; 4]> {
        self.lock().smmu.events.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(backend: &EmulatedBackend) -> Vec<String> {
        backend
            .take_calls()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn s1_words() -> [u64; 2] {
        [
            ste0::V.make(1) | ste0::CONFIG.make(CFG_S1_TRANS) | 0x4001_0000,
            ste1::EATS.make(1),
        ]
    }

    #[test]
    fn install_ste_records_call_and_accepts_s1_with_vdevice() {
        let mut backend = EmulatedBackend::new();
        backend.vdevice_alloc(8, 0x1008).unwrap();
        backend.take_calls();
        let ste = NestedSte {
            config: SteConfig::S1Translate,
            words: s1_words(),
        };
        backend.install_ste(8, &ste).unwrap();
        assert_eq!(
            calls(&backend),
            ["install_ste sid=0x8 cfg=s1 ste0=0x4001000b ste1=0x10000000"]
        );
    }

    #[test]
    fn install_ste_rejects_bits_outside_nesting_mask_with_eio() {
        let mut backend = EmulatedBackend::new();
        backend.vdevice_alloc(8, 0x1008).unwrap();
        let mut words = s1_words();
        words[1] |= 1 << 40;
        let ste = NestedSte {
            config: SteConfig::S1Translate,
            words,
        };
        assert_eq!(backend.install_ste(8, &ste).unwrap_err().errno, Errno::Io);
    }

    #[test]
    fn install_ste_rejects_stage2_config_and_split_eats() {
        let mut backend = EmulatedBackend::new();
        let nested = NestedSte {
            config: SteConfig::Abort,
            words: [ste0::V.make(1) | ste0::CONFIG.make(0b111), 0],
        };
        assert_eq!(
            backend.install_ste(1, &nested).unwrap_err().errno,
            Errno::Io
        );
        let split_eats = NestedSte {
            config: SteConfig::Bypass,
            words: [
                ste0::V.make(1) | ste0::CONFIG.make(CFG_BYPASS),
                ste1::EATS.make(2),
            ],
        };
        assert_eq!(
            backend.install_ste(1, &split_eats).unwrap_err().errno,
            Errno::Io
        );
    }

    #[test]
    fn install_ste_accepts_invalid_ste_and_s1_needs_vdevice() {
        let mut backend = EmulatedBackend::new();
        let invalid = NestedSte {
            config: SteConfig::Abort,
            words: [ste0::CONFIG.make(0b111), 1 << 40],
        };
        backend.install_ste(3, &invalid).unwrap();
        let s1 = NestedSte {
            config: SteConfig::S1Translate,
            words: s1_words(),
        };
        assert_eq!(backend.install_ste(3, &s1).unwrap_err().errno, Errno::NoEnt);
    }

    #[test]
    fn refused_install_leaves_the_previous_translation_attached() {
        let mut backend = EmulatedBackend::new();
        backend.vdevice_alloc(8, 0x108).unwrap();
        backend.install_ste(8, &NestedSte::bypass()).unwrap();
        backend.refuse_ste_installs(&[SteConfig::S1Translate]);
        let s1 = NestedSte {
            config: SteConfig::S1Translate,
            words: s1_words(),
        };
        assert_eq!(backend.install_ste(8, &s1).unwrap_err().errno, Errno::Inval);
        assert_eq!(backend.stream_translation(8), Some(SteConfig::Bypass));
        backend.install_ste(8, &NestedSte::abort()).unwrap();
        assert_eq!(backend.stream_translation(8), Some(SteConfig::Abort));
    }

    #[test]
    fn invalidate_reports_done_before_first_refused_command() {
        let mut backend = EmulatedBackend::new();
        backend.vdevice_alloc(8, 0x1008).unwrap();
        backend.take_calls();
        let commands = [
            Command([Opcode::TlbiNhVa as u64, 0x1000]),
            Command([Opcode::AtcInv as u64 | (8 << 32), 0]),
            Command([Opcode::CfgiCd as u64 | (9 << 32), 0]),
            Command([Opcode::TlbiNhAll as u64, 0]),
        ];
        let err = backend.invalidate(&commands).unwrap_err();
        assert_eq!(err.done, 2);
        assert_eq!(err.error.errno, Errno::Io);
        assert_eq!(
            calls(&backend),
            ["invalidate entries=4 ok=2 issued=0 err=EIO"],
            "the refused command's chunk never reached the host queue"
        );
        assert_eq!(
            err.outcome(commands.len()),
            crate::smmuv3::InvalidateOutcome::Refused { at: 2, unissued: 0 }
        );
    }

    /// `n` TLBI_NH_VA commands.
    fn tlbis(n: usize) -> Vec<Command> {
        (0..n as u64)
            .map(|i| Command([Opcode::TlbiNhVa as u64, 0x1000 * i]))
            .collect()
    }

    #[test]
    fn a_refused_command_leaves_earlier_chunks_issued_and_its_own_not() {
        let mut backend = EmulatedBackend::new();
        let mut commands = tlbis(70);
        commands[65] = Command([Opcode::CfgiCd as u64 | (9 << 32), 0]);
        let err = backend.invalidate(&commands).unwrap_err();
        assert_eq!(
            calls(&backend),
            ["invalidate entries=70 ok=65 issued=63 err=EIO"]
        );
        assert_eq!(
            err.outcome(70),
            crate::smmuv3::InvalidateOutcome::Refused {
                at: 65,
                unissued: 63
            }
        );
    }

    #[test]
    fn an_atc_sync_timeout_reports_the_chunks_last_command_not_the_atc_inv() {
        let mut backend = EmulatedBackend::new();
        backend.vdevice_alloc(8, 0x1008).unwrap();
        backend.set_atc_unresponsive(8, true);
        backend.take_calls();
        let mut commands = tlbis(100);
        commands[10] = Command([Opcode::AtcInv as u64 | (8 << 32), 0]);
        let err = backend.invalidate(&commands).unwrap_err();
        assert_eq!(err.error.errno, Errno::TimedOut);
        assert_eq!(err.done, 62, "entry_num: the first chunk's last command");
        assert_eq!(
            calls(&backend),
            ["invalidate entries=100 ok=62 issued=63 err=ETIMEDOUT"],
            "the second chunk was never issued"
        );
        assert_eq!(
            err.outcome(100),
            crate::smmuv3::InvalidateOutcome::SyncTimedOut { last: 62 }
        );
        // In the last, short chunk: entry_num is the batch's last command.
        let mut commands = tlbis(5);
        commands[1] = Command([Opcode::AtcInv as u64 | (8 << 32), 0]);
        assert_eq!(backend.invalidate(&commands).unwrap_err().done, 4);
        backend.set_atc_unresponsive(8, false);
        backend.invalidate(&commands).unwrap();
    }

    #[test]
    fn invalidate_refuses_cfgi_ste_and_stage2_tlbi() {
        let mut backend = EmulatedBackend::new();
        for op in [Opcode::CfgiSte, Opcode::TlbiS12Vmall, Opcode::CmdSync] {
            let err = backend.invalidate(&[Command([op as u64, 0])]).unwrap_err();
            assert_eq!(err.done, 0, "{}", op.name());
        }
        backend
            .invalidate(&[
                Command([Opcode::TlbiNsnhAll as u64, 0]),
                Command([Opcode::TlbiNhAsid as u64, 0]),
                Command([Opcode::TlbiNhVaa as u64, 0]),
            ])
            .unwrap();
        assert_eq!(calls(&backend).last().unwrap(), "invalidate entries=3 ok=3");
    }

    #[test]
    fn injected_events_are_polled_once_in_order() {
        let mut backend = EmulatedBackend::new();
        backend.inject_event([1, 2, 3, 4]);
        backend.inject_event([5, 6, 7, 8]);
        assert_eq!(backend.poll_events(), [[1, 2, 3, 4], [5, 6, 7, 8]]);
        assert!(backend.poll_events().is_empty());
    }

    #[test]
    fn injected_events_make_the_events_fd_readable_until_reset() {
        let backend = EmulatedBackend::new();
        let fd = backend.events_fd.clone().expect("an eventfd");
        assert!(fd.read().is_err(), "quiet at first");
        backend.inject_event([1, 2, 3, 4]);
        backend.inject_event([5, 6, 7, 8]);
        assert_eq!(fd.read().unwrap(), 2, "announced twice");
        backend.inject_event([9, 9, 9, 9]);
        backend.reset_events_fd();
        assert!(fd.read().is_err(), "quiet after the reset");
        assert_eq!(
            backend.clone().poll_events().len(),
            3,
            "the events themselves stay queued"
        );
    }
}
