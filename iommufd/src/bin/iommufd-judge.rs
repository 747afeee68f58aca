//! `iommufd-judge`: the iommufd backend and the device models over the
//! kernel's own iommufd code (the CONFIG_IOMMUFD_TEST selftest mock).
//!
//! Runs as /init of a small x86_64 VM (scripts/iommufd-mock/run.sh) or on
//! any host whose kernel has the mock. Every check drives the product code
//! (the vSMMU and CMD-QV models over `iommufd::Viommu` with the selftest
//! flavour) and asserts what the KERNEL answered: mappings it reports,
//! errnos it returns, objects it still holds. Prints one line per check and
//! `N passed, M failed`; as PID 1 it reports through isa-debug-exit
//! (port 0xf4: 0 = pass) so QEMU's exit status carries the verdict.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use devices::GuestMemory;
use devices::backend::Errno;
use devices::cmdqv::{Cmdqv, CmdqvBackend, CmdqvConfig};
use devices::emulated::EmulatedBackend;
use devices::emulated::cmdqv::{EmulatedCmdqv, EmulatedCmdqvConfig};
use devices::irq::NoInterrupts;
use devices::smmuv3::{Smmuv3, VsmmuConfig};
use iommufd::fd::Ioctl;
use iommufd::selftest::{self, MockDevice, Selftest};
use iommufd::{HostError, Ioas, Iommufd, IommufdDevice, SharedViommu, Viommu};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

/// Guest RAM mapped into the IOAS (inside the mock's aperture).
const RAM_A: u64 = 0x0100_0000;
const RAM_A_LEN: usize = 2 << 20;
/// Guest RAM the VMM deliberately leaves out of the IOAS (for ENOENT).
const RAM_B: u64 = 0x4000_0000;
const RAM_B_LEN: usize = 64 << 10;
/// Two devices behind the vSMMU, by vSID.
const VSIDS: [u32; 2] = [0x8, 0x10];
/// Guest structures in RAM A.
const CMDQ: u64 = RAM_A + 0x1000; // 256 entries, 4 KiB
const EVTQ: u64 = RAM_A + 0x4000; // 128 entries of 32 bytes, 4 KiB
const LVCMDQ0: u64 = RAM_A + 0x1_0000; // 4 KiB
const LVCMDQ1: u64 = RAM_A + 0x2_0000; // 4 KiB
/// Where 64 KiB queues may go (RAM A's upper MiB, away from the above).
const BIG_QUEUES: std::ops::Range<u64> = RAM_A + 0x10_0000..RAM_A + RAM_A_LEN as u64;
const BIG_QUEUE_LEN: u64 = 64 << 10;

mod pid1 {
    //! PID-1 duties: the judge is the VM's init, and std has no mount(2).

    /// Mount devtmpfs on /dev and proc on /proc (errors: already mounted).
    pub fn mount_filesystems() {
        for (source, target, fstype) in
            [("devtmpfs", "/dev", "devtmpfs"), ("proc", "/proc", "proc")]
        {
            let _ = std::fs::create_dir_all(target);
            let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
            let (source, target, fstype) = (c(source), c(target), c(fstype));
            // SAFETY: all three are valid NUL-terminated strings that live
            // across the call; no data pointer is passed.
            let rc = unsafe {
                libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    fstype.as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                eprintln!(
                    "judge: mount {target:?}: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }

    /// Write `code` to isa-debug-exit (QEMU exits with `(code << 1) | 1`).
    pub fn report(code: u8) {
        use std::io::{Seek, SeekFrom, Write};
        let result = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/port")
            .and_then(|mut port| {
                port.seek(SeekFrom::Start(0xf4))?;
                port.write_all(&[code])
            });
        if let Err(e) = result {
            eprintln!("judge: /dev/port: {e} (is CONFIG_DEVPORT set?)");
        }
    }
}

/// Prints every log line and keeps them, so checks can assert on the
/// models' guest-visible error messages.
struct CaptureLog(Mutex<Vec<String>>);

impl log::Log for CaptureLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let line = format!("[{} {}] {}", record.level(), record.target(), record.args());
            eprintln!("{line}");
            devices::lock_unpoisoned(&self.0).push(line);
        }
    }

    fn flush(&self) {}
}

static LOG: CaptureLog = CaptureLog(Mutex::new(Vec::new()));

fn log_since(mark: usize) -> Vec<String> {
    devices::lock_unpoisoned(&LOG.0)
        .iter()
        .skip(mark)
        .cloned()
        .collect()
}

fn log_mark() -> usize {
    devices::lock_unpoisoned(&LOG.0).len()
}

type Check = Result<(), String>;

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Check {
    if cond { Ok(()) } else { Err(what()) }
}

/// What the process holds: open fds and mappings (from /proc/self).
fn footprint() -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let maps = std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count());
    (fds, maps)
}

/// The VM under test: an IOAS with RAM A, two mock devices, a selftest
/// vIOMMU shared by a vSMMU model and a CMD-QV model.
struct Rig {
    fd: Arc<Iommufd>,
    mem: GuestMemory,
    devices: Vec<Arc<MockDevice>>,
    viommu: SharedViommu,
    smmu: Smmuv3,
    cmdqv: Cmdqv,
    ioas: Ioas,
}

fn guest_ram() -> Result<GuestMemory, String> {
    GuestMemory::from_ranges(&[
        (GuestAddress(RAM_A), RAM_A_LEN),
        (GuestAddress(RAM_B), RAM_B_LEN),
    ])
    .map_err(|e| format!("guest RAM: {e}"))
}

fn host_va(mem: &GuestMemory, gpa: u64) -> Result<u64, String> {
    let region = mem.find_region(GuestAddress(gpa)).ok_or("no region")?;
    let host = region
        .get_host_address(vm_memory::MemoryRegionAddress(gpa - region.start_addr().0))
        .map_err(|e| e.to_string())?;
    Ok(host as u64)
}

impl Rig {
    fn new(fd: &Arc<Iommufd>) -> Result<Self, String> {
        let mem = guest_ram()?;
        fault_in_backwards(&mem, BIG_QUEUES)?;
        let mut ioas = Ioas::new(fd).map_err(|e| e.to_string())?;
        // Only RAM A: RAM B stays out of the IOAS on purpose (ENOENT check).
        ioas.map(fd, RAM_A, host_va(&mem, RAM_A)?, RAM_A_LEN as u64)
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

    fn smmu_write(&mut self, offset: u64, value: u64, size: usize) {
        self.smmu.write(offset, &value.to_le_bytes()[..size]);
    }

    fn smmu_read32(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.smmu.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn cmdqv_write(&mut self, offset: u64, value: u64, size: usize) {
        self.cmdqv.write(offset, &value.to_le_bytes()[..size]);
    }

    fn cmdqv_read32(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.cmdqv.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    /// The Linux driver's bring-up of the trapped queue and event queue.
    fn enable_smmu_queues(&mut self) {
        self.smmu_write(0x90, (1 << 62) | CMDQ | 8, 8); // CMDQ_BASE: RA, 256 entries
        self.smmu_write(0x98, 0, 4);
        self.smmu_write(0x9c, 0, 4);
        self.smmu_write(0xa0, (1 << 62) | EVTQ | 7, 8); // EVTQ_BASE: 128 entries
        self.smmu_write(0x100a8, 0, 4);
        self.smmu_write(0x100ac, 0, 4);
        self.smmu_write(0x20, 0xc, 4); // CR0: CMDQEN | EVTQEN
    }

    /// Put `commands` + CMD_SYNC at PROD and ring PROD; returns the new CONS.
    fn submit(&mut self, commands: &[[u64; 2]]) -> u32 {
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
    fn enable_cmdqv(&mut self) {
        self.cmdqv_write(0x0, 1, 4);
        self.cmdqv_write(0x200, 0x1, 4);
        self.cmdqv_write(0x204, 0x3, 4);
        self.cmdqv_write(0x1000, 0x20001, 4);
    }

    fn set_base(&mut self, q: u64, base: u64) {
        self.cmdqv_write(0x40000 + 0x80 * q, base, 8);
    }

    /// LVCMDQ q's GERROR as the guest reads it (through the global alias).
    fn lvcmdq_gerror(&mut self, q: u64) -> u32 {
        self.cmdqv_read32(0x10000 + 0x80 * q + 0x10)
    }

    /// Teardown in the VMM's order: CMD-QV (queues descending), models,
    /// vIOMMU, then the devices and the IOAS the test owns.
    fn teardown(self) -> Check {
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
fn pfn(va: u64) -> Result<u64, String> {
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
fn fault_in_backwards(mem: &GuestMemory, range: std::ops::Range<u64>) -> Result<(), String> {
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
fn non_contiguous_window(mem: &GuestMemory) -> Result<u64, String> {
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

/// Guest RAM is in the IOAS at IOVA = GPA: the kernel's mock domain
/// translates RAM A to exactly our pages, and RAM B not at all.
fn ioas_maps_guest_ram(fd: &Arc<Iommufd>) -> Check {
    let mem = guest_ram()?;
    let mut ioas = Ioas::new(fd).map_err(|e| e.to_string())?;
    ioas.map_guest_ram(fd, &mem).map_err(|e| e.to_string())?;
    let device = MockDevice::new(fd, ioas.id()).map_err(|e| e.to_string())?;
    let check_a = selftest::md_check_map(
        fd,
        device.auto_hwpt(),
        RAM_A,
        RAM_A_LEN as u64,
        host_va(&mem, RAM_A)?,
    );
    let wrong = selftest::md_check_map(
        fd,
        device.auto_hwpt(),
        RAM_A,
        4096,
        host_va(&mem, RAM_A + 0x2000)?,
    );
    device.destroy().map_err(|e| e.to_string())?;
    ioas.destroy().map_err(|e| e.to_string())?;
    check_a.map_err(|e| format!("RAM A not mapped as expected: {e}"))?;
    ensure(wrong.is_err(), || {
        "MD_CHECK_MAP accepted the wrong pages".into()
    })
}

fn viommu_region_is_the_kernels(rig: &mut Rig) -> Check {
    let (addr, len) = rig.viommu.lock().region().ok_or("no region")?;
    let magic = rig.viommu.lock().region_read(0);
    ensure(magic == selftest::REGION_MAGIC, || {
        format!("region[0] = {magic:#x}, in_data not looped back")
    })?;
    rig.viommu.lock().region_write(8, 0x5eed_0001);
    // A second mapping of the same kernel pages sees the write.
    let offset = rig.viommu.lock().region_offset().ok_or("no offset")?;
    let again = iommufd::Mapping::shared(rig.fd.raw_fd(), offset, len)
        .map_err(|e| format!("re-mmap: errno {e}"))?;
    let seen = again.read_u32(8);
    drop(again);
    ensure(seen == Some(0x5eed_0001), || {
        format!("second mapping read {seen:?}")
    })?;
    // The live mapping holds the vIOMMU: the kernel refuses to destroy it.
    let id = rig.viommu.lock().viommu_id();
    let busy = rig.fd.destroy(id).err().and_then(|e| e.errno());
    ensure(busy == Some(libc::EBUSY), || {
        format!("destroy of the mapped vIOMMU gave {busy:?}")
    })?;
    println!("  region {len:#x} bytes at {addr:#x}, offset {offset:#x}");
    Ok(())
}

fn vdevice_per_device(rig: &mut Rig) -> Check {
    let viommu_id = rig.viommu.lock().viommu_id();
    for (device, vsid) in rig.devices.clone().iter().zip(VSIDS) {
        let again = rig
            .fd
            .vdevice_alloc(viommu_id, device.dev_id(), u64::from(vsid) + 1);
        ensure(
            again.err().and_then(|e| e.errno()) == Some(libc::EEXIST),
            || format!("second vDEVICE for {} was not EEXIST", device.name()),
        )?;
    }
    for (slot, vsid) in VSIDS.iter().enumerate() {
        let sid_match = rig.cmdqv_read32(0x1040 + 4 * slot as u64);
        ensure(sid_match == (vsid << 1) | 1, || {
            format!("SID_MATCH({slot}) = {sid_match:#x}")
        })?;
    }
    Ok(())
}

fn backend_order_errors(rig: &mut Rig) -> Check {
    let mut backend = rig.viommu.cmdqv().ok_or("no CMD-QV backend")?;
    let io = backend
        .hw_queue_alloc(1, LVCMDQ1, 4096)
        .err()
        .map(|e| e.errno);
    ensure(io == Some(Errno::Io), || {
        format!("index 1 before 0 gave {io:?}, not EIO")
    })?;
    backend
        .hw_queue_alloc(0, LVCMDQ0, 4096)
        .map_err(|e| e.to_string())?;
    backend
        .hw_queue_alloc(1, LVCMDQ1, 4096)
        .map_err(|e| e.to_string())?;
    let busy = backend.hw_queue_free(0).err().map(|e| e.errno);
    ensure(busy == Some(Errno::Busy), || {
        format!("freeing 0 under 1 gave {busy:?}, not EBUSY")
    })?;
    backend.hw_queue_free(1).map_err(|e| e.to_string())?;
    backend.hw_queue_free(0).map_err(|e| e.to_string())
}

fn hw_queues_ascending_through_the_model(rig: &mut Rig) -> Check {
    let before = rig.fd.count(Ioctl::HwQueueAlloc);
    rig.enable_cmdqv();
    rig.set_base(1, LVCMDQ1 | 8); // LVCMDQ1 first: deferred until 0 has one
    rig.set_base(0, LVCMDQ0 | 8);
    let indexes = rig.viommu.lock().hw_queue_indexes();
    ensure(indexes == [0, 1], || format!("HW queues {indexes:?}"))?;
    let calls = rig.fd.count(Ioctl::HwQueueAlloc) - before;
    ensure(calls == 2, || {
        format!("{calls} HW_QUEUE_ALLOC ioctls for 2 queues")
    })?;
    Ok(())
}

fn kernel_refusals_become_cmdq_init_err(rig: &mut Rig) -> Check {
    // 64 KiB on 4 KiB pages: the model accepts it, the kernel cannot pin it
    // physically contiguous.
    let big = non_contiguous_window(&rig.mem)?;
    println!("  64 KiB queue at {big:#x}: its pages are not physically contiguous (pagemap)");
    let mark = log_mark();
    rig.set_base(1, big | 12);
    let gerror = rig.lvcmdq_gerror(1);
    ensure(gerror & 0x4 != 0, || {
        format!("LVCMDQ1 GERROR {gerror:#x} lacks CMDQ_INIT_ERR")
    })?;
    let lines = log_since(mark);
    ensure(
        lines
            .iter()
            .any(|l| l.contains("EFAULT") && l.contains("hugepages=on")),
        || "no log line with the kernel's EFAULT and the hugepages hint".into(),
    )?;
    // Guest RAM that is not in the IOAS: ENOENT.
    let mark = log_mark();
    rig.set_base(1, RAM_B | 8);
    ensure(log_since(mark).iter().any(|l| l.contains("ENOENT")), || {
        "no ENOENT in the log".into()
    })?;
    ensure(rig.viommu.lock().hw_queue_indexes() == [0], || {
        "queue 1 exists after refusals".into()
    })?;
    // A good BASE gets the queue back, and the guest's INIT_ERR clears.
    rig.set_base(1, LVCMDQ1 | 8);
    ensure(rig.viommu.lock().hw_queue_indexes() == [0, 1], || {
        "queue 1 not re-allocated".into()
    })?;
    let gerror = rig.lvcmdq_gerror(1);
    ensure(gerror & 0x4 == 0, || {
        format!("LVCMDQ1 GERROR {gerror:#x} keeps CMDQ_INIT_ERR after its HW queue came back")
    })
}

fn invalidation_batch_is_one_ioctl(rig: &mut Rig) -> Check {
    rig.enable_smmu_queues();
    let dev0 = rig.devices[0].dev_id();
    for cache in 0..4 {
        selftest::dev_check_cache(&rig.fd, dev0, cache, selftest::DEV_CACHE_DEFAULT)
            .map_err(|e| format!("cache {cache} not at its default before: {e}"))?;
    }
    let cfgi_cd = |vsid: u32, ssid: u64| [0x05 | (ssid << 12) | (u64::from(vsid) << 32), 0];
    let batch: Vec<[u64; 2]> = (0..4)
        .map(|ssid| cfgi_cd(VSIDS[0], ssid))
        .chain([cfgi_cd(VSIDS[0], 1)])
        .collect();
    let before = rig.fd.count(Ioctl::HwptInvalidate);
    let cons = rig.submit(&batch);
    let calls = rig.fd.count(Ioctl::HwptInvalidate) - before;
    ensure(calls == 1, || {
        format!("{calls} IOMMU_HWPT_INVALIDATE for one batch")
    })?;
    let entries = rig.fd.last_invalidate_entries();
    ensure(entries == 5, || format!("entry_num {entries}, not 5"))?;
    ensure(cons == 6, || format!("CONS {cons:#x} after 5 + CMD_SYNC"))?;
    for cache in 0..4 {
        selftest::dev_check_cache(&rig.fd, dev0, cache, 0)
            .map_err(|e| format!("cache {cache} not invalidated: {e}"))?;
    }
    Ok(())
}

fn bad_entry_stops_cons_on_it(rig: &mut Rig) -> Check {
    let dev1 = rig.devices[1].dev_id();
    let cfgi_cd = |ssid: u64| [0x05 | (ssid << 12) | (u64::from(VSIDS[1]) << 32), 0];
    let start = rig.smmu_read32(0x9c) & 0xff;
    // Entry 2 names cache 7: the mock refuses it (EINVAL) after handling 2.
    let before = rig.fd.count(Ioctl::HwptInvalidate);
    let cons = rig.submit(&[cfgi_cd(0), cfgi_cd(1), cfgi_cd(7), cfgi_cd(2)]);
    let calls = rig.fd.count(Ioctl::HwptInvalidate) - before;
    ensure(calls == 1, || format!("{calls} ioctls"))?;
    let err = (cons >> 24) & 0x7f;
    ensure(cons & 0xff == start + 2 && err == 1, || {
        format!("CONS {cons:#x}: want index {} with CERROR_ILL", start + 2)
    })?;
    let gerror = rig.smmu_read32(0x60);
    ensure(gerror & 1 != 0, || {
        format!("GERROR {gerror:#x} lacks CMDQ_ERR")
    })?;
    for (cache, want) in [(0, 0), (1, 0), (2, selftest::DEV_CACHE_DEFAULT)] {
        selftest::dev_check_cache(&rig.fd, dev1, cache, want)
            .map_err(|e| format!("cache {cache} should hold {want:#x}: {e}"))?;
    }
    // Acknowledge like Linux (skip the bad entry) so later checks run.
    rig.smmu_write(0x9c, u64::from(start + 3), 4);
    rig.smmu_write(0x64, u64::from(gerror), 4);
    Ok(())
}

fn vevent_reaches_guest_event_queue(rig: &mut Rig) -> Check {
    let dev0 = rig.devices[0].dev_id();
    selftest::trigger_vevent(&rig.fd, dev0).map_err(|e| e.to_string())?;
    rig.smmu.process_events();
    let prod = rig.smmu_read32(0x100a8);
    ensure(prod & 0xff == 1, || format!("EVTQ_PROD {prod:#x}"))?;
    let word0: u64 = rig
        .mem
        .read_obj(GuestAddress(EVTQ))
        .map_err(|e| e.to_string())?;
    ensure(
        word0 & 0xff == 0x10 && word0 >> 32 == u64::from(VSIDS[0]),
        || {
            format!(
                "event record word 0 {word0:#x}: want F_TRANSLATION for vSID {:#x}",
                VSIDS[0]
            )
        },
    )
}

fn lost_vevents_set_the_overflow_flag(rig: &mut Rig) -> Check {
    let dev1 = rig.devices[1].dev_id();
    let depth = iommufd::viommu::VEVENTQ_DEPTH;
    for _ in 0..depth + 8 {
        selftest::trigger_vevent(&rig.fd, dev1).map_err(|e| e.to_string())?;
    }
    rig.smmu.process_events();
    let prod = rig.smmu_read32(0x100a8);
    ensure(prod >> 31 == 1, || {
        format!("EVTQ_PROD {prod:#x} lacks OVFLG")
    })?;
    ensure(prod & 0xff == 1 + depth, || {
        format!("EVTQ_PROD {prod:#x}: want {} records", 1 + depth)
    })
}

/// The same misuse gives the same errno from the emulated backend and from
/// the kernel, for every rule both enforce.
fn errno_table(fd: &Arc<Iommufd>) -> Check {
    let mem = guest_ram()?;
    let emulated_viommu = EmulatedBackend::new();
    let mut emulated = EmulatedCmdqv::new(
        emulated_viommu.clone(),
        mem,
        Arc::new(NoInterrupts),
        EmulatedCmdqvConfig::default(),
    )
    .map_err(|e| e.to_string())?;
    let rig = Rig::new(fd)?;
    let mut kernel = rig.viommu.cmdqv().ok_or("no CMD-QV")?;
    type Step = (&'static str, fn(&mut dyn CmdqvBackend) -> Option<Errno>);
    let steps: [Step; 7] = [
        ("index 1 before 0", |b| {
            b.hw_queue_alloc(1, LVCMDQ1, 4096).err().map(|e| e.errno)
        }),
        ("length 0", |b| {
            b.hw_queue_alloc(0, LVCMDQ0, 0).err().map(|e| e.errno)
        }),
        ("base + length wraps", |b| {
            b.hw_queue_alloc(0, u64::MAX, 4096).err().map(|e| e.errno)
        }),
        ("not in guest RAM / IOAS", |b| {
            b.hw_queue_alloc(0, 0x7000_0000, 4096)
                .err()
                .map(|e| e.errno)
        }),
        ("index 0 twice", |b| {
            let _ = b.hw_queue_alloc(0, LVCMDQ0, 4096);
            b.hw_queue_alloc(0, LVCMDQ0, 4096).err().map(|e| e.errno)
        }),
        ("index past the last queue", |b| {
            let _ = b.hw_queue_alloc(1, LVCMDQ1, 4096);
            b.hw_queue_alloc(2, LVCMDQ1 + 0x1000, 4096)
                .err()
                .map(|e| e.errno)
        }),
        ("free 0 while 1 exists", |b| {
            b.hw_queue_free(0).err().map(|e| e.errno)
        }),
    ];
    let mut mismatches = Vec::new();
    for (what, step) in steps {
        let (from_emulated, from_kernel) = (step(&mut emulated), step(&mut kernel));
        println!("  {what:28} emulated {from_emulated:?}, kernel {from_kernel:?}");
        if from_emulated != from_kernel || from_kernel.is_none() {
            mismatches.push(what);
        }
    }
    // vDEVICE: a second virt_id for a device, the same virt_id twice.
    let viommu_id = rig.viommu.lock().viommu_id();
    let kernel_dup = rig
        .fd
        .vdevice_alloc(viommu_id, rig.devices[0].dev_id(), 0x99)
        .err()
        .and_then(|e| e.errno());
    emulated_viommu
        .vdevice_alloc(0x20, 0x20)
        .map_err(|e| e.to_string())?;
    let emulated_dup = emulated_viommu
        .vdevice_alloc(0x21, 0x20)
        .err()
        .map(|e| e.errno);
    println!(
        "  {:28} emulated {emulated_dup:?}, kernel {:?}",
        "second vDEVICE",
        kernel_dup.map(iommufd::error::errno_class)
    );
    if kernel_dup.map(iommufd::error::errno_class) != emulated_dup {
        mismatches.push("second vDEVICE");
    }
    let _ = kernel.hw_queue_free(1);
    let _ = kernel.hw_queue_free(0);
    drop(kernel);
    rig.teardown()?;
    ensure(mismatches.is_empty(), || {
        format!("errno differs for: {}", mismatches.join(", "))
    })
}

/// A setup that fails halfway (two devices with one vSID: the second
/// vDEVICE is EEXIST) leaves no object, fd or mapping behind.
fn failed_setup_leaks_nothing(fd: &Arc<Iommufd>) -> Check {
    let mem = guest_ram()?;
    let mut ioas = Ioas::new(fd).map_err(|e| e.to_string())?;
    ioas.map(fd, RAM_A, host_va(&mem, RAM_A)?, RAM_A_LEN as u64)
        .map_err(|e| e.to_string())?;
    let a = Arc::new(MockDevice::new(fd, ioas.id()).map_err(|e| e.to_string())?);
    let b = Arc::new(MockDevice::new(fd, ioas.id()).map_err(|e| e.to_string())?);
    let live_before = fd.live_objects();
    let footprint_before = footprint();
    let devices: Vec<(Arc<dyn IommufdDevice>, u32)> = vec![(a.clone(), 0x8), (b.clone(), 0x8)];
    let result = Viommu::new(fd, ioas.id(), Arc::new(Selftest), devices);
    let err = match result {
        Ok(_) => return Err("two vDEVICEs with one vSID were accepted".into()),
        Err(e) => e,
    };
    ensure(
        matches!(&err, HostError::Setup(e) if e.errno() == Some(libc::EEXIST)),
        || format!("failed with {err}"),
    )?;
    let live_after = fd.live_objects();
    ensure(live_after == live_before, || {
        format!("objects left: {live_after:?} (before: {live_before:?})")
    })?;
    ensure(footprint() == footprint_before, || {
        format!("fds/maps {:?} -> {:?}", footprint_before, footprint())
    })?;
    // More devices than the VINTF's 16 SID slots: refused before any object.
    let many = (0..17)
        .map(|_| MockDevice::new(fd, ioas.id()).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let live = fd.live_objects();
    let bound = many
        .iter()
        .enumerate()
        .map(|(i, d)| (d.clone() as Arc<dyn IommufdDevice>, 0x100 + i as u32))
        .collect();
    let refused = Viommu::new(fd, ioas.id(), Arc::new(Selftest), bound);
    ensure(
        matches!(
            refused,
            Err(HostError::TooManyDevices {
                count: 17,
                slots: 16
            })
        ),
        || {
            format!(
                "17 devices on 16 SID slots: {:?}",
                refused.err().map(|e| e.to_string())
            )
        },
    )?;
    ensure(fd.live_objects() == live, || {
        "the refused vIOMMU left objects".into()
    })?;
    for device in many.into_iter().chain([a, b]) {
        Arc::try_unwrap(device)
            .map_err(|_| "device still shared")?
            .destroy()
            .map_err(|e| e.to_string())?;
    }
    ioas.destroy().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let pid1 = std::process::id() == 1;
    if pid1 {
        pid1::mount_filesystems();
    }
    let _ = log::set_logger(&LOG);
    log::set_max_level(log::LevelFilter::Info);

    let baseline = footprint();
    let (passed, failed) = match Iommufd::open() {
        Ok(fd) => run_checks(Arc::new(fd), baseline),
        Err(e) => {
            println!("JUDGE FAIL open: {e} (a kernel with CONFIG_IOMMUFD_TEST?)");
            (0, 1)
        }
    };
    println!("{passed} passed, {failed} failed");
    let code = u8::from(failed != 0);
    if pid1 {
        pid1::report(code);
    }
    ExitCode::from(code)
}

fn run_checks(fd: Arc<Iommufd>, baseline: (usize, usize)) -> (usize, usize) {
    let mut passed = 0;
    let mut failed = 0;
    let mut record = |name: &str, result: Check| match result {
        Ok(()) => {
            println!("JUDGE ok   {name}");
            passed += 1;
        }
        Err(why) => {
            println!("JUDGE FAIL {name}: {why}");
            failed += 1;
        }
    };
    record("ioas_maps_guest_ram", ioas_maps_guest_ram(&fd));
    match Rig::new(&fd) {
        Ok(mut rig) => {
            type RigCheck = fn(&mut Rig) -> Check;
            let checks: [(&str, RigCheck); 9] = [
                ("viommu_region_is_the_kernels", viommu_region_is_the_kernels),
                ("vdevice_per_device_with_its_vsid", vdevice_per_device),
                (
                    "backend_out_of_order_gets_kernel_errno",
                    backend_order_errors,
                ),
                (
                    "hw_queues_0_then_1_through_the_model",
                    hw_queues_ascending_through_the_model,
                ),
                (
                    "kernel_refusals_become_cmdq_init_err",
                    kernel_refusals_become_cmdq_init_err,
                ),
                (
                    "invalidation_batch_is_one_ioctl",
                    invalidation_batch_is_one_ioctl,
                ),
                ("bad_entry_stops_cons_on_it", bad_entry_stops_cons_on_it),
                (
                    "vevent_reaches_guest_event_queue",
                    vevent_reaches_guest_event_queue,
                ),
                (
                    "lost_vevents_set_the_overflow_flag",
                    lost_vevents_set_the_overflow_flag,
                ),
            ];
            for (name, check) in checks {
                record(name, check(&mut rig));
            }
            record("teardown_in_kernel_order", rig.teardown());
        }
        Err(e) => record("rig", Err(e)),
    }
    record("errno_table_emulated_vs_kernel", errno_table(&fd));
    record(
        "failed_setup_leaks_nothing",
        failed_setup_leaks_nothing(&fd),
    );
    let every = fd.every_object();
    let left: Vec<u32> = every
        .iter()
        .copied()
        .filter(|id| fd.destroy(*id).err().and_then(|e| e.errno()) != Some(libc::ENOENT))
        .collect();
    record(
        "no_object_left",
        ensure(left.is_empty() && !every.is_empty(), || {
            format!("ids still alive in the kernel: {left:?}")
        }),
    );
    drop(fd);
    let after = footprint();
    record(
        "fds_and_mappings_back_to_start",
        ensure(after == baseline, || {
            format!("fds/maps {baseline:?} -> {after:?}")
        }),
    );
    (passed, failed)
}
