//! The virtio-pci function (virtio 1.2 section 4.1), modern only: vendor
//! 0x1af4, device 0x1040 + the virtio device ID, revision 1, one 32-bit
//! memory BAR with every structure ([`caps`] has the layout), MSI-X only.
//!
//! Notifications: one eventfd per queue. The VMM registers each as a KVM
//! ioeventfd on the queue's notify address ([`NotifyRegistrar`]) wherever
//! the guest placed BAR0 while Memory Space is enabled, and moves them when
//! the BAR moves; a notify write that still traps (no ioeventfd yet, or
//! the tests) signals the same eventfd.
//!
//! Interrupts: one MSI-X vector per queue plus the configuration vector,
//! each an eventfd wired as a KVM irqfd through the same [`MsiRouter`] as
//! VFIO functions (`pci::vfio::interrupts`): a masked vector keeps counting
//! and fires on unmask, so the PBA reads 0.

pub mod caps;
pub mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use pci::PciDevice;
use pci::config::{BAR0, Bar, BarKind, COMMAND, ConfigSpace, DeviceIds};
use pci::vfio::MsiRouter;
use pci::vfio::caps::{MsixCap, MsixState};
use pci::vfio::interrupts::Vectors;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::{
    ActivateError, ActiveQueue, GuestMemory, QueueInterrupt, TransportError, VirtioDevice, feature,
};
use caps::{
    BAR_SIZE, CAPS_END, CAPS_START, COMMON_CFG_LEN, COMMON_CFG_OFFSET, DEVICE_CFG_LEN,
    DEVICE_CFG_OFFSET, ISR_OFFSET, MSI_NO_VECTOR, MSIX_CAP_OFFSET, MSIX_PBA_OFFSET,
    MSIX_TABLE_OFFSET, NOTIFY_LEN, NOTIFY_OFF_MULTIPLIER, NOTIFY_OFFSET,
};
use common::{CommonConfig, StatusChange};

/// Red Hat's virtio vendor ID.
const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// Modern device IDs are 0x1040 + the virtio device ID (section 4.1.2.1).
const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;
/// Status register bit: the function has a capability list.
const STATUS_CAP_LIST: u32 = 1 << (16 + 4);
/// Offset of the Capabilities Pointer.
const CAP_POINTER: u16 = 0x34;

/// Registers and removes the notify eventfds as KVM ioeventfds.
pub trait NotifyRegistrar: Send + Sync {
    /// Make a guest write at `addr` signal `fd`.
    fn register(&self, addr: u64, fd: &EventFd) -> std::io::Result<()>;
    /// Undo [`NotifyRegistrar::register`].
    fn unregister(&self, addr: u64, fd: &EventFd) -> std::io::Result<()>;
}

/// Where the function sits in the VM.
pub struct TransportWiring {
    /// Name in log lines (the device id).
    pub name: String,
    /// ITS DeviceID its MSIs carry.
    pub devid: u32,
    /// GSI routes and irqfds.
    pub router: Arc<dyn MsiRouter>,
    /// ioeventfds.
    pub notify: Arc<dyn NotifyRegistrar>,
    /// Guest RAM the queues live in.
    pub mem: GuestMemory,
}

/// A virtio device on the PCI transport.
pub struct VirtioPciDevice {
    device: Box<dyn VirtioDevice>,
    wiring: TransportWiring,
    config: ConfigSpace,
    caps: Vec<u8>,
    common: CommonConfig,
    isr: Arc<AtomicU8>,
    kicks: Vec<EventFd>,
    notify_base: Option<u64>,
    msix: MsixState,
    vectors: Vectors,
    active: bool,
}

impl VirtioPciDevice {
    /// The function for `device`: vectors allocated (not yet routed), the
    /// queues' eventfds made, nothing registered until BAR0 decodes.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        wiring: TransportWiring,
    ) -> Result<Self, TransportError> {
        let max_sizes = device.queue_max_sizes();
        let count = u16::try_from(max_sizes.len() + 1)
            .ok()
            .filter(|n| *n <= caps::MAX_VECTORS && u64::from(*n) * 4 <= NOTIFY_LEN)
            .ok_or(TransportError::TooManyQueues(max_sizes.len()))?;
        let device_type = device.device_type();
        let class = match device_type {
            virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK => 0x01_8000,
            virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE => 0x07_8000,
            _ => 0xff_0000,
        };
        let mut config = ConfigSpace::type0(DeviceIds {
            vendor: VIRTIO_PCI_VENDOR,
            device: VIRTIO_PCI_DEVICE_BASE + device_type as u16,
            class,
            revision: 1,
            subsystem_vendor: VIRTIO_PCI_VENDOR,
            subsystem: 0x40,
        });
        config
            .add_bar(
                0,
                Bar {
                    kind: BarKind::Mmio32,
                    size: BAR_SIZE,
                    prefetchable: false,
                },
            )
            .map_err(TransportError::Bar)?;
        let kicks = (0..max_sizes.len())
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(TransportError::EventFd)?;
        let vectors = Vectors::new(&*wiring.router, usize::from(count), wiring.devid)
            .map_err(TransportError::Vectors)?;
        let msix = MsixState::new(MsixCap {
            offset: MSIX_CAP_OFFSET,
            table_size: count,
            table_bar: 0,
            table_offset: MSIX_TABLE_OFFSET,
            pba_bar: 0,
            pba_offset: MSIX_PBA_OFFSET,
        });
        Ok(VirtioPciDevice {
            common: CommonConfig::new(device.features(), max_sizes, count),
            device,
            wiring,
            config,
            caps: caps::capability_bytes(count),
            isr: Arc::new(AtomicU8::new(0)),
            kicks,
            notify_base: None,
            msix,
            vectors,
            active: false,
        })
    }

    /// The common configuration (device status, negotiated features).
    pub fn common(&self) -> &CommonConfig {
        &self.common
    }

    fn config_dword(&self, reg: u16) -> u32 {
        if reg < CAPS_START {
            let mut b = [0u8; 4];
            self.config.read(reg, &mut b);
            let mut v = u32::from_le_bytes(b);
            if reg == COMMAND {
                v |= STATUS_CAP_LIST;
            } else if reg == CAP_POINTER {
                v = u32::from(CAPS_START);
            }
            return v;
        }
        let at = usize::from(reg - CAPS_START);
        let mut b = [0u8; 4];
        if let Some(src) = self.caps.get(at..at + 4) {
            b.copy_from_slice(src);
        }
        let mut v = u32::from_le_bytes(b);
        if reg == MSIX_CAP_OFFSET {
            let control = self.msix.control((v >> 16) as u16);
            v = (v & 0xffff) | (u32::from(control) << 16);
        }
        v
    }

    /// Route every vector as the MSI-X table says now.
    fn sync_vectors(&mut self) {
        for i in 0..self.vectors.len() {
            self.vectors
                .sync(&*self.wiring.router, i, self.msix.message(i));
        }
    }

    /// Keep the ioeventfds on BAR0's notify area as the guest places it.
    fn sync_notify(&mut self) {
        let want = if self.config.memory_enabled() {
            self.config.bar_address(0).filter(|a| *a != 0)
        } else {
            None
        };
        if want == self.notify_base {
            return;
        }
        let notify = self.wiring.notify.clone();
        let at = |base: u64, i: usize| {
            base + NOTIFY_OFFSET + i as u64 * u64::from(NOTIFY_OFF_MULTIPLIER)
        };
        if let Some(old) = self.notify_base.take() {
            for (i, fd) in self.kicks.iter().enumerate() {
                if let Err(e) = notify.unregister(at(old, i), fd) {
                    log::error!(target: "virtio", "{}: queue {i} ioeventfd removal at {:#x}: {e}", self.wiring.name, at(old, i));
                }
            }
        }
        if let Some(base) = want {
            for (i, fd) in self.kicks.iter().enumerate() {
                if let Err(e) = notify.register(at(base, i), fd) {
                    log::warn!(target: "virtio", "{}: queue {i} ioeventfd at {:#x}: {e}; notifications trap", self.wiring.name, at(base, i));
                }
            }
            self.notify_base = Some(base);
        }
    }

    /// The enabled queues, each with its kick eventfd and vector, using
    /// event indices when the driver accepted VIRTIO_RING_F_EVENT_IDX.
    fn active_queues(&self, features: u64) -> Result<Vec<ActiveQueue>, ActivateError> {
        let event_idx = features & feature(VIRTIO_RING_F_EVENT_IDX) != 0;
        let mut queues = Vec::new();
        for (index, queue, vector) in self.common.queues() {
            if !queue.ready() {
                continue;
            }
            if !queue.is_valid(&self.wiring.mem) {
                return Err(ActivateError::InvalidQueue(index));
            }
            let fd = if vector == MSI_NO_VECTOR {
                None
            } else {
                let fd = self
                    .vectors
                    .fds()
                    .get(usize::from(vector))
                    .map(|fd| fd.try_clone())
                    .transpose()
                    .map_err(|source| ActivateError::Host {
                        queue: index,
                        what: "its MSI-X vector's eventfd",
                        source,
                    })?;
                fd.map(Arc::new)
            };
            let kick = self
                .kicks
                .get(usize::from(index))
                .map(EventFd::try_clone)
                .transpose()
                .map_err(|source| ActivateError::Host {
                    queue: index,
                    what: "its notification eventfd",
                    source,
                })?
                .ok_or(ActivateError::NoWorker(index))?;
            let mut queue =
                Queue::try_from(queue.state()).map_err(|source| ActivateError::Queue {
                    queue: index,
                    source,
                })?;
            queue.set_event_idx(event_idx);
            queues.push(ActiveQueue {
                index,
                queue,
                kick,
                interrupt: QueueInterrupt::new(fd, self.isr.clone()),
            });
        }
        Ok(queues)
    }

    /// DRIVER_OK: hand the enabled queues to the device.
    fn activate(&mut self) {
        let features = self.common.driver_features();
        let started = self.active_queues(features).and_then(|queues| {
            self.device
                .activate(self.wiring.mem.clone(), features, queues)
        });
        match started {
            Ok(()) => {
                self.active = true;
                log::info!(target: "virtio", "{}: activated, features {features:#x}", self.wiring.name);
            }
            Err(e) => {
                log::error!(target: "virtio", "{}: not started: {}", self.wiring.name, devices::mapping::Sentence(&e));
                self.common.set_needs_reset();
            }
        }
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
            self.active = false;
        }
        self.isr.store(0, Ordering::SeqCst);
        log::info!(target: "virtio", "{}: reset", self.wiring.name);
    }

    fn write_common(&mut self, offset: u64, data: &[u8]) {
        match self.common.write(offset, data) {
            StatusChange::None => {}
            StatusChange::Activate => self.activate(),
            StatusChange::Reset => self.reset(),
        }
    }
}

impl PciDevice for VirtioPciDevice {
    fn read_config(&mut self, reg: u16, data: &mut [u8]) {
        let base = reg & !3;
        let value = if base < CAPS_END {
            self.config_dword(base)
        } else {
            let mut b = [0u8; 4];
            self.config.read(base, &mut b);
            u32::from_le_bytes(b)
        };
        let bytes = value.to_le_bytes();
        let at = usize::from(reg - base);
        if let Some(src) = bytes.get(at..at + data.len()) {
            data.copy_from_slice(src);
        }
    }

    fn write_config(&mut self, reg: u16, data: &[u8]) {
        if reg >= CAPS_START {
            if self.msix.is_control(reg, data.len()) {
                self.msix.write_control(reg, data);
                self.sync_vectors();
            }
            return;
        }
        self.config.write(reg, data);
        if reg == COMMAND || (BAR0..BAR0 + 4).contains(&reg) {
            self.sync_notify();
        }
    }

    fn bars(&self) -> Vec<(u8, Bar)> {
        self.config.bars()
    }

    fn set_bar_address(&mut self, index: u8, addr: u64) {
        self.config.set_bar_address(index, addr);
        self.sync_notify();
    }

    fn decoded_bars(&self) -> Vec<(u8, u64, u64)> {
        match self.config.bar_address(0) {
            Some(addr) if self.config.memory_enabled() => vec![(0, addr, BAR_SIZE)],
            _ => Vec::new(),
        }
    }

    fn bar_read(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if index != 0 {
            return;
        }
        match offset {
            o if o < COMMON_CFG_LEN as u64 => self.common.read(o - COMMON_CFG_OFFSET, data),
            ISR_OFFSET => {
                // Reading ISR status clears it (section 4.1.4.5).
                if let Some(b) = data.first_mut() {
                    *b = self.isr.swap(0, Ordering::SeqCst);
                }
            }
            o if (DEVICE_CFG_OFFSET..DEVICE_CFG_OFFSET + DEVICE_CFG_LEN).contains(&o) => {
                self.device.read_config(o - DEVICE_CFG_OFFSET, data)
            }
            o if self.msix.in_table(0, o) => self.msix.read_table(o, data),
            // The PBA reads 0: a masked vector's eventfd keeps the pending
            // interrupt, delivered on unmask.
            _ => {}
        }
    }

    fn bar_write(&mut self, index: u8, offset: u64, data: &[u8]) {
        if index != 0 {
            return;
        }
        match offset {
            o if o < COMMON_CFG_LEN as u64 => self.write_common(o - COMMON_CFG_OFFSET, data),
            o if (NOTIFY_OFFSET..NOTIFY_OFFSET + NOTIFY_LEN).contains(&o) => {
                let queue = (o - NOTIFY_OFFSET) / u64::from(NOTIFY_OFF_MULTIPLIER);
                if let Some(fd) = usize::try_from(queue).ok().and_then(|q| self.kicks.get(q))
                    && let Err(e) = fd.write(1)
                {
                    log::error!(target: "virtio", "{}: notify: {e}", self.wiring.name);
                }
            }
            o if self.msix.in_table(0, o) => {
                if let Some(i) = self.msix.write_table(o, data) {
                    let msg = self.msix.message(i);
                    self.vectors.sync(&*self.wiring.router, i, msg);
                }
            }
            _ => {
                log::debug!(target: "virtio", "{}: BAR0 write at {offset:#x} ignored", self.wiring.name)
            }
        }
    }

    fn release(&mut self) {
        self.reset();
        self.common.reset();
        let base = self.notify_base;
        if let Some(base) = base {
            for (i, fd) in self.kicks.iter().enumerate() {
                let addr = base + NOTIFY_OFFSET + i as u64 * u64::from(NOTIFY_OFF_MULTIPLIER);
                let _ = self.wiring.notify.unregister(addr, fd);
            }
            self.notify_base = None;
        }
        self.vectors.release(&*self.wiring.router);
    }
}

#[cfg(test)]
mod tests;
