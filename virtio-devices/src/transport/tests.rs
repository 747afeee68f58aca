//! The transport against a recording device, router and ioeventfd
//! registrar: configuration space, feature negotiation, the status state
//! machine, reset, notify placement, MSI-X wiring.

use std::sync::Mutex;

use pci::vfio::MsiError;
use pci::vfio::caps::MsiMessage;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use vm_memory::GuestAddress;

use super::*;

#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Router(Arc<Log>, Mutex<u32>);

impl MsiRouter for Router {
    fn allocate_gsi(&self) -> Option<u32> {
        let mut next = self.1.lock().unwrap();
        *next += 1;
        Some(*next)
    }
    fn set_msi_route(&self, gsi: u32, msg: MsiMessage, devid: u32) -> Result<(), MsiError> {
        self.0.push(format!(
            "route {gsi} {:#x}/{} dev {devid:#x}",
            msg.addr, msg.data
        ));
        Ok(())
    }
    fn free_gsi(&self, gsi: u32) {
        self.0.push(format!("free {gsi}"));
    }
    fn irqfd(&self, _fd: &EventFd, gsi: u32, assign: bool) -> Result<(), MsiError> {
        self.0.push(format!("irqfd {gsi} {assign}"));
        Ok(())
    }
}

struct Registrar(Arc<Log>);

impl NotifyRegistrar for Registrar {
    fn register(&self, addr: u64, _fd: &EventFd) -> std::io::Result<()> {
        self.0.push(format!("ioeventfd {addr:#x}"));
        Ok(())
    }
    fn unregister(&self, addr: u64, _fd: &EventFd) -> std::io::Result<()> {
        self.0.push(format!("unioeventfd {addr:#x}"));
        Ok(())
    }
}

/// A device with two queues that records its life cycle.
struct Fake(Arc<Log>);

impl VirtioDevice for Fake {
    fn device_type(&self) -> u32 {
        virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![16, 16]
    }
    fn features(&self) -> u64 {
        crate::feature(VIRTIO_F_VERSION_1) | 0b101
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(offset as u8 + 1);
    }
    fn activate(
        &mut self,
        _: GuestMemory,
        features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), crate::ActivateError> {
        let q: Vec<_> = queues
            .iter()
            .map(|q| (q.index, q.queue.size(), q.queue.desc_table()))
            .collect();
        self.0.push(format!("activate {features:#x} {q:x?}"));
        Ok(())
    }
    fn reset(&mut self) {
        self.0.push("reset".into());
    }
}

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

const BASE: u64 = 0x1000_0000;

/// The wiring of a function named `name` whose router and registrar
/// record into `log`.
fn wiring(name: &str, log: &Arc<Log>) -> TransportWiring {
    TransportWiring {
        name: name.into(),
        devid: 0x18,
        router: Arc::new(Router(log.clone(), Mutex::new(0))),
        notify: Arc::new(Registrar(log.clone())),
        mem: GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap(),
    }
}

fn device() -> (VirtioPciDevice, Arc<Log>) {
    let log = Arc::new(Log::default());
    let dev = VirtioPciDevice::new(Box::new(Fake(log.clone())), wiring("fake", &log)).unwrap();
    (dev, log)
}

fn cfg32(dev: &mut VirtioPciDevice, reg: u16) -> u32 {
    let mut b = [0u8; 4];
    dev.read_config(reg, &mut b);
    u32::from_le_bytes(b)
}

fn write(dev: &mut VirtioPciDevice, offset: u64, value: u64, len: usize) {
    dev.bar_write(0, offset, &value.to_le_bytes()[..len]);
}

fn read(dev: &mut VirtioPciDevice, offset: u64, len: usize) -> u64 {
    let mut b = [0u8; 8];
    dev.bar_read(0, offset, &mut b[..len]);
    u64::from_le_bytes(b)
}

const ACK_DRIVER: u64 = (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER) as u64;
const FEATURES_OK: u64 = VIRTIO_CONFIG_S_FEATURES_OK as u64;
const DRIVER_OK: u64 = VIRTIO_CONFIG_S_DRIVER_OK as u64;

fn negotiate(dev: &mut VirtioPciDevice, high: u32, low: u32) -> u64 {
    write(dev, 0x14, ACK_DRIVER, 1);
    write(dev, 0x08, 0, 4);
    write(dev, 0x0c, u64::from(low), 4);
    write(dev, 0x08, 1, 4);
    write(dev, 0x0c, u64::from(high), 4);
    write(dev, 0x14, ACK_DRIVER | FEATURES_OK, 1);
    read(dev, 0x14, 1)
}

#[test]
fn config_space_shows_a_modern_virtio_function_with_its_capabilities() {
    let (mut dev, _) = device();
    assert_eq!(cfg32(&mut dev, 0), 0x1042_1af4);
    assert_eq!(cfg32(&mut dev, 8) >> 8, 0x01_8000);
    assert_eq!(cfg32(&mut dev, 8) & 0xff, 1);
    assert_ne!(cfg32(&mut dev, 4) & STATUS_CAP_LIST, 0);
    assert_eq!(cfg32(&mut dev, 0x34) & 0xff, 0x40);
    // First capability: vendor-specific, common cfg in BAR0 at 0.
    assert_eq!(cfg32(&mut dev, 0x40) & 0xff00_00ff, 0x0100_0009);
    // MSI-X: 3 vectors (two queues + config), disabled.
    assert_eq!(cfg32(&mut dev, 0x84), 0x0002_0011);
    let mut one = [0u8; 1];
    dev.read_config(0x87, &mut one);
    assert_eq!(one, [0]);
    // BAR sizing.
    dev.write_config(0x10, &[0xff; 4]);
    assert_eq!(cfg32(&mut dev, 0x10), !(BAR_SIZE as u32 - 1));
}

#[test]
fn features_ok_needs_version_1_and_takes_only_offered_bits() {
    let (mut dev, _) = device();
    assert_eq!(read(&mut dev, 0x04, 4), 0b101);
    write(&mut dev, 0x00, 1, 4);
    assert_eq!(read(&mut dev, 0x04, 4), 1);
    // No VERSION_1: FEATURES_OK does not stick.
    assert_eq!(negotiate(&mut dev, 0, 0b1), ACK_DRIVER);
    assert_eq!(dev.common().driver_features(), 0b1);
    write(&mut dev, 0x14, 0, 1);
    // VERSION_1 plus a bit not offered: the extra bit is dropped.
    assert_eq!(negotiate(&mut dev, 1, 0b111), ACK_DRIVER | FEATURES_OK);
    assert_eq!(dev.common().driver_features(), (1 << 32) | 0b101);
    // After FEATURES_OK the features are fixed.
    write(&mut dev, 0x08, 0, 4);
    write(&mut dev, 0x0c, 0, 4);
    assert_eq!(dev.common().driver_features(), (1 << 32) | 0b101);
}

fn setup_queue(dev: &mut VirtioPciDevice, index: u64, desc: u64) {
    write(dev, 0x16, index, 2);
    write(dev, 0x18, 8, 2);
    write(dev, 0x1a, index, 2);
    write(dev, 0x20, desc, 4);
    write(dev, 0x24, 0, 4);
    write(dev, 0x28, desc + 0x1000, 8);
    write(dev, 0x30, desc + 0x2000, 8);
    write(dev, 0x1c, 1, 2);
}

#[test]
fn driver_ok_activates_the_enabled_queues_and_reset_restores_everything() {
    let (mut dev, log) = device();
    // DRIVER_OK before FEATURES_OK is ignored.
    write(&mut dev, 0x14, ACK_DRIVER | DRIVER_OK, 1);
    assert_eq!(read(&mut dev, 0x14, 1), ACK_DRIVER);
    negotiate(&mut dev, 1, 0);
    setup_queue(&mut dev, 1, 0x4000);
    assert_eq!(read(&mut dev, 0x12, 2), 2);
    assert_eq!(read(&mut dev, 0x1e, 2), 1);
    assert_eq!(read(&mut dev, 0x20, 8), 0x4000);
    write(&mut dev, 0x14, ACK_DRIVER | FEATURES_OK | DRIVER_OK, 1);
    assert_eq!(
        read(&mut dev, 0x14, 1),
        ACK_DRIVER | FEATURES_OK | DRIVER_OK
    );
    assert_eq!(
        log.take()
            .iter()
            .filter(|l| l.starts_with("activate"))
            .collect::<Vec<_>>(),
        ["activate 0x100000000 [(1, 8, 4000)]"]
    );
    // A live queue's registers are fixed.
    write(&mut dev, 0x18, 4, 2);
    assert_eq!(read(&mut dev, 0x18, 2), 8);
    // Clearing a bit is not a reset.
    write(&mut dev, 0x14, ACK_DRIVER, 1);
    assert_eq!(
        read(&mut dev, 0x14, 1),
        ACK_DRIVER | FEATURES_OK | DRIVER_OK
    );
    write(&mut dev, 0x14, 0, 1);
    assert_eq!(log.take(), ["reset"]);
    assert_eq!(read(&mut dev, 0x14, 1), 0);
    write(&mut dev, 0x16, 1, 2);
    assert_eq!(read(&mut dev, 0x18, 2), 16);
    assert_eq!(read(&mut dev, 0x1c, 2), 0);
    assert_eq!(read(&mut dev, 0x20, 8), 0);
    assert_eq!(read(&mut dev, 0x1a, 2), u64::from(MSI_NO_VECTOR));
    assert_eq!(dev.common().driver_features(), 0);
}

#[test]
fn an_invalid_queue_sets_needs_reset_instead_of_starting() {
    let (mut dev, log) = device();
    negotiate(&mut dev, 1, 0);
    // Descriptor table past the end of guest RAM.
    setup_queue(&mut dev, 0, 0x10_0000);
    write(&mut dev, 0x14, ACK_DRIVER | FEATURES_OK | DRIVER_OK, 1);
    let status = read(&mut dev, 0x14, 1);
    assert_ne!(status & u64::from(VIRTIO_CONFIG_S_NEEDS_RESET), 0);
    assert!(!log.take().iter().any(|l| l.starts_with("activate")));
}

#[test]
fn out_of_range_vectors_read_back_as_no_vector_and_device_config_is_forwarded() {
    let (mut dev, _) = device();
    write(&mut dev, 0x10, 3, 2);
    assert_eq!(read(&mut dev, 0x10, 2), u64::from(MSI_NO_VECTOR));
    write(&mut dev, 0x10, 2, 2);
    assert_eq!(read(&mut dev, 0x10, 2), 2);
    assert_eq!(read(&mut dev, DEVICE_CFG_OFFSET + 4, 1), 5);
}

#[test]
fn notify_eventfds_follow_bar0_and_a_trapped_notify_signals_the_queue() {
    let (mut dev, log) = device();
    log.take();
    dev.set_bar_address(0, BASE);
    assert!(log.take().is_empty(), "Memory Space still off");
    dev.write_config(COMMAND, &[0x06, 0]);
    assert_eq!(log.take(), ["ioeventfd 0x10003000", "ioeventfd 0x10003004"]);
    dev.write_config(0x10, &(BASE as u32 + 0x1_0000).to_le_bytes());
    assert_eq!(
        log.take(),
        [
            "unioeventfd 0x10003000",
            "unioeventfd 0x10003004",
            "ioeventfd 0x10013000",
            "ioeventfd 0x10013004"
        ]
    );
    assert_eq!(dev.decoded_bars(), [(0, BASE + 0x1_0000, BAR_SIZE)]);
    write(&mut dev, NOTIFY_OFFSET + 4, 1, 2);
    assert_eq!(dev.kicks[1].read().unwrap(), 1);
    assert!(dev.kicks[0].read().is_err(), "queue 0 was not notified");
    dev.release();
    assert_eq!(
        &log.take()[..2],
        ["unioeventfd 0x10013000", "unioeventfd 0x10013004"]
    );
}

#[test]
fn msix_vectors_are_routed_when_enabled_and_unmasked() {
    let (mut dev, log) = device();
    log.take();
    let entry = MSIX_TABLE_OFFSET + 16;
    write(&mut dev, entry, 0x0809_0040, 4);
    write(&mut dev, entry + 4, 0, 4);
    write(&mut dev, entry + 8, 7, 4);
    write(&mut dev, entry + 12, 0, 4);
    assert!(log.take().is_empty(), "MSI-X still disabled");
    dev.write_config(0x86, &0x8000u16.to_le_bytes());
    assert_eq!(log.take(), ["route 2 0x8090040/7 dev 0x18", "irqfd 2 true"]);
    assert_eq!(read(&mut dev, entry + 8, 4), 7);
    write(&mut dev, entry + 12, 1, 4);
    assert_eq!(log.take(), ["irqfd 2 false"]);
}

/// A device with more queues than the MSI-X table or notify area holds.
struct Wide;

impl VirtioDevice for Wide {
    fn device_type(&self) -> u32 {
        virtio_bindings::virtio_ids::VIRTIO_ID_RNG
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![16; 4096]
    }
    fn features(&self) -> u64 {
        crate::feature(VIRTIO_F_VERSION_1)
    }
    fn read_config(&self, _: u64, _: &mut [u8]) {}
}

#[test]
fn too_many_queues_is_a_typed_refusal_and_a_device_without_workers_does_not_start() {
    let log = Arc::new(Log::default());
    match VirtioPciDevice::new(Box::new(Wide), wiring("wide", &log)) {
        Err(crate::TransportError::TooManyQueues(4096)) => {}
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("4096 queues were accepted"),
    }
    // Nothing was allocated before the refusal.
    assert!(log.take().is_empty());
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
    assert!(matches!(
        Wide.activate(mem, 0, Vec::new()),
        Err(crate::ActivateError::NoWorkers)
    ));
}
