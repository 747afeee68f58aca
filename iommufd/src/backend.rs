//! The devices' backend traits over one [`Viommu`]: the vSMMU model and
//! the CMD-QV model each hold a handle; both handles share the vIOMMU, as
//! in the kernel they are one object. The vIOMMU is torn down when the
//! last handle goes (after the CMD-QV model freed its HW queues and the
//! VMM removed the page0 memory slot).

use std::sync::{Arc, Mutex, MutexGuard};

use devices::backend::BackendError;
use devices::cmdqv::{CmdqvBackend, CmdqvHostInfo, Page0Mode};
use devices::smmuv3::cmd::Command;
use devices::smmuv3::{HostSmmuInfo, InvalidateError, NestedSte, VsmmuBackend};

use crate::viommu::Viommu;

/// IDR1.CMDQS: log2 of the host SMMU's command queue entries.
fn idr1_cmdqs(idr1: u32) -> u8 {
    ((idr1 >> 21) & 0x1f) as u8
}

/// A shared vIOMMU.
#[derive(Clone, Debug)]
pub struct SharedViommu(Arc<Mutex<Viommu>>);

impl SharedViommu {
    /// Share `viommu` between the vSMMU and the CMD-QV backends.
    pub fn new(viommu: Viommu) -> Self {
        SharedViommu(Arc::new(Mutex::new(viommu)))
    }

    /// Lock it (a panic elsewhere does not make the vIOMMU unusable).
    pub fn lock(&self) -> MutexGuard<'_, Viommu> {
        devices::lock_unpoisoned(&self.0)
    }

    /// The vSMMU model's backend.
    pub fn vsmmu(&self) -> IommufdVsmmu {
        IommufdVsmmu(self.clone())
    }

    /// The CMD-QV model's backend; `None` when the vIOMMU is not a CMD-QV.
    pub fn cmdqv(&self) -> Option<IommufdCmdqv> {
        let viommu = self.lock();
        let hw = viommu.info().cmdqv?;
        // No page0 mapping, no CMD-QV model.
        viommu.region()?;
        let info = CmdqvHostInfo {
            version: hw.version,
            log2vcmdqs: hw.log2vcmdqs,
            log2vsids: hw.log2vsids,
            cmdqs: idr1_cmdqs(viommu.info().smmu.idr[1]),
        };
        drop(viommu);
        Some(IommufdCmdqv {
            viommu: self.clone(),
            info,
        })
    }
}

/// [`VsmmuBackend`] over a vIOMMU.
#[derive(Debug)]
pub struct IommufdVsmmu(SharedViommu);

impl VsmmuBackend for IommufdVsmmu {
    fn hw_info(&self) -> Result<HostSmmuInfo, BackendError> {
        Ok(self.0.lock().info().smmu)
    }

    fn install_ste(&mut self, vsid: u32, ste: &NestedSte) -> Result<(), BackendError> {
        self.0.lock().install_ste(vsid, ste)
    }

    fn invalidate(&mut self, commands: &[Command]) -> Result<(), InvalidateError> {
        self.0.lock().invalidate(commands)
    }

    fn poll_events(&mut self) -> Vec<[u64; 4]> {
        self.0.lock().poll_smmu_events()
    }

    fn take_events_lost(&mut self) -> bool {
        self.0.lock().take_smmu_events_lost()
    }
}

/// [`CmdqvBackend`] over a Tegra241 CMD-QV vIOMMU: HW queues, the VINTF
/// page0 the kernel let us mmap, CMD-QV error vEVENTs.
#[derive(Debug)]
pub struct IommufdCmdqv {
    viommu: SharedViommu,
    info: CmdqvHostInfo,
}

impl CmdqvBackend for IommufdCmdqv {
    fn info(&self) -> CmdqvHostInfo {
        self.info
    }

    /// The vIOMMU's page0 mapping, shared only for as long as the caller
    /// (the page0 memory slot) holds it: this handle keeps no share, so
    /// the vIOMMU's teardown, whenever it comes, finds page0 held by
    /// nobody once the slot is gone, unmaps it, and can destroy the vIOMMU.
    /// Trapped once the vIOMMU unmapped it (torn down).
    fn page0_mode(&self) -> Page0Mode {
        match self.viommu.lock().region() {
            Some(region) => Page0Mode::Mapped(region),
            None => Page0Mode::Trapped,
        }
    }

    fn hw_queue_alloc(&mut self, index: u32, gpa: u64, len: u64) -> Result<(), BackendError> {
        self.viommu.lock().hw_queue_alloc(index, gpa, len)
    }

    fn hw_queue_free(&mut self, index: u32) -> Result<(), BackendError> {
        self.viommu.lock().hw_queue_free(index)
    }

    fn page0_read(&mut self, offset: u64) -> u32 {
        self.viommu.lock().region_read(offset)
    }

    fn page0_write(&mut self, offset: u64, value: u32) {
        self.viommu.lock().region_write(offset, value);
    }

    fn poll_error_event(&mut self) -> Option<[u64; 2]> {
        self.viommu.lock().poll_cmdqv_error()
    }

    fn sid_slots(&self) -> Vec<Option<u32>> {
        self.viommu.lock().sid_slots().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdqs_is_idr1_bits_25_to_21() {
        assert_eq!(idr1_cmdqs(19 << 21 | 0x10), 19);
        assert_eq!(idr1_cmdqs(0x02730010), 19);
    }
}
