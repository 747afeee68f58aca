//! The host side of the vSMMU: what the model needs from iommufd.
//!
//! Implemented by the VMM's iommufd backend (nested HWPT alloc/replace,
//! `IOMMU_HWPT_INVALIDATE` on the vIOMMU, the ARM_SMMUV3 vEVENTQ) and by
//! [`crate::emulated::EmulatedBackend`] for tests, replay and fuzzing.

use super::cmd::Command;
use super::idr::HostSmmuInfo;
use super::ste::NestedSte;
use crate::backend::{BackendError, Errno};

/// How many commands of one `IOMMU_HWPT_INVALIDATE` the kernel's
/// `arm_vsmmu_cache_invalidate` (arm-smmu-v3-iommufd.c) issues to the host
/// command queue at once: `CMDQ_BATCH_ENTRIES - 1`, with
/// `CMDQ_BATCH_ENTRIES = BITS_PER_LONG` = 64 on arm64. Each such chunk is
/// issued with a host CMD_SYNC that the kernel waits for.
pub const HOST_INVALIDATE_CHUNK: usize = 63;

/// A batched invalidation that stopped part-way.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalidation stopped at entry {done}: {error}")]
pub struct InvalidateError {
    /// The kernel's written-back `entry_num`. NOT always the number of
    /// commands the host executed: see [`InvalidateError::outcome`].
    pub done: usize,
    /// The errno of the ioctl.
    pub error: BackendError,
}

/// What the host did with a batch of `len` commands whose
/// `IOMMU_HWPT_INVALIDATE` failed, read from its errno and `entry_num` the
/// way `arm_vsmmu_cache_invalidate` writes them: it converts the commands
/// one by one and issues every [`HOST_INVALIDATE_CHUNK`] converted ones (and
/// the rest at the end) with a host CMD_SYNC. Indexes are into the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidateOutcome {
    /// EIO: the kernel refused command `at` (an opcode or vSID it does not
    /// take) while converting it; `entry_num` is `at`. The chunk holding
    /// `at` was never issued: commands `unissued..at` were converted but
    /// not executed, those before `unissued` were.
    Refused {
        /// The refused command.
        at: usize,
        /// First command of its chunk.
        unissued: usize,
    },
    /// ETIMEDOUT: the host CMD_SYNC after the chunk ending at `last` did
    /// not complete (an ATC invalidation the device never acknowledged:
    /// the host SMMU's CERROR_ATC_INV_SYNC). `entry_num` is `last`, the
    /// chunk's LAST command, not the one that failed: the whole chunk was
    /// issued, the commands after it were not.
    SyncTimedOut {
        /// Last command of the chunk whose sync timed out.
        last: usize,
    },
    /// Any other errno (the array could not be copied, no memory): nothing
    /// is known to have run from `at` on.
    Failed {
        /// Where the kernel stopped.
        at: usize,
    },
}

impl InvalidateError {
    /// What the host did with the `len` commands of the failed call.
    pub fn outcome(&self, len: usize) -> InvalidateOutcome {
        // A backend that claims more than it was given stopped on the last
        // command at the latest.
        let at = self.done.min(len.saturating_sub(1));
        match self.error.errno {
            Errno::Io => InvalidateOutcome::Refused {
                at,
                unissued: at / HOST_INVALIDATE_CHUNK * HOST_INVALIDATE_CHUNK,
            },
            Errno::TimedOut => InvalidateOutcome::SyncTimedOut { last: at },
            _ => InvalidateOutcome::Failed { at },
        }
    }
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
    /// `entry_num` array interface exists for. A failure carries the
    /// kernel's errno and `entry_num`, which [`InvalidateError::outcome`]
    /// reads.
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
