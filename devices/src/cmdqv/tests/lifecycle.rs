//! Queues across resets and boots: error state, HW queue frees in
//! hardware order, SID slots, and what the counters and listeners see.

use super::*;

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
        matches!(&events[0].0, Page0Event::Map { offset: 0x30000, region } if region.len() == 0x10000)
    );
    assert!(events[0].1.is_empty(), "mapped before any HW queue");
    assert!(matches!(events[1].0, Page0Event::Unmap { offset: 0x30000 }));
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
