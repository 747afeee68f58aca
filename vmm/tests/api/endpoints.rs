//! The endpoints a VM without a running guest answers: every one through
//! curl, cold device adds and removes, `ch-remote`, and the command line
//! beside `--api-socket`.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::{BIN, CH_REMOTE, CMDQV_VM, Vmm, message};

#[test]
fn every_endpoint_answers_curl_without_a_running_vm() {
    let mut vmm = Vmm::start("curl");
    let (status, head, body) = vmm.curl("GET", "vmm.ping", None);
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: application/json"), "{head}");
    let ping: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ping["version"], "53.0.0");
    assert_eq!(
        ping["build_version"],
        concat!("v53.0.0-vsmmu-vmm-", env!("CARGO_PKG_VERSION"))
    );
    assert!(ping["features"].is_array(), "{ping}");
    assert_eq!(ping["pid"], vmm.child.id());

    // Nothing defined yet.
    for (method, path) in [
        ("GET", "vm.info"),
        ("GET", "vm.counters"),
        ("PUT", "vm.boot"),
        ("PUT", "vm.pause"),
        ("PUT", "vm.resume"),
        ("PUT", "vm.reboot"),
        ("PUT", "vm.shutdown"),
        ("PUT", "vm.power-button"),
        ("PUT", "vm.delete"),
    ] {
        let (status, _, body) = vmm.curl(method, path, None);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(message(&body).starts_with("no VM is created"), "{body}");
    }

    // Define it.
    let (status, _, body) = vmm.curl("PUT", "vm.create", Some(CMDQV_VM.as_bytes()));
    assert_eq!(status, 204, "{body}");
    let (status, _, body) = vmm.curl("GET", "vm.info", None);
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["state"], "Created");
    assert_eq!(info["config"]["cpus"]["boot_vcpus"], 2);
    assert_eq!(info["config"]["vsmmu"]["kind"], "cmdqv");
    assert_eq!(info["config"]["test_devices"][0]["id"], "dma0");
    assert_eq!(info["memory_actual_size"], 536870912u64);
    // Upstream answers 500 to a second vm.create (the spec lists no code).
    let (status, _, body) = vmm.curl("PUT", "vm.create", Some(CMDQV_VM.as_bytes()));
    assert_eq!(status, 500, "{body}");

    // Not running: what needs a running VM says so, with the spec's 405.
    for path in [
        "vm.pause",
        "vm.resume",
        "vm.reboot",
        "vm.shutdown",
        "vm.power-button",
    ] {
        let (status, _, body) = vmm.curl("PUT", path, None);
        assert_eq!(status, 405, "{path}: {body}");
        assert!(
            message(&body).contains("the VM is created; PUT vm.boot first"),
            "{body}"
        );
    }
    // vm.counters lists no 405: upstream's 500.
    let (status, _, body) = vmm.curl("GET", "vm.counters", None);
    assert_eq!(status, 500, "{body}");
    // This host cannot run a VM: boot says why and changes nothing.
    let (status, _, body) = vmm.curl("PUT", "vm.boot", None);
    if cfg!(target_arch = "aarch64") {
        assert!(status >= 400, "{body}");
    } else {
        assert_eq!(status, 501, "{body}");
        assert!(
            message(&body).contains("needs an aarch64 host with KVM"),
            "{body}"
        );
    }
    let (_, _, body) = vmm.curl("GET", "vm.info", None);
    assert!(body.contains(r#""state":"Created""#), "{body}");

    let (status, _, _) = vmm.curl("PUT", "vm.delete", None);
    assert_eq!(status, 204);
    let (status, _, _) = vmm.curl("GET", "vm.info", None);
    assert_eq!(status, 404);

    let (status, _, _) = vmm.curl("PUT", "vmm.shutdown", None);
    assert_eq!(status, 204);
    assert_eq!(vmm.wait_exit(), Some(0));
    assert!(!vmm.socket.exists(), "the socket is removed on exit");
}

#[test]
fn version_is_printed_in_upstream_form_for_libvirt() {
    // libvirt's ch driver looks for "cloud-hypervisor vN.M.P" and uses the
    // payload JSON from 28 on.
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cloud-hypervisor v53.0.0\n"
    );
    for flag in ["-V", "--version"] {
        let out = Command::new(CH_REMOTE).arg(flag).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ch-remote v53.0.0\n");
    }
}

#[test]
fn devices_are_added_and_removed_cold_before_boot() {
    let mut vmm = Vmm::start("cold-add");
    let (status, _, _) = vmm.curl("PUT", "vm.create", Some(CMDQV_VM.as_bytes()));
    assert_eq!(status, 204);

    // As upstream: before boot, vm.add-device adds to the configuration (204).
    let add = br#"{"path":"/sys/bus/pci/devices/0000:01:00.0/","iommu":true,"id":"gpu1"}"#;
    let (status, _, body) = vmm.curl("PUT", "vm.add-device", Some(add));
    assert_eq!(status, 204, "{body}");
    let (status, _, body) = vmm.curl("PUT", "vm.add-device", Some(add));
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("gpu1"), "{body}");
    let (_, _, body) = vmm.curl("GET", "vm.info", None);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["config"]["devices"][0]["id"], "gpu1", "{body}");
    let (status, _, body) = vmm.curl("PUT", "vm.remove-device", Some(br#"{"id":"gpu7"}"#));
    assert_eq!(status, 404);
    assert!(
        message(&body).contains("no device with id gpu7; the VM's devices are: gpu1"),
        "{body}"
    );
    for id in ["gpu1", "dma0"] {
        let body = format!(r#"{{"id":"{id}"}}"#);
        let (status, _, answer) = vmm.curl("PUT", "vm.remove-device", Some(body.as_bytes()));
        assert_eq!(status, 204, "{answer}");
    }
    let (_, _, body) = vmm.curl("GET", "vm.info", None);
    assert!(!body.contains("gpu1") && !body.contains("dma0"), "{body}");

    // A NIC joins the configuration before boot (its tap opens at boot).
    let (status, _, body) = vmm.curl("PUT", "vm.add-net", Some(br#"{"tap":"tap0","id":"eth0"}"#));
    assert_eq!(status, 204, "{body}");
    let (_, _, body) = vmm.curl("GET", "vm.info", None);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["config"]["net"][0]["tap"], "tap0", "{body}");
    assert_eq!(info["config"]["net"][0]["id"], "eth0", "{body}");
    let (status, _, body) = vmm.curl("PUT", "vm.add-net", Some(br#"{"tap":"tap0"}"#));
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("tap=tap0 is given twice"), "{body}");

    // A disk is cold-added as upstream once its image opens; a missing
    // image and a vhost-user disk are refused by name.
    let image = vmm.dir.join("added.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let body = format!(r#"{{"path":"{}","readonly":true}}"#, image.display());
    let (status, _, answer) = vmm.curl("PUT", "vm.add-disk", Some(body.as_bytes()));
    assert_eq!(status, 204, "vm.add-disk: {answer}");
    let (_, _, info) = vmm.curl("GET", "vm.info", None);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    let disks = info["config"]["disks"].as_array().unwrap();
    let added = disks.last().unwrap();
    assert_eq!(added["path"], image.display().to_string(), "{info}");
    assert_eq!(added["readonly"], true, "{info}");
    let (status, _, answer) = vmm.curl("PUT", "vm.add-disk", Some(br#"{"path":"/d.img"}"#));
    assert_eq!(status, 400, "vm.add-disk: {answer}");
    assert!(
        message(&answer).contains("--disk path=/d.img: cannot open the image"),
        "{answer}"
    );
    let (status, _, answer) = vmm.curl(
        "PUT",
        "vm.add-disk",
        Some(br#"{"path":"/d.img","vhost_user":true}"#),
    );
    assert_eq!(status, 400, "vm.add-disk: {answer}");
    assert!(
        message(&answer).contains("field vhost_user=true is not supported"),
        "{answer}"
    );
    // A vsock is cold-added as upstream: the config has it, once.
    let socket = vmm.dir.join("vsock.sock");
    let body = format!(r#"{{"cid":3,"socket":"{}"}}"#, socket.display());
    let (status, _, answer) = vmm.curl("PUT", "vm.add-vsock", Some(body.as_bytes()));
    assert_eq!(status, 204, "{answer}");
    let (_, _, info) = vmm.curl("GET", "vm.info", None);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["config"]["vsock"]["cid"], 3, "{info}");
    let (status, _, answer) = vmm.curl("PUT", "vm.add-vsock", Some(body.as_bytes()));
    assert_eq!(status, 500, "{answer}");
    assert!(
        message(&answer).contains("the VM has a vsock already (id _vsock0, cid 3)"),
        "{answer}"
    );
    let (status, _, answer) = vmm.curl("PUT", "vm.remove-device", Some(br#"{"id":"_vsock0"}"#));
    assert_eq!(status, 204, "{answer}");
    // Saving state needs a running VM: the spec's 405 first.
    let (status, _, body) = vmm.curl(
        "PUT",
        "vm.snapshot",
        Some(br#"{"destination_url":"file:///tmp/snap"}"#),
    );
    assert_eq!(status, 405, "{body}");
    assert_eq!(
        message(&body),
        "cannot take a snapshot: the VM is created; PUT vm.boot first"
    );
    vmm.assert_alive();
}

#[test]
fn ch_remote_drives_the_api_and_prints_json() {
    let mut vmm = Vmm::start("ch-remote");
    let out = vmm.ch_remote(&["ping"]);
    assert!(out.status.success(), "{out:?}");
    let ping: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ping["pid"], vmm.child.id());

    let config = vmm.dir.join("vm.json");
    std::fs::write(&config, CMDQV_VM).unwrap();
    let out = vmm.ch_remote(&["create", config.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "204 prints nothing");
    let out = vmm.ch_remote(&["info"]);
    assert!(out.status.success(), "{out:?}");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["state"], "Created");

    let refused = |args: &[&str], status: u16, needle: &str| {
        let out = vmm.ch_remote(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("Server responded with {status}: ")),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    };
    refused(&["remove-device", "gpu7"], 404, "no device with id gpu7");
    refused(
        &["snapshot", "file:///tmp/s"],
        405,
        "cannot take a snapshot: the VM is created",
    );
    refused(
        &["send-migration", "unix:/tmp/m"],
        500,
        "cannot send a migration",
    );
    refused(
        &["receive-migration", "unix:/tmp/m"],
        500,
        "a VM is already created",
    );
    refused(
        &["counters"],
        500,
        "cannot read counters: the VM is created",
    );
    refused(&["pause"], 405, "cannot pause");
    refused(&["resume"], 405, "cannot resume");
    refused(&["reboot"], 405, "cannot reboot");
    refused(&["shutdown"], 405, "cannot shut down");
    refused(&["power-button"], 405, "cannot press the power button");
    refused(
        &["add-disk", "path=/d.img"],
        400,
        "--disk path=/d.img: cannot open the image",
    );
    // add-net joins the configuration before boot: 204, nothing printed.
    let out = vmm.ch_remote(&["add-net", "tap=tap0"]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    refused(
        &["add-vsock", "cid=2,socket=/v"],
        400,
        "--vsock cid=2 is not a guest CID",
    );
    let socket = format!("cid=4,socket={}", vmm.dir.join("v.sock").display());
    let out = vmm.ch_remote(&["add-vsock", &socket]);
    assert!(out.status.success(), "{out:?}");
    refused(
        &["add-vsock", &socket],
        500,
        "the VM has a vsock already (id _vsock0, cid 4)",
    );
    refused(&["add-fs", "tag=fs,socket=/f"], 500, "virtio-fs");
    refused(&["add-pmem", "file=/p"], 500, "virtio-pmem");
    refused(&["add-vdpa", "path=/dev/vhost-vdpa-0"], 500, "vDPA");
    refused(&["add-generic-vhost-user", "socket=/g"], 500, "vhost-user");
    refused(&["add-user-device", "socket=/u"], 404, "vfio-user");
    refused(
        &["resize", "--cpus", "4"],
        500,
        "hot-plug are not implemented",
    );
    refused(
        &["resize-zone", "--id", "z", "--size", "1G"],
        500,
        "resizing memory zones",
    );
    refused(
        &["resize-disk", "--disk", "d", "--size", "1G"],
        500,
        "resizing a disk is not implemented yet",
    );
    refused(
        &["restore", "source_url=file:///s"],
        404,
        "a VM is already created",
    );
    refused(
        &["coredump", "file:///tmp/core"],
        405,
        "cannot take a core dump",
    );
    refused(&["nmi"], 500, "cannot inject an NMI");
    if !cfg!(target_arch = "aarch64") {
        refused(&["boot"], 501, "needs an aarch64 host with KVM");
    }
    let out = vmm.ch_remote(&["delete"]);
    assert!(out.status.success(), "{out:?}");
    refused(&["info"], 404, "no VM is created");
    // create reads stdin with "-" (the default).
    let mut child = Command::new(CH_REMOTE)
        .arg("--api-socket")
        .arg(&vmm.socket)
        .arg("create")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(CMDQV_VM.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    vmm.assert_alive();

    let out = vmm.ch_remote(&["shutdown-vmm"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(vmm.wait_exit(), Some(0));
    // No VMM: ch-remote says so and fails.
    let out = vmm.ch_remote(&["ping"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot talk to the API socket"));
}

#[test]
fn vm_options_without_kernel_are_refused_with_api_socket() {
    let dir = std::env::temp_dir().join(format!("ch-api-{}-opts", std::process::id()));
    let out = Command::new(BIN)
        .arg("--api-socket")
        .arg(dir.join("api.sock"))
        .args(["--vsmmu", "cmdqv,backend=emulated", "--cpus", "boot=2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("VM options without --kernel define no VM"),
        "{out:?}"
    );
}
