//! The kernel's iommufd selftest mock (CONFIG_IOMMUFD_TEST) as a
//! [`Flavour`] and a device, so the backend's sequence logic runs against
//! the real iommufd core (object lifetimes, pinning, the mmap handshake,
//! HW-queue ordering, invalidation arrays, vEVENTQs) on a machine with no
//! SMMU. Layouts and values come from drivers/iommu/iommufd/iommufd_test.h
//! of Linux 7.2 (kernel-internal, so not in iommufd-bindings); the uAPI
//! conformance test checks them against that header.
//!
//! The mock has no STEs or SMMU commands, so this flavour maps them onto
//! what the mock checks (test-only meaning, stated per method):
//! - hw info: the mock's `test_reg` is checked, the SMMU IDRs reported are
//!   a Grace-like SMMU (`HostSmmuInfo::grace_like`), the CMD-QV is 2 HW
//!   queues (`IOMMU_TEST_HW_QUEUE_MAX`) and 16 SID slots;
//! - a nested HWPT carries `iotlb` = STE word 0's low 32 bits;
//! - an invalidation entry is `{flags, vdev_id = command SID, cache_id =
//!   command SSID}`, flags ALL for CFGI_CD_ALL (the mock clears that
//!   device's cache entries, which `dev_check_cache` reads back);
//! - a vEVENT `{virt_id}` becomes an F_TRANSLATION record for that vSID.

use std::sync::Arc;

use devices::smmuv3::cmd::{Command, Opcode};
use devices::smmuv3::{HostSmmuInfo, NestedSte};
use iommufd_bindings::iommufd::iommu_hw_info;

use crate::device::IommufdDevice;
use crate::error::{Error, HostError};
use crate::fd::{Iommufd, Object, ObjectKind};
use crate::flavour::{CmdqvHw, EventFormat, Flavour, HostInfo, le32, le64};
use crate::ioctl::Ioctl;
use crate::sys;

/// `IOMMU_TEST_OP_*` (an internal enum of iommufd_test.h, 7.2).
pub mod op {
    pub const MOCK_DOMAIN: u32 = 2;
    pub const MD_CHECK_MAP: u32 = 3;
    pub const MOCK_DOMAIN_REPLACE: u32 = 10;
    pub const DEV_CHECK_CACHE: u32 = 16;
    pub const TRIGGER_VEVENT: u32 = 17;
}

/// `sizeof(struct iommu_test_cmd)`: 16-byte header, 48-byte union, `last`.
pub const TEST_CMD_SIZE: usize = 72;
/// Offset of the union in `struct iommu_test_cmd` (every op's arguments).
pub const UNION: usize = 16;
/// The mock IOMMU's aperture: IOVAs [16 MiB, 2 GiB).
pub const MOCK_APERTURE: std::ops::Range<u64> = (1 << 24)..(1 << 31);
/// `IOMMU_HW_INFO_TYPE_SELFTEST` and the `test_reg` it reports.
pub const HW_INFO_TYPE_SELFTEST: u32 = 0xfeed_beef;
pub const HW_INFO_SELFTEST_REGVAL: u32 = 0xdead_beef;
/// `IOMMU_HWPT_DATA_SELFTEST`.
pub const HWPT_DATA_SELFTEST: u32 = 0xdead;
/// `IOMMU_VIOMMU_TYPE_SELFTEST`.
pub const VIOMMU_TYPE_SELFTEST: u32 = 0xdead_beef;
/// `IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST` and its entry size.
pub const VIOMMU_INVALIDATE_DATA_SELFTEST: u32 = 0xdead_beef;
pub const VIOMMU_INVALIDATE_ENTRY: u32 = 12;
/// `IOMMU_TEST_INVALIDATE_FLAG_ALL`.
pub const INVALIDATE_FLAG_ALL: u32 = 1;
/// `IOMMU_VEVENTQ_TYPE_SELFTEST` (payload: `{u32 virt_id}`).
pub const VEVENTQ_TYPE_SELFTEST: u32 = 0xbeef_beef;
/// `IOMMU_HW_QUEUE_TYPE_SELFTEST` and `IOMMU_TEST_HW_QUEUE_MAX`.
pub const HW_QUEUE_TYPE_SELFTEST: u32 = 0xdead_beef;
pub const HW_QUEUE_MAX: u32 = 2;
/// `IOMMU_TEST_DEV_CACHE_DEFAULT`: a mock device's cache entries at birth.
pub const DEV_CACHE_DEFAULT: u32 = 0xbaddad;
/// `MOCK_DEV_CACHE_ID_MAX`.
pub const DEV_CACHE_ID_MAX: u32 = 3;
/// What the judge writes as `in_data`; the mock stores it in its region's
/// first u32 and echoes it in `out_data`.
pub const REGION_MAGIC: u32 = 0xc0de_cafe;

/// SMMUv3 event F_TRANSLATION.
const EVT_F_TRANSLATION: u64 = 0x10;

/// One `struct iommu_test_cmd`.
struct TestCmd([u8; TEST_CMD_SIZE]);

impl TestCmd {
    fn new(op: u32, id: u32) -> Self {
        let mut cmd = TestCmd([0; TEST_CMD_SIZE]);
        cmd.put32(0, TEST_CMD_SIZE as u32);
        cmd.put32(4, op);
        cmd.put32(8, id);
        cmd
    }

    fn put32(&mut self, at: usize, value: u32) {
        if let Some(b) = self.0.get_mut(at..at + 4) {
            b.copy_from_slice(&value.to_le_bytes());
        }
    }

    fn put64(&mut self, at: usize, value: u64) {
        if let Some(b) = self.0.get_mut(at..at + 8) {
            b.copy_from_slice(&value.to_le_bytes());
        }
    }

    fn get32(&self, at: usize) -> u32 {
        le32(&self.0, at)
    }

    fn send(&mut self, fd: &Iommufd, what: &str) -> Result<(), Error> {
        fd.counted(Ioctl::TestCmd);
        sys::test_cmd(fd.raw_fd(), &mut self.0)
            .map_err(|errno| Error::ioctl(Ioctl::TestCmd, what.to_string(), errno))
    }
}

/// A mock device (`IOMMU_TEST_OP_MOCK_DOMAIN`): bound to the iommufd and
/// attached to an automatic domain of `ioas_id` at birth. Dropping it
/// destroys the selftest object, which unbinds the device.
#[derive(Debug)]
pub struct MockDevice {
    fd: Arc<Iommufd>,
    stdev: Object,
    idev_id: u32,
    hwpt_id: u32,
    ioas_id: u32,
}

impl MockDevice {
    /// Create a mock device attached to `ioas_id`.
    pub fn new(fd: &Arc<Iommufd>, ioas_id: u32) -> Result<Self, Error> {
        let mut cmd = TestCmd::new(op::MOCK_DOMAIN, ioas_id);
        cmd.send(fd, "MOCK_DOMAIN")?;
        let (stdev, hwpt_id, idev_id) =
            (cmd.get32(UNION), cmd.get32(UNION + 4), cmd.get32(UNION + 8));
        fd.created(stdev);
        Ok(MockDevice {
            fd: fd.clone(),
            stdev: Object::new(fd.clone(), stdev, ObjectKind::Selftest),
            idev_id,
            hwpt_id,
            ioas_id,
        })
    }

    /// The automatic HWPT the device was attached to at birth (a mock
    /// paging domain of the IOAS, which `md_check_map` can inspect).
    pub fn auto_hwpt(&self) -> u32 {
        self.hwpt_id
    }

    /// Destroy the device now, with the kernel's answer.
    pub fn destroy(self) -> Result<(), Error> {
        self.stdev.destroy()
    }

    fn replace(&self, pt_id: u32) -> Result<(), Error> {
        let mut cmd = TestCmd::new(op::MOCK_DOMAIN_REPLACE, self.stdev.id());
        cmd.put32(UNION, pt_id);
        cmd.send(&self.fd, "MOCK_DOMAIN_REPLACE")
            .map_err(|e| Error::Device {
                device: self.name(),
                op: format!("replace -> {pt_id}"),
                errno: e.errno().unwrap_or(libc::EIO),
            })
    }
}

impl IommufdDevice for MockDevice {
    fn name(&self) -> String {
        format!("mock device {}", self.idev_id)
    }

    fn dev_id(&self) -> u32 {
        self.idev_id
    }

    fn attach(&self, pt_id: u32) -> Result<(), Error> {
        self.replace(pt_id)
    }

    /// The mock cannot be left unattached: back to its IOAS, which frees
    /// every HWPT the backend made for it.
    fn detach(&self) -> Result<(), Error> {
        self.replace(self.ioas_id)
    }
}

/// `IOMMU_TEST_OP_TRIGGER_VEVENT`: the mock reports a vEVENT carrying the
/// device's virt_id (cached when it was attached to a nested HWPT).
pub fn trigger_vevent(fd: &Iommufd, dev_id: u32) -> Result<(), Error> {
    let mut cmd = TestCmd::new(op::TRIGGER_VEVENT, 0);
    cmd.put32(UNION, dev_id);
    cmd.send(fd, "TRIGGER_VEVENT")
}

/// `IOMMU_TEST_OP_DEV_CHECK_CACHE`: Ok when the device's cache entry
/// `cache_id` holds `value`, EINVAL otherwise.
pub fn dev_check_cache(fd: &Iommufd, dev_id: u32, cache_id: u32, value: u32) -> Result<(), Error> {
    let mut cmd = TestCmd::new(op::DEV_CHECK_CACHE, dev_id);
    cmd.put32(UNION, cache_id);
    cmd.put32(UNION + 4, value);
    cmd.send(fd, "DEV_CHECK_CACHE")
}

/// `IOMMU_TEST_OP_MD_CHECK_MAP`: Ok when the mock paging domain `hwpt_id`
/// translates [iova, iova + len) to exactly the pages behind `user_va`.
pub fn md_check_map(
    fd: &Iommufd,
    hwpt_id: u32,
    iova: u64,
    len: u64,
    user_va: u64,
) -> Result<(), Error> {
    let mut cmd = TestCmd::new(op::MD_CHECK_MAP, hwpt_id);
    cmd.put64(UNION, iova);
    cmd.put64(UNION + 8, len);
    cmd.put64(UNION + 16, user_va);
    cmd.send(fd, "MD_CHECK_MAP")
}

/// The selftest vIOMMU flavour.
#[derive(Clone, Copy, Debug, Default)]
pub struct Selftest;

impl Flavour for Selftest {
    fn name(&self) -> &'static str {
        "selftest"
    }

    fn probe(&self, fd: &Iommufd, dev_id: u32, device: &str) -> Result<HostInfo, HostError> {
        let mut data = [0u8; 8];
        let mut arg = iommu_hw_info {
            size: size_of::<iommu_hw_info>() as u32,
            dev_id,
            data_len: data.len() as u32,
            data_uptr: data.as_mut_ptr() as u64,
            ..Default::default()
        };
        fd.get_hw_info(&mut arg)?;
        let ty = sys::hw_info_out_type(&arg);
        if ty != HW_INFO_TYPE_SELFTEST || le32(&data, 4) != HW_INFO_SELFTEST_REGVAL {
            return Err(HostError::NoNesting {
                device: device.to_string(),
                why: format!("hw_info type {ty:#x} is not the selftest mock's"),
            });
        }
        Ok(HostInfo {
            smmu: HostSmmuInfo::grace_like(),
            cmdqv: Some(CmdqvHw {
                version: 1,
                log2vcmdqs: 1,
                log2vsids: 4,
            }),
        })
    }

    fn viommu_type(&self) -> u32 {
        VIOMMU_TYPE_SELFTEST
    }

    fn viommu_data(&self) -> Vec<u8> {
        // struct iommu_viommu_selftest: in_data, out_data, mmap offset/length.
        let mut data = vec![0u8; 24];
        data[..4].copy_from_slice(&REGION_MAGIC.to_le_bytes());
        data
    }

    fn mmap_region(&self, data: &[u8]) -> Option<(u64, u64)> {
        let (offset, len) = (le64(data, 8), le64(data, 16));
        (len != 0).then_some((offset, len))
    }

    fn nested_hwpt(&self, ste: &NestedSte) -> (u32, Vec<u8>) {
        // struct iommu_hwpt_selftest: iotlb, pagetable_type.
        let mut data = vec![0u8; 8];
        data[..4].copy_from_slice(&(ste.words[0] as u32).to_le_bytes());
        (HWPT_DATA_SELFTEST, data)
    }

    fn invalidation(&self) -> (u32, u32) {
        (VIOMMU_INVALIDATE_DATA_SELFTEST, VIOMMU_INVALIDATE_ENTRY)
    }

    fn encode_invalidation(&self, command: Command, out: &mut Vec<u8>) {
        let (flags, cache_id) = match command.opcode() {
            Some(Opcode::CfgiCdAll) => (INVALIDATE_FLAG_ALL, 0),
            _ => (0, command.ssid()),
        };
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&command.sid().to_le_bytes());
        out.extend_from_slice(&cache_id.to_le_bytes());
    }

    fn hw_queue_type(&self) -> Option<u32> {
        Some(HW_QUEUE_TYPE_SELFTEST)
    }

    fn smmu_events(&self) -> Option<EventFormat> {
        Some(EventFormat {
            ty: VEVENTQ_TYPE_SELFTEST,
            payload: 4,
        })
    }

    fn decode_smmu_event(&self, payload: &[u8]) -> [u64; 4] {
        let vsid = u64::from(le32(payload, 0));
        [EVT_F_TRANSLATION | (vsid << 32), 0, 0, 0]
    }

    fn cmdqv_events(&self) -> Option<u32> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidation_entries_carry_sid_and_ssid() {
        let mut out = Vec::new();
        // CFGI_CD: SID in word 0 [63:32], SSID in word 0 [31:12].
        let cfgi_cd = Command([0x05 | (0x7 << 12) | (0x10 << 32), 0]);
        Selftest.encode_invalidation(cfgi_cd, &mut out);
        assert_eq!(out.len(), VIOMMU_INVALIDATE_ENTRY as usize);
        assert_eq!((le32(&out, 0), le32(&out, 4), le32(&out, 8)), (0, 0x10, 7));
        out.clear();
        Selftest.encode_invalidation(Command([0x06 | (0x8 << 32), 0]), &mut out);
        assert_eq!((le32(&out, 0), le32(&out, 4)), (INVALIDATE_FLAG_ALL, 8));
    }

    #[test]
    fn vevent_becomes_f_translation_for_the_vsid() {
        let record = Selftest.decode_smmu_event(&0x10u32.to_le_bytes());
        assert_eq!(record[0] & 0xff, EVT_F_TRANSLATION);
        assert_eq!(record[0] >> 32, 0x10);
    }

    #[test]
    fn test_cmd_header_holds_size_op_and_id() {
        let cmd = TestCmd::new(op::TRIGGER_VEVENT, 9);
        assert_eq!((cmd.get32(0), cmd.get32(4), cmd.get32(8)), (72, 17, 9));
    }
}
