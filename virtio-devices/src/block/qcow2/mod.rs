//! qcow2 images (QEMU's docs/interop/qcow2.txt), versions 2 and 3, read
//! and write, as the backend of a virtio-blk disk.
//!
//! Our own implementation, not a crate (crates.io as of this writing):
//! qcow2-rs 0.1.6 depends on tokio and tokio-uring (an async runtime in
//! every queue worker); qcow2 0.1.2 (2016) and qcow2-core are read-only
//! readers, and qcow 1.2 reads images and their metadata. The worker
//! threads do synchronous pread/pwrite, so a small synchronous qcow2 that
//! writes too fits the device as it is.
//!
//! Implemented: the header with every field validated at open
//! ([`header`]); L1 in memory, L2 tables through a small LRU cache
//! ([`table`]); reads of unallocated and zero-flag (v3) clusters as
//! zeroes; a write to an unallocated or zero cluster allocates a data
//! cluster (and an L2 table, and a refcount block, as needed) at the end
//! of the file ([`refcount`]). Ordering, each step behind a barrier
//! (fdatasync) so a host crash leaves at worst a leaked cluster, never a
//! pointer to garbage: refcount before the cluster is used, data cluster
//! before the L2 entry that points at it, L2 table before the L1 entry.
//! FLUSH is an fdatasync. Metadata is written through (no dirty cache).
//!
//! Refused at open (one [`HeaderError`] each): backing files, encryption,
//! external data files, extended L2 entries, unknown incompatible
//! features, cluster_bits outside 9..=21, and for writing: the dirty or
//! corrupt bit, internal snapshots (shared clusters would need
//! copy-on-write). A compressed cluster fails the request that meets it.
//!
//! A full refcount table moves to a larger copy (up to QEMU's 8 MiB).
//!
//! Not implemented: DISCARD and WRITE_ZEROES (the device does not offer
//! them on a qcow2 disk), freeing data clusters, backing files,
//! compression, O_DIRECT, lazy refcounts (never used for our own writes).

pub mod header;
mod host;
mod refcount;
pub mod table;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, MutexGuard};

use header::{AUTOCLEAR_OFFSET, Header};
pub use header::{HeaderError, has_magic};
use host::{barrier, read_host, write_entry};
use refcount::Refcounts;
use table::{COPIED, L2Cache, Mapping, corrupt, l2_offset, mapping, to_bytes};

/// An open qcow2 image.
#[derive(Debug)]
pub struct Qcow2 {
    file: File,
    /// Virtual size in bytes.
    size: u64,
    cluster_bits: u32,
    meta: Mutex<Metadata>,
}

/// What lookups and allocations change, behind the image's lock.
#[derive(Debug)]
struct Metadata {
    version: u32,
    l1: Vec<u64>,
    l1_offset: u64,
    l2_cache: L2Cache,
    refcounts: Refcounts,
    /// Host ranges a data cluster or L2 table may never overlap (header
    /// cluster, L1 table; the refcount table's is asked of `refcounts`):
    /// a crafted entry pointing there fails instead of overwriting
    /// metadata.
    reserved: [(u64, u64); 2],
}

impl Qcow2 {
    /// Open the qcow2 image in `file` (`file_len` bytes).
    pub fn open(file: File, file_len: u64, writable: bool) -> Result<Self, HeaderError> {
        let header = Header::read(&file, file_len, writable)?;
        let cluster_size = 1u64 << header.cluster_bits;
        let mut l1_bytes = vec![0u8; (header.l1_size * 8) as usize];
        read_host(&file, &mut l1_bytes, header.l1_table_offset).map_err(HeaderError::Read)?;
        let l1 = l1_bytes
            .chunks_exact(8)
            .map(|e| u64::from_be_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]))
            .collect();
        let refcounts = Refcounts::read(
            &file,
            header.refcount_table_offset,
            header.refcount_table_clusters,
            header.refcount_order,
            header.cluster_bits,
            file_len,
        )
        .map_err(HeaderError::Read)?;
        if writable && header.autoclear_features != 0 {
            // Bits we do not maintain (e.g. persistent bitmaps) must read
            // as stale once we have written: clear them, as QEMU does.
            write_entry(&file, 0, AUTOCLEAR_OFFSET)
                .and_then(|()| barrier(&file))
                .map_err(HeaderError::Read)?;
            log::info!(target: "virtio-blk", "qcow2: cleared autoclear features {:#x}", header.autoclear_features);
        }
        let meta = Metadata {
            version: header.version,
            l1,
            l1_offset: header.l1_table_offset,
            l2_cache: L2Cache::new(cluster_size),
            refcounts,
            reserved: [
                (0, cluster_size),
                (header.l1_table_offset, header.l1_size * 8),
            ],
        };
        Ok(Qcow2 {
            file,
            size: header.size,
            cluster_bits: header.cluster_bits,
            meta: Mutex::new(meta),
        })
    }

    /// Virtual size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn meta(&self) -> MutexGuard<'_, Metadata> {
        // A panic while holding the lock cannot leave the metadata half
        // updated in memory: every update follows its successful write.
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Split `[offset, offset + len)` into per-cluster pieces:
    /// (guest offset, start in the caller's buffer, length).
    fn pieces(&self, offset: u64, len: usize) -> io::Result<Vec<(u64, usize, usize)>> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => {}
            _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
        let cs = self.cluster_size();
        let mut pieces = Vec::new();
        let mut done = 0usize;
        while done < len {
            let at = offset + done as u64;
            let n = ((cs - at % cs) as usize).min(len - done);
            pieces.push((at, done, n));
            done += n;
        }
        Ok(pieces)
    }

    /// Fill `buf` from guest byte `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        for (at, start, n) in self.pieces(offset, buf.len())? {
            let part = &mut buf[start..start + n];
            let found = self.meta().lookup(&self.file, at, self.cluster_bits)?;
            match found.mapping {
                Mapping::Data(host) => {
                    read_host(&self.file, part, host + at % self.cluster_size())?
                }
                Mapping::Unallocated | Mapping::Zero { .. } => part.fill(0),
            }
        }
        Ok(())
    }

    /// Write `buf` at guest byte `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        for (at, start, n) in self.pieces(offset, buf.len())? {
            let part = &buf[start..start + n];
            let mut meta = self.meta();
            let found = meta.lookup(&self.file, at, self.cluster_bits)?;
            if let Mapping::Data(host) = found.mapping {
                // In place: no metadata changes, so the lock can go.
                drop(meta);
                self.file
                    .write_all_at(part, host + at % self.cluster_size())?;
            } else {
                meta.allocate(&self.file, found, at, part, self.cluster_bits)?;
            }
        }
        Ok(())
    }

    /// Make written data and metadata durable.
    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// A guest cluster's mapping and where its L2 entry lives.
#[derive(Clone, Copy, Debug)]
struct Lookup {
    mapping: Mapping,
    l1_index: usize,
    /// The L2 table (0: none yet).
    l2_table: u64,
    l2_index: usize,
}

impl Metadata {
    /// Check a host cluster named by an entry: inside the file (so a
    /// crafted entry can neither make a sparse file of 2^56 bytes nor
    /// alias a cluster we allocate later), not on the header, L1 or
    /// refcount table.
    fn check_host(&self, what: &str, host: u64, cluster_size: u64) -> io::Result<()> {
        if host + cluster_size > self.refcounts.end() {
            return Err(corrupt(format!(
                "{what} at {host:#x} is past the end of the file"
            )));
        }
        let overlaps = self
            .reserved
            .iter()
            .chain(std::iter::once(&self.refcounts.table_range()))
            .any(|&(start, len)| host < start.saturating_add(len) && start < host + cluster_size);
        if overlaps {
            return Err(corrupt(format!(
                "{what} at {host:#x} overlaps the header or a table"
            )));
        }
        Ok(())
    }

    /// Translate guest `offset`.
    fn lookup(&mut self, file: &File, offset: u64, cluster_bits: u32) -> io::Result<Lookup> {
        let cs = 1u64 << cluster_bits;
        let l2_bits = cluster_bits - 3;
        let l1_index = (offset >> (cluster_bits + l2_bits)) as usize;
        let l2_index = ((offset >> cluster_bits) & ((1 << l2_bits) - 1)) as usize;
        // The header check sized L1 for the virtual size; get() anyway.
        let l1_entry = *self
            .l1
            .get(l1_index)
            .ok_or_else(|| corrupt(format!("guest offset {offset:#x} is past the L1 table")))?;
        let l2_table = l2_offset(l1_entry, cs)?;
        let mut found = Lookup {
            mapping: Mapping::Unallocated,
            l1_index,
            l2_table,
            l2_index,
        };
        if l2_table == 0 {
            return Ok(found);
        }
        self.check_host("L2 table", l2_table, cs)?;
        let entry = self.l2_cache.get(file, l2_table, cs)?[l2_index];
        found.mapping = mapping(entry, cs, self.version)?;
        if let Mapping::Data(host) | Mapping::Zero { host, .. } = found.mapping {
            if host != 0 {
                self.check_host("data cluster", host, cs)?;
            }
        }
        Ok(found)
    }

    /// Give the unallocated or zero cluster of `found` a data cluster
    /// holding `part` at `offset`'s place (zeroes around it), in the
    /// order that keeps the image consistent at every step.
    fn allocate(
        &mut self,
        file: &File,
        found: Lookup,
        offset: u64,
        part: &[u8],
        cluster_bits: u32,
    ) -> io::Result<()> {
        let cs = 1u64 << cluster_bits;
        let new_table = found.l2_table == 0;
        let l2_table = if new_table {
            self.refcounts.allocate(file)?
        } else {
            found.l2_table
        };
        let host = match found.mapping {
            Mapping::Zero { host, copied: true } if host != 0 => host,
            _ => self.refcounts.allocate(file)?,
        };
        let mut cluster = vec![0u8; cs as usize];
        let within = (offset % cs) as usize;
        cluster[within..within + part.len()].copy_from_slice(part);
        file.write_all_at(&cluster, host)?;
        // Rule: the data cluster is durable before the L2 entry that
        // points at it.
        barrier(file)?;
        let entry = host | COPIED;
        if new_table {
            let mut table = vec![0u64; (cs / 8) as usize];
            table[found.l2_index] = entry;
            file.write_all_at(&to_bytes(&table), l2_table)?;
            // Rule: the L2 table is durable before the L1 entry.
            barrier(file)?;
            let l1_entry = l2_table | COPIED;
            write_entry(file, l1_entry, self.l1_offset + found.l1_index as u64 * 8)?;
            self.l1[found.l1_index] = l1_entry;
            self.l2_cache.insert(l2_table, table);
        } else {
            write_entry(file, entry, l2_table + found.l2_index as u64 * 8)?;
            self.l2_cache.get(file, l2_table, cs)?[found.l2_index] = entry;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
