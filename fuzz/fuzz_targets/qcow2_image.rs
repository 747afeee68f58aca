//! qcow2 images as an attacker would hand them over: the input is a
//! whole image file (after a 33-byte prefix of flags and four requests),
//! opened as qcow2 and, when it opens, read and written a few sectors at
//! a time. Besides "never panics": memory stays bounded (every table the
//! header names must lie inside the file, which libFuzzer keeps small,
//! and the L2 cache holds at most 1 MiB), and a read-only image's file
//! never changes.
#![no_main]

use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use virtio_devices::block::{DiskImage, ImageFormat};
use vmm_sys_util::tempfile::TempFile;

/// Flags byte, then four requests of 8 bytes: kind (bit 0: write),
/// sectors (1..=16), two unused bytes, first sector (u32, little endian).
const PREFIX: usize = 1 + 4 * 8;

/// The image file, rewritten per input (one per process); on tmpfs
/// where there is one, as every new cluster costs fdatasyncs.
fn file() -> &'static TempFile {
    static FILE: OnceLock<TempFile> = OnceLock::new();
    FILE.get_or_init(|| {
        TempFile::new_in(std::path::Path::new("/dev/shm"))
            .or_else(|_| TempFile::new())
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < PREFIX {
        return;
    }
    let (prefix, image) = data.split_at(PREFIX);
    let readonly = prefix[0] & 1 != 0;
    let tmp = file();
    tmp.as_file().set_len(0).unwrap();
    tmp.as_file().write_all_at(image, 0).unwrap();
    let Ok(disk) = DiskImage::open(tmp.as_path(), readonly, false, Some(ImageFormat::Qcow2)) else {
        return;
    };
    let sectors = disk.sectors();
    let mut buf = vec![0u8; 16 * 512];
    for op in prefix[1..].chunks_exact(8) {
        let count = u64::from(op[1] % 16) + 1;
        let sector = u64::from(u32::from_le_bytes([op[4], op[5], op[6], op[7]])) % sectors;
        let count = count.min(sectors - sector);
        let part = &mut buf[..(count * 512) as usize];
        if op[0] & 1 == 1 && !readonly {
            part.fill(op[2]);
            let _ = disk.write_at(part, sector * 512);
        } else {
            let _ = disk.read_at(part, sector * 512);
        }
    }
    let _ = disk.flush();
    drop(disk);
    if readonly {
        let now = std::fs::read(tmp.as_path()).unwrap();
        assert!(now == image, "a read-only image changed");
    }
});
