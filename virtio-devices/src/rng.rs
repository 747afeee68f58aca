//! virtio-rng (virtio 1.2 section 5.4): one request queue whose
//! device-writable buffers the device fills from an entropy source (a file,
//! `/dev/urandom` by default, opened by the VMM before the guest runs).
//!
//! Implemented: every write-only buffer of a chain filled up to
//! [`MAX_PER_CHAIN`] bytes, the used length the bytes written. A short read
//! of the source fills less; a failed one returns the chain with what was
//! written so far and logs (rate-limited). No device configuration, no
//! feature beyond VIRTIO_F_VERSION_1.

use std::fs::File;
use std::io::{self, Read};

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_queue::Queue;
use vm_memory::Bytes;

use crate::worker::{Progress, QueueHandler, Workers, serve_chains};
use crate::{GuestMemory, VirtioDevice, feature};

/// Size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Entropy handed out per chain at most (Linux asks for 64 bytes at a time).
pub const MAX_PER_CHAIN: usize = 64 << 10;

/// A virtio-rng device.
pub struct Rng {
    workers: Workers,
}

impl Rng {
    /// A device reading `source`; its queue worker started (parked).
    pub fn new(id: String, source: File) -> io::Result<Self> {
        let mut workers = Workers::new()?;
        workers.spawn(format!("{id}-rq"), Requests { source })?;
        Ok(Rng { workers })
    }
}

/// The request queue.
struct Requests {
    source: File,
}

impl Requests {
    /// Fill one chain's writable buffers; the bytes written.
    fn fill(
        &mut self,
        chain: impl Iterator<Item = virtio_queue::desc::split::Descriptor>,
        mem: &GuestMemory,
    ) -> u32 {
        let mut written = 0usize;
        for d in chain.filter(|d| d.is_write_only()) {
            let want = (d.len() as usize).min(MAX_PER_CHAIN - written);
            if want == 0 {
                break;
            }
            let mut buf = vec![0u8; want];
            let n = match self.source.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    devices::guest_log!(warn, target: "virtio-rng", "entropy source: {e}");
                    break;
                }
            };
            if mem.write_slice(&buf[..n], d.addr()).is_err() {
                devices::guest_log!(warn, target: "virtio-rng", "request buffer at {:#x} is not RAM", d.addr().0);
                break;
            }
            written += n;
            if n < want {
                break;
            }
        }
        written as u32
    }
}

impl QueueHandler for Requests {
    fn process_queue(&mut self, queue: &mut Queue, mem: &GuestMemory, _: Progress<'_>) -> bool {
        serve_chains(queue, mem, "virtio-rng", |chain| self.fill(chain, mem))
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        feature(VIRTIO_F_VERSION_1)
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn workers(&self) -> Option<&Workers> {
        Some(&self.workers)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    use super::*;

    fn source(bytes: &[u8]) -> File {
        let path = std::env::temp_dir().join(format!(
            "ch-rng-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        File::create(&path).unwrap().write_all(bytes).unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    #[test]
    fn writable_buffers_are_filled_from_the_source_and_read_only_ones_skipped() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let pattern: Vec<u8> = (0..=255u8).collect();
        let mut rq = Requests {
            source: source(&pattern),
        };
        let mock = MockSplitQueue::new(&mem, 16);
        let (w, next) = (VRING_DESC_F_WRITE as u16, VRING_DESC_F_NEXT as u16);
        mock.add_desc_chains(
            &[
                RawDescriptor::from(SplitDescriptor::new(0x10_0000, 8, next, 1)),
                RawDescriptor::from(SplitDescriptor::new(0x20_0000, 16, w | next, 2)),
                RawDescriptor::from(SplitDescriptor::new(0x30_0000, 4, w, 0)),
            ],
            0,
        )
        .unwrap();
        let mut queue: Queue = mock.create_queue().unwrap();
        assert!(rq.process_queue(&mut queue, &mem, Progress::QUIET));
        let mut got = [0u8; 20];
        mem.read_slice(&mut got[..16], GuestAddress(0x20_0000))
            .unwrap();
        mem.read_slice(&mut got[16..], GuestAddress(0x30_0000))
            .unwrap();
        assert_eq!(&got[..], &pattern[..20]);
        assert_eq!(mock.used().idx().load(), 1);
        assert_eq!(mock.used().ring().ref_at(0).unwrap().load().len(), 20);
    }

    #[test]
    fn a_source_that_runs_dry_returns_what_it_had() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let mut rq = Requests {
            source: source(b"abc"),
        };
        let mock = MockSplitQueue::new(&mem, 16);
        let w = VRING_DESC_F_WRITE as u16;
        mock.add_desc_chains(
            &[RawDescriptor::from(SplitDescriptor::new(
                0x20_0000, 64, w, 0,
            ))],
            0,
        )
        .unwrap();
        let mut queue: Queue = mock.create_queue().unwrap();
        assert!(rq.process_queue(&mut queue, &mem, Progress::QUIET));
        assert_eq!(mock.used().ring().ref_at(0).unwrap().load().len(), 3);
    }
}
