//! Runs every `tests/traces/*.trace` through the `vsmmu-replay` binary and
//! compares its stdout with `<trace>.expected` byte for byte. A trace states
//! a non-zero exit status it expects with a `# expect-exit: N` line; traces
//! named `cmdqv-*` run with `--vsmmu cmdqv`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn traces() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traces");
    let mut traces: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "trace"))
        .collect();
    traces.sort();
    traces
}

fn expected_exit(trace: &str) -> i32 {
    trace
        .lines()
        .find_map(|line| line.strip_prefix("# expect-exit:"))
        .map(|code| code.trim().parse().unwrap())
        .unwrap_or(0)
}

#[test]
fn every_trace_matches_its_expected_output_and_exit_status() {
    let traces = traces();
    assert!(traces.len() >= 6, "trace directory looks empty: {traces:?}");
    let mut failures = Vec::new();
    for trace in &traces {
        let text = std::fs::read_to_string(trace).unwrap();
        let expected_path = PathBuf::from(format!("{}.expected", trace.display()));
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|err| panic!("{}: {err}", expected_path.display()));
        let cmdqv = trace
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("cmdqv-"));
        let vsmmu = if cmdqv { "cmdqv" } else { "smmuv3" };
        let output = Command::new(env!("CARGO_BIN_EXE_vsmmu-replay"))
            .args(["--vsmmu", vsmmu])
            .arg(trace)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let code = output.status.code();
        if stdout != expected {
            failures.push(format!(
                "{}: output differs\n--- expected\n{expected}--- got\n{stdout}",
                trace.display()
            ));
        }
        if code != Some(expected_exit(&text)) {
            failures.push(format!(
                "{}: exit {code:?}, expected {} (stderr: {})",
                trace.display(),
                expected_exit(&text),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn malformed_line_error_names_the_line_on_stderr() {
    let trace = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traces/malformed-line.trace");
    let output = Command::new(env!("CARGO_BIN_EXE_vsmmu-replay"))
        .arg(trace)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 4"), "{stderr}");
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn cmdqv_region_is_a_line_error_without_a_cmdqv() {
    let trace = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traces/cmdqv-linux-probe.trace");
    let output = Command::new(env!("CARGO_BIN_EXE_vsmmu-replay"))
        .args(["--vsmmu", "smmuv3"])
        .arg(trace)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cmdqv"), "{stderr}");
}
