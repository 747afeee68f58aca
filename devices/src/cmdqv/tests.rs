//! Behaviour tests of the CMD-QV model over the emulated backend: the Linux
//! guest probe, and the adversarial sequences the replay traces also cover.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::backend::{BackendError, Errno};
use crate::emulated::EmulatedBackend;
use crate::emulated::cmdqv::{EmulatedCmdqv, EmulatedCmdqvConfig};

const RAM: u64 = 0x4000_0000;
const RAM_SIZE: usize = 0x100_0000;
const Q0: u64 = RAM + 0x10_0000;
const Q1: u64 = RAM + 0x20_0000;
/// LOG2SIZE 8: 256 entries, 4 KiB.
const LOG2SIZE: u64 = 8;
const MSI: u64 = RAM + 0x30_0000;

#[derive(Default)]
struct Irqs(Mutex<Vec<String>>);

impl InterruptSink for Irqs {
    fn trigger(&self, line: IrqLine) {
        self.0.lock().unwrap().push(line.name().to_string());
    }
    fn set_level(&self, line: IrqLine, asserted: bool) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", line.name(), asserted as u8));
    }
    fn msi(&self, addr: u64, data: u32) {
        self.0
            .lock()
            .unwrap()
            .push(format!("msi {addr:#x} {data:#x}"));
    }
}

struct Rig {
    cmdqv: Cmdqv,
    viommu: EmulatedBackend,
    mem: GuestMemory,
    irqs: Arc<Irqs>,
}

impl Rig {
    fn new() -> Self {
        Self::with(EmulatedCmdqvConfig::default())
    }

    fn with(config: EmulatedCmdqvConfig) -> Self {
        Self::with_config(config, CmdqvConfig::default())
    }

    fn with_config(config: EmulatedCmdqvConfig, model: CmdqvConfig) -> Self {
        Self::wrapping(config, model, |backend| Box::new(backend))
    }

    /// The emulated backend behind `wrap` (a test's failure injection).
    fn wrapping(
        config: EmulatedCmdqvConfig,
        model: CmdqvConfig,
        wrap: impl FnOnce(EmulatedCmdqv) -> Box<dyn CmdqvBackend>,
    ) -> Self {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(RAM), RAM_SIZE)]).unwrap();
        let viommu = EmulatedBackend::new();
        let irqs = Arc::new(Irqs::default());
        let backend =
            EmulatedCmdqv::new(viommu.clone(), mem.clone(), irqs.clone(), config).unwrap();
        let cmdqv = Cmdqv::new(wrap(backend), mem.clone(), irqs.clone(), model).unwrap();
        Rig {
            cmdqv,
            viommu,
            mem,
            irqs,
        }
    }

    fn w32(&mut self, offset: u64, value: u32) {
        self.cmdqv.write(offset, &value.to_le_bytes());
    }

    fn w64(&mut self, offset: u64, value: u64) {
        self.cmdqv.write(offset, &value.to_le_bytes());
    }

    fn r32(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.cmdqv.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn r64(&mut self, offset: u64) -> u64 {
        let mut data = [0u8; 8];
        self.cmdqv.read(offset, &mut data);
        u64::from_le_bytes(data)
    }

    fn calls(&self) -> Vec<String> {
        self.viommu
            .take_calls()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn irqs(&self) -> Vec<String> {
        std::mem::take(&mut *self.irqs.0.lock().unwrap())
    }

    fn p0(q: u64, reg: u64) -> u64 {
        VINTF0_PAGE0 + q * VCMDQ_STRIDE + reg
    }

    fn p1(q: u64) -> u64 {
        VINTF0_PAGE1 + q * VCMDQ_STRIDE
    }

    /// The Linux driver up to VINTF0 enabled and every LVCMDQ mapped.
    fn probe_until_mapped(&mut self) {
        assert_eq!(self.r32(0x4), 0x4011, "PARAM");
        // tegra241_cmdqv_hw_reset: CONFIG read back, CMDQV_EN off then on.
        let config = self.r32(0x0);
        self.w32(0x0, config & !1);
        assert_eq!(self.r32(0x8), 0);
        self.w32(0x0, config | 1);
        assert_eq!(self.r32(0x8), 1, "STATUS.CMDQV_ENABLED");
        for q in 0..2u32 {
            self.w32(0x200 + 4 * u64::from(q), q << 1);
        }
        self.w32(0x1000, 1 << 17);
        self.w32(0x1000, (1 << 17) | 1);
        assert_eq!(self.r32(0x1004), 1, "VINTF0 STATUS.ENABLED");
        assert_eq!(self.r32(0x1000) & (1 << 17), 0, "HYP_OWN reads 0");
        for q in 0..2u32 {
            self.w32(0x200 + 4 * u64::from(q), (q << 1) | 1);
        }
    }

    /// vcmdq_hw_init for one queue: deinit writes, BASE, CONFIG.EN.
    fn init_queue(&mut self, q: u64, gpa: u64) {
        self.w32(Self::p0(q, 0x8), 0);
        self.w32(Self::p0(q, 0x4), 0);
        self.w32(Self::p0(q, 0x0), 0);
        self.w64(Self::p1(q), 0);
        self.w64(Self::p1(q) + 8, 0);
        self.w64(Self::p1(q), gpa | LOG2SIZE);
        self.w32(Self::p0(q, 0x8), 1);
    }

    fn put_cmd(&self, gpa: u64, index: u64, cmd: [u64; 2]) {
        self.mem
            .write_obj(cmd[0], GuestAddress(gpa + 16 * index))
            .unwrap();
        self.mem
            .write_obj(cmd[1], GuestAddress(gpa + 16 * index + 8))
            .unwrap();
    }
}

/// The emulated backend whose next `fail` HW queue frees fail with EBUSY
/// (the kernel's answer to IOMMU_DESTROY of an object still in use), and
/// whose next `fail_allocs` HW queue allocations fail with EFAULT (a ring
/// that is not physically contiguous).
struct FailingFrees {
    inner: EmulatedCmdqv,
    fail: Arc<AtomicU32>,
    fail_allocs: Arc<AtomicU32>,
}

impl CmdqvBackend for FailingFrees {
    fn info(&self) -> CmdqvHostInfo {
        self.inner.info()
    }
    fn page0_mode(&self) -> Page0Mode {
        self.inner.page0_mode()
    }
    fn hw_queue_alloc(&mut self, index: u32, gpa: u64, len: u64) -> Result<(), BackendError> {
        if self
            .fail_allocs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(BackendError::new(Errno::Fault, "injected"));
        }
        self.inner.hw_queue_alloc(index, gpa, len)
    }
    fn hw_queue_free(&mut self, index: u32) -> Result<(), BackendError> {
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(BackendError::new(Errno::Busy, "injected"));
        }
        self.inner.hw_queue_free(index)
    }
    fn page0_read(&mut self, offset: u64) -> u32 {
        self.inner.page0_read(offset)
    }
    fn page0_write(&mut self, offset: u64, value: u32) {
        self.inner.page0_write(offset, value)
    }
    fn poll_error_event(&mut self) -> Option<[u64; 2]> {
        self.inner.poll_error_event()
    }
    fn sid_slots(&self) -> Vec<Option<u32>> {
        self.inner.sid_slots()
    }
}

fn rig_with_failing_frees() -> (Rig, Arc<AtomicU32>) {
    let (rig, fail, _) = rig_with_failures();
    (rig, fail)
}

/// A rig and its injected failures: (frees, allocations) still to fail.
fn rig_with_failures() -> (Rig, Arc<AtomicU32>, Arc<AtomicU32>) {
    let fail = Arc::new(AtomicU32::new(0));
    let fail_allocs = Arc::new(AtomicU32::new(0));
    let (frees, allocs) = (fail.clone(), fail_allocs.clone());
    let rig = Rig::wrapping(
        EmulatedCmdqvConfig::default(),
        CmdqvConfig::default(),
        |inner| {
            Box::new(FailingFrees {
                inner,
                fail: frees,
                fail_allocs: allocs,
            })
        },
    );
    (rig, fail, fail_allocs)
}

fn tlbi_nh_va(asid: u64, addr: u64) -> [u64; 2] {
    [0x12 | (asid << 48), addr | 1]
}

fn cmd_sync_msi(addr: u64, data: u32) -> [u64; 2] {
    [0x46 | (1 << 12) | (u64::from(data) << 32), addr]
}

fn cfgi_ste(sid: u32) -> [u64; 2] {
    [0x03 | (u64::from(sid) << 32), 1]
}

fn atc_inv(sid: u32, addr: u64) -> [u64; 2] {
    [0x40 | (u64::from(sid) << 32), addr]
}

#[test]
fn linux_probe_allocates_queues_in_ascending_order_and_enables_them() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    rig.init_queue(1, Q1);
    assert_eq!(rig.r32(Rig::p0(0, 0xc)), 1, "VCMDQ0 STATUS.ENABLED");
    assert_eq!(rig.r32(Rig::p0(1, 0xc)), 1, "VCMDQ1 STATUS.ENABLED");
    assert_eq!(rig.r64(Rig::p1(1)), Q1 | LOG2SIZE);
    assert_eq!(
        rig.calls(),
        [
            format!("hw_queue_alloc index=0 gpa={Q0:#x} len=0x1000"),
            format!("hw_queue_alloc index=1 gpa={Q1:#x} len=0x1000"),
        ]
    );
}

#[test]
fn global_vcmdq_pages_alias_vintf0_queues() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    rig.w64(GLOBAL_PAGE1, Q0 | LOG2SIZE);
    rig.w32(GLOBAL_PAGE0 + 0x8, 1);
    assert_eq!(rig.r32(Rig::p0(0, 0xc)), 1);
    assert_eq!(rig.r64(Rig::p1(0)), Q0 | LOG2SIZE);
    assert_eq!(
        rig.r32(GLOBAL_PAGE0 + 2 * VCMDQ_STRIDE + 0xc),
        0,
        "no queue 2"
    );
}

#[test]
fn tlbi_and_cmd_sync_batch_executes_and_writes_msi() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    rig.calls();
    rig.put_cmd(Q0, 0, tlbi_nh_va(5, 0x12_3000));
    rig.put_cmd(Q0, 1, cmd_sync_msi(MSI, 0xabcd));
    rig.w32(Rig::p0(0, 0x4), 2);
    assert_eq!(rig.r32(Rig::p0(0, 0x0)), 2, "CONS caught up with PROD");
    assert_eq!(
        rig.calls(),
        [
            "vcmdq_exec index=0 op=TLBI_NH_VA asid=0x5 addr=0x123000".to_string(),
            format!("vcmdq_exec index=0 op=CMD_SYNC msi={MSI:#x}"),
        ]
    );
    assert_eq!(rig.mem.read_obj::<u32>(GuestAddress(MSI)).unwrap(), 0xabcd);
    assert!(rig.irqs().is_empty());
}

#[test]
fn cmd_sync_msi_outside_ram_is_delivered_and_the_sync_completes() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    rig.calls();
    let doorbell = 0x0809_0040;
    rig.put_cmd(Q0, 0, cmd_sync_msi(doorbell, 0x2a));
    rig.put_cmd(Q0, 1, tlbi_nh_va(1, 0x1000));
    rig.w32(Rig::p0(0, 0x4), 2);
    assert_eq!(rig.r32(Rig::p0(0, 0x0)), 2, "no CONS.ERR, both consumed");
    assert_eq!(rig.r32(Rig::p0(0, 0x10)), 0, "no GERROR");
    assert_eq!(rig.irqs(), [format!("msi {doorbell:#x} 0x2a")]);
    assert_eq!(rig.calls().len(), 2);
}

#[test]
fn unsupported_command_stops_queue_with_every_error_bit_and_irq() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    rig.init_queue(1, Q1);
    rig.put_cmd(Q1, 0, cfgi_ste(8));
    rig.w32(Rig::p0(1, 0x4), 1);
    assert_eq!(rig.r32(Rig::p0(1, 0x0)), 1 << 24, "CONS.ERR=ILL at index 0");
    assert_eq!(rig.r32(Rig::p0(1, 0x10)) & 1, 1, "GERROR.CMDQ_ERR");
    assert_eq!(rig.r64(0x10c0), 0b10, "LVCMDQ_ERR_MAP");
    assert_eq!(rig.r32(0x24), 0b10, "CMDQ_ERR_MAP");
    assert_eq!(rig.r32(0x14), 1, "VI_ERR_MAP");
    assert_eq!(rig.irqs(), ["cmdqv"]);
    // The guest skips the bad entry (CMD_SYNC in its place) and acknowledges.
    rig.put_cmd(Q1, 0, [0x46, 0]);
    let gerror = rig.r32(Rig::p0(1, 0x10));
    rig.w32(Rig::p0(1, 0x14), gerror);
    assert_eq!(rig.r32(Rig::p0(1, 0x0)), 1, "resumed and consumed");
    assert_eq!(rig.r64(0x10c0), 0);
    assert_eq!(rig.r32(0x14), 0);
}

#[test]
fn vi_int_mask_suppresses_the_cmdqv_interrupt_but_not_the_maps() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    rig.w32(0x1c, 1);
    rig.init_queue(0, Q0);
    rig.put_cmd(Q0, 0, cfgi_ste(8));
    rig.w32(Rig::p0(0, 0x4), 1);
    assert!(rig.irqs().is_empty());
    assert_eq!(rig.r32(0x14), 1);
}

#[test]
fn atc_inv_translates_registered_vsid_and_refuses_unknown_one() {
    let mut rig = Rig::new();
    rig.viommu.vdevice_alloc(8, 0x108).unwrap();
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    rig.calls();
    rig.put_cmd(Q0, 0, atc_inv(8, 0x5000));
    rig.put_cmd(Q0, 1, atc_inv(9, 0x5000));
    rig.w32(Rig::p0(0, 0x4), 2);
    assert_eq!(
        rig.calls(),
        ["vcmdq_exec index=0 op=ATC_INV vsid=0x8 psid=0x108 addr=0x5000"]
    );
    assert_eq!(rig.r32(Rig::p0(0, 0x0)), (1 << 24) | 1);
}

#[test]
fn base_written_out_of_order_is_refused_then_retried_after_lower_queue() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    rig.w64(Rig::p1(1), Q1 | LOG2SIZE);
    rig.w32(Rig::p0(1, 0x8), 1);
    assert!(rig.calls().is_empty(), "refused before the backend");
    assert_eq!(rig.r32(Rig::p0(1, 0x10)), 1 << 2, "GERROR.CMDQ_INIT_ERR");
    assert_eq!(rig.r32(Rig::p0(1, 0xc)), 0, "STATUS not enabled");
    rig.w64(Rig::p1(0), Q0 | LOG2SIZE);
    assert_eq!(
        rig.calls(),
        [
            format!("hw_queue_alloc index=0 gpa={Q0:#x} len=0x1000"),
            format!("hw_queue_alloc index=1 gpa={Q1:#x} len=0x1000"),
        ]
    );
    assert_eq!(rig.r32(Rig::p0(1, 0xc)), 1, "cached CONFIG.EN flushed");
    assert_eq!(rig.r32(Rig::p0(1, 0x10)), 0, "CMDQ_INIT_ERR cleared");
}

#[test]
fn init_err_of_a_refused_base_clears_when_a_later_base_is_allocated() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    // The high half alone: a BASE outside guest RAM.
    rig.w32(Rig::p1(0) + 4, 1);
    assert_eq!(rig.r32(Rig::p0(0, 0x10)), 1 << 2, "refused");
    rig.w64(Rig::p1(0), Q0 | LOG2SIZE);
    assert_eq!(rig.calls().len(), 1, "allocated");
    assert_eq!(rig.r32(Rig::p0(0, 0x10)), 0, "CMDQ_INIT_ERR cleared");
    assert_eq!(rig.r32(GLOBAL_PAGE0 + 0x10), 0, "on the alias too");
    rig.w32(Rig::p0(0, 0x8), 1);
    assert_eq!(rig.r32(Rig::p0(0, 0xc)), 1, "the queue enables");
}

fn assert_base_refused(base: u64) {
    let mut rig = Rig::with(EmulatedCmdqvConfig {
        info: CmdqvHostInfo {
            cmdqs: 12,
            ..EmulatedCmdqvConfig::default().info
        },
        mapped: false,
    });
    rig.probe_until_mapped();
    rig.w64(Rig::p1(0), base);
    rig.w32(Rig::p0(0, 0x8), 1);
    assert!(rig.calls().is_empty(), "BASE {base:#x} reached the backend");
    assert_eq!(rig.r32(Rig::p0(0, 0x10)), 1 << 2, "BASE {base:#x}");
    assert_eq!(rig.r32(Rig::p0(0, 0xc)), 0, "BASE {base:#x}");
}

#[test]
fn misaligned_base_sets_cmdq_init_err() {
    assert_base_refused((Q0 + 0x800) | LOG2SIZE);
}

#[test]
fn queue_larger_than_host_cmdqs_sets_cmdq_init_err() {
    assert_base_refused(Q0 | 13);
}

#[test]
fn queue_larger_than_the_guests_idr1_cmdqs_sets_cmdq_init_err() {
    // The host takes 16 << 19 bytes, but the vSMMU shows CMDQS 8 (one
    // 4 KiB page of guest RAM): a bigger VCMDQ never reaches the kernel,
    // which would refuse its discontiguous pages (EFAULT).
    let mut rig = Rig::with_config(
        EmulatedCmdqvConfig::default(),
        CmdqvConfig {
            cmdqs: 8,
            ..CmdqvConfig::default()
        },
    );
    rig.probe_until_mapped();
    rig.w64(Rig::p1(0), Q0 | 9);
    assert!(rig.calls().is_empty(), "refused before the backend");
    assert_eq!(rig.r32(Rig::p0(0, 0x10)), 1 << 2, "GERROR.CMDQ_INIT_ERR");
    rig.w64(Rig::p1(0), Q0 | 8);
    assert_eq!(rig.calls().len(), 1, "16 << 8 bytes is allocated");
}

#[test]
fn queue_outside_guest_ram_sets_cmdq_init_err() {
    assert_base_refused(0x8000_0000 | LOG2SIZE);
    assert_base_refused((RAM + RAM_SIZE as u64 - 0x800) | LOG2SIZE);
}

#[test]
fn init_err_is_acknowledged_through_gerrorn() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    rig.w64(Rig::p1(0), (Q0 + 0x800) | LOG2SIZE);
    let gerror = rig.r32(Rig::p0(0, 0x10));
    rig.w32(Rig::p0(0, 0x14), gerror);
    assert_eq!(rig.r32(Rig::p0(0, 0x10)), rig.r32(Rig::p0(0, 0x14)));
    rig.w64(Rig::p1(0), Q0 | LOG2SIZE);
    assert_eq!(rig.calls().len(), 1, "a corrected BASE is allocated");
}

#[test]
fn base_rewrite_of_lower_queue_frees_higher_first_and_reallocates() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    rig.init_queue(1, Q1);
    rig.calls();
    let q0b = Q0 + 0x1000;
    rig.w64(Rig::p1(0), q0b | LOG2SIZE);
    assert_eq!(
        rig.calls(),
        [
            "hw_queue_free index=1".to_string(),
            "hw_queue_free index=0".to_string(),
            format!("hw_queue_alloc index=0 gpa={q0b:#x} len=0x1000"),
            format!("hw_queue_alloc index=1 gpa={Q1:#x} len=0x1000"),
        ]
    );
    assert_eq!(
        rig.r32(Rig::p0(0, 0xc)),
        1,
        "still enabled after re-allocation"
    );
    assert_eq!(rig.r32(Rig::p0(1, 0xc)), 1);
}

#[test]
fn queue_error_survives_reallocation_behind_the_guests_back() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    rig.init_queue(1, Q1);
    rig.put_cmd(Q1, 0, cfgi_ste(8));
    rig.w32(Rig::p0(1, 0x4), 1);
    assert_eq!(rig.r32(Rig::p0(1, 0x0)), 1 << 24, "CONS.ERR=ILL");
    rig.calls();
    // LVCMDQ0's BASE moves: LVCMDQ1 is freed and allocated again with it.
    rig.w64(Rig::p1(0), (Q0 + 0x1000) | LOG2SIZE);
    assert_eq!(rig.calls().len(), 4, "two frees, two allocations");
    assert_eq!(rig.r32(Rig::p0(1, 0x0)), 1 << 24, "CONS.ERR still ILL");
    let gerror = rig.r32(Rig::p0(1, 0x10));
    assert_ne!(gerror & 1, rig.r32(Rig::p0(1, 0x14)) & 1, "still active");
    assert_eq!(rig.r64(0x10c0), 0b10, "still in the error map");
    // One round of Linux's recovery: skip the entry, acknowledge.
    rig.put_cmd(Q1, 0, [0x46, 0]);
    rig.w32(Rig::p0(1, 0x14), gerror);
    assert_eq!(rig.r32(Rig::p0(1, 0x0)), 1, "resumed past the bad entry");
    assert_eq!(rig.r64(0x10c0), 0);
}

/// Raise a CMDQ_ERR on LVCMDQ 0 (an unsupported command) and have the guest
/// acknowledge it as Linux does; returns the host GERROR it left behind.
fn raise_and_acknowledge_error_on_queue0(rig: &mut Rig) -> u32 {
    rig.put_cmd(Q0, 0, cfgi_ste(8));
    rig.w32(Rig::p0(0, 0x4), 1);
    let gerror = rig.r32(Rig::p0(0, 0x10));
    assert_eq!(gerror & 1, 1, "GERROR.CMDQ_ERR raised");
    rig.put_cmd(Q0, 0, [0x46, 0]);
    rig.w32(Rig::p0(0, 0x14), gerror);
    assert_eq!(rig.r32(Rig::p0(0, 0x0)), 1, "recovered");
    gerror
}

#[test]
fn error_of_an_earlier_boot_is_not_active_after_the_queue_is_reallocated() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    let gerror = raise_and_acknowledge_error_on_queue0(&mut rig);
    // VM reboot: the HW queue is freed; the host keeps its GERROR toggled.
    rig.cmdqv.reset();
    rig.irqs();
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    assert_eq!(rig.r32(Rig::p0(0, 0x10)), gerror, "host GERROR as it was");
    assert_eq!(
        rig.r32(Rig::p0(0, 0x14)),
        gerror,
        "no error this boot caused: GERRORN = GERROR"
    );
    assert_eq!(rig.r64(0x10c0), 0, "LVCMDQ_ERR_MAP");
    rig.calls();
    rig.put_cmd(Q0, 0, tlbi_nh_va(1, 0x1000));
    rig.w32(Rig::p0(0, 0x4), 1);
    assert_eq!(rig.r32(Rig::p0(0, 0x0)), 1, "the queue consumes");
    assert_eq!(rig.calls().len(), 1);
    assert!(rig.irqs().is_empty());
}

#[test]
fn acknowledgement_written_before_allocation_survives_it() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    raise_and_acknowledge_error_on_queue0(&mut rig);
    rig.cmdqv.reset();
    rig.probe_until_mapped();
    // A driver that acknowledges whatever it finds before it programs
    // BASE: the model must remember what that write acknowledged.
    let gerror = rig.r32(Rig::p0(0, 0x10));
    rig.w32(Rig::p0(0, 0x14), gerror);
    rig.init_queue(0, Q0);
    assert_eq!(rig.r32(Rig::p0(0, 0x14)), rig.r32(Rig::p0(0, 0x10)));
    assert_eq!(rig.r64(0x10c0), 0);
}

#[test]
fn registers_the_guest_never_wrote_keep_the_kernels_reset_values() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    // Only BASE: PROD, CONS, CONFIG and GERRORN stay as the kernel's
    // reset on IOMMU_HW_QUEUE_ALLOC left them.
    rig.w64(Rig::p1(0), Q0 | LOG2SIZE);
    assert_eq!(rig.calls().len(), 1);
    for reg in [0x0, 0x4, 0x8] {
        assert_eq!(rig.r32(Rig::p0(0, reg)), 0, "register {reg:#x}");
    }
    assert_eq!(rig.r32(Rig::p0(0, 0x14)), rig.r32(Rig::p0(0, 0x10)));
}

#[test]
fn a_hw_queue_whose_free_failed_stays_owned_and_is_freed_later() {
    let (mut rig, fail) = rig_with_failing_frees();
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    rig.init_queue(1, Q1);
    rig.calls();
    // LVCMDQ0 moves: LVCMDQ1 must go first, and the host refuses that once.
    fail.store(1, Ordering::SeqCst);
    let q0b = Q0 + 0x1000;
    rig.w64(Rig::p1(0), q0b | LOG2SIZE);
    assert!(
        rig.calls().is_empty(),
        "nothing freed or allocated under a HW queue the host still holds"
    );
    assert_eq!(rig.r32(Rig::p0(0, 0x10)) & 4, 0, "no CMDQ_INIT_ERR");
    assert_eq!(rig.r32(Rig::p0(1, 0xc)), 1, "LVCMDQ1 still runs");
    // The next change retries, in the kernel's order.
    rig.w32(0x1000, 0);
    assert_eq!(
        rig.calls(),
        ["hw_queue_free index=1", "hw_queue_free index=0"]
    );
    rig.w32(0x1000, 1);
    assert_eq!(
        rig.calls(),
        [
            format!("hw_queue_alloc index=0 gpa={q0b:#x} len=0x1000"),
            format!("hw_queue_alloc index=1 gpa={Q1:#x} len=0x1000"),
        ]
    );
}

#[test]
fn a_hw_queue_whose_free_failed_at_reset_is_freed_before_the_next_boot_uses_it() {
    let (mut rig, fail) = rig_with_failing_frees();
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    rig.calls();
    fail.store(1, Ordering::SeqCst);
    rig.cmdqv.reset();
    assert!(rig.calls().is_empty(), "the free failed");
    rig.probe_until_mapped();
    rig.init_queue(0, Q1);
    assert_eq!(
        rig.calls(),
        [
            "hw_queue_free index=0".to_string(),
            format!("hw_queue_alloc index=0 gpa={Q1:#x} len=0x1000"),
        ]
    );
    assert_eq!(rig.r32(Rig::p0(0, 0xc)), 1, "enabled");
    assert_eq!(rig.r32(Rig::p0(0, 0x10)), 0, "no CMDQ_INIT_ERR");
}

#[test]
fn same_base_written_twice_allocates_once() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    rig.w64(Rig::p1(0), Q0 | LOG2SIZE);
    rig.w64(Rig::p1(0), Q0 | LOG2SIZE);
    rig.w32(0x200, 1);
    assert_eq!(rig.calls().len(), 1);
}

#[test]
fn disabled_queue_keeps_pending_commands_until_enabled() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    rig.put_cmd(Q0, 0, tlbi_nh_va(1, 0x1000));
    rig.w32(Rig::p0(0, 0x8), 0);
    assert_eq!(rig.r32(Rig::p0(0, 0xc)), 0);
    rig.w32(Rig::p0(0, 0x4), 1);
    assert_eq!(
        rig.r32(Rig::p0(0, 0x0)),
        0,
        "nothing consumed while disabled"
    );
    rig.calls();
    rig.w32(Rig::p0(0, 0x8), 1);
    assert_eq!(rig.r32(Rig::p0(0, 0x0)), 1);
    assert_eq!(rig.calls().len(), 1);
}

#[test]
fn vintf_disable_frees_queues_descending_and_reenable_works() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    rig.init_queue(1, Q1);
    rig.calls();
    rig.w32(0x1000, 0);
    assert_eq!(rig.r32(0x1004), 0);
    assert_eq!(
        rig.calls(),
        ["hw_queue_free index=1", "hw_queue_free index=0"]
    );
    assert_eq!(rig.r32(Rig::p0(0, 0xc)), 0, "cache: not enabled");
    rig.w32(0x1000, 1);
    assert_eq!(rig.calls().len(), 2, "both queues allocated again");
    assert_eq!(rig.r32(Rig::p0(1, 0xc)), 1);
}

#[test]
fn cmdqv_disable_and_reset_free_queues_descending() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    rig.init_queue(1, Q1);
    rig.calls();
    rig.w32(0x0, 0);
    assert_eq!(
        rig.calls(),
        ["hw_queue_free index=1", "hw_queue_free index=0"]
    );
    rig.w32(0x0, 1);
    assert_eq!(rig.calls().len(), 2);
    rig.cmdqv.reset();
    assert_eq!(
        rig.calls(),
        ["hw_queue_free index=1", "hw_queue_free index=0"]
    );
    assert_eq!(rig.r32(0x0), 0x0002_0083, "CONFIG reset value");
    assert_eq!(rig.r32(0x8), 1, "STATUS follows CONFIG.CMDQV_EN");
    assert_eq!(rig.r32(0x1000), 0);
    assert_eq!(rig.r64(Rig::p1(0)), 0);
}

#[test]
fn clearing_alloc_map_of_lower_queue_frees_both_and_flags_higher() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    rig.init_queue(1, Q1);
    rig.calls();
    rig.w32(0x200, 0);
    assert_eq!(
        rig.calls(),
        ["hw_queue_free index=1", "hw_queue_free index=0"]
    );
    assert_eq!(
        rig.r32(Rig::p0(1, 0x10)),
        1 << 2,
        "queue 1 lost its HW queue"
    );
}

#[test]
fn mapped_mode_unmaps_page0_before_freeing_queues() {
    let mut rig = Rig::with(EmulatedCmdqvConfig {
        mapped: true,
        ..EmulatedCmdqvConfig::default()
    });
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let viommu = rig.viommu.clone();
    rig.cmdqv.set_page0_listener(Box::new(move |event| {
        let calls: Vec<String> = viommu.take_calls().iter().map(|c| c.to_string()).collect();
        seen.lock().unwrap().push((event, calls));
    }));
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    rig.init_queue(1, Q1);
    rig.w32(0x1000, 0);
    let events = events.lock().unwrap();
    assert!(
        matches!(events[0].0, Page0Event::Map { offset: 0x30000, region } if region.len == 0x10000)
    );
    assert!(events[0].1.is_empty(), "mapped before any HW queue");
    assert_eq!(events[1].0, Page0Event::Unmap { offset: 0x30000 });
    assert_eq!(
        events[1].1.len(),
        2,
        "only the two allocations before unmap"
    );
    assert_eq!(
        rig.calls(),
        ["hw_queue_free index=1", "hw_queue_free index=0"]
    );
}

#[test]
fn sid_match_shows_registered_vdevices_and_ignores_guest_writes() {
    let mut rig = Rig::new();
    rig.viommu.vdevice_alloc(8, 0x108).unwrap();
    rig.w32(0x1040, 0x55);
    assert_eq!(rig.r32(0x1040), (8 << 1) | 1);
    assert_eq!(rig.r32(0x1080), 8, "vSID, not the host pSID");
    assert_eq!(rig.r32(0x1044), 0);
}

#[test]
fn sid_slots_stay_put_when_a_vdevice_goes_away() {
    let mut rig = Rig::new();
    rig.viommu.vdevice_alloc(8, 0x108).unwrap();
    rig.viommu.vdevice_alloc(16, 0x110).unwrap();
    rig.viommu.vdevice_destroy(8).unwrap();
    assert_eq!(rig.r32(0x1040), 0, "slot 0 free");
    assert_eq!(rig.r32(0x1080), 0);
    assert_eq!(rig.r32(0x1044), (16 << 1) | 1, "slot 1 keeps vSID 16");
    assert_eq!(rig.r32(0x1084), 16);
    rig.viommu.vdevice_alloc(24, 0x118).unwrap();
    assert_eq!(rig.r32(0x1040), (24 << 1) | 1, "lowest free slot reused");
}

#[test]
fn more_devices_than_sid_slots_is_a_typed_error() {
    let rig = Rig::new();
    assert!(rig.cmdqv.check_device_count(16).is_ok());
    let err = rig.cmdqv.check_device_count(17).unwrap_err();
    assert!(matches!(
        err,
        CmdqvError::TooManyDevices {
            count: 17,
            limit: 16
        }
    ));
    assert!(err.to_string().contains("17") && err.to_string().contains("16"));
}

#[test]
fn unknown_offsets_read_as_zero_and_ignore_writes() {
    let mut rig = Rig::new();
    rig.w32(0x300, 0xffff_ffff);
    assert_eq!(rig.r32(0x300), 0);
    assert_eq!(rig.r32(Rig::p0(0, 0x18)), 0);
    assert_eq!(rig.r32(0x5_0000), 0);
}

#[test]
fn sixty_four_bit_base_can_be_written_as_two_halves() {
    let mut rig = Rig::new();
    rig.probe_until_mapped();
    let base = 0x1_0000_0000 | LOG2SIZE;
    rig.w32(Rig::p1(0), base as u32);
    rig.w32(Rig::p1(0) + 4, (base >> 32) as u32);
    assert_eq!(rig.r64(Rig::p1(0)), base);
}

#[test]
fn a_refused_base_is_reported_to_the_guest_error_listener_as_cmdq_init_err() {
    let mut rig = Rig::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    rig.cmdqv
        .set_guest_error_listener(Box::new(move |e| sink.lock().unwrap().push(e)));
    rig.probe_until_mapped();
    rig.w64(Rig::p1(1), Q1 | LOG2SIZE);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [crate::guest_error::GuestError {
            kind: "CMDQ_INIT_ERR",
            queue: Some(1),
            vsid: None
        }]
    );
}

#[test]
fn hw_queue_stats_count_what_the_host_accepted() {
    let (mut rig, fail_frees, fail_allocs) = rig_with_failures();
    rig.probe_until_mapped();
    // The host refuses LVCMDQ0's first BASE: nothing allocated, nothing held.
    fail_allocs.store(1, Ordering::SeqCst);
    rig.init_queue(0, Q0);
    assert_eq!(
        rig.cmdqv.hw_queue_stats(),
        (0, 0, 0),
        "a refused allocation"
    );
    rig.init_queue(0, Q0 + 0x1000);
    rig.init_queue(1, Q1);
    assert_eq!(rig.cmdqv.hw_queue_stats(), (2, 2, 0));
    // A failed free keeps the queue (and the one below it) held.
    fail_frees.store(1, Ordering::SeqCst);
    rig.w32(0x1000, 0);
    assert_eq!(rig.cmdqv.hw_queue_stats(), (2, 2, 0), "a failed free");
    rig.cmdqv.reset();
    assert_eq!(
        rig.cmdqv.hw_queue_stats(),
        (0, 2, 2),
        "freed at the retry (reset)"
    );
    rig.probe_until_mapped();
    rig.init_queue(0, Q0);
    rig.init_queue(1, Q1);
    assert_eq!(rig.cmdqv.hw_queue_stats(), (2, 4, 2));
    rig.cmdqv.reset();
    assert_eq!(rig.cmdqv.hw_queue_stats(), (0, 4, 4));
}
