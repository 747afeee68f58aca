//! One logical VCMDQ as the model sees it: its page1 registers (BASE,
//! CONS_INDX_BASE), the page0 register cache used while the host page0 is
//! not live, and the validation of a BASE value against the kernel's
//! `IOMMU_HW_QUEUE_ALLOC` rules (fact sheet §2.7).

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::regs::{
    GERROR_CMDQ_INIT_ERR, VCMDQ_BASE, VCMDQ_BASE_ADDR, VCMDQ_BASE_LOG2SIZE, VCMDQ_CONFIG,
    VCMDQ_CONS, VCMDQ_CONS_INDX_BASE, VCMDQ_GERROR, VCMDQ_GERRORN, VCMDQ_PROD, VCMDQ_STATUS,
    page0_reg,
};
use crate::GuestMemory;
use crate::smmuv3::cmd::CMD_BYTES;

/// Smallest queue the kernel accepts, in bytes (two entries).
pub const MIN_QUEUE_BYTES: u64 = 32;

/// Why a BASE value cannot become a HW queue. Each maps to the errno the
/// kernel would return; the model refuses before calling the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueBaseError {
    /// EINVAL: length below 32 bytes.
    #[error("queue length {len:#x} is below the {MIN_QUEUE_BYTES:#x}-byte minimum")]
    TooSmall { len: u64 },
    /// Length above 16 << IDR1.CMDQS: the host's (EINVAL) or the guest's,
    /// which is capped so that a queue fits one page of guest RAM (EFAULT
    /// from the kernel otherwise).
    #[error("queue length {len:#x} exceeds the maximum {max:#x} (IDR1.CMDQS={cmdqs})")]
    TooLarge { len: u64, max: u64, cmdqs: u8 },
    /// EINVAL: base not aligned to the length.
    #[error("queue base {gpa:#x} is not aligned to its length {len:#x}")]
    Misaligned { gpa: u64, len: u64 },
    /// EOVERFLOW: base + length wraps.
    #[error("queue at {gpa:#x} of length {len:#x} wraps the address space")]
    Overflow { gpa: u64, len: u64 },
    /// ENOENT (not guest RAM, so not in the IOAS) or EFAULT (spans two
    /// RAM regions: not physically contiguous).
    #[error("queue at {gpa:#x} of length {len:#x} is not inside one guest RAM region")]
    NotInRam { gpa: u64, len: u64 },
}

/// A validated queue placement: what `IOMMU_HW_QUEUE_ALLOC` is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueBase {
    /// Guest physical base (BASE.ADDR in place).
    pub gpa: u64,
    /// log2 of the number of entries.
    pub log2size: u32,
}

impl QueueBase {
    /// Queue length in bytes.
    pub fn len_bytes(self) -> u64 {
        CMD_BYTES << self.log2size
    }

    /// Validate a BASE register value the way the kernel will: length is a
    /// power of two (by construction), >= 32 and <= 16 << `cmdqs` (the
    /// smaller of the host's and the guest's IDR1.CMDQS); the base is
    /// aligned to the length; the whole queue lies in one RAM region.
    pub fn parse(base: u64, cmdqs: u8, mem: &GuestMemory) -> Result<Self, QueueBaseError> {
        let gpa = base & VCMDQ_BASE_ADDR.mask();
        // LOG2SIZE is a 5-bit field, so the shift cannot overflow a u64.
        let log2size = VCMDQ_BASE_LOG2SIZE.get(base) as u32;
        let len = CMD_BYTES << log2size;
        if len < MIN_QUEUE_BYTES {
            return Err(QueueBaseError::TooSmall { len });
        }
        let max = CMD_BYTES << u32::from(cmdqs).min(VCMDQ_BASE_LOG2SIZE.mask() as u32);
        if len > max {
            return Err(QueueBaseError::TooLarge { len, max, cmdqs });
        }
        if gpa & (len - 1) != 0 {
            return Err(QueueBaseError::Misaligned { gpa, len });
        }
        let last = gpa
            .checked_add(len - 1)
            .ok_or(QueueBaseError::Overflow { gpa, len })?;
        let in_one_region = mem.find_region(GuestAddress(gpa)).is_some_and(|region| {
            last <= region
                .start_addr()
                .0
                .saturating_add(region.len().saturating_sub(1))
        });
        if !in_one_region {
            return Err(QueueBaseError::NotInRam { gpa, len });
        }
        Ok(QueueBase { gpa, log2size })
    }
}

/// The model's state of one logical VCMDQ.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vcmdq {
    /// Page1 BASE as last written by the guest.
    pub base: u64,
    /// Page1 CONS_INDX_BASE (stored only).
    pub cons_indx_base: u64,
    /// Page0 register cache, indexed by register offset / 4.
    page0: [u32; 6],
    /// Bit i: the cached register at offset 4 * i holds a value the guest
    /// set since the queue's last reset (a guest write, or the live value
    /// kept when its HW queue was freed). Only these are restored into a
    /// new HW queue; the others keep the kernel's reset values.
    guest_set: u8,
    /// XOR overlay on GERROR for CMDQ_INIT_ERR, which only the model raises
    /// (host hardware cannot be told that a trapped BASE was refused).
    init_err: u32,
    /// The HW queue the backend holds for this index, if any.
    pub allocated: Option<QueueBase>,
    /// A BASE the model or the backend refused; not retried until BASE
    /// changes or the VINTF is re-enabled.
    pub refused_base: Option<u64>,
}

impl Vcmdq {
    /// A page1 register read (offset inside the slot).
    pub fn page1_read(&self, offset: u64) -> Option<(u64, u8, u64)> {
        page1_reg(offset).map(|(reg, at)| {
            let value = if reg.offset == VCMDQ_BASE.offset {
                self.base
            } else {
                self.cons_indx_base
            };
            (value, reg.size, at)
        })
    }

    /// Apply a full page1 register value; returns true when BASE changed.
    pub fn page1_write(&mut self, reg_offset: u64, value: u64) -> bool {
        if reg_offset == VCMDQ_BASE.offset {
            let new = VCMDQ_BASE.apply_write(self.base, value);
            let changed = new != self.base;
            self.base = new;
            changed
        } else {
            self.cons_indx_base = VCMDQ_CONS_INDX_BASE.apply_write(self.cons_indx_base, value);
            false
        }
    }

    /// Read a cached page0 register (offset inside the slot), with the
    /// model's INIT_ERR overlay on GERROR.
    pub fn cache_read(&self, offset: u64) -> u32 {
        let raw = self.cache_raw(offset);
        if offset == VCMDQ_GERROR.offset {
            raw ^ self.init_err
        } else {
            raw
        }
    }

    /// A cached page0 register without the INIT_ERR overlay.
    pub fn cache_raw(&self, offset: u64) -> u32 {
        usize::try_from(offset / 4)
            .ok()
            .and_then(|i| self.page0.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// A guest write to a cached page0 register (guest-access semantics).
    pub fn cache_write(&mut self, offset: u64, value: u32) {
        if let Some(reg) = page0_reg(offset) {
            let old = u64::from(self.cache_raw(offset));
            self.cache_store(offset, reg.apply_write(old, u64::from(value)) as u32);
        }
    }

    /// A guest write of GERRORN while page0 is live: remember the host
    /// GERROR it acknowledges, so the cache knows which errors the guest
    /// considers handled (GERROR ^ GERRORN) when the queue is restored.
    pub fn cache_acknowledge(&mut self, live_gerror: u32, gerrorn: u32) {
        self.store(VCMDQ_GERROR.offset, live_gerror);
        self.cache_write(VCMDQ_GERRORN.offset, gerrorn);
    }

    /// Store a value into the cache as the hardware would (no access check)
    /// and mark it as the guest's: used to snapshot the host page0 before a
    /// queue is freed.
    pub fn cache_store(&mut self, offset: u64, value: u32) {
        if self.store(offset, value)
            && let Ok(i) = u32::try_from(offset / 4)
        {
            self.guest_set |= 1u8.checked_shl(i).unwrap_or(0);
        }
    }

    fn store(&mut self, offset: u64, value: u32) -> bool {
        match usize::try_from(offset / 4)
            .ok()
            .and_then(|i| self.page0.get_mut(i))
        {
            Some(slot) => {
                *slot = value;
                true
            }
            None => false,
        }
    }

    fn is_guest_set(&self, offset: u64) -> bool {
        u32::try_from(offset / 4)
            .ok()
            .and_then(|i| 1u8.checked_shl(i))
            .is_some_and(|bit| self.guest_set & bit != 0)
    }

    /// Overlay applied to a live GERROR read (page0 backed by the host).
    pub fn gerror_overlay(&self) -> u32 {
        self.init_err
    }

    /// Raise CMDQ_INIT_ERR: toggle GERROR's bit unless the error is already
    /// active (GERROR != GERRORN), SMMUv3 GERROR semantics.
    pub fn raise_init_err(&mut self, live_gerror: u32, live_gerrorn: u32) {
        let bit = GERROR_CMDQ_INIT_ERR.mask() as u32;
        let gerror = live_gerror ^ self.init_err;
        if (gerror ^ live_gerrorn) & bit == 0 {
            self.init_err ^= bit;
        }
    }

    /// The queue got its HW queue: an active CMDQ_INIT_ERR no longer holds
    /// and is cleared (toggled back), as QEMU clears it when a setup
    /// succeeds. Returns true when it was active.
    pub fn clear_init_err(&mut self, live_gerror: u32, live_gerrorn: u32) -> bool {
        let bit = GERROR_CMDQ_INIT_ERR.mask() as u32;
        let gerror = live_gerror ^ self.init_err;
        let active = (gerror ^ live_gerrorn) & bit != 0;
        if active {
            self.init_err ^= bit;
        }
        active
    }

    /// What to write into a freshly allocated host page0 slot, in write
    /// order (CONFIG last, so the queue enables with its pointers set).
    ///
    /// The kernel reset the slot on `IOMMU_HW_QUEUE_ALLOC` (PROD = CONS =
    /// CONFIG = 0, GERRORN = GERROR), so only the registers the guest set
    /// since its own reset are restored: a cached value it never wrote is
    /// nobody's. GERRORN is restored relative to the host's `host_gerror`
    /// so that exactly the errors the guest still saw pending
    /// (cached GERROR ^ GERRORN) are pending again: never an error the
    /// guest acknowledged, nor one a previous user of the host queue left.
    pub fn restore_values(&self, host_gerror: u32) -> Vec<(u64, u32)> {
        let pending = self.cache_raw(VCMDQ_GERROR.offset) ^ self.cache_raw(VCMDQ_GERRORN.offset);
        [VCMDQ_CONS, VCMDQ_PROD, VCMDQ_GERRORN, VCMDQ_CONFIG]
            .into_iter()
            .filter(|r| self.is_guest_set(r.offset))
            .map(|r| {
                let value = if r.offset == VCMDQ_GERRORN.offset {
                    host_gerror ^ pending
                } else {
                    self.cache_raw(r.offset)
                };
                (r.offset, value)
            })
            .collect()
    }

    /// After a snapshot, the queue is not live: STATUS reads not enabled.
    pub fn clear_status(&mut self) {
        self.store(VCMDQ_STATUS.offset, 0);
    }
}

/// The page1 register at `offset` and the byte offset inside it.
pub fn page1_reg(offset: u64) -> Option<(crate::regs::Register, u64)> {
    [VCMDQ_BASE, VCMDQ_CONS_INDX_BASE]
        .into_iter()
        .find(|r| offset >= r.offset && offset < r.offset + u64::from(r.size))
        .map(|r| (r, offset - r.offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram() -> GuestMemory {
        GuestMemory::from_ranges(&[
            (GuestAddress(0x4000_0000), 0x10_1000),
            (GuestAddress(0x4010_1000), 0xf_f000),
        ])
        .unwrap()
    }

    #[test]
    fn parse_accepts_aligned_queue_in_ram() {
        let q = QueueBase::parse(0x4000_1000 | 8, 10, &ram()).unwrap();
        assert_eq!(q.gpa, 0x4000_1000);
        assert_eq!(q.len_bytes(), 0x1000);
    }

    #[test]
    fn parse_rejects_single_entry_queue() {
        assert_eq!(
            QueueBase::parse(0x4000_0000, 10, &ram()),
            Err(QueueBaseError::TooSmall { len: 16 })
        );
    }

    #[test]
    fn parse_rejects_queue_larger_than_host_cmdqs() {
        assert!(matches!(
            QueueBase::parse(0x4000_0000 | 9, 8, &ram()),
            Err(QueueBaseError::TooLarge { max: 0x1000, .. })
        ));
    }

    #[test]
    fn parse_rejects_base_not_aligned_to_length() {
        assert!(matches!(
            QueueBase::parse(0x4000_0800 | 8, 10, &ram()),
            Err(QueueBaseError::Misaligned { .. })
        ));
    }

    #[test]
    fn parse_rejects_queue_straddling_two_regions() {
        // Two adjacent regions are still two mappings: not contiguous.
        assert!(matches!(
            QueueBase::parse(0x4010_0000 | 9, 12, &ram()),
            Err(QueueBaseError::NotInRam { .. })
        ));
        assert!(matches!(
            QueueBase::parse(0x4000_0000 | 17, 17, &ram()),
            Err(QueueBaseError::NotInRam { .. })
        ));
    }

    #[test]
    fn parse_rejects_queue_outside_ram() {
        assert!(matches!(
            QueueBase::parse(0x8000_0000 | 8, 10, &ram()),
            Err(QueueBaseError::NotInRam { .. })
        ));
    }

    #[test]
    fn init_err_toggles_once_until_acknowledged() {
        let mut q = Vcmdq::default();
        q.raise_init_err(0, 0);
        assert_eq!(q.cache_read(VCMDQ_GERROR.offset), 4);
        q.raise_init_err(0, 0);
        assert_eq!(q.cache_read(VCMDQ_GERROR.offset), 4, "still active");
        q.cache_write(VCMDQ_GERRORN.offset, 4);
        q.raise_init_err(0, 4);
        assert_eq!(q.cache_read(VCMDQ_GERROR.offset), 0, "toggled back");
    }

    #[test]
    fn init_err_clears_only_while_active() {
        let mut q = Vcmdq::default();
        q.raise_init_err(0, 0);
        assert!(q.clear_init_err(0, 0));
        assert_eq!(q.cache_read(VCMDQ_GERROR.offset), 0, "cleared");
        assert!(!q.clear_init_err(0, 0), "nothing left to clear");
        // Raised and acknowledged: inactive, so a success changes nothing.
        q.raise_init_err(0, 0);
        q.cache_write(VCMDQ_GERRORN.offset, 4);
        assert!(!q.clear_init_err(0, 4));
        assert_eq!(q.cache_read(VCMDQ_GERROR.offset), 4);
    }

    #[test]
    fn restore_skips_registers_the_guest_never_set() {
        let mut q = Vcmdq::default();
        assert!(q.restore_values(1).is_empty(), "fresh queue: nothing");
        q.cache_write(VCMDQ_PROD.offset, 3);
        assert_eq!(q.restore_values(1), [(VCMDQ_PROD.offset, 3)]);
    }

    #[test]
    fn restore_keeps_exactly_the_errors_the_guest_saw_pending() {
        let mut q = Vcmdq::default();
        // Acknowledged: nothing pending whatever the host GERROR is now.
        q.cache_acknowledge(1, 1);
        assert_eq!(q.restore_values(0), [(VCMDQ_GERRORN.offset, 0)]);
        assert_eq!(q.restore_values(1), [(VCMDQ_GERRORN.offset, 1)]);
        // Pending when the HW queue went: pending again.
        q.cache_store(VCMDQ_GERROR.offset, 0);
        q.cache_store(VCMDQ_GERRORN.offset, 1);
        assert_eq!(q.restore_values(0), [(VCMDQ_GERRORN.offset, 1)]);
    }

    #[test]
    fn cache_ignores_guest_writes_to_status_and_gerror() {
        let mut q = Vcmdq::default();
        q.cache_write(VCMDQ_STATUS.offset, 1);
        q.cache_write(VCMDQ_GERROR.offset, 1);
        assert_eq!(q.cache_read(VCMDQ_STATUS.offset), 0);
        assert_eq!(q.cache_read(VCMDQ_GERROR.offset), 0);
    }
}
