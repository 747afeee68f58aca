//! SMMUv3 register map: page 0 and page 1 of the 128 KiB window
//! (Arm IHI 0070, chapter 6 "Memory map and registers").
//!
//! Every register the model knows is a variant of [`Reg`]; its offset,
//! name, width, access rule and writable bits are declared once in
//! [`Reg::decl`], and every field once in the per-register modules below.
//! All masks are derived from those declarations.
//!
//! Implemented: the ID registers, CR0/CR0ACK, CR1, CR2, GBPA, IRQ_CTRL/ACK,
//! GERROR/GERRORN, GERROR_IRQ_CFG0-2, STRTAB_BASE/_CFG, CMDQ_BASE/PROD/CONS,
//! EVTQ_BASE, EVTQ_PROD/CONS (page 1), EVTQ_IRQ_CFG0-2.
//! Deliberately RAZ/WI: STATUSR, AGBPA, the PRI queue (IDR0.PRI = 0), the
//! secure, VATOS and IMPDEF areas; any other offset also reads as zero.

use crate::regs::{Access, Register};

/// Size of the register window: page 0 and page 1, 64 KiB each (6.1).
pub const WINDOW_SIZE: u64 = 0x2_0000;

/// Offset of page 1 inside the window (6.1).
pub const PAGE1: u64 = 0x1_0000;

/// SMMU_IDR0 fields (6.3.1).
pub mod idr0 {
    use crate::regs::Field;
    pub const S2P: Field = Field::bit(0);
    pub const S1P: Field = Field::bit(1);
    pub const TTF: Field = Field::new(2, 2);
    pub const COHACC: Field = Field::bit(4);
    pub const BTM: Field = Field::bit(5);
    pub const HTTU: Field = Field::new(6, 2);
    pub const HYP: Field = Field::bit(9);
    pub const ATS: Field = Field::bit(10);
    pub const ASID16: Field = Field::bit(12);
    pub const MSI: Field = Field::bit(13);
    pub const SEV: Field = Field::bit(14);
    pub const PRI: Field = Field::bit(16);
    pub const VMID16: Field = Field::bit(18);
    pub const CD2L: Field = Field::bit(19);
    pub const TTENDIAN: Field = Field::new(21, 2);
    pub const STALL_MODEL: Field = Field::new(24, 2);
    pub const TERM_MODEL: Field = Field::bit(26);
    pub const ST_LEVEL: Field = Field::new(27, 2);
    /// TTF value: AArch64 translation tables only.
    pub const TTF_AARCH64: u64 = 0b10;
    /// STALL_MODEL value: stalling not supported.
    pub const STALL_MODEL_NONE: u64 = 0b01;
}

/// SMMU_IDR1 fields (6.3.2).
pub mod idr1 {
    use crate::regs::Field;
    pub const SIDSIZE: Field = Field::new(0, 6);
    pub const SSIDSIZE: Field = Field::new(6, 5);
    pub const PRIQS: Field = Field::new(11, 5);
    pub const EVTQS: Field = Field::new(16, 5);
    pub const CMDQS: Field = Field::new(21, 5);
}

/// SMMU_IDR3 fields (6.3.4).
pub mod idr3 {
    use crate::regs::Field;
    pub const RIL: Field = Field::bit(10);
    pub const BBML: Field = Field::new(11, 2);
}

/// SMMU_IDR5 fields (6.3.6).
pub mod idr5 {
    use crate::regs::Field;
    pub const OAS: Field = Field::new(0, 3);
    pub const GRAN4K: Field = Field::bit(4);
    pub const GRAN16K: Field = Field::bit(5);
    pub const GRAN64K: Field = Field::bit(6);
    pub const VAX: Field = Field::new(10, 2);
}

/// SMMU_CR0 / SMMU_CR0ACK fields (6.3.9, 6.3.10).
pub mod cr0 {
    use crate::regs::Field;
    pub const SMMUEN: Field = Field::bit(0);
    pub const PRIQEN: Field = Field::bit(1);
    pub const EVTQEN: Field = Field::bit(2);
    pub const CMDQEN: Field = Field::bit(3);
    pub const ATSCHK: Field = Field::bit(4);
}

/// SMMU_CR1 fields (6.3.11): table and queue cacheability/shareability.
/// The model keeps them for read-back only; a VMM's memory is coherent.
pub mod cr1 {
    use crate::regs::Field;
    pub const ALL: Field = Field::new(0, 12);
}

/// SMMU_CR2 fields (6.3.12). E2H is RES0 because IDR0.HYP = 0.
pub mod cr2 {
    use crate::regs::Field;
    pub const RECINVSID: Field = Field::bit(1);
    pub const PTM: Field = Field::bit(2);
}

/// SMMU_GBPA fields (6.3.14).
pub mod gbpa {
    use crate::regs::Field;
    pub const MEMATTR: Field = Field::new(0, 4);
    pub const MTCFG: Field = Field::bit(4);
    pub const ALLOCCFG: Field = Field::new(8, 4);
    pub const SHCFG: Field = Field::new(12, 2);
    pub const PRIVCFG: Field = Field::new(16, 2);
    pub const INSTCFG: Field = Field::new(18, 2);
    pub const ABORT: Field = Field::bit(20);
    pub const UPDATE: Field = Field::bit(31);
    /// Power-on value: SHCFG = 0b01 (use incoming shareability), no abort.
    pub const RESET: u64 = SHCFG.make(0b01);
}

/// SMMU_IRQ_CTRL / SMMU_IRQ_CTRLACK fields (6.3.16, 6.3.17).
pub mod irq_ctrl {
    use crate::regs::Field;
    pub const GERROR_IRQEN: Field = Field::bit(0);
    pub const PRIQ_IRQEN: Field = Field::bit(1);
    pub const EVENTQ_IRQEN: Field = Field::bit(2);
}

/// SMMU_GERROR / SMMU_GERRORN fields (6.3.18, 6.3.19). An error is active
/// while its GERROR bit differs from the same GERRORN bit.
pub mod gerror {
    use crate::regs::Field;
    pub const CMDQ_ERR: Field = Field::bit(0);
    pub const EVTQ_ABT_ERR: Field = Field::bit(2);
    pub const PRIQ_ABT_ERR: Field = Field::bit(3);
    pub const MSI_CMDQ_ABT_ERR: Field = Field::bit(4);
    pub const MSI_EVTQ_ABT_ERR: Field = Field::bit(5);
    pub const MSI_PRIQ_ABT_ERR: Field = Field::bit(6);
    pub const MSI_GERROR_ABT_ERR: Field = Field::bit(7);
    pub const SFM_ERR: Field = Field::bit(8);
    /// Every defined error bit.
    pub const ALL: u64 = CMDQ_ERR.mask()
        | EVTQ_ABT_ERR.mask()
        | PRIQ_ABT_ERR.mask()
        | MSI_CMDQ_ABT_ERR.mask()
        | MSI_EVTQ_ABT_ERR.mask()
        | MSI_PRIQ_ABT_ERR.mask()
        | MSI_GERROR_ABT_ERR.mask()
        | SFM_ERR.mask();
}

/// SMMU_*_IRQ_CFG0/1/2 fields (6.3.20-6.3.22, 6.3.32-6.3.34).
pub mod irq_cfg {
    use crate::regs::Field;
    pub const ADDR: Field = Field::new(2, 50);
    pub const DATA: Field = Field::new(0, 32);
    pub const MEMATTR: Field = Field::new(0, 4);
    pub const SH: Field = Field::new(4, 2);
}

/// SMMU_STRTAB_BASE / SMMU_STRTAB_BASE_CFG fields (6.3.23, 6.3.24).
pub mod strtab {
    use crate::regs::Field;
    pub const ADDR: Field = Field::new(6, 46);
    pub const RA: Field = Field::bit(62);
    pub const LOG2SIZE: Field = Field::new(0, 6);
    pub const SPLIT: Field = Field::new(6, 5);
    pub const FMT: Field = Field::new(16, 2);
    /// FMT value: linear stream table.
    pub const FMT_LINEAR: u64 = 0;
    /// FMT value: two-level stream table.
    pub const FMT_2LVL: u64 = 1;
}

/// SMMU_CMDQ_BASE / SMMU_EVENTQ_BASE fields (6.3.25, 6.3.28).
pub mod qbase {
    use crate::regs::Field;
    pub const LOG2SIZE: Field = Field::new(0, 5);
    pub const ADDR: Field = Field::new(5, 47);
    /// RA (CMDQ) / WA (EVTQ) allocation hint.
    pub const ALLOC_HINT: Field = Field::bit(62);
}

/// SMMU_CMDQ_PROD / SMMU_CMDQ_CONS fields (6.3.26, 6.3.27).
pub mod cmdq {
    use crate::regs::Field;
    /// WR (PROD) / RD (CONS): index plus wrap flag.
    pub const PTR: Field = Field::new(0, 20);
    pub const ERR: Field = Field::new(24, 7);
}

/// SMMU_EVENTQ_PROD / SMMU_EVENTQ_CONS fields (6.3.29, 6.3.30).
pub mod evtq {
    use crate::regs::Field;
    /// WR (PROD) / RD (CONS): index plus wrap flag.
    pub const PTR: Field = Field::new(0, 20);
    /// OVFLG (PROD) / OVACKFLG (CONS).
    pub const OVFLG: Field = Field::bit(31);
}

/// The registers of the model, in window order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    Idr0,
    Idr1,
    Idr2,
    Idr3,
    Idr4,
    Idr5,
    Iidr,
    Aidr,
    Cr0,
    Cr0Ack,
    Cr1,
    Cr2,
    Statusr,
    Gbpa,
    Agbpa,
    IrqCtrl,
    IrqCtrlAck,
    Gerror,
    Gerrorn,
    GerrorIrqCfg0,
    GerrorIrqCfg1,
    GerrorIrqCfg2,
    StrtabBase,
    StrtabBaseCfg,
    CmdqBase,
    CmdqProd,
    CmdqCons,
    EvtqBase,
    EvtqIrqCfg0,
    EvtqIrqCfg1,
    EvtqIrqCfg2,
    PriqBase,
    PriqIrqCfg0,
    PriqIrqCfg1,
    PriqIrqCfg2,
    EvtqProd,
    EvtqCons,
    PriqProd,
    PriqCons,
}

impl Reg {
    /// Every register, for offset lookup.
    pub const ALL: [Reg; 39] = [
        Reg::Idr0,
        Reg::Idr1,
        Reg::Idr2,
        Reg::Idr3,
        Reg::Idr4,
        Reg::Idr5,
        Reg::Iidr,
        Reg::Aidr,
        Reg::Cr0,
        Reg::Cr0Ack,
        Reg::Cr1,
        Reg::Cr2,
        Reg::Statusr,
        Reg::Gbpa,
        Reg::Agbpa,
        Reg::IrqCtrl,
        Reg::IrqCtrlAck,
        Reg::Gerror,
        Reg::Gerrorn,
        Reg::GerrorIrqCfg0,
        Reg::GerrorIrqCfg1,
        Reg::GerrorIrqCfg2,
        Reg::StrtabBase,
        Reg::StrtabBaseCfg,
        Reg::CmdqBase,
        Reg::CmdqProd,
        Reg::CmdqCons,
        Reg::EvtqBase,
        Reg::EvtqIrqCfg0,
        Reg::EvtqIrqCfg1,
        Reg::EvtqIrqCfg2,
        Reg::PriqBase,
        Reg::PriqIrqCfg0,
        Reg::PriqIrqCfg1,
        Reg::PriqIrqCfg2,
        Reg::EvtqProd,
        Reg::EvtqCons,
        Reg::PriqProd,
        Reg::PriqCons,
    ];

    /// The register's declaration (offset, name, width, access, writable bits).
    pub const fn decl(self) -> Register {
        use Access::{RazWi, Ro, Rw};
        match self {
            Reg::Idr0 => Register::r32(0x00, "IDR0", Ro, 0),
            Reg::Idr1 => Register::r32(0x04, "IDR1", Ro, 0),
            Reg::Idr2 => Register::r32(0x08, "IDR2", Ro, 0),
            Reg::Idr3 => Register::r32(0x0c, "IDR3", Ro, 0),
            Reg::Idr4 => Register::r32(0x10, "IDR4", Ro, 0),
            Reg::Idr5 => Register::r32(0x14, "IDR5", Ro, 0),
            Reg::Iidr => Register::r32(0x18, "IIDR", Ro, 0),
            Reg::Aidr => Register::r32(0x1c, "AIDR", Ro, 0),
            // PRIQEN is RES0 (no PRI); VMW is RES0 (IDR0.VMW = 0).
            Reg::Cr0 => Register::r32(
                0x20,
                "CR0",
                Rw,
                cr0::SMMUEN.mask() | cr0::EVTQEN.mask() | cr0::CMDQEN.mask() | cr0::ATSCHK.mask(),
            ),
            Reg::Cr0Ack => Register::r32(0x24, "CR0ACK", Ro, 0),
            Reg::Cr1 => Register::r32(0x28, "CR1", Rw, cr1::ALL.mask()),
            Reg::Cr2 => Register::r32(0x2c, "CR2", Rw, cr2::RECINVSID.mask() | cr2::PTM.mask()),
            Reg::Statusr => Register::r32(0x40, "STATUSR", RazWi, 0),
            Reg::Gbpa => Register::r32(
                0x44,
                "GBPA",
                Rw,
                gbpa::MEMATTR.mask()
                    | gbpa::MTCFG.mask()
                    | gbpa::ALLOCCFG.mask()
                    | gbpa::SHCFG.mask()
                    | gbpa::PRIVCFG.mask()
                    | gbpa::INSTCFG.mask()
                    | gbpa::ABORT.mask()
                    | gbpa::UPDATE.mask(),
            ),
            Reg::Agbpa => Register::r32(0x48, "AGBPA", RazWi, 0),
            Reg::IrqCtrl => Register::r32(
                0x50,
                "IRQ_CTRL",
                Rw,
                irq_ctrl::GERROR_IRQEN.mask() | irq_ctrl::EVENTQ_IRQEN.mask(),
            ),
            Reg::IrqCtrlAck => Register::r32(0x54, "IRQ_CTRLACK", Ro, 0),
            Reg::Gerror => Register::r32(0x60, "GERROR", Ro, 0),
            Reg::Gerrorn => Register::r32(0x64, "GERRORN", Rw, gerror::ALL),
            Reg::GerrorIrqCfg0 => Register::r64(0x68, "GERROR_IRQ_CFG0", Rw, irq_cfg::ADDR.mask()),
            Reg::GerrorIrqCfg1 => Register::r32(0x70, "GERROR_IRQ_CFG1", Rw, irq_cfg::DATA.mask()),
            Reg::GerrorIrqCfg2 => Register::r32(
                0x74,
                "GERROR_IRQ_CFG2",
                Rw,
                irq_cfg::MEMATTR.mask() | irq_cfg::SH.mask(),
            ),
            Reg::StrtabBase => Register::r64(
                0x80,
                "STRTAB_BASE",
                Rw,
                strtab::ADDR.mask() | strtab::RA.mask(),
            ),
            Reg::StrtabBaseCfg => Register::r32(
                0x88,
                "STRTAB_BASE_CFG",
                Rw,
                strtab::LOG2SIZE.mask() | strtab::SPLIT.mask() | strtab::FMT.mask(),
            ),
            Reg::CmdqBase => Register::r64(
                0x90,
                "CMDQ_BASE",
                Rw,
                qbase::LOG2SIZE.mask() | qbase::ADDR.mask() | qbase::ALLOC_HINT.mask(),
            ),
            Reg::CmdqProd => Register::r32(0x98, "CMDQ_PROD", Rw, cmdq::PTR.mask()),
            // ERR is written by the SMMU only.
            Reg::CmdqCons => Register::r32(0x9c, "CMDQ_CONS", Rw, cmdq::PTR.mask()),
            Reg::EvtqBase => Register::r64(
                0xa0,
                "EVENTQ_BASE",
                Rw,
                qbase::LOG2SIZE.mask() | qbase::ADDR.mask() | qbase::ALLOC_HINT.mask(),
            ),
            Reg::EvtqIrqCfg0 => Register::r64(0xb0, "EVENTQ_IRQ_CFG0", Rw, irq_cfg::ADDR.mask()),
            Reg::EvtqIrqCfg1 => Register::r32(0xb8, "EVENTQ_IRQ_CFG1", Rw, irq_cfg::DATA.mask()),
            Reg::EvtqIrqCfg2 => Register::r32(
                0xbc,
                "EVENTQ_IRQ_CFG2",
                Rw,
                irq_cfg::MEMATTR.mask() | irq_cfg::SH.mask(),
            ),
            Reg::PriqBase => Register::r64(0xc0, "PRIQ_BASE", RazWi, 0),
            Reg::PriqIrqCfg0 => Register::r64(0xd0, "PRIQ_IRQ_CFG0", RazWi, 0),
            Reg::PriqIrqCfg1 => Register::r32(0xd8, "PRIQ_IRQ_CFG1", RazWi, 0),
            Reg::PriqIrqCfg2 => Register::r32(0xdc, "PRIQ_IRQ_CFG2", RazWi, 0),
            // The SMMU owns EVENTQ_PROD except for its initial value, which
            // software sets while EVTQEN = 0.
            Reg::EvtqProd => Register::r32(PAGE1 + 0xa8, "EVENTQ_PROD", Rw, evtq::PTR.mask()),
            Reg::EvtqCons => Register::r32(
                PAGE1 + 0xac,
                "EVENTQ_CONS",
                Rw,
                evtq::PTR.mask() | evtq::OVFLG.mask(),
            ),
            Reg::PriqProd => Register::r32(PAGE1 + 0xc8, "PRIQ_PROD", RazWi, 0),
            Reg::PriqCons => Register::r32(PAGE1 + 0xcc, "PRIQ_CONS", RazWi, 0),
        }
    }

    /// The register an access of `len` bytes at `offset` targets, with the
    /// byte offset inside that register. Allowed: a 4-byte access to any
    /// register (both halves of a 64-bit one), an 8-byte access to a 64-bit
    /// register at its own offset. Anything else is `None` (RAZ/WI).
    pub fn find(offset: u64, len: usize) -> Option<(Reg, u64)> {
        Reg::ALL.iter().find_map(|&reg| {
            let decl = reg.decl();
            let inside = offset.checked_sub(decl.offset)?;
            let fits = match len {
                4 => inside % 4 == 0 && inside < u64::from(decl.size),
                8 => inside == 0 && decl.size == 8,
                _ => false,
            };
            fits.then_some((reg, inside))
        })
    }
}

/// Power-on values of the guest-writable registers that do not reset to 0.
pub const fn reset_value(reg: Reg) -> u64 {
    match reg {
        Reg::Gbpa => gbpa::RESET,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_offsets_match_the_spec_page_layout() {
        assert_eq!(Reg::Cr0.decl().offset, 0x20);
        assert_eq!(Reg::Gerrorn.decl().offset, 0x64);
        assert_eq!(Reg::StrtabBaseCfg.decl().offset, 0x88);
        assert_eq!(Reg::CmdqCons.decl().offset, 0x9c);
        assert_eq!(Reg::EvtqProd.decl().offset, 0x100a8);
        assert_eq!(Reg::EvtqCons.decl().offset, 0x100ac);
    }

    #[test]
    fn no_two_registers_overlap() {
        for (i, a) in Reg::ALL.iter().enumerate() {
            for b in Reg::ALL.iter().skip(i + 1) {
                let (a, b) = (a.decl(), b.decl());
                let disjoint = a.offset + u64::from(a.size) <= b.offset
                    || b.offset + u64::from(b.size) <= a.offset;
                assert!(disjoint, "{} overlaps {}", a.name, b.name);
            }
        }
    }

    #[test]
    fn find_accepts_word_halves_and_whole_doublewords_only() {
        assert_eq!(Reg::find(0x80, 8), Some((Reg::StrtabBase, 0)));
        assert_eq!(Reg::find(0x84, 4), Some((Reg::StrtabBase, 4)));
        assert_eq!(Reg::find(0x84, 8), None);
        assert_eq!(Reg::find(0x20, 8), None);
        assert_eq!(Reg::find(0x22, 4), None);
        assert_eq!(Reg::find(0x20, 2), None);
        assert_eq!(Reg::find(0x30, 4), None);
        assert_eq!(Reg::find(0x100a8, 4), Some((Reg::EvtqProd, 0)));
        assert_eq!(Reg::find(0xa8, 4), None);
    }

    #[test]
    fn writable_masks_are_derived_from_fields() {
        assert_eq!(Reg::Cr0.decl().writable, 0b1_1101);
        assert_eq!(Reg::Gerrorn.decl().writable, 0x1fd);
        assert_eq!(Reg::CmdqCons.decl().writable, 0xf_ffff);
        assert_eq!(gbpa::RESET, 0x1000);
        assert_eq!(gbpa::ABORT.mask(), 1 << 20);
    }
}
