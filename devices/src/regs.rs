//! Register and field declarations shared by the device models.
//!
//! Each register is declared once (offset, name, width, access, writable
//! bits) and each field once (shift, width); every mask and shift in the
//! models is derived from these declarations, never retyped.

/// A bit field inside a register: `width` bits starting at `shift`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Lowest bit of the field.
    pub shift: u32,
    /// Number of bits.
    pub width: u32,
}

impl Field {
    /// Declare a field of `width` bits at `shift` (bits `[shift+width-1:shift]`).
    pub const fn new(shift: u32, width: u32) -> Self {
        Field { shift, width }
    }

    /// A one-bit field.
    pub const fn bit(shift: u32) -> Self {
        Field { shift, width: 1 }
    }

    /// The field's bits in register position.
    pub const fn mask(self) -> u64 {
        (u64::MAX >> (64 - self.width)) << self.shift
    }

    /// The field's value, shifted down.
    pub const fn get(self, reg: u64) -> u64 {
        (reg & self.mask()) >> self.shift
    }

    /// True when a one-bit field (or any bit of a wider one) is set.
    pub const fn is_set(self, reg: u64) -> bool {
        reg & self.mask() != 0
    }

    /// `reg` with the field replaced by `value` (truncated to the field width).
    pub const fn set(self, reg: u64, value: u64) -> u64 {
        (reg & !self.mask()) | ((value << self.shift) & self.mask())
    }

    /// `value` placed in the field, all other bits zero.
    pub const fn make(self, value: u64) -> u64 {
        self.set(0, value)
    }
}

/// How the guest may access a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read-only: writes are ignored.
    Ro,
    /// Read-write on the bits in the register's writable mask.
    Rw,
    /// Reads as zero, writes ignored (reserved or not implemented).
    RazWi,
}

/// A register declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Register {
    /// Byte offset within the device window (or page).
    pub offset: u64,
    /// The spec's name, used in trace points.
    pub name: &'static str,
    /// Size in bytes: 4 or 8.
    pub size: u8,
    /// Guest access rules.
    pub access: Access,
    /// Bits a guest write may change (others keep their value / read as fixed).
    pub writable: u64,
}

impl Register {
    /// A 32-bit register.
    pub const fn r32(offset: u64, name: &'static str, access: Access, writable: u64) -> Self {
        Register {
            offset,
            name,
            size: 4,
            access,
            writable,
        }
    }

    /// A 64-bit register.
    pub const fn r64(offset: u64, name: &'static str, access: Access, writable: u64) -> Self {
        Register {
            offset,
            name,
            size: 8,
            access,
            writable,
        }
    }

    /// The register value after a guest write of `value` over `old`: only
    /// writable bits change, RO and RAZ/WI registers keep `old`.
    pub const fn apply_write(self, old: u64, value: u64) -> u64 {
        match self.access {
            Access::Rw => (old & !self.writable) | (value & self.writable),
            Access::Ro | Access::RazWi => old,
        }
    }
}

/// Merge a sub-register access into a register value: an access of
/// `data.len()` bytes at byte `offset_in_reg` of a little-endian register.
/// Returns `None` when the access does not fit inside the register.
pub fn merge_write(old: u64, reg_size: u8, offset_in_reg: u64, data: &[u8]) -> Option<u64> {
    let end = offset_in_reg.checked_add(data.len() as u64)?;
    if data.is_empty() || end > u64::from(reg_size) {
        return None;
    }
    let mut bytes = old.to_le_bytes();
    let start = usize::try_from(offset_in_reg).ok()?;
    bytes
        .get_mut(start..start + data.len())?
        .copy_from_slice(data);
    Some(u64::from_le_bytes(bytes))
}

/// Extract a sub-register read: `len` bytes at byte `offset_in_reg` of a
/// little-endian register value, written into `data`. Returns false (and
/// leaves `data` untouched) when the access does not fit.
pub fn extract_read(value: u64, reg_size: u8, offset_in_reg: u64, data: &mut [u8]) -> bool {
    let Some(end) = offset_in_reg.checked_add(data.len() as u64) else {
        return false;
    };
    if data.is_empty() || end > u64::from(reg_size) {
        return false;
    }
    let bytes = value.to_le_bytes();
    let Ok(start) = usize::try_from(offset_in_reg) else {
        return false;
    };
    match bytes.get(start..start + data.len()) {
        Some(src) => {
            data.copy_from_slice(src);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG2SIZE: Field = Field::new(0, 5);
    const ADDR: Field = Field::new(5, 43);
    const TOP: Field = Field::bit(63);

    #[test]
    fn field_masks_are_derived_from_shift_and_width() {
        assert_eq!(LOG2SIZE.mask(), 0x1f);
        assert_eq!(ADDR.mask(), 0x0000_ffff_ffff_ffe0);
        assert_eq!(TOP.mask(), 1 << 63);
    }

    #[test]
    fn field_get_set_round_trip_and_truncate() {
        let reg = ADDR.set(LOG2SIZE.make(7), 0x1234);
        assert_eq!(ADDR.get(reg), 0x1234);
        assert_eq!(LOG2SIZE.get(reg), 7);
        assert_eq!(LOG2SIZE.make(0x3f), 0x1f);
        assert!(TOP.is_set(u64::MAX));
    }

    #[test]
    fn write_changes_only_writable_bits() {
        let rw = Register::r32(0, "CR0", Access::Rw, 0xf);
        assert_eq!(rw.apply_write(0xf0, 0xff), 0xff);
        let ro = Register::r32(0, "IDR0", Access::Ro, 0);
        assert_eq!(ro.apply_write(0x12, 0xff), 0x12);
    }

    #[test]
    fn sub_register_accesses_merge_and_extract() {
        let merged = merge_write(0x1111_2222_3333_4444, 8, 4, &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(merged, Some(0xddcc_bbaa_3333_4444));
        assert_eq!(merge_write(0, 4, 2, &[0; 4]), None);
        assert_eq!(merge_write(0, 8, 0, &[]), None);
        let mut out = [0u8; 4];
        assert!(extract_read(0x1111_2222_3333_4444, 8, 4, &mut out));
        assert_eq!(u32::from_le_bytes(out), 0x1111_2222);
        assert!(!extract_read(0, 4, 4, &mut out));
    }
}
