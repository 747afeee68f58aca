//! The synchronous path's helper threads ([`crate::block::helpers`]): they
//! serve what the worker hands over on their own, and a request that must
//! come after its batch's earlier ones (DISCARD here) does.

use super::*;
use crate::block::helpers::{Handoff, Helpers};
use crate::block::request::{Plan, Segment};

fn helpers(h: &BlockQueue, count: usize) -> Helpers {
    Helpers::spawn(
        "test",
        count,
        h.image.clone(),
        h.readonly,
        h.serial,
        h.counters.clone(),
        Handoff::EVERY,
    )
    .unwrap()
}

fn segment(addr: u64, len: u64) -> Vec<Segment> {
    vec![Segment {
        addr: GuestAddress(addr),
        len,
    }]
}

#[test]
fn helpers_serve_what_the_worker_hands_over_without_it() {
    let (file, mem) = (image_file(), memory());
    let h = handler(&file, false);
    let mut helpers = helpers(&h, 1);
    let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 13 % 241) as u8).collect();
    mem.write_slice(&pattern, GuestAddress(DATA + 0x8000))
        .unwrap();
    let plans = [
        Plan::Read {
            offset: 0,
            data: segment(DATA, 1024),
        },
        Plan::Read {
            offset: 4096,
            data: segment(DATA + 0x1000, 2048),
        },
        Plan::Write {
            offset: 6 * 512,
            data: segment(DATA + 0x8000, 1024),
        },
    ];
    for (i, plan) in plans.into_iter().enumerate() {
        mem.write_obj(0xaau8, GuestAddress(STATUS + i as u64))
            .unwrap();
        helpers.hand_off(&mem, i as u16, GuestAddress(STATUS + i as u64), plan);
    }
    // The worker takes nothing until `finish`: the helper serves all three.
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.counters.read_ops.load(Ordering::Relaxed) + h.counters.write_ops.load(Ordering::Relaxed)
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "the helper served nothing in 10 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut used = Vec::new();
    let mut buffer = Vec::new();
    helpers.finish(&mem, &mut buffer, &mut used);
    used.sort();
    assert_eq!(used, [(0, 1025), (1, 2049), (2, 1)]);
    for i in 0..3 {
        assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS + i)).unwrap(), OK);
    }
    let mut got = vec![0u8; 2048];
    mem.read_slice(&mut got[..1024], GuestAddress(DATA))
        .unwrap();
    assert_eq!(got[..1024], image_bytes(&image_file(), 0, 1024));
    mem.read_slice(&mut got, GuestAddress(DATA + 0x1000))
        .unwrap();
    assert_eq!(got, image_bytes(&image_file(), 4096, 2048));
    assert_eq!(image_bytes(&file, 6 * 512, 1024), pattern);
    assert_eq!(h.counters.read_bytes.load(Ordering::Relaxed), 3072);
    assert_eq!(h.counters.write_bytes.load(Ordering::Relaxed), 1024);
    assert_eq!(h.counters.helper_ops.load(Ordering::Relaxed), 3);
    assert_eq!(h.counters.helper_write_ops.load(Ordering::Relaxed), 1);
    // Nothing is left to collect.
    used.clear();
    helpers.finish(&mem, &mut buffer, &mut used);
    assert!(used.is_empty());
}

#[test]
fn a_discard_after_a_handed_over_write_in_one_batch_comes_after_it() {
    let (file, mem) = (image_file(), memory());
    let mut h = handler(&file, false);
    h.helpers = Some(helpers(&h, 1));
    // OUT of sectors 8..16 (handed over), then DISCARD of the same sectors:
    // the sectors must end as zeroes, not as the written bytes.
    mem.write_slice(&[0x5a; 4096], GuestAddress(DATA + 0x8000))
        .unwrap();
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&8u64.to_le_bytes());
    r[8..12].copy_from_slice(&8u32.to_le_bytes());
    mem.write_slice(&r, GuestAddress(DATA)).unwrap();
    let mock = MockSplitQueue::new(&mem, 16);
    let mut descs = Vec::new();
    for (i, (kind, data)) in [
        (VIRTIO_BLK_T_OUT, (DATA + 0x8000, 4096, false)),
        (VIRTIO_BLK_T_DISCARD, (DATA, 16, false)),
    ]
    .into_iter()
    .enumerate()
    {
        let hdr = HEADER + 0x20 * i as u64;
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&kind.to_le_bytes());
        bytes[8..].copy_from_slice(&8u64.to_le_bytes());
        mem.write_slice(&bytes, GuestAddress(hdr)).unwrap();
        let first = descs.len() as u16;
        descs.extend(chain(
            first,
            &[(hdr, 16, false), data, (STATUS + i as u64, 1, true)],
        ));
    }
    mock.add_desc_chains(&descs, 0).unwrap();
    let mut queue: Queue = mock.create_queue().unwrap();
    assert!(h.process_queue(&mut queue, &mem, Progress::QUIET));
    assert_eq!(mock.used().idx().load(), 2);
    for i in 0..2 {
        assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS + i)).unwrap(), OK);
    }
    assert_eq!(image_bytes(&file, 8 * 512, 4096), vec![0; 4096]);
    assert_eq!(h.counters.write_ops.load(Ordering::Relaxed), 1);
}

#[test]
fn buffered_writes_to_a_file_stay_with_the_worker_direct_ones_do_not() {
    let file = image_file();
    let read = |len| Plan::Read {
        offset: 0,
        data: segment(DATA, len),
    };
    let write = |len| Plan::Write {
        offset: 0,
        data: segment(DATA, len),
    };
    let image = DiskImage::open(file.as_path(), false, false, None).unwrap();
    let buffered = Handoff::for_image(&image);
    drop(image);
    assert!(buffered.takes(&read(64 << 10)));
    assert!(buffered.takes(&read(1 << 20)));
    assert!(!buffered.takes(&read(60 << 10)), "below the minimum");
    assert!(!buffered.takes(&write(1 << 20)), "{buffered:?}");
    assert!(!buffered.takes(&Plan::Flush));
    // O_DIRECT writes to one file may run side by side: handed over.
    let image = DiskImage::open(file.as_path(), false, true, None).unwrap();
    let direct = Handoff::for_image(&image);
    assert!(direct.takes(&write(1 << 20)), "{direct:?}");
    assert!(direct.takes(&read(64 << 10)));
    assert!(!direct.takes(&write(4 << 10)), "below the minimum");
    assert!(Handoff::EVERY.takes(&write(512)));
}

#[test]
fn helper_counts_leave_the_worker_as_the_last_cpu() {
    use crate::block::helpers::count_for;
    assert_eq!([0, 1, 2, 3, 4, 64].map(count_for), [0, 0, 1, 2, 3, 3]);
}

/// A queue of `count` OUT requests of `len` bytes each (sector 0, then on),
/// every one from DATA; the image is made large enough.
fn large_writes(
    mem: &GuestMemory,
    count: u64,
    len: u32,
) -> (TempFile, BlockQueue, MockSplitQueue<'_, GuestMemory>) {
    let file = TempFile::new().unwrap();
    file.as_file().set_len(count * u64::from(len)).unwrap();
    let h = handler(&file, false);
    let mock = MockSplitQueue::new(mem, 16);
    let mut descs = Vec::new();
    for i in 0..count {
        let hdr = HEADER + 0x20 * i;
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&VIRTIO_BLK_T_OUT.to_le_bytes());
        bytes[8..].copy_from_slice(&(i * u64::from(len) / 512).to_le_bytes());
        mem.write_slice(&bytes, GuestAddress(hdr)).unwrap();
        let first = descs.len() as u16;
        descs.extend(chain(
            first,
            &[(hdr, 16, false), (DATA, len, false), (STATUS + i, 1, true)],
        ));
    }
    mock.add_desc_chains(&descs, 0).unwrap();
    (file, h, mock)
}

#[test]
fn each_large_request_is_published_as_it_completes_small_ones_with_the_batch() {
    use crate::worker::{Progress, counted};
    // The worker keeps every request (a buffered file's writes): each
    // 64 KiB write is on the used ring, and the guest interrupted for it
    // (no EVENT_IDX: every time), before the next one is copied.
    for (len, quiet, interrupts) in [
        (64 << 10, false, 3),
        (4 << 10, false, 0),
        (64 << 10, true, 0),
    ] {
        let mem = memory();
        let (_file, mut h, mock) = large_writes(&mem, 3, len);
        let handoff = Handoff::for_image(&h.image);
        h.helpers = Some(
            Helpers::spawn(
                "test",
                1,
                h.image.clone(),
                false,
                h.serial,
                h.counters.clone(),
                handoff,
            )
            .unwrap(),
        );
        let mut queue: Queue = mock.create_queue().unwrap();
        let (signal, vector) = counted::signal(&queue);
        let progress = if quiet {
            Progress::QUIET
        } else {
            Progress::new(&signal)
        };
        assert!(h.process_queue(&mut queue, &mem, progress));
        assert_eq!(mock.used().idx().load(), 3, "len {len}");
        assert_eq!(
            counted::interrupts(&vector),
            interrupts,
            "len {len}, quiet {quiet}"
        );
        assert_eq!(h.counters.write_ops.load(Ordering::Relaxed), 3);
        assert_eq!(h.counters.helper_write_ops.load(Ordering::Relaxed), 0);
    }
}

#[test]
fn handed_over_requests_are_published_as_helpers_answer_them() {
    use crate::worker::{Progress, counted};
    let mem = memory();
    let (_file, mut h, mock) = large_writes(&mem, 4, 4096);
    h.helpers = Some(helpers(&h, 1));
    let mut queue: Queue = mock.create_queue().unwrap();
    let (signal, vector) = counted::signal(&queue);
    assert!(h.process_queue(&mut queue, &mem, Progress::new(&signal)));
    assert_eq!(mock.used().idx().load(), 4);
    // Every request was handed over (Handoff::EVERY); each answer the
    // worker collected was published then, one or several at a time.
    let n = vector.read().unwrap();
    assert!((1..=4).contains(&n), "{n} interrupts");
    assert_eq!(
        h.counters.helper_write_ops.load(Ordering::Relaxed),
        h.counters.helper_ops.load(Ordering::Relaxed)
    );
    for i in 0..4 {
        assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS + i)).unwrap(), OK);
    }
}
