//! The `emulated` host backend: a software model of the kernel's iommufd
//! contract for one vIOMMU (a vSMMUv3 and, optionally, its CMDQ-V), for CI,
//! fuzzing and development machines with no SMMU.
//!
//! It enforces what the kernel enforces, so a model bug that the kernel
//! would reject fails in our tests first, and it records every call so the
//! replay tool and the tests can assert on the exact backend traffic.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::backend::{BackendCall, BackendError, Errno};

pub mod cmdqv;
mod smmu;
pub mod vcmdq_engine;

pub use smmu::EmulatedSmmu;

/// The state of one emulated vIOMMU, shared by the vSMMU and the CMDQ-V
/// models of that vIOMMU (in the kernel they are one iommufd object).
#[derive(Debug)]
pub struct EmulatedViommu {
    /// Backend calls, in order, until taken: all of them for tests and
    /// replay; in a VM only the newest [`VM_CALL_LOG_LEN`] (a flight
    /// recorder), since millions of VCMDQ commands would otherwise grow it
    /// without bound.
    calls: VecDeque<BackendCall>,
    /// The most calls `calls` holds.
    call_log_len: usize,
    /// Whether data-path calls (one `vcmdq_exec` per VCMDQ command, one
    /// `invalidate` per trapped CMD_SYNC batch) are formatted into `calls`
    /// too, or only counted.
    log_data_path: bool,
    /// How many calls of each kind were made, and per `op=` argument
    /// (`vcmdq_exec` opcodes): the VM's statistics. Keyed so that counting
    /// an already-seen kind allocates nothing (this runs per VCMDQ command).
    counts: BTreeMap<&'static str, CallCount>,
    /// vDEVICEs: virtual StreamID -> physical StreamID.
    vdevices: BTreeMap<u32, u32>,
    /// The VINTF's SID_MATCH/SID_REPLACE slots: the vSID each one holds.
    /// Like the kernel's per-VINTF IDA, a vDEVICE takes the lowest free
    /// slot and keeps it until it is destroyed; the others never move.
    sid_slots: Vec<Option<u32>>,
    /// How many vDEVICEs fit (the CMD-QV SID_MATCH slots); `None` = unlimited.
    vdevice_slots: Option<usize>,
    /// The vSMMUv3 side: hw info and the ARM_SMMUV3 vEVENTQ.
    smmu: EmulatedSmmu,
}

/// The count of one kind of call, and of each `op=` value among them.
#[derive(Debug, Default)]
struct CallCount {
    total: u64,
    by_op: BTreeMap<String, u64>,
}

/// Calls a VM's backend keeps for post-mortems.
pub const VM_CALL_LOG_LEN: usize = 256;

impl EmulatedViommu {
    fn with_call_log(call_log_len: usize, log_data_path: bool) -> Self {
        EmulatedViommu {
            calls: VecDeque::new(),
            call_log_len,
            log_data_path,
            counts: BTreeMap::new(),
            vdevices: BTreeMap::new(),
            sid_slots: Vec::new(),
            vdevice_slots: None,
            smmu: EmulatedSmmu::default(),
        }
    }
}

/// A handle on one emulated vIOMMU. Clones share the same state.
#[derive(Clone, Debug)]
pub struct EmulatedBackend {
    viommu: Arc<Mutex<EmulatedViommu>>,
    /// Readable while the host side has events for the guest (an injected
    /// SMMU event, a VCMDQ error), like the iommufd backend's vEVENTQ fds,
    /// so the VMM's loop sleeps until then. `None` if no eventfd could be
    /// made: the VMM then polls.
    events_fd: Option<Arc<EventFd>>,
}

impl Default for EmulatedBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl EmulatedBackend {
    /// A vIOMMU that keeps a log of every call (tests, replay, fuzzing).
    pub fn new() -> Self {
        Self::with_viommu(EmulatedViommu::with_call_log(usize::MAX, true))
    }

    /// A vIOMMU that keeps the newest `len` calls of every kind, data path
    /// included: each VCMDQ command and each trapped batch is formatted
    /// into a [`BackendCall`] (a `Vec` and a `String` per argument). What a
    /// VM did before data-path calls were counted only; kept for a call log
    /// that must show commands, and as the benches' "log on" baseline.
    pub fn with_call_log(len: usize) -> Self {
        Self::with_viommu(EmulatedViommu::with_call_log(len, true))
    }

    /// A vIOMMU for a running VM: every call is counted; data-path calls
    /// (`vcmdq_exec`, `invalidate`) are only counted, which allocates
    /// nothing, and the newest [`VM_CALL_LOG_LEN`] control-path calls (STE
    /// installs, HW queues, vDEVICEs) are kept for post-mortems. The
    /// `emulated` debug log still prints every call when it is enabled.
    pub fn counting_only() -> Self {
        Self::with_viommu(EmulatedViommu::with_call_log(VM_CALL_LOG_LEN, false))
    }

    fn with_viommu(viommu: EmulatedViommu) -> Self {
        let events_fd = match EventFd::new(EFD_NONBLOCK) {
            Ok(fd) => Some(Arc::new(fd)),
            Err(e) => {
                log::warn!(target: "emulated", "no eventfd for host events ({e}): the VMM polls");
                None
            }
        };
        EmulatedBackend {
            viommu: Arc::new(Mutex::new(viommu)),
            events_fd,
        }
    }

    /// The fd that is readable while host events wait for the guest.
    pub fn events_fd(&self) -> Option<RawFd> {
        self.events_fd.as_ref().map(|fd| fd.as_raw_fd())
    }

    /// Announce host events on [`Self::events_fd`].
    pub(crate) fn notify_events(&self) {
        if let Some(fd) = &self.events_fd
            && let Err(e) = fd.write(1)
        {
            log::warn!(target: "emulated", "host event notification lost: {e}");
        }
    }

    /// Make [`Self::events_fd`] quiet again; call before draining the
    /// events it announced (an event queued after the reset wakes it again).
    pub fn reset_events_fd(&self) {
        if let Some(fd) = &self.events_fd {
            // EAGAIN: nothing was announced.
            let _ = fd.read();
        }
    }

    /// How many calls of each kind were made so far (`vcmdq_exec` also per
    /// opcode, as `vcmdq_exec:OP`).
    pub fn call_counts(&self) -> BTreeMap<String, u64> {
        let mut flat = BTreeMap::new();
        for (name, count) in &self.lock().counts {
            flat.insert((*name).to_string(), count.total);
            for (op, n) in &count.by_op {
                flat.insert(format!("{name}:{op}"), *n);
            }
        }
        flat
    }

    /// Lock the shared state. A poisoned lock means a panic elsewhere already
    /// broke the VM; the state itself is still consistent call by call, so
    /// keep going rather than panic twice.
    pub(crate) fn lock(&self) -> MutexGuard<'_, EmulatedViommu> {
        crate::lock_unpoisoned(&self.viommu)
    }

    /// Limit the number of vDEVICEs (CMD-QV: 1 << log2vsids SID slots).
    pub fn set_vdevice_slots(&self, slots: usize) {
        self.lock().vdevice_slots = Some(slots);
    }

    /// Record a backend call.
    pub fn record(&self, call: BackendCall) {
        self.lock().record(call);
    }

    /// Record a data-path call named `name` (with `op=` value `op`): counted
    /// without allocating, and built by `build` and logged only where a log
    /// wants it (a call log that keeps data-path calls, or the `emulated`
    /// debug log).
    pub fn record_data_path(
        &self,
        name: &'static str,
        op: Option<&'static str>,
        build: impl FnOnce() -> BackendCall,
    ) {
        let mut viommu = self.lock();
        if viommu.log_data_path || log::log_enabled!(target: "emulated", log::Level::Debug) {
            viommu.record(build());
        } else {
            viommu.count(name, op);
        }
    }

    /// True when data-path calls are built and logged (see
    /// [`Self::record_data_path`]); otherwise a caller may tally them itself
    /// and report them with [`Self::count_data_path`].
    pub fn logs_data_path(&self) -> bool {
        self.lock().log_data_path || log::log_enabled!(target: "emulated", log::Level::Debug)
    }

    /// Count `n` data-path calls named `name` per `op=` value, under one
    /// lock: what a caller that tallied its calls reports at once.
    pub fn count_data_path(&self, name: &'static str, ops: &[(&'static str, u64)]) {
        let mut viommu = self.lock();
        for &(op, n) in ops.iter().filter(|(_, n)| *n > 0) {
            viommu.count_n(name, Some(op), n);
        }
    }

    /// Take every call recorded so far.
    pub fn take_calls(&self) -> Vec<BackendCall> {
        std::mem::take(&mut self.lock().calls).into()
    }

    /// `IOMMU_VDEVICE_ALLOC`: register `vsid` for the device with `psid`.
    /// EEXIST for a vSID or device already registered, ENOSPC when every
    /// SID slot is taken.
    pub fn vdevice_alloc(&self, vsid: u32, psid: u32) -> Result<(), BackendError> {
        let mut viommu = self.lock();
        let result = viommu.vdevice_alloc(vsid, psid);
        let mut call = BackendCall::new("vdevice_alloc")
            .hex("vsid", u64::from(vsid))
            .hex("psid", u64::from(psid));
        if let Err(err) = &result {
            call = call.word("err", &err.errno.to_string());
        }
        viommu.record(call);
        result
    }

    /// `IOMMU_DESTROY` of the vDEVICE of `vsid` (the host side goes away,
    /// e.g. the device was unbound on the host). ENOENT when there is none.
    pub fn vdevice_destroy(&self, vsid: u32) -> Result<(), BackendError> {
        let mut viommu = self.lock();
        let result = match viommu.vdevices.remove(&vsid) {
            Some(_) => {
                viommu.free_sid_slot(vsid);
                Ok(())
            }
            None => Err(BackendError::new(
                Errno::NoEnt,
                format!("vSID {vsid:#x} has no vDEVICE"),
            )),
        };
        let mut call = BackendCall::new("vdevice_destroy").hex("vsid", u64::from(vsid));
        if let Err(err) = &result {
            call = call.word("err", &err.errno.to_string());
        }
        viommu.record(call);
        result
    }

    /// The physical StreamID registered for `vsid`, if any.
    pub fn vdevice_psid(&self, vsid: u32) -> Option<u32> {
        self.lock().vdevices.get(&vsid).copied()
    }

    /// Every registered (vSID, pSID) pair, in vSID order.
    pub fn vdevices(&self) -> Vec<(u32, u32)> {
        self.lock().vdevices.iter().map(|(v, p)| (*v, *p)).collect()
    }

    /// The vSID in each SID slot, in slot order (`None`: a free slot).
    pub fn sid_slots(&self) -> Vec<Option<u32>> {
        self.lock().sid_slots.clone()
    }
}

impl EmulatedViommu {
    fn record(&mut self, call: BackendCall) {
        log::debug!(target: "emulated", "{call}");
        let op = call
            .args
            .iter()
            .find(|(key, _)| *key == "op")
            .map(|(_, op)| op.as_str());
        self.count(call.name, op);
        if self.calls.len() >= self.call_log_len {
            self.calls.pop_front();
        }
        if self.call_log_len > 0 {
            self.calls.push_back(call);
        }
    }

    /// Count one call of kind `name` (and its `op`); allocates only the
    /// first time a kind or op is seen.
    fn count(&mut self, name: &'static str, op: Option<&str>) {
        self.count_n(name, op, 1);
    }

    fn count_n(&mut self, name: &'static str, op: Option<&str>, n: u64) {
        let count = self.counts.entry(name).or_default();
        count.total += n;
        if let Some(op) = op {
            match count.by_op.get_mut(op) {
                Some(total) => *total += n,
                None => {
                    count.by_op.insert(op.to_string(), n);
                }
            }
        }
    }

    fn vdevice_alloc(&mut self, vsid: u32, psid: u32) -> Result<(), BackendError> {
        if self.vdevices.contains_key(&vsid) {
            return Err(BackendError::new(
                Errno::Exist,
                format!("vSID {vsid:#x} is already registered"),
            ));
        }
        if self.vdevices.values().any(|p| *p == psid) {
            return Err(BackendError::new(
                Errno::Exist,
                format!("device with StreamID {psid:#x} already has a vDEVICE"),
            ));
        }
        if let Some(slots) = self.vdevice_slots
            && self.vdevices.len() >= slots
        {
            return Err(BackendError::new(
                Errno::NoSpc,
                format!("all {slots} SID slots of the VINTF are in use"),
            ));
        }
        self.vdevices.insert(vsid, psid);
        let slot = match self.sid_slots.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.sid_slots.push(None);
                self.sid_slots.len() - 1
            }
        };
        if let Some(entry) = self.sid_slots.get_mut(slot) {
            *entry = Some(vsid);
        }
        log::info!(target: "cmdqv", "SID slot {slot}: vSID {vsid:#x}");
        Ok(())
    }

    /// The vDEVICE of `vsid` went: its slot reads 0, the others stay put.
    fn free_sid_slot(&mut self, vsid: u32) {
        if let Some(slot) = self.sid_slots.iter().position(|s| *s == Some(vsid))
            && let Some(entry) = self.sid_slots.get_mut(slot)
        {
            *entry = None;
            log::info!(target: "cmdqv", "SID slot {slot}: free (vSID {vsid:#x} gone)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vdevice_alloc_rejects_duplicate_vsid_and_device() {
        let backend = EmulatedBackend::new();
        backend.vdevice_alloc(8, 0x100).unwrap();
        assert_eq!(
            backend.vdevice_alloc(8, 0x101).unwrap_err().errno,
            Errno::Exist
        );
        assert_eq!(
            backend.vdevice_alloc(9, 0x100).unwrap_err().errno,
            Errno::Exist
        );
        assert_eq!(backend.vdevice_psid(8), Some(0x100));
    }

    #[test]
    fn sid_slots_do_not_move_and_the_lowest_free_one_is_reused() {
        let backend = EmulatedBackend::new();
        backend.vdevice_alloc(8, 0x100).unwrap();
        backend.vdevice_alloc(16, 0x200).unwrap();
        backend.vdevice_alloc(4, 0x300).unwrap();
        assert_eq!(backend.sid_slots(), [Some(8), Some(16), Some(4)]);
        backend.vdevice_destroy(8).unwrap();
        assert_eq!(backend.sid_slots(), [None, Some(16), Some(4)]);
        backend.vdevice_alloc(32, 0x400).unwrap();
        assert_eq!(backend.sid_slots(), [Some(32), Some(16), Some(4)]);
    }

    #[test]
    fn vdevice_alloc_fails_when_sid_slots_are_full() {
        let backend = EmulatedBackend::new();
        backend.set_vdevice_slots(1);
        backend.vdevice_alloc(8, 0x100).unwrap();
        assert_eq!(
            backend.vdevice_alloc(16, 0x200).unwrap_err().errno,
            Errno::NoSpc
        );
    }

    #[test]
    fn a_vm_backend_counts_data_path_calls_without_building_them() {
        let backend = EmulatedBackend::counting_only();
        backend.vdevice_alloc(8, 0x100).unwrap();
        for _ in 0..3 {
            backend.record_data_path("vcmdq_exec", Some("CMD_SYNC"), || {
                // Only reachable when the emulated debug log is on.
                assert!(log::log_enabled!(target: "emulated", log::Level::Debug));
                BackendCall::new("vcmdq_exec").word("op", "CMD_SYNC")
            });
        }
        let counts = backend.call_counts();
        assert_eq!(counts.get("vcmdq_exec"), Some(&3));
        assert_eq!(counts.get("vcmdq_exec:CMD_SYNC"), Some(&3));
        let kept: Vec<String> = backend
            .take_calls()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            kept,
            ["vdevice_alloc vsid=0x8 psid=0x100"],
            "control path kept"
        );
    }

    #[test]
    fn tallied_data_path_calls_add_up_with_recorded_ones() {
        let backend = EmulatedBackend::counting_only();
        backend.record_data_path("vcmdq_exec", Some("CMD_SYNC"), || {
            BackendCall::new("vcmdq_exec").word("op", "CMD_SYNC")
        });
        backend.count_data_path(
            "vcmdq_exec",
            &[("CMD_SYNC", 2), ("TLBI_NH_VA", 5), ("ATC_INV", 0)],
        );
        let counts = backend.call_counts();
        assert_eq!(counts.get("vcmdq_exec"), Some(&8));
        assert_eq!(counts.get("vcmdq_exec:CMD_SYNC"), Some(&3));
        assert_eq!(counts.get("vcmdq_exec:TLBI_NH_VA"), Some(&5));
        assert_eq!(
            counts.get("vcmdq_exec:ATC_INV"),
            None,
            "zero is not a count"
        );
    }

    #[test]
    fn a_call_log_formats_data_path_calls_too() {
        let backend = EmulatedBackend::with_call_log(VM_CALL_LOG_LEN);
        backend.record_data_path("vcmdq_exec", Some("TLBI_NH_VA"), || {
            BackendCall::new("vcmdq_exec").word("op", "TLBI_NH_VA")
        });
        assert_eq!(backend.take_calls().len(), 1);
        assert_eq!(backend.call_counts().get("vcmdq_exec:TLBI_NH_VA"), Some(&1));
    }

    #[test]
    fn a_call_log_counts_every_call_and_keeps_only_the_newest() {
        let backend = EmulatedBackend::with_call_log(VM_CALL_LOG_LEN);
        backend.vdevice_alloc(8, 0x100).unwrap();
        for _ in 0..VM_CALL_LOG_LEN {
            backend.record(BackendCall::new("vcmdq_exec").word("op", "CMD_SYNC"));
        }
        backend.record(BackendCall::new("vcmdq_exec").word("op", "CMD_SYNC"));
        let kept = backend.take_calls();
        assert_eq!(kept.len(), VM_CALL_LOG_LEN);
        assert!(
            kept.iter().all(|c| c.name == "vcmdq_exec"),
            "the oldest call went first"
        );
        let counts = backend.call_counts();
        assert_eq!(counts.get("vdevice_alloc"), Some(&1));
        let n = VM_CALL_LOG_LEN as u64 + 1;
        assert_eq!(counts.get("vcmdq_exec"), Some(&n));
        assert_eq!(counts.get("vcmdq_exec:CMD_SYNC"), Some(&n));
    }

    #[test]
    fn calls_are_recorded_in_order_with_errors() {
        let backend = EmulatedBackend::new();
        backend.vdevice_alloc(8, 0x100).unwrap();
        backend.vdevice_alloc(8, 0x100).unwrap_err();
        let calls: Vec<String> = backend
            .take_calls()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            calls,
            [
                "vdevice_alloc vsid=0x8 psid=0x100",
                "vdevice_alloc vsid=0x8 psid=0x100 err=EEXIST"
            ]
        );
        assert!(backend.take_calls().is_empty());
    }
}
