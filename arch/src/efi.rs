//! The minimal EFI hand-off that Linux's arm64 EFI stub would otherwise make,
//! so that a kernel booted directly (no firmware image) finds ACPI.
//!
//! arm64 Linux only uses ACPI tables it finds through EFI: `efi_init()`
//! (drivers/firmware/efi/efi-init.c) reads the `linux,uefi-*` properties of
//! the device tree's `/chosen` node (see [`crate::fdt`]), maps the EFI memory
//! map and the EFI system table, and takes the RSDP from the configuration
//! table entry with the ACPI 2.0 GUID. `acpi_os_ioremap()` refuses to map
//! anything without an EFI memory map.
//!
//! Implemented, written into the firmware region after the ACPI tables,
//! 8-byte aligned:
//! - an EFI system table (64-bit layout of `efi_system_table_64_t`,
//!   include/linux/efi.h) with a proper header CRC32, a UTF-16 vendor string,
//!   and one configuration table entry: ACPI 2.0 GUID -> RSDP;
//! - an EFI memory map (`efi_memory_desc_t`, descriptor version 1).
//!
//! Deliberately not implemented: runtime services (the pointer is 0, so the
//! VMM must append [`NO_RUNTIME_CMDLINE`] to the guest command line, or Linux
//! would try to call through a NULL table), boot services (the stub's
//! `ExitBootServices()` has already "happened"), console handles, and
//! `EFI_MEMORY_RUNTIME` regions.
//!
//! What Linux does with each memory-map entry (efi-init.c `reserve_regions()`):
//! every descriptor whose attribute has WB, WT or WC (`is_memory()`) is added
//! to memblock; of those, types other than loader/boot-services code+data,
//! conventional, persistent and ACPI reclaim, or without WB, are marked
//! `nomap` (kept out of the linear map); ACPI reclaim is additionally
//! `memblock_reserve()`d, so it stays in the linear map but the allocator
//! never hands it out, and `acpi_os_ioremap()` reuses the linear mapping
//! for it. Anything not described is not RAM. So:
//! - RAM outside the firmware region: `EfiConventionalMemory` + WB, usable;
//! - the firmware region (ACPI tables, these EFI tables, the stub DT):
//!   `EfiACPIReclaimMemory` + WB, mapped cacheable but never allocated.
//!
//! One descriptor covers the whole firmware region because
//! `acpi_os_ioremap()` refuses a mapping that spans two descriptors.

use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::Range;

/// What the VMM must add to the guest command line when it uses this
/// hand-off: the system table has no runtime services.
pub const NO_RUNTIME_CMDLINE: &str = "efi=noruntime";

/// `EFI_SYSTEM_TABLE_SIGNATURE`, "IBI SYST" (UEFI 2.10 section 4.3.1).
pub const SYSTEM_TABLE_SIGNATURE: u64 = 0x5453_5953_2049_4249;
/// UEFI 2.70: major in the high half, minor (times 10) in the low half.
pub const SYSTEM_TABLE_REVISION: u32 = (2 << 16) | 70;
/// `sizeof(efi_system_table_64_t)`: header (24) + 12 eight-byte fields
/// (fw_revision is padded to 8).
pub const SYSTEM_TABLE_SIZE: usize = 120;
/// `sizeof(efi_config_table_64_t)`: GUID + 64-bit table pointer.
pub const CONFIG_TABLE_ENTRY_SIZE: usize = 24;
/// `sizeof(efi_memory_desc_t)` (include/linux/efi.h).
pub const MEMORY_DESCRIPTOR_SIZE: u32 = 40;
/// `EFI_MEMORY_DESCRIPTOR_VERSION`; efi_init() warns on anything else.
pub const MEMORY_DESCRIPTOR_VERSION: u32 = 1;
/// EFI pages are 4 KiB whatever the kernel's page size (`EFI_PAGE_SHIFT`).
pub const EFI_PAGE_SIZE: u64 = 1 << 12;

/// `EfiConventionalMemory`: free RAM.
pub const EFI_CONVENTIONAL_MEMORY: u32 = 7;
/// `EfiACPIReclaimMemory`: ACPI tables the OS may reclaim after reading.
pub const EFI_ACPI_RECLAIM_MEMORY: u32 = 9;
/// `EFI_MEMORY_WB`: write-back cacheable.
pub const EFI_MEMORY_WB: u64 = 0x8;

/// `LINUX_EFI_MEMRESERVE_TABLE_GUID` 888eb0c6-8ede-4ff5-a8f0-9aee5cb977c2
/// (include/linux/efi.h) in EFI byte order. The kernel's GICv3 ITS driver
/// records its LPI tables through this table (`efi_mem_reserve_persistent`)
/// and WARNs at boot when it is missing.
pub const LINUX_EFI_MEMRESERVE_TABLE_GUID: [u8; 16] = [
    0xc6, 0xb0, 0x8e, 0x88, 0xde, 0x8e, 0xf5, 0x4f, 0xa8, 0xf0, 0x9a, 0xee, 0x5c, 0xb9, 0x77, 0xc2,
];
/// An empty `struct linux_efi_memreserve` root: size 0, count 0, next 0
/// (the kernel links the blocks it allocates behind it).
const MEMRESERVE_ROOT_SIZE: usize = 16;
/// Configuration table entries we hand over: ACPI 2.0 and the memreserve root.
const NR_CONFIG_TABLES: usize = 2;

/// `ACPI_20_TABLE_GUID` 8868e871-e4f1-11d3-bc22-0080c73c8881 in EFI byte
/// order: the first three groups little-endian, the last two as written.
pub const ACPI_20_TABLE_GUID: [u8; 16] = [
    0x71, 0xe8, 0x68, 0x88, 0xf1, 0xe4, 0xd3, 0x11, 0xbc, 0x22, 0x00, 0x80, 0xc7, 0x3c, 0x88, 0x81,
];

/// The firmware vendor string Linux prints ("EFI v2.7 by cloud-hypervisor").
pub const FIRMWARE_VENDOR: &str = "cloud-hypervisor";
/// `fw_revision` of the system table.
pub const FIRMWARE_REVISION: u32 = 1;

/// Offsets inside `efi_system_table_64_t` (include/linux/efi.h).
mod systab {
    pub const SIGNATURE: usize = 0;
    pub const REVISION: usize = 8;
    pub const HEADER_SIZE: usize = 12;
    pub const CRC32: usize = 16;
    pub const FW_VENDOR: usize = 24;
    pub const FW_REVISION: usize = 32;
    pub const RUNTIME: usize = 88;
    pub const BOOTTIME: usize = 96;
    pub const NR_TABLES: usize = 104;
    pub const TABLES: usize = 112;
}

/// Everything placed in the firmware region is 8-byte aligned.
const ALIGN: u64 = 8;

/// Where the hand-off landed: exactly what the stub DT's `/chosen` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EfiHandoff {
    /// Guest physical address of the EFI system table.
    pub system_table: u64,
    /// Guest physical address of the first memory descriptor.
    pub mmap_start: u64,
    /// Size of the memory map in bytes.
    pub mmap_size: u32,
    /// Size of one descriptor.
    pub desc_size: u32,
    /// Descriptor version.
    pub desc_ver: u32,
    /// First byte after everything written (for placing the DTB).
    pub end: u64,
}

/// Why the hand-off could not be written.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EfiError {
    /// The firmware region is not inside RAM.
    #[error("firmware region {firmware} is not inside RAM {ram}")]
    RegionOutsideRam {
        /// The firmware region.
        firmware: Range,
        /// Guest RAM.
        ram: Range,
    },
    /// A range is not aligned to EFI's 4 KiB pages.
    #[error("{what} {range} is not aligned to 4 KiB EFI pages")]
    Unaligned {
        /// Which range.
        what: &'static str,
        /// The range.
        range: Range,
    },
    /// The ACPI tables plus the EFI structures do not fit.
    #[error(
        "firmware region of {region_size:#x} bytes is too small: ACPI uses {used_prefix:#x} and the EFI tables need {needed:#x} more"
    )]
    RegionTooSmall {
        /// Size of the firmware region.
        region_size: u64,
        /// Bytes the ACPI tables already use.
        used_prefix: u64,
        /// Bytes the EFI structures need (with alignment).
        needed: u64,
    },
    /// Guest memory rejected a write.
    #[error("writing {what} at {addr:#x} to guest memory failed")]
    GuestMemory {
        /// What was being written.
        what: &'static str,
        /// Where.
        addr: u64,
    },
}

/// One `efi_memory_desc_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryDescriptor {
    /// EFI memory type.
    pub kind: u32,
    /// First byte.
    pub phys_addr: u64,
    /// Number of 4 KiB pages.
    pub num_pages: u64,
    /// Attribute bits.
    pub attribute: u64,
}

impl MemoryDescriptor {
    /// The 40 bytes Linux reads: type, pad, phys, virt (0), pages, attribute.
    pub fn to_bytes(self) -> [u8; MEMORY_DESCRIPTOR_SIZE as usize] {
        let mut out = [0u8; MEMORY_DESCRIPTOR_SIZE as usize];
        out[0..4].copy_from_slice(&self.kind.to_le_bytes());
        out[8..16].copy_from_slice(&self.phys_addr.to_le_bytes());
        out[24..32].copy_from_slice(&self.num_pages.to_le_bytes());
        out[32..40].copy_from_slice(&self.attribute.to_le_bytes());
        out
    }
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as EFI table
/// headers use (UEFI 2.10 section 4.2).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let lsb = crc & 1;
            crc >>= 1;
            if lsb != 0 {
                crc ^= 0xEDB8_8320;
            }
        }
    }
    !crc
}

fn align_up(addr: u64) -> u64 {
    addr.div_ceil(ALIGN) * ALIGN
}

fn page_aligned(range: Range) -> bool {
    range.base % EFI_PAGE_SIZE == 0 && range.size % EFI_PAGE_SIZE == 0
}

/// The memory map for `ram` with `firmware` carved out as ACPI reclaim:
/// conventional below, ACPI reclaim, conventional above (when not empty).
pub fn memory_map(ram: Range, firmware: Range) -> Vec<MemoryDescriptor> {
    let conventional = |base: u64, end: u64| MemoryDescriptor {
        kind: EFI_CONVENTIONAL_MEMORY,
        phys_addr: base,
        num_pages: (end - base) / EFI_PAGE_SIZE,
        attribute: EFI_MEMORY_WB,
    };
    let mut map = Vec::with_capacity(3);
    if firmware.base > ram.base {
        map.push(conventional(ram.base, firmware.base));
    }
    map.push(MemoryDescriptor {
        kind: EFI_ACPI_RECLAIM_MEMORY,
        phys_addr: firmware.base,
        num_pages: firmware.size / EFI_PAGE_SIZE,
        attribute: EFI_MEMORY_WB,
    });
    if ram.end() > firmware.end() {
        map.push(conventional(firmware.end(), ram.end()));
    }
    map
}

fn vendor_utf16() -> Vec<u8> {
    FIRMWARE_VENDOR
        .encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn system_table(vendor: u64, tables: u64, nr_tables: u64) -> [u8; SYSTEM_TABLE_SIZE] {
    let mut t = [0u8; SYSTEM_TABLE_SIZE];
    let put = |t: &mut [u8; SYSTEM_TABLE_SIZE], at: usize, bytes: &[u8]| {
        t[at..at + bytes.len()].copy_from_slice(bytes);
    };
    put(
        &mut t,
        systab::SIGNATURE,
        &SYSTEM_TABLE_SIGNATURE.to_le_bytes(),
    );
    put(
        &mut t,
        systab::REVISION,
        &SYSTEM_TABLE_REVISION.to_le_bytes(),
    );
    put(
        &mut t,
        systab::HEADER_SIZE,
        &(SYSTEM_TABLE_SIZE as u32).to_le_bytes(),
    );
    put(&mut t, systab::FW_VENDOR, &vendor.to_le_bytes());
    put(
        &mut t,
        systab::FW_REVISION,
        &FIRMWARE_REVISION.to_le_bytes(),
    );
    // Console handles, runtime and boot services stay 0 (see module doc).
    put(&mut t, systab::RUNTIME, &0u64.to_le_bytes());
    put(&mut t, systab::BOOTTIME, &0u64.to_le_bytes());
    put(&mut t, systab::NR_TABLES, &nr_tables.to_le_bytes());
    put(&mut t, systab::TABLES, &tables.to_le_bytes());
    // The CRC covers HeaderSize bytes with the CRC field itself zero.
    let crc = crc32(&t);
    put(&mut t, systab::CRC32, &crc.to_le_bytes());
    t
}

fn write(
    mem: &GuestMemoryMmap<()>,
    what: &'static str,
    addr: u64,
    bytes: &[u8],
) -> Result<(), EfiError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|_| EfiError::GuestMemory { what, addr })
}

/// Write the system table, its configuration table, the vendor string and
/// the memory map into `firmware` after its first `used_prefix` bytes (the
/// ACPI tables), and say where they are.
pub fn write_efi_handoff(
    mem: &GuestMemoryMmap<()>,
    ram: Range,
    firmware: Range,
    rsdp_addr: u64,
    used_prefix: u64,
) -> Result<EfiHandoff, EfiError> {
    if firmware.base < ram.base || firmware.end() > ram.end() || firmware.size == 0 {
        return Err(EfiError::RegionOutsideRam { firmware, ram });
    }
    for (what, range) in [("RAM", ram), ("firmware region", firmware)] {
        if !page_aligned(range) {
            return Err(EfiError::Unaligned { what, range });
        }
    }

    let map = memory_map(ram, firmware);
    let vendor = vendor_utf16();
    if used_prefix > firmware.size {
        return Err(EfiError::RegionTooSmall {
            region_size: firmware.size,
            used_prefix,
            needed: (SYSTEM_TABLE_SIZE
                + NR_CONFIG_TABLES * CONFIG_TABLE_ENTRY_SIZE
                + MEMRESERVE_ROOT_SIZE
                + vendor.len()) as u64
                + map.len() as u64 * u64::from(MEMORY_DESCRIPTOR_SIZE),
        });
    }
    let start = align_up(firmware.base + used_prefix);
    let system_table_addr = start;
    let config_addr = system_table_addr + SYSTEM_TABLE_SIZE as u64;
    let memreserve_addr = config_addr + (NR_CONFIG_TABLES * CONFIG_TABLE_ENTRY_SIZE) as u64;
    let vendor_addr = memreserve_addr + MEMRESERVE_ROOT_SIZE as u64;
    let mmap_start = align_up(vendor_addr + vendor.len() as u64);
    let mmap_size = map.len() as u32 * MEMORY_DESCRIPTOR_SIZE;
    let end = mmap_start + u64::from(mmap_size);
    if end > firmware.end() {
        return Err(EfiError::RegionTooSmall {
            region_size: firmware.size,
            used_prefix,
            needed: end - (firmware.base + used_prefix),
        });
    }

    let mut config = [0u8; NR_CONFIG_TABLES * CONFIG_TABLE_ENTRY_SIZE];
    config[..16].copy_from_slice(&ACPI_20_TABLE_GUID);
    config[16..24].copy_from_slice(&rsdp_addr.to_le_bytes());
    config[24..40].copy_from_slice(&LINUX_EFI_MEMRESERVE_TABLE_GUID);
    config[40..48].copy_from_slice(&memreserve_addr.to_le_bytes());
    let mmap: Vec<u8> = map.iter().flat_map(|d| d.to_bytes()).collect();

    write(
        mem,
        "EFI system table",
        system_table_addr,
        &system_table(vendor_addr, config_addr, NR_CONFIG_TABLES as u64),
    )?;
    write(mem, "EFI configuration table", config_addr, &config)?;
    write(
        mem,
        "Linux memreserve root",
        memreserve_addr,
        &[0u8; MEMRESERVE_ROOT_SIZE],
    )?;
    write(mem, "EFI firmware vendor", vendor_addr, &vendor)?;
    write(mem, "EFI memory map", mmap_start, &mmap)?;
    Ok(EfiHandoff {
        system_table: system_table_addr,
        mmap_start,
        mmap_size,
        desc_size: MEMORY_DESCRIPTOR_SIZE,
        desc_ver: MEMORY_DESCRIPTOR_VERSION,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{FIRMWARE_REGION_SIZE, Layout, MIB, Topology};

    fn layout(ram_size: u64) -> Layout {
        Layout::new(Topology {
            vcpus: 1,
            ram_size,
            pci_segments: 1,
            vsmmus: 0,
        })
        .unwrap()
    }

    fn guest(layout: &Layout) -> GuestMemoryMmap<()> {
        // Only the firmware region is backed: the hand-off writes nowhere else.
        GuestMemoryMmap::from_ranges(&[(
            GuestAddress(layout.firmware.base),
            layout.firmware.size as usize,
        )])
        .unwrap()
    }

    fn read(mem: &GuestMemoryMmap<()>, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn crc32_matches_the_ieee_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn acpi_guid_is_in_efi_mixed_endian_order() {
        // efi_guid_t bytes as EFI_GUID(0x8868e871, 0xe4f1, 0x11d3, 0xbc, 0x22, ...) lays them.
        let a = 0x8868_e871u32.to_le_bytes();
        let b = 0xe4f1u16.to_le_bytes();
        let c = 0x11d3u16.to_le_bytes();
        let mut expected = Vec::new();
        expected.extend_from_slice(&a);
        expected.extend_from_slice(&b);
        expected.extend_from_slice(&c);
        expected.extend_from_slice(&[0xbc, 0x22, 0x00, 0x80, 0xc7, 0x3c, 0x88, 0x81]);
        assert_eq!(ACPI_20_TABLE_GUID.to_vec(), expected);
    }

    #[test]
    fn system_table_fields_sit_at_the_efi_system_table_64_offsets() {
        let l = layout(GIB_1);
        let mem = guest(&l);
        let rsdp = l.firmware.base;
        let h = write_efi_handoff(&mem, l.ram, l.firmware, rsdp, 0x1234).unwrap();
        assert_eq!(h.system_table, align_up(l.firmware.base + 0x1234));
        let t = read(&mem, h.system_table, SYSTEM_TABLE_SIZE);
        assert_eq!(u64_at(&t, 0), 0x5453_5953_2049_4249);
        assert_eq!(&t[0..8], b"IBI SYST");
        assert_eq!(u32_at(&t, 8), 0x0002_0046);
        assert_eq!(u32_at(&t, 12), 120);
        assert_eq!(u32_at(&t, 20), 0, "reserved");
        let vendor = u64_at(&t, 24);
        assert_eq!(u32_at(&t, 32), FIRMWARE_REVISION);
        for console_or_services in (40..=96).step_by(8) {
            assert_eq!(
                u64_at(&t, console_or_services),
                0,
                "offset {console_or_services}"
            );
        }
        assert_eq!(u64_at(&t, 104), 2, "nr_tables");
        let tables = u64_at(&t, 112);

        let entry = read(&mem, tables, CONFIG_TABLE_ENTRY_SIZE);
        assert_eq!(&entry[..16], &ACPI_20_TABLE_GUID);
        assert_eq!(u64_at(&entry, 16), rsdp);
        let entry = read(&mem, tables + 24, CONFIG_TABLE_ENTRY_SIZE);
        assert_eq!(&entry[..16], &LINUX_EFI_MEMRESERVE_TABLE_GUID);
        let root = read(&mem, u64_at(&entry, 16), MEMRESERVE_ROOT_SIZE);
        assert_eq!(
            root, [0u8; MEMRESERVE_ROOT_SIZE],
            "an empty memreserve root"
        );

        let name = read(&mem, vendor, 2 * (FIRMWARE_VENDOR.len() + 1));
        let units: Vec<u16> = name
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(units.last(), Some(&0));
        assert_eq!(
            String::from_utf16(&units[..units.len() - 1]).unwrap(),
            FIRMWARE_VENDOR
        );
    }

    #[test]
    fn header_crc_covers_the_table_with_the_crc_field_zeroed() {
        let l = layout(GIB_1);
        let mem = guest(&l);
        let h = write_efi_handoff(&mem, l.ram, l.firmware, l.firmware.base, 64).unwrap();
        let mut t = read(&mem, h.system_table, SYSTEM_TABLE_SIZE);
        let stored = u32_at(&t, 16);
        t[16..20].fill(0);
        assert_eq!(stored, crc32(&t));
        assert_ne!(stored, 0);
    }

    #[test]
    fn memory_map_marks_ram_conventional_and_the_firmware_region_acpi_reclaim() {
        let l = layout(GIB_1);
        let mem = guest(&l);
        let h = write_efi_handoff(&mem, l.ram, l.firmware, l.firmware.base, 0x800).unwrap();
        assert_eq!(h.desc_size, 40);
        assert_eq!(h.desc_ver, 1);
        assert_eq!(h.mmap_start % 8, 0);
        assert_eq!(h.mmap_size, 2 * 40);
        assert_eq!(h.end, h.mmap_start + 80);
        assert!(h.end <= l.firmware.end());
        let m = read(&mem, h.mmap_start, h.mmap_size as usize);
        // Conventional RAM up to the firmware region.
        assert_eq!(u32_at(&m, 0), EFI_CONVENTIONAL_MEMORY);
        assert_eq!(u32_at(&m, 4), 0, "pad");
        assert_eq!(u64_at(&m, 8), l.ram.base);
        assert_eq!(u64_at(&m, 16), 0, "virt_addr");
        assert_eq!(u64_at(&m, 24), (GIB_1 - FIRMWARE_REGION_SIZE) / 4096);
        assert_eq!(u64_at(&m, 32), EFI_MEMORY_WB);
        // The firmware region, ACPI reclaim, cacheable.
        assert_eq!(u32_at(&m, 40), EFI_ACPI_RECLAIM_MEMORY);
        assert_eq!(u64_at(&m, 48), l.firmware.base);
        assert_eq!(u64_at(&m, 64), FIRMWARE_REGION_SIZE / 4096);
        assert_eq!(u64_at(&m, 72), EFI_MEMORY_WB);
    }

    #[test]
    fn memory_map_describes_ram_above_a_firmware_region_that_is_not_on_top() {
        let ram = Range {
            base: 0x4000_0000,
            size: 16 * MIB,
        };
        let firmware = Range {
            base: 0x4000_0000 + 4 * MIB,
            size: 2 * MIB,
        };
        let map = memory_map(ram, firmware);
        assert_eq!(map.len(), 3);
        let pages: u64 = map.iter().map(|d| d.num_pages).sum();
        assert_eq!(pages * EFI_PAGE_SIZE, ram.size);
        assert_eq!(map[2].phys_addr, firmware.end());
        assert_eq!(map[2].kind, EFI_CONVENTIONAL_MEMORY);
    }

    #[test]
    fn too_small_region_is_refused_with_the_sizes() {
        let l = layout(GIB_1);
        let mem = guest(&l);
        let err = write_efi_handoff(
            &mem,
            l.ram,
            l.firmware,
            l.firmware.base,
            FIRMWARE_REGION_SIZE - 100,
        )
        .unwrap_err();
        match err {
            EfiError::RegionTooSmall {
                region_size,
                used_prefix,
                needed,
            } => {
                assert_eq!(region_size, FIRMWARE_REGION_SIZE);
                assert_eq!(used_prefix, FIRMWARE_REGION_SIZE - 100);
                assert!(needed > 100);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            write_efi_handoff(&mem, l.ram, l.firmware, 0, FIRMWARE_REGION_SIZE + 8),
            Err(EfiError::RegionTooSmall { .. })
        ));
    }

    #[test]
    fn region_outside_ram_or_unaligned_is_refused() {
        let l = layout(GIB_1);
        let mem = guest(&l);
        let outside = Range {
            base: l.ram.end(),
            size: FIRMWARE_REGION_SIZE,
        };
        assert!(matches!(
            write_efi_handoff(&mem, l.ram, outside, 0, 0),
            Err(EfiError::RegionOutsideRam { .. })
        ));
        let unaligned = Range {
            base: l.firmware.base + 8,
            size: FIRMWARE_REGION_SIZE - 8,
        };
        assert_eq!(
            write_efi_handoff(&mem, l.ram, unaligned, 0, 0),
            Err(EfiError::Unaligned {
                what: "firmware region",
                range: unaligned
            })
        );
    }

    #[test]
    fn unbacked_guest_memory_is_an_error_not_a_panic() {
        let l = layout(GIB_1);
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(l.ram.base), 4096)]).unwrap();
        assert!(matches!(
            write_efi_handoff(&mem, l.ram, l.firmware, 0, 0),
            Err(EfiError::GuestMemory {
                what: "EFI system table",
                ..
            })
        ));
    }

    const GIB_1: u64 = crate::layout::GIB;
}
