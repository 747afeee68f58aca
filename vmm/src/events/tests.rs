//! The event names, their JSON lines and the guest-error listener.

use super::*;

fn line(event: &Event) -> String {
    event.to_line(Duration::new(1, 29_228_206))
}

#[test]
fn lifecycle_event_without_properties_has_upstreams_exact_shape() {
    // The shape of libvirt's example in ch_events.c, on one line.
    assert_eq!(
        line(&Event::VmmStarting),
        r#"{"timestamp":{"secs":1,"nanos":29228206},"source":"vmm","event":"starting","properties":null}"#
    );
    assert_eq!(
        line(&Event::VmPaused),
        r#"{"timestamp":{"secs":1,"nanos":29228206},"source":"vm","event":"paused","properties":null}"#
    );
}

#[test]
fn properties_are_an_object_of_strings() {
    let event = Event::HwQueueAlloc {
        cmdqv: 0,
        index: 1,
        gpa: 0x4000_1000,
        length: 4096,
    };
    assert_eq!(
        line(&event),
        r#"{"timestamp":{"secs":1,"nanos":29228206},"source":"cmdqv","event":"hw-queue-alloc","properties":{"gpa":"0x40001000","id":"cmdqv0","index":"1","length":"4096"}}"#
    );
    let json: serde_json::Value = serde_json::from_str(&line(&Event::ViommuReady {
        vsmmu: 0,
        kind: VsmmuKind::Cmdqv,
        backend: BackendKind::Iommufd,
        viommu_id: Some(7),
        vdevices: 2,
    }))
    .unwrap();
    assert_eq!(json["source"], "vsmmu");
    assert_eq!(json["event"], "viommu-ready");
    assert!(
        json["properties"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v.is_string()),
        "{json}"
    );
    assert_eq!(json["properties"]["viommu"], "7");
    assert_eq!(json["properties"]["kind"], "cmdqv");
    assert_eq!(json["properties"]["backend"], "iommufd");
}

#[test]
fn shutdown_names_its_reason_and_a_reboot_is_no_shutdown() {
    let p = Event::VmShutdown {
        reason: ShutdownReason::Signal(15),
    }
    .properties()
    .unwrap();
    assert_eq!(
        (p.get("reason"), p.get("signal")),
        (Some("signal"), Some("15"))
    );
    let reboot = Event::VmRebooting {
        cause: RebootCause::Guest,
    };
    assert_eq!((reboot.source(), reboot.name()), ("vm", "rebooting"));
    assert_eq!(reboot.properties().unwrap().get("cause"), Some("guest"));
}

#[test]
fn free_text_cannot_break_libvirts_brace_splitter() {
    let event = Event::VmShutdown {
        reason: ShutdownReason::Failed(format!("vCPU 0: {{ exit: {} }}", "x".repeat(1000))),
    };
    let text = line(&event);
    assert_eq!(text.matches('{').count(), 3, "{text}");
    assert_eq!(text.matches('}').count(), 3, "{text}");
    assert!(text.len() < 4096 / 4, "{} bytes", text.len());
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        json["properties"]["error"]
            .as_str()
            .unwrap()
            .starts_with("vCPU 0: ( exit: x")
    );
}

#[test]
fn counters_carry_the_names_of_vm_counters() {
    let event = Event::VmCounters {
        device: "vsmmu0".into(),
        counters: [
            ("trapped_syncs".to_string(), 30764),
            ("backend_calls.invalidate".to_string(), 30755),
        ]
        .into(),
    };
    assert_eq!(
        line(&event),
        r#"{"timestamp":{"secs":1,"nanos":29228206},"source":"vm","event":"counters","properties":{"backend_calls.invalidate":"30755","id":"vsmmu0","trapped_syncs":"30764"}}"#
    );
}

#[test]
fn guest_errors_name_the_device_kind_and_queue_or_vsid() {
    let cmdqv = Event::GuestError {
        device: GuestErrorDevice::Cmdqv(0),
        kind: "CERROR_ILL".into(),
        queue: Some(1),
        vsid: None,
        address: None,
    };
    assert_eq!(
        line(&cmdqv),
        r#"{"timestamp":{"secs":1,"nanos":29228206},"source":"cmdqv","event":"guest-error","properties":{"id":"cmdqv0","kind":"CERROR_ILL","queue":"1"}}"#
    );
    let smmu = Event::GuestError {
        device: GuestErrorDevice::Vsmmu(0),
        kind: "C_BAD_STE".into(),
        queue: None,
        vsid: Some(8),
        address: None,
    };
    assert_eq!(smmu.source(), "vsmmu");
    assert_eq!(smmu.properties().unwrap().get("vsid"), Some("0x8"));
}

/// One of each event, for the name checks.
fn one_of_each() -> Vec<Event> {
    vec![
        Event::VmmStarting,
        Event::VmmShutdown,
        Event::VmBooting { boot: 1 },
        Event::VmBooted { boot: 1 },
        Event::VmPausing,
        Event::VmPaused,
        Event::VmResuming,
        Event::VmResumed,
        Event::VmRebooting {
            cause: RebootCause::Api,
        },
        Event::VmRebooted { boot: 2 },
        Event::VmShutdown {
            reason: ShutdownReason::PowerOff,
        },
        Event::VmDeleted,
        Event::VmCounters {
            device: "cmdqv0".into(),
            counters: [("hw_queue_allocs".to_string(), 2)].into(),
        },
        Event::ViommuReady {
            vsmmu: 0,
            kind: VsmmuKind::Smmuv3,
            backend: BackendKind::Emulated,
            viommu_id: None,
            vdevices: 1,
        },
        Event::ViommuReleased { vsmmu: 0 },
        Event::Vdevice {
            vsmmu: 0,
            device: "dma0".into(),
            vsid: 8,
        },
        Event::SteInstalled {
            vsmmu: 0,
            vsid: 8,
            config: "translate",
        },
        Event::GuestError {
            device: GuestErrorDevice::Vsmmu(0),
            kind: "C_BAD_STE".into(),
            queue: None,
            vsid: Some(8),
            address: Some(0x5c00_1000),
        },
        Event::HwQueueAlloc {
            cmdqv: 0,
            index: 0,
            gpa: 0,
            length: 4096,
        },
        Event::HwQueueFree {
            cmdqv: 0,
            index: 0,
            gpa: 0,
            length: 4096,
        },
        Event::Page0Mapped {
            cmdqv: 0,
            gpa: 0,
            length: 65536,
        },
        Event::Page0Unmapped { cmdqv: 0, gpa: 0 },
        Event::GuestError {
            device: GuestErrorDevice::Cmdqv(0),
            kind: "CERROR_ILL".into(),
            queue: Some(0),
            vsid: None,
            address: None,
        },
        Event::DeviceBound {
            id: "disk0".into(),
            path: "/sys/bus/pci/devices/0000:00:02.0".into(),
            guest_bdf: "0000:00:01.0".into(),
            vsmmu: None,
        },
        Event::DeviceReleased {
            id: "disk0".into(),
            path: "/sys/bus/pci/devices/0000:00:02.0".into(),
        },
    ]
}

#[test]
fn every_event_is_in_names_once_and_in_the_docs() {
    let named: Vec<String> = one_of_each()
        .iter()
        .map(|e| format!("{}:{}", e.source(), e.name()))
        .collect();
    assert_eq!(named, NAMES, "NAMES lists every event, in this order");
    let docs = include_str!("../../../docs/events.md");
    for name in NAMES {
        let (source, event) = name.split_once(':').unwrap();
        assert!(
            docs.contains(&format!("| `{source}` | `{event}` |")),
            "docs/events.md has no row for {name}"
        );
    }
}
