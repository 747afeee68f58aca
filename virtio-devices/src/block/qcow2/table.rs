//! L1 and L2 tables (qcow2.txt, "Cluster mapping"): entry decoding, with
//! every offset checked before it is used, and a small LRU cache of L2
//! tables so a sequential read does not re-read its table per cluster.

use std::fs::File;
use std::io;

use super::host::read_host;

/// Bits 9..=55 of an L1, L2 or refcount table entry: a host offset.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bit 63: the cluster's refcount is exactly one (writable in place).
pub const COPIED: u64 = 1 << 63;
/// Bit 62 of an L2 entry: a compressed cluster.
pub const COMPRESSED: u64 = 1 << 62;
/// Bit 0 of a standard L2 entry (version 3): the cluster reads as zeroes.
pub const ZERO: u64 = 1;
/// L1 entry bits that must be zero.
const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
/// Standard L2 entry bits that must be zero (bit 0 is ZERO on version 3).
const L2_RESERVED: u64 = 0x3f00_0000_0000_01fe;
/// Bytes the L2 cache may hold (at least one table).
const L2_CACHE_BYTES: usize = 1 << 20;

/// An `InvalidData` error: the image's metadata breaks a rule.
pub fn corrupt(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt qcow2 metadata: {what}"),
    )
}

/// Where a guest cluster's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// No L2 table, or an empty L2 entry: reads as zeroes, a write allocates.
    Unallocated,
    /// Zero flag: reads as zeroes; `host` is a preallocated cluster (0 if
    /// none) that a write may reuse when `copied`.
    Zero {
        /// Preallocated host cluster, or 0.
        host: u64,
        /// Its refcount is one.
        copied: bool,
    },
    /// Data at this host cluster, writable in place.
    Data(u64),
}

/// Decode an L1 entry into its L2 table offset (0: no table).
pub fn l2_offset(entry: u64, cluster_size: u64) -> io::Result<u64> {
    if entry & L1_RESERVED != 0 {
        return Err(corrupt(format!(
            "L1 entry {entry:#x} has reserved bits set"
        )));
    }
    let offset = entry & OFFSET_MASK;
    if offset % cluster_size != 0 {
        return Err(corrupt(format!(
            "L2 table offset {offset:#x} is not cluster aligned"
        )));
    }
    Ok(offset)
}

/// Decode a standard L2 entry of a `version` image.
pub fn mapping(entry: u64, cluster_size: u64, version: u32) -> io::Result<Mapping> {
    if entry & COMPRESSED != 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the cluster is compressed; compressed clusters are not supported \
             (qemu-img convert -O qcow2 without -c writes an uncompressed copy)",
        ));
    }
    if entry & L2_RESERVED != 0 {
        return Err(corrupt(format!(
            "L2 entry {entry:#x} has reserved bits set"
        )));
    }
    let host = entry & OFFSET_MASK;
    if host % cluster_size != 0 {
        return Err(corrupt(format!(
            "data cluster offset {host:#x} is not cluster aligned"
        )));
    }
    if entry & ZERO != 0 {
        if version < 3 {
            return Err(corrupt(format!(
                "L2 entry {entry:#x}: zero flag on a version 2 image"
            )));
        }
        return Ok(Mapping::Zero {
            host,
            copied: entry & COPIED != 0,
        });
    }
    Ok(match host {
        0 => Mapping::Unallocated,
        h => Mapping::Data(h),
    })
}

/// A few L2 tables, most recently used first.
#[derive(Debug)]
pub struct L2Cache {
    tables: Vec<(u64, Vec<u64>)>,
    capacity: usize,
}

impl L2Cache {
    /// A cache for tables of `cluster_size` bytes.
    pub fn new(cluster_size: u64) -> Self {
        L2Cache {
            tables: Vec::new(),
            capacity: (L2_CACHE_BYTES / cluster_size as usize).max(1),
        }
    }

    /// The table at host `offset`, read from `file` on a miss.
    pub fn get(&mut self, file: &File, offset: u64, cluster_size: u64) -> io::Result<&mut [u64]> {
        if let Some(i) = self.tables.iter().position(|(o, _)| *o == offset) {
            let hit = self.tables.remove(i);
            self.tables.insert(0, hit);
        } else {
            let mut bytes = vec![0u8; cluster_size as usize];
            read_host(file, &mut bytes, offset)?;
            let table = bytes
                .chunks_exact(8)
                .map(|e| u64::from_be_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]))
                .collect();
            self.insert(offset, table);
        }
        Ok(&mut self.tables[0].1)
    }

    /// Put a table (new or just read) at the front, evicting the oldest.
    pub fn insert(&mut self, offset: u64, table: Vec<u64>) {
        self.tables.retain(|(o, _)| *o != offset);
        self.tables.truncate(self.capacity - 1);
        self.tables.insert(0, (offset, table));
    }
}

/// A table of big-endian u64 entries, as bytes for the file.
pub fn to_bytes(entries: &[u64]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_be_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l2_entries_decode_to_their_mapping_and_bad_ones_are_errors() {
        let cs = 1 << 16;
        assert_eq!(mapping(0, cs, 2).unwrap(), Mapping::Unallocated);
        assert_eq!(
            mapping(COPIED | 0x5_0000, cs, 2).unwrap(),
            Mapping::Data(0x5_0000)
        );
        assert_eq!(
            mapping(ZERO, cs, 3).unwrap(),
            Mapping::Zero {
                host: 0,
                copied: false
            }
        );
        assert!(mapping(ZERO, cs, 2).is_err(), "zero flag on version 2");
        assert!(mapping(0x5_0200, cs, 3).is_err(), "not cluster aligned");
        assert!(mapping(1 << 60, cs, 3).is_err(), "reserved bit");
        let compressed = mapping(COMPRESSED | 0x1234, cs, 3).unwrap_err();
        assert_eq!(compressed.kind(), io::ErrorKind::Unsupported);
        assert!(l2_offset(1, cs).is_err(), "L1 bit 0 is reserved");
        assert_eq!(l2_offset(COPIED | 0x3_0000, cs).unwrap(), 0x3_0000);
    }

    #[test]
    fn the_cache_evicts_its_least_recently_used_table() {
        let mut cache = L2Cache::new(512 << 10); // two tables fit
        cache.insert(1, vec![1]);
        cache.insert(2, vec![2]);
        cache.insert(3, vec![3]);
        let offsets: Vec<u64> = cache.tables.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, [3, 2]);
    }
}
