//! The VM under test: guest RAM, an IOAS, mock devices, a selftest vIOMMU
//! shared by the vSMMU and CMD-QV models, driven the way Linux drives them.

use std::sync::Arc;

use devices::GuestMemory;
use devices::cmdqv::{Cmdqv, CmdqvConfig};
use devices::irq::NoInterrupts;
use devices::smmuv3::{Smmuv3, VsmmuConfig};
use iommufd::selftest::{MockDevice, Selftest};
use iommufd::{Ioas, Iommufd, IommufdDevice, SharedViommu, Viommu};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::{Check, ensure};

/// Guest RAM mapped into the IOAS (inside the mock's aperture).
pub const RAM_A: u64 = 0x0100_0000;
pub const RAM_A_LEN: usize = 2 << 20;
/// Guest RAM the VMM deliberately leaves out of the IOAS (for ENOENT).
pub const RAM_B: u64 = 0x4000_0000;
pub const RAM_B_LEN: usize = 64 << 10;
/// The mock kernel is an x86_64 one: 4 KiB pages, the granule of IOAS maps.
pub const MOCK_HOST_PAGE: u64 = 4 << 10;
/// Two devices behind the vSMMU, by vSID.
pub const VSIDS: [u32; 2] = [0x8, 0x10];
/// Guest structures in RAM A.
pub const CMDQ: u64 = RAM_A + 0x1000; // 256 entries, 4 KiB
pub const EVTQ: u64 = RAM_A + 0x4000; // 128 entries of 32 bytes, 4 KiB
pub const LVCMDQ0: u64 = RAM_A + 0x1_0000; // 4 KiB
pub const LVCMDQ1: u64 = RAM_A + 0x2_0000; // 4 KiB
/// Where 64 KiB queues may go (RAM A's upper MiB, away from the above).
pub const BIG_QUEUES: std::ops::Range<u64> = RAM_A + 0x10_0000..RAM_A + RAM_A_LEN as u64;
pub const BIG_QUEUE_LEN: u64 = 64 << 10;

/// The VM under test: an IOAS with RAM A, two mock devices, a selftest
/// vIOMMU shared by a vSMMU model and a CMD-QV model.
pub struct Rig {
    pub fd: Arc<Iommufd>,
    pub mem: GuestMemory,
    pub devices: Vec<Arc<MockDevice>>,
    pub viommu: SharedViommu,
    pub smmu: Smmuv3,
    pub cmdqv: Cmdqv,
    pub ioas: Ioas,
}

pub fn guest_ram() -> Result<GuestMemory, String> {
    GuestMemory::from_ranges(&[
        (GuestAddress(RAM_A), RAM_A_LEN),
        (GuestAddress(RAM_B), RAM_B_LEN),
    ])
    .map_err(|e| format!("guest RAM: {e}"))
}

pub fn host_va(mem: &GuestMemory, gpa: u64) -> Result<u64, String> {
    let region = mem.find_region(GuestAddress(gpa)).ok_or("no region")?;
    let host = region
        .get_host_address(vm_memory::MemoryRegionAddress(gpa - region.start_addr().0))
        .map_err(|e| e.to_string())?;
    Ok(host as u64)
}

impl Rig {
    pub fn new(fd: &Arc<Iommufd>) -> Result<Self, String> {
        let mem = guest_ram()?;
        fault_in_backwards(&mem, BIG_QUEUES)?;
        let ioas = Ioas::new(fd).map_err(|e| e.to_string())?;
        // Only RAM A: RAM B stays out of the IOAS on purpose (ENOENT check).
        ioas.map(
            fd,
            RAM_A,
            host_va(&mem, RAM_A)?,
            RAM_A_LEN as u64,
            MOCK_HOST_PAGE,
        )
        .map_err(|e| e.to_string())?;
        let devices = (0..VSIDS.len())
            .map(|_| MockDevice::new(fd, ioas.id()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let bound = devices
            .iter()
            .zip(VSIDS)
            .map(|(d, vsid)| (d.clone() as Arc<dyn IommufdDevice>, vsid))
            .collect();
        let viommu =
            Viommu::new(fd, ioas.id(), Arc::new(Selftest), bound).map_err(|e| e.to_string())?;
        let viommu = SharedViommu::new(viommu);
        let config = VsmmuConfig {
            cmdq_log2size: 8,
            evtq_log2size: 7,
            ..VsmmuConfig::default()
        };
        let mut smmu = Smmuv3::new(
            &config,
            Box::new(viommu.vsmmu()),
            mem.clone(),
            Arc::new(NoInterrupts),
        )
        .map_err(|e| e.to_string())?;
        for vsid in VSIDS {
            smmu.register_stream(vsid);
        }
        let backend = viommu.cmdqv().ok_or("the selftest vIOMMU has no region")?;
        let cmdqv = Cmdqv::new(
            Box::new(backend),
            mem.clone(),
            Arc::new(NoInterrupts),
            // Not capped to the vSMMU's IDR1.CMDQS (as the VMM does): a
            // queue bigger than a page must reach the kernel so that its
            // EFAULT is judged (kernel_refusals_become_cmdq_init_err).
            CmdqvConfig::default(),
        )
        .map_err(|e| e.to_string())?;
        Ok(Rig {
            fd: fd.clone(),
            mem,
            devices,
            viommu,
            smmu,
            cmdqv,
            ioas,
        })
    }

    pub fn smmu_write(&mut self, offset: u64, value: u64, size: usize) {
        self.smmu.write(offset, &value.to_le_bytes()[..size]);
    }

    pub fn smmu_read32(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.smmu.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    pub fn cmdqv_write(&mut self, offset: u64, value: u64, size: usize) {
        self.cmdqv.write(offset, &value.to_le_bytes()[..size]);
    }

    pub fn cmdqv_read32(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.cmdqv.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    /// The Linux driver's bring-up of the trapped queue and event queue.
    pub fn enable_smmu_queues(&mut self) {
        self.smmu_write(0x90, (1 << 62) | CMDQ | 8, 8); // CMDQ_BASE: RA, 256 entries
        self.smmu_write(0x98, 0, 4);
        self.smmu_write(0x9c, 0, 4);
        self.smmu_write(0xa0, (1 << 62) | EVTQ | 7, 8); // EVTQ_BASE: 128 entries
        self.smmu_write(0x100a8, 0, 4);
        self.smmu_write(0x100ac, 0, 4);
        self.smmu_write(0x20, 0xc, 4); // CR0: CMDQEN | EVTQEN
    }

    /// Put `commands` + CMD_SYNC at PROD and ring PROD; returns the new CONS.
    pub fn submit(&mut self, commands: &[[u64; 2]]) -> u32 {
        let prod = self.smmu_read32(0x98) & 0xff;
        let mut at = prod;
        for words in commands.iter().chain(std::iter::once(&[0x46u64, 0])) {
            let gpa = CMDQ + u64::from(at % 256) * 16;
            let _ = self.mem.write_obj(words[0], GuestAddress(gpa));
            let _ = self.mem.write_obj(words[1], GuestAddress(gpa + 8));
            at += 1;
        }
        self.smmu_write(0x98, u64::from(at), 4);
        self.smmu_read32(0x9c)
    }

    /// The Linux tegra241-cmdqv order: CMDQV_EN, map LVCMDQs, VINTF0 EN.
    pub fn enable_cmdqv(&mut self) {
        self.cmdqv_write(0x0, 1, 4);
        self.cmdqv_write(0x200, 0x1, 4);
        self.cmdqv_write(0x204, 0x3, 4);
        self.cmdqv_write(0x1000, 0x20001, 4);
    }

    pub fn set_base(&mut self, q: u64, base: u64) {
        self.cmdqv_write(0x40000 + 0x80 * q, base, 8);
    }

    /// LVCMDQ q's GERROR as the guest reads it (through the global alias).
    pub fn lvcmdq_gerror(&mut self, q: u64) -> u32 {
        self.cmdqv_read32(0x10000 + 0x80 * q + 0x10)
    }

    /// Teardown in the VMM's order: CMD-QV (queues descending), models,
    /// vIOMMU, then the devices and the IOAS the test owns.
    pub fn teardown(self) -> Check {
        let Rig {
            fd,
            mut cmdqv,
            smmu,
            viommu,
            devices,
            ioas,
            mem,
        } = self;
        let refused_before = fd.failed_destroys();
        cmdqv.shutdown();
        drop(cmdqv);
        drop(smmu);
        drop(viommu);
        let mut errors = Vec::new();
        for device in devices {
            match Arc::try_unwrap(device) {
                Ok(device) => {
                    if let Err(e) = device.destroy() {
                        errors.push(e.to_string());
                    }
                }
                Err(_) => errors.push("a mock device is still shared".into()),
            }
        }
        if let Err(e) = ioas.destroy() {
            errors.push(e.to_string());
        }
        drop(mem);
        let refused = fd.failed_destroys() - refused_before;
        ensure(refused == 0, || {
            format!("{refused} IOMMU_DESTROY refused during teardown")
        })?;
        ensure(errors.is_empty(), || errors.join("; "))
    }
}

/// The physical frame behind host virtual address `va` (/proc/self/pagemap;
/// the judge runs as root, so PFNs are not hidden).
pub fn pfn(va: u64) -> Result<u64, String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut pagemap = std::fs::File::open("/proc/self/pagemap").map_err(|e| e.to_string())?;
    pagemap
        .seek(SeekFrom::Start(va / 4096 * 8))
        .map_err(|e| e.to_string())?;
    let mut entry = [0u8; 8];
    pagemap.read_exact(&mut entry).map_err(|e| e.to_string())?;
    let entry = u64::from_le_bytes(entry);
    ensure(entry >> 63 == 1, || format!("page at {va:#x} not present"))?;
    Ok(entry & ((1 << 55) - 1))
}

/// Fault in the pages of `range` last to first, before the IOAS pins
/// them: the page allocator rarely hands those out in ascending order.
pub fn fault_in_backwards(mem: &GuestMemory, range: std::ops::Range<u64>) -> Result<(), String> {
    let pages: Vec<u64> = range.step_by(4096).collect();
    for page in pages.into_iter().rev() {
        mem.write_obj(0u8, GuestAddress(page))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A 64 KiB-aligned window of RAM A whose pages are not physically
/// contiguous (checked in /proc/self/pagemap), so the kernel must refuse a
/// HW queue there (EFAULT).
pub fn non_contiguous_window(mem: &GuestMemory) -> Result<u64, String> {
    for gpa in BIG_QUEUES.step_by(BIG_QUEUE_LEN as usize) {
        let pfns = (gpa..gpa + BIG_QUEUE_LEN)
            .step_by(4096)
            .map(|page| host_va(mem, page).and_then(pfn))
            .collect::<Result<Vec<_>, _>>()?;
        if pfns.windows(2).any(|w| w[1] != w[0] + 1) {
            return Ok(gpa);
        }
    }
    Err("no physically discontiguous 64 KiB window in RAM A".into())
}
