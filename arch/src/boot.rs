//! Where the boot payloads go, and the one call that writes the firmware
//! hand-off (EFI tables + stub DT) once kernel, initrd and ACPI are placed.
//!
//! The boot order the VMM follows:
//! 1. load the kernel Image at `RAM_START + text_offset` (the Image header's
//!    `text_offset`, 0 for every kernel since v5.8; booting.rst: "placed
//!    text_offset bytes from a 2MB aligned base address");
//! 2. [`place_initrd`] and write the initrd there;
//! 3. write the ACPI tables at the start of `layout.firmware`;
//! 4. [`write_boot_handoff`]: EFI system table + memory map after the ACPI
//!    tables, then the stub DT after those; boot the vCPU with x0 = the
//!    returned DTB address.
//!
//! Linux's constraints honoured here (Documentation/arch/arm64/booting.rst):
//! the DTB is 8-byte aligned and at most 2 MiB; the initrd lies "entirely
//! within a 1 GB aligned physical memory window of up to 32 GB in size that
//! fully covers the kernel Image as well".

use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::efi::{self, EfiError, EfiHandoff, NO_RUNTIME_CMDLINE};
use crate::fdt::{self, FdtError};
use crate::layout::{GIB, Layout, Range};

/// Initrd alignment: 64 KiB suits 4K, 16K and 64K page kernels alike.
pub const INITRD_ALIGN: u64 = 64 << 10;
/// The DTB must sit on an 8-byte boundary.
pub const DTB_ALIGN: u64 = 8;
/// The kernel and initrd must share one 1 GiB-aligned window of this size.
pub const KERNEL_INITRD_WINDOW: u64 = 32 * GIB;

/// Why a payload could not be placed or the hand-off written.
#[derive(Debug, PartialEq, Eq, Error)]
pub enum BootError {
    /// The kernel is not inside RAM below the firmware region.
    #[error("kernel {kernel} is not inside RAM below the firmware region {firmware}")]
    KernelOutsideRam {
        /// The kernel image.
        kernel: Range,
        /// The firmware region.
        firmware: Range,
    },
    /// No room for the initrd between the kernel and the firmware region.
    #[error("initrd of {size:#x} bytes does not fit between {low:#x} and {high:#x}")]
    InitrdDoesNotFit {
        /// Initrd size.
        size: u64,
        /// Lowest usable address (end of the kernel).
        low: u64,
        /// Highest usable end (firmware region or 32 GiB window).
        high: u64,
    },
    /// The DTB does not fit after the EFI tables.
    #[error("device tree of {size:#x} bytes does not fit in the firmware region after {after:#x}")]
    DtbDoesNotFit {
        /// DTB size.
        size: u64,
        /// Where the EFI tables end.
        after: u64,
    },
    /// Writing the EFI tables failed.
    #[error(transparent)]
    Efi(#[from] EfiError),
    /// Building the device tree failed.
    #[error(transparent)]
    Fdt(#[from] FdtError),
    /// Guest memory rejected the DTB.
    #[error("writing the device tree at {0:#x} failed")]
    GuestMemory(u64),
}

/// Everything the vCPU setup needs from the hand-off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootHandoff {
    /// Where the EFI tables went.
    pub efi: EfiHandoff,
    /// The stub DT: x0 = `dtb.base` at kernel entry.
    pub dtb: Range,
}

/// The highest [`INITRD_ALIGN`]ed place for an initrd of `initrd_size`
/// bytes above `kernel` and below the firmware region, inside the 32 GiB
/// window that holds the kernel.
pub fn place_initrd(layout: &Layout, kernel: Range, initrd_size: u64) -> Result<Range, BootError> {
    let firmware = layout.firmware;
    if kernel.base < layout.ram.base || kernel.end() > firmware.base {
        return Err(BootError::KernelOutsideRam { kernel, firmware });
    }
    let low = kernel.end().div_ceil(INITRD_ALIGN) * INITRD_ALIGN;
    let window_end = (kernel.base & !(GIB - 1)) + KERNEL_INITRD_WINDOW;
    let high = firmware.base.min(window_end);
    let does_not_fit = BootError::InitrdDoesNotFit {
        size: initrd_size,
        low,
        high,
    };
    if initrd_size == 0 {
        return Err(does_not_fit);
    }
    let base = match high.checked_sub(initrd_size) {
        Some(top) => top & !(INITRD_ALIGN - 1),
        None => return Err(does_not_fit),
    };
    if base < low {
        return Err(does_not_fit);
    }
    Ok(Range {
        base,
        size: initrd_size,
    })
}

/// `cmdline` with [`NO_RUNTIME_CMDLINE`] appended unless already there:
/// the hand-off has no runtime services.
pub fn guest_cmdline(cmdline: &str) -> String {
    if cmdline.split_whitespace().any(|w| w == NO_RUNTIME_CMDLINE) {
        cmdline.to_string()
    } else if cmdline.trim().is_empty() {
        NO_RUNTIME_CMDLINE.to_string()
    } else {
        format!("{} {NO_RUNTIME_CMDLINE}", cmdline.trim_end())
    }
}

/// Write the EFI tables after the first `acpi_span` bytes of the firmware
/// region (the ACPI tables, RSDP at `rsdp_addr`), then the stub DT with
/// `cmdline` (plus `efi=noruntime`) and `initrd`, and say where they are.
pub fn write_boot_handoff(
    mem: &GuestMemoryMmap<()>,
    layout: &Layout,
    rsdp_addr: u64,
    acpi_span: u64,
    cmdline: &str,
    initrd: Option<Range>,
) -> Result<BootHandoff, BootError> {
    let firmware = layout.firmware;
    let efi = efi::write_efi_handoff(mem, layout.ram, firmware, rsdp_addr, acpi_span)?;
    let blob = fdt::create_stub_fdt(&guest_cmdline(cmdline), initrd, &efi)?;
    let base = efi.end.div_ceil(DTB_ALIGN) * DTB_ALIGN;
    let size = blob.len() as u64;
    if base + size > firmware.end() {
        return Err(BootError::DtbDoesNotFit {
            size,
            after: efi.end,
        });
    }
    mem.write_slice(&blob, GuestAddress(base))
        .map_err(|_| BootError::GuestMemory(base))?;
    Ok(BootHandoff {
        efi,
        dtb: Range { base, size },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{FIRMWARE_REGION_SIZE, MIB, RAM_START, Topology};

    fn layout(ram_size: u64) -> Layout {
        Layout::new(Topology {
            vcpus: 1,
            ram_size,
            pci_segments: 1,
            vsmmus: 0,
        })
        .unwrap()
    }

    fn kernel() -> Range {
        Range {
            base: RAM_START,
            size: 30 * MIB + 123,
        }
    }

    #[test]
    fn initrd_goes_just_below_the_firmware_region_aligned() {
        let l = layout(GIB);
        let r = place_initrd(&l, kernel(), 5 * MIB + 7).unwrap();
        assert_eq!(r.base % INITRD_ALIGN, 0);
        assert!(r.end() <= l.firmware.base);
        assert!(l.firmware.base - r.end() < INITRD_ALIGN);
        assert!(r.base >= kernel().end());
    }

    #[test]
    fn initrd_stays_inside_the_32g_window_of_the_kernel() {
        let l = layout(64 * GIB);
        let r = place_initrd(&l, kernel(), 16 * MIB).unwrap();
        assert!(r.end() <= RAM_START + KERNEL_INITRD_WINDOW);
        assert!(r.base < l.firmware.base);
    }

    #[test]
    fn initrd_that_would_overlap_the_kernel_is_refused() {
        let l = layout(64 * MIB);
        let err = place_initrd(&l, kernel(), 40 * MIB).unwrap_err();
        assert!(matches!(err, BootError::InitrdDoesNotFit { size, .. } if size == 40 * MIB));
        assert!(place_initrd(&l, kernel(), 0).is_err());
        assert!(place_initrd(&l, kernel(), u64::MAX).is_err());
        let bad_kernel = Range {
            base: l.firmware.base - MIB,
            size: 2 * MIB,
        };
        assert!(matches!(
            place_initrd(&l, bad_kernel, MIB),
            Err(BootError::KernelOutsideRam { .. })
        ));
    }

    #[test]
    fn guest_cmdline_adds_efi_noruntime_once() {
        assert_eq!(
            guest_cmdline("console=ttyAMA0"),
            "console=ttyAMA0 efi=noruntime"
        );
        assert_eq!(guest_cmdline("efi=noruntime quiet"), "efi=noruntime quiet");
        assert_eq!(guest_cmdline("  "), "efi=noruntime");
    }

    #[test]
    fn handoff_puts_efi_then_dtb_after_the_acpi_tables_in_the_firmware_region() {
        let l = layout(GIB);
        let mem = GuestMemoryMmap::from_ranges(&[(
            GuestAddress(l.firmware.base),
            FIRMWARE_REGION_SIZE as usize,
        )])
        .unwrap();
        let acpi_span = 0x2345;
        let h = write_boot_handoff(
            &mem,
            &l,
            l.firmware.base,
            acpi_span,
            "console=ttyAMA0",
            None,
        )
        .unwrap();
        assert!(h.efi.system_table >= l.firmware.base + acpi_span);
        assert_eq!(h.dtb.base % DTB_ALIGN, 0);
        assert!(h.dtb.base >= h.efi.end);
        assert!(h.dtb.end() <= l.firmware.end());
        let mut magic = [0u8; 4];
        mem.read_slice(&mut magic, GuestAddress(h.dtb.base))
            .unwrap();
        assert_eq!(u32::from_be_bytes(magic), 0xd00d_feed);
    }

    #[test]
    fn handoff_reports_a_dtb_that_does_not_fit() {
        let l = layout(GIB);
        let mem = GuestMemoryMmap::from_ranges(&[(
            GuestAddress(l.firmware.base),
            FIRMWARE_REGION_SIZE as usize,
        )])
        .unwrap();
        // Leave just enough room for the EFI tables, none for the DTB.
        let acpi_span = FIRMWARE_REGION_SIZE - 0x140;
        assert!(matches!(
            write_boot_handoff(&mem, &l, l.firmware.base, acpi_span, "", None),
            Err(BootError::DtbDoesNotFit { .. })
        ));
    }
}
