//! Stream table walk and Stream Table Entry checks (SMMUv3 spec 5.2 "Stream
//! Table Entry", 3.3.2 "Stream table lookup").
//!
//! The model reads exactly one STE per lookup (and one L1 descriptor for a
//! two-level table), so no guest-programmed table size can make it do more
//! work. It turns the guest STE into a [`NestedSte`]: the typed decision
//! (abort, bypass, stage-1 translate) plus words 0-1 masked to the bits the
//! kernel accepts in `struct iommu_hwpt_arm_smmuv3`.
//!
//! Not modelled: words 2-7 (stage-2 and attribute overrides belong to the
//! host), STE.MEV/S1MPAM/etc. (not allowed by the kernel), SubstreamID
//! checks beyond S1CDMax <= IDR1.SSIDSIZE.

use vm_memory::{Bytes, GuestAddress};

use super::idr::IdRegisters;
use super::regs::strtab;
use crate::GuestMemory;

/// Bytes per STE (5.2).
pub const STE_BYTES: u64 = 64;
/// Bytes per level-1 stream table descriptor (5.1).
const L1STD_BYTES: u64 = 8;

/// STE word 0 fields (5.2).
pub mod ste0 {
    use crate::regs::Field;
    pub const V: Field = Field::bit(0);
    pub const CONFIG: Field = Field::new(1, 3);
    pub const S1FMT: Field = Field::new(4, 2);
    pub const S1CONTEXTPTR: Field = Field::new(6, 46);
    pub const S1CDMAX: Field = Field::new(59, 5);
    /// Bits the kernel accepts (STRTAB_STE_0_NESTING_ALLOWED).
    pub const ALLOWED: u64 =
        V.mask() | CONFIG.mask() | S1FMT.mask() | S1CONTEXTPTR.mask() | S1CDMAX.mask();
}

/// STE word 1 fields (5.2).
pub mod ste1 {
    use crate::regs::Field;
    pub const S1DSS: Field = Field::new(0, 2);
    pub const S1CIR: Field = Field::new(2, 2);
    pub const S1COR: Field = Field::new(4, 2);
    pub const S1CSH: Field = Field::new(6, 2);
    pub const S1STALLD: Field = Field::bit(27);
    pub const EATS: Field = Field::new(28, 2);
    /// Bits the kernel accepts (STRTAB_STE_1_NESTING_ALLOWED).
    pub const ALLOWED: u64 =
        S1DSS.mask() | S1CIR.mask() | S1COR.mask() | S1CSH.mask() | S1STALLD.mask() | EATS.mask();
}

/// Level-1 stream table descriptor fields (5.1).
mod l1std {
    use crate::regs::Field;
    pub const SPAN: Field = Field::new(0, 5);
    pub const L2PTR: Field = Field::new(6, 46);
}

/// STE.Config values (5.2).
mod config {
    pub const ABORT: u64 = 0b000;
    pub const BYPASS: u64 = 0b100;
    pub const S1_TRANS: u64 = 0b101;
}

/// STE.S1Fmt reserved value.
const S1FMT_RESERVED: u64 = 0b11;
/// STE.EATS values the guest may use (no stage 2 => no split-stage ATS).
const EATS_FULL: u64 = 0b01;

/// What the nested HWPT does with the device's DMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SteConfig {
    /// Every transaction aborts (Config = 0b000, or V = 0).
    Abort,
    /// Stage 1 bypassed: DMA translates through the host's stage 2 only.
    Bypass,
    /// Stage 1 translates with the guest's CD table.
    S1Translate,
}

impl SteConfig {
    /// The word printed in backend call logs.
    pub fn name(self) -> &'static str {
        match self {
            SteConfig::Abort => "abort",
            SteConfig::Bypass => "bypass",
            SteConfig::S1Translate => "s1",
        }
    }
}

/// A guest STE reduced to what `IOMMU_HWPT_ALLOC` (ARM_SMMUV3) takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NestedSte {
    /// The decision, decoded from `words`.
    pub config: SteConfig,
    /// STE words 0-1, masked to the bits the kernel allows.
    pub words: [u64; 2],
}

impl NestedSte {
    /// A valid abort STE: what an invalid guest STE becomes.
    pub fn abort() -> Self {
        NestedSte {
            config: SteConfig::Abort,
            words: [ste0::V.make(1) | ste0::CONFIG.make(config::ABORT), 0],
        }
    }

    /// A valid bypass STE: what GBPA selects while SMMUEN = 0.
    pub fn bypass() -> Self {
        NestedSte {
            config: SteConfig::Bypass,
            words: [ste0::V.make(1) | ste0::CONFIG.make(config::BYPASS), 0],
        }
    }

    /// Check a guest STE against the guest's ID registers and reduce it.
    /// V = 0 is not an error at CFGI time: it is installed as an all-zero
    /// (abort) STE, which is what the kernel does with it too.
    pub fn from_guest(words: [u64; 2], idr: &IdRegisters) -> Result<Self, BadSte> {
        let [w0, w1] = words;
        if !ste0::V.is_set(w0) {
            return Ok(NestedSte {
                config: SteConfig::Abort,
                words: [0, 0],
            });
        }
        let cfg = match ste0::CONFIG.get(w0) {
            config::ABORT => SteConfig::Abort,
            config::BYPASS => SteConfig::Bypass,
            config::S1_TRANS => SteConfig::S1Translate,
            other => return Err(BadSte::Config(other)),
        };
        let mut w1 = w1;
        let eats = ste1::EATS.get(w1);
        if !idr.ats() {
            // EATS is ignored when IDR0.ATS = 0; do not forward it.
            w1 = ste1::EATS.set(w1, 0);
        } else if eats > EATS_FULL {
            return Err(BadSte::Eats(eats));
        }
        if cfg == SteConfig::S1Translate {
            let fmt = ste0::S1FMT.get(w0);
            let cdmax = ste0::S1CDMAX.get(w0);
            if fmt == S1FMT_RESERVED || (fmt != 0 && cdmax != 0 && !idr.two_level_cd()) {
                return Err(BadSte::S1Fmt(fmt));
            }
            if cdmax > u64::from(idr.ssid_bits()) {
                return Err(BadSte::S1CdMax(cdmax));
            }
        }
        Ok(NestedSte {
            config: cfg,
            words: [w0 & ste0::ALLOWED, w1 & ste1::ALLOWED],
        })
    }
}

/// Why the model refuses a guest STE (reported as C_BAD_STE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadSte {
    /// Config is reserved, or selects stage 2 which IDR0.S2P = 0 denies.
    #[error("STE.Config {0:#05b} is reserved or needs stage 2")]
    Config(u64),
    /// EATS split-stage (0b10) needs stage 2; 0b11 is reserved.
    #[error("STE.EATS {0:#04b} is not allowed without stage 2")]
    Eats(u64),
    /// S1Fmt reserved, or two-level CD tables with IDR0.CD2L = 0.
    #[error("STE.S1Fmt {0:#04b} is reserved or needs CD2L")]
    S1Fmt(u64),
    /// More substreams than IDR1.SSIDSIZE.
    #[error("STE.S1CDMax {0} exceeds IDR1.SSIDSIZE")]
    S1CdMax(u64),
}

/// Why a stream table lookup found no STE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The StreamID is outside the table (C_BAD_STREAMID).
    #[error("StreamID {sid:#x} is outside the stream table")]
    OutOfRange { sid: u32 },
    /// A two-level table's L1 descriptor has no (or too small an) L2 table
    /// for the StreamID (C_BAD_STREAMID).
    #[error("L1 descriptor for StreamID {sid:#x} has span {span}")]
    NoL2 { sid: u32, span: u64 },
    /// STRTAB_BASE_CFG asks for a format the ID registers deny (C_BAD_STREAMID).
    #[error("STRTAB_BASE_CFG format {fmt} split {split} is not supported")]
    Format { fmt: u64, split: u64 },
    /// Reading the table from guest memory failed (F_STE_FETCH).
    #[error("stream table fetch at {addr:#x} failed")]
    Fetch { addr: u64 },
}

/// The stream table as programmed in STRTAB_BASE / STRTAB_BASE_CFG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamTable {
    /// STRTAB_BASE register value.
    pub base: u64,
    /// STRTAB_BASE_CFG register value.
    pub cfg: u64,
}

/// SPLIT values the architecture defines (4 KiB, 16 KiB, 64 KiB L2 tables).
const SPLITS: [u64; 3] = [6, 8, 10];
/// L1STD.SPAN values above this are reserved (L2 tables of up to 2^11 STEs).
const MAX_SPAN: u64 = 12;

fn read_u64(mem: &GuestMemory, addr: u64) -> Result<u64, LookupError> {
    mem.read_obj::<u64>(GuestAddress(addr))
        .map(u64::from_le)
        .map_err(|_| LookupError::Fetch { addr })
}

fn bits_below(value: u64, bits: u64) -> u64 {
    // `bits` <= 32 here, so the shift cannot overflow.
    value & ((1u64 << bits) - 1)
}

impl StreamTable {
    fn table_address(self) -> u64 {
        self.base & strtab::ADDR.mask()
    }

    /// The guest-physical address of `sid`'s STE, reading at most one L1
    /// descriptor.
    pub fn ste_address(
        self,
        sid: u32,
        idr: &IdRegisters,
        mem: &GuestMemory,
    ) -> Result<u64, LookupError> {
        // LOG2SIZE beyond IDR1.SIDSIZE behaves as SIDSIZE (6.3.24).
        let log2size = strtab::LOG2SIZE
            .get(self.cfg)
            .min(u64::from(idr.sid_bits()));
        if u64::from(sid) >> log2size != 0 {
            return Err(LookupError::OutOfRange { sid });
        }
        let sid = u64::from(sid);
        let fmt = strtab::FMT.get(self.cfg);
        let split = strtab::SPLIT.get(self.cfg);
        match fmt {
            strtab::FMT_LINEAR => Ok(self.table_address() + sid * STE_BYTES),
            strtab::FMT_2LVL if idr.two_level_strtab() && SPLITS.contains(&split) => {
                let l1_addr = self.table_address() + (sid >> split) * L1STD_BYTES;
                let desc = read_u64(mem, l1_addr)?;
                let span = l1std::SPAN.get(desc);
                let low = bits_below(sid, split);
                // An L2 table of span S holds 2^(S-1) STEs (5.1).
                if span == 0 || span > MAX_SPAN || low >> (span - 1) != 0 {
                    return Err(LookupError::NoL2 {
                        sid: sid as u32,
                        span,
                    });
                }
                Ok((desc & l1std::L2PTR.mask()) + low * STE_BYTES)
            }
            _ => Err(LookupError::Format { fmt, split }),
        }
    }

    /// Read words 0-1 of `sid`'s STE.
    pub fn read_ste(
        self,
        sid: u32,
        idr: &IdRegisters,
        mem: &GuestMemory,
    ) -> Result<[u64; 2], LookupError> {
        let addr = self.ste_address(sid, idr, mem)?;
        Ok([read_u64(mem, addr)?, read_u64(mem, addr + 8)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smmuv3::idr::{HostChoice, HostSmmuInfo, VsmmuConfig};
    use vm_memory::GuestAddress;

    const RAM: u64 = 0x4000_0000;

    fn mem() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(RAM), 0x10_0000)]).unwrap()
    }

    fn idr(ats: bool) -> IdRegisters {
        let config = VsmmuConfig {
            ats: if ats { HostChoice::On } else { HostChoice::Off },
            ..VsmmuConfig::default()
        };
        IdRegisters::compose(&HostSmmuInfo::grace_like(), &config).unwrap()
    }

    fn s1_ste() -> [u64; 2] {
        [
            ste0::V.make(1)
                | ste0::CONFIG.make(config::S1_TRANS)
                | ste0::S1CONTEXTPTR.make(0x4001_0000 >> 6),
            ste1::S1CIR.make(1) | ste1::S1COR.make(1) | ste1::S1CSH.make(3),
        ]
    }

    #[test]
    fn s1_ste_is_accepted_with_words_masked() {
        let mut words = s1_ste();
        words[0] |= 1 << 58; // RES0 in the kernel's allowed mask
        words[1] |= 1 << 40; // STRW-like bit, not allowed
        let ste = NestedSte::from_guest(words, &idr(false)).unwrap();
        assert_eq!(ste.config, SteConfig::S1Translate);
        assert_eq!(ste.words, s1_ste());
    }

    #[test]
    fn invalid_ste_becomes_zeroed_abort() {
        let ste = NestedSte::from_guest([ste0::CONFIG.make(0b110), 7], &idr(false)).unwrap();
        assert_eq!(ste.config, SteConfig::Abort);
        assert_eq!(ste.words, [0, 0]);
    }

    #[test]
    fn stage2_and_reserved_configs_are_bad_ste() {
        for cfg in [0b001, 0b010, 0b011, 0b110, 0b111] {
            let words = [ste0::V.make(1) | ste0::CONFIG.make(cfg), 0];
            assert_eq!(
                NestedSte::from_guest(words, &idr(false)),
                Err(BadSte::Config(cfg))
            );
        }
    }

    #[test]
    fn eats_split_stage_is_bad_only_when_ats_is_advertised() {
        let mut words = s1_ste();
        words[1] = ste1::EATS.set(words[1], 0b10);
        assert_eq!(
            NestedSte::from_guest(words, &idr(true)),
            Err(BadSte::Eats(0b10))
        );
        let ste = NestedSte::from_guest(words, &idr(false)).unwrap();
        assert_eq!(ste1::EATS.get(ste.words[1]), 0);
        words[1] = ste1::EATS.set(words[1], 1);
        let ste = NestedSte::from_guest(words, &idr(true)).unwrap();
        assert_eq!(ste1::EATS.get(ste.words[1]), 1);
    }

    #[test]
    fn s1fmt_reserved_and_cdmax_beyond_ssidsize_are_bad_ste() {
        let mut words = s1_ste();
        words[0] = ste0::S1FMT.set(words[0], 0b11);
        assert_eq!(
            NestedSte::from_guest(words, &idr(false)),
            Err(BadSte::S1Fmt(3))
        );
        let mut words = s1_ste();
        words[0] = ste0::S1CDMAX.set(words[0], 21);
        assert_eq!(
            NestedSte::from_guest(words, &idr(false)),
            Err(BadSte::S1CdMax(21))
        );
    }

    #[test]
    fn linear_table_reads_only_the_indexed_ste() {
        let mem = mem();
        let table = StreamTable {
            base: RAM,
            cfg: strtab::LOG2SIZE.make(8),
        };
        mem.write_obj(0xabcd_u64, GuestAddress(RAM + 5 * 64))
            .unwrap();
        let words = table.read_ste(5, &idr(false), &mem).unwrap();
        assert_eq!(words, [0xabcd, 0]);
        assert_eq!(
            table.read_ste(256, &idr(false), &mem),
            Err(LookupError::OutOfRange { sid: 256 })
        );
    }

    #[test]
    fn huge_log2size_is_capped_at_sidsize_without_touching_memory() {
        let mem = mem();
        let table = StreamTable {
            base: 0xffff_0000_0000,
            cfg: strtab::LOG2SIZE.make(63),
        };
        assert_eq!(
            table.read_ste(0x1_0000, &idr(false), &mem),
            Err(LookupError::OutOfRange { sid: 0x1_0000 })
        );
        assert!(matches!(
            table.read_ste(3, &idr(false), &mem),
            Err(LookupError::Fetch { .. })
        ));
    }

    #[test]
    fn two_level_table_walks_l1_descriptor_to_l2_ste() {
        let mem = mem();
        let l2 = RAM + 0x8000;
        let table = StreamTable {
            base: RAM,
            cfg: strtab::LOG2SIZE.make(16)
                | strtab::SPLIT.make(8)
                | strtab::FMT.make(strtab::FMT_2LVL),
        };
        // SID 0x103: L1 index 1, L2 index 3; span 9 = 256 STEs.
        mem.write_obj(l2 | 9, GuestAddress(RAM + 8)).unwrap();
        mem.write_obj(0x77_u64, GuestAddress(l2 + 3 * 64)).unwrap();
        assert_eq!(table.read_ste(0x103, &idr(false), &mem).unwrap(), [0x77, 0]);
        assert_eq!(
            table.read_ste(0x203, &idr(false), &mem),
            Err(LookupError::NoL2 {
                sid: 0x203,
                span: 0
            })
        );
    }

    #[test]
    fn two_level_span_too_small_for_sid_is_rejected() {
        let mem = mem();
        let table = StreamTable {
            base: RAM,
            cfg: strtab::LOG2SIZE.make(16)
                | strtab::SPLIT.make(8)
                | strtab::FMT.make(strtab::FMT_2LVL),
        };
        // Span 2 covers 2 STEs: L2 index 3 is outside.
        mem.write_obj((RAM + 0x8000) | 2, GuestAddress(RAM))
            .unwrap();
        assert_eq!(
            table.read_ste(3, &idr(false), &mem),
            Err(LookupError::NoL2 { sid: 3, span: 2 })
        );
    }

    #[test]
    fn reserved_split_and_format_are_rejected() {
        let mem = mem();
        let table = StreamTable {
            base: RAM,
            cfg: strtab::LOG2SIZE.make(16)
                | strtab::SPLIT.make(7)
                | strtab::FMT.make(strtab::FMT_2LVL),
        };
        assert_eq!(
            table.read_ste(1, &idr(false), &mem),
            Err(LookupError::Format { fmt: 1, split: 7 })
        );
    }
}
