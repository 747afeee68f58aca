//! The guest-visible ID registers: composed from the host SMMU's
//! `iommu_hw_info_arm_smmuv3` and the VMM's own choices.
//!
//! Only the host fields that include/uapi/linux/iommufd.h says a VMM may
//! consume are taken from the host: IDR0 {ST_LEVEL, TERM_MODEL, STALL_MODEL,
//! TTENDIAN, CD2L, ASID16, TTF}, IDR1 {SSIDSIZE, CMDQS as a cap}, IDR3
//! {BBML, RIL}, IDR5 {VAX, GRAN*, OAS}. Everything else is the VMM's choice
//! and is fixed here, with the reason beside it.

use super::regs::{idr0, idr1, idr3, idr5};

/// The raw `struct iommu_hw_info_arm_smmuv3` of the physical SMMU
/// (IOMMU_GET_HW_INFO, type ARM_SMMUV3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostSmmuInfo {
    /// Raw IDR0..IDR5 of the physical SMMU.
    pub idr: [u32; 6],
    /// Raw IIDR.
    pub iidr: u32,
    /// Raw AIDR.
    pub aidr: u32,
}

/// A feature the VM may ask for: never, always (refused where the host
/// cannot), or whatever the host SMMU reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostChoice {
    /// Not shown to the guest.
    #[default]
    Off,
    /// Shown; an error where the host SMMU lacks it.
    On,
    /// Shown when the host SMMU has it.
    Auto,
}

/// What the VM configuration decides about its vSMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VsmmuConfig {
    /// StreamID bits the VM's topology needs (IDR1.SIDSIZE), 1..=32.
    pub sid_bits: u8,
    /// ATS (IDR0.ATS, and the IORT root complex's ATS attribute): the
    /// guest may enable its functions' ATCs and must invalidate them with
    /// ATC_INV. Per device in the kernel; the host SMMU's IDR0.ATS says
    /// whether any can.
    pub ats: HostChoice,
    /// Substream ID bits (IDR1.SSIDSIZE, PASIDs); `None` = the host's.
    pub ssid_bits: Option<u8>,
    /// Largest command queue the guest may use (log2 entries); capped by
    /// the host's IDR1.CMDQS and by `ram_page_size`, must end up >= 7 for
    /// Linux.
    pub cmdq_log2size: u8,
    /// Bytes of one page backing guest RAM: the host's page size, or the
    /// huge page size with hugepages=on. The kernel runs a HW queue (a
    /// CMD-QV VCMDQ, which Linux sizes from IDR1.CMDQS like its SMMU
    /// command queue) only on physically contiguous memory (EFAULT
    /// otherwise), and only one page is known to be contiguous, so
    /// IDR1.CMDQS is capped to what one page holds: 16 << CMDQS bytes.
    pub ram_page_size: u64,
    /// Largest event queue the guest may use (log2 entries), <= 19.
    pub evtq_log2size: u8,
    /// The VM's IPA size in bits: the guest's stage-1 output is an IPA, so
    /// IDR5.OAS is capped to the largest encoding that fits it.
    pub ipa_bits: u8,
    /// Advertise MSIs (IDR0.MSI): the event queue and global errors signal
    /// through their *_IRQ_CFG0/1 doorbell when the guest programs one (the
    /// VMM routes it to the ITS with the vSMMU's IORT DeviceID), the wired
    /// GSIV otherwise; with COHACC the guest also polls CMD_SYNC by MSI write.
    pub msi: bool,
}

impl Default for VsmmuConfig {
    fn default() -> Self {
        VsmmuConfig {
            sid_bits: 16,
            ats: HostChoice::Off,
            ssid_bits: None,
            cmdq_log2size: 19,
            // The smallest page an arm64 Linux host uses: a configuration
            // that does not say gets queues any host page holds.
            ram_page_size: 4 << 10,
            evtq_log2size: 19,
            ipa_bits: 48,
            msi: false,
        }
    }
}

/// Why the ID registers could not be composed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdrError {
    /// IDR1.SIDSIZE is a 6-bit field; StreamIDs are at most 32 bits.
    #[error("vSMMU StreamID size {0} bits is outside 1..=32")]
    SidBits(u8),
    /// Linux needs CMDQS > log2(CMDQ_BATCH_ENTRIES) = 6.
    #[error("command queue log2 size {0} is below 7 (host IDR1.CMDQS caps it)")]
    CmdqTooSmall(u32),
    /// One page of guest RAM cannot hold Linux's smallest command queue.
    #[error(
        "guest RAM page size {0:#x} is not a power of two of at least {min:#x} bytes: it cannot \
         hold Linux's smallest command queue (16 << 7 bytes) contiguously",
        min = CMD_BYTES << MIN_CMDQS
    )]
    RamPageTooSmall(u64),
    /// Event queue log2 size above the architectural maximum.
    #[error("event queue log2 size {0} is outside 1..=19")]
    EvtqSize(u8),
    /// The host cannot walk AArch64 translation tables.
    #[error("host IDR0.TTF {0:#x} lacks AArch64 tables")]
    NoAarch64Tables(u64),
    /// `ats=on` on a host SMMU without ATS.
    #[error(
        "ats=on but the host SMMU does not support ATS (its IDR0.ATS is 0); use ats=off or ats=auto"
    )]
    AtsUnsupported,
    /// `ssidsize=` above what the host SMMU supports.
    #[error(
        "ssidsize={asked} but the host SMMU supports {host} substream ID bits; use ssidsize={host} or less, or ssidsize=auto"
    )]
    SsidBits {
        /// Bits asked for.
        asked: u8,
        /// The host's IDR1.SSIDSIZE.
        host: u64,
    },
    /// The VM's IPA size is below the smallest OAS encoding (32 bits).
    #[error("IPA size {0} bits is below 32")]
    IpaBits(u8),
}

/// The composed, read-only ID registers the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRegisters {
    /// IDR0..IDR5.
    pub idr: [u32; 6],
    /// IIDR.
    pub iidr: u32,
    /// AIDR.
    pub aidr: u32,
}

/// OAS encodings (IDR5.OAS) and the address size each means.
const OAS_BITS: [(u64, u8); 7] = [
    (0, 32),
    (1, 36),
    (2, 40),
    (3, 42),
    (4, 44),
    (5, 48),
    (6, 52),
];

/// Bytes of one command queue entry.
const CMD_BYTES: u64 = 16;
/// Linux's smallest command queue: CMDQS > log2(CMDQ_BATCH_ENTRIES) = 6.
const MIN_CMDQS: u64 = 7;

/// The largest IDR1.CMDQS whose queue (16 << CMDQS bytes) fits one page of
/// `page_size` bytes, i.e. is physically contiguous; an error when not even
/// Linux's smallest queue fits.
pub fn contiguous_cmdqs(page_size: u64) -> Result<u64, IdrError> {
    if !page_size.is_power_of_two() || page_size < CMD_BYTES << MIN_CMDQS {
        return Err(IdrError::RamPageTooSmall(page_size));
    }
    Ok(u64::from(page_size.trailing_zeros()) - u64::from(CMD_BYTES.trailing_zeros()))
}

/// AIDR: SMMUv3.2 (ArchMinorRev 2), the revision that defines IDR3.RIL and
/// BBML, both of which may be passed through from the host.
const AIDR_SMMUV3_2: u32 = 0x2;

impl HostSmmuInfo {
    /// A Grace-like host SMMU: 2-level stream and CD tables, 16-bit
    /// ASID/VMID, stage 1 and 2, ATS, PRI, MSI, SEV, stall supported,
    /// little-endian tables, CMDQS/EVTQS 19, SSIDSIZE 20, SIDSIZE 16,
    /// RIL + BBML2, 4K/16K/64K granules, 52-bit VA, 48-bit OAS. The
    /// emulated backend reports it; tests compose guest IDs from it.
    pub fn grace_like() -> Self {
        let mut h0 = 0;
        for (field, value) in [
            (idr0::S2P, 1),
            (idr0::S1P, 1),
            (idr0::TTF, idr0::TTF_AARCH64),
            (idr0::COHACC, 1),
            (idr0::ATS, 1),
            (idr0::ASID16, 1),
            (idr0::MSI, 1),
            (idr0::SEV, 1),
            (idr0::PRI, 1),
            (idr0::VMID16, 1),
            (idr0::CD2L, 1),
            (idr0::TTENDIAN, 0b10),
            (idr0::STALL_MODEL, 0),
            (idr0::ST_LEVEL, 1),
        ] {
            h0 = field.set(h0, value);
        }
        let mut h1 = 0;
        for (field, value) in [
            (idr1::SIDSIZE, 16),
            (idr1::SSIDSIZE, 20),
            (idr1::PRIQS, 19),
            (idr1::EVTQS, 19),
            (idr1::CMDQS, 19),
        ] {
            h1 = field.set(h1, value);
        }
        let h3 = idr3::RIL.make(1) | idr3::BBML.make(2);
        let h5 = idr5::OAS.make(5)
            | idr5::GRAN4K.make(1)
            | idr5::GRAN16K.make(1)
            | idr5::GRAN64K.make(1)
            | idr5::VAX.make(1);
        HostSmmuInfo {
            idr: [h0 as u32, h1 as u32, 0, h3 as u32, 0, h5 as u32],
            // An Arm implementer code (0x43b): the guest must never see it.
            iidr: 0x0487_043b,
            aidr: 0x2,
        }
    }
}

fn host_field(host: u32, field: crate::regs::Field) -> u64 {
    field.get(u64::from(host))
}

impl IdRegisters {
    /// Compose the guest ID registers.
    pub fn compose(host: &HostSmmuInfo, config: &VsmmuConfig) -> Result<Self, IdrError> {
        let [h0, h1, _, h3, _, h5] = host.idr;
        if !(1..=32).contains(&config.sid_bits) {
            return Err(IdrError::SidBits(config.sid_bits));
        }
        if !(1..=19).contains(&config.evtq_log2size) {
            return Err(IdrError::EvtqSize(config.evtq_log2size));
        }
        let ttf = host_field(h0, idr0::TTF);
        if ttf & idr0::TTF_AARCH64 == 0 {
            return Err(IdrError::NoAarch64Tables(ttf));
        }
        let cmdqs = u64::from(config.cmdq_log2size)
            .min(host_field(h1, idr1::CMDQS))
            .min(contiguous_cmdqs(config.ram_page_size)?);
        if cmdqs < MIN_CMDQS {
            return Err(IdrError::CmdqTooSmall(cmdqs as u32));
        }
        let ipa_oas = OAS_BITS
            .iter()
            .rev()
            .find(|(_, bits)| *bits <= config.ipa_bits)
            .map(|(enc, _)| *enc)
            .ok_or(IdrError::IpaBits(config.ipa_bits))?;
        // A reserved host OAS (7) means 48 bits to Linux; read it the same way.
        let host_oas = match host_field(h5, idr5::OAS) {
            oas @ 0..=6 => oas,
            _ => 5,
        };

        let mut idr0v = 0;
        for f in [
            idr0::ST_LEVEL,
            idr0::TERM_MODEL,
            idr0::TTENDIAN,
            idr0::CD2L,
            idr0::ASID16,
        ] {
            idr0v = f.set(idr0v, host_field(h0, f));
        }
        // Only AArch64 tables: the guest kernel never uses AArch32 ones and
        // the nesting uAPI does not promise them.
        idr0v = idr0::TTF.set(idr0v, idr0::TTF_AARCH64);
        // No stall: the model has no fault path for RESUME/STALL_TERM, so
        // the guest must not make transactions wait for it.
        idr0v = idr0::STALL_MODEL.set(idr0v, idr0::STALL_MODEL_NONE);
        // Stage 1 only: stage 2 belongs to the host (nest parent).
        idr0v = idr0::S1P.set(idr0v, 1);
        // VFIO/iommufd only supports coherent SMMUs.
        idr0v = idr0::COHACC.set(idr0v, 1);
        let host_ats = host_field(h0, idr0::ATS) != 0;
        let ats = match config.ats {
            HostChoice::Off => false,
            HostChoice::On if !host_ats => return Err(IdrError::AtsUnsupported),
            HostChoice::On => true,
            HostChoice::Auto => host_ats,
        };
        idr0v = idr0::ATS.set(idr0v, u64::from(ats));
        idr0v = idr0::MSI.set(idr0v, u64::from(config.msi));
        // PRI, HYP, VMID16,
        // BTM, HTTU = 0: not supported for nesting. SEV = 0: the VMM cannot
        // wake a vCPU's WFE on CMD_SYNC completion, so Linux must poll CONS.

        let mut idr1v = 0;
        idr1v = idr1::SIDSIZE.set(idr1v, u64::from(config.sid_bits));
        let host_ssid = host_field(h1, idr1::SSIDSIZE);
        let ssid = match config.ssid_bits {
            None => host_ssid,
            Some(asked) if u64::from(asked) > host_ssid => {
                return Err(IdrError::SsidBits {
                    asked,
                    host: host_ssid,
                });
            }
            Some(asked) => u64::from(asked),
        };
        idr1v = idr1::SSIDSIZE.set(idr1v, ssid);
        idr1v = idr1::EVTQS.set(idr1v, u64::from(config.evtq_log2size));
        idr1v = idr1::CMDQS.set(idr1v, cmdqs);

        let mut idr3v = 0;
        for f in [idr3::BBML, idr3::RIL] {
            idr3v = f.set(idr3v, host_field(h3, f));
        }

        let mut idr5v = 0;
        for f in [idr5::VAX, idr5::GRAN4K, idr5::GRAN16K, idr5::GRAN64K] {
            idr5v = f.set(idr5v, host_field(h5, f));
        }
        idr5v = idr5::OAS.set(idr5v, host_oas.min(ipa_oas));

        Ok(IdRegisters {
            idr: [idr0v as u32, idr1v as u32, 0, idr3v as u32, 0, idr5v as u32],
            // IIDR = 0: an Arm implementer/product code would trigger the
            // guest's errata workarounds for silicon it is not running on.
            iidr: 0,
            aidr: AIDR_SMMUV3_2,
        })
    }

    /// IDR0 as a register value.
    pub fn idr0(&self) -> u64 {
        u64::from(self.idr[0])
    }

    /// IDR1 as a register value.
    pub fn idr1(&self) -> u64 {
        u64::from(self.idr[1])
    }

    /// IDR0.ATS: the guest may use ATC_INV and STE.EATS.
    pub fn ats(&self) -> bool {
        idr0::ATS.is_set(self.idr0())
    }

    /// IDR0.MSI: interrupt sources may signal by MSI write.
    pub fn msi(&self) -> bool {
        idr0::MSI.is_set(u64::from(self.idr[0]))
    }

    /// IDR0.ST_LEVEL != 0: two-level stream tables are allowed.
    pub fn two_level_strtab(&self) -> bool {
        idr0::ST_LEVEL.get(self.idr0()) != 0
    }

    /// IDR0.CD2L: two-level CD tables are allowed.
    pub fn two_level_cd(&self) -> bool {
        idr0::CD2L.is_set(self.idr0())
    }

    /// IDR1.SIDSIZE.
    pub fn sid_bits(&self) -> u32 {
        idr1::SIDSIZE.get(self.idr1()) as u32
    }

    /// IDR1.SSIDSIZE.
    pub fn ssid_bits(&self) -> u32 {
        idr1::SSIDSIZE.get(self.idr1()) as u32
    }

    /// IDR1.CMDQS.
    pub fn cmdq_log2size(&self) -> u32 {
        idr1::CMDQS.get(self.idr1()) as u32
    }

    /// IDR1.EVTQS.
    pub fn evtq_log2size(&self) -> u32 {
        idr1::EVTQS.get(self.idr1()) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grace_like_host() -> HostSmmuInfo {
        HostSmmuInfo::grace_like()
    }

    #[test]
    fn idr0_takes_only_allowed_host_fields_and_vmm_choices() {
        let idr = IdRegisters::compose(&grace_like_host(), &VsmmuConfig::default()).unwrap();
        let idr0v = idr.idr0();
        assert_eq!(idr0::ST_LEVEL.get(idr0v), 1);
        assert!(idr0::S1P.is_set(idr0v));
        assert!(!idr0::S2P.is_set(idr0v));
        assert!(idr0::COHACC.is_set(idr0v));
        for off in [
            idr0::MSI,
            idr0::PRI,
            idr0::HYP,
            idr0::VMID16,
            idr0::SEV,
            idr0::ATS,
        ] {
            assert!(!off.is_set(idr0v), "{off:?} must be clear");
        }
        assert_eq!(idr0::HTTU.get(idr0v), 0);
        assert_eq!(idr0::STALL_MODEL.get(idr0v), idr0::STALL_MODEL_NONE);
        assert_eq!(idr.iidr, 0);
    }

    #[test]
    fn idr1_sidsize_comes_from_vm_config_and_cmdqs_is_capped_by_host() {
        let host = grace_like_host();
        let config = VsmmuConfig {
            sid_bits: 8,
            cmdq_log2size: 30,
            ram_page_size: 1 << 30,
            evtq_log2size: 7,
            ..VsmmuConfig::default()
        };
        let idr = IdRegisters::compose(&host, &config).unwrap();
        assert_eq!(idr.sid_bits(), 8);
        assert_eq!(idr.cmdq_log2size(), 19);
        assert_eq!(idr.evtq_log2size(), 7);
        assert_eq!(idr.ssid_bits(), 20);
        assert_eq!(idr1::PRIQS.get(idr.idr1()), 0);
    }

    fn cmdqs_on_pages_of(host_cmdqs: u64, ram_page_size: u64) -> Result<u32, IdrError> {
        let mut host = grace_like_host();
        host.idr[1] = idr1::CMDQS.set(u64::from(host.idr[1]), host_cmdqs) as u32;
        let config = VsmmuConfig {
            ram_page_size,
            ..VsmmuConfig::default()
        };
        IdRegisters::compose(&host, &config).map(|idr| idr.cmdq_log2size())
    }

    #[test]
    fn cmdqs_is_capped_to_a_queue_one_ram_page_holds() {
        assert_eq!(cmdqs_on_pages_of(19, 4 << 10), Ok(8), "4 KiB: 16 << 8");
        assert_eq!(cmdqs_on_pages_of(19, 64 << 10), Ok(12), "64 KiB: 16 << 12");
        assert_eq!(cmdqs_on_pages_of(19, 2 << 20), Ok(17), "2 MiB huge pages");
        assert_eq!(cmdqs_on_pages_of(19, 1 << 30), Ok(19), "1 GiB: the host's");
    }

    #[test]
    fn cmdqs_takes_the_host_cmdqs_when_it_is_smaller_than_the_page_cap() {
        assert_eq!(cmdqs_on_pages_of(10, 2 << 20), Ok(10));
        assert_eq!(cmdqs_on_pages_of(7, 4 << 10), Ok(7));
    }

    #[test]
    fn a_ram_page_that_cannot_hold_linuxs_smallest_queue_is_refused() {
        assert_eq!(
            cmdqs_on_pages_of(19, 1 << 10),
            Err(IdrError::RamPageTooSmall(1 << 10))
        );
        assert_eq!(
            cmdqs_on_pages_of(19, 3 << 12),
            Err(IdrError::RamPageTooSmall(3 << 12)),
            "not a power of two"
        );
        assert_eq!(contiguous_cmdqs(2 << 10), Ok(7));
        let err = IdrError::RamPageTooSmall(1 << 10).to_string();
        assert!(err.contains("0x400") && err.contains("0x800"), "{err}");
    }

    #[test]
    fn ats_and_ssidsize_follow_the_vm_config_and_the_host() {
        let compose = |host: &HostSmmuInfo, ats, ssid_bits| {
            IdRegisters::compose(
                host,
                &VsmmuConfig {
                    ats,
                    ssid_bits,
                    ..VsmmuConfig::default()
                },
            )
        };
        let grace = grace_like_host();
        let mut no_ats = grace;
        no_ats.idr[0] = idr0::ATS.set(u64::from(grace.idr[0]), 0) as u32;
        assert!(compose(&grace, HostChoice::On, None).unwrap().ats());
        assert!(compose(&grace, HostChoice::Auto, None).unwrap().ats());
        assert!(!compose(&grace, HostChoice::Off, None).unwrap().ats());
        assert!(!compose(&no_ats, HostChoice::Auto, None).unwrap().ats());
        assert_eq!(
            compose(&no_ats, HostChoice::On, None),
            Err(IdrError::AtsUnsupported)
        );
        let host_ssid = idr1::SSIDSIZE.get(u64::from(grace.idr[1]));
        assert_eq!(
            u64::from(compose(&grace, HostChoice::Off, None).unwrap().ssid_bits()),
            host_ssid
        );
        assert_eq!(
            compose(&grace, HostChoice::Off, Some(0))
                .unwrap()
                .ssid_bits(),
            0
        );
        assert_eq!(
            compose(&grace, HostChoice::Off, Some(8))
                .unwrap()
                .ssid_bits(),
            8
        );
        let too_many = u8::try_from(host_ssid + 1).unwrap();
        assert_eq!(
            compose(&grace, HostChoice::Off, Some(too_many)),
            Err(IdrError::SsidBits {
                asked: too_many,
                host: host_ssid
            })
        );
    }

    #[test]
    fn compose_rejects_cmdq_smaller_than_linux_batch() {
        let mut host = grace_like_host();
        host.idr[1] = idr1::CMDQS.set(u64::from(host.idr[1]), 6) as u32;
        assert_eq!(
            IdRegisters::compose(&host, &VsmmuConfig::default()),
            Err(IdrError::CmdqTooSmall(6))
        );
    }

    #[test]
    fn compose_rejects_bad_sid_bits_and_missing_aarch64() {
        let config = VsmmuConfig {
            sid_bits: 33,
            ..VsmmuConfig::default()
        };
        assert_eq!(
            IdRegisters::compose(&grace_like_host(), &config),
            Err(IdrError::SidBits(33))
        );
        let mut host = grace_like_host();
        host.idr[0] = idr0::TTF.set(u64::from(host.idr[0]), 1) as u32;
        assert_eq!(
            IdRegisters::compose(&host, &VsmmuConfig::default()),
            Err(IdrError::NoAarch64Tables(1))
        );
    }

    #[test]
    fn oas_is_capped_by_the_vm_ipa_size() {
        let config = VsmmuConfig {
            ipa_bits: 41,
            ..VsmmuConfig::default()
        };
        let idr = IdRegisters::compose(&grace_like_host(), &config).unwrap();
        assert_eq!(idr5::OAS.get(u64::from(idr.idr[5])), 2);
        let idr = IdRegisters::compose(&grace_like_host(), &VsmmuConfig::default()).unwrap();
        assert_eq!(idr5::OAS.get(u64::from(idr.idr[5])), 5);
        assert!(idr5::GRAN4K.is_set(u64::from(idr.idr[5])));
        assert_eq!(idr3::RIL.get(u64::from(idr.idr[3])), 1);
    }
}
