//! What the integration tests share: a `cloud-hypervisor` process serving
//! its API socket in a scratch directory of the test's own.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The VMM binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_cloud-hypervisor");

/// An empty scratch directory for one test (`<tmp>/ch-<tag>-<pid>`).
pub fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ch-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Start the VMM with `--api-socket path=<dir>/api.sock` and `args`, its
/// output in `<dir>/vmm.log`, and wait (10 s at most) until the socket
/// takes connections. Returns the child and the socket's path.
pub fn spawn_with_api(dir: &Path, args: &[&str]) -> (Child, PathBuf) {
    let socket = dir.join("api.sock");
    let log = std::fs::File::create(dir.join("vmm.log")).unwrap();
    let mut child = Command::new(BIN)
        .arg("--api-socket")
        .arg(format!("path={}", socket.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&socket).is_err() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.join("vmm.log")).unwrap_or_default();
            panic!("the API socket never appeared; the VMM's log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, socket)
}
