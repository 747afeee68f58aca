//! A software walk of the guest's stage-1 translation for one StreamID, for
//! the one address the VMM itself must translate: the MSI doorbell a
//! passthrough function behind the vSMMU is programmed with. The guest
//! writes an IOVA into the function's MSI-X table (its DMA domain maps its
//! ITS doorbell page there); KVM's MSI routes need the doorbell's guest
//! physical address to find the vITS. The device's own DMA is translated
//! by the host SMMU, never by this walk.
//!
//! Implemented: STE Config bypass (identity), abort, S1 translate with a
//! linear or 2-level CD table (SSID 0); a 4 KiB-granule AArch64 table of
//! any start level (T0SZ), table, block and page descriptors. Anything else
//! (16/64 KiB granules, TTB1, an invalid CD or descriptor) is a refusal
//! with the reason, which the caller logs: the vector then stays unrouted,
//! as an MSI write that faults in hardware would be lost.

use vm_memory::{Bytes, GuestAddress};

use super::IdRegisters;
use super::ste::{LookupError, StreamTable, ste0};
use crate::GuestMemory;

/// STE Config values (SMMUv3 5.2).
const CONFIG_ABORT: u64 = 0b000;
const CONFIG_BYPASS: u64 = 0b100;
const CONFIG_S1: u64 = 0b101;
/// STE.S1Fmt: linear CD table, or 2-level with 4 KiB / 64 KiB leaves.
const S1FMT_LINEAR: u64 = 0;
/// CD word 0: T0SZ [5:0], TG0 [7:6], EPD0 [14], V [31]; word 1: TTB0 [51:4].
const CD_T0SZ: u64 = 0x3f;
const CD_TG0_SHIFT: u64 = 6;
const CD_EPD0: u64 = 1 << 14;
const CD_V: u64 = 1 << 31;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const TTB_MASK: u64 = 0x000f_ffff_ffff_fff0;

/// Why the walk found no output address. The vSID is the caller's to name
/// (it asked for it); each variant says where the walk stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    /// The stream table holds no STE for the StreamID.
    #[error("no STE: {0}")]
    Ste(#[source] LookupError),
    /// STE.V is 0.
    #[error("its STE is not valid")]
    SteInvalid,
    /// STE.Config is abort: the function's DMA (and MSI writes) fault.
    #[error("its STE aborts DMA")]
    Abort,
    /// An STE.Config this walk does not translate (stage 2 is the host's).
    #[error("STE config {0:#05b} is not walked")]
    Config(u64),
    /// A table the guest pointed at is outside guest RAM.
    #[error("{what} at {addr:#x} is not in guest RAM")]
    NotInRam {
        /// Which table.
        what: &'static str,
        /// The guest physical address read.
        addr: u64,
    },
    /// A 2-level CD table's descriptor for SSID 0 is not valid.
    #[error("L1 CD descriptor 0 is not valid")]
    L1CdInvalid,
    /// CD.V is 0 or CD.EPD0 disables TTB0.
    #[error("CD at {0:#x} is invalid or has TTB0 disabled")]
    CdInvalid(u64),
    /// CD.TG0 asks for a 16 or 64 KiB granule.
    #[error("only the 4 KiB granule is walked (CD.TG0 {0})")]
    Granule(u64),
    /// The IOVA is wider than the CD's input size (T0SZ).
    #[error("IOVA {iova:#x} is beyond the {bits}-bit input range")]
    OutOfRange {
        /// The address.
        iova: u64,
        /// 64 - T0SZ, clamped to what a 4 KiB granule walks.
        bits: u64,
    },
    /// A translation table entry on the way is invalid.
    #[error("IOVA {iova:#x} is not mapped (level {level} entry {desc:#x})")]
    Unmapped {
        /// The address.
        iova: u64,
        /// The level of the invalid entry.
        level: u64,
        /// The entry as read.
        desc: u64,
    },
}

fn read(mem: &GuestMemory, addr: u64, what: &'static str) -> Result<u64, WalkError> {
    mem.read_obj::<u64>(GuestAddress(addr))
        .map(u64::from_le)
        .map_err(|_| WalkError::NotInRam { what, addr })
}

/// Translate `iova` for StreamID `sid` through the guest's tables.
pub fn translate(
    table: StreamTable,
    idr: &IdRegisters,
    mem: &GuestMemory,
    sid: u32,
    iova: u64,
) -> Result<u64, WalkError> {
    let [w0, _] = table.read_ste(sid, idr, mem).map_err(WalkError::Ste)?;
    if ste0::V.get(w0) == 0 {
        return Err(WalkError::SteInvalid);
    }
    match ste0::CONFIG.get(w0) {
        CONFIG_BYPASS => return Ok(iova),
        CONFIG_ABORT => return Err(WalkError::Abort),
        CONFIG_S1 => {}
        other => return Err(WalkError::Config(other)),
    }
    let ctx = ste0::S1CONTEXTPTR.get(w0) << 6;
    let cd = if ste0::S1CDMAX.get(w0) == 0 || ste0::S1FMT.get(w0) == S1FMT_LINEAR {
        ctx
    } else {
        // 2-level: L1 descriptor 0 (SSID 0): V [0], L2Ptr [51:12].
        let l1 = read(mem, ctx, "L1 CD descriptor")?;
        if l1 & 1 == 0 {
            return Err(WalkError::L1CdInvalid);
        }
        l1 & ADDR_MASK
    };
    let cd0 = read(mem, cd, "CD")?;
    let ttb0 = read(mem, cd + 8, "CD")? & TTB_MASK;
    if cd0 & CD_V == 0 || cd0 & CD_EPD0 != 0 {
        return Err(WalkError::CdInvalid(cd));
    }
    let tg0 = (cd0 >> CD_TG0_SHIFT) & 3;
    if tg0 != 0 {
        return Err(WalkError::Granule(tg0));
    }
    walk_4k(mem, ttb0, cd0 & CD_T0SZ, iova)
}

/// The 4 KiB-granule walk from `ttb` for an input size of 64 - `t0sz` bits.
fn walk_4k(mem: &GuestMemory, ttb: u64, t0sz: u64, iova: u64) -> Result<u64, WalkError> {
    let bits = 64u64.saturating_sub(t0sz).clamp(25, 48);
    if iova >> bits != 0 {
        return Err(WalkError::OutOfRange { iova, bits });
    }
    // Levels resolve 9 bits each above the 12-bit page offset; the last
    // level (3) either has a page or the loop returns an error, so every
    // path out of it returns.
    let levels = (bits - 12).div_ceil(9);
    let mut table = ttb;
    for level in (4 - levels)..4 {
        let shift = 12 + 9 * (3 - level);
        let index = (iova >> shift) & 0x1ff;
        let desc = read(mem, table + index * 8, "translation table entry")?;
        let kind = desc & 3;
        match (kind, level) {
            (0b11, 3) => return Ok((desc & ADDR_MASK) | (iova & 0xfff)),
            (0b11, _) => table = desc & ADDR_MASK,
            (0b01, 1 | 2) => {
                let block = (1u64 << shift) - 1;
                return Ok((desc & ADDR_MASK & !block) | (iova & block));
            }
            _ => return Err(WalkError::Unmapped { iova, level, desc }),
        }
    }
    // Unreachable for levels >= 1 (bits >= 25): level 3 always returns.
    Err(WalkError::Unmapped {
        iova,
        level: 3,
        desc: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smmuv3::idr::{HostSmmuInfo, VsmmuConfig};

    const RAM: u64 = 0x4000_0000;

    fn mem() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(RAM), 0x10_0000)]).unwrap()
    }

    fn put(mem: &GuestMemory, addr: u64, v: u64) {
        mem.write_obj(v.to_le(), GuestAddress(addr)).unwrap();
    }

    fn idr() -> IdRegisters {
        IdRegisters::compose(&HostSmmuInfo::grace_like(), &VsmmuConfig::default()).unwrap()
    }

    /// A linear stream table at RAM with vSID 8's STE pointing at a CD at
    /// RAM+0x1000 whose 48-bit, 4-level table maps IOVA 0xffff_f000 to the
    /// ITS doorbell page 0x0809_0000, and a 2 MiB block at IOVA 0x20_0000.
    fn tables(mem: &GuestMemory, config: u64) -> StreamTable {
        let ste = RAM + 8 * 64;
        put(mem, ste, 1 | (config << 1) | (RAM + 0x1000));
        put(mem, RAM + 0x1000, CD_V | 16); // T0SZ 16: 48-bit, TG0 4 KiB
        put(mem, RAM + 0x1008, RAM + 0x2000);
        // L0[0] -> L1 at +0x3000; L1[3] -> L2 at +0x4000 (IOVA 0xc000_0000..);
        // L2[0x1ff] -> L3 at +0x5000; L3[0x1ff] -> doorbell page.
        put(mem, RAM + 0x2000, (RAM + 0x3000) | 3);
        put(mem, RAM + 0x3000 + 3 * 8, (RAM + 0x4000) | 3);
        put(mem, RAM + 0x4000 + 0x1ff * 8, (RAM + 0x5000) | 3);
        put(mem, RAM + 0x5000 + 0x1ff * 8, 0x0809_0000 | 3);
        // L1[0] -> L2 at +0x6000; L2[1] is a 2 MiB block at RAM.
        put(mem, RAM + 0x3000, (RAM + 0x6000) | 3);
        put(mem, RAM + 0x6000 + 8, RAM | 1);
        StreamTable { base: RAM, cfg: 6 }
    }

    #[test]
    fn pages_blocks_bypass_and_abort() {
        let mem = mem();
        let t = tables(&mem, CONFIG_S1);
        assert_eq!(translate(t, &idr(), &mem, 8, 0xffff_f040), Ok(0x0809_0040));
        assert_eq!(translate(t, &idr(), &mem, 8, 0x20_1234), Ok(RAM + 0x1234));
        assert!(matches!(
            translate(t, &idr(), &mem, 8, 0xffff_e040),
            Err(WalkError::Unmapped { level: 3, .. })
        ));
        assert_eq!(
            translate(t, &idr(), &mem, 8, 1 << 48),
            Err(WalkError::OutOfRange {
                iova: 1 << 48,
                bits: 48
            })
        );
        let t = tables(&mem, CONFIG_BYPASS);
        assert_eq!(translate(t, &idr(), &mem, 8, 0x1234), Ok(0x1234));
        let t = tables(&mem, CONFIG_ABORT);
        assert_eq!(translate(t, &idr(), &mem, 8, 0x1234), Err(WalkError::Abort));
        assert_eq!(translate(t, &idr(), &mem, 9, 0), Err(WalkError::SteInvalid));
    }

    #[test]
    fn a_cd_outside_ram_or_invalid_is_refused() {
        let mem = mem();
        let t = tables(&mem, CONFIG_S1);
        put(&mem, RAM + 0x1000, 16);
        assert!(matches!(
            translate(t, &idr(), &mem, 8, 0),
            Err(WalkError::CdInvalid(_))
        ));
        put(&mem, RAM + 8 * 64, 1 | (CONFIG_S1 << 1) | 0x1000);
        assert!(matches!(
            translate(t, &idr(), &mem, 8, 0),
            Err(WalkError::NotInRam { what: "CD", .. })
        ));
    }
}
