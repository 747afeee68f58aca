//! The NVIDIA Tegra241 CMDQ-V model: one VINTF (VINTF0) of logical VCMDQs
//! that a guest's arm-smmu-v3 driver drives directly, backed by a host
//! VINTF through [`CmdqvBackend`].
//!
//! Implements, over the 0x50000 window (offsets relative to the window):
//! - the config page: CONFIG (QEMU's reset value 0x00020083 with CMDQV_EN
//!   set, every field kept) and the STATUS enable handshake, PARAM (host info with
//!   NUM_VINTF_LOG2 = 0 and min(host, VM) VCMDQ and SID counts), VI_ERR_MAP,
//!   VI_INT_MASK, CMDQ_ERR_MAP, CMDQ_ALLOC_MAP, and the VINTF0 block
//!   (CONFIG with HYP_OWN wired to 0, STATUS, SID_MATCH/SID_REPLACE
//!   read-back of the VM's vDEVICEs, LVCMDQ_ERR_MAP);
//! - VINTF0 page1 (and its global alias at 0x20000), always trapped: a
//!   queue gets a host HW queue exactly while BASE != 0, its CMDQ_ALLOC_MAP
//!   entry is ALLOCATED for VINTF0, CONFIG.CMDQV_EN and VINTF0 CONFIG.EN
//!   hold (QEMU's rule), after the kernel's checks pass in the model;
//! - VINTF0 page0 (and its global alias at 0x10000): forwarded to the
//!   backend while VINTF0 is enabled ("live"), in the model's register cache
//!   otherwise; in mapped mode the VMM installs the host page0 while live
//!   (see [`Page0Event`]) and the model only sees alias accesses;
//! - host error events mirrored into the error maps + the CMD-QV interrupt.
//!
//! Deliberately not implemented: more than one VINTF; remapping global
//! VCMDQ q to another LVCMDQ (CMDQ_ALLOC_MAP must say VINTF 0, LVCMDQ q);
//! CONS_INDX_BASE write-back (stored only); guest writes to SID_MATCH /
//! SID_REPLACE (the host owns them; ignored). SID_REPLACE reads the vSID,
//! not the host pSID: the guest's StreamID space is the vSID space and the
//! host's StreamIDs are none of its business.
//!
//! CMDQ_INIT_ERR (VCMDQ GERROR bit 2, QEMU tegra241-cmdqv.h) is raised by
//! the model when it refuses a BASE and cleared when the queue later gets
//! its HW queue, as QEMU does: a 64-bit BASE written as two 32-bit halves
//! is checked after each half, so the first half alone may be refused and
//! the second complete it; LVCMDQ q written before q-1 is deferred with the
//! bit set and allocated once q-1 has its queue. Host hardware cannot show
//! it, so it is
//! an overlay on GERROR reads the model serves (trapped page0, the global
//! alias, the register cache); in mapped mode a guest reading the mapped
//! VINTF0 page0 sees only STATUS.ENABLED staying 0.

pub mod backend;
pub mod regs;
pub mod vcmdq;
pub mod vintf;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use vm_device::MutDeviceMmio;
use vm_device::bus::{MmioAddress, MmioAddressOffset};

pub use backend::{CmdqvBackend, CmdqvHostInfo, Page0Mode};
use regs::*;
use vcmdq::{QueueBase, Vcmdq};
use vintf::{ConfigEffect, ConfigPage};

use crate::GuestMemory;
use crate::irq::{InterruptSink, IrqLine};
use crate::regs::{extract_read, merge_write};

/// What the VM asks of its CMD-QV (each capped by the host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdqvConfig {
    /// log2 of the VCMDQs the guest sees (QEMU: 1, i.e. 2 queues).
    pub log2vcmdqs: u8,
    /// log2 of the SID slots the guest sees (QEMU: 4, i.e. 16 devices).
    pub log2vsids: u8,
    /// The IDR1.CMDQS the guest's vSMMU shows: Linux sizes its VCMDQs from
    /// it, and a VCMDQ above it (or above the host's) is refused with
    /// CMDQ_INIT_ERR. The vSMMU caps it to what one page of guest RAM
    /// holds contiguously (see `smmuv3::VsmmuConfig::ram_page_size`).
    pub cmdqs: u8,
}

impl Default for CmdqvConfig {
    fn default() -> Self {
        CmdqvConfig {
            log2vcmdqs: 1,
            log2vsids: 4,
            cmdqs: 19,
        }
    }
}

/// Errors building or wiring a CMD-QV.
#[derive(Debug, thiserror::Error)]
pub enum CmdqvError {
    /// More vDEVICEs than the VINTF has SID_MATCH slots.
    #[error("{count} devices behind the vSMMU but the CMD-QV VINTF has only {limit} SID slots")]
    TooManyDevices { count: usize, limit: usize },
    /// The host's CMD-QV version is not the one this model speaks.
    #[error("host CMD-QV version {0} is not supported (only version 1)")]
    UnsupportedVersion(u8),
}

/// When the VMM must install or remove the host page0 at the VINTF0 page0
/// offset of the window (mapped mode only).
#[derive(Clone, Debug)]
pub enum Page0Event {
    /// Install `region` (the backend's page0 mapping, shared) as a memory
    /// slot at window offset `offset`.
    Map {
        offset: u64,
        region: Arc<crate::mapping::Mapping>,
    },
    /// Remove the memory slot at window offset `offset`; delivered before
    /// any HW queue is freed.
    Unmap { offset: u64 },
}

/// Receives [`Page0Event`]s synchronously, inside the MMIO write that
/// caused them.
pub type Page0Listener = Box<dyn FnMut(Page0Event) + Send>;

/// Check that `count` devices fit the `limit` SID slots of the VINTF.
pub fn check_sid_slots(count: usize, limit: usize) -> Result<(), CmdqvError> {
    if count > limit {
        return Err(CmdqvError::TooManyDevices { count, limit });
    }
    Ok(())
}

/// The CMD-QV device model.
pub struct Cmdqv {
    backend: Box<dyn CmdqvBackend>,
    mem: GuestMemory,
    irq: Arc<dyn InterruptSink>,
    /// Largest VCMDQ, log2 entries: the guest's IDR1.CMDQS capped by the
    /// host's (the kernel's limit).
    max_cmdqs: u8,
    page: ConfigPage,
    queues: Vec<Vcmdq>,
    page0_live: bool,
    listener: Option<Page0Listener>,
    guest_errors: Option<crate::guest_error::GuestErrorListener>,
    error_events: u64,
    hw_queue_allocs: u64,
    hw_queue_frees: u64,
}

impl Cmdqv {
    /// A CMD-QV over `backend`, reading guest RAM through `mem`.
    pub fn new(
        backend: Box<dyn CmdqvBackend>,
        mem: GuestMemory,
        irq: Arc<dyn InterruptSink>,
        config: CmdqvConfig,
    ) -> Result<Self, CmdqvError> {
        let info = backend.info();
        if info.version != 1 {
            return Err(CmdqvError::UnsupportedVersion(info.version));
        }
        let log2vcmdqs = info.log2vcmdqs.min(config.log2vcmdqs).min(7);
        let log2vsids = info.log2vsids.min(config.log2vsids).min(4);
        let param = PARAM_VER.make(u64::from(info.version))
            | PARAM_NUM_VCMDQ_LOG2.make(u64::from(log2vcmdqs))
            | PARAM_NUM_VINTF_LOG2.make(0)
            | PARAM_NUM_SID_LOG2.make(u64::from(log2vsids));
        let num_lvcmdqs = 1usize << log2vcmdqs;
        let max_cmdqs = info.cmdqs.min(config.cmdqs);
        log::info!(target: "cmdqv", "PARAM={param:#x}: {num_lvcmdqs} VCMDQs of up to {:#x} bytes \
            (CMDQS {max_cmdqs}: guest {}, host {}), {} SID slots",
            16u64 << max_cmdqs, config.cmdqs, info.cmdqs, 1 << log2vsids);
        Ok(Cmdqv {
            backend,
            mem,
            irq,
            max_cmdqs,
            page: ConfigPage::new(param as u32, num_lvcmdqs),
            queues: vec![Vcmdq::default(); num_lvcmdqs],
            page0_live: false,
            listener: None,
            guest_errors: None,
            error_events: 0,
            hw_queue_allocs: 0,
            hw_queue_frees: 0,
        })
    }

    /// Number of logical VCMDQs the guest sees.
    pub fn num_lvcmdqs(&self) -> usize {
        self.queues.len()
    }

    /// Number of SID slots the guest sees (= vDEVICEs the VM may register).
    pub fn sid_slots(&self) -> usize {
        1 << PARAM_NUM_SID_LOG2.get(u64::from(self.param()))
    }

    fn param(&self) -> u32 {
        let mut data = [0u8; 4];
        self.page.read(PARAM.offset, &mut data, &[]);
        u32::from_le_bytes(data)
    }

    /// VM build check: every device behind the vSMMU needs a SID slot.
    pub fn check_device_count(&self, count: usize) -> Result<(), CmdqvError> {
        check_sid_slots(count, self.sid_slots())
    }

    /// Where the VMM learns when to install/remove the page0 memory slot.
    pub fn set_page0_listener(&mut self, listener: Page0Listener) {
        self.listener = Some(listener);
    }

    /// Report the errors this model raises itself (CMDQ_INIT_ERR) to
    /// `listener`; the host's queue errors come from the backend.
    pub fn set_guest_error_listener(&mut self, listener: crate::guest_error::GuestErrorListener) {
        self.guest_errors = Some(listener);
    }

    /// VM reset: page0 leaves the guest, HW queues are freed (descending),
    /// every register returns to its reset value. A HW queue the host
    /// would not free stays owned and is freed at the next change.
    pub fn reset(&mut self) {
        log::info!(target: "cmdqv", "reset");
        self.teardown();
        self.page = ConfigPage::new(self.param(), self.queues.len());
        for queue in &mut self.queues {
            let held = queue.allocated;
            *queue = Vcmdq::default();
            queue.allocated = held;
        }
    }

    /// VM shutdown: page0 leaves the guest, HW queues are freed. Idempotent.
    pub fn shutdown(&mut self) {
        self.teardown();
    }

    /// Mirror host error events (vEVENTQ TEGRA241_CMDQV) into the
    /// guest-visible error maps and pulse the CMD-QV interrupt unless
    /// VI_INT_MASK masks VINTF0. Call when the backend signals an event.
    pub fn poll_host_errors(&mut self) {
        while let Some(map) = self.backend.poll_error_event() {
            let queue_bits = if self.queues.len() >= 128 {
                u128::MAX
            } else {
                (1u128 << self.queues.len()) - 1
            };
            let err_map = (u128::from(map[0]) | (u128::from(map[1]) << 64)) & queue_bits;
            crate::guest_log!(warn, target: "cmdqv", "host error event: LVCMDQ_ERR_MAP={err_map:#x}");
            self.page.lvcmdq_err_map = err_map;
            if err_map == 0 {
                continue;
            }
            self.error_events = self.error_events.saturating_add(1);
            if self.page.vintf0_irq_masked() {
                log::debug!(target: "cmdqv", "CMD-QV interrupt masked by VI_INT_MASK");
            } else {
                self.irq.trigger(IrqLine::Cmdqv);
            }
        }
    }

    /// Host queue-error events mirrored into the guest's error maps since
    /// the model was built.
    pub fn error_events_delivered(&self) -> u64 {
        self.error_events
    }

    /// HW queues: (held by the host now, successful allocations, successful
    /// frees) since the model was built. Only what the host accepted
    /// counts: a refused BASE or a failed free changes nothing here (the
    /// backend's ioctl counts include the failures).
    pub fn hw_queue_stats(&self) -> (u64, u64, u64) {
        let held = self.queues.iter().filter(|q| q.allocated.is_some()).count() as u64;
        (held, self.hw_queue_allocs, self.hw_queue_frees)
    }

    /// Clear error-map bits of queues whose error the guest acknowledged.
    fn refresh_err_map(&mut self) {
        for q in 0..self.queues.len().min(128) {
            let bit = 1u128 << q;
            if self.page.lvcmdq_err_map & bit != 0 {
                let gerror = self.page0_value(q, VCMDQ_GERROR.offset);
                let gerrorn = self.page0_value(q, VCMDQ_GERRORN.offset);
                if (gerror ^ gerrorn) as u64 & GERROR_CMDQ_ERR.mask() == 0 {
                    self.page.lvcmdq_err_map &= !bit;
                }
            }
        }
    }

    fn log_unknown(&self, what: &str, offset: u64, len: usize) {
        crate::guest_log!(warn, target: "cmdqv", "{what} of {len} bytes at unknown offset {offset:#x}: RAZ/WI");
    }

    // ---- page0 ----

    /// A page0 register of queue `q` as the guest reads it.
    fn page0_value(&mut self, q: usize, reg_offset: u64) -> u32 {
        let Some(queue) = self.queues.get(q) else {
            return 0;
        };
        if !self.page0_live {
            return queue.cache_read(reg_offset);
        }
        let overlay = if reg_offset == VCMDQ_GERROR.offset {
            queue.gerror_overlay()
        } else {
            0
        };
        self.backend
            .page0_read(q as u64 * VCMDQ_STRIDE + reg_offset)
            ^ overlay
    }

    fn page0_access(&mut self, offset_in_page: u64, read: Option<&mut [u8]>, write: &[u8]) {
        let q = (offset_in_page / VCMDQ_STRIDE) as usize;
        let in_slot = offset_in_page % VCMDQ_STRIDE;
        let reg_offset = in_slot & !3;
        if q >= self.queues.len() || page0_reg(reg_offset).is_none() {
            let len = read.as_ref().map_or(write.len(), |d| d.len());
            return self.log_unknown("page0 access", offset_in_page, len);
        }
        let at = in_slot - reg_offset;
        let current = self.page0_value(q, reg_offset);
        if let Some(data) = read {
            if !extract_read(u64::from(current), 4, at, data) {
                self.log_unknown("page0 read", offset_in_page, data.len());
            }
            return;
        }
        let Some(value) = merge_write(u64::from(current), 4, at, write) else {
            return self.log_unknown("page0 write", offset_in_page, write.len());
        };
        let value = value as u32;
        log::debug!(target: "cmdqv", "vcmdq {q} page0 {:#x} <- {value:#x}", reg_offset);
        let slot = q as u64 * VCMDQ_STRIDE;
        let live_gerror = (self.page0_live && reg_offset == VCMDQ_GERRORN.offset)
            .then(|| self.backend.page0_read(slot + VCMDQ_GERROR.offset));
        if let Some(queue) = self.queues.get_mut(q) {
            match live_gerror {
                Some(gerror) => queue.cache_acknowledge(gerror, value),
                None => queue.cache_write(reg_offset, value),
            }
        }
        if self.page0_live {
            self.backend
                .page0_write(q as u64 * VCMDQ_STRIDE + reg_offset, value);
            self.poll_host_errors();
        }
    }

    // ---- page1 ----

    fn page1_access(&mut self, offset_in_page: u64, read: Option<&mut [u8]>, write: &[u8]) {
        let q = (offset_in_page / VCMDQ_STRIDE) as usize;
        let in_slot = offset_in_page % VCMDQ_STRIDE;
        let Some(queue) = self.queues.get_mut(q) else {
            let len = read.as_ref().map_or(write.len(), |d| d.len());
            return self.log_unknown("page1 access", offset_in_page, len);
        };
        let Some((reg, at)) = vcmdq::page1_reg(in_slot) else {
            let len = read.as_ref().map_or(write.len(), |d| d.len());
            return self.log_unknown("page1 access", offset_in_page, len);
        };
        let old = if reg.offset == VCMDQ_BASE.offset {
            queue.base
        } else {
            queue.cons_indx_base
        };
        if let Some(data) = read {
            if !extract_read(old, reg.size, at, data) {
                self.log_unknown("page1 read", offset_in_page, data.len());
            }
            return;
        }
        let Some(value) = merge_write(old, reg.size, at, write) else {
            return self.log_unknown("page1 write", offset_in_page, write.len());
        };
        if queue.page1_write(reg.offset, value) {
            log::info!(target: "cmdqv", "vcmdq {q} BASE={:#x}", queue.base);
            queue.refused_base = None;
            self.sync();
        }
    }

    // ---- HW queue lifecycle ----

    /// Bring the host state in line with the guest registers.
    fn sync(&mut self) {
        let want_live = self.page.cmdqv_enabled() && self.page.vintf_enabled();
        if !want_live {
            if self.page0_live || self.queues.iter().any(|q| q.allocated.is_some()) {
                self.teardown();
            }
            return;
        }
        if !self.page0_live {
            self.page0_live = true;
            log::info!(target: "cmdqv", "VINTF0 page0 live");
            if let Page0Mode::Mapped(region) = self.backend.page0_mode() {
                self.notify(Page0Event::Map {
                    offset: VINTF0_PAGE0,
                    region,
                });
            }
        }
        self.reconcile();
    }

    /// The BASE a queue should have a HW queue for, if any.
    fn wanted_base(&self, q: usize) -> Option<u64> {
        let base = self.queues.get(q)?.base;
        (self.page0_live && self.page.lvcmdq_mapped(q) && base != 0).then_some(base)
    }

    fn reconcile(&mut self) {
        let stale = (0..self.queues.len()).find(|&q| {
            self.queues
                .get(q)
                .and_then(|v| v.allocated)
                .is_some_and(|a| self.wanted_base(q) != Some(a.gpa | u64::from(a.log2size)))
        });
        if let Some(lowest) = stale
            && !self.free_queues_from(lowest)
        {
            // An index still held by the host would be EEXIST.
            return;
        }
        for q in 0..self.queues.len() {
            let Some(queue) = self.queues.get(q) else {
                continue;
            };
            if let Some(base) = self.wanted_base(q)
                && queue.allocated.is_none()
                && queue.refused_base != Some(base)
            {
                self.alloc_queue(q, base);
            }
        }
    }

    /// Ascending rule: LVCMDQ q gets a HW queue only after q-1 has one.
    fn alloc_queue(&mut self, q: usize, base: u64) {
        if q > 0
            && self
                .queues
                .get(q - 1)
                .is_none_or(|prev| prev.allocated.is_none())
        {
            // Not remembered: retried once q-1 gets its HW queue.
            let reason = format!("LVCMDQ {q} needs LVCMDQ {} allocated first", q - 1);
            return self.refuse(q, base, &reason, false);
        }
        let parsed = match QueueBase::parse(base, self.max_cmdqs, &self.mem) {
            Ok(parsed) => parsed,
            Err(e) => return self.refuse(q, base, &e.to_string(), true),
        };
        if let Err(e) = self
            .backend
            .hw_queue_alloc(q as u32, parsed.gpa, parsed.len_bytes())
        {
            return self.refuse(q, base, &e.to_string(), true);
        }
        self.hw_queue_allocs = self.hw_queue_allocs.saturating_add(1);
        log::info!(
            target: "cmdqv",
            "hw_queue_alloc index={q} gpa={:#x} len={:#x}",
            parsed.gpa,
            parsed.len_bytes()
        );
        let Some(queue) = self.queues.get_mut(q) else {
            return;
        };
        queue.allocated = Some(parsed);
        // Like QEMU: what the guest wrote before the queue existed reaches
        // the host page0 now, over the kernel's reset of the queue; what it
        // did not write keeps the reset value.
        let slot = q as u64 * VCMDQ_STRIDE;
        let host_gerror = self.backend.page0_read(slot + VCMDQ_GERROR.offset);
        for (reg_offset, value) in queue.restore_values(host_gerror) {
            self.backend.page0_write(slot + reg_offset, value);
        }
        // A refused BASE (half of a 64-bit BASE written as two words, or a
        // queue deferred until q-1 had one) is not an error any more.
        let gerror = self.backend.page0_read(slot + VCMDQ_GERROR.offset);
        let gerrorn = self.backend.page0_read(slot + VCMDQ_GERRORN.offset);
        if let Some(queue) = self.queues.get_mut(q)
            && queue.clear_init_err(gerror, gerrorn)
        {
            log::info!(target: "cmdqv", "vcmdq {q} GERROR.CMDQ_INIT_ERR cleared: HW queue allocated");
        }
        self.poll_host_errors();
    }

    fn refuse(&mut self, q: usize, base: u64, reason: &str, remember: bool) {
        crate::guest_log!(warn, target: "cmdqv", "vcmdq {q} BASE={base:#x} refused: {reason}; GERROR.CMDQ_INIT_ERR");
        if let Some(listener) = &mut self.guest_errors {
            listener(crate::guest_error::GuestError {
                kind: "CMDQ_INIT_ERR",
                queue: u32::try_from(q).ok(),
                vsid: None,
            });
        }
        let (gerror, gerrorn) = if self.page0_live {
            let slot = q as u64 * VCMDQ_STRIDE;
            (
                self.backend.page0_read(slot + VCMDQ_GERROR.offset),
                self.backend.page0_read(slot + VCMDQ_GERRORN.offset),
            )
        } else {
            let queue = self.queues.get(q);
            (
                queue.map_or(0, |v| v.cache_raw(VCMDQ_GERROR.offset)),
                queue.map_or(0, |v| v.cache_raw(VCMDQ_GERRORN.offset)),
            )
        };
        if let Some(queue) = self.queues.get_mut(q) {
            queue.raise_init_err(gerror, gerrorn);
            if remember {
                queue.refused_base = Some(base);
            }
        }
    }

    /// Descending rule: HW queues are freed from the highest index down
    /// (the kernel refuses to free q while q+1 exists, EBUSY).
    ///
    /// A queue the host does not free stays `allocated`: the host still
    /// holds it (allocating its index again would be EEXIST), and so do the
    /// queues below it (EBUSY). False then; the next sync tries again.
    fn free_queues_from(&mut self, lowest: usize) -> bool {
        for q in (lowest..self.queues.len()).rev() {
            if self.queues.get(q).is_none_or(|v| v.allocated.is_none()) {
                continue;
            }
            self.snapshot_page0(q);
            if let Err(e) = self.backend.hw_queue_free(q as u32) {
                log::error!(target: "cmdqv", "hw_queue_free index={q} failed: {e}; the HW queue stays \
                    (and those below it), freed at the next change");
                return false;
            }
            self.hw_queue_frees = self.hw_queue_frees.saturating_add(1);
            log::info!(target: "cmdqv", "hw_queue_free index={q}");
            if let Some(queue) = self.queues.get_mut(q) {
                queue.allocated = None;
            }
        }
        true
    }

    /// Keep the live page0 values of `q` in the cache before its HW queue
    /// goes, so a later re-allocation flushes what the guest last had.
    fn snapshot_page0(&mut self, q: usize) {
        if !self.page0_live {
            return;
        }
        let slot = q as u64 * VCMDQ_STRIDE;
        let values: Vec<(u64, u32)> = PAGE0_REGS
            .iter()
            .map(|r| (r.offset, self.backend.page0_read(slot + r.offset)))
            .collect();
        if let Some(queue) = self.queues.get_mut(q) {
            for (offset, value) in values {
                queue.cache_store(offset, value);
            }
            queue.clear_status();
        }
    }

    /// Teardown order: page0 leaves the guest first, then HW queues are
    /// freed in descending order.
    fn teardown(&mut self) {
        if self.page0_live
            && let Page0Mode::Mapped(_) = self.backend.page0_mode()
        {
            self.notify(Page0Event::Unmap {
                offset: VINTF0_PAGE0,
            });
        }
        // A queue left allocated is freed by the next sync (it finds one).
        let _ = self.free_queues_from(0);
        if self.page0_live {
            log::info!(target: "cmdqv", "VINTF0 page0 not live");
        }
        self.page0_live = false;
        for queue in &mut self.queues {
            queue.refused_base = None;
            queue.clear_status();
        }
    }

    fn notify(&mut self, event: Page0Event) {
        log::info!(target: "cmdqv", "page0 {event:?}");
        if let Some(listener) = self.listener.as_mut() {
            listener(event);
        }
    }

    // ---- MMIO dispatch ----

    /// A guest read of `data.len()` bytes at `offset` in the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let in_page = offset % PAGE_SIZE;
        match offset / PAGE_SIZE {
            0 => {
                self.refresh_err_map();
                let sid_slots = self.backend.sid_slots();
                if !self.page.read(in_page, data, &sid_slots) {
                    self.log_unknown("config read", offset, data.len());
                }
            }
            1 | 3 => self.page0_access(in_page, Some(data), &[]),
            2 | 4 => self.page1_access(in_page, Some(data), &[]),
            _ => self.log_unknown("read", offset, data.len()),
        }
    }

    /// A guest write of `data` at `offset` in the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let in_page = offset % PAGE_SIZE;
        match offset / PAGE_SIZE {
            0 => match self.page.write(in_page, data) {
                Some(ConfigEffect::None) => {}
                Some(_) => self.sync(),
                None => self.log_unknown("config write", offset, data.len()),
            },
            1 | 3 => self.page0_access(in_page, None, data),
            2 | 4 => self.page1_access(in_page, None, data),
            _ => self.log_unknown("write", offset, data.len()),
        }
    }
}

impl Drop for Cmdqv {
    fn drop(&mut self) {
        self.teardown();
    }
}

impl MutDeviceMmio for Cmdqv {
    fn mmio_read(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        self.read(offset, data);
    }

    fn mmio_write(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        self.write(offset, data);
    }
}
