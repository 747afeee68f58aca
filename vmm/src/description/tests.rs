//! Placement: segments, vSMMUs, slots and StreamIDs from configs and
//! fake host topologies.

use arch::layout::LayoutError;

use super::*;
use crate::config::{DeviceConfig, NumaConfig, TestDeviceConfig, VsmmuConfig};
use crate::host_topology::tests::{FakeSysfs, iommufd_config};

/// Describe `config` on a 4 KiB host with the emulated backend's SMMUs.
fn describe(config: VmConfig, slots: usize) -> Result<VmDescription, DescriptionError> {
    let host = HostTopology::emulated(&config, 4 << 10);
    VmDescription::new(config, &host, slots)
}

/// (segment, vSMMU, host SMMU) of every device.
fn placement(vm: &VmDescription) -> Vec<(u16, Option<u32>, Option<&str>)> {
    vm.devices
        .iter()
        .map(|d| (d.segment, d.vsmmu, d.host_smmu.as_deref()))
        .collect()
}

fn config(vsmmu: &str, devices: &[&str]) -> VmConfig {
    VmConfig {
        vsmmu: VsmmuConfig::parse(vsmmu).unwrap(),
        devices: devices
            .iter()
            .enumerate()
            .map(|(i, d)| DeviceConfig::parse(d, i).unwrap())
            .collect(),
        ..VmConfig::default()
    }
}

#[test]
fn devices_get_consecutive_slots_and_rid_stream_ids() {
    let vm = describe(
        config(
            "cmdqv,backend=emulated",
            &[
                "path=/dev/vfio/devices/vfio0,iommu=on",
                "path=/dev/vfio/devices/vfio1,iommu=on",
            ],
        ),
        16,
    )
    .unwrap();
    assert_eq!(vm.vsmmus.len(), 1);
    assert_eq!(vm.vsmmus[0].iort_id, 1);
    assert_eq!(vm.devices[0].stream_id(), 0x08);
    assert_eq!(vm.devices[1].stream_id(), 0x10);
    assert_eq!(vm.devices[1].vsmmu, Some(0));
}

#[test]
fn each_segment_with_iommu_devices_gets_its_own_vsmmu() {
    let vm = describe(
        config(
            "smmuv3,backend=emulated",
            &[
                "path=/dev/vfio/devices/vfio0,iommu=on",
                "path=/dev/vfio/devices/vfio1,iommu=on,pci_segment=1",
                "path=/dev/vfio/devices/vfio2,pci_segment=2",
            ],
        ),
        16,
    )
    .unwrap();
    assert_eq!(vm.layout.pci_segments.len(), 3);
    let segments: Vec<u16> = vm.vsmmus.iter().map(|v| v.segment).collect();
    assert_eq!(segments, [0, 1]);
    assert_eq!(vm.devices[1].vsmmu, Some(1));
    assert_eq!(vm.devices[2].vsmmu, None);
    assert_eq!(vm.iort_rc_id(2), 5);
}

#[test]
fn test_endpoints_are_placed_after_passthrough_devices_and_get_vsmmus() {
    let mut c = config(
        "cmdqv,backend=emulated",
        &["path=/dev/vfio/devices/vfio0,iommu=on"],
    );
    c.test_devices = vec![
        crate::config::TestDeviceConfig::parse("id=dma0", 0).unwrap(),
        crate::config::TestDeviceConfig::parse("id=dma1,pci_segment=1", 1).unwrap(),
    ];
    let vm = describe(c, 16).unwrap();
    let kinds: Vec<(DeviceKind, u32, Option<u32>)> = vm
        .devices
        .iter()
        .map(|d| (d.kind, d.stream_id(), d.vsmmu))
        .collect();
    assert_eq!(
        kinds,
        [
            (DeviceKind::Passthrough, 0x08, Some(0)),
            (DeviceKind::TestEndpoint, 0x10, Some(0)),
            (DeviceKind::TestEndpoint, 0x08, Some(1)),
        ]
    );
}

#[test]
fn emulated_vsmmu_without_devices_sits_on_segment_zero() {
    let vm = describe(config("cmdqv,backend=emulated", &[]), 16).unwrap();
    assert_eq!(vm.vsmmus.len(), 1);
    assert_eq!(vm.vsmmus[0].segment, 0);
}

#[test]
fn more_devices_than_cmdqv_sid_slots_is_an_error() {
    let devices: Vec<String> = (0..3)
        .map(|i| format!("path=/dev/vfio/devices/vfio{i},iommu=on"))
        .collect();
    let refs: Vec<&str> = devices.iter().map(String::as_str).collect();
    let err = describe(config("cmdqv,backend=emulated", &refs), 2).unwrap_err();
    assert_eq!(
        err,
        DescriptionError::TooManyVsids {
            segment: 0,
            count: 3,
            max: 2
        }
    );
    // A plain SMMUv3 has no SID slot limit.
    describe(config("smmuv3,backend=emulated", &refs), 2).unwrap();
}

#[test]
fn layout_errors_pass_through() {
    let mut c = config("off", &[]);
    c.cpus.boot = 1000;
    assert!(matches!(
        describe(c, 16),
        Err(DescriptionError::Layout(LayoutError::TooManyVcpus(1000)))
    ));
}

#[test]
fn functions_behind_one_host_smmu_share_one_vsmmu_on_segment_zero() {
    let sysfs = FakeSysfs::new("one-smmu");
    sysfs
        .function("0009:01:00.0", Some("smmu3.0x0000000012000000"))
        .function("0009:02:00.0", Some("smmu3.0x0000000012000000"));
    let config = iommufd_config(&[
        "path=/sys/bus/pci/devices/0009:01:00.0,iommu=on,id=gpu0",
        "path=/sys/bus/pci/devices/0009:02:00.0,iommu=on,id=nic0",
    ]);
    let host = HostTopology::probe(&config, &sysfs.root, 64 << 10).unwrap();
    let vm = VmDescription::new(config, &host, 16).unwrap();
    assert_eq!(vm.vsmmus.len(), 1);
    assert_eq!(
        vm.vsmmus[0].host_smmu.as_deref(),
        Some("smmu3.0x0000000012000000")
    );
    let smmu = Some("smmu3.0x0000000012000000");
    assert_eq!(placement(&vm), [(0, Some(0), smmu), (0, Some(0), smmu)]);
    assert_eq!(vm.host_page_size, 64 << 10);
}

#[test]
fn a_gpu_takes_devfn_0_of_its_segment_and_the_others_keep_their_slots() {
    let sysfs = FakeSysfs::new("gpu-devfn0");
    let (a, b) = ("smmu3.a", "smmu3.b");
    sysfs
        .function("0009:02:00.0", Some(a))
        .class("0009:02:00.0", 0x02_00_00)
        .function("0009:01:00.0", Some(a))
        .class("0009:01:00.0", 0x03_02_00)
        .function("0019:01:00.0", Some(b))
        .class("0019:01:00.0", 0x03_02_00)
        .function("0019:01:00.1", Some(b))
        .class("0019:01:00.1", 0x03_02_00);
    let config = iommufd_config(&[
        "path=/sys/bus/pci/devices/0009:02:00.0,iommu=on,id=nic0",
        "path=/sys/bus/pci/devices/0009:01:00.0,iommu=on,id=gpu0",
        "path=/sys/bus/pci/devices/0019:01:00.0,iommu=on,id=gpu1",
        "path=/sys/bus/pci/devices/0019:01:00.1,iommu=on,id=gpu2",
    ]);
    let host = HostTopology::probe(&config, &sysfs.root, 4 << 10).unwrap();
    let vm = VmDescription::new(config, &host, 16).unwrap();
    let at: Vec<(&str, u16, String)> = vm
        .devices
        .iter()
        .map(|d| (d.id.as_str(), d.segment, d.bdf.to_string()))
        .collect();
    assert_eq!(
        at,
        [
            ("nic0", 0, "00:01.0".to_string()),
            ("gpu0", 0, "00:00.0".to_string()),
            ("gpu1", 1, "00:00.0".to_string()),
            ("gpu2", 1, "00:01.0".to_string()),
        ]
    );
    // StreamID 0 is the GPU's (RID 0): the vDEVICE's virt_id follows.
    assert_eq!(vm.devices[1].stream_id(), 0);
}

#[test]
fn a_function_with_generic_initiator_nodes_takes_devfn_0_whatever_its_class() {
    let sysfs = FakeSysfs::new("gi-devfn0");
    sysfs
        .function("0000:00:02.0", Some("smmu3.a"))
        .class("0000:00:02.0", 0x01_00_00)
        .function("0000:00:05.0", Some("smmu3.a"))
        .class("0000:00:05.0", 0x05_00_00);
    let mut config = iommufd_config(&[
        "path=/sys/bus/pci/devices/0000:00:02.0,iommu=on,id=disk0",
        "path=/sys/bus/pci/devices/0000:00:05.0,iommu=on,id=shm0",
    ]);
    let host = HostTopology::probe(&config, &sysfs.root, 4 << 10).unwrap();
    let at = |vm: &VmDescription| -> Vec<(String, String)> {
        vm.devices
            .iter()
            .map(|d| (d.id.clone(), d.bdf.to_string()))
            .collect()
    };
    let plain = VmDescription::new(config.clone(), &host, 16).unwrap();
    assert_eq!(
        at(&plain),
        [
            ("disk0".to_string(), "00:01.0".to_string()),
            ("shm0".to_string(), "00:02.0".to_string()),
        ],
        "a memory-class function without GI nodes keeps the slot order"
    );
    config.cpus.boot = 1;
    config.numa = vec![
        NumaConfig::parse("guest_numa_id=0,cpus=[0]").unwrap(),
        NumaConfig::parse("guest_numa_id=1,device_id=shm0").unwrap(),
    ];
    let vm = VmDescription::new(config, &host, 16).unwrap();
    assert_eq!(
        at(&vm),
        [
            ("disk0".to_string(), "00:01.0".to_string()),
            ("shm0".to_string(), "00:00.0".to_string()),
        ]
    );
}

#[test]
fn a_128g_gpu_bar_grows_its_segments_64_bit_window() {
    let sysfs = FakeSysfs::new("gpu-bar");
    let mem64 = 0x0010_0200;
    sysfs
        .function("0009:01:00.0", Some("smmu3.a"))
        .resources(
            "0009:01:00.0",
            &[
                (0, 0, 0),
                (0, 0, 0),
                (0, 0, 0),
                (0, 0, 0),
                (0x800_0000_0000, 128 << 30, mem64),
            ],
        )
        .function("0019:01:00.0", Some("smmu3.b"));
    let config = iommufd_config(&[
        "path=/sys/bus/pci/devices/0009:01:00.0,iommu=on,id=gpu0",
        "path=/sys/bus/pci/devices/0019:01:00.0,iommu=on,id=nic0",
    ]);
    let host = HostTopology::probe(&config, &sysfs.root, 4 << 10).unwrap();
    let vm = VmDescription::new(config, &host, 16).unwrap();
    let w: Vec<(u64, u64)> = vm
        .layout
        .pci_segments
        .iter()
        .map(|s| (s.mmio64.base, s.mmio64.size))
        .collect();
    assert_eq!(w[0].1, 256 << 30, "128 GiB BAR + room for the rest");
    assert_eq!(w[0].0 % w[0].1, 0);
    assert_eq!(w[1], (w[0].0 + w[0].1, 64 << 30));
}

#[test]
fn two_host_smmus_get_two_vsmmus_each_on_its_own_segment() {
    let sysfs = FakeSysfs::new("two-smmus");
    let (a, b) = ("smmu3.0x0000000012000000", "smmu3.0x0000000022000000");
    sysfs
        .function("0009:01:00.0", Some(a))
        .function("0019:01:00.0", Some(b))
        .function("0009:02:00.0", Some(a))
        .cdev(4, "0019:01:00.0");
    let config = iommufd_config(&[
        "path=/sys/bus/pci/devices/0009:01:00.0,iommu=on,id=gpu0",
        "path=/dev/vfio/devices/vfio4,iommu=on,id=gpu1",
        "path=/sys/bus/pci/devices/0009:02:00.0,iommu=on,id=nic0",
    ]);
    let host = HostTopology::probe(&config, &sysfs.root, 4 << 10).unwrap();
    let vm = VmDescription::new(config, &host, 16).unwrap();
    let vsmmus: Vec<(u32, u16, Option<&str>, u32)> = vm
        .vsmmus
        .iter()
        .map(|v| (v.index, v.segment, v.host_smmu.as_deref(), v.iort_id))
        .collect();
    assert_eq!(vsmmus, [(0, 0, Some(a), 1), (1, 1, Some(b), 2)]);
    assert_eq!(
        placement(&vm),
        [
            (0, Some(0), Some(a)),
            (1, Some(1), Some(b)),
            (0, Some(0), Some(a))
        ]
    );
    assert_eq!(
        vm.devices[1].stream_id(),
        0x08,
        "first function of segment 1"
    );
    assert_ne!(
        vm.vsmmus[0].layout.cmdqv.base,
        vm.vsmmus[1].layout.cmdqv.base
    );
}

#[test]
fn an_explicit_segment_holding_two_host_smmus_is_refused_naming_both() {
    let sysfs = FakeSysfs::new("mismatch");
    sysfs
        .function("0009:01:00.0", Some("smmu3.0x12000000"))
        .function("0019:01:00.0", Some("smmu3.0x22000000"));
    let config = iommufd_config(&[
        "path=/sys/bus/pci/devices/0009:01:00.0,iommu=on,id=gpu0,pci_segment=1",
        "path=/sys/bus/pci/devices/0019:01:00.0,iommu=on,id=gpu1,pci_segment=1",
    ]);
    let host = HostTopology::probe(&config, &sysfs.root, 4 << 10).unwrap();
    let err = VmDescription::new(config, &host, 16).unwrap_err();
    let text = err.to_string();
    assert!(matches!(
        err,
        DescriptionError::HostSmmusShareSegment { segment: 1, .. }
    ));
    for part in [
        "--device gpu0",
        "smmu3.0x12000000",
        "--device gpu1",
        "smmu3.0x22000000",
    ] {
        assert!(text.contains(part), "{part} missing: {text}");
    }
    assert!(
        !text.contains(". ") && !text.contains('\n'),
        "one sentence: {text}"
    );
}

#[test]
fn explicit_segments_are_kept_and_the_rest_of_their_smmu_follows() {
    let mut c = config("cmdqv,backend=emulated", &[]);
    c.test_devices = [
        "host_smmu=a",
        "host_smmu=b,pci_segment=0",
        "host_smmu=a",
        "iommu=off",
    ]
    .iter()
    .enumerate()
    .map(|(i, t)| TestDeviceConfig::parse(t, i).unwrap())
    .collect();
    let vm = describe(c, 16).unwrap();
    // b claimed segment 0, so a (first seen without a segment) gets 1.
    assert_eq!(
        placement(&vm),
        [
            (1, Some(1), Some("a")),
            (0, Some(0), Some("b")),
            (1, Some(1), Some("a")),
            (0, None, None)
        ]
    );
    let hosts: Vec<Option<&str>> = vm.vsmmus.iter().map(|v| v.host_smmu.as_deref()).collect();
    assert_eq!(hosts, [Some("b"), Some("a")]);
}
