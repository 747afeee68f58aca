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

/// Read one answer from `stream` (after any `100 Continue`): its head and
/// the body its Content-Length gives, or whatever comes before the server
/// closes. The API keeps a connection open after an answer unless the
/// request said `Connection: close`, so reading to end-of-file would wait
/// for its idle timeout.
pub fn read_answer(stream: &mut impl std::io::Read) -> String {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = answer_end(&answer) {
            answer.truncate(end);
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
        if answer.len() > 1 << 20 {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Where the last answer in `bytes` ends, once it is complete.
fn answer_end(bytes: &[u8]) -> Option<usize> {
    let mut start = 0;
    loop {
        let rest = &bytes[start..];
        let head_len = rest.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&rest[..head_len]).to_ascii_lowercase();
        if head.starts_with("http/1.1 100 ") {
            start += head_len;
            continue;
        }
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        return (rest.len() >= head_len + length).then_some(start + head_len + length);
    }
}
