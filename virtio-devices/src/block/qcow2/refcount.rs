//! Refcounts (qcow2.txt, "Host cluster management") and cluster
//! allocation. New clusters are appended at the end of the file (the
//! image frees only an outgrown refcount table: no discard, no snapshots
//! when writable), and a cluster's refcount is made durable before
//! anything points at it. A full refcount table moves to a larger copy.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::header::MAX_REFTABLE_BYTES;
use super::host::{barrier, read_host, write_entry};
use super::table::{corrupt, to_bytes};

/// Refcount table entry bits that must be zero.
const REFTABLE_RESERVED: u64 = 0x1ff;
/// Host offsets are bits 9..=55 of a table entry: no cluster ends past 2^56.
const MAX_HOST_END: u64 = 1 << 56;
/// Header offset of refcount_table_offset (u64), followed by
/// refcount_table_clusters (u32): one 12-byte write moves the table.
const REFTABLE_HEADER_FIELDS: u64 = 48;
/// Refcount blocks one allocation may add before giving up: each new
/// block covers itself unless it lands on a block boundary, so two suffice.
const MAX_NEW_BLOCKS: u32 = 4;

/// The refcount table (in memory, bounded at open) and the allocator.
#[derive(Debug)]
pub struct Refcounts {
    table: Vec<u64>,
    table_offset: u64,
    /// log2 of the refcount width in bits (0..=6).
    order: u32,
    cluster_bits: u32,
    /// The next cluster to allocate: the cluster-rounded end of the file.
    next_free: u64,
}

impl Refcounts {
    /// Read the table of `clusters` clusters at `table_offset` (checked
    /// against the file at open); `file_len` starts the allocator.
    pub fn read(
        file: &File,
        table_offset: u64,
        clusters: u64,
        order: u32,
        cluster_bits: u32,
        file_len: u64,
    ) -> io::Result<Self> {
        let mut bytes = vec![0u8; (clusters << cluster_bits) as usize];
        read_host(file, &mut bytes, table_offset)?;
        let table = bytes
            .chunks_exact(8)
            .map(|e| u64::from_be_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]))
            .collect();
        let cluster_size = 1u64 << cluster_bits;
        Ok(Refcounts {
            table,
            table_offset,
            order,
            cluster_bits,
            next_free: file_len.div_ceil(cluster_size) * cluster_size,
        })
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Refcount entries per block.
    fn per_block(&self) -> u64 {
        (self.cluster_size() * 8) >> self.order
    }

    /// A new cluster with refcount 1, durable (barrier) before return, so
    /// the caller may write it and then point at it.
    pub fn allocate(&mut self, file: &File) -> io::Result<u64> {
        let cluster = self.take_cluster()?;
        self.set(file, cluster, 1, 0)?;
        barrier(file)?;
        Ok(cluster)
    }

    fn take_cluster(&mut self) -> io::Result<u64> {
        let cluster = self.next_free;
        self.next_free = cluster
            .checked_add(self.cluster_size())
            .filter(|end| *end <= MAX_HOST_END)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::StorageFull, "qcow2 host offsets exhausted")
            })?;
        Ok(cluster)
    }

    /// Set the refcount of host `cluster` to `value`, adding a refcount
    /// block (written before the table entry that points at it) when the
    /// cluster's block does not exist yet.
    fn set(&mut self, file: &File, cluster: u64, value: u64, depth: u32) -> io::Result<()> {
        let index = cluster >> self.cluster_bits;
        let block_index = index / self.per_block();
        let within = index % self.per_block();
        if block_index >= self.table.len() as u64 {
            self.grow_table(file, block_index)?;
        }
        let entry = self.table[block_index as usize];
        if entry & REFTABLE_RESERVED != 0
            || entry % self.cluster_size() != 0
            || entry + self.cluster_size() > self.next_free
        {
            return Err(corrupt(format!("refcount table entry {entry:#x}")));
        }
        let block = if entry == 0 {
            if depth >= MAX_NEW_BLOCKS {
                return Err(corrupt("refcount blocks do not cover themselves".into()));
            }
            self.add_block(file, block_index, depth)?
        } else {
            entry
        };
        self.write_refcount(file, block, within, value)
    }

    /// Move the refcount table to a larger copy at the end of the file
    /// that has a slot for `block_index`: the copy (with refcounts for its
    /// own clusters) is durable before the header points at it, and the
    /// old table's clusters are freed only after.
    fn grow_table(&mut self, file: &File, block_index: u64) -> io::Result<()> {
        let cs = self.cluster_size();
        let entries = (block_index + 1).max(self.table.len() as u64 * 2);
        let clusters = (entries * 8).div_ceil(cs);
        if clusters * cs > MAX_REFTABLE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "the refcount table would pass QEMU's 8 MiB limit; \
                 rewrite the image with qemu-img convert -O qcow2",
            ));
        }
        let (old_offset, old_clusters) = (self.table_offset, self.table_clusters());
        let new_offset = self.next_free;
        for _ in 0..clusters {
            self.take_cluster()?;
        }
        self.table.resize((clusters * cs / 8) as usize, 0);
        self.table_offset = new_offset;
        // Refcounts of the new table's clusters; a refcount block this
        // adds writes its slot into the new table, not yet live.
        for i in 0..clusters {
            self.set(file, new_offset + i * cs, 1, 0)?;
        }
        file.write_all_at(&to_bytes(&self.table), new_offset)?;
        // Rule: the new table is durable before the header points at it.
        barrier(file)?;
        let mut fields = [0u8; 12];
        fields[..8].copy_from_slice(&new_offset.to_be_bytes());
        fields[8..].copy_from_slice(&(clusters as u32).to_be_bytes());
        file.write_all_at(&fields, REFTABLE_HEADER_FIELDS)?;
        barrier(file)?;
        for i in 0..old_clusters {
            self.set(file, old_offset + i * cs, 0, 0)?;
        }
        log::info!(target: "virtio-blk", "qcow2: refcount table moved to {new_offset:#x} ({clusters} clusters)");
        Ok(())
    }

    /// The cluster-rounded end of the file: no cluster lies past it.
    pub fn end(&self) -> u64 {
        self.next_free
    }

    /// The refcount table's host range (offset, bytes).
    pub fn table_range(&self) -> (u64, u64) {
        (self.table_offset, self.table.len() as u64 * 8)
    }

    fn table_clusters(&self) -> u64 {
        (self.table.len() as u64 * 8) / self.cluster_size()
    }

    /// Append a zeroed refcount block for `block_index`, counting itself
    /// (in its own block or, past a boundary, in the next one).
    fn add_block(&mut self, file: &File, block_index: u64, depth: u32) -> io::Result<u64> {
        let block = self.take_cluster()?;
        let own_index = block >> self.cluster_bits;
        let covers_itself = own_index / self.per_block() == block_index;
        file.write_all_at(&vec![0u8; self.cluster_size() as usize], block)?;
        if covers_itself {
            self.write_refcount(file, block, own_index % self.per_block(), 1)?;
        }
        // The block before the table entry that makes it live.
        barrier(file)?;
        let slot = self.table_offset + block_index * 8;
        write_entry(file, block, slot)?;
        self.table[block_index as usize] = block;
        if !covers_itself {
            self.set(file, block, 1, depth + 1)?;
        }
        Ok(block)
    }

    /// Write entry `within` of the refcount block at `block`.
    fn write_refcount(&self, file: &File, block: u64, within: u64, value: u64) -> io::Result<()> {
        let bits = 1u64 << self.order;
        if bits < 64 && value >> bits != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "refcount overflow",
            ));
        }
        if bits >= 8 {
            let bytes = (bits / 8) as usize;
            let be = value.to_be_bytes();
            return file.write_all_at(&be[8 - bytes..], block + within * bits / 8);
        }
        // Sub-byte refcounts: entry i is bits (i % per_byte) * width up of
        // byte i / per_byte, least significant first.
        let per_byte = 8 / bits;
        let at = block + within / per_byte;
        let shift = (within % per_byte) * bits;
        let mask = ((1u64 << bits) - 1) << shift;
        let mut byte = [0u8];
        read_host(file, &mut byte, at)?;
        let updated = (u64::from(byte[0]) & !mask) | (value << shift);
        file.write_all_at(&[updated as u8], at)
    }
}
