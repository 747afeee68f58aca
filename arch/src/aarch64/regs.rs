//! KVM register identifiers for the aarch64 vCPU state the VMM sets at boot
//! (Documentation/virt/kvm/api.rst, "KVM_SET_ONE_REG" for arm64).

use kvm_bindings::{KVM_REG_ARM_CORE, KVM_REG_ARM64, KVM_REG_SIZE_U64};

/// Byte offset of `regs.regs[0]` in `struct kvm_regs` (user_pt_regs first).
const X0_OFFSET: u64 = 0;
/// Byte offset of `regs.pc`: after 31 general registers and SP.
const PC_OFFSET: u64 = 32 * 8;
/// Byte offset of `regs.pstate`.
const PSTATE_OFFSET: u64 = 33 * 8;

/// PSTATE at kernel entry: EL1h with D, A, I and F masked
/// (Documentation/arch/arm64/booting.rst: "all forms of interrupts must be masked").
pub const BOOT_PSTATE: u64 = PSR_MODE_EL1H | PSR_F_BIT | PSR_I_BIT | PSR_A_BIT | PSR_D_BIT;
const PSR_MODE_EL1H: u64 = 0x5;
const PSR_F_BIT: u64 = 1 << 6;
const PSR_I_BIT: u64 = 1 << 7;
const PSR_A_BIT: u64 = 1 << 8;
const PSR_D_BIT: u64 = 1 << 9;

/// The KVM id of a 64-bit core register at byte `offset` of `struct kvm_regs`:
/// the offset is counted in 32-bit words.
const fn core_reg(offset: u64) -> u64 {
    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE as u64 | (offset / 4)
}

/// KVM id of general-purpose register `Xn` (n < 31), `None` otherwise.
pub fn xreg(n: u8) -> Option<u64> {
    (n < 31).then(|| core_reg(X0_OFFSET + u64::from(n) * 8))
}

/// KVM id of the program counter.
pub const PC: u64 = core_reg(PC_OFFSET);
/// KVM id of PSTATE.
pub const PSTATE: u64 = core_reg(PSTATE_OFFSET);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_register_ids_match_the_kvm_abi() {
        // Values from the arm64 KVM ABI: 0x6030_0000_0010_xxxx, xxxx = offset / 4.
        assert_eq!(xreg(0), Some(0x6030_0000_0010_0000));
        assert_eq!(xreg(1), Some(0x6030_0000_0010_0002));
        assert_eq!(PC, 0x6030_0000_0010_0040);
        assert_eq!(PSTATE, 0x6030_0000_0010_0042);
        assert_eq!(xreg(31), None);
    }

    #[test]
    fn boot_pstate_is_el1h_with_daif_masked() {
        assert_eq!(BOOT_PSTATE, 0x3c5);
    }
}
