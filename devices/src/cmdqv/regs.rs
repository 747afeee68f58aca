//! Tegra241 CMDQ-V register map, declared once.
//!
//! Offsets and fields follow the Linux driver
//! (drivers/iommu/arm/arm-smmu-v3/tegra241-cmdqv.c, "CMDQV register page
//! base and size defines") and QEMU's hw/arm/tegra241-cmdqv.h for the fields
//! the kernel does not name (VCMDQ GERROR bits). Every page is 64 KiB; all
//! offsets here are relative to the CMD-QV window unless noted.

use crate::regs::{Access, Field, Register};

/// Size of one CMD-QV page.
pub const PAGE_SIZE: u64 = 0x1_0000;
/// Size of the guest-visible window: config page, global VCMDQ page0/page1,
/// VINTF0 page0/page1 (one VINTF exposed to the VM).
pub const WINDOW_SIZE: u64 = 5 * PAGE_SIZE;

/// Config page (global registers + VINTF blocks).
pub const CONFIG_PAGE: u64 = 0x0_0000;
/// Global VCMDQ page0 (alias of the VINTF0 logical VCMDQs in this model).
pub const GLOBAL_PAGE0: u64 = 0x1_0000;
/// Global VCMDQ page1 (alias).
pub const GLOBAL_PAGE1: u64 = 0x2_0000;
/// VINTF0 page0: the logical VCMDQ control page (host page0 when mapped).
pub const VINTF0_PAGE0: u64 = 0x3_0000;
/// VINTF0 page1: the logical VCMDQ base page (always trapped).
pub const VINTF0_PAGE1: u64 = 0x4_0000;
/// Stride of one VCMDQ slot inside a page0/page1.
pub const VCMDQ_STRIDE: u64 = 0x80;

/// Largest number of logical VCMDQs per VINTF the register map can hold
/// (CMDQ_ALLOC_MAP LVCMDQ field is 7 bits; LVCMDQ_ERR_MAP is 128 bits).
pub const MAX_LVCMDQS: usize = 128;
/// Largest number of SID_MATCH/SID_REPLACE pairs per VINTF (0x40..0x7C).
pub const MAX_SID_SLOTS: usize = 16;

// ---- Global registers (kernel §2.2) ----

/// CONFIG: CMDQV_EN enables the whole extension; the other fields (QEMU
/// tegra241-cmdqv.h) are stored and read back, with no effect on the model.
pub const CONFIG: Register = Register::r32(
    0x0,
    "CONFIG",
    Access::Rw,
    CONFIG_CMDQV_EN.mask()
        | CONFIG_PER_CMD_OFFSET.mask()
        | CONFIG_MAX_CLK_BATCH.mask()
        | CONFIG_MAX_CMD_BATCH.mask()
        | CONFIG_CONS_DRAM_EN.mask(),
);
/// CONFIG.CMDQV_EN.
pub const CONFIG_CMDQV_EN: Field = Field::bit(0);
/// CONFIG.CMDQV_PER_CMD_OFFSET.
pub const CONFIG_PER_CMD_OFFSET: Field = Field::new(1, 3);
/// CONFIG.CMDQ_MAX_CLK_BATCH.
pub const CONFIG_MAX_CLK_BATCH: Field = Field::new(4, 8);
/// CONFIG.CMDQ_MAX_CMD_BATCH.
pub const CONFIG_MAX_CMD_BATCH: Field = Field::new(12, 8);
/// CONFIG.CONS_DRAM_EN (CONS_INDX_BASE write-back; stored only).
pub const CONFIG_CONS_DRAM_EN: Field = Field::bit(20);
/// CONFIG's reset value, QEMU's V_CONFIG_RESET (0x00020083): CMDQV_EN set,
/// PER_CMD_OFFSET 1, MAX_CLK_BATCH 8, MAX_CMD_BATCH 0x20. Linux's reset
/// reads CONFIG and writes it back with only CMDQV_EN changed.
pub const CONFIG_RESET: u32 = (CONFIG_CMDQV_EN.make(1)
    | CONFIG_PER_CMD_OFFSET.make(1)
    | CONFIG_MAX_CLK_BATCH.make(8)
    | CONFIG_MAX_CMD_BATCH.make(0x20)) as u32;

/// PARAM: composed from the host's CMD-QV info.
pub const PARAM: Register = Register::r32(0x4, "PARAM", Access::Ro, 0);
/// PARAM.CMDQV_VER.
pub const PARAM_VER: Field = Field::new(0, 4);
/// PARAM.NUM_VCMDQ_LOG2 (global VCMDQs).
pub const PARAM_NUM_VCMDQ_LOG2: Field = Field::new(4, 4);
/// PARAM.NUM_VINTF_LOG2 (always 0: one VINTF per VM).
pub const PARAM_NUM_VINTF_LOG2: Field = Field::new(8, 4);
/// PARAM.NUM_SID_PER_VM_LOG2.
pub const PARAM_NUM_SID_LOG2: Field = Field::new(12, 4);

/// STATUS: CMDQV_ENABLED follows CONFIG.CMDQV_EN.
pub const STATUS: Register = Register::r32(0x8, "STATUS", Access::Ro, 0);
/// STATUS.CMDQV_ENABLED.
pub const STATUS_CMDQV_ENABLED: Field = Field::bit(0);

/// VI_ERR_MAP: 64-bit map of VINTFs in error; not 8-byte aligned, so the
/// driver reads two 32-bit halves.
pub const VI_ERR_MAP: Register = Register::r64(0x14, "VI_ERR_MAP", Access::Ro, 0);
/// VI_INT_MASK: 64-bit, a set bit masks that VINTF's error interrupt.
pub const VI_INT_MASK: Register = Register::r64(0x1c, "VI_INT_MASK", Access::Rw, u64::MAX);
/// CMDQ_ERR_MAP(0): first of four 32-bit words of the global VCMDQ error map.
pub const CMDQ_ERR_MAP0: Register = Register::r32(0x24, "CMDQ_ERR_MAP", Access::Ro, 0);
/// Number of CMDQ_ERR_MAP words.
pub const CMDQ_ERR_MAP_WORDS: u64 = 4;

/// CMDQ_ALLOC_MAP(0): first per-global-VCMDQ allocation entry (stride 4).
pub const CMDQ_ALLOC_MAP0: Register = Register::r32(
    0x200,
    "CMDQ_ALLOC_MAP",
    Access::Rw,
    ALLOC_MAP_ALLOCATED.mask() | ALLOC_MAP_LVCMDQ.mask() | ALLOC_MAP_VINTF.mask(),
);
/// CMDQ_ALLOC_MAP.ALLOCATED ("mapped").
pub const ALLOC_MAP_ALLOCATED: Field = Field::bit(0);
/// CMDQ_ALLOC_MAP.LVCMDQ: logical index within the VINTF.
pub const ALLOC_MAP_LVCMDQ: Field = Field::new(1, 7);
/// CMDQ_ALLOC_MAP.VIRT_INTF_INDX.
pub const ALLOC_MAP_VINTF: Field = Field::new(15, 6);

// ---- VINTF0 block (kernel §2.3), base 0x1000 ----

/// VINTF0 CONFIG: EN, VMID; HYP_OWN is wired to 0 for a guest.
pub const VINTF_CONFIG: Register = Register::r32(
    0x1000,
    "VINTF0_CONFIG",
    Access::Rw,
    VINTF_CONFIG_EN.mask() | VINTF_CONFIG_VMID.mask(),
);
/// VINTF CONFIG.ENABLE.
pub const VINTF_CONFIG_EN: Field = Field::bit(0);
/// VINTF CONFIG.VMID.
pub const VINTF_CONFIG_VMID: Field = Field::new(1, 16);
/// VINTF CONFIG.HYP_OWN: not in the writable mask, so it reads 0 (guest).
pub const VINTF_CONFIG_HYP_OWN: Field = Field::bit(17);

/// VINTF0 STATUS: ENABLED follows CONFIG.EN; status code [3:1] stays 0.
pub const VINTF_STATUS: Register = Register::r32(0x1004, "VINTF0_STATUS", Access::Ro, 0);
/// VINTF STATUS.ENABLE_OK.
pub const VINTF_STATUS_ENABLED: Field = Field::bit(0);

/// VINTF0 SID_MATCH(0) (stride 4): read-back of the VM's vDEVICEs.
pub const SID_MATCH0: Register = Register::r32(0x1040, "VINTF0_SID_MATCH", Access::Ro, 0);
/// SID_MATCH.ENABLE.
pub const SID_MATCH_ENABLE: Field = Field::bit(0);
/// SID_MATCH.VIRT_SID (newest kernel: 20 bits).
pub const SID_MATCH_VSID: Field = Field::new(1, 20);
/// VINTF0 SID_REPLACE(0) (stride 4).
pub const SID_REPLACE0: Register = Register::r32(0x1080, "VINTF0_SID_REPLACE", Access::Ro, 0);
/// SID_REPLACE.PHYS_SID (this model shows the vSID here, see the module doc).
pub const SID_REPLACE_SID: Field = Field::new(0, 20);

/// VINTF0 LVCMDQ_ERR_MAP(0) (64-bit, stride 8, two of them).
pub const LVCMDQ_ERR_MAP0: Register = Register::r64(0x10c0, "VINTF0_LVCMDQ_ERR_MAP", Access::Ro, 0);
/// Number of LVCMDQ_ERR_MAP 64-bit words.
pub const LVCMDQ_ERR_MAP_WORDS: u64 = 2;

// ---- Page0 slot (kernel §2.4), offsets within one 0x80 slot ----

/// VCMDQ CONS: RD index and ERR. Software sets the whole register while
/// the queue is disabled (Linux's queue deinit writes 0; QEMU keeps every
/// bit it is given), which is how the model carries a pending CONS.ERR into
/// a re-allocated HW queue; while enabled, the hardware owns it.
pub const VCMDQ_CONS: Register = Register::r32(
    0x00,
    "VCMDQ_CONS",
    Access::Rw,
    VCMDQ_CONS_RD.mask() | VCMDQ_CONS_ERR.mask(),
);
/// CONS read index (index + wrap).
pub const VCMDQ_CONS_RD: Field = Field::new(0, 20);
/// CONS.ERR: the SMMU CERROR code of the command at CONS.
pub const VCMDQ_CONS_ERR: Field = Field::new(24, 7);
/// VCMDQ PROD.
pub const VCMDQ_PROD: Register =
    Register::r32(0x04, "VCMDQ_PROD", Access::Rw, VCMDQ_PROD_WR.mask());
/// PROD write index (index + wrap).
pub const VCMDQ_PROD_WR: Field = Field::new(0, 20);
/// VCMDQ CONFIG.
pub const VCMDQ_CONFIG: Register =
    Register::r32(0x08, "VCMDQ_CONFIG", Access::Rw, VCMDQ_CONFIG_EN.mask());
/// CONFIG.CMDQ_EN.
pub const VCMDQ_CONFIG_EN: Field = Field::bit(0);
/// VCMDQ STATUS.
pub const VCMDQ_STATUS: Register = Register::r32(0x0c, "VCMDQ_STATUS", Access::Ro, 0);
/// STATUS.CMDQ_EN_OK.
pub const VCMDQ_STATUS_ENABLED: Field = Field::bit(0);
/// VCMDQ GERROR: an error is active while a bit differs from GERRORN.
pub const VCMDQ_GERROR: Register = Register::r32(0x10, "VCMDQ_GERROR", Access::Ro, 0);
/// GERROR.CMDQ_ERR: command error, CONS.ERR says which (QEMU tegra241-cmdqv.h).
pub const GERROR_CMDQ_ERR: Field = Field::bit(0);
/// GERROR.CONS_DRAM_WR_ABT_ERR (never raised by this model).
pub const GERROR_CONS_DRAM_WR_ABT_ERR: Field = Field::bit(1);
/// GERROR.CMDQ_INIT_ERR: the queue could not be set up (bad BASE).
pub const GERROR_CMDQ_INIT_ERR: Field = Field::bit(2);
/// VCMDQ GERRORN: the guest acknowledges by copying GERROR here.
pub const VCMDQ_GERRORN: Register = Register::r32(
    0x14,
    "VCMDQ_GERRORN",
    Access::Rw,
    GERROR_CMDQ_ERR.mask() | GERROR_CONS_DRAM_WR_ABT_ERR.mask() | GERROR_CMDQ_INIT_ERR.mask(),
);
/// Every page0 register of a slot, in offset order.
pub const PAGE0_REGS: [Register; 6] = [
    VCMDQ_CONS,
    VCMDQ_PROD,
    VCMDQ_CONFIG,
    VCMDQ_STATUS,
    VCMDQ_GERROR,
    VCMDQ_GERRORN,
];

// ---- Page1 slot ----

/// VCMDQ BASE (64-bit): ADDR [47:5] and LOG2SIZE [4:0].
pub const VCMDQ_BASE: Register = Register::r64(
    0x00,
    "VCMDQ_BASE",
    Access::Rw,
    VCMDQ_BASE_ADDR.mask() | VCMDQ_BASE_LOG2SIZE.mask(),
);
/// BASE.ADDR, kept in place (the queue GPA is `BASE & ADDR.mask()`).
pub const VCMDQ_BASE_ADDR: Field = Field::new(5, 43);
/// BASE.LOG2SIZE: log2 of the number of 16-byte entries.
pub const VCMDQ_BASE_LOG2SIZE: Field = Field::new(0, 5);
/// VCMDQ CONS_INDX_BASE (64-bit): stored only.
pub const VCMDQ_CONS_INDX_BASE: Register = Register::r64(
    0x08,
    "VCMDQ_CONS_INDX_BASE",
    Access::Rw,
    VCMDQ_BASE_ADDR.mask(),
);

/// Look up a page0 register by its offset inside a slot.
pub fn page0_reg(offset_in_slot: u64) -> Option<Register> {
    PAGE0_REGS
        .iter()
        .copied()
        .find(|r| r.offset == offset_in_slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vintf_config_hyp_own_is_not_writable() {
        let written = VINTF_CONFIG.apply_write(0, u64::from(u32::MAX));
        assert!(!VINTF_CONFIG_HYP_OWN.is_set(written));
        assert!(VINTF_CONFIG_EN.is_set(written));
        assert_eq!(VINTF_CONFIG_VMID.get(written), 0xffff);
    }

    #[test]
    fn config_reset_is_qemus_value_and_every_field_is_writable() {
        assert_eq!(CONFIG_RESET, 0x0002_0083);
        assert_eq!(CONFIG.writable, 0x001f_ffff);
    }

    #[test]
    fn base_fields_cover_bits_47_to_0() {
        assert_eq!(VCMDQ_BASE.writable, 0x0000_ffff_ffff_ffff);
    }

    #[test]
    fn page0_registers_are_found_by_slot_offset() {
        assert_eq!(page0_reg(0x14).map(|r| r.name), Some("VCMDQ_GERRORN"));
        assert_eq!(page0_reg(0x18), None);
    }
}
