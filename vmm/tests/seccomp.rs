//! `--seccomp` on the real binary (no KVM here: the VMM thread and the API
//! thread, which run on every host): every thread is filtered before it
//! serves a request, the API's requests (vm.create, a refused vm.boot,
//! vm.delete, vmm.shutdown) and SIGTERM run under `true` without a refused
//! syscall, and `false` installs nothing.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_cloud-hypervisor");

const VM: &str = r#"{
    "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
    "memory": {"size": 268435456},
    "payload": {"kernel": "/nonexistent/Image"},
    "serial": {"mode": "Off"},
    "vsmmu": {"kind": "cmdqv", "backend": "emulated"},
    "test_devices": [{"id": "dma0"}]
}"#;

struct Vmm {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Vmm {
    fn start(name: &str, seccomp: &str) -> Vmm {
        let dir = common::scratch(&format!("seccomp-{name}"));
        let (child, socket) = common::spawn_with_api(&dir, &["--seccomp", seccomp, "-vv"]);
        Vmm { child, dir, socket }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vmm.log")).unwrap_or_default()
    }

    /// One request, the status line's code.
    fn request(&self, method: &str, path: &str, body: &str) -> u16 {
        let mut stream = UnixStream::connect(&self.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            stream,
            "{method} /api/v1/{path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let answer = common::read_answer(&mut stream);
        answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: no answer ({answer:?}): {}", self.log()))
    }

    /// The `Seccomp:` mode of every thread (0 none, 2 filter), once every
    /// thread has reached `want` or the deadline passed.
    fn thread_modes(&self, want: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let modes = seccomp_modes(&PathBuf::from(format!("/proc/{}/task", self.child.id())));
            if modes.iter().all(|m| m == want) || Instant::now() > deadline {
                return modes;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
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

fn seccomp_modes(tasks: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(tasks) else {
        return Vec::new();
    };
    entries
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Seccomp:"))
                .map(|l| l.split_whitespace().last().unwrap_or("").to_string())
        })
        .collect()
}

#[test]
fn true_filters_every_thread_and_the_api_runs_under_it() {
    let mut vmm = Vmm::start("true", "true");
    let modes = vmm.thread_modes("2");
    assert!(
        modes.len() >= 2 && modes.iter().all(|m| m == "2"),
        "{modes:?}"
    );
    assert_eq!(vmm.request("GET", "vmm.ping", ""), 200);
    assert_eq!(vmm.request("PUT", "vm.create", VM), 204);
    assert_eq!(vmm.request("GET", "vm.info", ""), 200);
    // No KVM for aarch64 here: refused, after the host checks ran.
    let boot = vmm.request("PUT", "vm.boot", "");
    assert!(boot >= 400, "{boot}");
    assert_eq!(vmm.request("PUT", "vm.pause", ""), 405);
    assert_eq!(vmm.request("PUT", "vm.delete", ""), 204);
    assert_eq!(vmm.request("GET", "nothing.here", ""), 404);
    assert_eq!(vmm.request("PUT", "vmm.shutdown", ""), 204);
    let status = vmm.wait();
    let log = vmm.log();
    assert!(status.success(), "{status:?}: {log}");
    assert!(!log.contains("seccomp: the"), "{log}");
    assert!(
        !vmm.socket.exists(),
        "the socket was removed under the filter"
    );
}

#[test]
fn sigterm_under_true_ends_the_vmm_cleanly() {
    let mut vmm = Vmm::start("sigterm", "true");
    assert!(vmm.thread_modes("2").iter().all(|m| m == "2"));
    assert_eq!(vmm.request("PUT", "vm.create", VM), 204);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(vmm.child.id() as i32, libc::SIGTERM) };
    let status = vmm.wait();
    let log = vmm.log();
    assert_eq!(status.signal(), None, "{log}");
    assert!(log.contains("terminated by signal 15"), "{log}");
    assert!(!log.contains("seccomp: the"), "{log}");
}

#[test]
fn false_installs_no_filter_and_log_installs_them() {
    let vmm = Vmm::start("false", "false");
    assert_eq!(vmm.request("GET", "vmm.ping", ""), 200);
    let modes = vmm.thread_modes("0");
    assert!(
        !modes.is_empty() && modes.iter().all(|m| m == "0"),
        "{modes:?}"
    );
    drop(vmm);
    let vmm = Vmm::start("log", "log");
    let modes = vmm.thread_modes("2");
    assert!(
        !modes.is_empty() && modes.iter().all(|m| m == "2"),
        "{modes:?}"
    );
    assert_eq!(vmm.request("GET", "vmm.ping", ""), 200);
}

#[test]
fn an_unknown_value_is_refused() {
    let out = Command::new(BIN)
        .args(["--seccomp", "on", "--kernel", "/nonexistent"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("expected true, false or log"), "{stderr}");
}
