//! Shared harness of the fuzz targets: an arbitrary sequence of guest
//! actions (RAM contents, MMIO reads and writes, host events) replayed
//! through the same `Runner` the `vsmmu-replay` tool uses, so every target
//! drives the real models over the emulated backend.
//!
//! Bounds keep every input cheap: 1 MiB of guest RAM, at most 64 actions,
//! at most 32 words per RAM write. A finding is a panic, a hang or an
//! allocation the models make in proportion to a guest-controlled size.

use arbitrary::Arbitrary;
use devices::replay::{Op, Region, ReplayOptions, Runner, cmdqv_region};

/// Guest RAM base (the aarch64 layout's) and size for every target.
pub const RAM_BASE: u64 = 0x4000_0000;
/// 1 MiB: big enough for queues and stream tables, small enough to be fast.
pub const RAM_SIZE: u64 = 1 << 20;
const MAX_ACTIONS: usize = 64;
const MAX_WORDS: usize = 32;

/// One guest (or host) action.
#[derive(Arbitrary, Debug)]
pub enum Action {
    /// Write 64-bit words to guest RAM at an offset into RAM.
    Mem { offset: u32, words: Vec<u64> },
    /// An MMIO write; the target maps `offset` into the window it fuzzes.
    Write { offset: u32, wide: bool, value: u64 },
    /// An MMIO read.
    Read { offset: u32, wide: bool },
    /// The host reports an SMMU event record.
    Event { record: [u64; 4] },
}

/// Where a target's MMIO actions go.
pub struct Window {
    /// Region of the actions.
    pub region: Region,
    /// First offset.
    pub base: u64,
    /// Number of bytes (actions wrap inside it).
    pub size: u64,
}

/// Build a runner: RAM, two endpoints, with or without a CMD-QV.
pub fn runner(cmdqv: bool) -> Runner {
    let mut options = ReplayOptions::default();
    if cmdqv {
        options.cmdqv = Some(cmdqv_region());
    }
    let mut runner = Runner::new(options);
    let setup = [
        Op::Ram {
            base: RAM_BASE,
            size: RAM_SIZE,
        },
        Op::Device { sid: 0x8 },
        Op::Device { sid: 0x10 },
    ];
    for (line, op) in setup.iter().enumerate() {
        // The setup is valid by construction; an error here is a harness bug.
        runner
            .apply(line + 1, op)
            .unwrap_or_else(|e| panic!("fuzz harness setup: {e}"));
    }
    runner
}

/// A register write as the replay tool would issue it.
pub fn write(region: Region, offset: u64, size: u8, value: u64) -> Op {
    Op::Write {
        region,
        offset,
        size,
        value,
    }
}

/// Replay `actions` with MMIO offsets folded into `window`. Line errors
/// (e.g. a `mem` the runner refuses) are fine; panics are findings.
pub fn run(runner: &mut Runner, window: &Window, actions: &[Action]) {
    for (i, action) in actions.iter().take(MAX_ACTIONS).enumerate() {
        let op = match action {
            Action::Mem { offset, words } => Op::Mem {
                gpa: RAM_BASE + (u64::from(*offset) % RAM_SIZE & !7),
                words: words.iter().take(MAX_WORDS).copied().collect(),
            },
            Action::Write {
                offset,
                wide,
                value,
            } => {
                let size = if *wide { 8 } else { 4 };
                let offset =
                    window.base + (u64::from(*offset) % window.size & !(u64::from(size) - 1));
                write(window.region, offset, size, *value)
            }
            Action::Read { offset, wide } => {
                let size = if *wide { 8 } else { 4 };
                Op::Read {
                    region: window.region,
                    offset: window.base
                        + (u64::from(*offset) % window.size & !(u64::from(size) - 1)),
                    size,
                    expected: None,
                }
            }
            Action::Event { record } => Op::Event { record: *record },
        };
        let _ = runner.apply(100 + i, &op);
        // Output is not checked; drop it so long inputs stay cheap.
        let _ = runner.take_output();
    }
}
