//! Tests of the VMM thread's answers to API requests, driven through
//! [`Vmm::handle`] without an HTTP socket.

use super::requests::apply_vsmmu_default;
use super::*;
use crate::config::{PayloadConfig, TestDeviceConfig, VsmmuConfig};

fn cmdqv_config() -> VmConfig {
    VmConfig {
        payload: PayloadConfig {
            kernel: Some("/nonexistent/Image".into()),
            ..PayloadConfig::default()
        },
        vsmmu: VsmmuConfig::parse("cmdqv,backend=emulated").unwrap(),
        test_devices: vec![TestDeviceConfig::parse("id=dma0", 0).unwrap()],
        ..VmConfig::default()
    }
}

fn status(response: ApiResponse) -> u16 {
    response.err().map_or(200, |e| e.status())
}

#[test]
fn requests_before_create_say_there_is_no_vm() {
    let mut vmm = Vmm::new(None).unwrap();
    for request in [
        ApiRequest::VmInfo,
        ApiRequest::VmBoot,
        ApiRequest::VmPause,
        ApiRequest::VmCounters,
        ApiRequest::VmDelete,
        ApiRequest::VmRemoveDevice("dma0".into()),
        ApiRequest::VmSaveState("snapshot"),
    ] {
        assert_eq!(status(vmm.handle(request).0), 404);
    }
    assert_eq!(status(vmm.handle(ApiRequest::VmmPing).0), 200);
}

#[test]
fn the_vsmmu_default_covers_bodies_that_name_no_vsmmu_and_their_unnamed_iommus() {
    let default = VsmmuConfig::parse("smmuv3").unwrap();
    let apply = |json: &str| {
        let given: serde_json::Value = serde_json::from_str(json).unwrap();
        let mut config: VmConfig = serde_json::from_value(given.clone()).unwrap();
        config.name_unnamed();
        apply_vsmmu_default(&mut config, &given, &default);
        config
    };
    // libvirt's <hostdev>s: a path each.
    let config = apply(
        r#"{"payload": {"kernel": "/k"}, "devices": [
            {"path": "/sys/bus/pci/devices/0000:00:02.0/"},
            {"path": "/sys/bus/pci/devices/0000:00:04.0/", "iommu": false}]}"#,
    );
    assert_eq!(config.vsmmu, default);
    assert!(config.devices[0].iommu, "no iommu named: behind the vSMMU");
    assert!(!config.devices[1].iommu, "iommu: false is kept");
    // A body that names its vSMMU (or none) is taken as it is.
    let config = apply(
        r#"{"payload": {"kernel": "/k"}, "vsmmu": {"kind": "off"},
            "devices": [{"path": "/sys/bus/pci/devices/0000:00:02.0/"}]}"#,
    );
    assert_eq!(config.vsmmu.kind, VsmmuKind::Off);
    assert!(!config.devices[0].iommu);
}

#[test]
fn add_net_joins_a_created_vm_and_holds_its_taps_until_delete() {
    use std::os::fd::{AsRawFd, OwnedFd};
    let net = |json: &str| Box::new(serde_json::from_str(json).unwrap());
    let mut vmm = Vmm::new(None).unwrap();
    let (response, _) = vmm.handle(ApiRequest::VmAddNet(net("{}"), Vec::new()));
    assert_eq!(status(response), 404);
    vmm.create(cmdqv_config()).unwrap();
    // A descriptor that is not a tap: refused naming the NIC, closed.
    let (read_end, mut write_end) = std::io::pipe().unwrap();
    let (response, _) = vmm.handle(ApiRequest::VmAddNet(
        net(r#"{"id": "net_0", "num_queues": 2}"#),
        vec![OwnedFd::from(read_end)],
    ));
    let err = response.unwrap_err();
    assert_eq!(err.status(), 400);
    assert!(
        err.to_string()
            .contains("vm.add-net id=net_0: a descriptor sent with the request: "),
        "{err}"
    );
    // Its read end is gone: writing finds no reader.
    let broken = std::io::Write::write(&mut write_end, b"x").unwrap_err();
    assert_eq!(broken.kind(), std::io::ErrorKind::BrokenPipe);
    assert!(vmm.description().unwrap().config.net.is_empty());
    // Without descriptors (the VMM opens a tap at boot): generated id
    // and MAC, the next NIC after it.
    for json in ["{}", r#"{"id": "net_1", "tap": "vmtap1"}"#] {
        let (response, _) = vmm.handle(ApiRequest::VmAddNet(net(json), Vec::new()));
        assert!(matches!(response, Ok(None)), "{response:?}");
    }
    let config = &vmm.description().unwrap().config;
    let ids: Vec<&str> = config.net.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["_net0", "net_1"]);
    assert!(config.net[0].mac.is_some());
    // The same tap twice breaks the configuration's rules: nothing changes.
    let (response, _) = vmm.handle(ApiRequest::VmAddNet(
        net(r#"{"id": "net_2", "tap": "vmtap1"}"#),
        Vec::new(),
    ));
    assert_eq!(status(response), 400);
    assert_eq!(vmm.description().unwrap().config.net.len(), 2);
    // A tap's descriptor (needs CAP_NET_ADMIN): held until vm.delete.
    // The tap is not persistent: it exists while a descriptor of it is
    // open, and the test drops its own first.
    if let Ok(tap) = virtio_devices::net::Tap::open(Some("chnet%d")) {
        let sysfs = std::path::Path::new("/sys/class/net").join(tap.name());
        // SAFETY: the tap's descriptor stays open while `tap` lives,
        // which outlasts this borrow (cloned at once).
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(tap.as_raw_fd()) };
        let fd = borrowed.try_clone_to_owned().unwrap();
        let raw = fd.as_raw_fd();
        let (response, _) = vmm.handle(ApiRequest::VmAddNet(
            net(r#"{"id": "net_3", "num_queues": 2}"#),
            vec![fd],
        ));
        assert!(matches!(response, Ok(None)), "{response:?}");
        assert_eq!(
            vmm.description().unwrap().config.net[2].fds,
            Some(vec![raw])
        );
        drop(tap);
        assert!(sysfs.exists(), "the VMM let go of the tap before vm.delete");
        assert_eq!(status(vmm.handle(ApiRequest::VmDelete).0), 200);
        assert!(!sysfs.exists(), "vm.delete did not close the tap");
    }
}

#[test]
fn created_vm_takes_cold_adds_and_removes() {
    let mut vmm = Vmm::new(None).unwrap();
    vmm.create(cmdqv_config()).unwrap();
    assert_eq!(
        vmm.create(cmdqv_config()).err().map(|e| e.status()),
        Some(500)
    );
    let (info, _) = vmm.handle(ApiRequest::VmInfo);
    let info: serde_json::Value = serde_json::from_str(&info.unwrap().unwrap()).unwrap();
    assert_eq!(info["state"], "Created");
    assert_eq!(info["config"]["vsmmu"]["kind"], "cmdqv");
    let device = |json: &str| serde_json::from_str::<DeviceConfig>(json).unwrap();
    for json in [
        r#"{"path": "/sys/bus/pci/devices/0000:01:00.0/"}"#,
        r#"{"path": "/sys/bus/pci/devices/0000:02:00.0", "iommu": true, "id": "gpu1"}"#,
    ] {
        let (response, _) = vmm.handle(ApiRequest::VmAddDevice(device(json)));
        assert!(matches!(response, Ok(None)), "{response:?}");
    }
    let ids = |vmm: &Vmm| -> Vec<String> {
        let config = &vmm.description().unwrap().config;
        config.devices.iter().map(|d| d.id.clone()).collect()
    };
    assert_eq!(ids(&vmm), ["_dev0", "gpu1"]);
    // A bad one changes nothing.
    let err = vmm
        .handle(ApiRequest::VmAddDevice(device(r#"{"path": "/tmp/x"}"#)))
        .0
        .unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(ids(&vmm), ["_dev0", "gpu1"]);
    assert_eq!(
        status(vmm.handle(ApiRequest::VmRemoveDevice("_dev0".into())).0),
        200
    );
    assert_eq!(ids(&vmm), ["gpu1"]);
    assert_eq!(
        status(vmm.handle(ApiRequest::VmRemoveDevice("dma0".into())).0),
        200
    );
    let err = vmm
        .handle(ApiRequest::VmRemoveDevice("nic9".into()))
        .0
        .unwrap_err();
    assert_eq!(err.status(), 404);
    assert!(err.to_string().contains("gpu1"), "{err}");
    assert_eq!(status(vmm.handle(ApiRequest::VmDelete).0), 200);
    assert_eq!(status(vmm.handle(ApiRequest::VmInfo).0), 404);
}

#[test]
fn a_vsock_is_cold_added_once_removed_by_id_and_its_socket_path_checked() {
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let socket = dir.as_path().join("clh.sock");
    let vsock = |json: &str| {
        serde_json::from_str::<crate::config::VsockConfig>(
            &json.replace("SOCK", &socket.display().to_string()),
        )
        .unwrap()
    };
    let mut vmm = Vmm::new(None).unwrap();
    let err = vmm
        .handle(ApiRequest::VmAddVsock(vsock(
            r#"{"cid":3,"socket":"SOCK"}"#,
        )))
        .0
        .unwrap_err();
    assert_eq!(err.status(), 404);
    vmm.create(cmdqv_config()).unwrap();
    let add = |vmm: &mut Vmm, json: &str| vmm.handle(ApiRequest::VmAddVsock(vsock(json))).0;
    let err = add(&mut vmm, r#"{"cid":2,"socket":"SOCK"}"#).unwrap_err();
    assert_eq!(err.status(), 400);
    assert!(
        err.to_string().contains("--vsock cid=2 is not a guest CID"),
        "{err}"
    );
    assert!(matches!(
        add(&mut vmm, r#"{"cid":3,"socket":"SOCK"}"#),
        Ok(None)
    ));
    let (info, _) = vmm.handle(ApiRequest::VmInfo);
    let info: serde_json::Value = serde_json::from_str(&info.unwrap().unwrap()).unwrap();
    assert_eq!(info["config"]["vsock"]["cid"], 3);
    assert_eq!(info["config"]["vsock"]["id"], "_vsock0");
    assert!(
        info["placement"].to_string().contains("virtio-vsock"),
        "{}",
        info["placement"]
    );
    let err = add(&mut vmm, r#"{"cid":4,"socket":"SOCK"}"#).unwrap_err();
    assert_eq!(err.status(), 500);
    assert_eq!(
        err.to_string(),
        "vm.add-vsock: the VM has a vsock already (id _vsock0, cid 3); a VM has at most \
         one, PUT vm.remove-device with its id first"
    );
    assert_eq!(
        status(vmm.handle(ApiRequest::VmRemoveDevice("_vsock0".into())).0),
        200
    );
    assert!(vmm.description().unwrap().config.vsock.is_none());
    // A path that exists, a directory that does not.
    std::fs::write(&socket, b"").unwrap();
    let err = add(&mut vmm, r#"{"cid":3,"socket":"SOCK"}"#).unwrap_err();
    assert_eq!(err.status(), 400);
    assert!(err.to_string().contains("the path exists"), "{err}");
    let err = vmm
        .handle(ApiRequest::VmAddVsock(
            serde_json::from_str(r#"{"cid":3,"socket":"/nonexistent/dir/v.sock"}"#).unwrap(),
        ))
        .0
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("socket=/nonexistent/dir/v.sock: cannot listen there"),
        "{err}"
    );
    assert!(vmm.description().unwrap().config.vsock.is_none());
}

#[test]
fn created_vm_refuses_what_needs_it_running() {
    let mut vmm = Vmm::new(None).unwrap();
    vmm.create(cmdqv_config()).unwrap();
    for op in ["snapshot", "send-migration"] {
        let err = vmm.handle(ApiRequest::VmSaveState(op)).0.unwrap_err();
        assert_eq!(err.status(), 405);
        assert!(
            err.to_string()
                .contains("the VM is created; PUT vm.boot first"),
            "{err}"
        );
    }
    assert_eq!(status(vmm.handle(ApiRequest::VmPause).0), 405);
    assert_eq!(status(vmm.handle(ApiRequest::VmShutdown).0), 405);
}

#[test]
fn unimplemented_endpoints_check_the_vm_first() {
    let what = |needs| Unimplemented {
        endpoint: "x",
        action: "do x",
        why: "x is not implemented",
        needs,
        status: 500,
    };
    let mut vmm = Vmm::new(None).unwrap();
    let refuse = |vmm: &mut Vmm, needs| {
        vmm.handle(ApiRequest::Unimplemented(what(needs)))
            .0
            .unwrap_err()
            .status()
    };
    assert_eq!(refuse(&mut vmm, Needs::Vm), 404);
    assert_eq!(refuse(&mut vmm, Needs::RunningVm), 404);
    assert_eq!(refuse(&mut vmm, Needs::NoVm), 500);
    vmm.create(cmdqv_config()).unwrap();
    assert_eq!(refuse(&mut vmm, Needs::Vm), 500);
    assert_eq!(refuse(&mut vmm, Needs::RunningVm), 405);
    let err = vmm
        .handle(ApiRequest::Unimplemented(what(Needs::NoVm)))
        .0
        .unwrap_err();
    assert!(matches!(err, ApiError::VmAlreadyCreated), "{err}");
}

#[test]
fn invalid_configs_are_refused_and_nothing_is_created() {
    let mut vmm = Vmm::new(None).unwrap();
    let mut config = cmdqv_config();
    config.payload.kernel = None;
    let err = vmm.create(config).unwrap_err();
    assert_eq!(err.status(), 400);
    assert!(err.to_string().contains("--kernel is required"), "{err}");
    assert_eq!(status(vmm.handle(ApiRequest::VmInfo).0), 404);
}

#[test]
fn vmm_shutdown_exits_the_loop() {
    let mut vmm = Vmm::new(None).unwrap();
    let (response, next) = vmm.handle(ApiRequest::VmmShutdown);
    assert!(matches!(response, Ok(None)));
    assert!(next == Next::Exit);
}
