//! The CMD-QV config page: global registers (CONFIG, PARAM, STATUS, error
//! maps, CMDQ_ALLOC_MAP) and the VINTF0 block (CONFIG, STATUS, SID_MATCH /
//! SID_REPLACE, LVCMDQ_ERR_MAP). Pure register semantics; the model in
//! `mod.rs` acts on the [`ConfigEffect`] a write returns.

use super::regs::*;
use crate::regs::{Register, extract_read, merge_write};

/// Which config-page register an offset falls in, with its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Config,
    Param,
    Status,
    ViErrMap,
    ViIntMask,
    CmdqErrMap(usize),
    AllocMap(usize),
    VintfConfig,
    VintfStatus,
    SidMatch(usize),
    SidReplace(usize),
    LvcmdqErrMap(usize),
}

/// What a config-page write changed that the model must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigEffect {
    /// Nothing outside the register file.
    None,
    /// CONFIG.CMDQV_EN changed to the given value.
    CmdqvEnable(bool),
    /// VINTF0 CONFIG.EN changed to the given value.
    VintfEnable(bool),
    /// CMDQ_ALLOC_MAP(q) changed.
    AllocMap(usize),
}

/// The config page's register file.
#[derive(Clone, Debug)]
pub struct ConfigPage {
    param: u32,
    config: u32,
    vi_int_mask: u64,
    alloc_map: Vec<u32>,
    vintf_config: u32,
    /// Guest-visible LVCMDQ error map (bit n = LVCMDQ n in error).
    pub lvcmdq_err_map: u128,
}

impl ConfigPage {
    /// A reset config page for `num_lvcmdqs` queues with the given PARAM:
    /// CONFIG at its reset value (CMDQV_EN set, so STATUS reads enabled),
    /// VINTF0 disabled, nothing mapped.
    pub fn new(param: u32, num_lvcmdqs: usize) -> Self {
        ConfigPage {
            param,
            config: CONFIG_RESET,
            vi_int_mask: 0,
            alloc_map: vec![0; num_lvcmdqs.min(MAX_LVCMDQS)],
            vintf_config: 0,
            lvcmdq_err_map: 0,
        }
    }

    /// CONFIG.CMDQV_EN (STATUS.CMDQV_ENABLED follows it).
    pub fn cmdqv_enabled(&self) -> bool {
        CONFIG_CMDQV_EN.is_set(u64::from(self.config))
    }

    /// VINTF0 CONFIG.EN (VINTF0 STATUS.ENABLED follows it).
    pub fn vintf_enabled(&self) -> bool {
        VINTF_CONFIG_EN.is_set(u64::from(self.vintf_config))
    }

    /// True when CMDQ_ALLOC_MAP(q) maps global VCMDQ q to VINTF0's LVCMDQ q
    /// (the only mapping this model supports: global q = VINTF0 lidx q).
    pub fn lvcmdq_mapped(&self, q: usize) -> bool {
        self.alloc_map.get(q).is_some_and(|entry| {
            let entry = u64::from(*entry);
            ALLOC_MAP_ALLOCATED.is_set(entry)
                && ALLOC_MAP_VINTF.get(entry) == 0
                && ALLOC_MAP_LVCMDQ.get(entry) == q as u64
        })
    }

    /// True when the guest masked VINTF0's error interrupt.
    pub fn vintf0_irq_masked(&self) -> bool {
        self.vi_int_mask & 1 != 0
    }

    /// VI_ERR_MAP: bit 0 while any LVCMDQ of VINTF0 is in error.
    pub fn vi_err_map(&self) -> u64 {
        u64::from(self.lvcmdq_err_map != 0)
    }

    fn locate(&self, offset: u64) -> Option<(Slot, Register)> {
        let within = |reg: Register, stride: u64, count: u64| -> Option<usize> {
            let rel = offset.checked_sub(reg.offset)?;
            let index = rel / stride;
            (index < count && rel % stride < u64::from(reg.size)).then_some(index as usize)
        };
        let in_reg = |reg: Register| within(reg, u64::from(reg.size), 1).is_some();
        let slot = if in_reg(CONFIG) {
            (Slot::Config, CONFIG)
        } else if in_reg(PARAM) {
            (Slot::Param, PARAM)
        } else if in_reg(STATUS) {
            (Slot::Status, STATUS)
        } else if in_reg(VI_ERR_MAP) {
            (Slot::ViErrMap, VI_ERR_MAP)
        } else if in_reg(VI_INT_MASK) {
            (Slot::ViIntMask, VI_INT_MASK)
        } else if let Some(m) = within(CMDQ_ERR_MAP0, 4, CMDQ_ERR_MAP_WORDS) {
            (Slot::CmdqErrMap(m), CMDQ_ERR_MAP0)
        } else if let Some(q) = within(CMDQ_ALLOC_MAP0, 4, self.alloc_map.len() as u64) {
            (Slot::AllocMap(q), CMDQ_ALLOC_MAP0)
        } else if in_reg(VINTF_CONFIG) {
            (Slot::VintfConfig, VINTF_CONFIG)
        } else if in_reg(VINTF_STATUS) {
            (Slot::VintfStatus, VINTF_STATUS)
        } else if let Some(s) = within(SID_MATCH0, 4, MAX_SID_SLOTS as u64) {
            (Slot::SidMatch(s), SID_MATCH0)
        } else if let Some(s) = within(SID_REPLACE0, 4, MAX_SID_SLOTS as u64) {
            (Slot::SidReplace(s), SID_REPLACE0)
        } else if let Some(m) = within(LVCMDQ_ERR_MAP0, 8, LVCMDQ_ERR_MAP_WORDS) {
            (Slot::LvcmdqErrMap(m), LVCMDQ_ERR_MAP0)
        } else {
            return None;
        };
        Some(slot)
    }

    /// The base offset of the register instance that `slot` names.
    fn instance_offset(slot: Slot, reg: Register) -> u64 {
        match slot {
            Slot::CmdqErrMap(i) | Slot::AllocMap(i) | Slot::SidMatch(i) | Slot::SidReplace(i) => {
                reg.offset + 4 * i as u64
            }
            Slot::LvcmdqErrMap(i) => reg.offset + 8 * i as u64,
            _ => reg.offset,
        }
    }

    fn value(&self, slot: Slot, sid_slots: &[Option<u32>]) -> u64 {
        let sid = |s: usize| sid_slots.get(s).copied().flatten().map(u64::from);
        match slot {
            Slot::Config => u64::from(self.config),
            Slot::Param => u64::from(self.param),
            Slot::Status => STATUS_CMDQV_ENABLED.make(u64::from(self.cmdqv_enabled())),
            Slot::ViErrMap => self.vi_err_map(),
            Slot::ViIntMask => self.vi_int_mask,
            // Global VCMDQ q is VINTF0 LVCMDQ q, so the maps carry the same bits.
            Slot::CmdqErrMap(m) => u64::from((self.lvcmdq_err_map >> (32 * m)) as u32),
            Slot::LvcmdqErrMap(m) => (self.lvcmdq_err_map >> (64 * m)) as u64,
            Slot::AllocMap(q) => self.alloc_map.get(q).map_or(0, |v| u64::from(*v)),
            Slot::VintfConfig => u64::from(self.vintf_config),
            Slot::VintfStatus => VINTF_STATUS_ENABLED.make(u64::from(self.vintf_enabled())),
            Slot::SidMatch(s) => {
                sid(s).map_or(0, |v| SID_MATCH_VSID.make(v) | SID_MATCH_ENABLE.make(1))
            }
            // The guest's StreamID space is the vSID space: SID_REPLACE shows
            // the vSID (identity), never the host pSID.
            Slot::SidReplace(s) => sid(s).map_or(0, |v| SID_REPLACE_SID.make(v)),
        }
    }

    /// A guest read of `data.len()` bytes at `offset`, with `sid_slots` the
    /// vSID of each SID slot (`None`: free); false when the offset is not a
    /// config-page register (the caller logs and returns zeroes).
    pub fn read(&self, offset: u64, data: &mut [u8], sid_slots: &[Option<u32>]) -> bool {
        let Some((slot, reg)) = self.locate(offset) else {
            return false;
        };
        let at = offset - Self::instance_offset(slot, reg);
        extract_read(self.value(slot, sid_slots), reg.size, at, data)
    }

    /// A guest write at `offset`; returns what changed, or `None` when the
    /// offset or size does not fit a register (RAZ/WI, logged by the caller).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Option<ConfigEffect> {
        let (slot, reg) = self.locate(offset)?;
        let at = offset - Self::instance_offset(slot, reg);
        let old = self.value(slot, &[]);
        let value = reg.apply_write(old, merge_write(old, reg.size, at, data)?);
        Some(match slot {
            Slot::Config => {
                self.config = value as u32;
                log::debug!(target: "cmdqv", "CONFIG={:#x}", self.config);
                let now = self.cmdqv_enabled();
                if now == CONFIG_CMDQV_EN.is_set(old) {
                    ConfigEffect::None
                } else {
                    log::info!(target: "cmdqv", "STATUS.CMDQV_ENABLED={}", u8::from(now));
                    ConfigEffect::CmdqvEnable(now)
                }
            }
            Slot::ViIntMask => {
                self.vi_int_mask = value;
                log::debug!(target: "cmdqv", "VI_INT_MASK={value:#x}");
                ConfigEffect::None
            }
            Slot::AllocMap(q) => match self.alloc_map.get_mut(q) {
                Some(entry) if u64::from(*entry) != value => {
                    *entry = value as u32;
                    log::info!(target: "cmdqv", "CMDQ_ALLOC_MAP({q})={value:#x}");
                    ConfigEffect::AllocMap(q)
                }
                _ => ConfigEffect::None,
            },
            Slot::VintfConfig => {
                self.vintf_config = value as u32;
                log::info!(target: "cmdqv", "VINTF0_CONFIG={value:#x} (HYP_OWN wired to 0)");
                let now = self.vintf_enabled();
                if now == VINTF_CONFIG_EN.is_set(old) {
                    ConfigEffect::None
                } else {
                    log::info!(target: "cmdqv", "VINTF0_STATUS.ENABLED={}", u8::from(now));
                    ConfigEffect::VintfEnable(now)
                }
            }
            _ => {
                log::debug!(target: "cmdqv", "write to read-only {} ignored", reg.name);
                ConfigEffect::None
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read32(page: &ConfigPage, offset: u64, sid_slots: &[Option<u32>]) -> u32 {
        let mut data = [0u8; 4];
        assert!(page.read(offset, &mut data, sid_slots));
        u32::from_le_bytes(data)
    }

    #[test]
    fn cmdqv_en_reports_change_once_and_status_follows() {
        let mut page = ConfigPage::new(0x4011, 2);
        assert_eq!(read32(&page, 8, &[]), 1, "enabled out of reset");
        assert_eq!(
            page.write(0, &0u32.to_le_bytes()),
            Some(ConfigEffect::CmdqvEnable(false))
        );
        assert_eq!(read32(&page, 8, &[]), 0);
        assert_eq!(
            page.write(0, &1u32.to_le_bytes()),
            Some(ConfigEffect::CmdqvEnable(true))
        );
        assert_eq!(page.write(0, &1u32.to_le_bytes()), Some(ConfigEffect::None));
        assert_eq!(read32(&page, 8, &[]), 1);
        assert_eq!(read32(&page, 4, &[]), 0x4011);
    }

    #[test]
    fn config_resets_to_qemus_value_and_keeps_its_other_fields() {
        let mut page = ConfigPage::new(0x4011, 2);
        let reset = read32(&page, 0, &[]);
        assert_eq!(reset, 0x0002_0083);
        // Linux's reset: the value read back with only CMDQV_EN toggled.
        page.write(0, &(reset & !1).to_le_bytes());
        assert_eq!(read32(&page, 0, &[]), 0x0002_0082);
        assert_eq!(read32(&page, 8, &[]), 0);
        page.write(0, &u32::MAX.to_le_bytes());
        assert_eq!(read32(&page, 0, &[]), 0x001f_ffff, "bits 31:21 RES0");
    }

    #[test]
    fn vintf_config_reads_back_hyp_own_clear() {
        let mut page = ConfigPage::new(0, 2);
        let hyp_own_en = (1u32 << 17) | 1;
        assert_eq!(
            page.write(0x1000, &hyp_own_en.to_le_bytes()),
            Some(ConfigEffect::VintfEnable(true))
        );
        assert_eq!(read32(&page, 0x1000, &[]), 1);
        assert_eq!(read32(&page, 0x1004, &[]), 1);
    }

    #[test]
    fn alloc_map_maps_only_matching_lvcmdq_of_vintf0() {
        let mut page = ConfigPage::new(0, 2);
        page.write(0x204, &((1u32 << 1) | 1).to_le_bytes());
        assert!(page.lvcmdq_mapped(1));
        page.write(0x200, &((1u32 << 15) | 1).to_le_bytes());
        assert!(!page.lvcmdq_mapped(0), "VINTF1 is not exposed");
        assert_eq!(
            page.write(0x208, &1u32.to_le_bytes()),
            None,
            "only 2 entries"
        );
    }

    #[test]
    fn sid_match_and_replace_show_vsids_only() {
        let page = ConfigPage::new(0, 2);
        let slots = [Some(8), Some(16)];
        assert_eq!(read32(&page, 0x1040, &slots), (8 << 1) | 1);
        assert_eq!(read32(&page, 0x1044, &slots), (16 << 1) | 1);
        assert_eq!(read32(&page, 0x1084, &slots), 16);
        assert_eq!(read32(&page, 0x1048, &slots), 0);
    }

    #[test]
    fn a_free_sid_slot_reads_zero_and_later_slots_keep_their_vsid() {
        let page = ConfigPage::new(0, 2);
        let slots = [None, Some(16)];
        assert_eq!(read32(&page, 0x1040, &slots), 0);
        assert_eq!(read32(&page, 0x1080, &slots), 0);
        assert_eq!(read32(&page, 0x1044, &slots), (16 << 1) | 1);
        assert_eq!(read32(&page, 0x1084, &slots), 16);
    }

    #[test]
    fn error_maps_read_as_halves_and_words() {
        let mut page = ConfigPage::new(0, 2);
        page.lvcmdq_err_map = 0b10;
        assert_eq!(read32(&page, 0x14, &[]), 1);
        assert_eq!(read32(&page, 0x18, &[]), 0);
        assert_eq!(read32(&page, 0x24, &[]), 2);
        let mut wide = [0u8; 8];
        assert!(page.read(0x10c0, &mut wide, &[]));
        assert_eq!(u64::from_le_bytes(wide), 2);
    }
}
