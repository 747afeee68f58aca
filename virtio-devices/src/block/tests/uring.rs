//! The io_uring path against the synchronous one (alone, and with helper
//! threads taking every IN and OUT): every batch runs on each engine over
//! identical images and guest memory, and the outcomes (each
//! chain's status and used length, the guest's buffers, the image bytes,
//! the counters) must be identical, and right.
//!
//! These tests need io_uring on the host: where it is unavailable they
//! fail, naming the reason, rather than pass on the synchronous path.

use super::*;
use crate::block::batch::UringQueue;
use crate::block::request::Segment;
use crate::block::uring::{OpKind, Ring};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    IoUring,
    /// io_uring for IN and FLUSH, OUT written by the worker (a buffered
    /// image on a file system where io_uring would punt writes).
    IoUringInlineWrites,
    Sync,
    /// The synchronous path with two helper threads taking every IN and
    /// OUT (no size threshold).
    SyncHelpers,
}

/// A ring over `file`, or a panic saying why the host has none.
fn ring(file: &std::fs::File, entries: u32) -> Ring {
    Ring::new(entries, file).unwrap_or_else(|reason| {
        panic!("io_uring is unavailable on this host ({reason}); the io_uring tests cannot run")
    })
}

fn queue(file: &TempFile, readonly: bool, engine: Engine) -> BlockQueue {
    let mut h = handler(file, readonly);
    if engine == Engine::SyncHelpers {
        h.helpers = Some(
            crate::block::helpers::Helpers::spawn(
                "test",
                2,
                h.image.clone(),
                readonly,
                h.serial,
                h.counters.clone(),
                crate::block::helpers::Handoff::EVERY,
            )
            .unwrap(),
        );
    } else if engine != Engine::Sync {
        let ring = ring(h.image.raw_file().unwrap(), 8);
        h.uring = Some(UringQueue::new(ring, engine == Engine::IoUringInlineWrites));
    }
    h
}

/// One request of a batch: type, sector, data descriptors.
struct Req {
    kind: u32,
    sector: u64,
    data: Vec<Desc>,
}

fn req(kind: u32, sector: u64, data: &[Desc]) -> Req {
    Req {
        kind,
        sector,
        data: data.to_vec(),
    }
}

/// What a batch did.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Per request, in order: (status byte, used length).
    answers: Vec<(u8, u32)>,
    /// Guest memory from DATA, 64 KiB.
    guest: Vec<u8>,
    /// The whole image.
    image: Vec<u8>,
    /// read_bytes, write_bytes, read_ops, write_ops.
    counters: [u64; 4],
}

/// Guest bytes at DATA + 0x8000 + i: a pattern for OUT data.
fn fill_guest(mem: &GuestMemory) {
    let pattern: Vec<u8> = (0..0x8000u32).map(|i| (i * 7 % 253) as u8).collect();
    mem.write_slice(&pattern, GuestAddress(DATA + 0x8000))
        .unwrap();
}

/// Serve `reqs` as one batch (one notification) on `engine`; the outcome
/// and the requests served through io_uring.
fn batch(engine: Engine, readonly: bool, reqs: &[Req]) -> (Outcome, u64) {
    batch_on(&image_file(), engine, readonly, reqs)
}

fn batch_on(file: &TempFile, engine: Engine, readonly: bool, reqs: &[Req]) -> (Outcome, u64) {
    let mem = memory();
    fill_guest(&mem);
    let mut h = queue(file, readonly, engine);
    let mock = MockSplitQueue::new(&mem, 64);
    let mut descs = Vec::new();
    let mut heads = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let hdr = HEADER + 0x20 * i as u64;
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&r.kind.to_le_bytes());
        bytes[8..].copy_from_slice(&r.sector.to_le_bytes());
        mem.write_slice(&bytes, GuestAddress(hdr)).unwrap();
        mem.write_obj(0xaau8, GuestAddress(STATUS + i as u64))
            .unwrap();
        let mut one = vec![(hdr, 16, false)];
        one.extend_from_slice(&r.data);
        one.push((STATUS + i as u64, 1, true));
        let first = descs.len() as u16;
        heads.push(first);
        descs.extend(chain(first, &one));
    }
    mock.add_desc_chains(&descs, 0).unwrap();
    let mut q: Queue = mock.create_queue().unwrap();
    assert!(h.process_queue(&mut q, &mem, Progress::QUIET));
    assert_eq!(usize::from(mock.used().idx().load()), reqs.len());
    let used: Vec<_> = (0..reqs.len())
        .map(|i| mock.used().ring().ref_at(i).unwrap().load())
        .collect();
    let answers = heads
        .iter()
        .enumerate()
        .map(|(i, head)| {
            let entry = used
                .iter()
                .find(|u| u.id() == u32::from(*head))
                .expect("every chain used once");
            let status = mem.read_obj(GuestAddress(STATUS + i as u64)).unwrap();
            (status, entry.len())
        })
        .collect();
    let mut guest = vec![0u8; 0x10000];
    mem.read_slice(&mut guest, GuestAddress(DATA)).unwrap();
    let c = &h.counters;
    let outcome = Outcome {
        answers,
        guest,
        image: image_bytes(file, 0, (SECTORS * 512) as usize),
        counters: [
            c.read_bytes.load(Ordering::Relaxed),
            c.write_bytes.load(Ordering::Relaxed),
            c.read_ops.load(Ordering::Relaxed),
            c.write_ops.load(Ordering::Relaxed),
        ],
    };
    (outcome, c.uring_ops.load(Ordering::Relaxed))
}

/// Run on every engine: the outcome (identical on all) and the io_uring
/// run's count of requests served through the ring. With writes inline,
/// the ring serves exactly the successful OUT requests fewer.
fn both(readonly: bool, reqs: &[Req]) -> (Outcome, u64) {
    let (sync, sync_ops) = batch(Engine::Sync, readonly, reqs);
    let (uring, uring_ops) = batch(Engine::IoUring, readonly, reqs);
    let (inline, inline_ops) = batch(Engine::IoUringInlineWrites, readonly, reqs);
    let (helped, helped_ops) = batch(Engine::SyncHelpers, readonly, reqs);
    assert_eq!((sync_ops, helped_ops), (0, 0));
    for (name, other) in [
        ("io_uring", &uring),
        ("io_uring, writes inline", &inline),
        ("synchronous with helpers", &helped),
    ] {
        assert_eq!(
            sync.answers, other.answers,
            "statuses differ (sync, {name})"
        );
        assert!(sync.guest == other.guest, "guest memory differs ({name})");
        assert!(sync.image == other.image, "image differs ({name})");
        assert_eq!(sync.counters, other.counters, "{name}");
    }
    let writes_ok = reqs
        .iter()
        .zip(&sync.answers)
        .filter(|(r, (status, _))| r.kind == VIRTIO_BLK_T_OUT && *status == OK)
        .count() as u64;
    assert_eq!(
        inline_ops,
        uring_ops - writes_ok,
        "requests through the ring with writes inline"
    );
    (uring, uring_ops)
}

const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;
const W: bool = true;
const R: bool = false;

#[test]
fn a_batch_of_many_requests_is_served_alike_by_io_uring_and_synchronously() {
    let d = |k: u64| DATA + 0x1000 * k;
    let out = |k: u64| DATA + 0x8000 + 0x400 * k;
    let reqs = [
        req(VIRTIO_BLK_T_OUT, 0, &[(out(0), 512, R)]),
        req(VIRTIO_BLK_T_OUT, 1, &[(out(1), 1024, R)]),
        // A write gathered from three descriptors.
        req(
            VIRTIO_BLK_T_OUT,
            4,
            &[(out(4), 512, R), (out(6), 1024, R), (out(9), 512, R)],
        ),
        req(VIRTIO_BLK_T_IN, 8, &[(d(0), 512, W)]),
        req(VIRTIO_BLK_T_IN, 9, &[(d(1), 2048, W)]),
        // A read scattered over three descriptors.
        req(
            VIRTIO_BLK_T_IN,
            12,
            &[(d(2), 512, W), (d(3), 1024, W), (d(4), 512, W)],
        ),
        req(VIRTIO_BLK_T_GET_ID, 0, &[(d(5), 20, W)]),
        req(VIRTIO_BLK_T_IN, SECTORS - 1, &[(d(6), 1024, W)]),
        req(VIRTIO_BLK_T_IN, 0, &[(d(7), 512, R)]),
        req(99, 0, &[]),
        req(VIRTIO_BLK_T_FLUSH, 0, &[]),
        req(VIRTIO_BLK_T_IN, 15, &[(DATA + 0x7800, 512, W)]),
    ];
    let (outcome, uring_ops) = both(false, &reqs);
    let ok = |len| (OK, len);
    assert_eq!(
        outcome.answers,
        [
            ok(1),
            ok(1),
            ok(1),
            ok(513),
            ok(2049),
            ok(2049),
            ok(21),
            (IOERR, 1),
            (IOERR, 1),
            (UNSUPP, 1),
            ok(1),
            ok(513),
        ]
    );
    // Served through the ring: 3 OUT, 4 IN, the FLUSH.
    assert_eq!(uring_ops, 8);
    let original = image_bytes(&image_file(), 0, (SECTORS * 512) as usize);
    let guest_at = |addr: u64, len: usize| {
        let at = (addr - DATA) as usize;
        outcome.guest[at..at + len].to_vec()
    };
    assert_eq!(guest_at(d(0), 512), original[8 * 512..9 * 512]);
    assert_eq!(guest_at(d(1), 2048), original[9 * 512..13 * 512]);
    let mut scattered = guest_at(d(2), 512);
    scattered.extend(guest_at(d(3), 1024));
    scattered.extend(guest_at(d(4), 512));
    assert_eq!(scattered, original[12 * 512..16 * 512]);
    assert_eq!(&guest_at(d(5), 8), b"disk-01\0");
    assert_eq!(&outcome.image[..512], &guest_at(out(0), 512)[..]);
    assert_eq!(&outcome.image[512..1536], &guest_at(out(1), 1024)[..]);
    let mut gathered = guest_at(out(4), 512);
    gathered.extend(guest_at(out(6), 1024));
    gathered.extend(guest_at(out(9), 512));
    assert_eq!(&outcome.image[4 * 512..8 * 512], &gathered[..]);
    assert_eq!(outcome.image[8 * 512..], original[8 * 512..]);
    assert_eq!(outcome.counters, [512 + 2048 + 2048 + 512, 3584, 4, 3]);
}

#[test]
fn a_flush_after_writes_in_one_batch_is_ok_and_the_writes_land() {
    let reqs = [
        req(VIRTIO_BLK_T_OUT, 2, &[(DATA + 0x8000, 4096, R)]),
        req(VIRTIO_BLK_T_OUT, 10, &[(DATA + 0x9000, 512, R)]),
        req(VIRTIO_BLK_T_FLUSH, 0, &[]),
        req(VIRTIO_BLK_T_IN, 2, &[(DATA, 512, W)]),
    ];
    let (outcome, uring_ops) = both(false, &reqs);
    assert_eq!(outcome.answers, [(OK, 1), (OK, 1), (OK, 1), (OK, 513)]);
    assert_eq!(uring_ops, 4);
    let mut pattern = vec![0u8; 4096];
    memory_pattern(&mut pattern, 0);
    assert_eq!(outcome.image[2 * 512..10 * 512], pattern[..]);
}

/// The bytes `fill_guest` puts at DATA + 0x8000 + `from`.
fn memory_pattern(buf: &mut [u8], from: u32) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = ((from + i as u32) * 7 % 253) as u8;
    }
}

#[test]
fn malformed_and_out_of_range_chains_get_the_sync_paths_status() {
    let reqs = [
        req(VIRTIO_BLK_T_IN, 0, &[(DATA, 100, W)]),
        req(VIRTIO_BLK_T_IN, 0, &[(RAM as u64 - 256, 512, W)]),
        req(
            VIRTIO_BLK_T_IN,
            0,
            &[(DATA, 512, W), (DATA + 0x1000, 512, R)],
        ),
        req(VIRTIO_BLK_T_OUT, 0, &[(DATA, 512, W)]),
        req(VIRTIO_BLK_T_OUT, SECTORS - 1, &[(DATA + 0x8000, 1024, R)]),
        req(VIRTIO_BLK_T_OUT, u64::MAX, &[(DATA + 0x8000, 512, R)]),
        req(VIRTIO_BLK_T_IN, u64::MAX / 512, &[(DATA, 512, W)]),
        req(VIRTIO_BLK_T_OUT, 3, &[(RAM as u64 + 0x1000, 512, R)]),
    ];
    let (outcome, uring_ops) = both(false, &reqs);
    assert_eq!(outcome.answers, vec![(IOERR, 1); reqs.len()]);
    assert_eq!(uring_ops, 0);
    assert!(outcome.image == image_bytes(&image_file(), 0, (SECTORS * 512) as usize));
}

#[test]
fn a_read_only_disk_answers_alike_on_both_engines() {
    let reqs = [
        req(VIRTIO_BLK_T_OUT, 0, &[(DATA + 0x8000, 512, R)]),
        req(VIRTIO_BLK_T_DISCARD, 0, &[(DATA + 0x8000, 16, R)]),
        req(VIRTIO_BLK_T_IN, 1, &[(DATA, 512, W)]),
        req(VIRTIO_BLK_T_FLUSH, 0, &[]),
    ];
    let (outcome, uring_ops) = both(true, &reqs);
    assert_eq!(
        outcome.answers,
        [(IOERR, 1), (IOERR, 1), (OK, 513), (OK, 1)]
    );
    assert_eq!(uring_ops, 2);
    assert!(outcome.image == image_bytes(&image_file(), 0, (SECTORS * 512) as usize));
}

#[test]
fn a_read_cut_short_by_a_shrunk_image_is_an_ioerr_not_a_success() {
    for engine in [Engine::Sync, Engine::IoUring] {
        let file = image_file();
        let mem = memory();
        let mut h = queue(&file, false, engine);
        // Half a sector past sector 8 is left: the read of 8..10 moves
        // 256 bytes, then none.
        file.as_file().set_len(8 * 512 + 256).unwrap();
        header(&mem, VIRTIO_BLK_T_IN, 8);
        let answer = run(&mut h, &mem, &standard(Some((1024, true))));
        assert_eq!(answer, (IOERR, 1), "{engine:?}");
        assert_eq!(h.counters.read_ops.load(Ordering::Relaxed), 0);
    }
}

#[test]
fn a_transfer_of_more_buffers_than_iov_max_is_submitted_in_parts() {
    let file = TempFile::new().unwrap();
    let bytes: Vec<u8> = (0..1u32 << 20).map(|i| (i % 241) as u8).collect();
    file.as_file().write_all(&bytes).unwrap();
    let mem = memory();
    let mut r = ring(file.as_file(), 4);
    // 1500 buffers of 512 bytes, every other 1 KiB of guest memory.
    let data: Vec<Segment> = (0..1500u64)
        .map(|i| Segment {
            addr: GuestAddress(0x10_0000 + i * 1024),
            len: 512,
        })
        .collect();
    r.add_transfer(&mem, OpKind::Read, 4096, &data, 7).unwrap();
    let mut done = Vec::new();
    r.run(&mut done).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, 7);
    assert_eq!(done[0].1.as_ref().unwrap(), &(1500 * 512));
    for i in [0u64, 1023, 1024, 1499] {
        let mut got = [0u8; 512];
        mem.read_slice(&mut got, GuestAddress(0x10_0000 + i * 1024))
            .unwrap();
        let at = 4096 + i as usize * 512;
        assert_eq!(got[..], bytes[at..at + 512], "buffer {i}");
    }
}

#[test]
fn a_raw_disk_is_served_through_io_uring_unless_disabled() {
    let file = image_file();
    // The host must have io_uring for this test to mean anything.
    drop(ring(file.as_file(), 2));
    let open = || DiskImage::open(file.as_path(), false, false, None).unwrap();
    let on = Block::new(open(), params(false, 2)).unwrap();
    // (A temporary directory on tmpfs would make it synchronous: below.)
    let expected = if crate::block::uring::issues_without_workers(file.as_file()) {
        IoEngine::IoUring
    } else {
        IoEngine::Sync
    };
    assert_eq!(on.io_engine(), expected);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let helpers = crate::block::helpers::count_for(cpus);
    // Helper threads only beside the synchronous path.
    assert_eq!(
        on.helper_threads(),
        if expected == IoEngine::Sync {
            helpers
        } else {
            0
        }
    );
    drop(on);
    let off = Block::new(
        open(),
        BlockParams {
            io_uring: false,
            ..params(false, 1)
        },
    )
    .unwrap();
    assert_eq!(off.io_engine(), IoEngine::Sync);
    assert_eq!(off.helper_threads(), helpers);
    drop(off);
    let alone = Block::new(
        open(),
        BlockParams {
            io_uring: false,
            helper_threads: Some(0),
            ..params(false, 1)
        },
    )
    .unwrap();
    assert_eq!(alone.helper_threads(), 0);
}

/// One OUT of 512 bytes of 0x3c at sector 5 through a Block's worker over
/// `file`: the worker interrupted once, the bytes are in the image; the
/// disk's engine and the requests it served through io_uring.
fn worker_write(file: &TempFile) -> (IoEngine, u64) {
    let mem = memory();
    let mut block = Block::new(
        DiskImage::open(file.as_path(), false, false, None).unwrap(),
        params(false, 1),
    )
    .unwrap();
    let mock = MockSplitQueue::create(&mem, GuestAddress(0), 16);
    header(&mem, VIRTIO_BLK_T_OUT, 5);
    mem.write_slice(&[0x3c; 512], GuestAddress(DATA)).unwrap();
    mock.add_desc_chains(&chain(0, &standard(Some((512, false)))), 0)
        .unwrap();
    let vector = Arc::new(EventFd::new(0).unwrap());
    let kick = EventFd::new(0).unwrap();
    let active = ActiveQueue {
        index: 0,
        queue: mock.create_queue().unwrap(),
        kick: kick.try_clone().unwrap(),
        interrupt: QueueInterrupt::new(Some(vector.clone()), Default::default()),
    };
    block.activate(mem.clone(), 0, vec![active]).unwrap();
    kick.write(1).unwrap();
    assert_eq!(vector.read().unwrap(), 1);
    block.reset();
    assert_eq!(image_bytes(file, 5 * 512, 512), vec![0x3c; 512]);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), OK);
    assert_eq!(block.counters().write_ops.load(Ordering::Relaxed), 1);
    (
        block.io_engine(),
        block.counters().uring_ops.load(Ordering::Relaxed),
    )
}

#[test]
fn the_workers_write_through_their_ring_where_io_uring_would_not_punt() {
    // The temporary directory's file system decides (/tmp: ext4 here, so
    // io_uring with OUT written by the worker; xfs or btrfs: OUT in the
    // ring too; tmpfs: synchronous).
    let file = image_file();
    let ring = crate::block::uring::issues_without_workers(file.as_file());
    let writes_in_ring = ring && !crate::block::uring::punts_buffered_writes(file.as_file());
    let engine = if ring {
        IoEngine::IoUring
    } else {
        IoEngine::Sync
    };
    assert_eq!(worker_write(&file), (engine, u64::from(writes_in_ring)));
}

#[test]
fn an_image_on_tmpfs_is_served_synchronously() {
    // tmpfs has no FMODE_NOWAIT: io_uring would punt every request.
    let Ok(file) = TempFile::new_in(std::path::Path::new("/dev/shm")) else {
        return;
    };
    let bytes: Vec<u8> = (0..SECTORS * 512).map(|i| (i % 251) as u8).collect();
    file.as_file().write_all(&bytes).unwrap();
    assert_eq!(worker_write(&file), (IoEngine::Sync, 0));
}
