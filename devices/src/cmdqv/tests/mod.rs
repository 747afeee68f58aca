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

mod lifecycle;
mod queues;
