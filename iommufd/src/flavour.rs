//! What differs between vIOMMU flavours: the uAPI types and data layouts
//! of one kind of vIOMMU. The sequence logic (`viommu.rs`) is written once
//! over [`Flavour`]; the product runs it with [`ArmSmmuv3`] (plain vSMMUv3,
//! or with the Tegra241 CMD-QV), the judge with the kernel's selftest mock
//! (`crate::selftest::Selftest`), so the same code is proven by the kernel.

use std::sync::Arc;

use devices::smmuv3::cmd::Command;
use devices::smmuv3::{HostSmmuInfo, NestedSte};
use iommufd_bindings::iommufd::{
    iommu_hw_info, iommu_hw_info_arm_smmuv3, iommu_hw_info_tegra241_cmdqv,
    iommu_hw_info_type_IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
    iommu_hw_info_type_IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV,
    iommu_hw_queue_type_IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV,
    iommu_hwpt_data_type_IOMMU_HWPT_DATA_ARM_SMMUV3,
    iommu_hwpt_invalidate_data_type_IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
    iommu_veventq_type_IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
    iommu_veventq_type_IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV,
    iommu_viommu_type_IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
    iommu_viommu_type_IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV,
    iommufd_hw_info_flags_IOMMU_HW_INFO_FLAG_INPUT_TYPE,
};

use crate::error::{Error, HostError};
use crate::fd::Iommufd;

/// The host's CMD-QV (`struct iommu_hw_info_tegra241_cmdqv`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdqvHw {
    /// PARAM.VER.
    pub version: u8,
    /// log2 of the VCMDQs a VINTF has.
    pub log2vcmdqs: u8,
    /// log2 of the SID replacement slots a VINTF has.
    pub log2vsids: u8,
}

/// What `IOMMU_GET_HW_INFO` told about the IOMMU behind a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostInfo {
    /// The SMMU's ID registers (the vSMMU's IDRs are composed from them).
    pub smmu: HostSmmuInfo,
    /// The CMD-QV, for flavours that use one.
    pub cmdqv: Option<CmdqvHw>,
}

/// A vEVENTQ type and the size of one event's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventFormat {
    /// `IOMMU_VEVENTQ_TYPE_*`.
    pub ty: u32,
    /// Payload bytes after each header.
    pub payload: usize,
}

/// The uAPI of one kind of vIOMMU.
pub trait Flavour: Send + Sync + std::fmt::Debug {
    /// For logs.
    fn name(&self) -> &'static str;
    /// `IOMMU_GET_HW_INFO` through `dev_id` (named `device` in errors), and
    /// the flavour's own capability checks.
    fn probe(&self, fd: &Iommufd, dev_id: u32, device: &str) -> Result<HostInfo, HostError>;
    /// `IOMMU_VIOMMU_TYPE_*`.
    fn viommu_type(&self) -> u32;
    /// The in/out data of `IOMMU_VIOMMU_ALLOC` (empty: none).
    fn viommu_data(&self) -> Vec<u8>;
    /// The mmap region the kernel reported in that data: (offset, length).
    fn mmap_region(&self, data: &[u8]) -> Option<(u64, u64)>;
    /// `IOMMU_HWPT_ALLOC` data of a nested HWPT for `ste`: (type, bytes).
    fn nested_hwpt(&self, ste: &NestedSte) -> (u32, Vec<u8>);
    /// `IOMMU_HWPT_INVALIDATE` on the vIOMMU: (data_type, entry_len).
    fn invalidation(&self) -> (u32, u32);
    /// Append one entry for `command` (exactly `entry_len` bytes).
    fn encode_invalidation(&self, command: Command, out: &mut Vec<u8>);
    /// `IOMMU_HW_QUEUE_TYPE_*`, for flavours with HW queues.
    fn hw_queue_type(&self) -> Option<u32>;
    /// The vEVENTQ of device faults, delivered into the guest event queue.
    fn smmu_events(&self) -> Option<EventFormat>;
    /// One fault payload as a 32-byte SMMUv3 event record (vSID in place).
    fn decode_smmu_event(&self, payload: &[u8]) -> [u64; 4];
    /// The vEVENTQ type of CMD-QV queue errors (payload: the 128-bit map).
    fn cmdqv_events(&self) -> Option<u32>;
}

/// A shared flavour.
pub type SharedFlavour = Arc<dyn Flavour>;

/// The product flavour: an ARM SMMUv3 vIOMMU, with or without the NVIDIA
/// Tegra241 CMD-QV (`IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV`: a VINTF whose page0
/// the kernel lets us mmap, HW queues, CMD-QV error vEVENTs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArmSmmuv3 {
    /// Allocate the vIOMMU as a Tegra241 CMD-QV VINTF.
    pub cmdqv: bool,
}

/// `IDR0.S1P` and `IDR0.S2P`: both are needed for nesting.
const IDR0_S1P: u32 = 1 << 1;
const IDR0_S2P: u32 = 1 << 0;

impl Flavour for ArmSmmuv3 {
    fn name(&self) -> &'static str {
        if self.cmdqv {
            "arm-smmuv3+tegra241-cmdqv"
        } else {
            "arm-smmuv3"
        }
    }

    fn probe(&self, fd: &Iommufd, dev_id: u32, device: &str) -> Result<HostInfo, HostError> {
        let mut data = iommu_hw_info_arm_smmuv3::default();
        let mut arg = iommu_hw_info {
            size: size_of::<iommu_hw_info>() as u32,
            dev_id,
            data_len: size_of::<iommu_hw_info_arm_smmuv3>() as u32,
            data_uptr: &mut data as *mut _ as u64,
            ..Default::default()
        };
        fd.get_hw_info(&mut arg)?;
        let ty = crate::sys::hw_info_out_type(&arg);
        if ty != iommu_hw_info_type_IOMMU_HW_INFO_TYPE_ARM_SMMUV3 {
            return Err(HostError::NoNesting {
                device: device.to_string(),
                why: format!("its IOMMU reports hw_info type {ty}, not an ARM SMMUv3"),
            });
        }
        if data.idr[0] & (IDR0_S1P | IDR0_S2P) != (IDR0_S1P | IDR0_S2P) {
            return Err(HostError::NoNesting {
                device: device.to_string(),
                why: format!("IDR0 {:#x} lacks S1P or S2P", data.idr[0]),
            });
        }
        let smmu = HostSmmuInfo {
            idr: data.idr,
            iidr: data.iidr,
            aidr: data.aidr,
        };
        let cmdqv = if self.cmdqv {
            Some(probe_cmdqv(fd, dev_id, device)?)
        } else {
            None
        };
        Ok(HostInfo { smmu, cmdqv })
    }

    fn viommu_type(&self) -> u32 {
        if self.cmdqv {
            iommu_viommu_type_IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV
        } else {
            iommu_viommu_type_IOMMU_VIOMMU_TYPE_ARM_SMMUV3
        }
    }

    fn viommu_data(&self) -> Vec<u8> {
        // struct iommu_viommu_tegra241_cmdqv: two u64 outputs.
        if self.cmdqv { vec![0; 16] } else { Vec::new() }
    }

    fn mmap_region(&self, data: &[u8]) -> Option<(u64, u64)> {
        self.cmdqv.then(|| (le64(data, 0), le64(data, 8)))
    }

    fn nested_hwpt(&self, ste: &NestedSte) -> (u32, Vec<u8>) {
        // struct iommu_hwpt_arm_smmuv3: STE words 0-1, little-endian.
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&ste.words[0].to_le_bytes());
        bytes.extend_from_slice(&ste.words[1].to_le_bytes());
        (iommu_hwpt_data_type_IOMMU_HWPT_DATA_ARM_SMMUV3, bytes)
    }

    fn invalidation(&self) -> (u32, u32) {
        (
            iommu_hwpt_invalidate_data_type_IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
            16,
        )
    }

    fn encode_invalidation(&self, command: Command, out: &mut Vec<u8>) {
        // struct iommu_viommu_arm_smmuv3_invalidate: the raw command.
        out.extend_from_slice(&command.0[0].to_le_bytes());
        out.extend_from_slice(&command.0[1].to_le_bytes());
    }

    fn hw_queue_type(&self) -> Option<u32> {
        self.cmdqv
            .then_some(iommu_hw_queue_type_IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV)
    }

    fn smmu_events(&self) -> Option<EventFormat> {
        Some(EventFormat {
            ty: iommu_veventq_type_IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
            payload: 32,
        })
    }

    fn decode_smmu_event(&self, payload: &[u8]) -> [u64; 4] {
        // struct iommu_vevent_arm_smmuv3: the record, StreamID = vSID.
        [0, 8, 16, 24].map(|at| le64(payload, at))
    }

    fn cmdqv_events(&self) -> Option<u32> {
        self.cmdqv
            .then_some(iommu_veventq_type_IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV)
    }
}

/// `IOMMU_GET_HW_INFO` with `INPUT_TYPE = TEGRA241_CMDQV`: EOPNOTSUPP on an
/// SMMU without one.
fn probe_cmdqv(fd: &Iommufd, dev_id: u32, device: &str) -> Result<CmdqvHw, HostError> {
    let mut data = iommu_hw_info_tegra241_cmdqv::default();
    let mut arg = iommu_hw_info {
        size: size_of::<iommu_hw_info>() as u32,
        flags: iommufd_hw_info_flags_IOMMU_HW_INFO_FLAG_INPUT_TYPE,
        dev_id,
        data_len: size_of::<iommu_hw_info_tegra241_cmdqv>() as u32,
        data_uptr: &mut data as *mut _ as u64,
        ..Default::default()
    };
    arg.__bindgen_anon_1.in_data_type = iommu_hw_info_type_IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV;
    match fd.get_hw_info(&mut arg) {
        Ok(()) => {}
        Err(e @ Error::Ioctl { errno, .. })
            if errno == libc::EOPNOTSUPP || errno == libc::EINVAL =>
        {
            return Err(HostError::NoCmdqv {
                device: device.to_string(),
                why: e.to_string(),
            });
        }
        Err(e) => return Err(e.into()),
    }
    let hw = CmdqvHw {
        version: data.version,
        log2vcmdqs: data.log2vcmdqs,
        log2vsids: data.log2vsids,
    };
    if hw.version != 1 {
        return Err(HostError::CmdqvVersion {
            device: device.to_string(),
            version: hw.version,
        });
    }
    Ok(hw)
}

/// The little-endian u64 at `at` (zero past the end: data we sized ourselves).
pub(crate) fn le64(data: &[u8], at: usize) -> u64 {
    data.get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

/// The little-endian u32 at `at` (zero past the end).
pub(crate) fn le32(data: &[u8], at: usize) -> u32 {
    data.get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::smmuv3::SteConfig;

    #[test]
    fn arm_smmuv3_passes_ste_words_and_commands_raw() {
        let f = ArmSmmuv3 { cmdqv: false };
        let ste = NestedSte {
            config: SteConfig::S1Translate,
            words: [0x1122_3344_5566_770b, 0x8000_0001],
        };
        let (ty, bytes) = f.nested_hwpt(&ste);
        assert_eq!(ty, 2);
        assert_eq!(le64(&bytes, 0), ste.words[0]);
        assert_eq!(le64(&bytes, 8), ste.words[1]);
        let mut out = Vec::new();
        f.encode_invalidation(Command([0x12, 0xdead_0000]), &mut out);
        assert_eq!(out.len() as u32, f.invalidation().1);
        assert_eq!(le64(&out, 8), 0xdead_0000);
        assert_eq!(f.viommu_type(), 1);
        assert!(f.viommu_data().is_empty() && f.mmap_region(&[]).is_none());
        assert_eq!(f.hw_queue_type(), None);
    }

    #[test]
    fn tegra241_reports_its_page0_region_and_queue_types() {
        let f = ArmSmmuv3 { cmdqv: true };
        assert_eq!(f.viommu_type(), 2);
        let mut data = f.viommu_data();
        data[..8].copy_from_slice(&0x1_0000u64.to_le_bytes());
        data[8..].copy_from_slice(&0x1_0000u64.to_le_bytes());
        assert_eq!(f.mmap_region(&data), Some((0x1_0000, 0x1_0000)));
        assert_eq!(f.hw_queue_type(), Some(1));
        assert_eq!(f.cmdqv_events(), Some(2));
    }
}
