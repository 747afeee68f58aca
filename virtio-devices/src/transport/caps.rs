//! The virtio-pci layout this transport exposes, defined by hand because
//! `virtio-bindings` 0.2.7 has no `virtio_pci` module: the vendor-specific
//! capability structure `virtio_pci_cap` / `virtio_pci_notify_cap` (virtio
//! 1.2 section 4.1.4) and where each structure sits in BAR0.
//!
//! BAR0 (32-bit memory, 64 KiB):
//!
//! | offset | what |
//! |--------|------|
//! | 0x0000 | common configuration (0x38 bytes) |
//! | 0x1000 | ISR status (1 byte, read clears) |
//! | 0x2000 | device-specific configuration |
//! | 0x3000 | notify area: queue n at 0x3000 + 4 n (notify_off_multiplier 4) |
//! | 0x8000 | MSI-X table |
//! | 0xc000 | MSI-X PBA |
//!
//! Configuration space: capabilities from 0x40 in the order common, ISR,
//! device, notify, MSI-X. Not exposed: VIRTIO_PCI_CAP_PCI_CFG (the
//! configuration-space window into the BARs, which Linux never uses) and
//! the shared memory capability.

/// The size of BAR0.
pub const BAR_SIZE: u64 = 0x1_0000;
/// Common configuration in BAR0.
pub const COMMON_CFG_OFFSET: u64 = 0x0000;
/// Bytes of `virtio_pci_common_cfg` up to queue_device (the 1.0 layout).
pub const COMMON_CFG_LEN: usize = 0x38;
/// ISR status in BAR0.
pub const ISR_OFFSET: u64 = 0x1000;
/// Device configuration in BAR0.
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
/// Bytes reserved for the device configuration.
pub const DEVICE_CFG_LEN: u64 = 0x1000;
/// The notify area in BAR0.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Bytes between two queues' notify addresses.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
/// Bytes reserved for the notify area (1024 queues).
pub const NOTIFY_LEN: u64 = 0x1000;
/// MSI-X table in BAR0.
pub const MSIX_TABLE_OFFSET: u64 = 0x8000;
/// MSI-X PBA in BAR0.
pub const MSIX_PBA_OFFSET: u64 = 0xc000;
/// Most MSI-X vectors the table room allows (0x4000 / 16 bytes).
pub const MAX_VECTORS: u16 = 1024;

/// `VIRTIO_MSI_NO_VECTOR`.
pub const MSI_NO_VECTOR: u16 = 0xffff;

/// PCI capability ID of a vendor-specific capability.
const CAP_ID_VENDOR: u8 = 0x09;
/// PCI capability ID of MSI-X.
const CAP_ID_MSIX: u8 = 0x11;

/// `cfg_type` of `virtio_pci_cap`.
const CAP_COMMON_CFG: u8 = 1;
const CAP_NOTIFY_CFG: u8 = 2;
const CAP_ISR_CFG: u8 = 3;
const CAP_DEVICE_CFG: u8 = 4;

/// Offset of the first capability in configuration space.
pub const CAPS_START: u16 = 0x40;
/// Offset of the MSI-X capability.
pub const MSIX_CAP_OFFSET: u16 = 0x84;
/// End of the capability list.
pub const CAPS_END: u16 = 0x90;

/// The capability list bytes from [`CAPS_START`] to [`CAPS_END`], for a
/// function with `vectors` MSI-X vectors. The MSI-X Message Control word
/// carries the table size; its Enable and Function Mask bits are the
/// transport's state and merged in on read.
pub fn capability_bytes(vectors: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(usize::from(CAPS_END - CAPS_START));
    let mut virtio_cap = |next: u16, cfg_type: u8, offset: u64, len: u64, cap_len: u8| {
        b.extend_from_slice(&[CAP_ID_VENDOR, next as u8, cap_len, cfg_type, 0, 0, 0, 0]);
        b.extend_from_slice(&(offset as u32).to_le_bytes());
        b.extend_from_slice(&(len as u32).to_le_bytes());
    };
    virtio_cap(
        0x50,
        CAP_COMMON_CFG,
        COMMON_CFG_OFFSET,
        COMMON_CFG_LEN as u64,
        16,
    );
    virtio_cap(0x60, CAP_ISR_CFG, ISR_OFFSET, 1, 16);
    virtio_cap(0x70, CAP_DEVICE_CFG, DEVICE_CFG_OFFSET, DEVICE_CFG_LEN, 16);
    virtio_cap(
        MSIX_CAP_OFFSET,
        CAP_NOTIFY_CFG,
        NOTIFY_OFFSET,
        NOTIFY_LEN,
        20,
    );
    b.extend_from_slice(&NOTIFY_OFF_MULTIPLIER.to_le_bytes());
    // MSI-X: table and PBA in BAR0 (BIR 0 in the low bits).
    b.extend_from_slice(&[CAP_ID_MSIX, 0]);
    b.extend_from_slice(&(vectors - 1).to_le_bytes());
    b.extend_from_slice(&(MSIX_TABLE_OFFSET as u32).to_le_bytes());
    b.extend_from_slice(&(MSIX_PBA_OFFSET as u32).to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_chained_and_ends_at_msix() {
        let b = capability_bytes(3);
        assert_eq!(b.len(), usize::from(CAPS_END - CAPS_START));
        let mut at = CAPS_START;
        let mut types = Vec::new();
        while at != 0 {
            let i = usize::from(at - CAPS_START);
            types.push((b[i], b[i + 3]));
            at = u16::from(b[i + 1]);
        }
        assert_eq!(types, [(9, 1), (9, 3), (9, 4), (9, 2), (0x11, 0)]);
        // The notify cap's multiplier and the MSI-X table size (N - 1).
        assert_eq!(b[0x40..0x44], [4, 0, 0, 0]);
        assert_eq!(b[0x46..0x48], [2, 0]);
    }
}
