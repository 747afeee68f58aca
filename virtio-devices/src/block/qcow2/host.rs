//! Host file access for qcow2: reads past the end of the file are zeroes
//! (QEMU leaves the last cluster short when a write covered only its
//! start), big-endian entry writes, and the one barrier the write
//! ordering rules use.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Fill `buf` from host `offset`; bytes past the end of the file read as
/// zeroes.
pub fn read_host(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let at = offset
            .checked_add(done as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        match file.read_at(&mut buf[done..], at) {
            Ok(0) => {
                buf[done..].fill(0);
                return Ok(());
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Write one big-endian table entry at host `offset`.
pub fn write_entry(file: &File, entry: u64, offset: u64) -> io::Result<()> {
    file.write_all_at(&entry.to_be_bytes(), offset)
}

/// Make everything written so far durable before anything written after:
/// the ordering barrier between a cluster and the entry that points at it.
pub fn barrier(file: &File) -> io::Result<()> {
    file.sync_data()
}
