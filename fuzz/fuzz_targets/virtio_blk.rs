//! virtio-blk request parsing and execution over guest-built descriptor
//! chains: the input is guest RAM (descriptor table, available ring, the
//! requests' headers and buffers) plus the disk's read-only switch and
//! which path serves it: one chain at a time ([`execute`]), or the whole
//! batch as a queue worker on the synchronous path does, with a helper
//! thread taking every IN and OUT, each put on the used ring and signalled
//! as it completes, by the driver's used_event in that RAM ([`SyncQueue`]).
//! Every available chain is
//! served against a small raw image. Besides "never panics": a read-only
//! disk's image never changes and counts no write.
//! (A head index past the table, which the guest may post, yields an empty
//! chain that is dropped; virtio-queue's add_used refuses to return it.)
#![no_main]

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use libfuzzer_sys::fuzz_target;
use virtio_devices::block::request::{BlockCounters, RequestContext, execute};
use virtio_devices::block::{DiskImage, SyncQueue};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::tempfile::TempFile;

const RAM: usize = 0x1_0000;
const QUEUE_SIZE: u16 = 16;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x100;
const USED: u64 = 0x200;
/// Chains served per input (an available index far ahead is not a loop).
const MAX_CHAINS: usize = 64;
const SECTORS: u64 = 64;

/// (read-write image, read-only image): one of each per process.
fn images() -> &'static (TempFile, TempFile) {
    static IMAGES: OnceLock<(TempFile, TempFile)> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let make = || {
            let f = TempFile::new().unwrap();
            f.as_file().write_all(&vec![0x5a; (SECTORS * 512) as usize]).unwrap();
            f
        };
        (make(), make())
    })
}

fn queue() -> Queue {
    let mut q = Queue::new(QUEUE_SIZE).unwrap();
    q.set_size(QUEUE_SIZE);
    q.set_desc_table_address(Some(DESC as u32), Some(0));
    q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    q.set_used_ring_address(Some(USED as u32), Some(0));
    q.set_ready(true);
    q
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, ram)) = data.split_first() else {
        return;
    };
    let readonly = flags & 1 != 0;
    let batch = flags & 2 != 0;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
    let len = ram.len().min(RAM);
    mem.write_slice(&ram[..len], GuestAddress(0)).unwrap();
    let (rw, ro) = images();
    let file = if readonly { ro } else { rw };
    let image = DiskImage::open(file.as_path(), readonly, false, None).unwrap();
    let serial = *b"fuzz-serial\0\0\0\0\0\0\0\0\0";
    let counters = BlockCounters::default();
    let mut q = queue();
    if batch {
        // The batch pops what virtio-queue lets it: at most a queue's worth.
        let mut sync = SyncQueue::new(image, readonly, 1).unwrap();
        sync.serve(&mut q, &mem);
        let writes = sync.counters().write_ops.load(Ordering::Relaxed);
        counters.write_ops.store(writes, Ordering::Relaxed);
    } else {
        let mut buffer = Vec::new();
        for _ in 0..MAX_CHAINS {
            let Some(chain) = q.pop_descriptor_chain(&mem) else {
                break;
            };
            let head = chain.head_index();
            let mut ctx = RequestContext {
                image: &image,
                readonly,
                serial: &serial,
                counters: &counters,
                buffer: &mut buffer,
            };
            let used = execute(chain, &mem, &mut ctx);
            let _ = q.add_used(&mem, head, used);
        }
    }
    if readonly {
        assert_eq!(counters.write_ops.load(Ordering::Relaxed), 0);
        let mut sector = [0u8; 512];
        for s in 0..SECTORS {
            file.as_file().read_exact_at(&mut sector, s * 512).unwrap();
            assert!(sector.iter().all(|b| *b == 0x5a), "read-only image changed");
        }
    }
});
