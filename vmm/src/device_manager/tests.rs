//! The device manager over recording sinks: teardown order, the bus map,
//! the host refusal.

use std::sync::Mutex;

use arch::layout::CMDQV_VINTF0_PAGE0_OFFSET;
use devices::emulated::EmulatedBackend;
use devices::mapping::Mapping;
use pci::vfio::MsiError;
use pci::{MapError, SlotId};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::config::{VmConfig, VsmmuConfig};
use crate::description::DeviceKind;
use crate::host_backend::VsmmuHost;
use crate::irqchip::tests::RecordingChip;

/// No MSI routing (no test here has a passthrough function).
struct NoRouter;

impl MsiRouter for NoRouter {
    fn allocate_gsi(&self) -> Option<u32> {
        None
    }
    fn set_msi_route(
        &self,
        _: u32,
        _: pci::vfio::caps::MsiMessage,
        _: u32,
    ) -> Result<(), MsiError> {
        Err(MsiError::NoRouting)
    }
    fn free_gsi(&self, _: u32) {}
    fn irqfd(&self, _: &vmm_sys_util::eventfd::EventFd, _: u32, _: bool) -> Result<(), MsiError> {
        Err(MsiError::NoRouting)
    }
}

struct NoNotify;

impl NotifyRegistrar for NoNotify {
    fn register(&self, _: u64, _: &EventFd) -> std::io::Result<()> {
        Err(std::io::Error::other("no ioeventfds"))
    }
    fn unregister(&self, _: u64, _: &EventFd) -> std::io::Result<()> {
        Err(std::io::Error::other("no ioeventfds"))
    }
}

/// Records page0 map/unmap, and what the backend had done by then;
/// holds each slot's mapping like a VM.
#[derive(Default)]
struct RecordingMapper {
    events: Mutex<Vec<String>>,
    backend: Mutex<Option<EmulatedBackend>>,
    slots: Mutex<Vec<(u64, Arc<Mapping>)>>,
}

impl RecordingMapper {
    /// The backend calls made since the last take, as `backend ...` lines.
    fn take_backend_calls(&self) -> Vec<String> {
        self.backend
            .lock()
            .unwrap()
            .as_ref()
            .map(|b| {
                b.take_calls()
                    .iter()
                    .map(|c| format!("backend {c}"))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn note(&self, what: String) {
        let calls = self.take_backend_calls();
        let mut events = self.events.lock().unwrap();
        events.extend(calls);
        events.push(what);
    }
}

impl GuestMapper for RecordingMapper {
    fn add_region(&self, gpa: u64, mapping: Arc<Mapping>) -> Result<SlotId, MapError> {
        self.note(format!("map {gpa:#x} {:#x}", mapping.len()));
        let mut slots = self.slots.lock().unwrap();
        slots.push((gpa, mapping));
        Ok(SlotId::new(slots.len() as u32 - 1))
    }
    fn remove_region(&self, slot: SlotId) -> Result<Arc<Mapping>, MapError> {
        let slots = self.slots.lock().unwrap();
        let (gpa, mapping) = slots
            .get(slot.get() as usize)
            .cloned()
            .ok_or(MapError::Unknown(slot.get()))?;
        drop(slots);
        self.note(format!("unmap {gpa:#x}"));
        Ok(mapping)
    }
}

fn vm(vsmmu: &str) -> VmDescription {
    let config = VmConfig {
        vsmmu: VsmmuConfig::parse(vsmmu).unwrap(),
        memory: crate::config::MemoryConfig {
            size: 64 << 20,
            ..Default::default()
        },
        ..VmConfig::default()
    };
    let host = crate::host_topology::HostTopology::read(&config).unwrap();
    VmDescription::new(config, &host, 16).unwrap()
}

fn write32(bus: &MmioBus, addr: u64, value: u32) {
    bus.write(addr, &value.to_le_bytes());
}

#[test]
fn teardown_unmaps_page0_before_freeing_hw_queues_in_descending_order() {
    let vm = vm("cmdqv,backend=emulated,page0=mapped");
    let mem = crate::memory::create(&vm.layout, crate::memory::Backing::default(), &[]).unwrap();
    let chip = Arc::new(RecordingChip::default());
    let mapper = Arc::new(RecordingMapper::default());
    let mut dm = DeviceManager::new(
        &vm,
        &mem,
        chip,
        Arc::new(NoRouter),
        mapper.clone(),
        Arc::new(NoNotify),
        Consoles {
            uart: Box::new(std::io::sink()),
            virtio_pty: None,
        },
    )
    .unwrap();
    let VsmmuHost::Emulated(backend) = &dm.vsmmus[0].backend else {
        panic!("backend=emulated");
    };
    *mapper.backend.lock().unwrap() = Some(backend.clone());
    let base = vm.vsmmus[0].layout.cmdqv.base;
    let ram = vm.layout.ram.base;
    mem.write_obj(0u64, GuestAddress(ram)).unwrap();
    // The Linux driver's order: CMDQV_EN, VINTF0 EN, map both LVCMDQs,
    // then each queue's BASE (4 KiB queues at the start of RAM).
    write32(&dm.bus, base, 1);
    write32(&dm.bus, base + 0x1000, 1);
    write32(&dm.bus, base + 0x200, 1);
    write32(&dm.bus, base + 0x204, (1 << 1) | 1);
    dm.bus.write(base + 0x4_0000, &(ram | 8).to_le_bytes());
    dm.bus
        .write(base + 0x4_0080, &((ram + 0x1000) | 8).to_le_bytes());
    dm.shutdown();
    let events = mapper.events.lock().unwrap().clone();
    let page0 = base + CMDQV_VINTF0_PAGE0_OFFSET;
    let position = |needle: &str| {
        events
            .iter()
            .position(|e| e.starts_with(needle))
            .unwrap_or_else(|| panic!("{needle} missing in {events:#?}"))
    };
    assert!(position(&format!("map {page0:#x}")) < position("backend hw_queue_alloc index=0"));
    let unmap = position(&format!("unmap {page0:#x}"));
    let backend = mapper.take_backend_calls();
    let free1 = backend
        .iter()
        .position(|c| c.starts_with("backend hw_queue_free index=1"));
    let free0 = backend
        .iter()
        .position(|c| c.starts_with("backend hw_queue_free index=0"));
    assert!(
        unmap + 1 == events.len(),
        "nothing after the unmap yet: {events:#?}"
    );
    assert!(
        !events.iter().any(|e| e.contains("hw_queue_free")),
        "a HW queue was freed while page0 was still mapped: {events:#?}"
    );
    assert!(
        free1.is_some() && free0.is_some() && free1 < free0,
        "{backend:#?}"
    );
}

/// The devices of `vm` with recording interrupt and page0 sinks.
fn build(vm: &VmDescription) -> Result<DeviceManager, DeviceError> {
    let mem = crate::memory::create(&vm.layout, crate::memory::Backing::default(), &[]).unwrap();
    DeviceManager::new(
        vm,
        &mem,
        Arc::new(RecordingChip::default()),
        Arc::new(NoRouter),
        Arc::new(RecordingMapper::default()),
        Arc::new(NoNotify),
        Consoles {
            uart: Box::new(std::io::sink()),
            virtio_pty: None,
        },
    )
}

#[test]
#[ignore = "needs a host without /dev/iommu: the scripts/test.sh host and aarch64 lanes run it"]
fn iommufd_backend_without_dev_iommu_names_the_fix() {
    let dev = std::path::Path::new(iommufd::fd::IOMMU_DEV);
    assert!(
        !dev.exists(),
        "a host with iommufd cannot give this refusal"
    );
    let err = build(&vm("smmuv3")).err().unwrap();
    assert!(err.to_string().contains("cannot open /dev/iommu"), "{err}");
    assert!(err.to_string().contains("backend=emulated"), "{err}");
}

#[test]
fn guest_cmdqs_fits_one_host_page_of_guest_ram() {
    let vm = vm("cmdqv,backend=emulated");
    let dm = build(&vm).unwrap();
    let page = vm.host_page_size;
    let v = dm.vsmmus.first().unwrap();
    let cmdqs = lock_unpoisoned(&v.smmu).id_registers().cmdq_log2size();
    assert_eq!(16u64 << cmdqs, page, "4 KiB pages: 8, 64 KiB: 12");
}

#[test]
fn every_device_window_is_on_the_bus() {
    let vm = vm("cmdqv,backend=emulated");
    let dm = build(&vm).unwrap();
    let names: Vec<&str> = dm.bus.exit_counts().0.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "uart", "pci-ecam", "pci-bars", "pci-bars", "smmuv3", "cmdqv"
        ]
    );
    // SMMU IDR0 reads through the bus: stage 1 only, AArch64 tables.
    let mut idr0 = [0u8; 4];
    dm.bus.read(vm.vsmmus[0].layout.smmu.base, &mut idr0);
    let idr0 = u32::from_le_bytes(idr0);
    assert_eq!(idr0 & 0b11, 0b10, "S1P=1, S2P=0: {idr0:#x}");
}

/// Vendor and device ID of the function at `rid` on segment 0, read
/// through its ECAM window.
fn ids_at(dm: &DeviceManager, vm: &VmDescription, rid: u16) -> (u16, u16) {
    let mut id = [0u8; 4];
    let ecam = vm.layout.pci_segments[0].ecam.base;
    dm.bus.read(ecam + (u64::from(rid) << 12), &mut id);
    let id = u32::from_le_bytes(id);
    (id as u16, (id >> 16) as u16)
}

#[test]
fn each_device_kind_gets_its_own_function_at_its_placed_address() {
    let image = vmm_sys_util::tempfile::TempFile::new().unwrap();
    image.as_file().set_len(8 * 512).unwrap();
    let config = VmConfig {
        vsmmu: VsmmuConfig::parse("smmuv3,backend=emulated").unwrap(),
        memory: crate::config::MemoryConfig {
            size: 64 << 20,
            ..Default::default()
        },
        test_devices: vec![crate::config::TestDeviceConfig::parse("id=dma0", 0).unwrap()],
        disks: vec![
            crate::config::DiskConfig::parse(&format!("path={}", image.as_path().display()), 0)
                .unwrap(),
        ],
        console: crate::config::ConsoleConfig::Null,
        rng: Some(crate::config::RngConfig {
            src: "/dev/urandom".into(),
        }),
        ..VmConfig::default()
    };
    let host = crate::host_topology::HostTopology::emulated(&config, 4 << 10);
    let vm = VmDescription::new(config, &host, 16).unwrap();
    let mem = crate::memory::create(&vm.layout, crate::memory::Backing::default(), &[]).unwrap();
    // Virtio functions need GSIs for their vectors.
    let dm = DeviceManager::new(
        &vm,
        &mem,
        Arc::new(RecordingChip::default()),
        Arc::new(crate::virtio::test_support::NullRouter),
        Arc::new(RecordingMapper::default()),
        Arc::new(NoNotify),
        Consoles {
            uart: Box::new(std::io::sink()),
            virtio_pty: None,
        },
    )
    .unwrap();
    let found: Vec<(DeviceKind, u16, (u16, u16))> = vm
        .devices
        .iter()
        .map(|d| (d.kind, d.bdf.rid(), ids_at(&dm, &vm, d.bdf.rid())))
        .collect();
    // Red Hat's PCI test device, then virtio 1.x blk (2), console (3),
    // rng (4): 0x1040 + the virtio device ID.
    assert_eq!(
        found,
        [
            (DeviceKind::TestEndpoint, 0x08, (0x1b36, 0x0005)),
            (DeviceKind::VirtioBlock, 0x10, (0x1af4, 0x1042)),
            (DeviceKind::VirtioConsole, 0x18, (0x1af4, 0x1043)),
            (DeviceKind::VirtioRng, 0x20, (0x1af4, 0x1044)),
        ]
    );
    let disks: Vec<&str> = dm.disks.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(disks, ["_disk0"]);
    assert!(dm.nets.is_empty());
}
