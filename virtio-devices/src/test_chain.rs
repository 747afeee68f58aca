//! Descriptor chains as a guest driver lays them out, for the devices'
//! unit tests (block and net build their requests with it).

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;

/// (address, length, device-writable) -> a chain at descriptor `first`,
/// each descriptor linked to the next by index.
pub(crate) fn chain(first: u16, descs: &[(u64, u32, bool)]) -> Vec<RawDescriptor> {
    descs
        .iter()
        .enumerate()
        .map(|(i, (addr, len, write))| {
            let mut flags = if *write { VRING_DESC_F_WRITE as u16 } else { 0 };
            if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            RawDescriptor::from(SplitDescriptor::new(
                *addr,
                *len,
                flags,
                first + i as u16 + 1,
            ))
        })
        .collect()
}
