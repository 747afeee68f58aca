//! The software VCMDQ engine: what the Tegra241 hardware does with the
//! logical VCMDQs of a guest-owned VINTF (HYP_OWN=0), over a 64 KiB page0.
//!
//! Implements: the CONFIG.CMDQ_EN -> STATUS.ENABLED handshake (only for a
//! queue that has a HW queue), consumption from guest memory of
//! TLBI_NH_ASID, TLBI_NH_VA, ATC_INV (vSID -> pSID through the vDEVICE
//! table) and CMD_SYNC (CS=SIG_IRQ: the MSI payload is written to guest RAM,
//! Linux's MSI polling, or, for an address outside RAM such as the ITS
//! doorbell, delivered as an MSI, exactly as the trapped SMMU command queue
//! does), CONS/GERROR/CONS.ERR
//! updates on an error, the VINTF's LVCMDQ error map and one TEGRA241_CMDQV
//! vEVENT per error. A queue enabled with CONS.ERR set while its GERROR
//! error is still unacknowledged (the model re-allocated it behind the
//! guest's back) resumes in that error. Deliberately not: CONS_INDX_BASE
//! DRAM write-back, ATC_INV completion timeouts (CERROR_ATC_INV_SYNC), VMID
//! insertion.
//!
//! The same engine serves both page0 modes: in trapped mode the backend runs
//! a pass synchronously after each page0 write (deterministic for replay and
//! fuzzing); in mapped mode a worker thread runs passes while the guest
//! writes the page directly.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use vm_memory::{Bytes, GuestAddress};

use super::EmulatedBackend;
use crate::GuestMemory;
use crate::backend::BackendCall;
use crate::cmdqv::regs::{
    GERROR_CMDQ_ERR, VCMDQ_CONFIG, VCMDQ_CONFIG_EN, VCMDQ_CONS, VCMDQ_CONS_ERR, VCMDQ_CONS_RD,
    VCMDQ_GERROR, VCMDQ_GERRORN, VCMDQ_PROD, VCMDQ_STATUS, VCMDQ_STATUS_ENABLED, VCMDQ_STRIDE,
    page0_reg,
};
use crate::irq::InterruptSink;
use crate::mapping::{Mapping, MmapError};
use crate::smmuv3::cmd::{CMD_BYTES, Command, Opcode, SyncSignal, cerror};
use crate::smmuv3::queue::QueueGeometry;

/// Bytes in one page0.
pub const PAGE0_BYTES: usize = 0x1_0000;

/// The 64 KiB page0: an anonymous mapping accessed with 32-bit atomics, so
/// a vCPU writing it through a KVM slot and the engine thread never tear.
#[derive(Debug)]
pub struct Page0Memory {
    mapping: Arc<Mapping>,
}

impl Page0Memory {
    /// Map a zeroed page0.
    pub fn new() -> Result<Self, MmapError> {
        Ok(Page0Memory {
            mapping: Arc::new(Mapping::anonymous(PAGE0_BYTES as u64)?),
        })
    }

    /// The mapping, shared with the memory slot that shows it to the guest.
    pub fn mapping(&self) -> &Arc<Mapping> {
        &self.mapping
    }

    /// Load the 32-bit register at `offset` (0 when out of the page).
    pub fn load(&self, offset: u64) -> u32 {
        self.mapping.load_u32(offset, Ordering::Acquire)
    }

    /// Store the 32-bit register at `offset` (ignored when out of the page:
    /// the callers filter such offsets).
    pub fn store(&self, offset: u64, value: u32) {
        if let Some(word) = self.mapping.atomic_u32(offset) {
            word.store(value, Ordering::Release);
        }
    }
}

/// Engine state of one logical VCMDQ.
#[derive(Clone, Copy, Debug, Default)]
struct EngineQueue {
    /// (guest base, geometry) while a HW queue is allocated.
    hw: Option<(u64, QueueGeometry)>,
    enabled: bool,
    cons: u32,
    cons_err: u32,
    gerror: u32,
}

/// The engine for one VINTF.
pub struct VcmdqEngine {
    mem: GuestMemory,
    viommu: EmulatedBackend,
    /// Where a CMD_SYNC's MSI to a non-RAM address (a doorbell) goes.
    msi: Arc<dyn InterruptSink>,
    page0: Page0Memory,
    queues: Vec<EngineQueue>,
    err_map: u128,
    events: VecDeque<[u64; 2]>,
    /// Whether this pass records each command as a formatted call (a call
    /// log asks for it) or tallies it in `tally`, reported once per pass.
    log_calls: bool,
    /// Commands executed this pass, per [`EXEC_OPS`] entry.
    tally: [u64; EXEC_OPS.len()],
}

/// The commands a guest-owned VCMDQ executes, in tally order.
const EXEC_OPS: [Opcode; 4] = [
    Opcode::TlbiNhAsid,
    Opcode::TlbiNhVa,
    Opcode::AtcInv,
    Opcode::CmdSync,
];

impl std::fmt::Debug for VcmdqEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcmdqEngine")
            .field("queues", &self.queues)
            .field("err_map", &self.err_map)
            .finish_non_exhaustive()
    }
}

impl VcmdqEngine {
    /// An engine for `num_lvcmdqs` queues over `page0`, signalling CMD_SYNC
    /// MSIs to doorbells through `msi`.
    pub fn new(
        mem: GuestMemory,
        viommu: EmulatedBackend,
        msi: Arc<dyn InterruptSink>,
        page0: Page0Memory,
        num_lvcmdqs: usize,
    ) -> Self {
        VcmdqEngine {
            mem,
            viommu,
            msi,
            page0,
            queues: vec![EngineQueue::default(); num_lvcmdqs],
            err_map: 0,
            events: VecDeque::new(),
            log_calls: true,
            tally: [0; EXEC_OPS.len()],
        }
    }

    /// The page0 memory.
    pub fn page0(&self) -> &Page0Memory {
        &self.page0
    }

    /// Number of logical VCMDQs.
    pub fn num_lvcmdqs(&self) -> usize {
        self.queues.len()
    }

    /// True when `index` has a HW queue.
    pub fn is_allocated(&self, index: usize) -> bool {
        self.queues.get(index).is_some_and(|q| q.hw.is_some())
    }

    fn slot(index: usize, reg: crate::regs::Register) -> u64 {
        index as u64 * VCMDQ_STRIDE + reg.offset
    }

    /// Reset a queue's page0 slot the way the kernel's `hw_deinit` does on
    /// every HW queue alloc and free: CONFIG, STATUS, PROD, CONS cleared,
    /// GERRORN = GERROR (every pending error acknowledged). GERROR itself
    /// is hardware state and keeps its value.
    fn reset_slot(&mut self, index: usize) {
        for reg in [VCMDQ_CONFIG, VCMDQ_STATUS, VCMDQ_PROD, VCMDQ_CONS] {
            self.page0.store(Self::slot(index, reg), 0);
        }
        let gerror = self.page0.load(Self::slot(index, VCMDQ_GERROR));
        self.page0.store(Self::slot(index, VCMDQ_GERRORN), gerror);
        self.err_map &= !(1u128 << index);
    }

    /// Give `index` a HW queue at `gpa` with `1 << log2size` entries (the
    /// caller enforced the kernel's rules).
    pub fn attach(&mut self, index: usize, gpa: u64, log2size: u32) {
        self.reset_slot(index);
        if let Some(q) = self.queues.get_mut(index) {
            *q = EngineQueue {
                hw: Some((gpa, QueueGeometry::new(log2size))),
                gerror: q.gerror,
                ..EngineQueue::default()
            };
        }
    }

    /// Take the HW queue of `index` away.
    pub fn detach(&mut self, index: usize) {
        if let Some(q) = self.queues.get_mut(index) {
            q.hw = None;
            q.enabled = false;
        }
        self.reset_slot(index);
    }

    /// A guest write to page0 with register access rules (STATUS and GERROR
    /// are read-only; unknown offsets ignored).
    pub fn guest_write(&mut self, offset: u64, value: u32) {
        let index = (offset / VCMDQ_STRIDE) as usize;
        if index >= self.queues.len() {
            return;
        }
        if let Some(reg) = page0_reg(offset % VCMDQ_STRIDE) {
            let old = u64::from(self.page0.load(offset));
            self.page0
                .store(offset, reg.apply_write(old, u64::from(value)) as u32);
        }
    }

    /// The next TEGRA241_CMDQV vEVENT.
    pub fn pop_event(&mut self) -> Option<[u64; 2]> {
        self.events.pop_front()
    }

    /// Service every queue once; true when anything happened.
    pub fn run_pass(&mut self) -> bool {
        let mut active = false;
        for index in 0..self.queues.len() {
            active |= self.service(index);
        }
        active
    }

    /// Service one queue: enable handshake, error acknowledgement, then
    /// consume at most one queue's worth of commands.
    pub fn service(&mut self, index: usize) -> bool {
        let Some(mut q) = self.queues.get(index).copied() else {
            return false;
        };
        let config = self.page0.load(Self::slot(index, VCMDQ_CONFIG));
        let gerrorn = self.page0.load(Self::slot(index, VCMDQ_GERRORN));
        let mut active = false;
        // A queue with no HW queue behind it can never report ENABLED.
        let want = VCMDQ_CONFIG_EN.is_set(u64::from(config)) && q.hw.is_some();
        let err_bit = GERROR_CMDQ_ERR.mask() as u32;
        let error_active = (q.gerror ^ gerrorn) & err_bit != 0;
        if want != q.enabled {
            q.enabled = want;
            active = true;
            if want {
                let cons = u64::from(self.page0.load(Self::slot(index, VCMDQ_CONS)));
                q.cons = VCMDQ_CONS_RD.get(cons) as u32;
                // CONS as software left it, ERR included: after a queue in
                // error was freed and allocated again, its error is still
                // pending and CONS.ERR must still say which one.
                q.cons_err = VCMDQ_CONS_ERR.get(cons) as u32;
                if q.cons_err != cerror::NONE && error_active {
                    log::info!(target: "cmdqv", "vcmdq {index} enabled with error CERROR={} pending", q.cons_err);
                    self.err_map |= 1u128 << index;
                }
            }
            log::info!(target: "cmdqv", "vcmdq {index} STATUS.ENABLED={}", u8::from(want));
            self.page0.store(
                Self::slot(index, VCMDQ_STATUS),
                VCMDQ_STATUS_ENABLED.make(u64::from(want)) as u32,
            );
        }
        if !error_active && (self.err_map & (1u128 << index) != 0 || q.cons_err != cerror::NONE) {
            log::info!(target: "cmdqv", "vcmdq {index} error acknowledged");
            self.err_map &= !(1u128 << index);
            q.cons_err = cerror::NONE;
            active = true;
        }
        if let (true, Some((gpa, geometry))) = (q.enabled, q.hw)
            && !error_active
        {
            let prod = self.page0.load(Self::slot(index, VCMDQ_PROD)) & geometry.pointer_mask();
            let mut budget = geometry.entries();
            if !geometry.is_empty(prod, q.cons) {
                self.log_calls = self.viommu.logs_data_path();
            }
            while budget > 0 && !geometry.is_empty(prod, q.cons) {
                budget -= 1;
                active = true;
                let at = gpa + u64::from(geometry.index(q.cons)) * CMD_BYTES;
                match self.execute(index, at) {
                    Ok(()) => q.cons = geometry.next(q.cons),
                    Err(code) => {
                        self.raise_cmdq_err(index, &mut q, gerrorn, code);
                        break;
                    }
                }
            }
            self.report_tally();
        }
        if q.enabled {
            let cons =
                VCMDQ_CONS_RD.make(u64::from(q.cons)) | VCMDQ_CONS_ERR.make(u64::from(q.cons_err));
            self.page0.store(Self::slot(index, VCMDQ_CONS), cons as u32);
        }
        self.page0.store(Self::slot(index, VCMDQ_GERROR), q.gerror);
        if let Some(slot) = self.queues.get_mut(index) {
            *slot = q;
        }
        active
    }

    fn raise_cmdq_err(&mut self, index: usize, q: &mut EngineQueue, gerrorn: u32, code: u32) {
        q.cons_err = code;
        let err_bit = GERROR_CMDQ_ERR.mask() as u32;
        q.gerror = (q.gerror & !err_bit) | ((gerrorn & err_bit) ^ err_bit);
        self.err_map |= 1u128 << index;
        let event = [self.err_map as u64, (self.err_map >> 64) as u64];
        crate::guest_log!(warn, target: "cmdqv", "vcmdq {index} error CERROR={code} at CONS={:#x}", q.cons);
        self.events.push_back(event);
        self.viommu.notify_events();
    }

    /// Execute the command at `at`; `Err(cerror)` stops the queue. Each
    /// executed command is one `vcmdq_exec` data-path call: counted, and
    /// formatted only where a call log asks for it (see [`Self::record`]).
    fn execute(&mut self, index: usize, at: u64) -> Result<(), u32> {
        let mut bytes = [0u8; 16];
        self.mem
            .read_slice(&mut bytes, GuestAddress(at))
            .map_err(|_| cerror::ABT)?;
        let cmd = Command::from_le_bytes(bytes);
        let op = match cmd.opcode() {
            Some(op @ (Opcode::TlbiNhAsid | Opcode::TlbiNhVa)) => op,
            Some(op @ Opcode::AtcInv) => {
                let vsid = cmd.sid();
                let Some(psid) = self.viommu.vdevice_psid(vsid) else {
                    crate::guest_log!(warn, target: "cmdqv", "vcmdq {index} ATC_INV for unregistered vSID {vsid:#x}");
                    return Err(cerror::ILL);
                };
                self.record(index, op, cmd, Some(psid));
                return Ok(());
            }
            Some(op @ Opcode::CmdSync) => match cmd.sync_signal() {
                Some(SyncSignal::Irq) if cmd.sync_msi_addr() != 0 => {
                    self.record(index, op, cmd, None);
                    self.sync_msi(index, cmd.sync_msi_addr(), cmd.sync_msi_data());
                    return Ok(());
                }
                Some(_) => op,
                None => return Err(cerror::ILL),
            },
            other => {
                let name = other.map_or("unknown", Opcode::name);
                crate::guest_log!(warn,
                    target: "cmdqv",
                    "vcmdq {index} refuses {name} (opcode {:#x}) on a guest-owned VINTF",
                    cmd.opcode_byte()
                );
                return Err(cerror::ILL);
            }
        };
        self.record(index, op, cmd, None);
        Ok(())
    }

    /// Report the commands tallied this pass as `vcmdq_exec` calls.
    fn report_tally(&mut self) {
        if self.tally.iter().all(|n| *n == 0) {
            return;
        }
        let mut ops = [("", 0u64); EXEC_OPS.len()];
        for ((slot, op), n) in ops.iter_mut().zip(EXEC_OPS).zip(self.tally) {
            *slot = (op.name(), n);
        }
        self.viommu.count_data_path("vcmdq_exec", &ops);
        self.tally = [0; EXEC_OPS.len()];
    }

    /// Account for one executed command: tallied (no lock, no allocation)
    /// unless a call log asks for the `vcmdq_exec index=N op=NAME ...`
    /// record (the replay tool's output), which is then built at once.
    fn record(&mut self, index: usize, op: Opcode, cmd: Command, psid: Option<u32>) {
        if !self.log_calls
            && let Some(n) = EXEC_OPS
                .iter()
                .position(|o| *o == op)
                .and_then(|i| self.tally.get_mut(i))
        {
            *n += 1;
            return;
        }
        self.viommu
            .record_data_path("vcmdq_exec", Some(op.name()), || {
                let call = BackendCall::new("vcmdq_exec")
                    .dec("index", index as u64)
                    .word("op", op.name());
                match op {
                    Opcode::TlbiNhAsid => call.hex("asid", u64::from(cmd.asid())),
                    Opcode::TlbiNhVa => call
                        .hex("asid", u64::from(cmd.asid()))
                        .hex("addr", cmd.address()),
                    Opcode::AtcInv => call
                        .hex("vsid", u64::from(cmd.sid()))
                        .hex("psid", u64::from(psid.unwrap_or_default()))
                        .hex("addr", cmd.address()),
                    Opcode::CmdSync
                        if cmd.sync_signal() == Some(SyncSignal::Irq)
                            && cmd.sync_msi_addr() != 0 =>
                    {
                        call.hex("msi", cmd.sync_msi_addr())
                    }
                    _ => call,
                }
            });
    }

    /// CMD_SYNC SIG_IRQ with an MSI address: a write into guest RAM (Linux
    /// polls the queue entry) or, outside RAM, an MSI to that doorbell. The
    /// CMD_SYNC completes either way: CERROR_ABT is a command *fetch* abort,
    /// which Linux answers by fetching the same entry again.
    fn sync_msi(&self, index: usize, addr: u64, data: u32) {
        if self.mem.write_obj(data.to_le(), GuestAddress(addr)).is_ok() {
            log::trace!(target: "cmdqv", "vcmdq {index} CMD_SYNC wrote {data:#x} at {addr:#x}");
        } else {
            log::debug!(target: "cmdqv", "vcmdq {index} CMD_SYNC MSI {data:#x} to doorbell {addr:#x}");
            self.msi.msi(addr, data);
        }
    }
}
