//! `vsmmu-replay [--vsmmu smmuv3|cmdqv] TRACE`: run an MMIO trace against the
//! vSMMU model with the emulated backend and print what happened.
//!
//! Exit status: 0 every expectation held, 1 a `mismatch` was printed,
//! 2 a bad line, a bad command line or an unreadable trace.

use std::process::ExitCode;

use devices::replay::{self, ReplayOptions};

const USAGE: &str = "usage: vsmmu-replay [--vsmmu smmuv3|cmdqv] TRACE

Runs TRACE (format: docs/replay.md) against the vSMMUv3 model (and, with
--vsmmu cmdqv, its CMD-QV with page0 trapped) over the emulated iommufd
backend. Prints reads, backend calls and interrupts.
Exit status: 0 ok, 1 mismatch, 2 bad trace line or usage.";

/// Which models sit behind the trace's regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vsmmu {
    Smmuv3,
    Cmdqv,
}

fn parse_args(args: &[String]) -> Result<(Vsmmu, String), String> {
    let mut vsmmu = Vsmmu::Smmuv3;
    let mut trace = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let value = match arg.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--vsmmu" => Some(iter.next().ok_or("--vsmmu needs a value")?.clone()),
            other => other.strip_prefix("--vsmmu=").map(str::to_string),
        };
        match value {
            Some(kind) => {
                vsmmu = match kind.as_str() {
                    "smmuv3" => Vsmmu::Smmuv3,
                    "cmdqv" => Vsmmu::Cmdqv,
                    other => return Err(format!("unknown --vsmmu {other:?}")),
                }
            }
            None if trace.is_none() && !arg.starts_with('-') => trace = Some(arg.clone()),
            None => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    Ok((vsmmu, trace.ok_or("missing TRACE")?))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (vsmmu, path) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("error: reading {path}: {err}");
            return ExitCode::from(2);
        }
    };
    let mut options = ReplayOptions::default();
    if vsmmu == Vsmmu::Cmdqv {
        options.cmdqv = Some(replay::cmdqv_region());
    }
    let outcome = replay::run(&text, options);
    for line in &outcome.lines {
        println!("{line}");
    }
    if let Some(error) = &outcome.error {
        eprintln!("error: {path}: {error}");
    }
    ExitCode::from(outcome.exit_code() as u8)
}
