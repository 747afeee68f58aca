//! Tests of the configuration parsers and of `VmConfig::validate`.

use super::*;

fn device(input: &str, index: usize) -> DeviceConfig {
    DeviceConfig::parse(input, index).unwrap()
}

fn cmdqv_emulated() -> VmConfig {
    VmConfig {
        vsmmu: VsmmuConfig::parse("cmdqv,backend=emulated").unwrap(),
        ..VmConfig::default()
    }
}

#[test]
fn device_parses_every_key() {
    let d = device(
        "path=/sys/bus/pci/devices/0009:01:00.0,iommu=on,id=gpu0,pci_segment=1",
        0,
    );
    assert_eq!(d.path, PathBuf::from("/sys/bus/pci/devices/0009:01:00.0"));
    assert!(d.iommu);
    assert_eq!(d.id, "gpu0");
    assert_eq!(d.pci_segment, Some(1));
    let d = device("path=/dev/vfio/devices/vfio3,host_smmu=smmu3.a", 4);
    assert_eq!(d.id, "_dev4");
    assert!(!d.iommu);
    assert_eq!(d.pci_segment, None, "chosen by the host SMMU");
    assert_eq!(d.host_smmu.as_deref(), Some("smmu3.a"));
}

#[test]
fn device_without_path_is_refused() {
    let err = DeviceConfig::parse("iommu=on", 0).unwrap_err();
    assert_eq!(err.to_string(), "--device: 'path=' is required");
}

#[test]
fn vsmmu_parses_kind_backend_and_page0() {
    let v = VsmmuConfig::parse("cmdqv,backend=emulated,page0=trapped").unwrap();
    assert_eq!(v.kind, VsmmuKind::Cmdqv);
    assert_eq!(v.backend, BackendKind::Emulated);
    assert_eq!(v.page0_mode(), Page0Mode::Trapped);
    let v = VsmmuConfig::parse("smmuv3").unwrap();
    assert_eq!(v.backend, BackendKind::Iommufd);
    assert_eq!(v.page0_mode(), Page0Mode::Mapped);
    assert_eq!(VsmmuConfig::parse("off").unwrap().kind, VsmmuKind::Off);
}

#[test]
fn vsmmu_parses_ats_and_ssidsize() {
    let v = VsmmuConfig::parse("cmdqv,ats=auto,ssidsize=8").unwrap();
    assert_eq!((v.ats, v.ssidsize), (AtsMode::Auto, Some(8)));
    let v = VsmmuConfig::parse("smmuv3,ats=on,ssidsize=auto").unwrap();
    assert_eq!((v.ats, v.ssidsize), (AtsMode::On, None));
    assert_eq!(VsmmuConfig::parse("smmuv3").unwrap().ats, AtsMode::Off);
    assert_eq!(
        VsmmuConfig::parse("smmuv3,ssidsize=21")
            .unwrap_err()
            .to_string(),
        "--vsmmu: ssidsize=21 is not valid: use auto or a number of PASID bits from 0 to 20"
    );
    assert!(VsmmuConfig::parse("smmuv3,ats=yes").is_err());
}

#[test]
fn vsmmu_rejects_unknown_kind_backend_and_page0() {
    assert_eq!(
        VsmmuConfig::parse("smmuv2").unwrap_err().to_string(),
        "--vsmmu: vsmmu=smmuv2 is not valid: use off, smmuv3 or cmdqv"
    );
    assert_eq!(
        VsmmuConfig::parse("cmdqv,backend=vfio")
            .unwrap_err()
            .to_string(),
        "--vsmmu: backend=vfio is not valid: use iommufd or emulated"
    );
    assert_eq!(
        VsmmuConfig::parse("cmdqv,page0=direct")
            .unwrap_err()
            .to_string(),
        "--vsmmu: page0=direct is not valid: use mapped or trapped"
    );
}

#[test]
fn memory_parses_size_and_hugepages() {
    let m = MemoryConfig::parse("size=2G,hugepages=on").unwrap();
    assert_eq!(m.size, 2 << 30);
    assert!(m.hugepages);
    assert_eq!(
        MemoryConfig::parse("size=lots").unwrap_err().to_string(),
        "--memory: size=lots is not valid: expected a size such as 512M, 2G or 1073741824"
    );
}

#[test]
fn cpus_parse_boot_and_reject_garbage() {
    assert_eq!(CpusConfig::parse("boot=8").unwrap().boot, 8);
    assert!(CpusConfig::parse("boot=eight").is_err());
    assert!(CpusConfig::parse("max=8").is_err());
}

#[test]
fn serial_parses_tty_off_and_file() {
    assert_eq!(SerialConfig::parse("tty").unwrap(), SerialConfig::Tty);
    assert_eq!(SerialConfig::parse("off").unwrap(), SerialConfig::Off);
    assert_eq!(
        SerialConfig::parse("file=/tmp/console").unwrap(),
        SerialConfig::File("/tmp/console".into())
    );
    assert_eq!(SerialConfig::parse("pty").unwrap(), SerialConfig::Pty);
    assert_eq!(SerialConfig::parse("null").unwrap(), SerialConfig::Null);
    assert_eq!(
        SerialConfig::parse("socket=/tmp/s").unwrap(),
        SerialConfig::Socket("/tmp/s".into())
    );
    assert!(SerialConfig::parse("file=/a,socket=/b").is_err());
    assert!(SerialConfig::parse("fancy").is_err());
}

#[test]
fn duplicate_device_ids_are_refused() {
    let mut config = cmdqv_emulated();
    config.devices = vec![
        device("path=/dev/vfio/devices/vfio0,id=a", 0),
        device("path=/dev/vfio/devices/vfio1,id=a", 1),
    ];
    assert_eq!(
        config.validate(false),
        Err(ConfigError::DuplicateDeviceId("a".into()))
    );
}

#[test]
fn duplicate_device_paths_are_refused() {
    let mut config = cmdqv_emulated();
    config.devices = vec![
        device("path=/dev/vfio/devices/vfio0", 0),
        device("path=/dev/vfio/devices/vfio0", 1),
    ];
    assert_eq!(
        config.validate(false),
        Err(ConfigError::DuplicateDevicePath(
            "/dev/vfio/devices/vfio0".into()
        ))
    );
}

#[test]
fn iommu_on_without_vsmmu_is_refused() {
    let config = VmConfig {
        devices: vec![device("path=/dev/vfio/devices/vfio0,iommu=on,id=nic", 0)],
        ..VmConfig::default()
    };
    let err = config.validate(false).unwrap_err();
    assert_eq!(err, ConfigError::IommuWithoutVsmmu("nic".into()));
    assert!(err.to_string().contains("add --vsmmu"));
}

#[test]
fn iommufd_vsmmu_without_iommu_device_is_refused() {
    let config = VmConfig {
        vsmmu: VsmmuConfig::parse("cmdqv").unwrap(),
        devices: vec![device("path=/dev/vfio/devices/vfio0", 0)],
        ..VmConfig::default()
    };
    assert_eq!(
        config.validate(false),
        Err(ConfigError::IommufdVsmmuWithoutDevice("cmdqv"))
    );
    let mut config = config;
    config.devices[0].iommu = true;
    assert_eq!(config.validate(false), Ok(()));
}

#[test]
fn host_smmu_on_a_device_is_refused_with_iommufd() {
    let mut config = VmConfig {
        vsmmu: VsmmuConfig::parse("cmdqv").unwrap(),
        devices: vec![device(
            "path=/dev/vfio/devices/vfio0,iommu=on,id=gpu,host_smmu=x",
            0,
        )],
        ..VmConfig::default()
    };
    let err = config.validate(false).unwrap_err();
    assert_eq!(err, ConfigError::HostSmmuWithIommufd("gpu".into()));
    assert!(err.to_string().contains("from sysfs"), "{err}");
    config.vsmmu.backend = BackendKind::Emulated;
    assert_eq!(config.validate(false), Ok(()));
}

#[test]
fn emulated_vsmmu_needs_no_device() {
    assert_eq!(cmdqv_emulated().validate(false), Ok(()));
}

#[test]
fn page0_is_refused_with_iommufd_and_without_cmdqv() {
    let mut config = VmConfig {
        vsmmu: VsmmuConfig::parse("cmdqv,page0=trapped").unwrap(),
        devices: vec![device("path=/dev/vfio/devices/vfio0,iommu=on", 0)],
        ..VmConfig::default()
    };
    assert_eq!(
        config.validate(false),
        Err(ConfigError::Page0WithIommufd("trapped"))
    );
    config.vsmmu = VsmmuConfig::parse("smmuv3,backend=emulated,page0=mapped").unwrap();
    assert_eq!(config.validate(false), Err(ConfigError::Page0WithoutCmdqv));
}

#[test]
fn device_paths_must_name_a_pci_function_or_cdev() {
    for bad in [
        "/dev/vfio/devices/vfio",
        "/dev/vfio/devices/vfiox",
        "/sys/bus/pci/devices/0009:01:00",
        "/sys/bus/pci/devices/zzzz:01:00.0",
        "/tmp/dev",
    ] {
        let mut config = cmdqv_emulated();
        config.devices = vec![device(&format!("path={bad}"), 0)];
        assert_eq!(
            config.validate(false),
            Err(ConfigError::BadDevicePath(bad.into())),
            "{bad}"
        );
    }
    let mut config = cmdqv_emulated();
    config.devices = vec![device("path=/sys/bus/pci/devices/0009:01:00.0/", 0)];
    assert_eq!(config.validate(false), Ok(()));
}

#[test]
fn reserved_ids_are_refused() {
    let mut config = cmdqv_emulated();
    config.devices = vec![device("path=/dev/vfio/devices/vfio0,id=_dev7", 0)];
    assert_eq!(
        config.validate(false),
        Err(ConfigError::ReservedDeviceId("_dev7".into()))
    );
}

#[test]
fn kernel_is_required_only_to_boot() {
    let config = cmdqv_emulated();
    assert_eq!(config.validate(true), Err(ConfigError::MissingKernel));
    assert_eq!(config.validate(false), Ok(()));
}

#[test]
fn tiny_memory_is_refused() {
    let mut config = cmdqv_emulated();
    config.memory.size = 1 << 20;
    assert_eq!(
        config.validate(false),
        Err(ConfigError::MemoryTooSmall(1 << 20))
    );
}

#[test]
fn test_devices_parse_and_need_an_emulated_vsmmu() {
    let t = TestDeviceConfig::parse("pci_segment=1,id=dma0", 0).unwrap();
    assert!(t.iommu, "behind the vSMMU unless iommu=off");
    assert_eq!((t.id.as_str(), t.pci_segment), ("dma0", Some(1)));
    let t = TestDeviceConfig::parse("host_smmu=smmu3.b", 0).unwrap();
    assert_eq!(
        (t.pci_segment, t.host_smmu.as_deref()),
        (None, Some("smmu3.b"))
    );
    assert!(TestDeviceConfig::parse("path=/x", 0).is_err());
    let mut config = cmdqv_emulated();
    config.test_devices = vec![TestDeviceConfig::parse("", 0).unwrap()];
    assert_eq!(config.validate(false), Ok(()));
    config.vsmmu = VsmmuConfig::parse("smmuv3").unwrap();
    config.devices = vec![device("path=/dev/vfio/devices/vfio0,iommu=on", 0)];
    assert_eq!(
        config.validate(false),
        Err(ConfigError::TestDeviceNeedsEmulated("_test0".into()))
    );
    config.vsmmu = VsmmuConfig::parse("off").unwrap();
    config.devices.clear();
    assert_eq!(
        config.validate(false),
        Err(ConfigError::IommuWithoutVsmmu("_test0".into()))
    );
}

#[test]
fn test_device_ids_share_the_id_space_with_devices() {
    let mut config = cmdqv_emulated();
    config.devices = vec![device("path=/dev/vfio/devices/vfio0,id=x", 0)];
    config.test_devices = vec![TestDeviceConfig::parse("id=x", 0).unwrap()];
    assert_eq!(
        config.validate(false),
        Err(ConfigError::DuplicateDeviceId("x".into()))
    );
}

#[test]
fn api_socket_takes_path_fd_or_a_bare_path() {
    assert_eq!(
        ApiSocket::parse("path=/tmp/ch.sock").unwrap(),
        ApiSocket::Path("/tmp/ch.sock".into())
    );
    assert_eq!(ApiSocket::parse("fd=3").unwrap(), ApiSocket::Fd(3));
    assert_eq!(
        ApiSocket::parse("/run/ch.sock").unwrap(),
        ApiSocket::Path("/run/ch.sock".into())
    );
    assert!(ApiSocket::parse("fd=three").is_err());
    assert!(ApiSocket::parse("path=/a,fd=3").is_err());
    assert!(ApiSocket::parse("socket=/a").is_err());
}

#[test]
fn config_serialises_with_serde() {
    let mut config = cmdqv_emulated();
    config.devices = vec![device("path=/dev/vfio/devices/vfio0,iommu=on,id=gpu", 0)];
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains("\"kind\":\"cmdqv\""), "{json}");
    let back: VmConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, config);
}

#[test]
fn cpus_affinity_parses_upstream_syntax_and_each_rule_names_the_vcpu() {
    let cpus = CpusConfig::parse("boot=3,affinity=[0@[0-1],2@[4,6-7]]").unwrap();
    assert_eq!(cpus.boot, 3);
    assert_eq!(
        cpus.affinity,
        vec![
            CpuAffinity {
                vcpu: 0,
                host_cpus: vec![0, 1]
            },
            CpuAffinity {
                vcpu: 2,
                host_cpus: vec![4, 6, 7]
            },
        ]
    );
    assert!(cpus.validate().is_ok());
    for bad in [
        "boot=2,affinity=0@[0]",
        "boot=2,affinity=[0@0-1x]",
        "boot=2,affinity=[x@[0]]",
    ] {
        let err = CpusConfig::parse(bad).unwrap_err().to_string();
        assert!(err.contains("vCPU@[host CPUs]"), "{bad}: {err}");
    }
    let rule = |input: &str| {
        CpusConfig::parse(input)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        rule("boot=2,affinity=[2@[0]]"),
        "--cpus affinity: vCPU 2 is pinned but the VM has 2 (boot=2); pin vCPUs 0-1"
    );
    assert!(rule("boot=2,affinity=[1@[0],1@[1]]").contains("vCPU 1 is pinned twice"));
    assert!(rule("boot=1,affinity=[0@[5000]]").contains("host CPU 5000, beyond the 1024"));
    // The whole config runs the same rules (the API's path).
    let mut config = cmdqv_emulated();
    config.cpus = CpusConfig::parse("boot=1,affinity=[1@[0]]").unwrap();
    assert!(matches!(
        config.validate(false),
        Err(ConfigError::Affinity(_))
    ));
}

#[test]
fn the_command_line_and_the_api_body_give_the_same_config() {
    let cli = VmConfig {
        payload: PayloadConfig {
            kernel: Some("/k".into()),
            cmdline: "console=ttyAMA0".into(),
            initramfs: Some("/i".into()),
        },
        cpus: CpusConfig::parse("boot=2,affinity=[1@[0-1]]").unwrap(),
        memory: MemoryConfig::parse("size=1G,hugepages=on").unwrap(),
        devices: vec![device("path=/dev/vfio/devices/vfio0,iommu=on", 0)],
        test_devices: vec![TestDeviceConfig::parse("pci_segment=1", 0).unwrap()],
        vsmmu: VsmmuConfig::parse("cmdqv,backend=emulated,page0=trapped").unwrap(),
        serial: SerialConfig::parse("socket=/run/s").unwrap(),
        disks: vec![DiskConfig::parse("path=/img,readonly=on", 0).unwrap()],
        console: ConsoleConfig::parse("pty").unwrap(),
        ..VmConfig::default()
    };
    let body = r#"{"payload": {"kernel": "/k", "cmdline": "console=ttyAMA0", "initramfs": "/i"},
        "cpus": {"boot_vcpus": 2, "affinity": [{"vcpu": 1, "host_cpus": [0, 1]}]},
        "memory": {"size": 1073741824, "hugepages": true},
        "devices": [{"path": "/dev/vfio/devices/vfio0", "iommu": true}],
        "test_devices": [{"pci_segment": 1}],
        "vsmmu": {"kind": "cmdqv", "backend": "emulated", "page0": "trapped"},
        "serial": {"mode": "Socket", "socket": "/run/s"},
        "disks": [{"path": "/img", "readonly": true}],
        "console": {"mode": "Pty"}}"#;
    let mut api: VmConfig = serde_json::from_str(body).unwrap();
    api.name_unnamed();
    assert_eq!(api, cli);
    // And one set of rules judges both.
    assert_eq!(api.validate(true), Ok(()));
    api.cpus.boot = 1;
    assert!(matches!(api.validate(true), Err(ConfigError::Affinity(_))));
}
