//! `--event-monitor` from outside: the real `cloud-hypervisor` binary with
//! `--api-socket`, driven by `ch-remote`, writing its events to a file or to
//! a FIFO the way libvirt sets one up. No KVM is needed: only the VMM's own
//! life cycle and the VM definition's are exercised.
//!
//! Every wait is bounded; files live in a temp dir.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cloud-hypervisor");
const CH_REMOTE: &str = env!("CARGO_BIN_EXE_ch-remote");

/// A VM definition this host can hold (it cannot boot it).
const VM: &str = r#"{
    "cpus": {"boot_vcpus": 1},
    "memory": {"size": 268435456},
    "payload": {"kernel": "/nonexistent/Image"},
    "serial": {"mode": "Off"},
    "vsmmu": {"kind": "cmdqv", "backend": "emulated"}
}"#;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ch-events-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `cloud-hypervisor --api-socket path=DIR/api.sock --event-monitor MONITOR`.
struct Vmm {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Vmm {
    fn start(dir: &Path, monitor: &str) -> Vmm {
        let socket = dir.join("api.sock");
        let log = std::fs::File::create(dir.join("vmm.log")).unwrap();
        let child = Command::new(BIN)
            .arg("--api-socket")
            .arg(format!("path={}", socket.display()))
            .arg("--event-monitor")
            .arg(monitor)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let vmm = Vmm {
            child,
            dir: dir.to_path_buf(),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&vmm.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "the API socket never appeared: {}",
                vmm.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        vmm
    }

    fn ch_remote(&self, args: &[&str]) -> Output {
        Command::new(CH_REMOTE)
            .arg("--api-socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vmm.log")).unwrap_or_default()
    }

    /// Wait (at most 10 s) for the VMM to exit; its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the VMM did not exit: {}",
                self.log()
            );
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

/// `source:event` of each line of a stream; every line must be one JSON
/// object of upstream's shape.
fn names(stream: &str) -> Vec<String> {
    stream
        .lines()
        .map(|line| {
            let json: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert!(json["timestamp"]["secs"].is_u64(), "{line}");
            assert!(json["timestamp"]["nanos"].is_u64(), "{line}");
            assert!(
                json["properties"].is_null() || json["properties"].is_object(),
                "{line}"
            );
            format!(
                "{}:{}",
                json["source"].as_str().unwrap(),
                json["event"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn start_and_shutdown_vmm_write_the_vmm_lifecycle_to_a_file() {
    let dir = temp_dir("file");
    let events = dir.join("events.json");
    let mut vmm = Vmm::start(&dir, &format!("path={}", events.display()));
    let out = vmm.ch_remote(&["shutdown-vmm"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(vmm.wait_exit(), Some(0), "{}", vmm.log());
    let stream = std::fs::read_to_string(&events).unwrap();
    assert_eq!(names(&stream), ["vmm:starting", "vmm:shutdown"], "{stream}");
}

#[test]
fn a_defined_vm_that_is_deleted_says_so_between_the_vmm_events() {
    let dir = temp_dir("delete");
    let events = dir.join("events.json");
    let vm = dir.join("vm.json");
    std::fs::write(&vm, VM).unwrap();
    let mut vmm = Vmm::start(&dir, &format!("path={}", events.display()));
    let out = vmm.ch_remote(&["create", vm.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let out = vmm.ch_remote(&["delete"]);
    assert!(out.status.success(), "{out:?}");
    assert!(vmm.ch_remote(&["shutdown-vmm"]).status.success());
    assert_eq!(vmm.wait_exit(), Some(0), "{}", vmm.log());
    let stream = std::fs::read_to_string(&events).unwrap();
    assert_eq!(
        names(&stream),
        ["vmm:starting", "vm:deleted", "vmm:shutdown"],
        "{stream}"
    );
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

#[test]
fn a_fifo_reader_that_opens_after_the_vmm_started_reads_every_event() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("events.fifo");
    mkfifo(&fifo);
    // libvirt's order: the VMM runs (its API socket is up) before anyone
    // opens the FIFO's read end.
    let mut vmm = Vmm::start(&dir, &format!("path={}", fifo.display()));
    let reader = BufReader::new(std::fs::File::open(&fifo).unwrap());
    assert!(vmm.ch_remote(&["shutdown-vmm"]).status.success());
    assert_eq!(vmm.wait_exit(), Some(0), "{}", vmm.log());
    // The VMM has exited: its end is closed, so the read ends at EOF.
    let lines: Vec<String> = reader.lines().map(Result::unwrap).collect();
    assert_eq!(names(&lines.join("\n")), ["vmm:starting", "vmm:shutdown"]);
}

#[test]
fn a_fifo_nobody_reads_does_not_hold_the_vmm_up() {
    let dir = temp_dir("fifo-unread");
    let fifo = dir.join("events.fifo");
    mkfifo(&fifo);
    let started = Instant::now();
    let mut vmm = Vmm::start(&dir, &format!("path={}", fifo.display()));
    assert!(vmm.ch_remote(&["shutdown-vmm"]).status.success());
    assert_eq!(vmm.wait_exit(), Some(0), "{}", vmm.log());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn bad_event_monitor_options_are_refused_naming_the_value() {
    for (arg, says) in [
        ("fd=three", "fd=three is not valid"),
        ("path=/x,fd=4", "give one of path= or fd=, not both"),
        (
            "fd=987654",
            "--event-monitor fd=987654: not an open file descriptor",
        ),
        (
            "path=/nonexistent-dir/events",
            "--event-monitor path=/nonexistent-dir/events: cannot open it for writing",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["--api-socket", "path=/nonexistent-dir/api.sock"])
            .arg("--event-monitor")
            .arg(arg)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{arg}: {stderr}");
        assert!(stderr.contains(says), "{arg}: {stderr}");
    }
}
