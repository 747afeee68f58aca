//! The control API from outside, as an operator drives it: our
//! `cloud-hypervisor --api-socket` as a process, talked to with curl (a
//! client nobody here wrote), with our `ch-remote`, and with raw bytes.
//! Every endpoint that works without a running VM (this host cannot boot
//! one) in [`endpoints`]; every protocol refusal, garbage and signals in
//! [`protocol`]: after each the VMM must still answer.
//!
//! Every loop is bounded in count and time; sockets live in a temp dir.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "../common/mod.rs"]
mod common;
mod endpoints;
mod protocol;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_cloud-hypervisor");
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
