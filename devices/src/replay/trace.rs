//! The replay trace format (docs/replay.md): regions, operations, and the
//! line parser that turns a trace's text into them.

/// An MMIO region of the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The SMMUv3 128 KiB window.
    Smmu,
    /// The pluggable second region (the CMDQ-V window).
    Cmdqv,
}

impl Region {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Region::Smmu => "smmu",
            Region::Cmdqv => "cmdqv",
        }
    }
}

/// One trace operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `ram BASE SIZE`: guest RAM, before any access.
    Ram { base: u64, size: u64 },
    /// `device SID`: an endpoint with that StreamID behind the vSMMU.
    Device { sid: u32 },
    /// `mem GPA U64...`: little-endian 64-bit words into guest memory.
    Mem { gpa: u64, words: Vec<u64> },
    /// `write REGION OFFSET SIZE VALUE`.
    Write {
        region: Region,
        offset: u64,
        size: u8,
        value: u64,
    },
    /// `read REGION OFFSET SIZE [EXPECTED]`.
    Read {
        region: Region,
        offset: u64,
        size: u8,
        expected: Option<u64>,
    },
    /// `expect-mem GPA U64`.
    ExpectMem { gpa: u64, value: u64 },
    /// `event W0 W1 W2 W3`: the host reports an event record; the vSMMU
    /// drains its vEVENTQ into the guest event queue.
    Event { record: [u64; 4] },
    /// `host-lose SID`: the host destroys the device's vDEVICE under the VM
    /// (the model still has the endpoint), so the host refuses its commands.
    HostLose { sid: u32 },
}

/// A trace line that cannot be parsed or run (exit status 2).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, naming the bad token.
    pub message: String,
}

fn number(token: &str) -> Result<u64, String> {
    let clean = token.replace('_', "");
    let parsed = match clean.strip_prefix("0x").or(clean.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => clean.parse(),
    };
    parsed.map_err(|_| format!("bad number {token:?}"))
}

fn region(token: &str) -> Result<Region, String> {
    match token {
        "smmu" => Ok(Region::Smmu),
        "cmdqv" => Ok(Region::Cmdqv),
        other => Err(format!("unknown region {other:?} (smmu or cmdqv)")),
    }
}

fn access_size(token: &str) -> Result<u8, String> {
    match number(token)? {
        4 => Ok(4),
        8 => Ok(8),
        other => Err(format!("access size {other} is not 4 or 8")),
    }
}

fn parse_op(tokens: &[&str]) -> Result<Op, String> {
    let args = tokens.get(1..).unwrap_or_default();
    let nums = |range: std::ops::RangeFrom<usize>| -> Result<Vec<u64>, String> {
        args.get(range)
            .unwrap_or_default()
            .iter()
            .map(|t| number(t))
            .collect()
    };
    let arity = |min: usize, max: usize| {
        if args.len() < min || args.len() > max {
            Err(format!(
                "{} takes {min}..={max} arguments, got {}",
                tokens[0],
                args.len()
            ))
        } else {
            Ok(())
        }
    };
    match tokens.first().copied().unwrap_or_default() {
        "ram" => {
            arity(2, 2)?;
            let v = nums(0..)?;
            Ok(Op::Ram {
                base: v[0],
                size: v[1],
            })
        }
        "device" => {
            arity(1, 1)?;
            let sid = number(args[0])?;
            let sid =
                u32::try_from(sid).map_err(|_| format!("StreamID {sid:#x} exceeds 32 bits"))?;
            Ok(Op::Device { sid })
        }
        "mem" => {
            arity(2, usize::MAX)?;
            let v = nums(0..)?;
            Ok(Op::Mem {
                gpa: v[0],
                words: v[1..].to_vec(),
            })
        }
        "write" => {
            arity(4, 4)?;
            Ok(Op::Write {
                region: region(args[0])?,
                offset: number(args[1])?,
                size: access_size(args[2])?,
                value: number(args[3])?,
            })
        }
        "read" => {
            arity(3, 4)?;
            Ok(Op::Read {
                region: region(args[0])?,
                offset: number(args[1])?,
                size: access_size(args[2])?,
                expected: args.get(3).map(|t| number(t)).transpose()?,
            })
        }
        "expect-mem" => {
            arity(2, 2)?;
            let v = nums(0..)?;
            Ok(Op::ExpectMem {
                gpa: v[0],
                value: v[1],
            })
        }
        "host-lose" => {
            arity(1, 1)?;
            let v = nums(0..)?;
            let sid = u32::try_from(v[0])
                .map_err(|_| format!("StreamID {:#x} does not fit 32 bits", v[0]))?;
            Ok(Op::HostLose { sid })
        }
        "event" => {
            arity(4, 4)?;
            let v = nums(0..)?;
            Ok(Op::Event {
                record: [v[0], v[1], v[2], v[3]],
            })
        }
        other => Err(format!("unknown operation {other:?}")),
    }
}

/// Parse a whole trace: `(line number, op)` pairs, comments and blank
/// lines skipped.
pub fn parse(text: &str) -> Result<Vec<(usize, Op)>, LineError> {
    let mut ops = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split('#').next().unwrap_or_default();
        let tokens: Vec<&str> = content.split_whitespace().collect();
        if tokens.is_empty() {
            continue;
        }
        let op = parse_op(&tokens).map_err(|message| LineError { line, message })?;
        ops.push((line, op));
    }
    Ok(ops)
}
