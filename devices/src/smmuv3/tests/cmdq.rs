//! Command queue behaviour: batching, errors, wrap, CMD_SYNC completion.

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::smmuv3::cmd::cerror;

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
        ats: crate::smmuv3::idr::HostChoice::On,
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
fn sid_commands_for_emulated_functions_complete_without_the_host() {
    let mut rig = rig_with(VsmmuConfig {
        ats: crate::smmuv3::idr::HostChoice::On,
        ..VsmmuConfig::default()
    });
    rig.device(8);
    rig.enable();
    // vSID 0 (say the host bridge) has no vDEVICE: nothing to forward.
    rig.submit(&[
        cmd(Opcode::CfgiCd, 0, 1),
        cmd(Opcode::AtcInv, 0, 0),
        cmd(Opcode::CfgiCd, 8, 1),
        sync(),
    ]);
    assert_eq!(rig.calls(), ["invalidate entries=1 ok=1"]);
    assert!(!rig.cmdq_err_active());
    assert_eq!(rig.cons().1, u64::from(cerror::NONE));
}

#[test]
fn partial_invalidation_failure_leaves_cons_on_failing_entry() {
    let mut rig = rig();
    rig.device(8);
    rig.device_lost_by_host(9);
    rig.enable();
    // Entry 2 names a vSID the host has no vDEVICE for: it refuses it.
    rig.submit(&[
        cmd(Opcode::TlbiNhVa, 0, 0x1000),
        cmd(Opcode::CfgiCd, 8, 0),
        cmd(Opcode::CfgiCd, 9, 0),
        cmd(Opcode::TlbiNhVa, 0, 0x3000),
        sync(),
    ]);
    // The kernel converted entries 0 and 1 but, refusing entry 2 in the
    // same host chunk, issued neither: they are sent again before the
    // queue stops on entry 2.
    assert_eq!(
        rig.calls(),
        [
            "invalidate entries=4 ok=2 issued=0 err=EIO",
            "invalidate entries=2 ok=2"
        ]
    );
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

#[test]
fn a_stopped_queue_is_reported_to_the_guest_error_listener_by_its_cerror() {
    let mut rig = rig();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    rig.smmu
        .set_guest_error_listener(Box::new(move |e| sink.lock().unwrap().push(e)));
    rig.enable();
    rig.submit(&[Command([0x77, 0])]);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [crate::guest_error::GuestError {
            kind: "CERROR_ILL",
            queue: None,
            vsid: None
        }]
    );
}
