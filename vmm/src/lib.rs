//! The cloud-hypervisor VMM: configuration, VM description, firmware tables
//! and (on aarch64 KVM hosts) the VM itself.

pub mod acpi;
pub mod config;
pub mod description;
