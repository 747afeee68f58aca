//! The checks: each drives the product code and asserts the kernel's answer.

use std::sync::Arc;

use devices::backend::Errno;
use devices::cmdqv::CmdqvBackend;
use devices::emulated::EmulatedBackend;
use devices::emulated::cmdqv::{EmulatedCmdqv, EmulatedCmdqvConfig};
use devices::irq::NoInterrupts;
use devices::smmuv3::cmd::Command;
use devices::smmuv3::{NestedSte, SteConfig};
use iommufd::Ioctl;
use iommufd::flavour::EventFormat;
use iommufd::selftest::{self, MockDevice, Selftest};
use iommufd::{Flavour, HostError, HostInfo, Ioas, Iommufd, IommufdDevice, Viommu};
use vm_memory::{Bytes, GuestAddress};

use crate::rig::*;
use crate::{Check, ensure, footprint, log_mark, log_since};

/// Guest RAM is in the IOAS at IOVA = GPA: the kernel's mock domain
/// translates RAM A to exactly our pages, and RAM B not at all.
pub fn ioas_maps_guest_ram(fd: &Arc<Iommufd>) -> Check {
    let mem = guest_ram()?;
    let ioas = Ioas::new(fd).map_err(|e| e.to_string())?;
    ioas.map_guest_ram(fd, &mem, MOCK_HOST_PAGE)
        .map_err(|e| e.to_string())?;
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

pub fn viommu_region_is_the_kernels(rig: &mut Rig) -> Check {
    let region = rig.viommu.lock().region().ok_or("no region")?;
    let (addr, len) = (region.host_addr(), region.len());
    drop(region);
    let magic = rig.viommu.lock().region_read(0);
    ensure(magic == selftest::REGION_MAGIC, || {
        format!("region[0] = {magic:#x}, in_data not looped back")
    })?;
    rig.viommu.lock().region_write(8, 0x5eed_0001);
    // A second mapping of the same kernel pages sees the write.
    let offset = rig.viommu.lock().region_offset().ok_or("no offset")?;
    let again = devices::mapping::Mapping::shared(rig.fd.raw_fd(), offset, len)
        .map_err(|e| format!("re-mmap: {}", devices::mapping::Sentence(&e)))?;
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

pub fn vdevice_per_device(rig: &mut Rig) -> Check {
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

pub fn backend_order_errors(rig: &mut Rig) -> Check {
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

pub fn hw_queues_ascending_through_the_model(rig: &mut Rig) -> Check {
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

pub fn kernel_refusals_become_cmdq_init_err(rig: &mut Rig) -> Check {
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

pub fn invalidation_batch_is_one_ioctl(rig: &mut Rig) -> Check {
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

pub fn bad_entry_stops_cons_on_it(rig: &mut Rig) -> Check {
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

pub fn vevent_reaches_guest_event_queue(rig: &mut Rig) -> Check {
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

pub fn lost_vevents_set_the_overflow_flag(rig: &mut Rig) -> Check {
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
pub fn errno_table(fd: &Arc<Iommufd>) -> Check {
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
pub fn failed_setup_leaks_nothing(fd: &Arc<Iommufd>) -> Check {
    let mem = guest_ram()?;
    let ioas = Ioas::new(fd).map_err(|e| e.to_string())?;
    ioas.map(
        fd,
        RAM_A,
        host_va(&mem, RAM_A)?,
        RAM_A_LEN as u64,
        MOCK_HOST_PAGE,
    )
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

/// The selftest flavour, except that a stage-1 STE's nested HWPT data is
/// empty: the mock's nested HWPT alloc refuses it (EINVAL), as a host
/// refuses an STE it cannot nest.
#[derive(Debug)]
struct RefusesS1;

impl Flavour for RefusesS1 {
    fn name(&self) -> &'static str {
        "selftest-refuses-s1"
    }
    fn probe(&self, fd: &Iommufd, dev_id: u32, device: &str) -> Result<HostInfo, HostError> {
        Selftest.probe(fd, dev_id, device)
    }
    fn viommu_type(&self) -> u32 {
        Selftest.viommu_type()
    }
    fn viommu_data(&self) -> Vec<u8> {
        Selftest.viommu_data()
    }
    fn mmap_region(&self, data: &[u8]) -> Option<(u64, u64)> {
        Selftest.mmap_region(data)
    }
    fn nested_hwpt(&self, ste: &NestedSte) -> (u32, Vec<u8>) {
        let (data_type, data) = Selftest.nested_hwpt(ste);
        match ste.config {
            SteConfig::S1Translate => (data_type, Vec::new()),
            _ => (data_type, data),
        }
    }
    fn invalidation(&self) -> (u32, u32) {
        Selftest.invalidation()
    }
    fn encode_invalidation(&self, command: Command, out: &mut Vec<u8>) {
        Selftest.encode_invalidation(command, out)
    }
    fn hw_queue_type(&self) -> Option<u32> {
        Selftest.hw_queue_type()
    }
    fn smmu_events(&self) -> Option<EventFormat> {
        Selftest.smmu_events()
    }
    fn decode_smmu_event(&self, payload: &[u8]) -> [u64; 4] {
        Selftest.decode_smmu_event(payload)
    }
    fn cmdqv_events(&self) -> Option<u32> {
        Selftest.cmdqv_events()
    }
}

/// A device on the bypass HWPT whose next (stage-1) STE the kernel refuses
/// ends up on the abort HWPT, not on bypass: the guest is told C_BAD_STE
/// and believes it aborts. The kernel confirms the abort HWPT is in use.
pub fn refused_ste_leaves_device_on_abort(fd: &Arc<Iommufd>) -> Check {
    const VSID: u32 = 0x8;
    let mem = guest_ram()?;
    let ioas = Ioas::new(fd).map_err(|e| e.to_string())?;
    ioas.map(
        fd,
        RAM_A,
        host_va(&mem, RAM_A)?,
        RAM_A_LEN as u64,
        MOCK_HOST_PAGE,
    )
    .map_err(|e| e.to_string())?;
    let device = Arc::new(MockDevice::new(fd, ioas.id()).map_err(|e| e.to_string())?);
    let bound: Vec<(Arc<dyn IommufdDevice>, u32)> = vec![(device.clone(), VSID)];
    let mut viommu =
        Viommu::new(fd, ioas.id(), Arc::new(RefusesS1), bound).map_err(|e| e.to_string())?;
    let result = (|| -> Check {
        viommu
            .install_ste(VSID, &NestedSte::bypass())
            .map_err(|e| format!("bypass STE: {e}"))?;
        let s1 = NestedSte {
            config: SteConfig::S1Translate,
            words: [0x4008_000b, 0],
        };
        let refused = viommu.install_ste(VSID, &s1);
        ensure(refused.is_err(), || {
            "the mock accepted empty nested HWPT data".into()
        })?;
        let (on, hwpt) = viommu.attachment(VSID).ok_or("no endpoint")?;
        ensure(on == "abort", || {
            format!("after a refused S1 STE the device is on {on} (HWPT {hwpt}), not abort")
        })?;
        let busy = fd.destroy(hwpt).err().and_then(|e| e.errno());
        ensure(busy == Some(libc::EBUSY), || {
            format!("destroy of the abort HWPT {hwpt} gave {busy:?}: nothing attached to it")
        })?;
        println!(
            "  refused: {}",
            refused.err().map(|e| e.to_string()).unwrap_or_default()
        );
        Ok(())
    })();
    drop(viommu);
    Arc::try_unwrap(device)
        .map_err(|_| "device still shared")?
        .destroy()
        .map_err(|e| e.to_string())?;
    ioas.destroy().map_err(|e| e.to_string())?;
    result
}

/// Every ioctl of a vIOMMU's setup (hw info, nest parent, vIOMMU, vDEVICEs,
/// vEVENTQs, both HW queues) failing in turn: the n-th fails with an
/// injected EIO before it reaches the kernel, the setup gives up, and the
/// handles built so far drop. Each time the kernel must accept every
/// destroy in that order, and no object, fd or mapping may be left. Prints
/// the halfway-failure table: step, the ioctl that failed, what was built
/// and released.
pub fn every_setup_step_failing_leaks_nothing(fd: &Arc<Iommufd>) -> Check {
    let mem = guest_ram()?;
    let ioas = Ioas::new(fd).map_err(|e| e.to_string())?;
    ioas.map(
        fd,
        RAM_A,
        host_va(&mem, RAM_A)?,
        RAM_A_LEN as u64,
        MOCK_HOST_PAGE,
    )
    .map_err(|e| e.to_string())?;
    let devices = [
        Arc::new(MockDevice::new(fd, ioas.id()).map_err(|e| e.to_string())?),
        Arc::new(MockDevice::new(fd, ioas.id()).map_err(|e| e.to_string())?),
    ];
    let live_before = fd.live_objects();
    let footprint_before = footprint();
    let refused_before = fd.failed_destroys();
    let setup = || -> Result<Viommu, String> {
        let bound = devices
            .iter()
            .zip(VSIDS)
            .map(|(d, vsid)| (d.clone() as Arc<dyn IommufdDevice>, vsid))
            .collect();
        let mut viommu =
            Viommu::new(fd, ioas.id(), Arc::new(Selftest), bound).map_err(|e| e.to_string())?;
        viommu
            .hw_queue_alloc(0, LVCMDQ0, 4096)
            .map_err(|e| e.to_string())?;
        viommu
            .hw_queue_alloc(1, LVCMDQ1, 4096)
            .map_err(|e| e.to_string())?;
        Ok(viommu)
    };
    let mut failures = 0;
    for step in 1..=64u64 {
        let created_before = fd.objects_created();
        fd.inject_failure(step);
        let result = setup();
        fd.inject_failure(0);
        let built = fd.objects_created() - created_before;
        match result {
            Ok(viommu) => {
                drop(viommu);
                println!(
                    "JUDGE halfway: step {step}: no ioctl left to fail; the whole setup built {built} objects"
                );
                break;
            }
            Err(why) => {
                failures += 1;
                ensure(why.contains("injected failure"), || {
                    format!("step {step} failed for another reason: {why}")
                })?;
                let failed = why
                    .split_whitespace()
                    .find(|w| w.starts_with("IOMMU_"))
                    .unwrap_or("?")
                    .to_string();
                println!(
                    "JUDGE halfway: step {step}: {failed} failed; {built} objects built, all released"
                );
            }
        }
        let live = fd.live_objects();
        ensure(live == live_before, || {
            format!("step {step}: objects left {live:?} (before: {live_before:?})")
        })?;
        ensure(fd.failed_destroys() == refused_before, || {
            format!("step {step}: the kernel refused a destroy (teardown out of order)")
        })?;
        ensure(footprint() == footprint_before, || {
            format!(
                "step {step}: fds/maps {footprint_before:?} -> {:?}",
                footprint()
            )
        })?;
    }
    ensure(failures >= 6, || {
        format!("only {failures} setup ioctls to fail: the setup did not run")
    })?;
    for device in devices {
        Arc::try_unwrap(device)
            .map_err(|_| "device still shared")?
            .destroy()
            .map_err(|e| e.to_string())?;
    }
    ioas.destroy().map_err(|e| e.to_string())
}
