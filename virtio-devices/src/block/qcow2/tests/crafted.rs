//! Crafted images: a real qemu-img image with one header field or table
//! entry changed. Each refusal is one sentence naming the path and the
//! value; bad table entries fail the request, never the process.

use std::os::unix::fs::FileExt;

use super::*;

/// A fresh compat=1.1 image (64 KiB clusters, 8 MiB) with `patch` applied.
fn patched(dir: &TempDir, patch: &[(u64, &[u8])]) -> PathBuf {
    let path = create(dir, "crafted.qcow2", "compat=1.1", 8 * MIB);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for (offset, bytes) in patch {
        file.write_all_at(bytes, *offset).unwrap();
    }
    path
}

/// Opening the image patched with `patch` (writable unless `readonly`)
/// fails with a message holding each of `words` and the path.
fn refused(patch: &[(u64, &[u8])], readonly: bool, words: &[&str]) {
    let dir = TempDir::new().unwrap();
    let path = patched(&dir, patch);
    let err = open(&path, readonly).unwrap_err();
    assert!(matches!(err, ImageError::Qcow2 { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("--disk path={}: ", path.display())),
        "{msg}"
    );
    for word in words {
        assert!(msg.contains(word), "{patch:?}: {msg}");
    }
}

#[test]
fn each_unsupported_header_is_refused_naming_the_value() {
    refused(&[(4, &4u32.to_be_bytes())], false, &["version 4"]);
    refused(
        &[(8, &0x1000u64.to_be_bytes())],
        true,
        &["backing file", "qemu-img convert"],
    );
    refused(
        &[(32, &2u32.to_be_bytes())],
        true,
        &["encrypted", "crypt_method 2"],
    );
    refused(&[(20, &8u32.to_be_bytes())], true, &["cluster_bits 8"]);
    refused(&[(20, &22u32.to_be_bytes())], true, &["cluster_bits 22"]);
    refused(&[(72, &4u64.to_be_bytes())], true, &["external data file"]);
    refused(&[(72, &16u64.to_be_bytes())], true, &["extended L2"]);
    refused(
        &[(72, &0x80u64.to_be_bytes())],
        true,
        &["incompatible feature bits 0x80"],
    );
    refused(
        &[(96, &7u32.to_be_bytes())],
        true,
        &["refcount_order", "0x7"],
    );
    refused(
        &[(100, &50u32.to_be_bytes())],
        true,
        &["header_length", "0x32"],
    );
    refused(
        &[(60, &1u32.to_be_bytes())],
        false,
        &["1 internal snapshots", "readonly=on"],
    );
}

#[test]
fn dirty_or_corrupt_images_are_refused_for_writing_with_the_repair_command() {
    for (bit, name) in [(1u64, "dirty"), (2, "corrupt")] {
        refused(
            &[(72, &bit.to_be_bytes())],
            false,
            &[name, "qemu-img check -r all"],
        );
        let dir = TempDir::new().unwrap();
        let path = patched(&dir, &[(72, &bit.to_be_bytes())]);
        open(&path, true).expect("read-only open of a dirty or corrupt image");
    }
}

#[test]
fn tables_out_of_bounds_or_misaligned_are_refused_at_open() {
    // l1_table_offset not cluster aligned; past the end of the file.
    refused(
        &[(40, &0x30200u64.to_be_bytes())],
        true,
        &["l1_table_offset", "0x30200"],
    );
    refused(
        &[(40, &(1u64 << 40).to_be_bytes())],
        true,
        &["l1_table_offset", "past the end"],
    );
    // An L1 table too small for the virtual size, and one over 32 MiB.
    refused(
        &[(36, &0u32.to_be_bytes())],
        true,
        &["l1_size", "too small"],
    );
    refused(
        &[(36, &(8u32 << 20).to_be_bytes())],
        true,
        &["l1_size", "32 MiB"],
    );
    // A refcount table of 2^31 clusters, and one past the file.
    refused(
        &[(56, &(1u32 << 31).to_be_bytes())],
        true,
        &["refcount_table_clusters"],
    );
    refused(
        &[(48, &(1u64 << 50).to_be_bytes())],
        true,
        &["refcount_table_offset"],
    );
    // A virtual size of 2^63 bytes.
    refused(
        &[(24, &(1u64 << 63).to_be_bytes())],
        true,
        &["size", "2^61"],
    );
}

/// The host offset of the L1 table of a fresh image.
fn l1_offset(path: &Path) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, 40)
        .unwrap();
    u64::from_be_bytes(b)
}

#[test]
fn bad_table_entries_fail_the_request_and_never_overwrite_metadata() {
    let dir = TempDir::new().unwrap();
    // 1 GiB: two L1 entries (one L2 table reaches 512 MiB).
    let path = create(&dir, "t.qcow2", "compat=1.1", 1024 * MIB);
    let l1 = l1_offset(&path);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // L1 entry 0 points its L2 table at the L1 table itself.
    file.write_all_at(&(l1 | 1 << 63).to_be_bytes(), l1)
        .unwrap();
    let image = open(&path, false).unwrap();
    let err = image.write_at(&[9; 512], 0).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    assert!(err.to_string().contains("overlaps"), "{err}");
    let mut entry = [0u8; 8];
    file.read_exact_at(&mut entry, l1).unwrap();
    assert_eq!(u64::from_be_bytes(entry), l1 | 1 << 63, "L1 untouched");
    drop(image);
    // A reserved bit in an L1 entry.
    file.write_all_at(&(0x2_0000u64 | 1 << 60).to_be_bytes(), l1)
        .unwrap();
    let image = open(&path, true).unwrap();
    let err = image.read_at(&mut [0; 512], 0).unwrap_err();
    assert!(err.to_string().contains("reserved bits"), "{err}");
    drop(image);
    // An L2 table past the end of the file: refused, nothing written there.
    file.write_all_at(&(1u64 << 40 | 1 << 63).to_be_bytes(), l1)
        .unwrap();
    let len = file.metadata().unwrap().len();
    let image = open(&path, false).unwrap();
    let err = image.write_at(&[9; 512], 0).unwrap_err();
    assert!(
        err.to_string().contains("past the end of the file"),
        "{err}"
    );
    assert_eq!(file.metadata().unwrap().len(), len);
    // The second L1 entry's region is unaffected: reads as zeroes.
    let mut buf = [1u8; 512];
    image.read_at(&mut buf, 1024 * MIB - 512).unwrap();
    assert_eq!(buf, [0; 512]);
}

#[test]
fn direct_on_is_refused_for_qcow2() {
    let dir = TempDir::new().unwrap();
    let path = create(&dir, "d.qcow2", "compat=1.1", MIB);
    let err = DiskImage::open(&path, false, true, None).unwrap_err();
    assert!(matches!(err, ImageError::Qcow2Direct(_)), "{err:?}");
    assert!(
        err.to_string().contains("direct=on is not supported"),
        "{err}"
    );
}
