//! Replays of what libvirt's ch driver and Kata's clh driver send, from
//! their own source, against our `cloud-hypervisor` binary:
//!
//! - libvirt (`src/ch/ch_conf.c`, `ch_monitor.c`, `ch_process.c`,
//!   `ch_events.c`): the version probe; a socket libvirt binds and listens
//!   on, handed over as `--api-socket fd=N`; the event-monitor FIFO libvirt
//!   makes (mkfifo 0600) before the VMM starts and opens for reading,
//!   blocking, once it runs (`--event-monitor path=<fifo>`); the
//!   `vm.create` bodies `virCHMonitorBuildVMJson` builds (payload form, as
//!   from 28; its field order) for a kernel-only domain, kernel + initrd +
//!   cmdline, a pty serial, a serial on a Unix socket, a pty console, one
//!   and two `<hostdev>`s; `vm.add-net` as `chProcessAddNetworkDevices`
//!   sends it (its own HTTP on a fresh connection, the body of
//!   `virCHMonitorBuildNetJson`, the tap's descriptor in SCM_RIGHTS), and
//!   its empty connection for a domain without NICs; `vm.boot` (with
//!   curl's empty upload, also chunked as older libvirt sent it);
//!   `vm.info` parsed for the pty in `config.serial.file` and the NIC;
//!   `vmm.shutdown` and the events read from the FIFO.
//!
//! The vCPU threads (`vcpuN` in /proc/PID/task/*/comm) and the
//! `{"source":"vm","event":"shutdown"}` event need a running VM: the e2e
//! case `libvirt` (scripts/e2e/cases/libvirt.sh) checks them, from inside
//! the nested lane's L1, with the same sequence.
//! - Kata (`src/runtime/virtcontainers/clh.go`): the body `CreateVM`
//!   builds as its generated Go client serialises it, every constructor
//!   default included.
//!
//! No KVM is needed: `vm.boot` is expected to be refused (501 on this
//! x86_64 build or without /dev/iommu), with its sentence.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_cloud-hypervisor");

/// A VMM started as libvirt starts it: on a socket the parent bound.
struct Vmm {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Vmm {
    fn start_on_inherited_socket(name: &str) -> Vmm {
        Vmm::start_as_libvirt(name, None)
    }

    /// libvirt's command line: `--api-socket fd=N`, and with `fifo`
    /// `--event-monitor path=<fifo>`.
    fn start_as_libvirt(name: &str, fifo: Option<&Path>) -> Vmm {
        Vmm::start_as_libvirt_with(name, fifo, &[])
    }

    /// The same, through an `<emulator>` wrapper that adds `extra`.
    fn start_as_libvirt_with(name: &str, fifo: Option<&Path>, extra: &[&str]) -> Vmm {
        let dir = std::env::temp_dir().join(format!("ch-dropin-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("libvirt-socket");
        let listener = UnixListener::bind(&socket).unwrap();
        let fd = listener.into_raw_fd();
        // libvirt's virCommandPassFD: the child inherits the listener.
        // SAFETY: F_SETFD on a descriptor this test owns; no pointers.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
        let mut command = Command::new(BIN);
        command.args(extra);
        command.arg("--api-socket").arg(format!("fd={fd}"));
        if let Some(fifo) = fifo {
            command
                .arg("--event-monitor")
                .arg(format!("path={}", fifo.display()));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The parent closes its copy (VIR_COMMAND_PASS_FD_CLOSE_PARENT).
        // SAFETY: `fd` is ours and nothing else uses it after this.
        unsafe { libc::close(fd) };
        Vmm { child, dir, socket }
    }

    /// Send raw request bytes; (status, body).
    fn raw(&self, request: &[u8]) -> (u16, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = loop {
            match UnixStream::connect(&self.socket) {
                Ok(stream) => break stream,
                Err(e) => assert!(Instant::now() < deadline, "connect: {e}"),
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(request).unwrap();
        let answer = common::read_answer(&mut stream);
        // A 100 Continue comes first when the client asked for it.
        let last = answer.rfind("HTTP/1.1 ").unwrap_or(0);
        let answer = &answer[last..];
        let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, body.to_string())
    }

    /// A request as libcurl sends it for libvirt: JSON with Content-Length.
    fn send(&self, method: &str, endpoint: &str, body: Option<&str>) -> (u16, String) {
        let mut head = format!(
            "{method} /api/v1/{endpoint} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
        );
        match body {
            Some(body) => head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )),
            // CURLOPT_UPLOAD with CURLOPT_INFILESIZE 0.
            None if method == "PUT" => head.push_str("Content-Length: 0\r\n\r\n"),
            None => head.push_str("\r\n"),
        }
        self.raw(head.as_bytes())
    }

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
    serde_json::from_str::<Vec<String>>(body)
        .ok()
        .and_then(|lines| lines.into_iter().next())
        .unwrap_or_else(|| body.to_string())
}

/// libvirt's version parse: the number after "cloud-hypervisor v".
fn libvirt_version() -> (u32, u32, u32) {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find("cloud-hypervisor v").expect("libvirt's marker") + 18;
    let numbers: Vec<u32> = text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|n| n.parse().unwrap())
        .collect();
    (numbers[0], numbers[1], numbers[2])
}

/// vm.boot's refusal on a host that cannot run the VM.
fn assert_boot_refused(vmm: &Vmm, request: &[u8]) {
    let (status, body) = vmm.raw(request);
    let text = message(&body);
    if cfg!(target_arch = "aarch64") {
        assert!(status >= 500, "{status} {text}");
    } else {
        assert_eq!(status, 501, "{text}");
        assert!(
            text.contains("needs an aarch64 host with KVM") || text.contains("/dev/iommu"),
            "{text}"
        );
    }
}

#[test]
fn libvirt_sequence_defines_each_domain_and_reads_the_pty_back() {
    let (major, _, _) = libvirt_version();
    assert!(major >= 28, "libvirt sends the payload form from 28 on");

    let kernel = r#""payload":{"kernel":"/var/lib/libvirt/boot/Image"}"#;
    let domains = [
        (
            "kernel only",
            format!(r#"{{"cpus":{{"boot_vcpus":2,"max_vcpus":2}},"memory":{{"size":1073741824}},{kernel}}}"#),
        ),
        (
            "kernel + initrd + cmdline",
            r#"{"cpus":{"boot_vcpus":1,"max_vcpus":1},"memory":{"size":536870912},"payload":{"kernel":"/var/lib/libvirt/boot/Image","cmdline":"console=ttyAMA0 rdinit=/init","initramfs":"/var/lib/libvirt/boot/initrd.img"}}"#.to_string(),
        ),
        (
            "pty serial",
            format!(r#"{{"serial":{{"mode":"Pty"}},"cpus":{{"boot_vcpus":1,"max_vcpus":1}},"memory":{{"size":536870912}},{kernel}}}"#),
        ),
        (
            "one hostdev",
            format!(r#"{{"cpus":{{"boot_vcpus":1,"max_vcpus":1}},"memory":{{"size":536870912}},{kernel},"devices":[{{"path":"/sys/bus/pci/devices/0000:01:00.0/"}}]}}"#),
        ),
        (
            "two hostdevs",
            format!(r#"{{"cpus":{{"boot_vcpus":1,"max_vcpus":1}},"memory":{{"size":536870912}},{kernel},"devices":[{{"path":"/sys/bus/pci/devices/0000:01:00.0/"}},{{"path":"/sys/bus/pci/devices/0000:02:00.0/"}}]}}"#),
        ),
    ];
    for (name, body) in domains {
        let mut vmm = Vmm::start_on_inherited_socket(&name.replace(' ', "-"));
        let (status, answer) = vmm.send("PUT", "vm.create", Some(&body));
        assert_eq!(status, 204, "{name}: {answer}");
        let (status, info) = vmm.send("GET", "vm.info", None);
        assert_eq!(status, 200, "{name}: {info}");
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(info["state"], "Created", "{name}");
        if name == "pty serial" {
            // ch_process.c reads the pty from config.serial.file.
            let pty = info["config"]["serial"]["file"]
                .as_str()
                .unwrap_or_default();
            assert!(pty.starts_with("/dev/pts/"), "{info}");
            assert!(std::path::Path::new(pty).exists(), "{pty}");
        }
        if name.contains("hostdev") {
            let devices = info["config"]["devices"].as_array().unwrap();
            assert_eq!(devices.len(), if name == "one hostdev" { 1 } else { 2 });
        }
        assert_boot_refused(
            &vmm,
            b"PUT /api/v1/vm.boot HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Length: 0\r\n\r\n",
        );
        let (status, _) = vmm.send("PUT", "vmm.shutdown", None);
        assert_eq!(status, 204, "{name}");
        assert_eq!(vmm.wait_exit(), Some(0), "{name}");
    }
}

#[test]
fn libvirt_chunked_empty_puts_and_refusals_read_as_one_sentence() {
    let mut vmm = Vmm::start_on_inherited_socket("chunked");
    let body = r#"{"cpus":{"boot_vcpus":1,"max_vcpus":1},"memory":{"size":536870912},"payload":{"kernel":"/k"}}"#;
    let (status, answer) = vmm.send("PUT", "vm.create", Some(body));
    assert_eq!(status, 204, "{answer}");
    // Older libcurl uploads an empty PUT chunked, after Expect: 100-continue.
    assert_boot_refused(
        &vmm,
        b"PUT /api/v1/vm.boot HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n0\r\n\r\n",
    );
    let (status, answer) = vmm.send("PUT", "vm.delete", None);
    assert_eq!(status, 204, "{answer}");

    // libvirt's pty virtio-console and a disk whose image is missing: the
    // disk is refused naming its path, nothing created.
    let console = r#"{"console":{"mode":"Pty"},"cpus":{"boot_vcpus":1,"max_vcpus":1},"memory":{"size":536870912},"payload":{"kernel":"/k"},"disks":[{"path":"/var/lib/libvirt/images/disk.qcow2"}]}"#;
    let (status, answer) = vmm.send("PUT", "vm.create", Some(console));
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        message(&answer),
        "the VM configuration is invalid: --disk path=/var/lib/libvirt/images/disk.qcow2: cannot \
         open the image: No such file or directory (os error 2); check the path and its permissions"
    );
    // A serial on a Unix socket (<serial type='unix'>): the VMM listens there.
    let serial = vmm.dir.join("serial.sock");
    let socket = format!(
        r#"{{"serial":{{"mode":"Socket","socket":"{}"}},"payload":{{"kernel":"/k"}}}}"#,
        serial.display()
    );
    let (status, answer) = vmm.send("PUT", "vm.create", Some(&socket));
    assert_eq!(status, 204, "{answer}");
    assert!(
        UnixStream::connect(&serial).is_ok(),
        "nobody listens at {serial:?}"
    );
    let (_, info) = vmm.send("GET", "vm.info", None);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["config"]["serial"]["mode"], "Socket");
    assert_eq!(
        info["config"]["serial"]["socket"],
        serial.display().to_string()
    );
    let (status, _) = vmm.send("PUT", "vm.delete", None);
    assert_eq!(status, 204);
    assert!(!serial.exists(), "the socket goes with the VM's definition");
    let (status, _) = vmm.send("PUT", "vmm.shutdown", None);
    assert_eq!(status, 204);
    assert_eq!(vmm.wait_exit(), Some(0));
}

/// The event-monitor FIFO as libvirt sets it up (`virCHMonitorNew`): made
/// with mkfifo 0600 before the VMM starts, its read end opened O_RDONLY,
/// blocking, once the VMM runs; then read by a thread of its own
/// (`virCHEventHandlerLoop`). Each line read comes through `lines`; the
/// channel closes at end-of-file.
struct EventFifo {
    lines: Receiver<String>,
}

impl EventFifo {
    fn create(path: &Path) {
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path `c_path` owns.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    }

    /// libvirt's open of the read end, which returns once the VMM has the
    /// FIFO open for writing: within 10 s, or the VMM never opened it.
    fn open(path: &Path) -> EventFifo {
        let (opened_tx, opened) = mpsc::channel();
        let (lines_tx, lines) = mpsc::channel();
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            let fifo = std::fs::File::open(&path).unwrap();
            let _ = opened_tx.send(());
            for line in BufReader::new(fifo).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        opened
            .recv_timeout(Duration::from_secs(10))
            .expect("libvirt's blocking open of the FIFO's read end did not return");
        EventFifo { lines }
    }

    /// Every event until end-of-file (the VMM gone), at most 10 s.
    fn rest(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut all = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => all.push(line),
                Err(RecvTimeoutError::Disconnected) => return all,
                Err(RecvTimeoutError::Timeout) => panic!("no end-of-file on the FIFO: {all:?}"),
            }
        }
    }
}

/// `{"source":S,"event":E` in an event line, as libvirt's
/// virCHProcessEvent matches them.
fn is_event(line: &str, source: &str, event: &str) -> bool {
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    value["source"] == source && value["event"] == event
}

/// `chProcessAddNetworkDevices`: its own request on `stream` (one
/// connection for all the domain's NICs), the tap descriptors in the same
/// sendmsg (SCM_RIGHTS), and one recv of the answer after at most 500 ms
/// of poll (PKT_TIMEOUT_MS).
fn libvirt_add_net(stream: &UnixStream, json: &str, fds: &[RawFd]) -> (u16, String) {
    let request = format!(
        "PUT /api/v1/vm.add-net HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{json}",
        json.len()
    );
    stream
        .send_with_fds(&[request.as_bytes()], fds)
        .expect("sendmsg with SCM_RIGHTS");
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut answer = vec![0u8; 1024];
    let n = (&*stream)
        .read(&mut answer)
        .expect("libvirt waits 500 ms for vm.add-net's answer");
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

#[test]
fn libvirt_starts_on_its_fifo_adds_its_tap_nic_and_reads_vmm_shutdown() {
    let dir = std::env::temp_dir().join(format!("ch-dropin-{}-fifo-state", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("domain-event-monitor-fifo");
    EventFifo::create(&fifo);
    let mut vmm = Vmm::start_as_libvirt("fifo", Some(&fifo));
    let events = EventFifo::open(&fifo);

    // A domain with <vcpu>2</vcpu>, 1 GiB, kernel + initrd + cmdline and
    // <serial type='pty'/> (libvirt adds a <console type='pty'> targeting
    // that serial): virCHMonitorBuildVMJson's fields, in its order.
    let domain = r#"{"console":{"mode":"Pty"},"serial":{"mode":"Pty"},"cpus":{"boot_vcpus":2,"max_vcpus":2},"memory":{"size":1073741824},"payload":{"kernel":"/var/lib/libvirt/boot/Image","cmdline":"console=ttyAMA0 root=/dev/vda","initramfs":"/var/lib/libvirt/boot/initrd.img"}}"#;
    let (status, answer) = vmm.send("PUT", "vm.create", Some(domain));
    assert_eq!(status, 204, "{answer}");

    // <interface type='ethernet'> (virCHMonitorBuildNetJson: id, mac,
    // num_queues = 2 x the queue pairs) with the tap libvirt opened.
    let net = r#"{"id":"net_0","mac":"52:54:00:4c:56:01","num_queues":2}"#;
    let taps = (
        virtio_devices::net::Tap::open(Some("chlv%d")),
        virtio_devices::net::Tap::open(Some("chlv%d")),
    );
    match taps {
        (Ok(tap0), Ok(tap1)) => {
            // Two NICs, one connection, as libvirt's loop sends them.
            let stream = UnixStream::connect(&vmm.socket).unwrap();
            let (status, answer) = libvirt_add_net(&stream, net, &[tap0.as_raw_fd()]);
            assert_eq!(status, 204, "{answer}");
            let second = r#"{"id":"net_1","mac":"52:54:00:4c:56:02","num_queues":2}"#;
            let (status, answer) = libvirt_add_net(&stream, second, &[tap1.as_raw_fd()]);
            assert_eq!(status, 204, "{answer}");
            // <driver queues='2'/>: num_queues 4 and one queue of a
            // multi-queue tap per pair.
            let mq = r#"{"id":"net_mq","mac":"52:54:00:4c:56:04","num_queues":4}"#;
            let queues = virtio_devices::net::Tap::open_queues(Some("chlvq%d"), 2).unwrap();
            let fds: Vec<_> = queues.iter().map(|t| t.as_raw_fd()).collect();
            let (status, answer) = libvirt_add_net(&stream, mq, &fds);
            assert_eq!(status, 204, "{answer}");
            // Two taps that are not queues of one multi-queue tap: refused.
            let two = r#"{"id":"net_8","mac":"52:54:00:4c:56:08","num_queues":4}"#;
            let (status, answer) =
                libvirt_add_net(&stream, two, &[tap0.as_raw_fd(), tap1.as_raw_fd()]);
            assert_eq!(status, 400, "{answer}");
            assert!(
                message(&answer).contains("without IFF_MULTI_QUEUE"),
                "{answer}"
            );
            drop(stream);
            // libvirt closes its copies once sent; the VMM holds its own.
            drop((tap0, tap1));
            // A NIC whose descriptor is not a tap: refused, naming it.
            let (read_end, _write_end) = std::io::pipe().unwrap();
            let bad = r#"{"id":"net_9","mac":"52:54:00:4c:56:09","num_queues":2}"#;
            let stream = UnixStream::connect(&vmm.socket).unwrap();
            let (status, answer) = libvirt_add_net(&stream, bad, &[read_end.as_raw_fd()]);
            assert_eq!(status, 400, "{answer}");
            assert!(
                message(&answer).starts_with(
                    "the VM configuration is invalid: vm.add-net id=net_9: a descriptor sent \
                     with the request: "
                ),
                "{answer}"
            );
            let (_, info) = vmm.send("GET", "vm.info", None);
            let info: serde_json::Value = serde_json::from_str(&info).unwrap();
            let nets = info["config"]["net"].as_array().unwrap();
            assert_eq!(nets.len(), 3, "{info}");
            assert_eq!(nets[2]["fds"].as_array().map(Vec::len), Some(2), "{info}");
            assert_eq!(nets[0]["id"], "net_0");
            assert_eq!(nets[0]["mac"], "52:54:00:4c:56:01");
            assert_eq!(nets[0]["num_queues"], 2);
            assert_eq!(nets[0]["fds"].as_array().map(Vec::len), Some(1), "{info}");
            assert_eq!(nets[1]["id"], "net_1");
        }
        // Without CAP_NET_ADMIN no tap can be made: the refusal of a
        // descriptor that is not one is still checked.
        (Err(err), _) | (_, Err(err)) => {
            eprintln!("no tap here ({err}): vm.add-net with a tap not replayed");
            let (read_end, _write_end) = std::io::pipe().unwrap();
            let stream = UnixStream::connect(&vmm.socket).unwrap();
            let (status, answer) = libvirt_add_net(&stream, net, &[read_end.as_raw_fd()]);
            assert_eq!(status, 400, "{answer}");
        }
    }
    // The same connection for a domain without NICs: nothing sent on it.
    drop(UnixStream::connect(&vmm.socket).unwrap());

    let (status, info) = vmm.send("GET", "vm.info", None);
    assert_eq!(status, 200, "{info}");
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    // virCHProcessUpdateConsole: config.console.file, then config.serial.file.
    let pty = info["config"]["serial"]["file"]
        .as_str()
        .unwrap_or_default();
    assert!(pty.starts_with("/dev/pts/"), "{info}");
    let console = info["config"]["console"]["file"]
        .as_str()
        .unwrap_or_default();
    assert!(console.starts_with("/dev/pts/"), "{info}");
    assert_ne!(console, pty, "{info}");
    assert!(Path::new(console).exists(), "{console}");
    assert_boot_refused(
        &vmm,
        b"PUT /api/v1/vm.boot HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Length: 0\r\n\r\n",
    );
    // A NIC added after a refused boot still joins the definition.
    let third = r#"{"id":"net_2","mac":"52:54:00:4c:56:03","num_queues":2}"#;
    let (status, answer) = vmm.send("PUT", "vm.add-net", Some(third));
    assert_eq!(status, 204, "{answer}");
    // virsh destroy's first request.
    let (status, _) = vmm.send("PUT", "vmm.shutdown", None);
    assert_eq!(status, 204);
    assert_eq!(vmm.wait_exit(), Some(0));

    // What libvirt's event thread read: the VMM's start first, its
    // shutdown (on which libvirt stops the domain) last, then end-of-file.
    let all = events.rest();
    assert!(
        all.first().is_some_and(|e| is_event(e, "vmm", "starting")),
        "{all:?}"
    );
    assert!(
        all.last().is_some_and(|e| is_event(e, "vmm", "shutdown")),
        "{all:?}"
    );
    // Never booted: no VM shut down.
    assert!(
        !all.iter().any(|e| is_event(e, "vm", "shutdown")),
        "{all:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn libvirt_domains_get_the_vsmmu_its_emulator_wrapper_gives() {
    // <emulator> a wrapper: exec cloud-hypervisor --vsmmu ... "$@".
    let mut vmm = Vmm::start_as_libvirt_with(
        "vsmmu-default",
        None,
        &["--vsmmu", "smmuv3,backend=emulated"],
    );
    let domain = r#"{"serial":{"mode":"Pty"},"cpus":{"boot_vcpus":1,"max_vcpus":1},"memory":{"size":536870912},"payload":{"kernel":"/var/lib/libvirt/boot/Image"}}"#;
    let (status, answer) = vmm.send("PUT", "vm.create", Some(domain));
    assert_eq!(status, 204, "{answer}");
    let (_, info) = vmm.send("GET", "vm.info", None);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["config"]["vsmmu"]["kind"], "smmuv3", "{info}");
    assert_eq!(info["config"]["vsmmu"]["backend"], "emulated", "{info}");
    let (status, _) = vmm.send("PUT", "vm.delete", None);
    assert_eq!(status, 204);
    // A body that names its own vSMMU keeps it.
    let off = r#"{"vsmmu":{"kind":"off"},"payload":{"kernel":"/k"}}"#;
    let (status, answer) = vmm.send("PUT", "vm.create", Some(off));
    assert_eq!(status, 204, "{answer}");
    let (_, info) = vmm.send("GET", "vm.info", None);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["config"]["vsmmu"]["kind"], "off", "{info}");
    let (status, _) = vmm.send("PUT", "vmm.shutdown", None);
    assert_eq!(status, 204);
    assert_eq!(vmm.wait_exit(), Some(0));
}

/// `CreateVM`'s body, as Kata's generated client serialises it: the
/// constructors' defaults (NewVmConfig, NewMemoryConfig, NewCpusConfig,
/// NewRngConfig, NewConsoleConfig) plus what clh.go sets, initrd boot.
const KATA_VM: &str = r#"{
    "payload": {"kernel": "/opt/kata/share/kata-containers/vmlinux.container",
                "cmdline": "console=hvc0 quiet panic=1 agent.log_vport=1025",
                "initramfs": "/opt/kata/share/kata-containers/kata-containers-initrd.img"},
    "cpus": {"boot_vcpus": 1, "max_vcpus": 8, "kvm_hyperv": false, "nested": true,
             "topology": {"threads_per_core": 1, "cores_per_die": 8, "dies_per_package": 1, "packages": 1}},
    "memory": {"size": 2147483648, "hotplug_size": 8589934592, "mergeable": false,
               "hotplug_method": "Acpi", "shared": true, "hugepages": false, "prefault": false,
               "thp": true},
    "rng": {"src": "/dev/urandom", "iommu": false},
    "serial": {"mode": "Off", "iommu": false},
    "console": {"mode": "Off", "iommu": false},
    "iommu": false, "watchdog": false, "pvpanic": false, "landlock_enable": false,
    "vsock": {"cid": 3, "socket": "/run/vc/vm/sandbox/clh.sock", "iommu": false}
}"#;

#[test]
fn kata_create_vm_body_with_its_vsock_is_accepted_and_shown_back() {
    let mut vmm = Vmm::start_on_inherited_socket("kata");
    // Kata creates /run/vc/vm/<sandbox>/ before it starts the VMM; the
    // VMM creates the socket in it. Here the sandbox directory is the
    // test's.
    let sandbox = vmm.dir.join("sandbox");
    std::fs::create_dir_all(&sandbox).unwrap();
    let socket = sandbox.join("clh.sock");
    let body = KATA_VM.replace("/run/vc/vm/sandbox/clh.sock", socket.to_str().unwrap());
    let (status, answer) = vmm.send("PUT", "vm.create", Some(&body));
    assert_eq!(status, 204, "{answer}");
    let (_, info) = vmm.send("GET", "vm.info", None);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["config"]["vsock"]["cid"], 3);
    assert_eq!(info["config"]["vsock"]["socket"], socket.to_str().unwrap());
    assert_eq!(info["config"]["vsock"]["iommu"], false);
    // The socket appears at boot, not before.
    assert!(!socket.exists());
    // Kata's ResizeMemory reads hotplug_size back; its client needs max_vcpus.
    assert_eq!(info["config"]["memory"]["hotplug_size"], 8589934592u64);
    assert_eq!(info["config"]["memory"]["shared"], true);
    assert_eq!(info["config"]["cpus"]["max_vcpus"], 8);
    assert_eq!(info["config"]["cpus"]["topology"]["cores_per_die"], 8);
    assert_eq!(info["config"]["rng"]["src"], "/dev/urandom");
    let (status, answer) = vmm.send("GET", "vmm.ping", None);
    assert_eq!(status, 200);
    let ping: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let build = ping["build_version"].as_str().unwrap();
    assert_eq!(build.split('-').next(), Some("v53.0.0"), "{build}");
    let (status, _) = vmm.send("PUT", "vmm.shutdown", None);
    assert_eq!(status, 204);
    assert_eq!(vmm.wait_exit(), Some(0));
}
