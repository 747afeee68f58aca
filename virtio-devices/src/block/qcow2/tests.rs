//! qcow2 against QEMU's own tools: images made by `qemu-img create`,
//! written through [`DiskImage`], then `qemu-img check` must find no
//! error and `qemu-img convert -O raw` must give the bytes we expect; and
//! images written by `qemu-io` must read back through ours. qemu-img is a
//! test dependency (scripts/install-deps.sh installs qemu-utils): its
//! absence fails these tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vmm_sys_util::tempdir::TempDir;

use crate::block::image::{DiskImage, ImageError, ImageFormat};

const MIB: u64 = 1 << 20;

fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!(
            "{name} is needed by the qcow2 tests (scripts/install-deps.sh installs qemu-utils): {e}"
        )
    })
}

fn ok(name: &str, args: &[&str]) -> String {
    let out = tool(name, args);
    assert!(
        out.status.success(),
        "{name} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new qcow2 image of `size` bytes with `options` (-o).
fn create(dir: &TempDir, name: &str, options: &str, size: u64) -> PathBuf {
    let path = dir.as_path().join(name);
    let p = path.to_str().unwrap();
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            options,
            p,
            &size.to_string(),
        ],
    );
    path
}

fn open(path: &Path, readonly: bool) -> Result<DiskImage, ImageError> {
    DiskImage::open(path, readonly, false, Some(ImageFormat::Qcow2))
}

/// `qemu-img check` finds neither errors nor leaks.
fn check_clean(path: &Path) {
    let out = ok("qemu-img", &["check", path.to_str().unwrap()]);
    assert!(out.contains("No errors were found"), "{out}");
}

/// The image's guest bytes as QEMU reads them.
fn converted(dir: &TempDir, path: &Path) -> Vec<u8> {
    let raw = dir.as_path().join("converted.raw");
    ok(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            path.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    std::fs::read(raw).unwrap()
}

/// A pattern that differs per write and per byte.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8 ^ (i >> 9) as u8))
        .collect()
}

/// Write a pattern at each (offset, len), in `image` and in `expected`.
fn write_all(image: &DiskImage, expected: &mut [u8], writes: &[(u64, usize)]) {
    for (seed, &(offset, len)) in writes.iter().enumerate() {
        let data = pattern(seed as u8 + 1, len);
        image.write_at(&data, offset).unwrap();
        expected[offset as usize..offset as usize + len].copy_from_slice(&data);
    }
}

/// Writes at scattered offsets in a `size`-byte image of `cs`-byte
/// clusters: the first sector, across a cluster boundary, several whole
/// clusters, across an L2 table's reach, the very end, and a rewrite.
fn scattered(cs: u64, size: u64) -> Vec<(u64, usize)> {
    let l2_reach = cs * (cs / 8);
    let mut writes = vec![
        (0, 512),
        (cs - 512, 1024),
        (3 * cs + 512, (3 * cs) as usize),
        (size / 2 + 7 * 512, 4096),
        (size - 1024, 1024),
        (512, 512),
    ];
    if l2_reach + 512 < size {
        writes.push((l2_reach - 512, 1024));
    }
    writes
}

fn round_trip(options: &str, cs: u64, size: u64) {
    let dir = TempDir::new().unwrap();
    let path = create(&dir, "disk.qcow2", options, size);
    let mut expected = vec![0u8; size as usize];
    let image = open(&path, false).unwrap();
    assert_eq!(
        image.sectors(),
        size / 512,
        "{options}: capacity is the virtual size"
    );
    write_all(&image, &mut expected, &scattered(cs, size));
    let mut back = vec![0xeeu8; size as usize];
    for chunk in (0..size).step_by(MIB as usize) {
        let n = MIB.min(size - chunk) as usize;
        image
            .read_at(&mut back[chunk as usize..chunk as usize + n], chunk)
            .unwrap();
    }
    assert!(back == expected, "{options}: read back differs");
    image.flush().unwrap();
    drop(image);
    check_clean(&path);
    assert!(
        converted(&dir, &path) == expected,
        "{options}: qemu-img reads other bytes"
    );
}

#[test]
fn writes_read_back_and_qemu_img_checks_clean_v2_and_v3_at_4k_64k_2m_clusters() {
    for compat in ["0.10", "1.1"] {
        for cs in [4096u64, 64 << 10, 2 << 20] {
            round_trip(&format!("compat={compat},cluster_size={cs}"), cs, 16 * MIB);
        }
    }
}

#[test]
fn new_refcount_blocks_are_added_when_the_file_outgrows_one_block() {
    // 512-byte clusters with 64-bit refcounts: a block counts 64 clusters
    // (32 KiB of file), so 200 scattered clusters need several blocks;
    // 1-bit refcounts exercise the sub-byte entries.
    for bits in [64, 1, 16] {
        let options = format!("compat=1.1,cluster_size=512,refcount_bits={bits}");
        let dir = TempDir::new().unwrap();
        let size = 4 * MIB;
        let path = create(&dir, "small.qcow2", &options, size);
        let mut expected = vec![0u8; size as usize];
        let image = open(&path, false).unwrap();
        let writes: Vec<(u64, usize)> = (0..200u64)
            .map(|i| ((i * 20_011 % 8000) * 512, 512))
            .collect();
        write_all(&image, &mut expected, &writes);
        drop(image);
        check_clean(&path);
        assert!(converted(&dir, &path) == expected, "{options}");
    }
}

/// A big-endian header field.
fn header_u64(path: &Path, at: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 8];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, at)
        .unwrap();
    u64::from_be_bytes(b)
}

#[test]
fn a_full_refcount_table_moves_to_a_larger_copy() {
    // 512-byte clusters, 64-bit refcounts: one table cluster (64 blocks
    // of 64 clusters) counts 2 MiB of file; 2.5 MiB of data outgrows it.
    // On tmpfs: each new cluster costs fdatasyncs.
    let dir = TempDir::new_in(Path::new("/dev/shm")).unwrap();
    let size = 4 * MIB;
    let path = create(
        &dir,
        "grow.qcow2",
        "compat=1.1,cluster_size=512,refcount_bits=64",
        size,
    );
    let old_table = header_u64(&path, 48);
    let mut expected = vec![0u8; size as usize];
    let image = open(&path, false).unwrap();
    write_all(
        &image,
        &mut expected,
        &[(0, (2 * MIB + MIB / 2) as usize), (size - 512, 512)],
    );
    let mut back = vec![0u8; size as usize];
    image.read_at(&mut back, 0).unwrap();
    assert!(back == expected);
    drop(image);
    assert_ne!(header_u64(&path, 48), old_table, "the table moved");
    assert!(header_u64(&path, 56) >> 32 > 1, "to more than one cluster");
    check_clean(&path);
    assert!(converted(&dir, &path) == expected);
}

#[test]
fn data_written_by_qemu_io_reads_back_through_ours_and_zero_clusters_read_as_zeroes() {
    for compat in ["0.10", "1.1"] {
        let dir = TempDir::new().unwrap();
        let path = create(&dir, "q.qcow2", &format!("compat={compat}"), 8 * MIB);
        let p = path.to_str().unwrap();
        let mut cmds = vec!["-c", "write -P 0xab 1M 64k", "-c", "write -P 0xcd 3M 4k"];
        if compat == "1.1" {
            // An allocated cluster turned into a zero cluster (zero flag).
            cmds.extend(["-c", "write -P 0x11 5M 64k", "-c", "write -z 5M 64k"]);
        }
        let mut args = vec!["-f", "qcow2"];
        args.extend(cmds);
        args.push(p);
        ok("qemu-io", &args);
        let image = open(&path, false).unwrap();
        let mut buf = vec![0u8; 64 << 10];
        image.read_at(&mut buf, MIB).unwrap();
        assert!(buf.iter().all(|b| *b == 0xab), "{compat}");
        image.read_at(&mut buf, 3 * MIB).unwrap();
        assert!(buf[..4096].iter().all(|b| *b == 0xcd) && buf[4096..].iter().all(|b| *b == 0));
        image.read_at(&mut buf, 5 * MIB).unwrap();
        assert!(buf.iter().all(|b| *b == 0), "{compat}: zero cluster");
        // A write into the zero cluster reads back with zeroes around it.
        image.write_at(&[0x77; 512], 5 * MIB + 1024).unwrap();
        image.read_at(&mut buf, 5 * MIB).unwrap();
        assert!(buf[1024..1536].iter().all(|b| *b == 0x77));
        assert!(buf[..1024].iter().chain(&buf[1536..]).all(|b| *b == 0));
        drop(image);
        check_clean(&path);
        let guest = converted(&dir, &path);
        let at = (5 * MIB) as usize;
        assert!(guest[at + 1024..at + 1536].iter().all(|b| *b == 0x77));
        assert!(
            guest[MIB as usize..MIB as usize + 65536]
                .iter()
                .all(|b| *b == 0xab)
        );
    }
}

#[test]
fn a_compressed_cluster_fails_its_request_and_nothing_else() {
    let dir = TempDir::new().unwrap();
    let raw = dir.as_path().join("src.raw");
    std::fs::write(&raw, vec![0x42u8; MIB as usize]).unwrap();
    let path = dir.as_path().join("c.qcow2");
    ok(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            path.to_str().unwrap(),
        ],
    );
    let image = open(&path, true).unwrap();
    let mut buf = [0u8; 512];
    let err = image.read_at(&mut buf, 0).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("compressed"), "{err}");
}

#[test]
fn without_image_type_the_magic_decides_and_raw_stays_raw() {
    let dir = TempDir::new().unwrap();
    let path = create(&dir, "d.qcow2", "compat=1.1", 3 * MIB);
    let image = DiskImage::open(&path, true, false, None).unwrap();
    assert_eq!(
        (image.format(), image.sectors()),
        (ImageFormat::Qcow2, 6144)
    );
    assert!(!image.supports_discard());
    let raw = dir.as_path().join("r.raw");
    std::fs::write(&raw, vec![0u8; 4096]).unwrap();
    let image = DiskImage::open(&raw, true, false, None).unwrap();
    assert_eq!((image.format(), image.sectors()), (ImageFormat::Raw, 8));
    // Asked for qcow2, a raw file is refused in one sentence.
    let err = open(&raw, true).unwrap_err().to_string();
    assert!(
        err.contains("r.raw") && err.contains("found 0x00000000"),
        "{err}"
    );
}

#[test]
fn reads_and_writes_past_the_virtual_size_are_refused() {
    let dir = TempDir::new().unwrap();
    let path = create(&dir, "e.qcow2", "compat=1.1", MIB);
    let image = open(&path, false).unwrap();
    assert!(image.write_at(&[1; 512], MIB).is_err());
    assert!(image.read_at(&mut [0; 1024], MIB - 512).is_err());
    assert!(image.write_at(&[1; 512], u64::MAX - 100).is_err());
}

mod crafted;
