//! The endpoint table of docs/api-endpoints.md, measured: every path of
//! cloud-hypervisor's v53.0 spec (tests/data, extracted from its OpenAPI
//! file) is sent to our `cloud-hypervisor --api-socket`, once with no VM
//! and once with a created VM, and what it answers is written as a
//! markdown table beside what the spec lists. The test fails when the
//! committed table differs from what it measures; regenerate it with
//! `UPDATE_API_TABLE=1 cargo test -p vmm --test api_endpoints`.
//!
//! Measured on a host that cannot run a VM (no aarch64 KVM): `vm.boot`
//! answers 501 there, so the comparison runs on non-aarch64 builds only.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

mod common;

const SPEC: &str = include_str!("data/cloud-hypervisor-v53.0-endpoints.txt");
const TABLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api-endpoints.md");

/// The VM every "created" column is measured with.
const VM: &str = r#"{"cpus": {"boot_vcpus": 1, "max_vcpus": 1}, "memory": {"size": 536870912},
    "payload": {"kernel": "/nonexistent/Image"}, "serial": {"mode": "Null"},
    "vsmmu": {"kind": "cmdqv", "backend": "emulated"}, "test_devices": [{"id": "dma0"}]}"#;

/// A body of the spec's shape for each endpoint that takes one.
fn sample_body(path: &str) -> Option<&'static str> {
    Some(match path {
        "vm.create" => VM,
        "vm.add-device" => r#"{"path": "/sys/bus/pci/devices/0000:01:00.0/"}"#,
        "vm.remove-device" => r#"{"id": "dma0"}"#,
        "vm.add-disk" => r#"{"path": "/tmp/disk.img"}"#,
        "vm.add-net" => r#"{"tap": "tap0"}"#,
        "vm.add-vsock" => r#"{"cid": 3, "socket": "/tmp/vsock"}"#,
        "vm.add-fs" => r#"{"tag": "fs0", "socket": "/tmp/fs"}"#,
        "vm.add-pmem" => r#"{"file": "/tmp/pmem"}"#,
        "vm.add-vdpa" => r#"{"path": "/dev/vhost-vdpa-0"}"#,
        "vm.add-generic-vhost-user" => r#"{"socket": "/tmp/vu", "virtio_id": 26}"#,
        "vm.add-user-device" => r#"{"socket": "/tmp/user"}"#,
        "vm.resize" => r#"{"desired_vcpus": 2}"#,
        "vm.resize-zone" => r#"{"id": "mem0", "desired_ram": 1073741824}"#,
        "vm.resize-disk" => r#"{"id": "disk0", "desired_size": 1073741824}"#,
        "vm.snapshot" | "vm.coredump" => r#"{"destination_url": "file:///tmp/snap"}"#,
        "vm.send-migration" => r#"{"destination_url": "unix:/tmp/mig"}"#,
        "vm.receive-migration" => r#"{"receiver_url": "unix:/tmp/mig"}"#,
        "vm.restore" => r#"{"source_url": "file:///tmp/snap"}"#,
        _ => return None,
    })
}

struct Vmm {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Vmm {
    fn start() -> Vmm {
        let dir = common::scratch("api-table");
        let (child, socket) = common::spawn_with_api(&dir, &[]);
        Vmm { child, dir, socket }
    }

    /// (status, first error message or "").
    fn send(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut stream = UnixStream::connect(&self.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let body = body.unwrap_or("");
        let request = format!(
            "{method} /api/v1/{path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: \
             application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let answer = common::read_answer(&mut stream);
        let status = answer
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: no answer: {answer:?}"));
        let text = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let message = serde_json::from_str::<Vec<String>>(text)
            .ok()
            .and_then(|lines| lines.into_iter().next())
            .unwrap_or_default();
        (status, message)
    }

    /// Back to "a VM is created", whatever the request before did.
    fn recreate(&self) {
        let _ = self.send("PUT", "vm.delete", None);
        let (status, message) = self.send("PUT", "vm.create", Some(VM));
        assert_eq!(status, 204, "{message}");
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One row: method, path, the spec's codes, ours without and with a VM,
/// the reason given with a VM.
fn measure(vmm: &Vmm, method: &str, path: &str) -> (u16, u16, String) {
    let body = sample_body(path);
    let _ = vmm.send("PUT", "vm.delete", None);
    let (no_vm, _) = vmm.send(method, path, body);
    vmm.recreate();
    let (created, message) = vmm.send(method, path, body);
    vmm.recreate();
    (no_vm, created, message)
}

fn escape(text: &str) -> String {
    text.replace('|', "\\|")
}

#[test]
fn every_path_of_the_spec_answers_as_the_committed_table_says() {
    let vmm = Vmm::start();
    let mut table = String::from(
        "# The control API, endpoint by endpoint\n\n\
         Generated by `vmm/tests/api_endpoints.rs` from what our `cloud-hypervisor \
         --api-socket` answers (on an x86_64 build, which cannot run a VM: `vm.boot` is 501 \
         there); regenerate with `UPDATE_API_TABLE=1 cargo test -p vmm --test api_endpoints`. \
         The paths and the codes the spec lists are cloud-hypervisor v53.0's \
         (`vmm/tests/data/cloud-hypervisor-v53.0-endpoints.txt`, from its OpenAPI file). \
         Each request carries a body of the spec's shape; \"created\" is a VM defined with \
         `vm.create` and not booted. A status the spec does not list for the path is marked \
         with `*`: 501 where this host cannot run the VM, 500 where upstream's server answers \
         500 to what the spec leaves undescribed. Refusals of a running VM (hot-plug behind a \
         vSMMU, snapshot and migration of its host state, the power button) are in \
         [api.md](api.md).\n\n\
         | method | path | spec | no VM | created | answer with a created VM |\n\
         |---|---|---|---|---|---|\n",
    );
    let mut shutdown = None;
    for line in SPEC.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (method, path, codes) = (fields[0], fields[1], &fields[2..]);
        if path == "vmm.shutdown" {
            shutdown = Some((method, path, codes.join(" ")));
            continue;
        }
        let (no_vm, created, message) = measure(&vmm, method, path);
        let mark = |status: u16| {
            let listed = codes.contains(&status.to_string().as_str());
            format!("{status}{}", if listed { "" } else { "*" })
        };
        table.push_str(&format!(
            "| {method} | `{path}` | {} | {} | {} | {} |\n",
            codes.join(" "),
            mark(no_vm),
            mark(created),
            escape(&message)
        ));
    }
    // Last: it ends the VMM.
    let (method, path, codes) = shutdown.expect("vmm.shutdown is in the spec");
    let (status, _) = vmm.send(method, path, None);
    table.push_str(&format!(
        "| {method} | `{path}` | {codes} | {status} | {status} | (the VMM exits) |\n"
    ));

    if std::env::var_os("UPDATE_API_TABLE").is_some() {
        std::fs::write(TABLE, &table).unwrap();
        return;
    }
    if cfg!(target_arch = "aarch64") {
        return;
    }
    let committed = std::fs::read_to_string(TABLE).unwrap_or_default();
    if committed != table {
        let first = committed
            .lines()
            .zip(table.lines())
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("committed: {a}\nmeasured:  {b}"))
            .unwrap_or_else(|| "the tables differ in length".into());
        panic!(
            "docs/api-endpoints.md is not what the API answers; regenerate with \
             UPDATE_API_TABLE=1 cargo test -p vmm --test api_endpoints\n{first}"
        );
    }
}
