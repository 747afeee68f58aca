//! Replays of what libvirt's ch driver and Kata's clh driver send, from
//! their own source, against our `cloud-hypervisor` binary:
//!
//! - libvirt (`src/ch/ch_conf.c`, `ch_monitor.c`, `ch_process.c`): the
//!   version probe; a socket libvirt binds and listens on, handed over as
//!   `--api-socket fd=N`; the `vm.create` bodies `virCHMonitorBuildVMJson`
//!   builds (payload form, as from 28) for a kernel-only domain, kernel +
//!   initrd + cmdline, a pty serial, a serial on a Unix socket, a pty
//!   console, one and two `<hostdev>`s; `vm.boot` (with curl's empty upload, also chunked as
//!   older libvirt sent it); `vm.info` parsed for the pty in
//!   `config.serial.file`; `vmm.shutdown`. `--event-monitor` is not here
//!   yet: its branch adds it to this replay.
//! - Kata (`src/runtime/virtcontainers/clh.go`): the body `CreateVM`
//!   builds as its generated Go client serialises it, every constructor
//!   default included.
//!
//! No KVM is needed: `vm.boot` is expected to be refused (501 on this
//! x86_64 build or without /dev/iommu), with its sentence.

use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cloud-hypervisor");

/// A VMM started as libvirt starts it: on a socket the parent bound.
struct Vmm {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Vmm {
    fn start_on_inherited_socket(name: &str) -> Vmm {
        let dir = std::env::temp_dir().join(format!("ch-dropin-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("libvirt-socket");
        let listener = UnixListener::bind(&socket).unwrap();
        let fd = listener.into_raw_fd();
        // libvirt's virCommandPassFD: the child inherits the listener.
        // SAFETY: F_SETFD on a descriptor this test owns; no pointers.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
        let child = Command::new(BIN)
            .arg("--api-socket")
            .arg(format!("fd={fd}"))
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
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
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
    // NICs come after vm.create, one vm.add-net each.
    let (status, _) = vmm.send("PUT", "vm.create", Some(body));
    assert_eq!(status, 204);
    let net = r#"{"id":"libvirt_net_0","mac":"52:54:00:12:34:56","num_queues":2}"#;
    let (status, answer) = vmm.send("PUT", "vm.add-net", Some(net));
    assert_eq!(status, 500, "{answer}");
    assert!(
        message(&answer).starts_with("vm.add-net: NIC hot-plug is not implemented yet"),
        "{answer}"
    );
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
