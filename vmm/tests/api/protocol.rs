//! HTTP itself: refusals with a JSON reason, garbage on the wire, and
//! SIGTERM; after each the VMM answers (or is gone, for SIGTERM, taking
//! its socket with it).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{BIN, CMDQV_VM, Vmm, common, message};

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
