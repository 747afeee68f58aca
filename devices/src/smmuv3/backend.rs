//! The host side of the vSMMU: what the model needs from iommufd.
//!
//! Implemented by the VMM's iommufd backend (nested HWPT alloc/replace,
//! `IOMMU_HWPT_INVALIDATE` on the vIOMMU, the ARM_SMMUV3 vEVENTQ) and by
//! [`crate::emulated::EmulatedBackend`] for tests, replay and fuzzing.

use super::cmd::Command;
use super::idr::HostSmmuInfo;
use super::ste::NestedSte;
use crate::backend::BackendError;

/// A batched invalidation that stopped part-way.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalidation failed after {done} commands: {error}")]
pub struct InvalidateError {
    /// Commands handled before the failing one (the kernel's `entry_num` out).
    pub done: usize,
    /// Why the command at index `done` failed.
    pub error: BackendError,
}

/// The host backend of one vSMMUv3 (one iommufd vIOMMU).
///
/// `Send` because the VMM keeps each model behind a `Mutex` and drives it
/// from vCPU threads.
pub trait VsmmuBackend: Send {
    /// `IOMMU_GET_HW_INFO` (type ARM_SMMUV3) of the physical SMMU.
    fn hw_info(&self) -> Result<HostSmmuInfo, BackendError>;

    /// Make `vsid`'s device translate as `ste` says: `IOMMU_HWPT_ALLOC` of a
    /// nested HWPT carrying `ste.words` on the vIOMMU, then replace the
    /// device's attachment. Called only for vSIDs with a vDEVICE.
    ///
    /// After an error the model installs the abort STE (the guest is told
    /// C_BAD_STE and must not find its device on the old translation); a
    /// backend may already have done so itself.
    fn install_ste(&mut self, vsid: u32, ste: &NestedSte) -> Result<(), BackendError>;

    /// Forward a batch of guest invalidation commands, in guest order, as ONE
    /// `IOMMU_HWPT_INVALIDATE` on the vIOMMU.
    ///
    /// One call per batch (the commands between two CMD_SYNCs), not one per
    /// command: each ioctl costs a host CMD_SYNC round trip, and an unmap of
    /// N pages by the guest is N TLBI_NH_VA + 1 CMD_SYNC. Per-command
    /// forwarding (what the first nested-SMMU VMMs did) makes that N host
    /// syncs; batching makes it one, which is what the kernel's
    /// `entry_num` array interface exists for.
    fn invalidate(&mut self, commands: &[Command]) -> Result<(), InvalidateError>;

    /// Drain the vEVENTQ: raw SMMUv3 event records with the StreamID field
    /// already rewritten to the vSID, oldest first.
    fn poll_events(&mut self) -> Vec<[u64; 4]>;

    /// True once after the host dropped events (the vEVENTQ overflowed:
    /// a LOST_EVENTS header or a gap in its sequence numbers). The model
    /// turns it into the guest event queue's overflow flag.
    fn take_events_lost(&mut self) -> bool {
        false
    }
}
