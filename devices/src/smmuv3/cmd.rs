//! SMMUv3 command encoding (SMMUv3 spec 4 "Commands").
//!
//! A command is two little-endian 64-bit words; the opcode is word 0 bits
//! [7:0]. This module names the opcodes and the fields that both the trapped
//! SMMU command queue and the CMDQ-V's VCMDQ engine decode.

/// Size of one command queue entry in bytes.
pub const CMD_BYTES: u64 = 16;

/// CMDQ_CONS.ERR codes (SMMUv3 spec 7.1 "Command queue errors").
pub mod cerror {
    /// No error.
    pub const NONE: u32 = 0;
    /// Illegal command: unknown opcode or a field value the SMMU refuses.
    pub const ILL: u32 = 1;
    /// Abort on command fetch.
    pub const ABT: u32 = 2;
    /// ATC invalidation completion timed out before a CMD_SYNC.
    pub const ATC_INV_SYNC: u32 = 3;
}

/// Command opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    PrefetchConfig = 0x01,
    PrefetchAddr = 0x02,
    CfgiSte = 0x03,
    CfgiSteRange = 0x04,
    CfgiCd = 0x05,
    CfgiCdAll = 0x06,
    CfgiVmsPidm = 0x07,
    TlbiNhAll = 0x10,
    TlbiNhAsid = 0x11,
    TlbiNhVa = 0x12,
    TlbiNhVaa = 0x13,
    TlbiEl3All = 0x18,
    TlbiEl3Va = 0x1a,
    TlbiEl2All = 0x20,
    TlbiEl2Asid = 0x21,
    TlbiEl2Va = 0x22,
    TlbiEl2Vaa = 0x23,
    TlbiS12Vmall = 0x28,
    TlbiS2Ipa = 0x2a,
    TlbiNsnhAll = 0x30,
    AtcInv = 0x40,
    PriResp = 0x41,
    Resume = 0x44,
    StallTerm = 0x45,
    CmdSync = 0x46,
}

impl Opcode {
    /// Decode an opcode byte; `None` for an opcode the architecture does not define.
    pub fn from_byte(byte: u8) -> Option<Self> {
        use Opcode::*;
        Some(match byte {
            0x01 => PrefetchConfig,
            0x02 => PrefetchAddr,
            0x03 => CfgiSte,
            0x04 => CfgiSteRange,
            0x05 => CfgiCd,
            0x06 => CfgiCdAll,
            0x07 => CfgiVmsPidm,
            0x10 => TlbiNhAll,
            0x11 => TlbiNhAsid,
            0x12 => TlbiNhVa,
            0x13 => TlbiNhVaa,
            0x18 => TlbiEl3All,
            0x1a => TlbiEl3Va,
            0x20 => TlbiEl2All,
            0x21 => TlbiEl2Asid,
            0x22 => TlbiEl2Va,
            0x23 => TlbiEl2Vaa,
            0x28 => TlbiS12Vmall,
            0x2a => TlbiS2Ipa,
            0x30 => TlbiNsnhAll,
            0x40 => AtcInv,
            0x41 => PriResp,
            0x44 => Resume,
            0x45 => StallTerm,
            0x46 => CmdSync,
            _ => return None,
        })
    }

    /// The spec's name, as printed in logs and replay output.
    pub fn name(self) -> &'static str {
        use Opcode::*;
        match self {
            PrefetchConfig => "PREFETCH_CONFIG",
            PrefetchAddr => "PREFETCH_ADDR",
            CfgiSte => "CFGI_STE",
            CfgiSteRange => "CFGI_STE_RANGE",
            CfgiCd => "CFGI_CD",
            CfgiCdAll => "CFGI_CD_ALL",
            CfgiVmsPidm => "CFGI_VMS_PIDM",
            TlbiNhAll => "TLBI_NH_ALL",
            TlbiNhAsid => "TLBI_NH_ASID",
            TlbiNhVa => "TLBI_NH_VA",
            TlbiNhVaa => "TLBI_NH_VAA",
            TlbiEl3All => "TLBI_EL3_ALL",
            TlbiEl3Va => "TLBI_EL3_VA",
            TlbiEl2All => "TLBI_EL2_ALL",
            TlbiEl2Asid => "TLBI_EL2_ASID",
            TlbiEl2Va => "TLBI_EL2_VA",
            TlbiEl2Vaa => "TLBI_EL2_VAA",
            TlbiS12Vmall => "TLBI_S12_VMALL",
            TlbiS2Ipa => "TLBI_S2_IPA",
            TlbiNsnhAll => "TLBI_NSNH_ALL",
            AtcInv => "ATC_INV",
            PriResp => "PRI_RESP",
            Resume => "RESUME",
            StallTerm => "STALL_TERM",
            CmdSync => "CMD_SYNC",
        }
    }
}

/// CMD_SYNC completion signal (word 0 bits [13:12]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncSignal {
    /// CS=0b00: no signal.
    None,
    /// CS=0b01: MSI write (or wired interrupt) on completion.
    Irq,
    /// CS=0b10: send an event (SEV) on completion.
    Sev,
}

/// One raw command: two little-endian 64-bit words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Command(pub [u64; 2]);

impl Command {
    /// Decode a 16-byte little-endian queue entry.
    pub fn from_le_bytes(bytes: [u8; 16]) -> Self {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&bytes[..8]);
        hi.copy_from_slice(&bytes[8..]);
        Command([u64::from_le_bytes(lo), u64::from_le_bytes(hi)])
    }

    /// The opcode byte (word 0 bits [7:0]).
    pub fn opcode_byte(self) -> u8 {
        (self.0[0] & 0xff) as u8
    }

    /// The decoded opcode, `None` when the architecture defines no such command.
    pub fn opcode(self) -> Option<Opcode> {
        Opcode::from_byte(self.opcode_byte())
    }

    /// StreamID field (word 0 bits [63:32]) of CFGI_*, ATC_INV, PRI_RESP, RESUME.
    pub fn sid(self) -> u32 {
        (self.0[0] >> 32) as u32
    }

    /// SubstreamID field (word 0 bits [31:12]) of CFGI_CD and ATC_INV.
    pub fn ssid(self) -> u32 {
        ((self.0[0] >> 12) & 0xf_ffff) as u32
    }

    /// VMID field (word 0 bits [47:32]) of TLBI_NH_* and TLBI_S12_VMALL.
    pub fn vmid(self) -> u16 {
        (self.0[0] >> 32) as u16
    }

    /// ASID field (word 0 bits [63:48]) of TLBI_NH_ASID / TLBI_NH_VA.
    pub fn asid(self) -> u16 {
        (self.0[0] >> 48) as u16
    }

    /// Leaf flag (word 1 bit 0) of CFGI_STE / CFGI_CD / TLBI_*_VA.
    pub fn leaf(self) -> bool {
        self.0[1] & 1 != 0
    }

    /// Range field (word 1 bits [4:0]) of CFGI_STE_RANGE: 2^(Range+1) StreamIDs.
    pub fn ste_range(self) -> u32 {
        (self.0[1] & 0x1f) as u32
    }

    /// Address field of TLBI_*_VA / ATC_INV (word 1 bits [63:12]).
    pub fn address(self) -> u64 {
        self.0[1] & !0xfff
    }

    /// CMD_SYNC completion signal; CS=0b11 is reserved and decodes as `None`.
    pub fn sync_signal(self) -> Option<SyncSignal> {
        match (self.0[0] >> 12) & 0x3 {
            0 => Some(SyncSignal::None),
            1 => Some(SyncSignal::Irq),
            2 => Some(SyncSignal::Sev),
            _ => None,
        }
    }

    /// CMD_SYNC MSI payload (word 0 bits [63:32]).
    pub fn sync_msi_data(self) -> u32 {
        (self.0[0] >> 32) as u32
    }

    /// CMD_SYNC MSI address (word 1 bits [51:2]).
    pub fn sync_msi_addr(self) -> u64 {
        self.0[1] & 0x000f_ffff_ffff_fffc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_opcode_round_trips_through_its_byte() {
        for byte in 0..=u8::MAX {
            if let Some(op) = Opcode::from_byte(byte) {
                assert_eq!(op as u8, byte, "{}", op.name());
            }
        }
        assert_eq!(Opcode::from_byte(0x00), None);
        assert_eq!(Opcode::from_byte(0x47), None);
    }

    #[test]
    fn atc_inv_fields_decode() {
        let cmd = Command([0x0000_0008_0000_0040 | (5 << 12), 0x1234_5000 | 3]);
        assert_eq!(cmd.opcode(), Some(Opcode::AtcInv));
        assert_eq!(cmd.sid(), 8);
        assert_eq!(cmd.ssid(), 5);
        assert_eq!(cmd.address(), 0x1234_5000);
    }

    #[test]
    fn tlbi_nh_va_fields_decode() {
        let cmd = Command([(0x42u64 << 48) | (0x7u64 << 32) | 0x12, 0xdead_b000 | 1]);
        assert_eq!(cmd.opcode(), Some(Opcode::TlbiNhVa));
        assert_eq!(cmd.asid(), 0x42);
        assert_eq!(cmd.vmid(), 7);
        assert!(cmd.leaf());
    }

    #[test]
    fn cmd_sync_signal_and_msi_decode() {
        let cmd = Command([
            (0xabcdu64 << 32) | (1 << 12) | 0x46,
            0x0000_0800_0000_0ffc | 3,
        ]);
        assert_eq!(cmd.sync_signal(), Some(SyncSignal::Irq));
        assert_eq!(cmd.sync_msi_data(), 0xabcd);
        assert_eq!(cmd.sync_msi_addr(), 0x0000_0800_0000_0ffc);
        assert_eq!(Command([(3 << 12) | 0x46, 0]).sync_signal(), None);
    }

    #[test]
    fn command_decodes_little_endian_entry() {
        let mut bytes = [0u8; 16];
        bytes[0] = 0x46;
        bytes[8] = 0x04;
        assert_eq!(Command::from_le_bytes(bytes), Command([0x46, 0x04]));
    }
}
