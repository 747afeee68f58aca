//! Behaviour tests of the whole model through its MMIO window, with the
//! emulated backend and real guest memory.

use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress};

mod cmdq;
mod invalidate_errors;
mod streams_events;

use super::cmd::{Command, Opcode};
use super::regs::{Reg, cmdq as cmdq_reg, cr0, gbpa, gerror, irq_ctrl, strtab};
use super::ste::{ste0, ste1};
use super::*;
use crate::emulated::EmulatedBackend;
use crate::irq::{InterruptSink, IrqLine};

const RAM: u64 = 0x4000_0000;
const CMDQ: u64 = RAM + 0x1_0000;
const EVTQ: u64 = RAM + 0x2_0000;
const STRTAB: u64 = RAM + 0x4_0000;
const CD: u64 = RAM + 0x8_0000;

#[derive(Default)]
struct RecordingIrqs(Mutex<Vec<String>>);

impl InterruptSink for RecordingIrqs {
    fn trigger(&self, line: IrqLine) {
        self.0.lock().unwrap().push(line.name().to_string());
    }
    fn set_level(&self, line: IrqLine, asserted: bool) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{}={}", line.name(), u8::from(asserted)));
    }
    fn msi(&self, addr: u64, data: u32) {
        self.0
            .lock()
            .unwrap()
            .push(format!("msi {addr:#x} {data:#x}"));
    }
}

struct Rig {
    smmu: Smmuv3,
    backend: EmulatedBackend,
    mem: GuestMemory,
    irqs: Arc<RecordingIrqs>,
    prod: u32,
    cmdq_log2size: u32,
}

fn rig_with(config: VsmmuConfig) -> Rig {
    let mem = GuestMemory::from_ranges(&[(GuestAddress(RAM), 0x10_0000)]).unwrap();
    let backend = EmulatedBackend::new();
    let irqs = Arc::new(RecordingIrqs::default());
    let smmu = Smmuv3::new(
        &config,
        Box::new(backend.clone()),
        mem.clone(),
        irqs.clone(),
    )
    .unwrap();
    Rig {
        smmu,
        backend,
        mem,
        irqs,
        prod: 0,
        cmdq_log2size: 3,
    }
}

fn rig() -> Rig {
    rig_with(VsmmuConfig::default())
}

fn s1_ste(cd: u64) -> [u64; 2] {
    [
        ste0::V.make(1) | ste0::CONFIG.make(0b101) | (cd & ste0::S1CONTEXTPTR.mask()),
        ste1::S1CIR.make(1) | ste1::S1COR.make(1) | ste1::S1CSH.make(3),
    ]
}

fn cmd(op: Opcode, word0_high: u64, word1: u64) -> Command {
    Command([op as u64 | (word0_high << 32), word1])
}

fn sync() -> Command {
    cmd(Opcode::CmdSync, 0, 0)
}

impl Rig {
    fn w32(&mut self, offset: u64, value: u32) {
        self.smmu.write(offset, &value.to_le_bytes());
    }
    fn w64(&mut self, offset: u64, value: u64) {
        self.smmu.write(offset, &value.to_le_bytes());
    }
    fn r32(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.smmu.read(offset, &mut data);
        u32::from_le_bytes(data)
    }
    fn r64(&mut self, offset: u64) -> u64 {
        let mut data = [0u8; 8];
        self.smmu.read(offset, &mut data);
        u64::from_le_bytes(data)
    }
    fn reg(&mut self, reg: Reg) -> u64 {
        let decl = reg.decl();
        if decl.size == 8 {
            self.r64(decl.offset)
        } else {
            u64::from(self.r32(decl.offset))
        }
    }
    fn set(&mut self, reg: Reg, value: u64) {
        let decl = reg.decl();
        if decl.size == 8 {
            self.w64(decl.offset, value);
        } else {
            self.w32(decl.offset, value as u32);
        }
    }

    /// The Linux driver's reset order, minus the command queue traffic.
    fn enable(&mut self) {
        self.set(Reg::StrtabBase, STRTAB);
        self.set(Reg::StrtabBaseCfg, strtab::LOG2SIZE.make(8));
        self.set(Reg::CmdqBase, CMDQ | u64::from(self.cmdq_log2size));
        self.set(Reg::EvtqBase, EVTQ | 3);
        self.set(
            Reg::IrqCtrl,
            irq_ctrl::GERROR_IRQEN.mask() | irq_ctrl::EVENTQ_IRQEN.mask(),
        );
        self.set(
            Reg::Cr0,
            cr0::SMMUEN.mask() | cr0::CMDQEN.mask() | cr0::EVTQEN.mask(),
        );
        self.backend.take_calls();
        self.irqs.0.lock().unwrap().clear();
    }

    fn write_ste(&self, sid: u32, words: [u64; 2]) {
        let addr = STRTAB + u64::from(sid) * 64;
        self.mem.write_obj(words[0], GuestAddress(addr)).unwrap();
        self.mem
            .write_obj(words[1], GuestAddress(addr + 8))
            .unwrap();
    }

    fn device(&mut self, vsid: u32) {
        self.backend
            .vdevice_alloc(vsid, vsid.wrapping_add(0x1000))
            .unwrap();
        self.smmu.register_stream(vsid);
    }

    /// An endpoint the model knows but whose vDEVICE the host no longer
    /// has (destroyed under it): the host refuses its commands with EIO.
    fn device_lost_by_host(&mut self, vsid: u32) {
        self.smmu.register_stream(vsid);
        let _ = self.backend.take_calls();
    }

    /// Write commands at PROD and publish them with one PROD write.
    fn submit(&mut self, commands: &[Command]) {
        let geometry = queue::QueueGeometry::new(self.cmdq_log2size);
        for command in commands {
            let addr = CMDQ + u64::from(geometry.index(self.prod)) * 16;
            self.mem
                .write_obj(command.0[0], GuestAddress(addr))
                .unwrap();
            self.mem
                .write_obj(command.0[1], GuestAddress(addr + 8))
                .unwrap();
            self.prod = geometry.next(self.prod);
        }
        self.set(Reg::CmdqProd, u64::from(self.prod));
    }

    /// Fill `entries` queue slots with PREFETCH_CONFIG (a legal no-op).
    fn fill_with_prefetch(&self, entries: u64) {
        for i in 0..entries {
            let addr = GuestAddress(CMDQ + i * 16);
            self.mem
                .write_obj(Opcode::PrefetchConfig as u64, addr)
                .unwrap();
        }
    }

    fn calls(&self) -> Vec<String> {
        self.backend
            .take_calls()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn irqs(&self) -> Vec<String> {
        std::mem::take(&mut *self.irqs.0.lock().unwrap())
    }

    fn cons(&mut self) -> (u64, u64) {
        let cons = self.reg(Reg::CmdqCons);
        (cmdq_reg::PTR.get(cons), cmdq_reg::ERR.get(cons))
    }

    fn cmdq_err_active(&mut self) -> bool {
        gerror::CMDQ_ERR.is_set(self.reg(Reg::Gerror) ^ self.reg(Reg::Gerrorn))
    }

    fn event(&self, index: u64) -> [u64; 4] {
        let mut words = [0u64; 4];
        for (i, word) in words.iter_mut().enumerate() {
            *word = self
                .mem
                .read_obj(GuestAddress(EVTQ + index * 32 + i as u64 * 8))
                .unwrap();
        }
        words
    }
}

// ---- register access rules ------------------------------------------------

#[test]
fn cr0_write_is_acknowledged_immediately() {
    let mut rig = rig();
    rig.set(
        Reg::Cr0,
        cr0::CMDQEN.mask() | cr0::EVTQEN.mask() | cr0::PRIQEN.mask(),
    );
    assert_eq!(
        rig.reg(Reg::Cr0Ack),
        cr0::CMDQEN.mask() | cr0::EVTQEN.mask(),
        "PRIQEN is RES0 without PRI"
    );
}

#[test]
fn atschk_is_res0_without_ats() {
    let mut rig = rig();
    rig.set(Reg::Cr0, cr0::ATSCHK.mask());
    assert_eq!(rig.reg(Reg::Cr0Ack), 0);
    let mut rig = rig_with(VsmmuConfig {
        ats: crate::smmuv3::idr::HostChoice::On,
        ..VsmmuConfig::default()
    });
    rig.set(Reg::Cr0, cr0::ATSCHK.mask());
    assert_eq!(rig.reg(Reg::Cr0Ack), cr0::ATSCHK.mask());
}

#[test]
fn model_can_live_behind_a_mutex_shared_across_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Smmuv3>();
}

#[test]
fn gbpa_update_applies_and_reads_back_complete() {
    let mut rig = rig();
    assert_eq!(rig.reg(Reg::Gbpa), gbpa::RESET);
    rig.set(Reg::Gbpa, gbpa::ABORT.mask());
    assert_eq!(rig.reg(Reg::Gbpa), gbpa::RESET, "no UPDATE: ignored");
    rig.set(Reg::Gbpa, gbpa::ABORT.mask() | gbpa::UPDATE.mask());
    assert_eq!(rig.reg(Reg::Gbpa), gbpa::ABORT.mask());
}

#[test]
fn gbpa_abort_while_disabled_reinstalls_registered_streams() {
    let mut rig = rig();
    rig.device(4);
    assert_eq!(
        rig.calls().last().unwrap(),
        "install_ste sid=0x4 cfg=bypass ste0=0x9 ste1=0x0"
    );
    rig.set(Reg::Gbpa, gbpa::ABORT.mask() | gbpa::UPDATE.mask());
    assert_eq!(
        rig.calls(),
        ["install_ste sid=0x4 cfg=abort ste0=0x1 ste1=0x0"]
    );
}

#[test]
fn irq_ctrl_ack_mirrors_irq_ctrl_and_drops_priq_enable() {
    let mut rig = rig();
    rig.set(Reg::IrqCtrl, 0x7);
    assert_eq!(rig.reg(Reg::IrqCtrlAck), 0x5);
}

#[test]
fn unknown_offsets_and_priq_read_zero_and_ignore_writes() {
    let mut rig = rig();
    for offset in [0x30, 0xc0, 0x100c8, 0xe00, 0x1fffc] {
        rig.w32(offset, 0xffff_ffff);
        assert_eq!(rig.r32(offset), 0, "offset {offset:#x}");
    }
    rig.w64(0xc0, u64::MAX);
    assert_eq!(rig.r64(0xc0), 0);
}

#[test]
fn id_registers_are_read_only() {
    let mut rig = rig();
    let idr0 = rig.reg(Reg::Idr0);
    rig.set(Reg::Idr0, 0);
    assert_eq!(rig.reg(Reg::Idr0), idr0);
    assert_ne!(idr0, 0);
    assert_eq!(rig.reg(Reg::Aidr), 2);
}

#[test]
fn sixty_four_bit_register_takes_word_halves_and_doublewords() {
    let mut rig = rig();
    rig.w32(0x80, 0x4004_0040);
    rig.w32(0x84, 0x0000_0001);
    assert_eq!(rig.r64(0x80), 0x1_4004_0040);
    assert_eq!(rig.r32(0x84), 1);
    rig.w64(0x80, u64::MAX);
    assert_eq!(rig.r64(0x80), strtab::ADDR.mask() | strtab::RA.mask());
}

#[test]
fn misaligned_and_odd_sized_accesses_are_raz_wi() {
    let mut rig = rig();
    rig.smmu.write(0x20, &[0xff, 0xff]);
    rig.smmu.write(0x21, &[0xff; 4]);
    assert_eq!(rig.reg(Reg::Cr0), 0);
    let mut data = [0xaa_u8; 8];
    rig.smmu.read(0x20, &mut data);
    assert_eq!(data, [0; 8], "8-byte read of a 32-bit register");
}

#[test]
fn queue_bases_are_fixed_while_their_queue_is_enabled() {
    let mut rig = rig();
    rig.enable();
    rig.set(Reg::CmdqBase, RAM);
    rig.set(Reg::CmdqCons, 5);
    rig.set(Reg::EvtqBase, RAM);
    rig.set(Reg::StrtabBase, RAM);
    assert_eq!(rig.reg(Reg::CmdqBase), CMDQ | 3);
    assert_eq!(rig.reg(Reg::CmdqCons), 0);
    assert_eq!(rig.reg(Reg::EvtqBase), EVTQ | 3);
    assert_eq!(rig.reg(Reg::StrtabBase), STRTAB);
}

#[test]
fn reset_restores_power_on_values_and_gbpa_bypass() {
    let mut rig = rig();
    rig.device(1);
    rig.enable();
    rig.submit(&[cmd(Opcode::TlbiNhAll, 0, 0), sync()]);
    rig.calls();
    rig.smmu.reset();
    for reg in [
        Reg::Cr0,
        Reg::Cr0Ack,
        Reg::CmdqBase,
        Reg::CmdqProd,
        Reg::CmdqCons,
    ] {
        assert_eq!(rig.reg(reg), 0, "{}", reg.decl().name);
    }
    assert_eq!(rig.reg(Reg::Gbpa), gbpa::RESET);
    assert_eq!(
        rig.calls(),
        ["install_ste sid=0x1 cfg=bypass ste0=0x9 ste1=0x0"]
    );
}
