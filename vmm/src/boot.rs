//! Booting Linux with ACPI and no firmware: the kernel Image and initramfs
//! go into RAM, and the top of RAM gets what the kernel's EFI stub would
//! have left there: the ACPI tables, a minimal EFI system table whose
//! configuration table points at the RSDP, an EFI memory map, and a stub
//! device tree whose /chosen carries bootargs, the initrd and the EFI
//! parameters (Documentation/arch/arm/uefi.rst). arm64 Linux then takes ACPI
//! because the device tree is a stub.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use arch::boot::{place_initrd, write_boot_handoff};
use arch::layout::{Layout, Range};
use devices::GuestMemory;
use vm_memory::{Bytes, GuestAddress};

use crate::acpi::AcpiTables;

/// The arm64 Image header: text_offset at 8, image_size at 16, magic at 56.
const IMAGE_HEADER_LEN: usize = 64;
const IMAGE_MAGIC: u32 = 0x644d_5241; // "ARM\x64"

/// Why the guest could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {reason}")]
    Read {
        /// kernel or initramfs.
        what: &'static str,
        /// Its path.
        path: String,
        /// The error.
        reason: String,
    },
    /// The kernel is not an arm64 Image.
    #[error("{0} is not an arm64 Linux Image (no 'ARM\\x64' magic at byte 56)")]
    NotAnImage(String),
    /// Something does not fit in RAM.
    #[error("{what} of {size:#x} bytes does not fit in guest RAM {ram}; give the VM more --memory")]
    NoRoom {
        /// What.
        what: &'static str,
        /// Its size.
        size: u64,
        /// RAM.
        ram: Range,
    },
    /// Writing guest memory or building a table failed.
    #[error("{0}")]
    Firmware(String),
}

/// Where the kernel was put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelPlacement {
    /// Entry point (the Image's first byte).
    pub entry: u64,
    /// First byte past the kernel's memory footprint (image_size, or the
    /// file size when the header gives none).
    pub end: u64,
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, BootError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| BootError::Read {
            what,
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    Ok(bytes)
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(src) = bytes.get(at..at + 8) {
        word.copy_from_slice(src);
    }
    u64::from_le_bytes(word)
}

/// Load an arm64 Image at the start of RAM plus its text_offset
/// (Documentation/arch/arm64/booting.rst: a 2 MiB aligned base; text_offset
/// 0x80000 when image_size is 0, as pre-3.17 kernels had).
pub fn load_kernel(
    mem: &GuestMemory,
    layout: &Layout,
    path: &Path,
) -> Result<KernelPlacement, BootError> {
    let image = read_file("kernel", path)?;
    let magic = image
        .get(56..60)
        .map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
    if image.len() < IMAGE_HEADER_LEN || magic != Some(IMAGE_MAGIC) {
        return Err(BootError::NotAnImage(path.display().to_string()));
    }
    let image_size = le64(&image, 16);
    let text_offset = if image_size == 0 {
        0x8_0000
    } else {
        le64(&image, 8)
    };
    let entry = layout.ram.base + text_offset;
    let footprint = image_size.max(image.len() as u64);
    let end = entry + footprint;
    if end > layout.firmware.base {
        return Err(BootError::NoRoom {
            what: "kernel",
            size: footprint,
            ram: layout.ram,
        });
    }
    mem.write_slice(&image, GuestAddress(entry))
        .map_err(|e| BootError::Firmware(format!("writing the kernel at {entry:#x}: {e}")))?;
    log::info!(target: "boot", "kernel {} at {entry:#x}..{end:#x}", path.display());
    Ok(KernelPlacement { entry, end })
}

/// Load the initramfs as high as possible below the firmware region
/// (arch::boot::place_initrd says where).
pub fn load_initramfs(
    mem: &GuestMemory,
    layout: &Layout,
    kernel: KernelPlacement,
    path: &Path,
) -> Result<Range, BootError> {
    let bytes = read_file("initramfs", path)?;
    let kernel_range = Range {
        base: kernel.entry,
        size: kernel.end - kernel.entry,
    };
    let range = place_initrd(layout, kernel_range, bytes.len() as u64)
        .map_err(|e| BootError::Firmware(e.to_string()))?;
    mem.write_slice(&bytes, GuestAddress(range.base))
        .map_err(|e| {
            BootError::Firmware(format!("writing the initramfs at {:#x}: {e}", range.base))
        })?;
    log::info!(target: "boot", "initramfs {} at {range}", path.display());
    Ok(range)
}

/// Write the ACPI tables, then the EFI hand-off and the stub device tree
/// (arch::boot::write_boot_handoff) into the firmware region; returns the
/// device tree's address (x0 at kernel entry).
pub fn write_firmware(
    mem: &GuestMemory,
    layout: &Layout,
    tables: &AcpiTables,
    cmdline: &str,
    initrd: Option<Range>,
) -> Result<u64, BootError> {
    for table in &tables.tables {
        mem.write_slice(&table.bytes, GuestAddress(table.addr))
            .map_err(|e| {
                BootError::Firmware(format!(
                    "writing {} at {:#x}: {e}",
                    table.signature, table.addr
                ))
            })?;
    }
    let handoff = write_boot_handoff(
        mem,
        layout,
        tables.rsdp_addr(),
        tables.span(),
        cmdline,
        initrd,
    )
    .map_err(|e| BootError::Firmware(e.to_string()))?;
    log::info!(
        target: "boot",
        "ACPI at {:#x}, EFI system table at {:#x}, device tree at {}",
        tables.rsdp_addr(),
        handoff.efi.system_table,
        handoff.dtb
    );
    Ok(handoff.dtb.base)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use arch::layout::Topology;
    use vm_memory::GuestMemoryBackend as _;

    use super::*;

    fn layout() -> Layout {
        Layout::new(Topology {
            vcpus: 1,
            ram_size: 64 << 20,
            pci_segments: 1,
            vsmmus: 0,
        })
        .unwrap()
    }

    fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("ch-boot-{}-{name}", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        path
    }

    fn image(text_offset: u64, image_size: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        bytes[8..16].copy_from_slice(&text_offset.to_le_bytes());
        bytes[16..24].copy_from_slice(&image_size.to_le_bytes());
        bytes[56..60].copy_from_slice(&IMAGE_MAGIC.to_le_bytes());
        bytes
    }

    #[test]
    fn kernel_lands_at_text_offset_and_its_footprint_counts_bss() {
        let layout = layout();
        let mem = crate::memory::create(&layout, crate::memory::Backing::default(), &[]).unwrap();
        let path = temp_file("Image", &image(0, 0x40_0000, 0x1000));
        let k = load_kernel(&mem, &layout, &path).unwrap();
        assert_eq!(k.entry, layout.ram.base);
        assert_eq!(
            k.end,
            layout.ram.base + 0x40_0000,
            "image_size, not file size"
        );
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(k.entry + 56)).unwrap(),
            IMAGE_MAGIC
        );
        let old = temp_file("OldImage", &image(0x1234, 0, 0x1000));
        assert_eq!(
            load_kernel(&mem, &layout, &old).unwrap().entry,
            layout.ram.base + 0x8_0000
        );
        std::fs::remove_file(path).unwrap();
        std::fs::remove_file(old).unwrap();
    }

    #[test]
    fn a_file_without_the_arm64_magic_is_refused() {
        let layout = layout();
        let mem = crate::memory::create(&layout, crate::memory::Backing::default(), &[]).unwrap();
        let path = temp_file("NotImage", &[0u8; 4096]);
        assert!(matches!(
            load_kernel(&mem, &layout, &path),
            Err(BootError::NotAnImage(_))
        ));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn firmware_region_gets_tables_efi_and_a_device_tree_after_them() {
        use crate::config::{VmConfig, VsmmuConfig};
        use crate::description::VmDescription;
        let config = VmConfig {
            vsmmu: VsmmuConfig::parse("cmdqv,backend=emulated").unwrap(),
            memory: crate::config::MemoryConfig {
                size: 64 << 20,
                ..Default::default()
            },
            ..VmConfig::default()
        };
        let host = crate::host_topology::HostTopology::emulated(&config, 4 << 10);
        let vm = VmDescription::new(config, &host, 16).unwrap();
        let mem =
            crate::memory::create(&vm.layout, crate::memory::Backing::default(), &[]).unwrap();
        let tables = AcpiTables::build(&vm);
        let fdt = write_firmware(&mem, &vm.layout, &tables, "console=ttyAMA0", None).unwrap();
        assert!(fdt >= tables.rsdp_addr() + tables.span() && fdt % 8 == 0);
        assert!(vm.layout.firmware.contains(fdt));
        let mut sig = [0u8; 8];
        mem.read_slice(&mut sig, GuestAddress(tables.rsdp_addr()))
            .unwrap();
        assert_eq!(&sig, b"RSD PTR ");
        // FDT magic, big endian.
        assert_eq!(mem.read_obj::<u32>(GuestAddress(fdt)).unwrap(), 0xedfe0dd0);
    }

    #[test]
    fn initramfs_sits_page_aligned_below_the_firmware_region_above_the_kernel() {
        let layout = layout();
        let mem = crate::memory::create(&layout, crate::memory::Backing::default(), &[]).unwrap();
        let kernel = KernelPlacement {
            entry: layout.ram.base,
            end: layout.ram.base + 0x10_0000,
        };
        let path = temp_file("initrd", &[0xa5u8; 0x1801]);
        let r = load_initramfs(&mem, &layout, kernel, &path).unwrap();
        assert_eq!(r.base % 0x1000, 0);
        assert!(r.end() <= layout.firmware.base && r.base >= kernel.end);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(r.end() - 1)).unwrap(), 0xa5);
        let huge = KernelPlacement {
            entry: layout.ram.base,
            end: layout.firmware.base - 0x1000,
        };
        let err = load_initramfs(&mem, &layout, huge, &path).unwrap_err();
        assert!(err.to_string().contains("initrd"), "{err}");
        std::fs::remove_file(path).unwrap();
        assert!(mem.last_addr().0 >= layout.firmware.end() - 1);
    }
}
