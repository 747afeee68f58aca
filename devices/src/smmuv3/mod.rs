//! The virtual ARM SMMUv3 in nested mode (Arm IHI 0070).
//!
//! The guest owns stage 1 (CD tables, page tables); the host owns stage 2.
//! This model traps the SMMU's 128 KiB register window and:
//! - presents ID registers composed from the host SMMU ([`idr`]);
//! - consumes the trapped command queue on CMDQ_PROD writes ([`cmdq`]):
//!   CFGI_STE* become STE installs on the backend, TLBI/ATC_INV/CFGI_CD*
//!   become ONE batched invalidation per CMD_SYNC, errors become CMDQ_CONS.ERR
//!   plus GERROR.CMDQ_ERR exactly as hardware reports them;
//! - walks linear and two-level stream tables, one STE per lookup ([`ste`]);
//! - writes host and model events into the guest event queue ([`evtq`]);
//! - signals the event queue and global errors through their IRQ_CFG MSI
//!   doorbells when the VM advertises IDR0.MSI (`VsmmuConfig::msi`, which
//!   the VMM sets) and the guest programmed one, the wired GSIVs otherwise;
//!   a CMD_SYNC with SIG_IRQ writes its MSI payload (to RAM or a doorbell).
//!
//! Deliberately not implemented: stage 2 (IDR0.S2P = 0), PRI and the PRI
//! queue (RAZ/WI), stalls,
//! HTTU/BTM, secure state, VATOS, SMMU_STATUSR, the IMPDEF areas. Any
//! offset the model does not know reads as zero and ignores writes, with a
//! rate-limited log line.

pub mod backend;
pub mod cmd;
pub mod cmdq;
pub mod evtq;
pub mod idr;
pub mod queue;
pub mod regs;
pub mod s1walk;
pub mod ste;

use std::collections::BTreeMap;
use std::sync::Arc;

use vm_device::MutDeviceMmio;
use vm_device::bus::{MmioAddress, MmioAddressOffset};

pub use backend::{HOST_INVALIDATE_CHUNK, InvalidateError, InvalidateOutcome, VsmmuBackend};
pub use idr::{HostChoice, HostSmmuInfo, IdRegisters, IdrError, VsmmuConfig};
pub use ste::{NestedSte, SteConfig};

use crate::GuestMemory;
use crate::backend::BackendError;
use crate::irq::{InterruptSink, IrqLine};
use crate::regs::{Access, extract_read, merge_write};
use regs::{Reg, cmdq as cmdq_reg, cr0, gbpa, gerror, irq_ctrl};

/// Why a vSMMU could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Smmuv3Error {
    /// The host's hardware info could not be read.
    #[error("reading host SMMU info: {0}")]
    HwInfo(#[source] BackendError),
    /// The host SMMU or the VM configuration cannot give the guest an SMMU.
    #[error(transparent)]
    Idr(#[from] IdrError),
}

/// The guest-writable register state. `Default` is the power-on state
/// except GBPA, see [`RegState::power_on`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RegState {
    cr0: u64,
    cr1: u64,
    cr2: u64,
    gbpa: u64,
    irq_ctrl: u64,
    gerror: u64,
    gerrorn: u64,
    gerror_irq_cfg0: u64,
    gerror_irq_cfg1: u64,
    gerror_irq_cfg2: u64,
    strtab_base: u64,
    strtab_base_cfg: u64,
    cmdq_base: u64,
    cmdq_prod: u64,
    /// CMDQ_CONS.RD only; ERR is kept in `cmdq_err`.
    cmdq_cons: u64,
    cmdq_err: u64,
    /// A host CMD_SYNC after this queue's invalidations timed out
    /// (ETIMEDOUT: an ATC invalidation the device did not complete); the
    /// guest's next CMD_SYNC stops with CERROR_ATC_INV_SYNC. Not a register.
    atc_sync_timeout: bool,
    evtq_base: u64,
    evtq_prod: u64,
    evtq_cons: u64,
    evtq_irq_cfg0: u64,
    evtq_irq_cfg1: u64,
    evtq_irq_cfg2: u64,
}

impl RegState {
    fn power_on() -> Self {
        RegState {
            gbpa: regs::reset_value(Reg::Gbpa),
            ..RegState::default()
        }
    }
}

/// A virtual SMMUv3 bound to one host vIOMMU backend.
pub struct Smmuv3 {
    idr: IdRegisters,
    state: RegState,
    /// Registered endpoints (vSIDs with a vDEVICE) and the STE last
    /// installed for each, so an unchanged STE is not re-installed.
    streams: BTreeMap<u32, Option<NestedSte>>,
    backend: Box<dyn VsmmuBackend>,
    mem: GuestMemory,
    irq: Arc<dyn InterruptSink>,
    stats: CmdqStats,
    /// The pending invalidations of a command queue consume, kept between
    /// consumes so a batch costs no allocation once it has grown.
    batch: cmdq::Batch,
    events_delivered: u64,
    /// Refused STEs after which the device could not be put on abort
    /// either, so it may still use its previous translation.
    abort_fallback_failures: u64,
    guest_errors: Option<crate::guest_error::GuestErrorListener>,
}

/// What the trapped command queue has done (VM statistics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CmdqStats {
    /// Commands consumed.
    pub commands: u64,
    /// CMD_SYNCs among them.
    pub syncs: u64,
}

impl std::fmt::Debug for Smmuv3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smmuv3")
            .field("idr", &self.idr)
            .field("state", &self.state)
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

impl Smmuv3 {
    /// Build a vSMMU: read the host SMMU's info from `backend` and compose
    /// the guest ID registers with `config`.
    pub fn new(
        config: &VsmmuConfig,
        backend: Box<dyn VsmmuBackend>,
        mem: GuestMemory,
        irq: Arc<dyn InterruptSink>,
    ) -> Result<Self, Smmuv3Error> {
        let host = backend.hw_info().map_err(Smmuv3Error::HwInfo)?;
        let idr = IdRegisters::compose(&host, config)?;
        log::info!(target: "smmuv3", "vSMMU IDR0 {:#x} IDR1 {:#x} IDR3 {:#x} IDR5 {:#x}",
            idr.idr[0], idr.idr[1], idr.idr[3], idr.idr[5]);
        log::info!(
            target: "smmuv3",
            "IDR1.CMDQS {} (host {}): command queues and VCMDQs up to {:#x} bytes, one {:#x}-byte \
             page of guest RAM",
            idr.cmdq_log2size(),
            regs::idr1::CMDQS.get(u64::from(host.idr[1])),
            16u64 << idr.cmdq_log2size(),
            config.ram_page_size
        );
        Ok(Smmuv3 {
            idr,
            state: RegState::power_on(),
            streams: BTreeMap::new(),
            backend,
            mem,
            irq,
            stats: CmdqStats::default(),
            batch: cmdq::Batch::default(),
            events_delivered: 0,
            abort_fallback_failures: 0,
            guest_errors: None,
        })
    }

    /// Commands and CMD_SYNCs the trapped queue consumed since the model was built.
    pub fn cmdq_stats(&self) -> CmdqStats {
        self.stats
    }

    /// Event records written into the guest's event queue since the model
    /// was built.
    pub fn events_delivered(&self) -> u64 {
        self.events_delivered
    }

    /// STE refusals after which the host would not put the device on
    /// abort either (each one logged as an error): such a device may still
    /// translate as before while the guest believes it aborts.
    pub fn abort_fallback_failures(&self) -> u64 {
        self.abort_fallback_failures
    }

    /// The guest-visible ID registers.
    pub fn id_registers(&self) -> &IdRegisters {
        &self.idr
    }

    /// Declare an endpoint behind this vSMMU. The VMM calls it after
    /// `IOMMU_VDEVICE_ALLOC` for the device; the device immediately gets
    /// the STE the current state selects (GBPA while SMMUEN = 0).
    pub fn register_stream(&mut self, vsid: u32) {
        self.streams.insert(vsid, None);
        log::debug!(target: "smmuv3", "endpoint vSID {vsid:#x} registered");
        self.apply_ste(vsid);
    }

    /// Back to power-on values (VM reset). Registered endpoints stay; they
    /// get the power-on translation (GBPA: bypass) again.
    pub fn reset(&mut self) {
        log::info!(target: "smmuv3", "reset");
        self.state = RegState::power_on();
        for last in self.streams.values_mut() {
            *last = None;
        }
        self.apply_all_stes();
    }

    /// Handle a guest read of `data.len()` bytes at `offset` in the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        let Some((reg, inside)) = Reg::find(offset, data.len()) else {
            self.bad_access("read", offset, data.len());
            data.fill(0);
            return;
        };
        let decl = reg.decl();
        let value = self.read_reg(reg);
        if !extract_read(value, decl.size, inside, data) {
            data.fill(0);
        }
        log::trace!(target: "smmuv3", "read {} +{inside} = {value:#x}", decl.name);
    }

    /// Handle a guest write of `data.len()` bytes at `offset` in the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let Some((reg, inside)) = Reg::find(offset, data.len()) else {
            self.bad_access("write", offset, data.len());
            return;
        };
        let decl = reg.decl();
        if decl.access != Access::Rw {
            self.ignored(reg, "read-only or RAZ/WI");
            return;
        }
        let old = self.read_reg(reg);
        let Some(merged) = merge_write(old, decl.size, inside, data) else {
            self.bad_access("write", offset, data.len());
            return;
        };
        let value = decl.apply_write(old, merged);
        log::trace!(target: "smmuv3", "write {} = {value:#x}", decl.name);
        self.write_reg(reg, value);
    }

    fn bad_access(&mut self, what: &str, offset: u64, len: usize) {
        crate::guest_log!(warn, target: "smmuv3",
            "{what} of {len} bytes at unknown or misaligned offset {offset:#x}: RAZ/WI");
    }

    fn read_reg(&self, reg: Reg) -> u64 {
        let s = &self.state;
        match reg {
            Reg::Idr0 => self.idr.idr0(),
            Reg::Idr1 => self.idr.idr1(),
            Reg::Idr2 => u64::from(self.idr.idr[2]),
            Reg::Idr3 => u64::from(self.idr.idr[3]),
            Reg::Idr4 => u64::from(self.idr.idr[4]),
            Reg::Idr5 => u64::from(self.idr.idr[5]),
            Reg::Iidr => u64::from(self.idr.iidr),
            Reg::Aidr => u64::from(self.idr.aidr),
            // Every CR0 change takes effect before the write returns, so the
            // acknowledgement is immediate.
            Reg::Cr0 | Reg::Cr0Ack => s.cr0,
            Reg::Cr1 => s.cr1,
            Reg::Cr2 => s.cr2,
            Reg::Gbpa => s.gbpa,
            Reg::IrqCtrl | Reg::IrqCtrlAck => s.irq_ctrl,
            Reg::Gerror => s.gerror,
            Reg::Gerrorn => s.gerrorn,
            Reg::GerrorIrqCfg0 => s.gerror_irq_cfg0,
            Reg::GerrorIrqCfg1 => s.gerror_irq_cfg1,
            Reg::GerrorIrqCfg2 => s.gerror_irq_cfg2,
            Reg::StrtabBase => s.strtab_base,
            Reg::StrtabBaseCfg => s.strtab_base_cfg,
            Reg::CmdqBase => s.cmdq_base,
            Reg::CmdqProd => s.cmdq_prod,
            Reg::CmdqCons => s.cmdq_cons | cmdq_reg::ERR.make(s.cmdq_err),
            Reg::EvtqBase => s.evtq_base,
            Reg::EvtqProd => s.evtq_prod,
            Reg::EvtqCons => s.evtq_cons,
            Reg::EvtqIrqCfg0 => s.evtq_irq_cfg0,
            Reg::EvtqIrqCfg1 => s.evtq_irq_cfg1,
            Reg::EvtqIrqCfg2 => s.evtq_irq_cfg2,
            Reg::Statusr
            | Reg::Agbpa
            | Reg::PriqBase
            | Reg::PriqIrqCfg0
            | Reg::PriqIrqCfg1
            | Reg::PriqIrqCfg2
            | Reg::PriqProd
            | Reg::PriqCons => 0,
        }
    }

    fn write_reg(&mut self, reg: Reg, value: u64) {
        let s = &mut self.state;
        let cmdq_enabled = cr0::CMDQEN.is_set(s.cr0);
        let evtq_enabled = cr0::EVTQEN.is_set(s.cr0);
        let smmu_enabled = cr0::SMMUEN.is_set(s.cr0);
        match reg {
            // ATSCHK is RES0 unless ATS is advertised (6.3.9).
            Reg::Cr0 if !self.idr.ats() => self.write_cr0(cr0::ATSCHK.set(value, 0)),
            Reg::Cr0 => self.write_cr0(value),
            Reg::Cr1 => s.cr1 = value,
            Reg::Cr2 => s.cr2 = value,
            Reg::Gbpa => self.write_gbpa(value),
            Reg::IrqCtrl => {
                s.irq_ctrl = value;
                log::debug!(target: "smmuv3", "IRQ_CTRL = {value:#x}");
            }
            Reg::Gerrorn => self.write_gerrorn(value),
            Reg::GerrorIrqCfg0 => s.gerror_irq_cfg0 = value,
            Reg::GerrorIrqCfg1 => s.gerror_irq_cfg1 = value,
            Reg::GerrorIrqCfg2 => s.gerror_irq_cfg2 = value,
            Reg::EvtqIrqCfg0 => s.evtq_irq_cfg0 = value,
            Reg::EvtqIrqCfg1 => s.evtq_irq_cfg1 = value,
            Reg::EvtqIrqCfg2 => s.evtq_irq_cfg2 = value,
            // The table and queue bases are fixed while their unit is on (6.3.23-6.3.28).
            Reg::StrtabBase | Reg::StrtabBaseCfg if smmu_enabled => {
                self.ignored(reg, "SMMUEN = 1");
            }
            Reg::StrtabBase => s.strtab_base = value,
            Reg::StrtabBaseCfg => s.strtab_base_cfg = value,
            Reg::CmdqBase | Reg::CmdqCons if cmdq_enabled => self.ignored(reg, "CMDQEN = 1"),
            Reg::CmdqBase => s.cmdq_base = value,
            Reg::CmdqCons => {
                s.cmdq_cons = value;
                s.cmdq_err = 0;
            }
            Reg::CmdqProd => {
                s.cmdq_prod = value;
                self.consume_cmdq();
            }
            Reg::EvtqBase | Reg::EvtqProd if evtq_enabled => self.ignored(reg, "EVTQEN = 1"),
            Reg::EvtqBase => s.evtq_base = value,
            Reg::EvtqProd => s.evtq_prod = value,
            Reg::EvtqCons => {
                s.evtq_cons = value;
                log::trace!(target: "smmuv3", "EVENTQ_CONS = {value:#x}");
            }
            Reg::Idr0
            | Reg::Idr1
            | Reg::Idr2
            | Reg::Idr3
            | Reg::Idr4
            | Reg::Idr5
            | Reg::Iidr
            | Reg::Aidr
            | Reg::Cr0Ack
            | Reg::Statusr
            | Reg::Agbpa
            | Reg::IrqCtrlAck
            | Reg::Gerror
            | Reg::PriqBase
            | Reg::PriqIrqCfg0
            | Reg::PriqIrqCfg1
            | Reg::PriqIrqCfg2
            | Reg::PriqProd
            | Reg::PriqCons => {}
        }
    }

    fn ignored(&mut self, reg: Reg, why: &str) {
        crate::guest_log!(warn, target: "smmuv3", "write to {} ignored: {why}", reg.decl().name);
    }

    fn write_cr0(&mut self, value: u64) {
        let old = self.state.cr0;
        self.state.cr0 = value;
        log::debug!(target: "smmuv3", "CR0 = {value:#x} (was {old:#x})");
        if cr0::SMMUEN.is_set(old ^ value) {
            self.apply_all_stes();
        }
        if cr0::CMDQEN.is_set(value & !old) {
            self.consume_cmdq();
        }
    }

    /// GBPA changes only with UPDATE = 1, and the update completes at once
    /// (UPDATE reads back 0). A write without UPDATE is ignored (6.3.14).
    fn write_gbpa(&mut self, value: u64) {
        if !gbpa::UPDATE.is_set(value) {
            self.ignored(Reg::Gbpa, "UPDATE = 0");
            return;
        }
        let old = self.state.gbpa;
        self.state.gbpa = gbpa::UPDATE.set(value, 0);
        log::debug!(target: "smmuv3", "GBPA = {:#x}", self.state.gbpa);
        let smmu_enabled = cr0::SMMUEN.is_set(self.state.cr0);
        if !smmu_enabled && gbpa::ABORT.is_set(old ^ self.state.gbpa) {
            self.apply_all_stes();
        }
    }

    /// The guest acknowledges errors by making GERRORN bits equal GERROR.
    /// Acknowledging CMDQ_ERR resumes the command queue from CONS, as
    /// hardware does (Linux rewrites the bad entry to CMD_SYNC first and
    /// does not write PROD again).
    fn write_gerrorn(&mut self, value: u64) {
        let was_active = self.cmdq_error_active();
        self.state.gerrorn = value;
        log::debug!(target: "smmuv3", "GERRORN = {value:#x}, GERROR = {:#x}", self.state.gerror);
        if was_active && !self.cmdq_error_active() {
            self.consume_cmdq();
        }
    }

    fn cmdq_error_active(&self) -> bool {
        gerror::CMDQ_ERR.is_set(self.state.gerror ^ self.state.gerrorn)
    }

    /// Activate a global error: toggle its GERROR bit unless it is already
    /// active, and pulse the gerror line when enabled.
    fn raise_gerror(&mut self, bit: crate::regs::Field) {
        if bit.is_set(self.state.gerror ^ self.state.gerrorn) {
            return;
        }
        self.state.gerror ^= bit.mask();
        crate::guest_log!(warn, target: "smmuv3", "GERROR = {:#x}", self.state.gerror);
        if irq_ctrl::GERROR_IRQEN.is_set(self.state.irq_ctrl) {
            let (cfg0, cfg1) = (self.state.gerror_irq_cfg0, self.state.gerror_irq_cfg1);
            self.signal(IrqLine::SmmuGerror, cfg0, cfg1);
        }
    }

    /// Signal an interrupt source: its MSI doorbell when the SMMU has MSIs
    /// (IDR0.MSI) and the guest programmed an address in *_IRQ_CFG0
    /// (6.3.20: ADDR == 0 disables the MSI), its wired line otherwise.
    fn signal(&self, line: IrqLine, cfg0: u64, cfg1: u64) {
        let addr = regs::irq_cfg::ADDR.get(cfg0) << regs::irq_cfg::ADDR.shift;
        if self.idr.msi() && addr != 0 {
            self.irq.msi(addr, regs::irq_cfg::DATA.get(cfg1) as u32);
        } else {
            self.irq.trigger(line);
        }
    }

    fn apply_all_stes(&mut self) {
        let vsids: Vec<u32> = self.streams.keys().copied().collect();
        for vsid in vsids {
            self.apply_ste(vsid);
        }
    }

    /// Install on the backend what `vsid` must do now: the GBPA policy while
    /// SMMUEN = 0, else its guest STE (or abort plus an event when the STE
    /// cannot be used).
    fn apply_ste(&mut self, vsid: u32) {
        let ste = if cr0::SMMUEN.is_set(self.state.cr0) {
            self.guest_ste(vsid)
        } else if gbpa::ABORT.is_set(self.state.gbpa) {
            NestedSte::abort()
        } else {
            NestedSte::bypass()
        };
        if self.streams.get(&vsid) == Some(&Some(ste)) {
            return;
        }
        match self.backend.install_ste(vsid, &ste) {
            Ok(()) => {
                log::debug!(target: "smmuv3", "vSID {vsid:#x}: {} STE {:#x} {:#x}",
                    ste.config.name(), ste.words[0], ste.words[1]);
                self.streams.insert(vsid, Some(ste));
            }
            Err(err) => {
                crate::guest_log!(warn, target: "smmuv3", "vSID {vsid:#x}: host refused {} STE: {err}; aborting its DMA",
                    ste.config.name());
                self.report_events(&[evtq::EventRecord::bad_ste(vsid)]);
                self.guest_error("C_BAD_STE", Some(vsid));
                self.abort_after_refusal(vsid, &ste, &err);
            }
        }
    }

    /// The guest now believes `vsid` aborts (C_BAD_STE), but the host left
    /// the device on its previous translation, which may be a bypass (DMA
    /// to all guest RAM): put it on abort. If the host refuses that too,
    /// say so loudly and count it; never keep the old translation silently.
    fn abort_after_refusal(&mut self, vsid: u32, refused: &NestedSte, err: &BackendError) {
        let abort = NestedSte::abort();
        let fallback = if refused.config == SteConfig::Abort {
            Err(err.clone())
        } else {
            self.backend.install_ste(vsid, &abort)
        };
        match fallback {
            Ok(()) => {
                self.streams.insert(vsid, Some(abort));
            }
            Err(abort_err) => {
                self.abort_fallback_failures = self.abort_fallback_failures.saturating_add(1);
                log::error!(
                    target: "smmuv3",
                    "vSID {vsid:#x}: host refused the abort STE after a refused {} STE: {abort_err}; \
                     the device may still DMA through its previous translation",
                    refused.config.name()
                );
                // Not known to be installed: the next apply tries again.
                self.streams.insert(vsid, None);
            }
        }
    }

    /// Translate `iova` for `vsid` through the guest's stage-1 tables (the
    /// MSI doorbell of a passthrough function; see [`s1walk`]).
    pub fn translate_iova(&self, vsid: u32, iova: u64) -> Result<u64, s1walk::WalkError> {
        let table = ste::StreamTable {
            base: self.state.strtab_base,
            cfg: self.state.strtab_base_cfg,
        };
        s1walk::translate(table, &self.idr, &self.mem, vsid, iova)
    }

    /// Read and check `vsid`'s guest STE; anything unusable becomes an abort
    /// STE. A bad STE (C_BAD_STE) or a table fetch abort (F_STE_FETCH) is
    /// also reported as an event: the guest asked for that STE to be used.
    /// A StreamID the table does not cover yet is not: Linux enables the
    /// SMMU before it has built the L2 tables of its devices, and hardware
    /// reports C_BAD_STREAMID only when such a device does DMA.
    fn guest_ste(&mut self, vsid: u32) -> NestedSte {
        let table = ste::StreamTable {
            base: self.state.strtab_base,
            cfg: self.state.strtab_base_cfg,
        };
        let (event, kind) = match table.read_ste(vsid, &self.idr, &self.mem) {
            Ok(words) => match NestedSte::from_guest(words, &self.idr) {
                Ok(ste) => return ste,
                Err(bad) => {
                    crate::guest_log!(warn, target: "smmuv3", "vSID {vsid:#x}: {bad}");
                    (evtq::EventRecord::bad_ste(vsid), "C_BAD_STE")
                }
            },
            Err(ste::LookupError::Fetch { addr }) => {
                crate::guest_log!(warn, target: "smmuv3", "vSID {vsid:#x}: STE fetch at {addr:#x} aborted");
                (evtq::EventRecord::ste_fetch(vsid, addr), "F_STE_FETCH")
            }
            Err(err) => {
                log::debug!(target: "smmuv3", "vSID {vsid:#x}: {err}, aborting its DMA");
                return NestedSte::abort();
            }
        };
        self.report_events(&[event]);
        self.guest_error(kind, Some(vsid));
        NestedSte::abort()
    }

    /// Report the errors this model shows its guest to `listener`.
    pub fn set_guest_error_listener(&mut self, listener: crate::guest_error::GuestErrorListener) {
        self.guest_errors = Some(listener);
    }

    fn guest_error(&mut self, kind: &'static str, vsid: Option<u32>) {
        if let Some(listener) = &mut self.guest_errors {
            listener(crate::guest_error::GuestError {
                kind,
                queue: None,
                vsid,
            });
        }
    }
}

impl MutDeviceMmio for Smmuv3 {
    fn mmio_read(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        self.read(offset, data);
    }

    fn mmio_write(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        self.write(offset, data);
    }
}

/// Re-exported for the replay tool's region names and tests.
pub use regs::WINDOW_SIZE;

#[cfg(test)]
mod tests;
