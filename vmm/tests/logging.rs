//! `RUST_LOG` and `-v` on the real binary: `--dump-acpi` logs each table
//! it writes under the `acpi` target at info, and needs no KVM.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cloud-hypervisor");

/// stderr of a `--dump-acpi` run with `args` and `RUST_LOG` = `rust_log`
/// (None: unset).
fn dump_stderr(name: &str, args: &[&str], rust_log: Option<&str>) -> String {
    let dir = std::env::temp_dir().join(format!("ch-log-{}-{name}", std::process::id()));
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("--dump-acpi").arg(&dir);
    match rust_log {
        Some(spec) => cmd.env("RUST_LOG", spec),
        None => cmd.env_remove("RUST_LOG"),
    };
    let out = cmd.output().expect("run cloud-hypervisor");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{args:?} RUST_LOG={rust_log:?}: {stderr}"
    );
    stderr
}

fn logs_tables(stderr: &str) -> bool {
    stderr.lines().any(|l| l.contains(" acpi] DSDT: "))
}

#[test]
fn dump_acpi_is_quiet_by_default_and_v_shows_the_acpi_target() {
    assert!(!logs_tables(&dump_stderr("quiet", &[], None)));
    assert!(logs_tables(&dump_stderr("v", &["-v"], None)));
}

#[test]
fn rust_log_enables_one_target_without_v() {
    let stderr = dump_stderr("target", &[], Some("acpi=info"));
    assert!(logs_tables(&stderr), "{stderr}");
    assert!(!logs_tables(&dump_stderr("other", &[], Some("cmdqv=info"))));
}

#[test]
fn rust_log_wins_over_v() {
    assert!(!logs_tables(&dump_stderr(
        "off",
        &["-v"],
        Some("acpi=warn")
    )));
    assert!(!logs_tables(&dump_stderr("bare", &["-vv"], Some("error"))));
}
