//! The binary on a host that cannot back an accelerated vSMMU: one sentence
//! naming the fix, a non-zero exit, no panic, nothing else attempted.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cloud-hypervisor");

/// These refusals are what a host without iommufd answers: one with
/// /dev/iommu gives another, so there the tests are not run (they are
/// `#[ignore]`d, and the lanes that know the host has none run them).
fn no_dev_iommu() {
    assert!(
        !std::path::Path::new("/dev/iommu").exists(),
        "this host has /dev/iommu: it cannot give this refusal"
    );
}

/// Run the binary with `args` and a dummy kernel; (exit code, stderr).
fn refuse(tag: &str, args: &[&str]) -> (Option<i32>, String) {
    let kernel = std::env::temp_dir().join(format!("ch-host-refusal-{tag}-{}", std::process::id()));
    std::fs::write(&kernel, b"not a kernel").unwrap();
    let out = Command::new(BIN)
        .args(args)
        .arg("--kernel")
        .arg(&kernel)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&kernel);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs a host without /dev/iommu: the scripts/test.sh host lane runs it"]
fn cmdqv_with_passthrough_on_a_host_without_dev_iommu_says_so_in_one_sentence() {
    no_dev_iommu();
    let (code, stderr) = refuse(
        "cmdqv",
        &[
            "--vsmmu",
            "cmdqv",
            "--device",
            "path=/sys/bus/pci/devices/0000:00:01.0,iommu=on",
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    let line = lines[0];
    assert!(
        line.starts_with("cloud-hypervisor: cannot open /dev/iommu"),
        "{line}"
    );
    assert!(
        line.contains("CONFIG_IOMMUFD (>= 6.17 for a vSMMU)") && line.contains("backend=emulated"),
        "{line}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
#[ignore = "needs a host without /dev/iommu: the scripts/test.sh host lane runs it"]
fn passthrough_without_a_vsmmu_still_needs_dev_iommu_and_says_so() {
    no_dev_iommu();
    let (code, stderr) = refuse(
        "off",
        &["--device", "path=/sys/bus/pci/devices/0000:00:01.0"],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot open /dev/iommu") && stderr.contains("passthrough (--device)"),
        "{stderr}"
    );
}
