//! One vSMMU per host SMMU, seen from outside: the binary is given a VM
//! whose emulated devices claim two host SMMUs (`host_smmu=`), and
//! `ch-remote info` must show two vSMMUs, each on its own PCI segment with
//! its own IORT identifier, and every device with its host SMMU. The
//! `placement` part of that answer is the example docs/cmdqv.md shows; the
//! test fails when the committed example differs from what it measures
//! (regenerate with `UPDATE_PLACEMENT_EXAMPLE=1 cargo test -p vmm --test
//! placement`).

use std::path::PathBuf;
use std::process::{Child, Command};

mod common;

const REMOTE: &str = env!("CARGO_BIN_EXE_ch-remote");
const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cmdqv.md");
const BEGIN: &str = "<!-- placement example: begin (vmm/tests/placement.rs) -->";
const END: &str = "<!-- placement example: end -->";

/// Two GPUs' worth of test endpoints behind two host SMMUs, a third
/// endpoint beside the first, and one with iommu=off.
const VM: &str = r#"{"cpus": {"boot_vcpus": 1}, "memory": {"size": 536870912},
    "payload": {"kernel": "/nonexistent/Image"}, "serial": {"mode": "Null"},
    "vsmmu": {"kind": "cmdqv", "backend": "emulated"},
    "test_devices": [
        {"id": "gpu0", "host_smmu": "smmu3.0x0000000012000000"},
        {"id": "gpu1", "host_smmu": "smmu3.0x0000000022000000"},
        {"id": "nic0", "host_smmu": "smmu3.0x0000000012000000"},
        {"id": "probe", "iommu": false}
    ]}"#;

struct Vmm {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Vmm {
    fn start() -> Vmm {
        let dir = common::scratch("placement");
        let (child, socket) = common::spawn_with_api(&dir, &[]);
        Vmm { child, dir, socket }
    }

    /// `ch-remote --api-socket <socket> <args>`: its stdout.
    fn remote(&self, args: &[&str]) -> String {
        let out = Command::new(REMOTE)
            .arg("--api-socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ch-remote {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn vm_info_shows_one_vsmmu_per_host_smmu_and_each_devices_place() {
    let vmm = Vmm::start();
    let config = vmm.dir.join("vm.json");
    std::fs::write(&config, VM).unwrap();
    vmm.remote(&["create", config.to_str().unwrap()]);
    let info: serde_json::Value = serde_json::from_str(&vmm.remote(&["info"])).unwrap();
    let placement = &info["placement"];
    let vsmmus = placement["vsmmus"].as_array().unwrap();
    assert_eq!(vsmmus.len(), 2, "{placement:#}");
    for (v, (segment, smmu, devices)) in vsmmus.iter().zip([
        (0, "smmu3.0x0000000012000000", vec!["gpu0", "nic0"]),
        (1, "smmu3.0x0000000022000000", vec!["gpu1"]),
    ]) {
        assert_eq!(v["pci_segment"], segment, "{v}");
        assert_eq!(v["host_smmu"], smmu, "{v}");
        assert_eq!(v["devices"], serde_json::json!(devices), "{v}");
        assert_eq!(v["cmdqv"], true, "{v}");
    }
    assert_ne!(vsmmus[0]["iort_id"], vsmmus[1]["iort_id"]);
    let probe = &placement["devices"][3];
    assert_eq!(probe["id"], "probe");
    assert!(probe.get("vsmmu").is_none(), "iommu=off: no vSMMU: {probe}");

    let shown = format!(
        "{BEGIN}\n\n    $ ch-remote --api-socket /run/ch.sock info | jq -S .placement\n{}\n\n{END}",
        serde_json::to_string_pretty(placement)
            .unwrap()
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let doc = std::fs::read_to_string(DOC).unwrap();
    let committed = doc
        .find(BEGIN)
        .and_then(|a| doc[a..].find(END).map(|b| &doc[a..a + b + END.len()]));
    if std::env::var_os("UPDATE_PLACEMENT_EXAMPLE").is_some() {
        let updated = match committed {
            Some(old) => doc.replace(old, &shown),
            None => panic!("docs/cmdqv.md has no {BEGIN} marker to fill"),
        };
        std::fs::write(DOC, updated).unwrap();
        return;
    }
    assert_eq!(
        committed,
        Some(shown.as_str()),
        "docs/cmdqv.md's placement example is stale: UPDATE_PLACEMENT_EXAMPLE=1 cargo test -p \
         vmm --test placement"
    );
}
