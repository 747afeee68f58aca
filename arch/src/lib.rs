//! Guest platform description for the aarch64 `cloud-hypervisor` VM.
//!
//! [`layout`] is the guest physical memory map and interrupt numbering: pure
//! data, usable on any host so that firmware tables can be built and checked
//! on a development machine. [`aarch64`] holds what only makes sense on an
//! aarch64 KVM host (vCPU register identifiers, boot hand-off).
//!
//! [`efi`], [`fdt`] and [`boot`] write the firmware hand-off a directly
//! booted arm64 Linux needs to find ACPI (EFI system table + memory map and
//! a stub device tree); they are plain byte layout, tested on any host.

pub mod boot;
pub mod efi;
pub mod fdt;
pub mod layout;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
