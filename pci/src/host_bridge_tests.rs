use arch::layout::{Layout, Topology};

use super::*;
use crate::config::{BAR0, COMMAND, COMMAND_WRITABLE};

fn segment() -> PciSegment {
    let layout = Layout::new(Topology {
        vcpus: 1,
        ram_size: 1 << 30,
        pci_segments: 1,
        vsmmus: 0,
    })
    .unwrap();
    PciSegment::new(layout.pci_segments[0])
}

fn ecam(bus: u8, device: u8, function: u8, reg: u16) -> u64 {
    u64::from(bus) << 20 | u64::from(device) << 15 | u64::from(function) << 12 | u64::from(reg)
}

fn r32(s: &mut PciSegment, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    s.read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn w32(s: &mut PciSegment, offset: u64, v: u32) {
    s.write(offset, &v.to_le_bytes());
}

fn bdf(bus: u8, device: u8, function: u8) -> Bdf {
    Bdf {
        bus,
        device,
        function,
    }
}

/// An endpoint with a 32-bit and a 64-bit BAR.
struct Endpoint {
    config: ConfigSpace,
}

impl Endpoint {
    fn new(bar32: u64, bar64: u64) -> Self {
        let mut config = ConfigSpace::type0(DeviceIds {
            vendor: 0x1af4,
            device: 0x1041,
            class: 0x02_00_00,
            revision: 1,
            subsystem_vendor: 0x1af4,
            subsystem: 1,
        });
        config
            .add_bar(
                0,
                Bar {
                    kind: BarKind::Mmio32,
                    size: bar32,
                    prefetchable: false,
                },
            )
            .unwrap();
        config
            .add_bar(
                2,
                Bar {
                    kind: BarKind::Mmio64,
                    size: bar64,
                    prefetchable: true,
                },
            )
            .unwrap();
        Endpoint { config }
    }
}

impl PciDevice for Endpoint {
    fn read_config(&mut self, reg: u16, data: &mut [u8]) {
        self.config.read(reg, data);
    }
    fn write_config(&mut self, reg: u16, data: &[u8]) {
        self.config.write(reg, data);
    }
    fn bars(&self) -> Vec<(u8, Bar)> {
        self.config.bars()
    }
    fn set_bar_address(&mut self, index: u8, addr: u64) {
        self.config.set_bar_address(index, addr);
    }
}

#[test]
fn ecam_offsets_decode_bus_device_function_register() {
    let s = segment();
    assert_eq!(s.decode(ecam(3, 5, 2, 0x44)), Some((bdf(3, 5, 2), 0x44)));
    assert_eq!(
        s.decode(ecam(15, 31, 7, 0xffc)),
        Some((bdf(15, 31, 7), 0xffc))
    );
    assert_eq!(s.decode(0x00a3_4567), Some((bdf(10, 6, 4), 0x567)));
    assert_eq!(s.decode(0x0123_4567), None, "bus 0x12");
    assert_eq!(s.decode(16 << 20), None, "past the segment's 16 buses");
    assert_eq!(s.decode(u64::MAX), None);
}

#[test]
fn host_bridge_answers_at_00_00_0() {
    let mut s = segment();
    assert_eq!(r32(&mut s, ecam(0, 0, 0, 0x00)), 0x0008_1b36);
    assert_eq!(
        r32(&mut s, ecam(0, 0, 0, 0x08)),
        0x0600_0000,
        "class 060000 rev 0"
    );
    assert_eq!(
        r32(&mut s, ecam(0, 0, 0, 0x0c)) >> 16 & 0xff,
        0,
        "header type 0"
    );
    assert_eq!(r32(&mut s, ecam(0, 0, 0, COMMAND)), 0);
    w32(&mut s, ecam(0, 0, 0, COMMAND), 0xffff_ffff);
    assert_eq!(r32(&mut s, ecam(0, 0, 0, COMMAND)), COMMAND_WRITABLE);
    for bar in 0..6 {
        let reg = BAR0 + 4 * bar;
        w32(&mut s, ecam(0, 0, 0, reg), u32::MAX);
        assert_eq!(
            r32(&mut s, ecam(0, 0, 0, reg)),
            0,
            "host bridge has no BAR{bar}"
        );
    }
}

#[test]
fn absent_functions_read_all_ones_at_every_size_and_ignore_writes() {
    let mut s = segment();
    for offset in [ecam(0, 1, 0, 0), ecam(0, 0, 1, 0), ecam(1, 0, 0, 0)] {
        for len in [1usize, 2, 4, 8] {
            let mut b = vec![0u8; len];
            s.read(offset, &mut b);
            assert!(b.iter().all(|&x| x == 0xff), "{offset:#x} len {len}");
        }
        w32(&mut s, offset + 4, 0x6);
        assert_eq!(r32(&mut s, offset + 4), u32::MAX);
    }
    assert_eq!(r32(&mut s, 16 << 20), u32::MAX, "past the window");
}

#[test]
fn misaligned_or_odd_sized_accesses_read_all_ones_and_are_dropped() {
    let mut s = segment();
    let mut b = [0u8; 2];
    s.read(ecam(0, 0, 0, 0x01), &mut b);
    assert_eq!(b, [0xff, 0xff]);
    let mut three = [0u8; 3];
    s.read(ecam(0, 0, 0, 0), &mut three);
    assert_eq!(three, [0xff; 3]);
    s.write(ecam(0, 0, 0, COMMAND + 1), &[0xff, 0xff]);
    assert_eq!(r32(&mut s, ecam(0, 0, 0, COMMAND)), 0);
    let mut b = [0u8; 1];
    s.read(ecam(0, 0, 0, 0x02), &mut b);
    assert_eq!(b, [0x08], "a valid byte read of the device ID");
}

#[test]
fn plugged_endpoint_is_visible_and_sizes_its_bars_through_ecam() {
    let mut s = segment();
    s.add_device(bdf(0, 1, 0), Box::new(Endpoint::new(0x4000, 0x10_0000)))
        .unwrap();
    assert_eq!(r32(&mut s, ecam(0, 1, 0, 0)), 0x1041_1af4);
    w32(&mut s, ecam(0, 1, 0, BAR0), u32::MAX);
    assert_eq!(r32(&mut s, ecam(0, 1, 0, BAR0)), 0xffff_c000);
    // 64-bit BAR sized with one 8-byte access, split into two dwords.
    s.write(ecam(0, 1, 0, BAR0 + 8), &u64::MAX.to_le_bytes());
    let mut q = [0u8; 8];
    s.read(ecam(0, 1, 0, BAR0 + 8), &mut q);
    assert_eq!(u64::from_le_bytes(q), 0xffff_ffff_fff0_000c);
    // Function 1 of the same device is still absent.
    assert_eq!(r32(&mut s, ecam(0, 1, 1, 0)), u32::MAX);
}

#[test]
fn bars_are_allocated_aligned_inside_the_segment_windows_and_programmed() {
    let mut s = segment();
    s.add_device(bdf(0, 1, 0), Box::new(Endpoint::new(0x1000, 0x10_0000)))
        .unwrap();
    s.add_device(bdf(0, 2, 0), Box::new(Endpoint::new(0x8000, 0x20_0000)))
        .unwrap();
    let placed = s.allocate_bars().unwrap();
    assert_eq!(placed.len(), 4);
    let layout = *s.layout();
    for p in &placed {
        assert_eq!(p.range.base % p.range.size, 0, "{p:?} aligned to its size");
        let window = if p.index == 0 {
            layout.mmio32
        } else {
            layout.mmio64
        };
        assert!(window.contains(p.range.base) && p.range.end() <= window.end());
        let lo = r32(
            &mut s,
            ecam(0, p.bdf.device, 0, BAR0 + 4 * u16::from(p.index)),
        );
        assert_eq!(u64::from(lo & !0xf), p.range.base & 0xffff_ffff);
        if p.index == 2 {
            let hi = r32(&mut s, ecam(0, p.bdf.device, 0, BAR0 + 12));
            assert_eq!(u64::from(hi), p.range.base >> 32);
        }
    }
    for (i, a) in placed.iter().enumerate() {
        for b in &placed[i + 1..] {
            assert!(a.range.end() <= b.range.base || b.range.end() <= a.range.base);
        }
    }
}

#[test]
fn bar_that_does_not_fit_its_window_is_an_error() {
    let mut s = segment();
    s.add_device(bdf(0, 1, 0), Box::new(Endpoint::new(32 << 20, 0x1000)))
        .unwrap();
    assert_eq!(
        s.allocate_bars(),
        Err(PciError::BarSpaceExhausted {
            bdf: bdf(0, 1, 0),
            index: 0,
            size: 32 << 20,
            window: "mmio32"
        })
    );
}

#[test]
fn plugging_checks_the_address_and_occupancy() {
    let mut s = segment();
    s.add_device(bdf(0, 1, 0), Box::new(HostBridge::default()))
        .unwrap();
    assert_eq!(
        s.add_device(bdf(0, 1, 0), Box::new(HostBridge::default())),
        Err(PciError::Taken {
            bdf: bdf(0, 1, 0),
            segment: 0
        })
    );
    for bad in [bdf(0, 32, 0), bdf(0, 1, 8), bdf(16, 0, 0)] {
        assert!(matches!(
            s.add_device(bad, Box::new(HostBridge::default())),
            Err(PciError::BadBdf { .. })
        ));
    }
    assert!(
        s.add_device(bdf(15, 31, 7), Box::new(HostBridge::default()))
            .is_ok()
    );
}

#[test]
fn mmio_trait_routes_window_offsets() {
    let mut s = segment();
    let mut b = [0u8; 4];
    s.mmio_read(MmioAddress(0x3000_0000), ecam(0, 0, 0, 0), &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x0008_1b36);
    s.mmio_write(MmioAddress(0x3000_0000), ecam(0, 0, 0, COMMAND), &[0x06]);
    assert_eq!(r32(&mut s, ecam(0, 0, 0, COMMAND)), 0x6);
}

/// A function whose BAR 2 decodes at a fixed address and echoes offsets.
struct EchoBar {
    base: u64,
    writes: std::sync::Arc<std::sync::Mutex<Vec<(u8, u64)>>>,
}

impl PciDevice for EchoBar {
    fn read_config(&mut self, _reg: u16, data: &mut [u8]) {
        data.fill(0);
    }
    fn write_config(&mut self, _reg: u16, _data: &[u8]) {}
    fn decoded_bars(&self) -> Vec<(u8, u64, u64)> {
        vec![(2, self.base, 0x1000)]
    }
    fn bar_read(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        data.copy_from_slice(&(u32::from(index) << 16 | offset as u32).to_le_bytes()[..data.len()]);
    }
    fn bar_write(&mut self, index: u8, offset: u64, _data: &[u8]) {
        self.writes.lock().unwrap().push((index, offset));
    }
}

#[test]
fn trapped_bar_accesses_reach_the_decoding_function_and_misses_read_all_ones() {
    let mut s = segment();
    let mmio32 = s.layout().mmio32;
    let writes = std::sync::Arc::default();
    let dev = EchoBar {
        base: mmio32.base + 0x4000,
        writes: std::sync::Arc::clone(&writes),
    };
    s.add_device(
        Bdf {
            bus: 0,
            device: 3,
            function: 0,
        },
        Box::new(dev),
    )
    .unwrap();
    let window = MmioAddress(mmio32.base);
    let mut b = [0u8; 4];
    s.mmio_read(window, 0x4010, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x2_0010);
    s.mmio_read(window, 0x5000, &mut b);
    assert_eq!(b, [0xff; 4], "past the BAR: master abort");
    s.mmio_write(window, 0x4ffc, &[1, 2, 3, 4]);
    assert_eq!(*writes.lock().unwrap(), [(2, 0xffc)]);
    // The ECAM window still decodes configuration space.
    s.mmio_read(MmioAddress(s.layout().ecam.base), ecam(0, 0, 0, 0), &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x0008_1b36);
}

#[test]
fn a_function_at_devfn_0_takes_the_host_bridges_place_once() {
    let mut s = segment();
    let host_bridge_ids = r32(&mut s, ecam(0, 0, 0, 0));
    s.add_device(bdf(0, 0, 0), Box::new(Endpoint::new(0x1000, 0x1000)))
        .unwrap();
    assert_ne!(
        r32(&mut s, ecam(0, 0, 0, 0)),
        host_bridge_ids,
        "00:00.0 is the endpoint now"
    );
    assert_eq!(
        s.add_device(bdf(0, 0, 0), Box::new(HostBridge::default())),
        Err(PciError::Taken {
            bdf: bdf(0, 0, 0),
            segment: 0
        })
    );
}

#[test]
fn a_128g_bar_is_placed_naturally_aligned_in_a_grown_window() {
    let layout = Layout::new(Topology {
        vcpus: 1,
        ram_size: 1 << 30,
        pci_segments: 1,
        vsmmus: 0,
    })
    .unwrap()
    .fit_mmio64(&[(128 << 30) + (64 << 30)])
    .unwrap();
    let mut s = PciSegment::new(layout.pci_segments[0]);
    s.add_device(bdf(0, 0, 0), Box::new(Endpoint::new(0x1000, 128 << 30)))
        .unwrap();
    s.add_device(bdf(0, 1, 0), Box::new(Endpoint::new(0x1000, 1 << 20)))
        .unwrap();
    let placed = s.allocate_bars().unwrap();
    let big = placed.iter().find(|p| p.range.size == 128 << 30).unwrap();
    assert_eq!(big.range.base % (128 << 30), 0);
    assert!(layout.pci_segments[0].mmio64.contains(big.range.base));
    assert!(layout.pci_segments[0].mmio64.contains(big.range.end() - 1));
}
