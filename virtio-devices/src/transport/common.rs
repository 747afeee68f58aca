//! The common configuration structure (virtio 1.2 section 4.1.4.3) as a
//! state machine: feature negotiation, device status, queue set-up, reset.
//!
//! Rules it enforces, each in one place:
//! - [`CommonConfig::write_status`]: the driver only adds status bits
//!   (writing 0 resets); FEATURES_OK sticks only with VIRTIO_F_VERSION_1
//!   negotiated (section 6.1: this is a modern-only device); DRIVER_OK
//!   sticks only after FEATURES_OK.
//! - driver features are taken while FEATURES_OK is clear, and only the
//!   bits the device offered (section 2.2.1);
//! - queue configuration is taken while the queue is not enabled and the
//!   device not live (section 4.1.4.3.2);
//! - an MSI-X vector past the table reads back as VIRTIO_MSI_NO_VECTOR.

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_F_VERSION_1,
};
use virtio_queue::{Queue, QueueT};

use super::caps::{COMMON_CFG_LEN, MSI_NO_VECTOR};

const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const CONFIG_MSIX_VECTOR: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;

const FEATURES_OK: u8 = VIRTIO_CONFIG_S_FEATURES_OK as u8;
const DRIVER_OK: u8 = VIRTIO_CONFIG_S_DRIVER_OK as u8;
const VERSION_1: u64 = crate::feature(VIRTIO_F_VERSION_1);

/// What a common configuration write asks of the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusChange {
    /// Nothing beyond the register.
    None,
    /// DRIVER_OK was set: start the device.
    Activate,
    /// 0 was written to device_status: stop the device (the state here is
    /// already back to its initial values).
    Reset,
}

/// The common configuration of one function.
pub struct CommonConfig {
    device_features: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    config_msix_vector: u16,
    status: u8,
    queue_select: u16,
    max_sizes: Vec<u16>,
    queues: Vec<Queue>,
    queue_vectors: Vec<u16>,
    vectors: u16,
}

fn le_value(data: &[u8]) -> Option<u64> {
    let mut raw = [0u8; 8];
    raw.get_mut(..data.len())?.copy_from_slice(data);
    Some(u64::from_le_bytes(raw))
}

fn set_half(whole: u64, high: bool, value: u32) -> u64 {
    if high {
        (whole & 0xffff_ffff) | (u64::from(value) << 32)
    } else {
        (whole & !0xffff_ffff) | u64::from(value)
    }
}

impl CommonConfig {
    /// Initial state for a device offering `features` with queues of
    /// `max_sizes`, and `vectors` MSI-X vectors.
    pub fn new(features: u64, max_sizes: Vec<u16>, vectors: u16) -> Self {
        let mut c = CommonConfig {
            device_features: features,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            config_msix_vector: MSI_NO_VECTOR,
            status: 0,
            queue_select: 0,
            max_sizes,
            queues: Vec::new(),
            queue_vectors: Vec::new(),
            vectors,
        };
        c.reset();
        c
    }

    /// Back to the initial state (device reset, section 2.4).
    pub fn reset(&mut self) {
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.config_msix_vector = MSI_NO_VECTOR;
        self.status = 0;
        self.queue_select = 0;
        self.queues = self
            .max_sizes
            .iter()
            .map(|max| Queue::new(*max).unwrap_or_else(|_| Queue::default()))
            .collect();
        self.queue_vectors = vec![MSI_NO_VECTOR; self.max_sizes.len()];
    }

    /// device_status.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Mark the device broken (DEVICE_NEEDS_RESET) after a failed start.
    pub fn set_needs_reset(&mut self) {
        self.status |= virtio_bindings::virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET as u8;
    }

    /// The features both sides agreed on.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// The queues with their MSI-X vectors.
    pub fn queues(&self) -> impl Iterator<Item = (u16, &Queue, u16)> {
        self.queues
            .iter()
            .zip(&self.queue_vectors)
            .enumerate()
            .map(|(i, (q, v))| (i as u16, q, *v))
    }

    fn selected(&self) -> Option<&Queue> {
        self.queues.get(usize::from(self.queue_select))
    }

    fn live(&self) -> bool {
        self.status & DRIVER_OK != 0
    }

    fn image(&self) -> [u8; COMMON_CFG_LEN] {
        let mut b = [0u8; COMMON_CFG_LEN];
        let mut put = |at: u64, bytes: &[u8]| {
            let at = at as usize;
            if let Some(dst) = b.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        };
        let feature_word = match self.device_feature_select {
            0 => self.device_features as u32,
            1 => (self.device_features >> 32) as u32,
            _ => 0,
        };
        let driver_word = match self.driver_feature_select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        };
        put(
            DEVICE_FEATURE_SELECT,
            &self.device_feature_select.to_le_bytes(),
        );
        put(DEVICE_FEATURE, &feature_word.to_le_bytes());
        put(
            DRIVER_FEATURE_SELECT,
            &self.driver_feature_select.to_le_bytes(),
        );
        put(DRIVER_FEATURE, &driver_word.to_le_bytes());
        put(CONFIG_MSIX_VECTOR, &self.config_msix_vector.to_le_bytes());
        put(NUM_QUEUES, &(self.queues.len() as u16).to_le_bytes());
        put(DEVICE_STATUS, &[self.status]);
        put(CONFIG_GENERATION, &[0]);
        put(QUEUE_SELECT, &self.queue_select.to_le_bytes());
        if let Some(q) = self.selected() {
            let vector = self
                .queue_vectors
                .get(usize::from(self.queue_select))
                .copied()
                .unwrap_or(MSI_NO_VECTOR);
            put(QUEUE_SIZE, &q.size().to_le_bytes());
            put(QUEUE_MSIX_VECTOR, &vector.to_le_bytes());
            put(QUEUE_ENABLE, &u16::from(q.ready()).to_le_bytes());
            put(QUEUE_NOTIFY_OFF, &self.queue_select.to_le_bytes());
            put(QUEUE_DESC, &q.desc_table().to_le_bytes());
            put(QUEUE_DRIVER, &q.avail_ring().to_le_bytes());
            put(QUEUE_DEVICE, &q.used_ring().to_le_bytes());
        }
        b
    }

    /// A driver read at `offset`; outside the structure reads zero.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let image = self.image();
        let at = offset as usize;
        if let Some(src) = image.get(at..at.saturating_add(data.len())) {
            data.copy_from_slice(src);
        }
    }

    fn vector(&self, value: u64) -> u16 {
        match u16::try_from(value) {
            Ok(v) if v < self.vectors => v,
            _ => MSI_NO_VECTOR,
        }
    }

    /// A driver write of `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> StatusChange {
        let Some(value) = le_value(data) else {
            return StatusChange::None;
        };
        match (offset, data.len()) {
            (DEVICE_STATUS, 1) => return self.write_status(value as u8),
            (DEVICE_FEATURE_SELECT, 4) => self.device_feature_select = value as u32,
            (DRIVER_FEATURE_SELECT, 4) => self.driver_feature_select = value as u32,
            (DRIVER_FEATURE, 4) if self.status & FEATURES_OK == 0 => {
                let high = match self.driver_feature_select {
                    0 => false,
                    1 => true,
                    _ => return StatusChange::None,
                };
                let taken = set_half(self.driver_features, high, value as u32);
                self.driver_features = taken & self.device_features;
            }
            (CONFIG_MSIX_VECTOR, 2) => self.config_msix_vector = self.vector(value),
            (QUEUE_SELECT, 2) => self.queue_select = value as u16,
            _ => self.write_queue(offset, data.len(), value),
        }
        StatusChange::None
    }

    fn write_queue(&mut self, offset: u64, len: usize, value: u64) {
        let index = usize::from(self.queue_select);
        let vector = self.vector(value);
        let live = self.live();
        let (Some(q), Some(v)) = (
            self.queues.get_mut(index),
            self.queue_vectors.get_mut(index),
        ) else {
            return;
        };
        if live || q.ready() {
            log::debug!(target: "virtio", "queue {index}: write at {offset:#x} while enabled ignored");
            return;
        }
        match (offset, len) {
            (QUEUE_SIZE, 2) => {
                if q.try_set_size(value as u16).is_err() {
                    log::warn!(target: "virtio", "queue {index}: size {value} refused");
                }
            }
            (QUEUE_MSIX_VECTOR, 2) => *v = vector,
            (QUEUE_ENABLE, 2) if value == 1 => q.set_ready(true),
            (QUEUE_DESC, 8) => {
                q.set_desc_table_address(Some(value as u32), Some((value >> 32) as u32))
            }
            (QUEUE_DESC, 4) => q.set_desc_table_address(Some(value as u32), None),
            (o, 4) if o == QUEUE_DESC + 4 => q.set_desc_table_address(None, Some(value as u32)),
            (QUEUE_DRIVER, 8) => {
                q.set_avail_ring_address(Some(value as u32), Some((value >> 32) as u32))
            }
            (QUEUE_DRIVER, 4) => q.set_avail_ring_address(Some(value as u32), None),
            (o, 4) if o == QUEUE_DRIVER + 4 => q.set_avail_ring_address(None, Some(value as u32)),
            (QUEUE_DEVICE, 8) => {
                q.set_used_ring_address(Some(value as u32), Some((value >> 32) as u32))
            }
            (QUEUE_DEVICE, 4) => q.set_used_ring_address(Some(value as u32), None),
            (o, 4) if o == QUEUE_DEVICE + 4 => q.set_used_ring_address(None, Some(value as u32)),
            _ => {
                log::debug!(target: "virtio", "common cfg write of {len} bytes at {offset:#x} ignored")
            }
        }
    }

    /// The device status rules (section 3.1.1 and 2.1.2).
    fn write_status(&mut self, value: u8) -> StatusChange {
        if value == 0 {
            self.reset();
            return StatusChange::Reset;
        }
        let old = self.status;
        if value & old != old {
            log::warn!(target: "virtio", "device status {old:#x} -> {value:#x} clears bits; ignored (write 0 to reset)");
            return StatusChange::None;
        }
        let added = value & !old;
        let mut new = value;
        if added & FEATURES_OK != 0 && self.driver_features & VERSION_1 == 0 {
            log::warn!(target: "virtio", "FEATURES_OK refused: the driver did not accept VIRTIO_F_VERSION_1 (modern-only device)");
            new &= !FEATURES_OK;
        }
        if added & DRIVER_OK != 0 && new & FEATURES_OK == 0 {
            log::warn!(target: "virtio", "DRIVER_OK before FEATURES_OK ignored");
            new &= !DRIVER_OK;
        }
        self.status = new;
        if new & added & DRIVER_OK != 0 {
            StatusChange::Activate
        } else {
            StatusChange::None
        }
    }
}
