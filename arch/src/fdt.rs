//! The stub device tree that tells arm64 Linux "use ACPI, found through EFI".
//!
//! arm64 Linux picks ACPI over DT by itself when the DT is a stub:
//! `dt_is_stub()` (arch/arm64/kernel/acpi.c) accepts a tree whose only
//! children of the root are `/chosen` (and a Xen `/hypervisor`). The tree
//! written here has exactly one child, `/chosen`, holding:
//! - `bootargs`: the command line (NUL-terminated string);
//! - `linux,initrd-start` / `linux,initrd-end` (u64 each, end exclusive),
//!   read by `early_init_dt_check_for_initrd()`, when an initrd is given;
//! - the EFI parameters drivers/firmware/efi/fdtparams.c reads, with the
//!   sizes the EFI stub writes (drivers/firmware/efi/libstub/fdt.c):
//!   `linux,uefi-system-table` u64, `linux,uefi-mmap-start` u64,
//!   `linux,uefi-mmap-size` u32, `linux,uefi-mmap-desc-size` u32,
//!   `linux,uefi-mmap-desc-ver` u32, and (since Linux 5.x)
//!   `linux,uefi-secure-boot` u32. fdtparams.c needs all six: one missing
//!   and it logs "Can't find property ... in DT!" and boots without EFI,
//!   so without memory and without ACPI (a 6.12 guest then panics in
//!   paging_init, "Failed to allocate page table page"). It reads a 4-byte
//!   property as a u32 and anything else as a u64.
//!
//! The root has `#address-cells = <2>` and `#size-cells = <2>`. There is no
//! `/memory` node: with EFI, `reserve_regions()` discards DT memory and uses
//! the EFI memory map. Deliberately not written: `compatible`/`model`
//! (Linux prints no machine model, which is harmless), `kaslr-seed`, and a
//! memory reservation block (the whole firmware region, DTB included, is
//! EFI ACPI-reclaim memory, which Linux reserves).

use thiserror::Error;

use crate::efi::EfiHandoff;
use crate::layout::Range;

/// arm64 `COMMAND_LINE_SIZE` (arch/arm64/include/uapi/asm/setup.h),
/// including the NUL.
pub const COMMAND_LINE_SIZE: usize = 2048;
/// booting.rst: the DTB "must not exceed 2 megabytes in size".
pub const MAX_DTB_SIZE: usize = 2 << 20;

/// `/chosen` property names, as Linux reads them.
pub mod prop {
    /// Kernel command line.
    pub const BOOTARGS: &str = "bootargs";
    /// First byte of the initrd.
    pub const INITRD_START: &str = "linux,initrd-start";
    /// First byte after the initrd.
    pub const INITRD_END: &str = "linux,initrd-end";
    /// EFI system table address (u64).
    pub const UEFI_SYSTEM_TABLE: &str = "linux,uefi-system-table";
    /// EFI memory map address (u64).
    pub const UEFI_MMAP_START: &str = "linux,uefi-mmap-start";
    /// EFI memory map size in bytes (u32).
    pub const UEFI_MMAP_SIZE: &str = "linux,uefi-mmap-size";
    /// EFI memory descriptor size (u32).
    pub const UEFI_MMAP_DESC_SIZE: &str = "linux,uefi-mmap-desc-size";
    /// EFI memory descriptor version (u32).
    pub const UEFI_MMAP_DESC_VER: &str = "linux,uefi-mmap-desc-ver";
    /// Secure boot mode (u32, `enum efi_secureboot_mode`).
    pub const UEFI_SECURE_BOOT: &str = "linux,uefi-secure-boot";
}

/// `efi_secureboot_mode_disabled` (include/linux/efi.h: unset, unknown,
/// disabled, enabled): there is no firmware to have verified anything.
const SECURE_BOOT_DISABLED: u32 = 2;

/// Why the stub device tree could not be built.
#[derive(Debug, PartialEq, Eq, Error)]
pub enum FdtError {
    /// The command line does not fit the kernel's buffer.
    #[error("command line of {len} bytes exceeds arm64's {max}-byte COMMAND_LINE_SIZE")]
    CmdlineTooLong {
        /// Its length in bytes.
        len: usize,
        /// The most that fits, without the NUL.
        max: usize,
    },
    /// The command line holds a NUL byte.
    #[error("command line contains a NUL byte at {0}")]
    CmdlineNul(usize),
    /// The initrd range is empty or wraps.
    #[error("initrd range {0} is empty or wraps around")]
    BadInitrd(Range),
    /// The writer refused (a bug in this module, reported not unwrapped).
    #[error("device tree writer: {0}")]
    Writer(#[from] vm_fdt::Error),
    /// The finished blob is larger than Linux accepts.
    #[error("device tree of {0} bytes exceeds 2 MiB")]
    TooLarge(usize),
}

/// Build the stub device tree blob.
pub fn create_stub_fdt(
    cmdline: &str,
    initrd: Option<Range>,
    efi: &EfiHandoff,
) -> Result<Vec<u8>, FdtError> {
    if cmdline.len() >= COMMAND_LINE_SIZE {
        return Err(FdtError::CmdlineTooLong {
            len: cmdline.len(),
            max: COMMAND_LINE_SIZE - 1,
        });
    }
    if let Some(at) = cmdline.bytes().position(|b| b == 0) {
        return Err(FdtError::CmdlineNul(at));
    }
    if let Some(range) = initrd {
        if range.size == 0 || range.base.checked_add(range.size).is_none() {
            return Err(FdtError::BadInitrd(range));
        }
    }

    let mut fdt = vm_fdt::FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;

    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string(prop::BOOTARGS, cmdline)?;
    if let Some(range) = initrd {
        fdt.property_u64(prop::INITRD_START, range.base)?;
        fdt.property_u64(prop::INITRD_END, range.end())?;
    }
    fdt.property_u64(prop::UEFI_SYSTEM_TABLE, efi.system_table)?;
    fdt.property_u64(prop::UEFI_MMAP_START, efi.mmap_start)?;
    fdt.property_u32(prop::UEFI_MMAP_SIZE, efi.mmap_size)?;
    fdt.property_u32(prop::UEFI_MMAP_DESC_SIZE, efi.desc_size)?;
    fdt.property_u32(prop::UEFI_MMAP_DESC_VER, efi.desc_ver)?;
    fdt.property_u32(prop::UEFI_SECURE_BOOT, SECURE_BOOT_DISABLED)?;
    fdt.end_node(chosen)?;

    fdt.end_node(root)?;
    let blob = fdt.finish()?;
    if blob.len() > MAX_DTB_SIZE {
        return Err(FdtError::TooLarge(blob.len()));
    }
    Ok(blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node of a parsed blob.
    #[derive(Debug, Default)]
    struct Node {
        name: String,
        props: Vec<(String, Vec<u8>)>,
        children: Vec<Node>,
    }

    impl Node {
        fn prop(&self, name: &str) -> &[u8] {
            &self
                .props
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no property {name}"))
                .1
        }
    }

    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn cstr(b: &[u8], at: usize) -> String {
        let end = at + b[at..].iter().position(|&c| c == 0).unwrap();
        String::from_utf8(b[at..end].to_vec()).unwrap()
    }

    /// A minimal reader of the flattened device tree format (devicetree
    /// spec v0.4 chapter 5), enough to check what Linux's libfdt will see.
    fn parse(blob: &[u8]) -> Node {
        assert_eq!(be32(blob, 0), 0xd00d_feed, "magic");
        assert_eq!(be32(blob, 4) as usize, blob.len(), "totalsize");
        let structs = be32(blob, 8) as usize;
        let strings = be32(blob, 12) as usize;
        assert_eq!(be32(blob, 20), 17, "version");
        assert_eq!(be32(blob, 24), 16, "last compatible version");
        let mut stack: Vec<Node> = Vec::new();
        let mut root = None;
        let mut at = structs;
        loop {
            let token = be32(blob, at);
            at += 4;
            match token {
                1 => {
                    let name = cstr(blob, at);
                    at += (name.len() + 1).div_ceil(4) * 4;
                    stack.push(Node {
                        name,
                        ..Node::default()
                    });
                }
                2 => {
                    let node = stack.pop().unwrap();
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => root = Some(node),
                    }
                }
                3 => {
                    let len = be32(blob, at) as usize;
                    let name = cstr(blob, strings + be32(blob, at + 4) as usize);
                    let value = blob[at + 8..at + 8 + len].to_vec();
                    at += 8 + len.div_ceil(4) * 4;
                    stack.last_mut().unwrap().props.push((name, value));
                }
                4 => {}
                9 => break,
                other => panic!("bad token {other}"),
            }
        }
        assert!(stack.is_empty());
        root.unwrap()
    }

    fn handoff() -> EfiHandoff {
        EfiHandoff {
            system_table: 0x7fe0_1008,
            mmap_start: 0x7fe0_10c0,
            mmap_size: 80,
            desc_size: 40,
            desc_ver: 1,
            end: 0x7fe0_1110,
        }
    }

    #[test]
    fn root_has_only_chosen_so_linux_sees_a_stub() {
        let blob = create_stub_fdt("console=ttyAMA0", None, &handoff()).unwrap();
        let root = parse(&blob);
        assert_eq!(root.name, "");
        assert_eq!(root.children.len(), 1);
        assert_eq!(root.children[0].name, "chosen");
        assert!(root.children[0].children.is_empty());
        assert_eq!(root.prop("#address-cells"), &2u32.to_be_bytes());
        assert_eq!(root.prop("#size-cells"), &2u32.to_be_bytes());
        assert_eq!(root.props.len(), 2);
    }

    #[test]
    fn chosen_holds_the_efi_params_with_the_stub_sizes() {
        let efi = handoff();
        let blob = create_stub_fdt("console=ttyAMA0 efi=noruntime", None, &efi).unwrap();
        let chosen = &parse(&blob).children[0];
        assert_eq!(chosen.prop("bootargs"), b"console=ttyAMA0 efi=noruntime\0");
        assert_eq!(
            chosen.prop("linux,uefi-system-table"),
            &efi.system_table.to_be_bytes()
        );
        assert_eq!(
            chosen.prop("linux,uefi-mmap-start"),
            &efi.mmap_start.to_be_bytes()
        );
        assert_eq!(chosen.prop("linux,uefi-mmap-size"), &80u32.to_be_bytes());
        assert_eq!(
            chosen.prop("linux,uefi-mmap-desc-size"),
            &40u32.to_be_bytes()
        );
        assert_eq!(chosen.prop("linux,uefi-mmap-desc-ver"), &1u32.to_be_bytes());
        assert_eq!(chosen.prop("linux,uefi-secure-boot"), &2u32.to_be_bytes());
        // No initrd: no initrd properties, nothing else.
        assert_eq!(chosen.props.len(), 7);
    }

    #[test]
    fn initrd_is_described_by_start_and_exclusive_end_as_u64() {
        let initrd = Range {
            base: 0x4800_0000,
            size: 0x12_3456,
        };
        let blob = create_stub_fdt("", Some(initrd), &handoff()).unwrap();
        let chosen = &parse(&blob).children[0];
        assert_eq!(
            chosen.prop("linux,initrd-start"),
            &0x4800_0000u64.to_be_bytes()
        );
        assert_eq!(
            chosen.prop("linux,initrd-end"),
            &0x4812_3456u64.to_be_bytes()
        );
        assert_eq!(chosen.props.len(), 9);
    }

    #[test]
    fn bad_command_lines_and_initrds_are_refused() {
        let long = "x".repeat(COMMAND_LINE_SIZE);
        assert_eq!(
            create_stub_fdt(&long, None, &handoff()),
            Err(FdtError::CmdlineTooLong {
                len: 2048,
                max: 2047
            })
        );
        assert!(create_stub_fdt(&long[1..], None, &handoff()).is_ok());
        assert_eq!(
            create_stub_fdt("a\0b", None, &handoff()),
            Err(FdtError::CmdlineNul(1))
        );
        let empty = Range {
            base: 0x4800_0000,
            size: 0,
        };
        assert_eq!(
            create_stub_fdt("", Some(empty), &handoff()),
            Err(FdtError::BadInitrd(empty))
        );
        let wraps = Range {
            base: u64::MAX,
            size: 2,
        };
        assert_eq!(
            create_stub_fdt("", Some(wraps), &handoff()),
            Err(FdtError::BadInitrd(wraps))
        );
    }
}
