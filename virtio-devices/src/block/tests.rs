//! virtio-blk on virtio-queue's mock queues over a real image file: every
//! assertion reads the image bytes, the guest buffers or the status byte.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_blk::*;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::tempfile::TempFile;

use super::*;
use crate::test_chain::chain;
use crate::{ActiveQueue, QueueInterrupt};

const RAM: usize = 0x40_0000;
const HEADER: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;
/// Sectors of the test image.
const SECTORS: u64 = 16;

fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), RAM)]).unwrap()
}

/// An image whose byte i is `i % 251`.
fn image_file() -> TempFile {
    let file = TempFile::new().unwrap();
    let bytes: Vec<u8> = (0..SECTORS * 512).map(|i| (i % 251) as u8).collect();
    file.as_file().write_all(&bytes).unwrap();
    file
}

fn image_bytes(file: &TempFile, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    file.as_file().read_exact_at(&mut buf, offset).unwrap();
    buf
}

fn handler(file: &TempFile, readonly: bool) -> BlockQueue {
    let image = DiskImage::open(file.as_path(), readonly, false, None).unwrap();
    let mut serial = [0u8; 20];
    serial[..7].copy_from_slice(b"disk-01");
    BlockQueue {
        image: Arc::new(image),
        readonly,
        serial,
        counters: Arc::new(BlockCounters::default()),
        buffer: Vec::new(),
        uring: None,
        helpers: None,
    }
}

/// A descriptor: guest address, length, device-writable.
type Desc = (u64, u32, bool);

fn header(mem: &GuestMemory, kind: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&kind.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(HEADER)).unwrap();
}

/// Run one chain through `handler`; (status byte, used length).
fn run(handler: &mut BlockQueue, mem: &GuestMemory, descs: &[(u64, u32, bool)]) -> (u8, u32) {
    mem.write_obj(0xaau8, GuestAddress(STATUS)).unwrap();
    let mock = MockSplitQueue::new(mem, 16);
    mock.add_desc_chains(&chain(0, descs), 0).unwrap();
    let mut queue: Queue = mock.create_queue().unwrap();
    assert!(handler.process_queue(&mut queue, mem, Progress::QUIET));
    let used = mock.used().ring().ref_at(0).unwrap().load();
    assert_eq!(used.id(), 0);
    (mem.read_obj(GuestAddress(STATUS)).unwrap(), used.len())
}

/// Header, optional data (length, device-writable), status.
fn standard(data: Option<(u32, bool)>) -> Vec<(u64, u32, bool)> {
    let mut d = vec![(HEADER, 16, false)];
    if let Some((len, write)) = data {
        d.push((DATA, len, write));
    }
    d.push((STATUS, 1, true));
    d
}

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;

#[test]
fn in_copies_the_image_sectors_into_the_guest_buffer() {
    let (file, mem) = (image_file(), memory());
    let mut h = handler(&file, false);
    header(&mem, VIRTIO_BLK_T_IN, 2);
    let (status, len) = run(&mut h, &mem, &standard(Some((1024, true))));
    assert_eq!((status, len), (OK, 1025));
    let mut got = vec![0u8; 1024];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, image_bytes(&file, 1024, 1024));
    assert_eq!(h.counters.read_bytes.load(Ordering::Relaxed), 1024);
    assert_eq!(h.counters.read_ops.load(Ordering::Relaxed), 1);
}

#[test]
fn in_scatters_across_several_data_descriptors() {
    let (file, mem) = (image_file(), memory());
    let mut h = handler(&file, false);
    header(&mem, VIRTIO_BLK_T_IN, 0);
    let descs = [
        (HEADER, 16, false),
        (DATA, 512, true),
        (DATA + 0x1000, 1024, true),
        (STATUS, 1, true),
    ];
    assert_eq!(run(&mut h, &mem, &descs), (OK, 1537));
    let mut second = vec![0u8; 1024];
    mem.read_slice(&mut second, GuestAddress(DATA + 0x1000))
        .unwrap();
    assert_eq!(second, image_bytes(&file, 512, 1024));
}

#[test]
fn a_raw_image_without_o_direct_moves_data_straight_to_and_from_the_guest() {
    // The bounce buffer stays unused: preadv / pwritev on the guest's own
    // buffers (block/vectored.rs), a read and a write of 300 KiB, more
    // than one bounce buffer's worth (256 KiB), across three descriptors.
    let file = TempFile::new().unwrap();
    let bytes: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    file.as_file().write_all(&bytes).unwrap();
    let mem = memory();
    let mut h = handler(&file, false);
    let descs = [
        (HEADER, 16, false),
        (DATA, 100 << 10, true),
        (DATA + (128 << 10), 100 << 10, true),
        (DATA + (256 << 10), 100 << 10, true),
        (STATUS, 1, true),
    ];
    header(&mem, VIRTIO_BLK_T_IN, 0);
    assert_eq!(run(&mut h, &mem, &descs), (OK, (300 << 10) + 1));
    let mut third = vec![0u8; 100 << 10];
    mem.read_slice(&mut third, GuestAddress(DATA + (256 << 10)))
        .unwrap();
    assert_eq!(third, image_bytes(&file, 200 << 10, 100 << 10));
    mem.write_slice(&[0x77; 100 << 10], GuestAddress(DATA + (128 << 10)))
        .unwrap();
    let out: Vec<_> = descs
        .iter()
        .map(|(a, l, w)| (*a, *l, *w && *a == STATUS))
        .collect();
    header(&mem, VIRTIO_BLK_T_OUT, 0);
    assert_eq!(run(&mut h, &mem, &out), (OK, 1));
    assert_eq!(
        image_bytes(&file, 100 << 10, 100 << 10),
        vec![0x77; 100 << 10]
    );
    assert_eq!(h.buffer.capacity(), 0, "the bounce buffer was used");
}

#[test]
fn out_writes_the_guest_buffer_to_the_image() {
    let (file, mem) = (image_file(), memory());
    let mut h = handler(&file, false);
    header(&mem, VIRTIO_BLK_T_OUT, 3);
    mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(run(&mut h, &mem, &standard(Some((512, false)))), (OK, 1));
    assert_eq!(image_bytes(&file, 3 * 512, 512), vec![0x5a; 512]);
    assert_eq!(
        image_bytes(&file, 4 * 512, 4),
        image_bytes(&image_file(), 4 * 512, 4)
    );
    assert_eq!(h.counters.write_bytes.load(Ordering::Relaxed), 512);
    assert_eq!(h.counters.write_ops.load(Ordering::Relaxed), 1);
}

#[test]
fn flush_and_get_id_answer_ok() {
    let (file, mem) = (image_file(), memory());
    let mut h = handler(&file, false);
    header(&mem, VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(run(&mut h, &mem, &standard(None)), (OK, 1));
    header(&mem, VIRTIO_BLK_T_GET_ID, 0);
    assert_eq!(run(&mut h, &mem, &standard(Some((20, true)))), (OK, 21));
    let mut id = [0u8; 20];
    mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..8], b"disk-01\0");
}

fn range(mem: &GuestMemory, sector: u64, count: u32) {
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&sector.to_le_bytes());
    r[8..12].copy_from_slice(&count.to_le_bytes());
    mem.write_slice(&r, GuestAddress(DATA)).unwrap();
}

#[test]
fn discard_and_write_zeroes_leave_zeroes_in_the_range_only() {
    for kind in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
        let (file, mem) = (image_file(), memory());
        let mut h = handler(&file, false);
        header(&mem, kind, 0);
        // 8 sectors at 4 KiB: whole file-system blocks, so a punched hole
        // really reads back as zeroes.
        range(&mem, 8, 8);
        assert_eq!(
            run(&mut h, &mem, &standard(Some((16, false)))),
            (OK, 1),
            "{kind}"
        );
        assert_eq!(
            image_bytes(&file, 8 * 512, 8 * 512),
            vec![0; 8 * 512],
            "{kind}"
        );
        assert_eq!(
            image_bytes(&file, 0, 512),
            image_bytes(&image_file(), 0, 512)
        );
    }
}

#[test]
fn sectors_past_the_end_are_an_ioerr_and_touch_nothing() {
    let (file, mem) = (image_file(), memory());
    let mut h = handler(&file, false);
    header(&mem, VIRTIO_BLK_T_OUT, SECTORS - 1);
    assert_eq!(
        run(&mut h, &mem, &standard(Some((1024, false)))),
        (IOERR, 1)
    );
    header(&mem, VIRTIO_BLK_T_IN, u64::MAX);
    assert_eq!(run(&mut h, &mem, &standard(Some((512, true)))), (IOERR, 1));
    header(&mem, VIRTIO_BLK_T_DISCARD, 0);
    range(&mem, u64::MAX - 1, 8);
    assert_eq!(run(&mut h, &mem, &standard(Some((16, false)))), (IOERR, 1));
    assert_eq!(
        image_bytes(&file, 0, 8192),
        image_bytes(&image_file(), 0, 8192)
    );
}

#[test]
fn a_read_only_disk_answers_writes_with_ioerr() {
    let (file, mem) = (image_file(), memory());
    let mut h = handler(&file, true);
    mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    header(&mem, VIRTIO_BLK_T_OUT, 0);
    assert_eq!(run(&mut h, &mem, &standard(Some((512, false)))), (IOERR, 1));
    for kind in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
        header(&mem, kind, 0);
        range(&mem, 0, 1);
        assert_eq!(run(&mut h, &mem, &standard(Some((16, false)))), (IOERR, 1));
    }
    assert_eq!(
        image_bytes(&file, 0, 512),
        image_bytes(&image_file(), 0, 512)
    );
    header(&mem, VIRTIO_BLK_T_IN, 0);
    assert_eq!(run(&mut h, &mem, &standard(Some((512, true)))), (OK, 513));
}

#[test]
fn malformed_chains_get_ioerr() {
    let (file, mem) = (image_file(), memory());
    let mut h = handler(&file, false);
    header(&mem, VIRTIO_BLK_T_IN, 0);
    let cases: [(&str, Vec<Desc>); 6] = [
        (
            "header too short",
            vec![(HEADER, 8, false), (STATUS, 1, true)],
        ),
        (
            "header writable",
            vec![(HEADER, 16, true), (STATUS, 1, true)],
        ),
        ("IN data readable", standard(Some((512, false)))),
        ("not whole sectors", standard(Some((100, true)))),
        (
            "data outside RAM",
            vec![
                (HEADER, 16, false),
                (RAM as u64 - 256, 512, true),
                (STATUS, 1, true),
            ],
        ),
        (
            "readable after writable",
            vec![
                (HEADER, 16, false),
                (DATA, 512, true),
                (DATA + 0x1000, 512, false),
                (STATUS, 1, true),
            ],
        ),
    ];
    for (what, descs) in cases {
        assert_eq!(run(&mut h, &mem, &descs).0, IOERR, "{what}");
    }
    header(&mem, VIRTIO_BLK_T_OUT, 0);
    assert_eq!(
        run(&mut h, &mem, &standard(Some((512, true)))).0,
        IOERR,
        "OUT data writable"
    );
    header(&mem, 99, 0);
    let unsupp = VIRTIO_BLK_S_UNSUPP as u8;
    assert_eq!(run(&mut h, &mem, &standard(None)), (unsupp, 1));
    assert_eq!(
        image_bytes(&file, 0, 8192),
        image_bytes(&image_file(), 0, 8192)
    );
}

#[test]
fn a_chain_without_a_writable_status_byte_is_returned_untouched() {
    let (file, mem) = (image_file(), memory());
    let mut h = handler(&file, false);
    header(&mem, VIRTIO_BLK_T_IN, 0);
    let descs = [(HEADER, 16, false), (DATA, 512, true), (STATUS, 1, false)];
    assert_eq!(run(&mut h, &mem, &descs), (0xaa, 0));
    let status_outside = [(HEADER, 16, false), (RAM as u64 + 0x1000, 1, true)];
    assert_eq!(run(&mut h, &mem, &status_outside), (0xaa, 0));
}

#[test]
fn a_second_writer_is_refused_naming_the_image_and_readers_share() {
    let file = image_file();
    let first = DiskImage::open(file.as_path(), false, false, None).unwrap();
    let err = DiskImage::open(file.as_path(), false, false, None).unwrap_err();
    assert!(matches!(err, ImageError::Locked(_)), "{err}");
    assert!(
        err.to_string()
            .contains(&file.as_path().display().to_string()),
        "{err}"
    );
    assert!(DiskImage::open(file.as_path(), true, false, None).is_err());
    drop(first);
    let r1 = DiskImage::open(file.as_path(), true, false, None).unwrap();
    let _r2 = DiskImage::open(file.as_path(), true, false, None).unwrap();
    assert!(DiskImage::open(file.as_path(), false, false, None).is_err());
    assert_eq!(r1.sectors(), SECTORS);
}

#[test]
fn a_missing_or_empty_image_is_refused_in_one_sentence() {
    let err = DiskImage::open(
        std::path::Path::new("/nonexistent/disk.img"),
        false,
        false,
        None,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--disk path=/nonexistent/disk.img: cannot open"),
        "{err}"
    );
    let empty = TempFile::new().unwrap();
    let err = DiskImage::open(empty.as_path(), false, false, None).unwrap_err();
    assert!(matches!(err, ImageError::TooSmall { size: 0, .. }), "{err}");
}

fn params(readonly: bool, num_queues: u16) -> BlockParams {
    BlockParams {
        id: "disk0".into(),
        readonly,
        num_queues,
        queue_size: 16,
        serial: "s".into(),
        io_uring: true,
        helper_threads: None,
    }
}

#[test]
fn features_and_config_follow_the_parameters() {
    let file = image_file();
    let rw = Block::new(
        DiskImage::open(file.as_path(), false, false, None).unwrap(),
        params(false, 2),
    )
    .unwrap();
    let f = rw.features();
    assert_ne!(f & feature(VIRTIO_BLK_F_MQ), 0);
    assert_ne!(f & feature(VIRTIO_BLK_F_DISCARD), 0);
    assert_eq!(f & feature(VIRTIO_BLK_F_RO), 0);
    let mut capacity = [0u8; 8];
    rw.read_config(0, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), SECTORS);
    let mut queues = [0u8; 2];
    rw.read_config(34, &mut queues);
    assert_eq!(u16::from_le_bytes(queues), 2);
    let mut past = [0xffu8; 4];
    rw.read_config(0x800, &mut past);
    assert_eq!(past, [0; 4]);
    drop(rw);
    let ro = Block::new(
        DiskImage::open(file.as_path(), true, false, None).unwrap(),
        params(true, 1),
    )
    .unwrap();
    assert_ne!(ro.features() & feature(VIRTIO_BLK_F_RO), 0);
    assert_eq!(
        ro.features() & (feature(VIRTIO_BLK_F_MQ) | feature(VIRTIO_BLK_F_DISCARD)),
        0
    );
}

#[test]
fn each_queue_has_its_own_worker_and_interrupt() {
    let (file, mem) = (image_file(), memory());
    let mut block = Block::new(
        DiskImage::open(file.as_path(), false, false, None).unwrap(),
        params(false, 2),
    )
    .unwrap();
    let mocks = [
        MockSplitQueue::create(&mem, GuestAddress(0), 16),
        MockSplitQueue::create(&mem, GuestAddress(0x8000), 16),
    ];
    let mut active = Vec::new();
    let mut vectors = Vec::new();
    let mut kicks = Vec::new();
    for (i, mock) in mocks.iter().enumerate() {
        let sector = i as u64 + 1;
        let hdr = HEADER + 0x100 * i as u64;
        let mut h = [0u8; 16];
        h[8..].copy_from_slice(&sector.to_le_bytes());
        h[..4].copy_from_slice(&VIRTIO_BLK_T_OUT.to_le_bytes());
        mem.write_slice(&h, GuestAddress(hdr)).unwrap();
        mem.write_slice(
            &[0x10 + i as u8; 512],
            GuestAddress(DATA + 0x1000 * i as u64),
        )
        .unwrap();
        let descs = chain(
            0,
            &[
                (hdr, 16, false),
                (DATA + 0x1000 * i as u64, 512, false),
                (STATUS + i as u64, 1, true),
            ],
        );
        mock.add_desc_chains(&descs, 0).unwrap();
        let vector = Arc::new(EventFd::new(0).unwrap());
        let kick = EventFd::new(0).unwrap();
        kicks.push(kick.try_clone().unwrap());
        active.push(ActiveQueue {
            index: i as u16,
            queue: mock.create_queue().unwrap(),
            kick,
            interrupt: QueueInterrupt::new(Some(vector.clone()), Default::default()),
        });
        vectors.push(vector);
    }
    block.activate(mem.clone(), 0, active).unwrap();
    for kick in &kicks {
        kick.write(1).unwrap();
    }
    // Each worker interrupts through its own vector.
    for vector in &vectors {
        assert_eq!(vector.read().unwrap(), 1);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while image_bytes(&file, 1024, 1) != [0x11] && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(image_bytes(&file, 512, 512), vec![0x10; 512]);
    assert_eq!(image_bytes(&file, 1024, 512), vec![0x11; 512]);
    assert_eq!(mocks[1].used().idx().load(), 1);
    block.reset();
    assert_eq!(block.counters().write_ops.load(Ordering::Relaxed), 2);
    // After reset no worker serves a queue: a new request stays unused.
    mocks[0]
        .add_desc_chains(&chain(0, &[(HEADER, 16, false), (STATUS, 1, true)]), 3)
        .unwrap();
    kicks[0].write(1).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(mocks[0].used().idx().load(), 1);
}

/// A 1 MiB qcow2 image made by qemu-img (a test dependency: see
/// block/qcow2/tests.rs).
fn qcow2_image(dir: &vmm_sys_util::tempdir::TempDir) -> std::path::PathBuf {
    let path = dir.as_path().join("disk.qcow2");
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096"])
        .arg(&path)
        .arg("1M")
        .status()
        .expect("qemu-img (scripts/install-deps.sh installs qemu-utils)");
    assert!(status.success());
    path
}

#[test]
fn a_qcow2_disk_serves_out_and_in_through_the_queue_and_refuses_discard() {
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let path = qcow2_image(&dir);
    let mem = memory();
    let block = Block::new(
        DiskImage::open(&path, false, false, None).unwrap(),
        params(false, 1),
    )
    .unwrap();
    let mut capacity = [0u8; 8];
    block.read_config(0, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), 2048, "the virtual size");
    // io_uring asked for (params), but a qcow2 image's offsets need
    // translating: its queues stay synchronous.
    assert_eq!(block.io_engine(), super::IoEngine::Sync);
    // And one thread per queue: no helpers share a qcow2 image.
    assert_eq!(block.helper_threads(), 0);
    let f = block.features();
    assert_eq!(
        f & (feature(VIRTIO_BLK_F_DISCARD) | feature(VIRTIO_BLK_F_WRITE_ZEROES)),
        0
    );
    let mut h = BlockQueue {
        image: block.image.clone(),
        readonly: false,
        serial: [0; 20],
        counters: Arc::new(BlockCounters::default()),
        buffer: Vec::new(),
        uring: None,
        helpers: None,
    };
    // 12 KiB from sector 7: three clusters, none allocated yet.
    let data: Vec<u8> = (0..12288u32).map(|i| (i * 7 % 253) as u8).collect();
    mem.write_slice(&data, GuestAddress(DATA)).unwrap();
    header(&mem, VIRTIO_BLK_T_OUT, 7);
    assert_eq!(run(&mut h, &mem, &standard(Some((12288, false)))), (OK, 1));
    header(&mem, VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(run(&mut h, &mem, &standard(None)), (OK, 1));
    mem.write_slice(&[0u8; 12288], GuestAddress(DATA)).unwrap();
    header(&mem, VIRTIO_BLK_T_IN, 7);
    assert_eq!(
        run(&mut h, &mem, &standard(Some((12288, true)))),
        (OK, 12289)
    );
    let mut back = vec![0u8; 12288];
    mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert_eq!(back, data);
    // DISCARD is not offered: a driver sending it anyway gets UNSUPP.
    mem.write_slice(&[0u8; 16], GuestAddress(DATA)).unwrap();
    header(&mem, VIRTIO_BLK_T_DISCARD, 0);
    let unsupp = VIRTIO_BLK_S_UNSUPP as u8;
    assert_eq!(run(&mut h, &mem, &standard(Some((16, false)))).0, unsupp);
    drop((h, block));
    // QEMU reads the guest's bytes where the guest put them.
    let raw = dir.as_path().join("disk.raw");
    let status = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .args([&path, &raw])
        .status()
        .unwrap();
    assert!(status.success());
    let guest = std::fs::read(raw).unwrap();
    assert_eq!(&guest[7 * 512..7 * 512 + 12288], &data[..]);
    assert!(guest[..7 * 512].iter().all(|b| *b == 0));
}

mod helpers;
mod uring;

/// A request laid out the way Linux lays one out once INDIRECT_DESC is
/// negotiated: one ring descriptor pointing at a table of header, data and
/// status descriptors.
#[test]
fn an_indirect_table_is_served_like_a_direct_chain() {
    use virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    const TABLE: u64 = 0x38_0000;
    let (file, mem) = (image_file(), memory());
    let mut h = handler(&file, false);
    header(&mem, VIRTIO_BLK_T_IN, 3);
    mem.write_obj(0xaau8, GuestAddress(STATUS)).unwrap();
    // The table's descriptors link by index within the table (from 0).
    for (i, d) in chain(0, &standard(Some((2048, true)))).iter().enumerate() {
        mem.write_obj(*d, GuestAddress(TABLE + 16 * i as u64))
            .unwrap();
    }
    let ring = RawDescriptor::from(SplitDescriptor::new(
        TABLE,
        3 * 16,
        VRING_DESC_F_INDIRECT as u16,
        0,
    ));
    let mock = MockSplitQueue::new(&mem, 16);
    mock.add_desc_chains(&[ring], 0).unwrap();
    let mut queue: Queue = mock.create_queue().unwrap();
    assert!(h.process_queue(&mut queue, &mem, Progress::QUIET));
    let used = mock.used().ring().ref_at(0).unwrap().load();
    assert_eq!((used.id(), used.len()), (0, 2049));
    assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), OK);
    let mut got = vec![0u8; 2048];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, image_bytes(&file, 3 * 512, 2048));
    drop(h);
    let block = Block::new(
        DiskImage::open(file.as_path(), false, false, None).unwrap(),
        params(false, 1),
    )
    .unwrap();
    assert_ne!(
        block.features() & feature(virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC),
        0,
        "INDIRECT_DESC is offered"
    );
}
