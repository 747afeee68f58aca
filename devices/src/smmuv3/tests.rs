//! Behaviour tests of the whole model through its MMIO window, with the
//! emulated backend and real guest memory.

use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress};

use super::cmd::{Command, Opcode, cerror};
use super::regs::{Reg, cmdq, cr0, evtq, gbpa, gerror, irq_ctrl, qbase, strtab};
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
        (cmdq::PTR.get(cons), cmdq::ERR.get(cons))
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

// ---- command queue ---------------------------------------------------------

#[test]
fn tlbi_burst_is_one_backend_call_per_cmd_sync() {
    let mut rig = rig();
    rig.enable();
    let va = |i: u64| cmd(Opcode::TlbiNhVa, 1 << 16, 0x1000 * i);
    rig.submit(&[va(1), va(2), va(3), sync(), va(4), sync()]);
    assert_eq!(
        rig.calls(),
        ["invalidate entries=3 ok=3", "invalidate entries=1 ok=1"]
    );
    assert_eq!(rig.cons(), (6, 0));
}

#[test]
fn leftover_invalidations_are_flushed_at_end_of_consume() {
    let mut rig = rig();
    rig.enable();
    rig.submit(&[
        cmd(Opcode::TlbiNsnhAll, 0, 0),
        cmd(Opcode::TlbiNhAsid, 5 << 16, 0),
    ]);
    assert_eq!(rig.calls(), ["invalidate entries=2 ok=2"]);
}

#[test]
fn cfgi_cd_and_atc_inv_go_in_the_batch() {
    let mut rig = rig_with(VsmmuConfig {
        ats: true,
        ..VsmmuConfig::default()
    });
    rig.device(8);
    rig.enable();
    rig.submit(&[
        cmd(Opcode::CfgiCd, 8, 1),
        cmd(Opcode::CfgiCdAll, 8, 0),
        cmd(Opcode::AtcInv, 8, 0),
        cmd(Opcode::TlbiNhVaa, 0, 0x2000),
        sync(),
    ]);
    assert_eq!(rig.calls(), ["invalidate entries=4 ok=4"]);
}

#[test]
fn partial_invalidation_failure_leaves_cons_on_failing_entry() {
    let mut rig = rig();
    rig.device(8);
    rig.enable();
    // Entry 2 names a vSID with no vDEVICE: the host refuses it.
    rig.submit(&[
        cmd(Opcode::TlbiNhVa, 0, 0x1000),
        cmd(Opcode::CfgiCd, 8, 0),
        cmd(Opcode::CfgiCd, 9, 0),
        cmd(Opcode::TlbiNhVa, 0, 0x3000),
        sync(),
    ]);
    assert_eq!(rig.calls(), ["invalidate entries=4 ok=2 err=EIO"]);
    assert_eq!(rig.cons(), (2, u64::from(cerror::ILL)));
    assert!(rig.cmdq_err_active());
    assert_eq!(rig.irqs(), ["gerror"]);
}

#[test]
fn illegal_command_flushes_earlier_invalidations_then_stops() {
    let mut rig = rig();
    rig.enable();
    rig.submit(&[
        cmd(Opcode::TlbiNhVa, 0, 0x1000),
        Command([0x77, 0]),
        cmd(Opcode::TlbiNhAll, 0, 0),
        sync(),
    ]);
    assert_eq!(rig.calls(), ["invalidate entries=1 ok=1"]);
    assert_eq!(rig.cons(), (1, u64::from(cerror::ILL)));
    assert_eq!(rig.irqs(), ["gerror"]);
}

#[test]
fn queue_does_not_consume_while_cmdq_err_is_active() {
    let mut rig = rig();
    rig.enable();
    rig.submit(&[Command([0x77, 0])]);
    rig.submit(&[cmd(Opcode::TlbiNhAll, 0, 0), sync()]);
    assert!(rig.calls().is_empty());
    assert_eq!(rig.cons(), (0, u64::from(cerror::ILL)));
}

#[test]
fn gerrorn_ack_after_linux_skip_resumes_from_cons() {
    let mut rig = rig();
    rig.enable();
    rig.submit(&[Command([0x77, 0]), cmd(Opcode::TlbiNhAll, 0, 0), sync()]);
    assert_eq!(rig.cons(), (0, u64::from(cerror::ILL)));
    // arm_smmu_cmdq_skip_err: overwrite the bad entry with CMD_SYNC, ack.
    rig.mem.write_obj(sync().0[0], GuestAddress(CMDQ)).unwrap();
    let gerror_value = rig.reg(Reg::Gerror);
    rig.set(Reg::Gerrorn, gerror_value);
    assert!(!rig.cmdq_err_active());
    assert_eq!(rig.cons(), (3, 0));
    assert_eq!(rig.calls(), ["invalidate entries=1 ok=1"]);
}

#[test]
fn gerror_bit_is_not_toggled_again_while_active() {
    let mut rig = rig();
    rig.enable();
    rig.submit(&[Command([0x77, 0])]);
    let first = rig.reg(Reg::Gerror);
    // CONS can be rewritten only with the queue off; re-enable and fail again.
    rig.set(Reg::Cr0, cr0::SMMUEN.mask());
    rig.set(Reg::Cr0, cr0::SMMUEN.mask() | cr0::CMDQEN.mask());
    assert_eq!(rig.reg(Reg::Gerror), first);
    assert_eq!(rig.irqs(), ["gerror"]);
}

#[test]
fn gerror_irq_is_not_pulsed_when_disabled() {
    let mut rig = rig();
    rig.enable();
    rig.set(Reg::IrqCtrl, 0);
    rig.submit(&[Command([0x00, 0])]);
    assert!(rig.cmdq_err_active());
    assert!(rig.irqs().is_empty());
}

#[test]
fn commands_the_guest_cannot_use_are_illegal() {
    let illegal = [
        cmd(Opcode::TlbiEl2All, 0, 0),
        cmd(Opcode::TlbiEl3All, 0, 0),
        cmd(Opcode::TlbiS12Vmall, 0, 0),
        cmd(Opcode::TlbiS2Ipa, 0, 0),
        cmd(Opcode::PriResp, 0, 0),
        cmd(Opcode::Resume, 0, 0),
        cmd(Opcode::AtcInv, 0, 0),
        Command([Opcode::CmdSync as u64 | (3 << 12), 0]),
    ];
    for command in illegal {
        let mut rig = rig();
        rig.enable();
        rig.submit(&[command]);
        assert_eq!(
            rig.cons(),
            (0, u64::from(cerror::ILL)),
            "{:?}",
            command.opcode()
        );
        assert!(rig.calls().is_empty());
    }
}

#[test]
fn prefetch_commands_are_no_ops() {
    let mut rig = rig();
    rig.enable();
    rig.submit(&[
        cmd(Opcode::PrefetchConfig, 1, 0),
        cmd(Opcode::PrefetchAddr, 1, 0),
    ]);
    assert_eq!(rig.cons(), (2, 0));
    assert!(rig.calls().is_empty());
}

#[test]
fn command_fetch_outside_ram_is_cerror_abt() {
    let mut rig = rig();
    rig.set(Reg::CmdqBase, 0x1000 | 3);
    rig.set(Reg::Cr0, cr0::CMDQEN.mask());
    rig.set(Reg::CmdqProd, 1);
    assert_eq!(rig.cons(), (0, u64::from(cerror::ABT)));
}

#[test]
fn prod_write_with_queue_disabled_waits_for_cmdqen() {
    let mut rig = rig();
    rig.set(Reg::CmdqBase, CMDQ | 3);
    rig.submit(&[cmd(Opcode::TlbiNhAll, 0, 0)]);
    assert_eq!(rig.cons(), (0, 0));
    rig.set(Reg::Cr0, cr0::CMDQEN.mask());
    assert_eq!(rig.cons(), (1, 0));
    assert_eq!(rig.calls(), ["invalidate entries=1 ok=1"]);
}

// ---- queue wrap ------------------------------------------------------------

#[test]
fn consume_across_queue_end_toggles_wrap() {
    let mut rig = rig();
    rig.enable();
    rig.submit(&[cmd(Opcode::PrefetchConfig, 0, 0); 6]);
    assert_eq!(rig.cons(), (6, 0));
    rig.submit(&[
        cmd(Opcode::TlbiNhAll, 0, 0),
        cmd(Opcode::TlbiNhAll, 0, 0),
        sync(),
        sync(),
    ]);
    // 6 + 4 = 10 = wrap flag (8) | index 2.
    assert_eq!(rig.cons(), (0x8 | 2, 0));
    assert_eq!(rig.calls(), ["invalidate entries=2 ok=2"]);
}

#[test]
fn full_queue_consumes_every_entry_once() {
    let mut rig = rig();
    rig.enable();
    rig.submit(&[cmd(Opcode::TlbiNhAll, 0, 0); 8]);
    assert_eq!(rig.reg(Reg::CmdqProd), 0x8);
    assert_eq!(rig.cons(), (0x8, 0));
    assert_eq!(rig.calls(), ["invalidate entries=8 ok=8"]);
}

#[test]
fn prod_bits_beyond_the_queue_size_are_ignored() {
    let mut rig = rig();
    rig.enable();
    rig.fill_with_prefetch(8);
    // Index 1, wrap 0, garbage above the wrap bit: one entry pending.
    rig.set(Reg::CmdqProd, 0xf_fff1);
    assert_eq!(rig.cons(), (1, 0));
}

#[test]
fn cmdq_log2size_is_capped_by_idr1_cmdqs() {
    let mut rig = rig_with(VsmmuConfig {
        cmdq_log2size: 7,
        ..VsmmuConfig::default()
    });
    rig.cmdq_log2size = 7;
    rig.fill_with_prefetch(1 << 8);
    rig.set(Reg::CmdqBase, CMDQ | 19);
    rig.set(Reg::Cr0, cr0::CMDQEN.mask());
    // Bit 8 is above the wrap bit of the capped 2^7 queue: nothing pending.
    // Uncapped (2^19 entries) it would mean 256 pending commands.
    rig.set(Reg::CmdqProd, 1 << 8);
    assert_eq!(rig.cons(), (0, 0));
    rig.set(Reg::CmdqProd, 1 << 7);
    assert_eq!(rig.cons(), (1 << 7, 0));
}

// ---- CMD_SYNC completion ---------------------------------------------------

#[test]
fn cmd_sync_sig_irq_without_address_pulses_wired_line() {
    let mut rig = rig();
    rig.enable();
    rig.submit(&[Command([Opcode::CmdSync as u64 | (1 << 12), 0])]);
    assert_eq!(rig.irqs(), ["cmdq-sync"]);
}

#[test]
fn cmd_sync_msi_address_in_ram_gets_the_payload() {
    let mut rig = rig();
    rig.enable();
    let target = RAM + 0x100;
    rig.submit(&[Command([
        Opcode::CmdSync as u64 | (1 << 12) | (0xfeed_u64 << 32),
        target,
    ])]);
    assert_eq!(
        rig.mem.read_obj::<u32>(GuestAddress(target)).unwrap(),
        0xfeed
    );
    assert!(rig.irqs().is_empty());
}

#[test]
fn cmd_sync_msi_address_outside_ram_is_a_doorbell_write() {
    let mut rig = rig();
    rig.enable();
    rig.submit(&[Command([
        Opcode::CmdSync as u64 | (1 << 12) | (7 << 32),
        0x0801_0040,
    ])]);
    assert_eq!(rig.irqs(), ["msi 0x8010040 0x7"]);
}

#[test]
fn cmd_sync_sev_and_none_signal_nothing() {
    let mut rig = rig();
    rig.enable();
    rig.submit(&[Command([Opcode::CmdSync as u64 | (2 << 12), 0]), sync()]);
    assert!(rig.irqs().is_empty());
    assert_eq!(rig.cons(), (2, 0));
}

// ---- stream table and STE installs ----------------------------------------

#[test]
fn cfgi_ste_installs_s1_ste_for_registered_stream() {
    let mut rig = rig();
    rig.device(8);
    rig.enable();
    rig.write_ste(8, s1_ste(CD));
    rig.submit(&[cmd(Opcode::CfgiSte, 8, 1), sync()]);
    assert_eq!(
        rig.calls(),
        ["install_ste sid=0x8 cfg=s1 ste0=0x4008000b ste1=0xd4"]
    );
}

#[test]
fn enabling_smmu_installs_guest_stes() {
    let mut rig = rig();
    rig.device(8);
    rig.write_ste(8, s1_ste(CD));
    rig.calls();
    rig.enable_with_calls();
    assert_eq!(
        rig.calls(),
        ["install_ste sid=0x8 cfg=s1 ste0=0x4008000b ste1=0xd4"]
    );
}

impl Rig {
    fn enable_with_calls(&mut self) {
        self.set(Reg::StrtabBase, STRTAB);
        self.set(Reg::StrtabBaseCfg, strtab::LOG2SIZE.make(8));
        self.set(Reg::Cr0, cr0::SMMUEN.mask());
    }
}

#[test]
fn unchanged_ste_is_not_reinstalled() {
    let mut rig = rig();
    rig.device(8);
    rig.enable();
    rig.write_ste(8, s1_ste(CD));
    rig.submit(&[cmd(Opcode::CfgiSte, 8, 1), sync()]);
    rig.calls();
    rig.submit(&[cmd(Opcode::CfgiSte, 8, 1), sync()]);
    assert!(rig.calls().is_empty());
}

#[test]
fn cfgi_ste_for_unregistered_stream_installs_nothing() {
    let mut rig = rig();
    rig.enable();
    rig.write_ste(9, s1_ste(CD));
    rig.submit(&[cmd(Opcode::CfgiSte, 9, 1), sync()]);
    assert!(rig.calls().is_empty());
}

#[test]
fn cfgi_all_visits_only_registered_streams() {
    let mut rig = rig_with(VsmmuConfig {
        sid_bits: 32,
        ..VsmmuConfig::default()
    });
    for vsid in [1, 8, 0xffff_fff0] {
        rig.device(vsid);
    }
    rig.enable();
    rig.write_ste(1, s1_ste(CD));
    rig.write_ste(8, s1_ste(CD));
    // CFGI_ALL = CFGI_STE_RANGE, Range 31.
    rig.submit(&[cmd(Opcode::CfgiSteRange, 0, 31), sync()]);
    let calls = rig.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.iter().all(|c| c.contains("cfg=s1")));
}

#[test]
fn cfgi_ste_range_is_aligned_to_its_span() {
    let mut rig = rig();
    for vsid in [3, 4, 8] {
        rig.device(vsid);
    }
    rig.enable();
    for vsid in [3, 4, 8] {
        rig.write_ste(vsid, s1_ste(CD));
    }
    // Range 1: 4 StreamIDs from 5 & !3 = 4, i.e. 4..=7.
    rig.submit(&[cmd(Opcode::CfgiSteRange, 5, 1), sync()]);
    assert_eq!(
        rig.calls(),
        ["install_ste sid=0x4 cfg=s1 ste0=0x4008000b ste1=0xd4"]
    );
}

#[test]
fn bad_ste_becomes_abort_and_c_bad_ste_event() {
    let mut rig = rig();
    rig.device(8);
    rig.enable();
    rig.write_ste(8, [ste0::V.make(1) | ste0::CONFIG.make(0b110), 0]);
    rig.submit(&[cmd(Opcode::CfgiSte, 8, 1), sync()]);
    assert_eq!(
        rig.calls(),
        ["install_ste sid=0x8 cfg=abort ste0=0x1 ste1=0x0"]
    );
    assert_eq!(rig.event(0), [0x8_0000_0004, 0, 0, 0]);
    assert_eq!(rig.reg(Reg::EvtqProd), 1);
    assert_eq!(rig.irqs(), ["eventq"]);
}

#[test]
fn stream_outside_table_aborts_without_event() {
    let mut rig = rig();
    rig.device(0x300);
    rig.set(Reg::EvtqBase, EVTQ | 3);
    rig.set(Reg::Cr0, cr0::EVTQEN.mask());
    rig.set(Reg::StrtabBase, STRTAB);
    rig.set(Reg::StrtabBaseCfg, strtab::LOG2SIZE.make(8));
    rig.calls();
    rig.set(Reg::Cr0, cr0::SMMUEN.mask() | cr0::EVTQEN.mask());
    assert_eq!(
        rig.calls(),
        ["install_ste sid=0x300 cfg=abort ste0=0x1 ste1=0x0"]
    );
    assert_eq!(rig.reg(Reg::EvtqProd), 0);
}

#[test]
fn ste_fetch_outside_ram_is_f_ste_fetch() {
    let mut rig = rig();
    rig.device(2);
    rig.set(Reg::StrtabBase, 0x1000);
    rig.set(Reg::StrtabBaseCfg, strtab::LOG2SIZE.make(8));
    rig.set(Reg::EvtqBase, EVTQ | 3);
    rig.set(Reg::Cr0, cr0::SMMUEN.mask() | cr0::EVTQEN.mask());
    assert_eq!(rig.event(0), [0x2_0000_0003, 0, 0, 0x1080]);
}

#[test]
fn two_level_stream_table_through_the_model() {
    let mut rig = rig();
    rig.device(0x101);
    let l2 = STRTAB + 0x4000;
    rig.mem.write_obj(l2 | 9, GuestAddress(STRTAB + 8)).unwrap();
    rig.mem
        .write_obj(s1_ste(CD)[0], GuestAddress(l2 + 64))
        .unwrap();
    rig.set(Reg::StrtabBase, STRTAB);
    rig.set(
        Reg::StrtabBaseCfg,
        strtab::LOG2SIZE.make(16) | strtab::SPLIT.make(8) | strtab::FMT.make(strtab::FMT_2LVL),
    );
    rig.calls();
    rig.set(Reg::Cr0, cr0::SMMUEN.mask());
    assert_eq!(
        rig.calls(),
        ["install_ste sid=0x101 cfg=s1 ste0=0x4008000b ste1=0x0"]
    );
}

#[test]
fn disabling_smmu_returns_streams_to_gbpa() {
    let mut rig = rig();
    rig.device(8);
    rig.enable();
    rig.write_ste(8, s1_ste(CD));
    rig.submit(&[cmd(Opcode::CfgiSte, 8, 1), sync()]);
    rig.calls();
    rig.set(Reg::Cr0, cr0::CMDQEN.mask());
    assert_eq!(
        rig.calls(),
        ["install_ste sid=0x8 cfg=bypass ste0=0x9 ste1=0x0"]
    );
}

// ---- events ----------------------------------------------------------------

#[test]
fn backend_events_land_in_guest_queue_with_one_irq() {
    let mut rig = rig();
    rig.enable();
    rig.backend.inject_event([0x8_0000_0010, 1, 2, 3]);
    rig.backend.inject_event([0x8_0000_0013, 4, 5, 6]);
    rig.smmu.process_events();
    assert_eq!(rig.event(0), [0x8_0000_0010, 1, 2, 3]);
    assert_eq!(rig.event(1), [0x8_0000_0013, 4, 5, 6]);
    assert_eq!(rig.reg(Reg::EvtqProd), 2);
    assert_eq!(rig.irqs(), ["eventq"]);
}

#[test]
fn full_event_queue_drops_and_toggles_ovflg_once() {
    let mut rig = rig();
    rig.enable();
    for i in 0..10 {
        rig.backend.inject_event([i, 0, 0, 0]);
    }
    rig.smmu.process_events();
    let prod = rig.reg(Reg::EvtqProd);
    assert_eq!(evtq::PTR.get(prod), 0x8, "8 entries, wrapped");
    assert!(evtq::OVFLG.is_set(prod), "overflow flagged");
    assert_eq!(rig.event(0)[0], 0);
    // The guest drains and acknowledges; a new overflow toggles again.
    rig.set(Reg::EvtqCons, 0x8 | evtq::OVFLG.mask());
    for i in 0..9 {
        rig.backend.inject_event([i, 0, 0, 0]);
    }
    rig.smmu.process_events();
    let prod = rig.reg(Reg::EvtqProd);
    assert_eq!(evtq::PTR.get(prod), 0);
    assert!(!evtq::OVFLG.is_set(prod), "second overflow toggles back");
}

#[test]
fn events_are_dropped_while_evtq_is_disabled() {
    let mut rig = rig();
    rig.enable();
    rig.set(Reg::Cr0, cr0::SMMUEN.mask() | cr0::CMDQEN.mask());
    rig.backend.inject_event([1, 0, 0, 0]);
    rig.smmu.process_events();
    assert_eq!(rig.reg(Reg::EvtqProd), 0);
    assert!(rig.irqs().is_empty());
}

#[test]
fn event_write_outside_ram_raises_evtq_abt_err() {
    let mut rig = rig();
    rig.set(Reg::EvtqBase, 0x1000 | 3);
    rig.set(Reg::IrqCtrl, irq_ctrl::GERROR_IRQEN.mask());
    rig.set(Reg::Cr0, cr0::EVTQEN.mask());
    rig.backend.inject_event([1, 0, 0, 0]);
    rig.smmu.process_events();
    assert!(gerror::EVTQ_ABT_ERR.is_set(rig.reg(Reg::Gerror)));
    assert_eq!(rig.irqs(), ["gerror"]);
}

#[test]
fn evtq_log2size_is_capped_by_idr1_evtqs() {
    let mut rig = rig_with(VsmmuConfig {
        evtq_log2size: 1,
        ..VsmmuConfig::default()
    });
    rig.set(Reg::EvtqBase, EVTQ | qbase::LOG2SIZE.mask());
    rig.set(Reg::Cr0, cr0::EVTQEN.mask());
    for i in 0..3 {
        rig.backend.inject_event([i, 0, 0, 0]);
    }
    rig.smmu.process_events();
    let prod = rig.reg(Reg::EvtqProd);
    assert_eq!(evtq::PTR.get(prod), 0x2);
    assert!(evtq::OVFLG.is_set(prod));
}
