//! A minimal emulated PCI endpoint for exercising a vSMMU from inside the
//! guest: a type-0 function with no BARs and no driver of its own, so a
//! guest can bind `dma_map_benchmark` (or any DMA-API test driver) to it
//! through `driver_override`. It never performs DMA itself; its purpose is
//! to sit behind the vSMMU with a StreamID, so the guest's IOMMU layer
//! gives it a DMA domain whose map/unmap traffic is real SMMU traffic.

use crate::config::{ConfigSpace, DeviceIds};
use crate::device::PciDevice;

/// Red Hat's vendor ID with its "PCI test device" ID (no Linux driver
/// claims it).
pub const TEST_ENDPOINT_IDS: DeviceIds = DeviceIds {
    vendor: 0x1b36,
    device: 0x0005,
    // Base class 0xff: "device does not fit any defined class".
    class: 0xff_0000,
    revision: 1,
    subsystem_vendor: 0x1b36,
    subsystem: 0x0005,
};

/// The test endpoint.
pub struct TestEndpoint {
    config: ConfigSpace,
}

impl TestEndpoint {
    /// A fresh endpoint.
    pub fn new() -> Self {
        TestEndpoint {
            config: ConfigSpace::type0(TEST_ENDPOINT_IDS),
        }
    }
}

impl Default for TestEndpoint {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for TestEndpoint {
    fn read_config(&mut self, reg: u16, data: &mut [u8]) {
        self.config.read(reg, data);
    }

    fn write_config(&mut self, reg: u16, data: &[u8]) {
        self.config.write(reg, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_shows_its_ids_and_class_and_no_bars() {
        let mut ep = TestEndpoint::new();
        let mut ids = [0u8; 4];
        ep.read_config(0, &mut ids);
        assert_eq!(u32::from_le_bytes(ids), 0x0005_1b36);
        let mut class = [0u8; 4];
        ep.read_config(8, &mut class);
        assert_eq!(u32::from_le_bytes(class) >> 8, 0xff_0000);
        assert!(ep.bars().is_empty());
        // Writing all-ones to BAR0 sizes nothing: it reads back zero.
        ep.write_config(0x10, &[0xff; 4]);
        let mut bar = [0xffu8; 4];
        ep.read_config(0x10, &mut bar);
        assert_eq!(bar, [0; 4]);
    }

    #[test]
    fn bus_master_enable_sticks() {
        let mut ep = TestEndpoint::new();
        ep.write_config(4, &[0x06, 0x00]);
        let mut cmd = [0u8; 2];
        ep.read_config(4, &mut cmd);
        assert_eq!(cmd[0] & 0x06, 0x06);
    }
}
