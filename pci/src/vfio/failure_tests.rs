//! The VFIO half of the halfway-failure table (docs/iommufd-mock.md has the
//! iommufd half): a passthrough function over a host, a router and a
//! memory-slot mapper that fail at one setup step each. Whatever step
//! fails, once the function is released nothing it took is left: no GSI,
//! no irqfd, no memory slot, no mapping, no host handle.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};

use arch::layout::Range;
use devices::mapping::{Mapping, MmapError};
use vmm_sys_util::eventfd::EventFd;

use super::caps::MsiMessage;
use super::host::{CONFIG_REGION, RegionInfo, VfioHost, VfioHostError};
use super::interrupts::{MsiError, MsiRouter};
use super::memhost::MemoryFunction;
use super::{VfioPciDevice, Wiring};
use crate::device::{GuestMapper, MapError, PciDevice, SlotId};

/// The setup step that fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Configuration space reads all-ones (the function is gone).
    ConfigRead,
    /// mmap of a BAR piece (it stays trapped).
    Mmap,
    /// The memory slot of a BAR piece.
    AddSlot,
    /// A GSI for the second vector (the first was taken).
    AllocateGsi,
    /// VFIO_DEVICE_SET_IRQS with the vectors' eventfds.
    EnableIrqs,
    /// An MSI route.
    Route,
    /// An irqfd.
    Irqfd,
    /// Removing a BAR slot when the guest moves the BAR (and at release).
    RemoveSlot,
    /// Disabling the vectors at release.
    DisableIrqs,
}

const STEPS: [Step; 9] = [
    Step::ConfigRead,
    Step::Mmap,
    Step::AddSlot,
    Step::AllocateGsi,
    Step::EnableIrqs,
    Step::Route,
    Step::Irqfd,
    Step::RemoveSlot,
    Step::DisableIrqs,
];

/// The VM side (GSIs, irqfds, memory slots) as a fake kernel keeps it.
struct Ledger {
    fail: Step,
    fired: Mutex<u32>,
    gsis: Mutex<BTreeSet<u32>>,
    irqfds: Mutex<BTreeSet<u32>>,
    slots: Mutex<Vec<(SlotId, Arc<Mapping>)>>,
    /// Every mapping a slot was ever given.
    seen: Mutex<Vec<Weak<Mapping>>>,
    next: Mutex<u32>,
}

impl Ledger {
    fn new(fail: Step) -> Self {
        Ledger {
            fail,
            fired: Mutex::new(0),
            gsis: Mutex::default(),
            irqfds: Mutex::default(),
            slots: Mutex::default(),
            seen: Mutex::default(),
            next: Mutex::new(0),
        }
    }

    /// Whether `step` fails now (and count it).
    fn fails(&self, step: Step) -> bool {
        let fails = self.fail == step;
        if fails {
            *self.fired.lock().unwrap() += 1;
        }
        fails
    }

    fn next(&self) -> u32 {
        let mut next = self.next.lock().unwrap();
        *next += 1;
        *next
    }
}

fn einval() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::EINVAL)
}

impl MsiRouter for Ledger {
    fn allocate_gsi(&self) -> Option<u32> {
        let mut gsis = self.gsis.lock().unwrap();
        if !gsis.is_empty() && self.fails(Step::AllocateGsi) {
            return None;
        }
        let gsi = self.next();
        gsis.insert(gsi);
        Some(gsi)
    }
    fn set_msi_route(&self, gsi: u32, _: MsiMessage, _: u32) -> Result<(), MsiError> {
        if self.fails(Step::Route) {
            return Err(MsiError::Route {
                gsi,
                entries: 1,
                source: einval(),
            });
        }
        Ok(())
    }
    fn free_gsi(&self, gsi: u32) {
        assert!(
            !self.irqfds.lock().unwrap().contains(&gsi),
            "GSI {gsi} freed under a live irqfd"
        );
        self.gsis.lock().unwrap().remove(&gsi);
    }
    fn irqfd(&self, _: &EventFd, gsi: u32, assign: bool) -> Result<(), MsiError> {
        if assign && self.fails(Step::Irqfd) {
            return Err(MsiError::Irqfd {
                gsi,
                assign,
                source: einval(),
            });
        }
        let mut irqfds = self.irqfds.lock().unwrap();
        if assign {
            irqfds.insert(gsi);
        } else {
            irqfds.remove(&gsi);
        }
        Ok(())
    }
}

impl GuestMapper for Ledger {
    fn add_region(&self, gpa: u64, mapping: Arc<Mapping>) -> Result<SlotId, MapError> {
        self.seen.lock().unwrap().push(Arc::downgrade(&mapping));
        if self.fails(Step::AddSlot) {
            return Err(MapError::Install {
                slot: 0,
                gpa,
                len: mapping.len(),
                source: einval(),
            });
        }
        let slot = SlotId::new(self.next());
        self.slots.lock().unwrap().push((slot, mapping));
        Ok(slot)
    }
    fn remove_region(&self, slot: SlotId) -> Result<Arc<Mapping>, MapError> {
        let mut slots = self.slots.lock().unwrap();
        let at = slots
            .iter()
            .position(|(s, _)| *s == slot)
            .ok_or(MapError::Unknown(slot.get()))?;
        if self.fails(Step::RemoveSlot) {
            return Err(MapError::Remove {
                slot: slot.get(),
                gpa: 0,
                source: einval(),
            });
        }
        Ok(slots.remove(at).1)
    }
}

/// The in-memory virtio-blk function, failing where the ledger says.
struct FailingHost {
    inner: MemoryFunction,
    ledger: Arc<Ledger>,
}

impl VfioHost for FailingHost {
    fn region(&self, index: u32) -> RegionInfo {
        self.inner.region(index)
    }
    fn read(&self, index: u32, offset: u64, data: &mut [u8]) {
        if index == CONFIG_REGION && self.ledger.fails(Step::ConfigRead) {
            data.fill(0xff);
            return;
        }
        self.inner.read(index, offset, data);
    }
    fn write(&self, index: u32, offset: u64, data: &[u8]) {
        self.inner.write(index, offset, data);
    }
    fn irq_count(&self, index: u32) -> u32 {
        self.inner.irq_count(index)
    }
    fn enable_irqs(&self, index: u32, fds: &[&EventFd]) -> Result<(), VfioHostError> {
        if self.ledger.fails(Step::EnableIrqs) {
            return Err(VfioHostError::Refused("VFIO_DEVICE_SET_IRQS"));
        }
        self.inner.enable_irqs(index, fds)
    }
    fn disable_irqs(&self, index: u32) -> Result<(), VfioHostError> {
        if self.ledger.fails(Step::DisableIrqs) {
            return Err(VfioHostError::Refused("VFIO_DEVICE_SET_IRQS disable"));
        }
        self.inner.disable_irqs(index)
    }
    fn reset(&self) {
        self.inner.reset();
    }
    fn map(&self, index: u32, offset: u64, len: u64) -> Result<Mapping, VfioHostError> {
        if self.ledger.fails(Step::Mmap) {
            return Err(VfioHostError::Map {
                index,
                offset,
                len,
                source: MmapError {
                    offset,
                    len,
                    source: einval(),
                },
            });
        }
        self.inner.map(index, offset, len)
    }
}

const MMIO32: u64 = 0x1000_0000;
const MMIO64: u64 = 0x80_0000_0000;

/// What a guest driver does with the virtio-blk function: place the BARs,
/// enable decoding, program and unmask the three MSI-X entries, enable
/// MSI-X, then move the mapped BAR.
fn drive(dev: &mut VfioPciDevice) {
    dev.set_bar_address(1, MMIO32);
    dev.set_bar_address(4, MMIO64);
    dev.write_config(0x04, &6u16.to_le_bytes());
    for entry in 0..3u64 {
        dev.bar_write(1, entry * 16, &0x0809_0040u32.to_le_bytes());
        dev.bar_write(1, entry * 16 + 8, &(0x20 + entry as u32).to_le_bytes());
        dev.bar_write(1, entry * 16 + 12, &0u32.to_le_bytes());
    }
    dev.write_config(0x9a, &0x8000u16.to_le_bytes());
    dev.set_bar_address(4, MMIO64 + 0x10_0000);
}

#[test]
fn a_function_failing_at_any_setup_step_leaves_nothing_behind() {
    for step in STEPS {
        let ledger = Arc::new(Ledger::new(step));
        let function = MemoryFunction::virtio_blk();
        let host = FailingHost {
            inner: function.clone(),
            ledger: ledger.clone(),
        };
        let wiring = Wiring {
            name: format!("fails at {step:?}"),
            devid: 8,
            windows: vec![
                Range {
                    base: MMIO32,
                    size: 0x100_0000,
                },
                Range {
                    base: MMIO64,
                    size: 0x10_0000_0000,
                },
            ],
            router: ledger.clone(),
            mapper: ledger.clone(),
            host_page: 4096,
        };
        match VfioPciDevice::new(Box::new(host), wiring) {
            Ok(mut dev) => {
                drive(&mut dev);
                if step == Step::DisableIrqs {
                    let wired = ledger.gsis.lock().unwrap().len();
                    assert_eq!(wired, 3, "the vectors were wired before release");
                }
                drop(dev);
            }
            Err(e) => assert_eq!(step, Step::ConfigRead, "{e}"),
        }
        assert!(*ledger.fired.lock().unwrap() > 0, "{step:?} never failed");
        assert_eq!(
            Arc::strong_count(&function.state),
            1,
            "{step:?}: host handle kept"
        );
        let gsis = ledger.gsis.lock().unwrap().clone();
        let irqfds = ledger.irqfds.lock().unwrap().clone();
        assert!(gsis.is_empty(), "{step:?}: GSIs {gsis:?} leaked");
        assert!(irqfds.is_empty(), "{step:?}: irqfds {irqfds:?} leaked");
        // A slot the VM would not remove keeps its mapping: the guest may
        // still reach it, so only the VM may let it go.
        let kept: Vec<_> = std::mem::take(&mut *ledger.slots.lock().unwrap());
        assert_eq!(kept.is_empty(), step != Step::RemoveSlot, "{step:?}");
        for (_, mapping) in &kept {
            assert_eq!(
                Arc::strong_count(mapping),
                1,
                "{step:?}: shared past release"
            );
        }
        drop(kept);
        let seen = ledger.seen.lock().unwrap();
        assert_eq!(
            seen.is_empty(),
            matches!(step, Step::ConfigRead | Step::Mmap),
            "{step:?}: slots offered {}",
            seen.len()
        );
        assert!(
            seen.iter().all(|m| m.upgrade().is_none()),
            "{step:?}: a mapping outlived its function and its slot"
        );
    }
}
