//! Runs the `cmdqv-*.trace` MMIO traces against the CMD-QV model with the
//! emulated backend and compares the output with `<name>.expected`.
//!
//! This is a stand-in for the `vsmmu-replay` tool (same input and output
//! format, `cmdqv` region only) so the traces are checked before that tool
//! is wired. `UPDATE_EXPECTED=1` rewrites the `.expected` files.

use std::path::Path;
use std::sync::{Arc, Mutex};

use devices::GuestMemory;
use devices::cmdqv::Cmdqv;
use devices::emulated::EmulatedBackend;
use devices::irq::{InterruptSink, IrqLine};
use vm_memory::{Bytes, GuestAddress};

#[derive(Default)]
struct Output(Mutex<Vec<String>>);

impl InterruptSink for Output {
    fn trigger(&self, line: IrqLine) {
        self.0.lock().unwrap().push(format!("irq {}", line.name()));
    }
    fn set_level(&self, line: IrqLine, asserted: bool) {
        self.0
            .lock()
            .unwrap()
            .push(format!("irq {} level {}", line.name(), asserted as u8));
    }
    fn msi(&self, addr: u64, data: u32) {
        self.0
            .lock()
            .unwrap()
            .push(format!("msi {addr:#x} {data:#x}"));
    }
}

fn num(word: &str) -> u64 {
    let word = word.trim();
    match word.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).unwrap(),
        None => word.parse().unwrap(),
    }
}

fn run(trace: &str) -> Vec<String> {
    let mut ram = Vec::new();
    let mut devices = Vec::new();
    let lines: Vec<&str> = trace
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    for line in &lines {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w[0] {
            "ram" => ram.push((GuestAddress(num(w[1])), num(w[2]) as usize)),
            "device" => devices.push(num(w[1]) as u32),
            _ => {}
        }
    }
    let mem = GuestMemory::from_ranges(&ram).unwrap();
    let viommu = EmulatedBackend::new();
    let out = Arc::new(Output::default());
    let mut cmdqv = Cmdqv::emulated(viommu.clone(), mem.clone(), out.clone()).unwrap();
    let mut result = Vec::new();
    let drain = |result: &mut Vec<String>| {
        for call in viommu.take_calls() {
            result.push(format!("backend {call}"));
        }
        result.append(&mut out.0.lock().unwrap());
    };
    if let Err(e) = cmdqv.check_device_count(devices.len()) {
        result.push(format!("error {e}"));
    }
    for (i, sid) in devices.iter().enumerate() {
        // The pSID is the emulated host's choice; 0x1000 + i keeps it distinct.
        let _ = viommu.vdevice_alloc(*sid, 0x1000 + i as u32);
    }
    drain(&mut result);
    for line in &lines {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w[0] {
            "mem" => {
                for (i, word) in w[2..].iter().enumerate() {
                    mem.write_obj(num(word), GuestAddress(num(w[1]) + 8 * i as u64))
                        .unwrap();
                }
            }
            "write" => {
                assert_eq!(w[1], "cmdqv", "{line}");
                let value = num(w[4]).to_le_bytes();
                cmdqv.write(num(w[2]), &value[..num(w[3]) as usize]);
            }
            "read" => {
                assert_eq!(w[1], "cmdqv", "{line}");
                let mut data = [0u8; 8];
                let size = num(w[3]) as usize;
                cmdqv.read(num(w[2]), &mut data[..size]);
                let value = u64::from_le_bytes(data);
                result.push(format!("read cmdqv {} = {value:#x}", w[2]));
                if let Some(expected) = w.get(4) {
                    assert_eq!(value, num(expected), "{line}");
                }
            }
            "expect-mem" => {
                let value: u64 = mem.read_obj(GuestAddress(num(w[1]))).unwrap();
                assert_eq!(value, num(w[2]), "{line}");
            }
            _ => {}
        }
        drain(&mut result);
    }
    result
}

#[test]
fn cmdqv_traces_replay_as_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traces");
    let mut ran = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.starts_with("cmdqv-") && name.ends_with(".trace")) {
            continue;
        }
        let output = run(&std::fs::read_to_string(&path).unwrap()).join("\n") + "\n";
        let expected_path = path.with_extension("expected");
        if std::env::var_os("UPDATE_EXPECTED").is_some() {
            std::fs::write(&expected_path, &output).unwrap();
        } else {
            let expected = std::fs::read_to_string(&expected_path).unwrap();
            assert_eq!(output, expected, "{name}");
        }
        ran += 1;
    }
    assert!(ran >= 2, "no cmdqv traces found in {}", dir.display());
}
