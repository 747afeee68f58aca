//! `disks` and `console` through the control API, as an operator sends
//! them: our `cloud-hypervisor --api-socket` as a process, curl as the
//! client. Bad disks are refused at `vm.create` with a 400 and one
//! sentence, and the image is left unlocked; good ones show in `vm.info`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use virtio_devices::block::DiskImage;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_cloud-hypervisor");

struct Vmm {
    child: Child,
    dir: PathBuf,
}

impl Vmm {
    fn start(name: &str) -> Vmm {
        let dir = common::scratch(&format!("virtio-{name}"));
        let (child, _socket) = common::spawn_with_api(&dir, &[]);
        Vmm { child, dir }
    }

    /// curl -X METHOD with `body`: (status, body).
    fn curl(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-S",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
        ])
        .arg("--unix-socket")
        .arg(self.dir.join("api.sock"));
        if let Some(body) = body {
            cmd.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ]);
        }
        let out = cmd
            .arg(format!("http://localhost/api/v1/{path}"))
            .output()
            .expect("curl (Debian package curl)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.parse().unwrap(), body.to_string())
    }

    fn image(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        path
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn vm(disks: &str, console: &str) -> String {
    format!(
        r#"{{"payload": {{"kernel": "/nonexistent/Image"}}, "serial": {{"mode": "Null"}},
            "disks": [{disks}], "console": {console}}}"#
    )
}

#[test]
fn bad_disks_are_refused_at_create_with_a_400_naming_the_value() {
    let vmm = Vmm::start("bad");
    let img = vmm.image("disk.img");
    let img = img.display();
    let off = r#"{"mode": "Off"}"#;
    let cases = [
        (
            format!(r#"{{"path": "{img}.missing"}}"#),
            "cannot open the image",
        ),
        (
            format!(r#"{{"path": "{img}", "queue_size": 100}}"#),
            "queue_size=100 must be a power of two",
        ),
        (
            format!(r#"{{"path": "{img}", "queue_size": 65536}}"#),
            "queue_size",
        ),
        (
            format!(r#"{{"path": "{img}", "num_queues": 0}}"#),
            "num_queues=0 must be between 1 and 64",
        ),
        (
            format!(r#"{{"path": "{img}", "image_type": "Qcow2"}}"#),
            "image_type=qcow2 but the file does not start with the qcow2 magic",
        ),
        (
            format!(r#"{{"path": "{img}", "iommu": true}}"#),
            "never behind the vSMMU",
        ),
    ];
    for (disk, why) in cases {
        let (status, body) = vmm.curl("PUT", "vm.create", Some(&vm(&disk, off)));
        assert_eq!(status, 400, "{disk}: {body}");
        assert!(body.contains(why), "{disk}: {body}");
    }
    // Another VM holds the image: refused, and nothing of ours stays open.
    let held = DiskImage::open(std::path::Path::new(&img.to_string()), false, false, None).unwrap();
    let disk = format!(r#"{{"path": "{img}"}}"#);
    let (status, body) = vmm.curl("PUT", "vm.create", Some(&vm(&disk, off)));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("in use by another VM"), "{body}");
    drop(held);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", vmm.child.id())).unwrap();
    for fd in fds {
        let target = std::fs::read_link(fd.unwrap().path()).unwrap_or_default();
        assert!(
            !target.to_string_lossy().contains("disk.img"),
            "{target:?} left open"
        );
    }
    let (status, body) = vmm.curl(
        "PUT",
        "vm.create",
        Some(&vm(&disk, r#"{"mode": "Socket"}"#)),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("console.mode"), "{body}");
}

#[test]
fn disks_and_console_are_created_and_shown_by_vm_info() {
    let vmm = Vmm::start("good");
    let img = vmm.image("root.img");
    let qcow2 = vmm.dir.join("data.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&qcow2)
        .arg("1M")
        .status()
        .expect("qemu-img (scripts/install-deps.sh installs qemu-utils)");
    assert!(made.success());
    let disk = format!(
        r#"{{"path": "{}", "readonly": true, "id": "root"}}, {{"path": "{}", "id": "data", "image_type": "Qcow2"}}"#,
        img.display(),
        qcow2.display()
    );
    let console = r#"{"mode": "File", "file": "/tmp/hvc0.log"}"#;
    let (status, body) = vmm.curl("PUT", "vm.create", Some(&vm(&disk, console)));
    assert_eq!(status, 204, "{body}");
    let (status, body) = vmm.curl("GET", "vm.info", None);
    assert_eq!(status, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    let shown = &info["config"]["disks"][0];
    assert_eq!(shown["id"], "root", "{body}");
    assert_eq!(shown["readonly"], true, "{body}");
    assert_eq!(shown["num_queues"], 1, "{body}");
    assert_eq!(shown["queue_size"], 128, "{body}");
    assert_eq!(
        shown["image_type"],
        serde_json::Value::Null,
        "detected: {body}"
    );
    let data = &info["config"]["disks"][1];
    assert_eq!(
        (&data["id"], &data["image_type"]),
        (&"data".into(), &"Qcow2".into()),
        "{body}"
    );
    assert_eq!(info["config"]["console"]["mode"], "File", "{body}");
    assert_eq!(info["config"]["console"]["file"], "/tmp/hvc0.log", "{body}");
}

#[test]
fn bad_disk_options_exit_non_zero_with_one_sentence() {
    let cases = [
        (
            vec!["--disk", "path=/nonexistent.img"],
            "--disk path=/nonexistent.img: cannot open the image",
        ),
        (
            vec!["--disk", "path=/x,num_queues=0"],
            "num_queues=0 must be between 1 and 64",
        ),
        (
            vec!["--disk", "path=/x,image_type=vhdx"],
            "image_type=vhdx is not valid: it must be raw or qcow2",
        ),
        (
            vec!["--console", "tty"],
            "--console tty and --serial tty would both read stdin",
        ),
        (
            vec!["--vsock", "cid=2,socket=/tmp/v.sock"],
            "--vsock cid=2 is not a guest CID",
        ),
        (
            vec!["--vsock", "cid=3,socket=/nonexistent/dir/v.sock"],
            "socket=/nonexistent/dir/v.sock: cannot listen there",
        ),
        (
            vec!["--vsock", "cid=3,socket=/"],
            "socket=/: the path exists",
        ),
    ];
    for (args, why) in cases {
        let out = Command::new(BIN)
            .args(["--kernel", "/nonexistent/Image"])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
}

/// `net` at `vm.create`: taken with a MAC chosen by the API thread under
/// its seccomp filter (which opens nothing), shown by `vm.info` with its
/// queue pairs and offloads; an odd queue count, TSO without checksum
/// offload, an MTU or `iommu: true` refused naming the value.
#[test]
fn nics_are_created_with_a_mac_and_shown_and_bad_ones_refused() {
    let vmm = Vmm::start("net");
    let with_net = |net: &str| {
        format!(
            r#"{{"payload": {{"kernel": "/nonexistent/Image"}}, "serial": {{"mode": "Null"}},
                "net": [{net}]}}"#
        )
    };
    for (net, why) in [
        (
            r#"{"tap": "t0", "num_queues": 3}"#,
            "num_queues=3 is not valid: it counts queues, two per queue pair",
        ),
        (
            r#"{"tap": "t0", "offload_csum": false}"#,
            "offload_tso and offload_ufo need offload_csum=on",
        ),
        (r#"{"tap": "t0", "mtu": 9000}"#, "net[0].mtu=9000"),
        (r#"{"tap": "t0", "iommu": true}"#, "never behind the vSMMU"),
        (r#"{"tap": "t0", "mac": "01:00:5e:00:00:01"}"#, "multicast"),
    ] {
        let (status, body) = vmm.curl("PUT", "vm.create", Some(&with_net(net)));
        assert_eq!(status, 400, "{net}: {body}");
        assert!(body.contains(why), "{net}: {body}");
    }
    let net = r#"{"tap": "vmtap7", "ip": "192.168.249.1", "mask": "255.255.255.0", "id": "eth0",
                  "num_queues": 8, "offload_ufo": false}"#;
    let (status, body) = vmm.curl("PUT", "vm.create", Some(&with_net(net)));
    assert_eq!(status, 204, "{body}");
    let (status, body) = vmm.curl("GET", "vm.info", None);
    assert_eq!(status, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    let shown = &info["config"]["net"][0];
    assert_eq!(shown["tap"], "vmtap7", "{body}");
    assert_eq!(shown["ip"], "192.168.249.1", "{body}");
    assert_eq!(shown["num_queues"], 8, "{body}");
    assert_eq!(shown["offload_tso"], true, "{body}");
    assert_eq!(shown["offload_ufo"], false, "{body}");
    let mac = shown["mac"].as_str().unwrap();
    let first = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert_eq!(first & 3, 2, "{mac}: a random local unicast MAC");
}
