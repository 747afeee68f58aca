//! The control API from outside, as an operator drives it: our
//! `cloud-hypervisor --api-socket` as a process, talked to with curl (a
//! client nobody here wrote), with our `ch-remote`, and with raw bytes.
//! Every endpoint that works without a running VM (this host cannot boot
//! one), every refusal, and garbage: after each the VMM must still answer.
//!
//! Every loop is bounded in count and time; sockets live in a temp dir.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_cloud-hypervisor");
const CH_REMOTE: &str = env!("CARGO_BIN_EXE_ch-remote");

/// A VM definition with a vSMMU + CMD-QV and a test endpoint behind it.
const CMDQV_VM: &str = r#"{
    "cpus": {"boot_vcpus": 2, "max_vcpus": 2},
    "memory": {"size": 536870912},
    "payload": {"kernel": "/nonexistent/Image", "cmdline": "console=ttyAMA0"},
    "serial": {"mode": "Off"},
    "vsmmu": {"kind": "cmdqv", "backend": "emulated"},
    "test_devices": [{"id": "dma0"}]
}"#;

/// A cloud-hypervisor started with `--api-socket` alone.
struct Vmm {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Vmm {
    fn start(name: &str) -> Vmm {
        let dir = common::scratch(&format!("api-{name}"));
        let (child, socket) = common::spawn_with_api(&dir, &["-vv"]);
        Vmm { child, dir, socket }
    }

    fn url(path: &str) -> String {
        format!("http://localhost/api/v1/{path}")
    }

    /// curl METHOD /api/v1/PATH [body]: (status, headers, body).
    fn curl(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-S", "--max-time", "20", "-D", "-", "-X", method])
            .arg("--unix-socket")
            .arg(&self.socket);
        if let Some(body) = body {
            let file = self.dir.join("body");
            std::fs::write(&file, body).unwrap();
            cmd.arg("-H").arg("Content-Type: application/json");
            cmd.arg("--data-binary").arg(format!("@{}", file.display()));
        }
        let out = cmd
            .arg(Self::url(path))
            .output()
            .expect("curl (Debian package curl)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // -D - prints every header block (a 100 Continue first): the last one wins.
        let last = text.rfind("HTTP/1.1 ").unwrap_or(0);
        let (head, body) = text[last..]
            .split_once("\r\n\r\n")
            .unwrap_or((&text[last..], ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status from curl for {method} {path}: {text:?} {out:?}"));
        (status, head.to_string(), body.to_string())
    }

    fn ch_remote(&self, args: &[&str]) -> Output {
        Command::new(CH_REMOTE)
            .arg("--api-socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Write `bytes` on a fresh connection (optionally half-closing it) and
    /// read whatever comes back within 10 s.
    fn raw(&self, bytes: &[u8], half_close: bool) -> String {
        let mut stream = UnixStream::connect(&self.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // The server may refuse and close before it read everything.
        let _ = stream.write_all(bytes);
        if half_close {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
        common::read_answer(&mut stream)
    }

    /// The VMM still runs and answers.
    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the VMM exited; log:\n{}",
            self.log()
        );
        let (status, _, body) = self.curl("GET", "vmm.ping", None);
        assert_eq!(status, 200, "{body}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vmm.log")).unwrap_or_default()
    }

    /// Wait (bounded) for the VMM to exit; its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the VMM did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn message(body: &str) -> String {
    let lines: Vec<String> =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("error body {body:?}: {e}"));
    assert_eq!(lines.len(), 1, "{body}");
    lines[0].clone()
}

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
fn protocol_refusals_are_4xx_with_a_json_reason() {
    let mut vmm = Vmm::start("protocol");
    let (status, _, body) = vmm.curl("GET", "vm.nothing", None);
    assert_eq!(status, 404);
    assert!(message(&body).starts_with("/api/v1/vm.nothing is not an endpoint"));
    let (status, head, body) = vmm.curl("DELETE", "vm.info", None);
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET"), "{head}");
    assert_eq!(
        message(&body),
        "/api/v1/vm.info does not take DELETE; send GET"
    );
    let (status, _, body) = vmm.curl("PUT", "vm.create", Some(b"{\"payload\": "));
    assert_eq!(status, 400);
    assert!(message(&body).starts_with("vm.create: the body is not valid"));
    let (status, _, body) = vmm.curl(
        "PUT",
        "vm.create",
        Some(br#"{"payload":{"kernel":"/k"},"disks":[{"path":"/d"}]}"#),
    );
    assert_eq!(status, 400);
    assert!(
        message(&body).contains(
            "--disk path=/d: cannot open the image: No such file or directory (os error 2); \
             check the path and its permissions"
        ),
        "{body}"
    );
    let (status, _, body) = vmm.curl(
        "PUT",
        "vm.create",
        Some(br#"{"payload":{"kernel":"/k"},"cpus":{"boot_vcpus":8,"max_vcpus":2}}"#),
    );
    assert_eq!(status, 400);
    assert!(message(&body).contains("field cpus.max_vcpus=2"), "{body}");
    let (status, _, body) = vmm.curl(
        "PUT",
        "vm.create",
        Some(br#"{"payload":{"kernel":"/k"},"serial":{"mode":"Pty","fil":1}}"#),
    );
    assert_eq!(
        status, 204,
        "unknown fields are accepted, as upstream: {body}"
    );
    let (_, _, body) = vmm.curl("GET", "vm.info", None);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pty = info["config"]["serial"]["file"]
        .as_str()
        .unwrap_or_default();
    assert!(pty.starts_with("/dev/pts/"), "{body}");
    assert_eq!(info["config"]["serial"]["fil"], 1, "{body}");
    assert!(std::path::Path::new(pty).exists(), "{pty}");
    let (status, _, _) = vmm.curl("PUT", "vm.delete", None);
    assert_eq!(status, 204);
    let (status, _, body) = vmm.curl("PUT", "vm.create", Some(br#"{"payload":{}}"#));
    assert_eq!(status, 400);
    assert!(message(&body).contains("--kernel is required"), "{body}");
    let (status, _, body) = vmm.curl("PUT", "vm.remove-device", None);
    assert_eq!(status, 400);
    assert!(message(&body).contains("it is empty"), "{body}");

    // A 10 MB body: refused from its Content-Length, never read.
    let big = vec![b'x'; 10 << 20];
    let (status, _, body) = vmm.curl("PUT", "vm.create", Some(&big));
    assert_eq!(status, 413);
    assert!(message(&body).contains("exceeds the API's limit of 65536 bytes"));
    // Headers past 8 KiB, chunked bodies.
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--unix-socket",
        ])
        .arg(&vmm.socket)
        .arg("-H")
        .arg(format!("X-Big: {}", "b".repeat(10 << 10)))
        .arg(Vmm::url("vmm.ping"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "431");
    // Chunked bodies (older libvirt sends them) reach the endpoint.
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-X", "PUT"])
        .args(["-H", "Transfer-Encoding: chunked", "--data-binary", "{}"])
        .arg("--unix-socket")
        .arg(&vmm.socket)
        .arg(Vmm::url("vm.create"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(code, "400", "{text}");
    assert!(message(body).contains("missing field `payload`"), "{text}");
    // Truncated and malformed chunks on the wire.
    for (bytes, status, needle) in [
        (&b"5\r\n{\"pa"[..], 400, "the request ended after"),
        (b"zz\r\n{}\r\n0\r\n\r\n", 400, "is not hexadecimal"),
        (b"2\r\n{}xx\r\n0\r\n\r\n", 400, "longer than its size line"),
        (b"fffffffff\r\n", 400, "chunk size line"),
        (b"10001\r\n", 413, "exceeds the API's limit of 65536 bytes"),
    ] {
        let mut request =
            b"PUT /api/v1/vm.create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        request.extend_from_slice(bytes);
        let answer = vmm.raw(&request, true);
        assert_eq!(status_of(&answer), Some(status), "{answer}");
        assert!(answer.contains(needle), "{answer}");
    }
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

/// xorshift64*: deterministic garbage.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

fn status_of(answer: &str) -> Option<u16> {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

#[test]
fn garbage_is_answered_or_refused_and_the_vmm_keeps_running() {
    let mut vmm = Vmm::start("garbage");

    // Random bytes, 1 byte to 100 KB: each is refused (4xx) or, when it
    // never reaches a request line, the connection just closes.
    for (seed, len) in (1..=24u64).zip([1usize, 7, 64, 512, 4096, 100 << 10].iter().cycle()) {
        let answer = vmm.raw(&garbage(seed, *len), true);
        if let Some(status) = status_of(&answer) {
            assert!((400..500).contains(&status), "seed {seed}: {answer}");
        }
    }
    vmm.assert_alive();

    // Truncated requests: half a request line, headers without the blank
    // line, a body shorter than its Content-Length.
    for truncated in [
        &b"GET /api/v1/vmm.pi"[..],
        b"PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\n",
        b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"payload\"",
    ] {
        let answer = vmm.raw(truncated, true);
        assert_eq!(status_of(&answer), Some(400), "{answer}");
        assert!(answer.contains("the request ended after"), "{answer}");
    }
    // A client that sends half a request and then nothing: 408 after 5 s.
    let started = Instant::now();
    let answer = vmm.raw(b"GET /api/v1/vmm.ping HTTP/1.1\r\n", false);
    assert_eq!(status_of(&answer), Some(408), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(9));
    vmm.assert_alive();

    // 10 MB straight at the socket: refused from the headers.
    let mut big = format!(
        "PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        10 << 20
    )
    .into_bytes();
    big.extend(std::iter::repeat_n(b'{', 10 << 20));
    let answer = vmm.raw(&big, true);
    assert_eq!(status_of(&answer), Some(413), "{answer}");
    vmm.assert_alive();

    // 1000 requests in a row, one curl process.
    let urls: String = (0..1000)
        .map(|_| {
            format!(
                "url = \"{}\"\noutput = \"/dev/null\"\n",
                Vmm::url("vmm.ping")
            )
        })
        .collect();
    let list = vmm.dir.join("urls");
    std::fs::write(&list, urls).unwrap();
    let started = Instant::now();
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "120",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\\n",
        ])
        .arg("--unix-socket")
        .arg(&vmm.socket)
        .arg("-K")
        .arg(&list)
        .output()
        .unwrap();
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(codes.lines().count(), 1000, "{out:?}");
    assert!(codes.lines().all(|c| c == "200"), "{codes}");
    eprintln!("1000 sequential pings: {:?}", started.elapsed());

    // 16 concurrent clients (curl --parallel): each answered (200) or
    // refused because another request was in flight (429).
    let urls: String = (0..16)
        .map(|i| {
            let path = if i % 2 == 0 { "vmm.ping" } else { "vm.info" };
            format!("url = \"{}\"\noutput = \"/dev/null\"\n", Vmm::url(path))
        })
        .collect();
    std::fs::write(&list, urls).unwrap();
    let out = Command::new("curl")
        .args([
            "-s",
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            "16",
        ])
        .args([
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\\n",
        ])
        .arg("--unix-socket")
        .arg(&vmm.socket)
        .arg("-K")
        .arg(&list)
        .output()
        .unwrap();
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(codes.lines().count(), 16, "{out:?}");
    eprintln!(
        "16 parallel curl clients: {}",
        codes.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    // vm.info answers 404 (no VM): an answer too.
    assert!(
        codes.lines().all(|c| ["200", "404", "429"].contains(&c)),
        "{codes}"
    );
    // And 16 raw clients at once, each holding its connection open.
    let socket = vmm.socket.clone();
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                raw_request(&socket, b"GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n")
            })
        })
        .collect();
    for client in clients {
        let answer = client.join().unwrap();
        eprintln!("raw concurrent client: {:?}", answer.lines().next());
        assert!(matches!(status_of(&answer), Some(200 | 429)), "{answer}");
    }
    vmm.assert_alive();
    assert!(!vmm.log().contains("panicked"), "{}", vmm.log());
}

fn raw_request(socket: &Path, bytes: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    common::read_answer(&mut stream)
}

#[test]
fn sigterm_tears_down_and_a_live_socket_is_not_taken_over() {
    let mut vmm = Vmm::start("sigterm");
    // A second VMM on the same path is refused: the first one answers there.
    let out = Command::new(BIN)
        .arg("--api-socket")
        .arg(&vmm.socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another process is listening there"),
        "{out:?}"
    );
    vmm.assert_alive();
    let (status, _, _) = vmm.curl("PUT", "vm.create", Some(CMDQV_VM.as_bytes()));
    assert_eq!(status, 204);
    let kill = Command::new("kill")
        .args(["-TERM", &vmm.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(vmm.wait_exit(), Some(1));
    assert!(
        vmm.log().contains("terminated by signal 15"),
        "{}",
        vmm.log()
    );
    assert!(!vmm.socket.exists());
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
