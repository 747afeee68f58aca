//! MMIO replay: run a text trace of guest accesses against the vSMMU model
//! (and, when plugged in, a second region such as the CMDQ-V) with the
//! emulated backend, and print every read, backend call and interrupt.
//!
//! The format is described in docs/replay.md. The same [`Runner`] serves the
//! `vsmmu-replay` binary, the trace tests and fuzz targets: a fuzzer builds a
//! runner with a small RAM ([`Runner::new`] + an [`Op::Ram`]) and feeds it
//! [`Op`]s decoded from its input.

use std::fmt;
use std::sync::{Arc, Mutex};

use vm_device::MutDeviceMmio;
use vm_device::bus::MmioAddress;
use vm_memory::{Bytes, GuestAddress};

use crate::GuestMemory;
use crate::emulated::EmulatedBackend;
use crate::emulated::cmdqv::{EmulatedCmdqv, EmulatedCmdqvConfig};
use crate::irq::{InterruptSink, IrqLine};
use crate::smmuv3::{Smmuv3, VsmmuConfig};

mod trace;

pub use trace::{LineError, Op, Region, parse};

/// Guest RAM start of the aarch64 layout (arch::layout's RAM_START); the
/// lead points this at `arch::layout` on merge.
pub const DEFAULT_RAM_BASE: u64 = 0x4000_0000;
/// Default guest RAM size: 1 GiB (mapped lazily, costs nothing until used).
pub const DEFAULT_RAM_SIZE: u64 = 1 << 30;
/// Largest RAM a trace may ask for.
const MAX_RAM_SIZE: u64 = 16 << 30;

/// The physical StreamID the replay registers for an endpoint: a fixed,
/// visibly different function of the vSID.
pub fn replay_psid(vsid: u32) -> u32 {
    vsid.wrapping_add(0x1000)
}

/// What a second region's model gets to build itself with: the same
/// emulated vIOMMU, guest memory and interrupt sink as the vSMMU.
pub struct ReplayEnv {
    /// The emulated vIOMMU both models share.
    pub backend: EmulatedBackend,
    /// Guest memory.
    pub mem: GuestMemory,
    /// Interrupt sink that prints `irq NAME` / `msi ADDR DATA`.
    pub irq: Arc<dyn InterruptSink>,
}

/// Builds the model behind the `cmdqv` region, once, at the first access.
pub type SecondRegion =
    Box<dyn FnOnce(&ReplayEnv) -> Result<Box<dyn MutDeviceMmio + Send>, String>>;

/// The CMD-QV model (page0 trapped, QEMU's guest view) as the `cmdqv`
/// region, over the vSMMU's emulated vIOMMU: what `--vsmmu cmdqv` and the
/// CMD-QV fuzz targets run.
pub fn cmdqv_region() -> SecondRegion {
    Box::new(|env: &ReplayEnv| {
        let host = EmulatedCmdqv::new(
            env.backend.clone(),
            env.mem.clone(),
            env.irq.clone(),
            EmulatedCmdqvConfig::default(),
        )
        .map_err(|err| format!("CMD-QV: {err}"))?;
        let config = crate::cmdqv::CmdqvConfig::default();
        crate::cmdqv::Cmdqv::new(Box::new(host), env.mem.clone(), env.irq.clone(), config)
            .map(|model| Box::new(model) as Box<dyn MutDeviceMmio + Send>)
            .map_err(|err| format!("CMD-QV: {err}"))
    })
}

/// How to run a trace.
#[derive(Default)]
pub struct ReplayOptions {
    /// The vSMMU's VM configuration.
    pub config: VsmmuConfig,
    /// The model behind the `cmdqv` region; `None` makes `cmdqv` accesses
    /// line errors.
    pub cmdqv: Option<SecondRegion>,
}

/// Prints interrupts in order with the backend calls that preceded them.
struct PrintingSink {
    backend: EmulatedBackend,
    out: Arc<Mutex<Vec<String>>>,
}

impl PrintingSink {
    fn push(&self, line: String) {
        let mut out = crate::lock_unpoisoned(&self.out);
        out.extend(
            self.backend
                .take_calls()
                .iter()
                .map(|c| format!("backend {c}")),
        );
        out.push(line);
    }
}

impl InterruptSink for PrintingSink {
    fn trigger(&self, line: IrqLine) {
        self.push(format!("irq {}", line.name()));
    }
    fn set_level(&self, line: IrqLine, asserted: bool) {
        self.push(format!("irq {} level={}", line.name(), u8::from(asserted)));
    }
    fn msi(&self, addr: u64, data: u32) {
        self.push(format!("msi {addr:#x} {data:#x}"));
    }
}

struct Machine {
    env: ReplayEnv,
    smmu: Smmuv3,
    cmdqv: Option<Box<dyn MutDeviceMmio + Send>>,
}

/// Runs trace operations one at a time.
pub struct Runner {
    ram: (u64, u64),
    devices: Vec<u32>,
    config: VsmmuConfig,
    cmdqv_factory: Option<SecondRegion>,
    machine: Option<Machine>,
    out: Arc<Mutex<Vec<String>>>,
    mismatches: usize,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("ram", &self.ram)
            .field("devices", &self.devices)
            .field("mismatches", &self.mismatches)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner with the default RAM and no device yet.
    pub fn new(options: ReplayOptions) -> Self {
        Runner {
            ram: (DEFAULT_RAM_BASE, DEFAULT_RAM_SIZE),
            devices: Vec::new(),
            config: options.config,
            cmdqv_factory: options.cmdqv,
            machine: None,
            out: Arc::new(Mutex::new(Vec::new())),
            mismatches: 0,
        }
    }

    /// Number of failed expectations so far.
    pub fn mismatches(&self) -> usize {
        self.mismatches
    }

    /// Take the output lines produced so far.
    pub fn take_output(&mut self) -> Vec<String> {
        if let Some(machine) = &self.machine {
            self.print_backend_calls(&machine.env.backend);
        }
        std::mem::take(&mut *crate::lock_unpoisoned(&self.out))
    }

    /// Print a line after the backend calls that happened before it.
    fn print(&self, line: String) {
        if let Some(machine) = &self.machine {
            self.print_backend_calls(&machine.env.backend);
        }
        crate::lock_unpoisoned(&self.out).push(line);
    }

    fn print_backend_calls(&self, backend: &EmulatedBackend) {
        let calls = backend.take_calls();
        let mut out = crate::lock_unpoisoned(&self.out);
        out.extend(calls.iter().map(|c| format!("backend {c}")));
    }

    /// Build the machine at the first access: RAM, backend, vDEVICEs, models.
    fn machine(&mut self) -> Result<&mut Machine, String> {
        if self.machine.is_none() {
            let machine = self.build()?;
            self.machine = Some(machine);
        }
        self.machine
            .as_mut()
            .ok_or_else(|| "no machine".to_string())
    }

    fn build(&mut self) -> Result<Machine, String> {
        let (base, size) = self.ram;
        let size = usize::try_from(size).map_err(|_| format!("RAM size {size:#x} too large"))?;
        let mem = GuestMemory::from_ranges(&[(GuestAddress(base), size)])
            .map_err(|err| format!("guest RAM {base:#x}+{size:#x}: {err}"))?;
        let backend = EmulatedBackend::new();
        let irq: Arc<dyn InterruptSink> = Arc::new(PrintingSink {
            backend: backend.clone(),
            out: self.out.clone(),
        });
        let mut smmu = Smmuv3::new(
            &self.config,
            Box::new(backend.clone()),
            mem.clone(),
            irq.clone(),
        )
        .map_err(|err| format!("vSMMU: {err}"))?;
        let env = ReplayEnv { backend, mem, irq };
        // The CMD-QV first: it sizes the vIOMMU's SID table, which the
        // vDEVICE registrations below must respect.
        let cmdqv = match self.cmdqv_factory.take() {
            Some(factory) => Some(factory(&env)?),
            None => None,
        };
        for &vsid in &self.devices {
            // A refused vDEVICE (the SID table is full) is printed as the
            // failed backend call; the endpoint then has no stream.
            if env.backend.vdevice_alloc(vsid, replay_psid(vsid)).is_ok() {
                smmu.register_stream(vsid);
            }
        }
        Ok(Machine { env, smmu, cmdqv })
    }

    /// Run one operation. An `Err` is a line error (exit status 2); a failed
    /// expectation prints `mismatch ...` and counts, but is not an error.
    pub fn apply(&mut self, line: usize, op: &Op) -> Result<(), LineError> {
        let result = self.apply_inner(line, op);
        if let Some(machine) = &self.machine {
            self.print_backend_calls(&machine.env.backend);
        }
        result.map_err(|message| LineError { line, message })
    }

    fn apply_inner(&mut self, line: usize, op: &Op) -> Result<(), String> {
        match op {
            Op::Ram { base, size } => {
                if self.machine.is_some() {
                    return Err("ram must come before any access".into());
                }
                if *size == 0 || *size > MAX_RAM_SIZE || base.checked_add(*size).is_none() {
                    return Err(format!(
                        "RAM {base:#x}+{size:#x} is empty, too large or wraps"
                    ));
                }
                self.ram = (*base, *size);
            }
            Op::Device { sid } => {
                if self.machine.is_some() {
                    return Err("device must come before any access".into());
                }
                if self.devices.contains(sid) {
                    return Err(format!("device {sid:#x} declared twice"));
                }
                self.devices.push(*sid);
            }
            Op::Mem { gpa, words } => {
                let machine = self.machine()?;
                for (i, word) in words.iter().enumerate() {
                    let addr = gpa
                        .checked_add(8 * i as u64)
                        .ok_or_else(|| format!("address {gpa:#x} wraps"))?;
                    machine
                        .env
                        .mem
                        .write_obj(word.to_le(), GuestAddress(addr))
                        .map_err(|err| format!("mem {addr:#x}: {err}"))?;
                }
            }
            Op::ExpectMem { gpa, value } => {
                let machine = self.machine()?;
                let found = machine
                    .env
                    .mem
                    .read_obj::<u64>(GuestAddress(*gpa))
                    .map(u64::from_le)
                    .map_err(|err| format!("expect-mem {gpa:#x}: {err}"))?;
                if found != *value {
                    self.mismatch(
                        line,
                        format!("mem {gpa:#x} = {found:#x}, expected {value:#x}"),
                    );
                }
            }
            Op::Write {
                region,
                offset,
                size,
                value,
            } => {
                let bytes = value.to_le_bytes();
                let data = bytes.get(..usize::from(*size)).unwrap_or_default();
                let device = self.device(*region)?;
                device.mmio_write(MmioAddress(0), *offset, data);
            }
            Op::Read {
                region,
                offset,
                size,
                expected,
            } => {
                let mut bytes = [0u8; 8];
                let data = bytes.get_mut(..usize::from(*size)).unwrap_or_default();
                self.device(*region)?
                    .mmio_read(MmioAddress(0), *offset, data);
                let value = u64::from_le_bytes(bytes);
                self.print(format!("read {} {offset:#x} = {value:#x}", region.name()));
                if let Some(expected) = expected
                    && *expected != value
                {
                    self.mismatch(line, format!("expected {expected:#x}"));
                }
            }
            Op::HostLose { sid } => {
                let machine = self.machine()?;
                // A refusal (no such vDEVICE) prints as the failed call.
                let _ = machine.env.backend.vdevice_destroy(*sid);
            }
            Op::Event { record } => {
                let machine = self.machine()?;
                machine.env.backend.inject_event(*record);
                machine.smmu.process_events();
            }
        }
        Ok(())
    }

    fn device(&mut self, region: Region) -> Result<&mut dyn MutDeviceMmio, String> {
        let machine = self.machine()?;
        match region {
            Region::Smmu => Ok(&mut machine.smmu),
            Region::Cmdqv => match machine.cmdqv.as_deref_mut() {
                Some(cmdqv) => Ok(cmdqv),
                None => Err("no cmdqv region in this configuration (use --vsmmu cmdqv)".into()),
            },
        }
    }

    fn mismatch(&mut self, line: usize, what: String) {
        self.mismatches += 1;
        self.print(format!("mismatch line {line}: {what}"));
    }
}

/// The result of running a whole trace.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Output lines, in order.
    pub lines: Vec<String>,
    /// The first line error, which stopped the run.
    pub error: Option<LineError>,
    /// Failed expectations.
    pub mismatches: usize,
}

impl Outcome {
    /// 0 = every expectation held, 1 = a mismatch, 2 = a bad line.
    pub fn exit_code(&self) -> i32 {
        if self.error.is_some() {
            2
        } else if self.mismatches > 0 {
            1
        } else {
            0
        }
    }
}

/// Parse and run a trace. A malformed line stops the run before anything
/// runs; a line error at run time stops it there; mismatches do not stop it.
pub fn run(text: &str, options: ReplayOptions) -> Outcome {
    let ops = match parse(text) {
        Ok(ops) => ops,
        Err(error) => {
            return Outcome {
                lines: Vec::new(),
                error: Some(error),
                mismatches: 0,
            };
        }
    };
    let mut runner = Runner::new(options);
    let mut error = None;
    for (line, op) in &ops {
        if let Err(err) = runner.apply(*line, op) {
            error = Some(err);
            break;
        }
    }
    Outcome {
        mismatches: runner.mismatches(),
        lines: runner.take_output(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_default(text: &str) -> Outcome {
        run(text, ReplayOptions::default())
    }

    #[test]
    fn parse_accepts_hex_decimal_comments_and_blank_lines() {
        let ops = parse("# probe\n\nread smmu 0x0 4 # IDR0\nwrite smmu 32 4 0x0_c\n").unwrap();
        assert_eq!(
            ops,
            [
                (
                    3,
                    Op::Read {
                        region: Region::Smmu,
                        offset: 0,
                        size: 4,
                        expected: None
                    }
                ),
                (
                    4,
                    Op::Write {
                        region: Region::Smmu,
                        offset: 0x20,
                        size: 4,
                        value: 0xc
                    }
                ),
            ]
        );
    }

    #[test]
    fn malformed_line_is_exit_2_naming_the_line() {
        for bad in [
            "read smmu 0x0 2",
            "frobnicate",
            "write gic 0 4 0",
            "read smmu zz 4",
            "mem 0x0",
        ] {
            let outcome = run_default(&format!("\n{bad}\n"));
            assert_eq!(outcome.exit_code(), 2, "{bad}");
            assert_eq!(outcome.error.unwrap().line, 2, "{bad}");
        }
    }

    #[test]
    fn read_mismatch_is_exit_1_and_run_continues() {
        let outcome = run_default("read smmu 0x20 4 0x1\nread smmu 0x24 4 0x0\n");
        assert_eq!(outcome.exit_code(), 1);
        assert_eq!(
            outcome.lines,
            [
                "read smmu 0x20 = 0x0",
                "mismatch line 1: expected 0x1",
                "read smmu 0x24 = 0x0",
            ]
        );
    }

    #[test]
    fn cmdqv_access_without_second_region_is_a_line_error() {
        let outcome = run_default("read cmdqv 0x0 4\n");
        assert_eq!(outcome.exit_code(), 2);
        assert!(outcome.error.unwrap().message.contains("cmdqv"));
    }

    #[test]
    fn device_after_first_access_is_a_line_error() {
        let outcome = run_default("read smmu 0 4\ndevice 8\n");
        assert_eq!(outcome.error.unwrap().line, 2);
    }

    #[test]
    fn devices_are_registered_with_the_backend_at_first_access() {
        let outcome = run_default("device 8\nread smmu 0x20 4\n");
        assert_eq!(
            outcome.lines,
            [
                "backend vdevice_alloc vsid=0x8 psid=0x1008",
                "backend install_ste sid=0x8 cfg=bypass ste0=0x9 ste1=0x0",
                "read smmu 0x20 = 0x0",
            ]
        );
    }

    #[test]
    fn second_region_is_pluggable() {
        struct Echo(u64);
        impl MutDeviceMmio for Echo {
            fn mmio_read(&mut self, _: MmioAddress, _: u64, data: &mut [u8]) {
                data.copy_from_slice(&self.0.to_le_bytes()[..data.len()]);
            }
            fn mmio_write(&mut self, _: MmioAddress, _: u64, data: &[u8]) {
                let mut bytes = [0u8; 8];
                bytes[..data.len()].copy_from_slice(data);
                self.0 = u64::from_le_bytes(bytes);
            }
        }
        let options = ReplayOptions {
            cmdqv: Some(Box::new(|_env: &ReplayEnv| {
                Ok(Box::new(Echo(0)) as Box<dyn MutDeviceMmio + Send>)
            })),
            ..ReplayOptions::default()
        };
        let outcome = run("write cmdqv 0x8 4 0x55\nread cmdqv 0x8 4 0x55\n", options);
        assert_eq!(outcome.exit_code(), 0, "{:?}", outcome.lines);
    }

    #[test]
    fn expect_mem_reports_mismatch_with_found_value() {
        let outcome = run_default("mem 0x40000000 0x5\nexpect-mem 0x40000000 0x6\n");
        assert_eq!(
            outcome.lines,
            ["mismatch line 2: mem 0x40000000 = 0x5, expected 0x6"]
        );
        assert_eq!(outcome.exit_code(), 1);
    }

    /// A cheap stand-in for the fuzzer: random register writes (biased to
    /// the queue and table registers) and random guest memory, never a
    /// panic, never unbounded work.
    #[test]
    fn random_mmio_and_memory_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let offsets = [
            0x20, 0x44, 0x50, 0x64, 0x80, 0x84, 0x88, 0x90, 0x98, 0x9c, 0xa0, 0x100a8, 0x100ac,
        ];
        let mut seen = std::collections::BTreeMap::new();
        let mut runner = Runner::new(ReplayOptions::default());
        runner
            .apply(
                1,
                &Op::Ram {
                    base: DEFAULT_RAM_BASE,
                    size: 0x1_0000,
                },
            )
            .unwrap();
        for sid in [0, 1, 8, 0xffff] {
            runner.apply(1, &Op::Device { sid }).unwrap();
        }
        for step in 0..20_000 {
            let roll = next();
            let op = match roll % 4 {
                0 => {
                    // Half the time something that decodes as a command.
                    let opcodes = [0x03, 0x04, 0x05, 0x10, 0x12, 0x30, 0x46];
                    let opcode = opcodes[(next() % opcodes.len() as u64) as usize];
                    let word0 = match next() % 2 {
                        0 => next(),
                        _ => (next() & !0xff) | opcode,
                    };
                    Op::Mem {
                        gpa: DEFAULT_RAM_BASE + (next() % 0x1_0000) / 8 * 8,
                        words: vec![word0, next()],
                    }
                }
                1 => Op::Read {
                    region: Region::Smmu,
                    offset: next() % WINDOW,
                    size: if next() % 2 == 0 { 4 } else { 8 },
                    expected: None,
                },
                2 => Op::Event {
                    record: [next(), next(), next(), next()],
                },
                _ => {
                    let offset = offsets[(next() % offsets.len() as u64) as usize];
                    // Keep addresses mostly inside the small RAM.
                    let value = match next() % 3 {
                        0 => next(),
                        _ => DEFAULT_RAM_BASE | (next() % 0x1_0000) | (next() & 0x3f),
                    };
                    Op::Write {
                        region: Region::Smmu,
                        offset,
                        size: 4 << (next() % 2),
                        value,
                    }
                }
            };
            runner.apply(step, &op).ok();
            for line in runner.take_output() {
                let kind = line
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                *seen.entry(kind).or_insert(0u32) += 1;
            }
        }
        // The walk must reach the interesting paths, or it proves nothing.
        for kind in [
            "backend install_ste",
            "backend invalidate",
            "irq gerror",
            "irq eventq",
        ] {
            assert!(seen.contains_key(kind), "{kind} never happened: {seen:?}");
        }
    }

    const WINDOW: u64 = crate::smmuv3::WINDOW_SIZE;

    #[test]
    fn ram_outside_any_access_window_is_rejected() {
        assert_eq!(run_default("ram 0x0 0\n").exit_code(), 2);
        assert_eq!(run_default("mem 0x1000 1\n").exit_code(), 2);
        assert_eq!(
            run_default("ram 0x1000 0x10000\nmem 0x1000 1\n").exit_code(),
            0
        );
    }
}
