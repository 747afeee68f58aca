//! The qcow2 header (QEMU's docs/interop/qcow2.txt, "Header"): every field
//! the image gives is checked here once, at open, so the I/O paths only
//! meet offsets and sizes that are aligned, inside the file and bounded.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// "QFI\xfb", the first four bytes of every qcow2 image.
pub const MAGIC: u32 = 0x5146_49fb;
/// Bytes of the version 2 header; version 3 adds up to `header_length`.
const V2_HEADER_LEN: u64 = 72;
/// Bytes of the version 3 header without optional fields.
const V3_HEADER_LEN: u64 = 104;
/// Smallest and largest cluster_bits (QEMU's MIN/MAX_CLUSTER_BITS).
pub const CLUSTER_BITS: std::ops::RangeInclusive<u32> = 9..=21;
/// Largest L1 table QEMU writes (QCOW_MAX_L1_SIZE): bounds our copy.
const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest refcount table QEMU writes (QCOW_MAX_REFTABLE_SIZE).
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Largest virtual size accepted: 2^61 bytes
/// keeps every byte offset and sector count in a u64).
const MAX_VIRTUAL_SIZE: u64 = 1 << 61;

/// Incompatible feature bits (header offset 72, version 3).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// The image was marked corrupt by QEMU.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Guest data lives in an external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Compressed clusters use a non-zlib compression type.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// L2 entries are 128 bits with subcluster bitmaps.
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
/// The bits this reader understands (dirty and corrupt only for reading).
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

/// Byte offset of `autoclear_features` in a version 3 header.
pub const AUTOCLEAR_OFFSET: u64 = 88;

/// Why a qcow2 image is refused at open; each names the offending value.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The header could not be read.
    #[error("cannot read the qcow2 header or tables: {0}")]
    Read(io::Error),
    /// image_type=qcow2 but the magic is missing.
    #[error("image_type=qcow2 but the file does not start with the qcow2 magic (found {0:#010x})")]
    NotQcow2(u32),
    /// Version other than 2 or 3.
    #[error("qcow2 version {0} is not supported (2 and 3 are)")]
    Version(u32),
    /// A backing file.
    #[error(
        "the image has a backing file, which is not supported; flatten it with \
         `qemu-img convert -O qcow2 <image> <new image>`"
    )]
    BackingFile,
    /// Encryption.
    #[error("the image is encrypted (crypt_method {0}), which is not supported")]
    Encrypted(u32),
    /// cluster_bits out of range.
    #[error("cluster_bits {0} is outside 9..=21")]
    ClusterBits(u32),
    /// External data file.
    #[error("the image keeps its data in an external data file, which is not supported")]
    ExternalDataFile,
    /// Extended L2 entries (subclusters).
    #[error("the image uses extended L2 entries (extended_l2=on), which are not supported")]
    ExtendedL2,
    /// Incompatible feature bits this reader does not know.
    #[error("unknown incompatible feature bits {0:#x}")]
    IncompatibleFeatures(u64),
    /// Dirty or corrupt image opened for writing.
    #[error(
        "the image is marked {0} (incompatible feature bits {1:#x}); repair it with \
         `qemu-img check -r all <image>` or use readonly=on"
    )]
    NeedsRepair(&'static str, u64),
    /// Internal snapshots opened for writing.
    #[error(
        "the image has {0} internal snapshots; writing would need copy-on-write of shared \
         clusters, which is not supported: use readonly=on or delete them with `qemu-img snapshot -d`"
    )]
    Snapshots(u32),
    /// A header field out of its bounds.
    #[error("header field {field} = {value:#x} is invalid: {why}")]
    Field {
        /// The field's name in the specification.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The rule it breaks.
        why: &'static str,
    },
}

/// The fields of a validated header.
#[derive(Clone, Debug)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// L1 entries.
    pub l1_size: u64,
    /// L1 table offset (cluster aligned).
    pub l1_table_offset: u64,
    /// Refcount table offset (cluster aligned).
    pub refcount_table_offset: u64,
    /// Refcount table length in clusters.
    pub refcount_table_clusters: u64,
    /// Internal snapshots.
    pub nb_snapshots: u32,
    /// Incompatible feature bits (0 on version 2).
    pub incompatible_features: u64,
    /// Autoclear feature bits (0 on version 2).
    pub autoclear_features: u64,
    /// log2 of the refcount width in bits (4 on version 2).
    pub refcount_order: u32,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(v)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

/// The first four bytes of `file` are the qcow2 magic.
pub fn has_magic(file: &File) -> bool {
    let mut magic = [0u8; 4];
    file.read_exact_at(&mut magic, 0).is_ok() && u32::from_be_bytes(magic) == MAGIC
}

fn field(field: &'static str, value: u64, why: &'static str) -> HeaderError {
    HeaderError::Field { field, value, why }
}

/// `[offset, offset + len)` lies inside a file of `file_len` bytes and
/// `offset` is a multiple of `align`.
fn check_region(
    name: &'static str,
    offset: u64,
    len: u64,
    align: u64,
    file_len: u64,
) -> Result<(), HeaderError> {
    if offset % align != 0 {
        return Err(field(name, offset, "not cluster aligned"));
    }
    match offset.checked_add(len) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(field(
            name,
            offset,
            "the table runs past the end of the file",
        )),
    }
}

impl Header {
    /// Read and validate the header of a `file_len`-byte image.
    pub fn read(file: &File, file_len: u64, writable: bool) -> Result<Self, HeaderError> {
        let mut b = [0u8; V3_HEADER_LEN as usize];
        if file_len < V2_HEADER_LEN {
            return Err(field("file size", file_len, "shorter than a qcow2 header"));
        }
        let n = file_len.min(V3_HEADER_LEN) as usize;
        file.read_exact_at(&mut b[..n], 0)
            .map_err(HeaderError::Read)?;
        let magic = be32(&b, 0);
        if magic != MAGIC {
            return Err(HeaderError::NotQcow2(magic));
        }
        let version = be32(&b, 4);
        if version != 2 && version != 3 {
            return Err(HeaderError::Version(version));
        }
        if be64(&b, 8) != 0 {
            return Err(HeaderError::BackingFile);
        }
        let cluster_bits = be32(&b, 20);
        if !CLUSTER_BITS.contains(&cluster_bits) {
            return Err(HeaderError::ClusterBits(cluster_bits));
        }
        let cluster_size = 1u64 << cluster_bits;
        let crypt_method = be32(&b, 32);
        if crypt_method != 0 {
            return Err(HeaderError::Encrypted(crypt_method));
        }
        let mut header = Header {
            version,
            cluster_bits,
            size: be64(&b, 24),
            l1_size: u64::from(be32(&b, 36)),
            l1_table_offset: be64(&b, 40),
            refcount_table_offset: be64(&b, 48),
            refcount_table_clusters: u64::from(be32(&b, 56)),
            nb_snapshots: be32(&b, 60),
            incompatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
        };
        if version == 3 {
            header.read_v3(&b, n as u64, cluster_size, writable)?;
        }
        header.check_tables(cluster_size, file_len)?;
        if writable && header.nb_snapshots != 0 {
            return Err(HeaderError::Snapshots(header.nb_snapshots));
        }
        Ok(header)
    }

    /// The version 3 fields: feature bits, refcount order, header length.
    fn read_v3(
        &mut self,
        b: &[u8],
        read: u64,
        cluster_size: u64,
        writable: bool,
    ) -> Result<(), HeaderError> {
        if read < V3_HEADER_LEN {
            return Err(field("file size", read, "shorter than a version 3 header"));
        }
        let incompat = be64(b, 72);
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(HeaderError::IncompatibleFeatures(
                incompat & !INCOMPAT_KNOWN,
            ));
        }
        if incompat & INCOMPAT_DATA_FILE != 0 {
            return Err(HeaderError::ExternalDataFile);
        }
        if incompat & INCOMPAT_EXTL2 != 0 {
            return Err(HeaderError::ExtendedL2);
        }
        if writable && incompat & INCOMPAT_CORRUPT != 0 {
            return Err(HeaderError::NeedsRepair("corrupt", incompat));
        }
        if writable && incompat & INCOMPAT_DIRTY != 0 {
            return Err(HeaderError::NeedsRepair("dirty", incompat));
        }
        self.incompatible_features = incompat;
        self.autoclear_features = be64(b, 88);
        self.refcount_order = be32(b, 96);
        if self.refcount_order > 6 {
            return Err(field(
                "refcount_order",
                u64::from(self.refcount_order),
                "above 6 (64-bit refcounts)",
            ));
        }
        let header_length = u64::from(be32(b, 100));
        if header_length < V3_HEADER_LEN || header_length > cluster_size {
            return Err(field(
                "header_length",
                header_length,
                "outside 104..=cluster size",
            ));
        }
        Ok(())
    }

    /// The L1 and refcount tables: bounded, aligned, inside the file, and
    /// the L1 table large enough for the virtual size.
    fn check_tables(&self, cluster_size: u64, file_len: u64) -> Result<(), HeaderError> {
        if self.size > MAX_VIRTUAL_SIZE {
            return Err(field("size", self.size, "above 2^61 bytes"));
        }
        let l2_span = cluster_size * (cluster_size / 8);
        let needed_l1 = self.size.div_ceil(l2_span);
        if self.l1_size < needed_l1 {
            return Err(field(
                "l1_size",
                self.l1_size,
                "too small for the virtual size",
            ));
        }
        let l1_bytes = self.l1_size * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(field(
                "l1_size",
                self.l1_size,
                "above QEMU's 32 MiB L1 limit",
            ));
        }
        if self.l1_size > 0 {
            check_region(
                "l1_table_offset",
                self.l1_table_offset,
                l1_bytes,
                cluster_size,
                file_len,
            )?;
        }
        let rt_bytes = self
            .refcount_table_clusters
            .checked_mul(cluster_size)
            .filter(|b| *b <= MAX_REFTABLE_BYTES)
            .ok_or_else(|| {
                field(
                    "refcount_table_clusters",
                    self.refcount_table_clusters,
                    "above QEMU's 8 MiB refcount table limit",
                )
            })?;
        if rt_bytes == 0 {
            return Err(field(
                "refcount_table_clusters",
                0,
                "the image has no refcount table",
            ));
        }
        check_region(
            "refcount_table_offset",
            self.refcount_table_offset,
            rt_bytes,
            cluster_size,
            file_len,
        )
    }
}
