//! Stream table walks, STE installs and the event queue.

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::smmuv3::regs::{evtq, qbase};

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
fn refused_ste_puts_the_stream_on_abort_not_its_previous_bypass() {
    let mut rig = rig();
    rig.device(8);
    // SMMUEN = 0 with GBPA bypass: the device may DMA to all guest RAM.
    assert_eq!(rig.backend.stream_translation(8), Some(SteConfig::Bypass));
    rig.backend.refuse_ste_installs(&[SteConfig::S1Translate]);
    rig.write_ste(8, s1_ste(CD));
    rig.enable();
    assert_eq!(
        rig.backend.stream_translation(8),
        Some(SteConfig::Abort),
        "the guest is told C_BAD_STE: its device must abort, not bypass"
    );
    assert_eq!(rig.event(0), [0x8_0000_0004, 0, 0, 0], "C_BAD_STE");
    assert_eq!(rig.smmu.abort_fallback_failures(), 0);
    // The refusal is not sticky: a later CFGI_STE tries the guest's STE.
    rig.backend.refuse_ste_installs(&[]);
    rig.submit(&[cmd(Opcode::CfgiSte, 8, 1), sync()]);
    assert_eq!(
        rig.backend.stream_translation(8),
        Some(SteConfig::S1Translate)
    );
}

#[test]
fn refused_abort_fallback_is_counted_and_never_silent() {
    let mut rig = rig();
    rig.device(8);
    rig.backend
        .refuse_ste_installs(&[SteConfig::S1Translate, SteConfig::Abort]);
    rig.write_ste(8, s1_ste(CD));
    rig.enable_with_calls();
    // The host keeps the bypass it could not replace: the model says so.
    assert_eq!(rig.backend.stream_translation(8), Some(SteConfig::Bypass));
    assert_eq!(rig.smmu.abort_fallback_failures(), 1);
    // Not remembered as installed: the next apply tries again.
    rig.backend.refuse_ste_installs(&[SteConfig::S1Translate]);
    rig.set(Reg::Cr0, 0);
    rig.set(Reg::Cr0, cr0::SMMUEN.mask());
    assert_eq!(rig.backend.stream_translation(8), Some(SteConfig::Abort));
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

fn msi_rig() -> Rig {
    rig_with(VsmmuConfig {
        msi: true,
        ..VsmmuConfig::default()
    })
}

#[test]
fn with_msi_events_and_errors_signal_their_programmed_doorbells() {
    let mut rig = msi_rig();
    assert!(rig.smmu.id_registers().msi());
    rig.enable();
    rig.set(Reg::EvtqIrqCfg0, 0x0809_0040);
    rig.set(Reg::EvtqIrqCfg1, 0x21);
    rig.set(Reg::GerrorIrqCfg0, 0x0809_0040);
    rig.set(Reg::GerrorIrqCfg1, 0x22);
    rig.backend.inject_event([0x8_0000_0010, 1, 2, 3]);
    rig.smmu.process_events();
    rig.submit(&[Command([0xff, 0])]); // an illegal command: GERROR.CMDQ_ERR
    assert_eq!(rig.irqs(), ["msi 0x8090040 0x21", "msi 0x8090040 0x22"]);
}

#[test]
fn with_msi_but_no_doorbell_programmed_the_wired_line_fires() {
    let mut rig = msi_rig();
    rig.enable();
    rig.backend.inject_event([0x8_0000_0010, 1, 2, 3]);
    rig.smmu.process_events();
    assert_eq!(rig.irqs(), ["eventq"]);
}

#[test]
fn without_msi_a_programmed_doorbell_is_ignored() {
    let mut rig = rig();
    assert!(!rig.smmu.id_registers().msi());
    rig.enable();
    rig.set(Reg::EvtqIrqCfg0, 0x0809_0040);
    rig.backend.inject_event([0x8_0000_0010, 1, 2, 3]);
    rig.smmu.process_events();
    assert_eq!(rig.irqs(), ["eventq"]);
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

#[test]
fn a_bad_ste_is_reported_to_the_guest_error_listener_with_its_vsid() {
    let mut rig = rig();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    rig.smmu
        .set_guest_error_listener(Box::new(move |e| sink.lock().unwrap().push(e)));
    rig.device(8);
    rig.enable();
    rig.write_ste(8, [ste0::V.make(1) | ste0::CONFIG.make(0b110), 0]);
    rig.submit(&[cmd(Opcode::CfgiSte, 8, 1), sync()]);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [crate::guest_error::GuestError {
            kind: "C_BAD_STE",
            queue: None,
            vsid: Some(8)
        }]
    );
}
