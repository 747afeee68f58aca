use std::sync::{Arc, Mutex};

use devices::mapping::MmapError;
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::device::MapError;
use crate::vfio::host::RegionInfo;
use crate::vfio::host::VfioHostError;
use crate::vfio::interrupts::tests::RecordingRouter;

/// What the fake function saw.
#[derive(Default)]
struct FakeState {
    config: Vec<u8>,
    calls: Vec<String>,
    /// The host's page: an mmap at an offset or of a length that is not a
    /// multiple of it fails with EINVAL, as on a real host (0: 4 KiB).
    host_page: u64,
}

/// An in-memory function: QEMU's virtio-blk-pci shape (BAR0 I/O, BAR1
/// 4 KiB with the MSI-X table at 0 and PBA at 0x800, BAR4 64-bit
/// prefetchable 16 KiB) or, with `msi`, edu's (BAR0 1 MiB, MSI only).
struct FakeHost {
    state: Arc<Mutex<FakeState>>,
    regions: Vec<RegionInfo>,
    msix_vectors: u32,
    msi_vectors: u32,
}

fn put(c: &mut [u8], at: usize, bytes: &[u8]) {
    c[at..at + bytes.len()].copy_from_slice(bytes);
}

impl FakeHost {
    fn virtio_blk() -> (Self, Arc<Mutex<FakeState>>) {
        let mut c = vec![0u8; 4096];
        put(&mut c, 0, &[0xf4, 0x1a, 0x42, 0x10]);
        put(&mut c, 0x06, &[0x10, 0x00]);
        put(&mut c, 0x10, &0xc001u32.to_le_bytes());
        put(&mut c, 0x14, &0x1000_0000u32.to_le_bytes());
        put(&mut c, 0x20, &0x0000_000cu32.to_le_bytes());
        put(&mut c, 0x30, &0xfff8_0000u32.to_le_bytes());
        put(&mut c, 0x34, &[0x98]);
        // MSI-X: 3 entries, table BAR1+0, PBA BAR1+0x800; then a vendor cap.
        put(
            &mut c,
            0x98,
            &[0x11, 0x84, 0x02, 0x00, 0x01, 0, 0, 0, 0x01, 0x08, 0, 0],
        );
        put(&mut c, 0x84, &[0x09, 0x00, 0x10]);
        let state = Arc::new(Mutex::new(FakeState {
            config: c,
            calls: Vec::new(),
            host_page: 0,
        }));
        let regions = vec![
            RegionInfo::plain(0x80, false),
            RegionInfo::plain(0x1000, true),
            RegionInfo::plain(0, false),
            RegionInfo::plain(0, false),
            RegionInfo::plain(0x4000, true),
            RegionInfo::plain(0, false),
        ];
        (
            FakeHost {
                state: state.clone(),
                regions,
                msix_vectors: 3,
                msi_vectors: 0,
            },
            state,
        )
    }

    fn edu() -> (Self, Arc<Mutex<FakeState>>) {
        let mut c = vec![0u8; 4096];
        put(&mut c, 0, &[0x34, 0x12, 0xe8, 0x11]);
        put(&mut c, 0x06, &[0x10, 0x00]);
        put(&mut c, 0x10, &0u32.to_le_bytes());
        put(&mut c, 0x34, &[0x40]);
        // MSI, 64-bit, 1 vector, no per-vector mask.
        put(&mut c, 0x40, &[0x05, 0x00, 0x80, 0x00]);
        let state = Arc::new(Mutex::new(FakeState {
            config: c,
            calls: Vec::new(),
            host_page: 0,
        }));
        let mut regions = vec![RegionInfo::plain(0, false); 6];
        regions[0] = RegionInfo::plain(0x10_0000, true);
        (
            FakeHost {
                state: state.clone(),
                regions,
                msix_vectors: 0,
                msi_vectors: 1,
            },
            state,
        )
    }

    fn note(&self, what: String) {
        self.state.lock().unwrap().calls.push(what);
    }
}

impl VfioHost for FakeHost {
    fn region(&self, index: u32) -> RegionInfo {
        self.regions
            .get(index as usize)
            .cloned()
            .unwrap_or_default()
    }
    fn read(&self, index: u32, offset: u64, data: &mut [u8]) {
        if index == CONFIG_REGION {
            let s = self.state.lock().unwrap();
            let at = offset as usize;
            data.copy_from_slice(&s.config[at..at + data.len()]);
        } else {
            data.fill(0xa5);
            self.note(format!("read bar{index} {offset:#x}"));
        }
    }
    fn write(&self, index: u32, offset: u64, data: &[u8]) {
        if index == CONFIG_REGION {
            let mut s = self.state.lock().unwrap();
            let at = offset as usize;
            s.config[at..at + data.len()].copy_from_slice(data);
            s.calls.push(format!("config {offset:#x} {data:02x?}"));
        } else {
            self.note(format!("write bar{index} {offset:#x} {data:02x?}"));
        }
    }
    fn irq_count(&self, index: u32) -> u32 {
        match index {
            IRQ_MSIX => self.msix_vectors,
            IRQ_MSI => self.msi_vectors,
            _ => 0,
        }
    }
    fn enable_irqs(&self, index: u32, fds: &[&EventFd]) -> Result<(), VfioHostError> {
        self.note(format!("enable irq{index} x{}", fds.len()));
        Ok(())
    }
    fn disable_irqs(&self, index: u32) -> Result<(), VfioHostError> {
        self.note(format!("disable irq{index}"));
        Ok(())
    }
    fn reset(&self) {
        self.note("reset".into());
    }
    fn map(&self, index: u32, offset: u64, len: u64) -> Result<Mapping, VfioHostError> {
        self.note(format!("mmap bar{index} {offset:#x} {len:#x}"));
        let page = self.state.lock().unwrap().host_page.max(4 << 10);
        let einval = (offset | len) % page != 0;
        let mapped = if einval {
            Err(MmapError {
                offset,
                len,
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            })
        } else {
            Mapping::anonymous(len)
        };
        mapped.map_err(|source| VfioHostError::Map {
            index,
            offset,
            len,
            source,
        })
    }
}

/// Records guest slot changes and holds each slot's mapping like a VM.
#[derive(Default)]
struct RecordingMapper {
    calls: Mutex<Vec<String>>,
    slots: Mutex<Vec<(SlotId, u64, Arc<Mapping>)>>,
    next: Mutex<u32>,
}

impl GuestMapper for RecordingMapper {
    fn add_region(&self, gpa: u64, mapping: Arc<Mapping>) -> Result<SlotId, MapError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("map {gpa:#x} {:#x}", mapping.len()));
        let mut next = self.next.lock().unwrap();
        *next += 1;
        let slot = SlotId::new(*next);
        self.slots.lock().unwrap().push((slot, gpa, mapping));
        Ok(slot)
    }
    fn remove_region(&self, slot: SlotId) -> Result<Arc<Mapping>, MapError> {
        let mut slots = self.slots.lock().unwrap();
        let at = slots
            .iter()
            .position(|(s, _, _)| *s == slot)
            .ok_or(MapError::Unknown(slot.get()))?;
        let (_, gpa, mapping) = slots.remove(at);
        self.calls.lock().unwrap().push(format!("unmap {gpa:#x}"));
        Ok(mapping)
    }
}

const MMIO32: Range = Range {
    base: 0x1000_0000,
    size: 0x2eff_0000,
};
const MMIO64: Range = Range {
    base: 0x80_0000_0000,
    size: 0x80_0000_0000,
};

struct Rig {
    dev: VfioPciDevice,
    state: Arc<Mutex<FakeState>>,
    router: Arc<RecordingRouter>,
    mapper: Arc<RecordingMapper>,
}

fn rig(host: (FakeHost, Arc<Mutex<FakeState>>)) -> Rig {
    rig_on(host, 4 << 10)
}

/// A rig on a host whose page (as the VMM believes it) is `host_page`.
fn rig_on(host: (FakeHost, Arc<Mutex<FakeState>>), host_page: u64) -> Rig {
    let router = Arc::new(RecordingRouter::default());
    let mapper = Arc::new(RecordingMapper::default());
    let wiring = Wiring {
        name: "fake".into(),
        devid: 0x10,
        windows: vec![MMIO32, MMIO64],
        router: router.clone(),
        mapper: mapper.clone(),
        host_page,
    };
    let dev = VfioPciDevice::new(Box::new(host.0), wiring).unwrap();
    let calls = std::mem::take(&mut host.1.lock().unwrap().calls);
    assert!(calls.iter().all(|c| c.starts_with("mmap")), "{calls:?}");
    Rig {
        dev,
        state: host.1,
        router,
        mapper,
    }
}

impl Rig {
    fn r32(&mut self, reg: u16) -> u32 {
        let mut b = [0u8; 4];
        self.dev.read_config(reg, &mut b);
        u32::from_le_bytes(b)
    }
    fn w32(&mut self, reg: u16, v: u32) {
        self.dev.write_config(reg, &v.to_le_bytes());
    }
    fn w16(&mut self, reg: u16, v: u16) {
        self.dev.write_config(reg, &v.to_le_bytes());
    }
    fn slots(&self) -> Vec<String> {
        std::mem::take(&mut *self.mapper.calls.lock().unwrap())
    }
    fn host_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().unwrap().calls)
    }
}

#[test]
fn bars_size_like_hardware_io_and_rom_are_hidden_and_ids_read_through() {
    let mut r = rig(FakeHost::virtio_blk());
    assert_eq!(r.r32(0), 0x1042_1af4);
    assert_eq!(r.r32(0x10), 0, "the I/O BAR reads as not implemented");
    assert_eq!(r.r32(0x30), 0, "the ROM is hidden");
    r.w32(0x14, u32::MAX);
    assert_eq!(r.r32(0x14), 0xffff_f000, "BAR1: 4 KiB, 32-bit");
    r.w32(0x20, u32::MAX);
    r.w32(0x24, u32::MAX);
    assert_eq!(
        (r.r32(0x20), r.r32(0x24)),
        (0xffff_c00c, u32::MAX),
        "BAR4: 16 KiB, 64-bit prefetchable"
    );
    r.w32(0x30, u32::MAX);
    assert_eq!(r.r32(0x30), 0);
    assert!(
        !r.host_calls()
            .iter()
            .any(|c| c.starts_with("config 0x1") || c.starts_with("config 0x2")),
        "BAR writes never reach the device"
    );
    let bars: Vec<u8> = r.dev.bars().iter().map(|b| b.0).collect();
    assert_eq!(bars, [1, 4]);
}

#[test]
fn the_mapped_bar_follows_memory_enable_and_the_guests_placement() {
    let mut r = rig(FakeHost::virtio_blk());
    r.dev.set_bar_address(4, MMIO64.base);
    r.dev.set_bar_address(1, MMIO32.base);
    assert!(r.slots().is_empty(), "Memory Space is off");
    r.w16(0x04, 0x0006);
    assert_eq!(
        r.slots(),
        ["map 0x8000000000 0x4000"],
        "BAR1 (MSI-X page) stays trapped"
    );
    assert!(
        r.host_calls().contains(&"config 0x4 [06, 00]".to_string()),
        "Command reaches the device"
    );
    assert_eq!(
        r.dev.decoded_bars(),
        [(1, MMIO32.base, 0x1000), (4, MMIO64.base, 0x4000)]
    );
    // The guest moves BAR4 (Linux disables decode around it).
    r.w16(0x04, 0x0004);
    r.w32(0x20, 0x0001_0000);
    r.w32(0x24, 0x80);
    r.w16(0x04, 0x0006);
    assert_eq!(r.slots(), ["unmap 0x8000000000", "map 0x8000010000 0x4000"]);
    // Outside the windows (over RAM): not mapped, and nothing breaks.
    r.w32(0x24, 0);
    assert_eq!(r.slots(), ["unmap 0x8000010000"]);
    assert!(r.dev.stats().slot_maps == 2);
}

#[test]
fn on_a_64k_host_bars_below_a_host_page_trap_and_work() {
    let host = FakeHost::virtio_blk();
    host.1.lock().unwrap().host_page = 64 << 10;
    let mut r = rig_on(host, 64 << 10);
    r.dev.set_bar_address(4, MMIO64.base);
    r.dev.set_bar_address(1, MMIO32.base);
    r.w16(0x04, 0x0006);
    assert!(r.slots().is_empty(), "16 KiB BAR4 < one 64 KiB host page");
    r.host_calls();
    let mut b = [0u8; 4];
    r.dev.bar_read(4, 0x3ffc, &mut b);
    assert_eq!(b, [0xa5; 4]);
    assert_eq!(
        r.host_calls(),
        ["read bar4 0x3ffc"],
        "trapped and forwarded"
    );
}

#[test]
fn a_bar_piece_the_host_will_not_mmap_traps_instead_of_failing_the_device() {
    // The VMM believes 4 KiB pages but the host has 64 KiB ones (the EINVAL
    // a Grace host gives for an mmap at a 4 KiB offset): the device still
    // comes up, with BAR4 trapped.
    let host = FakeHost::virtio_blk();
    host.1.lock().unwrap().host_page = 64 << 10;
    let mut r = rig(host);
    r.dev.set_bar_address(4, MMIO64.base);
    r.w16(0x04, 0x0006);
    assert!(r.slots().is_empty());
    r.host_calls();
    r.dev.bar_write(4, 0x10, &[1]);
    assert_eq!(r.host_calls(), ["write bar4 0x10 [01]"]);
}

#[test]
fn msix_enable_wires_every_vector_and_the_table_stays_in_the_vmm() {
    let mut r = rig(FakeHost::virtio_blk());
    r.dev.set_bar_address(1, MMIO32.base);
    r.dev.bar_write(1, 0x10, &0x0809_0040u32.to_le_bytes());
    r.dev.bar_write(1, 0x18, &0x21u32.to_le_bytes());
    r.dev.bar_write(1, 0x1c, &0u32.to_le_bytes());
    assert!(r.router.take().is_empty(), "MSI-X still off");
    r.w16(0x9a, 0x8000);
    assert_eq!(r.host_calls(), ["enable irq2 x3"]);
    assert_eq!(
        r.router.take(),
        ["route 301 0x8090040 0x21 dev 0x10", "irqfd 301"]
    );
    assert_eq!(r.r32(0x98) >> 16, 0x8002, "enable bit + table size 3");
    assert_eq!(
        r.state.lock().unwrap().config[0x9b],
        0,
        "the device's own control is untouched"
    );
    // Mask entry 1, then the whole function, then disable.
    r.dev.bar_write(1, 0x1c, &1u32.to_le_bytes());
    assert_eq!(r.router.take(), ["unirqfd 301"]);
    let mut entry = [0u8; 4];
    r.dev.bar_read(1, 0x18, &mut entry);
    assert_eq!(u32::from_le_bytes(entry), 0x21);
    let mut pba = [0u8; 8];
    r.dev.bar_read(1, 0x800, &mut pba);
    assert_eq!(
        r.host_calls(),
        ["read bar1 0x800"],
        "only the PBA reaches the device"
    );
    r.w16(0x9a, 0);
    assert_eq!(r.router.take(), ["free 300", "free 301", "free 302"]);
    assert_eq!(r.host_calls(), ["disable irq2"]);
    assert_eq!(r.dev.stats().msix_table, 5);
}

#[test]
fn msi_enable_asks_the_host_for_the_enabled_vectors() {
    let mut r = rig(FakeHost::edu());
    r.w32(0x44, 0x0809_0040);
    r.w32(0x48, 0);
    r.w16(0x4c, 0x7);
    r.w16(0x42, 0x0081);
    assert_eq!(r.host_calls(), ["enable irq1 x1"]);
    assert_eq!(
        r.router.take(),
        ["route 300 0x8090040 0x7 dev 0x10", "irqfd 300"]
    );
    assert_eq!(r.r32(0x40) >> 16, 0x0081);
    assert!(
        !r.host_calls().iter().any(|c| c.starts_with("config 0x4")),
        "MSI writes stay in the VMM"
    );
    r.w16(0x42, 0x0080);
    assert_eq!(r.router.take(), ["unirqfd 300", "free 300"]);
    assert_eq!(r.host_calls(), ["disable irq1"]);
}

#[test]
fn release_unmaps_slots_then_unwires_vectors_then_resets() {
    let mut r = rig(FakeHost::virtio_blk());
    r.dev.set_bar_address(4, MMIO64.base);
    r.w16(0x04, 0x0006);
    r.dev.bar_write(1, 0x0c, &0u32.to_le_bytes());
    r.w16(0x9a, 0x8000);
    r.slots();
    r.router.take();
    r.host_calls();
    r.dev.release();
    assert_eq!(r.slots(), ["unmap 0x8000000000"]);
    assert_eq!(
        r.router.take(),
        ["unirqfd 300", "free 300", "free 301", "free 302"]
    );
    assert_eq!(r.host_calls(), ["disable irq2", "reset"]);
    assert_eq!(r.r32(0), u32::MAX, "a released function reads as absent");
    r.dev.release();
    assert!(r.host_calls().is_empty(), "release is idempotent");
}

/// Every guest-controlled value: random config and BAR accesses of every
/// size and alignment never panic and never reach the device's BARs or ROM.
#[test]
fn random_guest_accesses_are_absorbed() {
    let mut r = rig(FakeHost::virtio_blk());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = [1usize, 2, 4, 8][(x & 3) as usize];
        let reg = ((x >> 8) % 4096) as u16 & !(len as u16 - 1).min(3);
        let value = (x >> 20).to_le_bytes();
        if len <= 4 {
            if x & 0x10 != 0 {
                r.dev.write_config(reg, &value[..len]);
            } else {
                let mut b = vec![0u8; len];
                r.dev.read_config(reg, &mut b);
            }
        }
        let index = ((x >> 40) % 6) as u8;
        let offset = (x >> 44) % 0x5000;
        if x & 0x20 != 0 {
            r.dev.bar_write(index, offset, &value[..len]);
        } else {
            let mut b = vec![0u8; len];
            r.dev.bar_read(index, offset, &mut b);
        }
    }
    let calls = r.host_calls();
    let virtual_reg = |c: &&String| {
        c.strip_prefix("config 0x")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            .is_some_and(|reg| (0x10..0x28).contains(&reg) || (0x30..0x34).contains(&reg))
    };
    let leaked: Vec<_> = calls.iter().filter(virtual_reg).take(3).collect();
    assert!(
        leaked.is_empty(),
        "BAR/ROM writes reached the device: {leaked:?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.contains("bar0") || c.contains("bar2")),
        "absent BARs"
    );
}
