//! The guest's queues: probe order, execution, errors and BASE checks.

use super::*;

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
