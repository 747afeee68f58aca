//! The host side of the CMD-QV model: what a backend (iommufd on a Grace
//! host, or the `emulated` software model) must provide.
//!
//! The calls mirror the kernel's iommufd contract for a
//! `IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV` vIOMMU (fact sheet §1.4, §1.8, §1.10,
//! §1.11, §2.7). Ordering rules (ascending alloc, descending free) are the
//! caller's job; a backend refuses a broken order the way the kernel does.

use std::sync::Arc;

use crate::backend::BackendError;
use crate::mapping::Mapping;

/// The host's CMD-QV description (`struct iommu_hw_info_tegra241_cmdqv`)
/// plus the host SMMU's IDR1.CMDQS, which bounds a VCMDQ's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdqvHostInfo {
    /// CMD-QV version (PARAM[3:0]).
    pub version: u8,
    /// log2 of the logical VCMDQs per VINTF.
    pub log2vcmdqs: u8,
    /// log2 of the SID replacement slots per VINTF.
    pub log2vsids: u8,
    /// Host IDR1.CMDQS: a VCMDQ holds at most `1 << cmdqs` entries.
    pub cmdqs: u8,
}

/// How the VINTF0 page0 reaches the guest.
#[derive(Clone, Debug)]
pub enum Page0Mode {
    /// Every page0 access exits to the model, which forwards it to
    /// [`CmdqvBackend::page0_read`] / [`CmdqvBackend::page0_write`].
    Trapped,
    /// The VMM installs this mapping of the host page0 (64 KiB) as a memory
    /// slot while VINTF0 is enabled; the guest then drives PROD/CONS/CONFIG
    /// with no exit. The slot holds a share of the mapping, so the page
    /// stays mapped until the slot is gone.
    Mapped(Arc<Mapping>),
}

/// The host backend of one CMD-QV (one VINTF of one vIOMMU).
pub trait CmdqvBackend: Send {
    /// The host CMD-QV info (`IOMMU_GET_HW_INFO`, type TEGRA241_CMDQV).
    fn info(&self) -> CmdqvHostInfo;
    /// How page0 is exposed.
    fn page0_mode(&self) -> Page0Mode;
    /// `IOMMU_HW_QUEUE_ALLOC(TEGRA241_CMDQV, index, nesting_parent_iova = gpa,
    /// length = len)`.
    fn hw_queue_alloc(&mut self, index: u32, gpa: u64, len: u64) -> Result<(), BackendError>;
    /// `IOMMU_DESTROY` of the HW queue at `index`.
    fn hw_queue_free(&mut self, index: u32) -> Result<(), BackendError>;
    /// Read a 32-bit register of the host VINTF page0 at `offset` (0..64 KiB).
    fn page0_read(&mut self, offset: u64) -> u32;
    /// Write a 32-bit register of the host VINTF page0 with guest-access
    /// semantics (read-only registers ignore the write).
    fn page0_write(&mut self, offset: u64, value: u32);
    /// The next vEVENT of type TEGRA241_CMDQV: the raw 128-bit
    /// LVCMDQ_ERR_MAP of the VINTF (`struct iommu_vevent_tegra241_cmdqv`).
    fn poll_error_event(&mut self) -> Option<[u64; 2]>;
    /// The SID_MATCH/SID_REPLACE slots `IOMMU_VDEVICE_ALLOC` programmed, in
    /// slot order: the vSID a slot holds, `None` for a free one. The kernel
    /// takes a slot per vDEVICE (an IDA) and never moves the others, so a
    /// slot keeps its vSID when another vDEVICE goes away.
    fn sid_slots(&self) -> Vec<Option<u32>>;
}
