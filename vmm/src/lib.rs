//! The cloud-hypervisor VMM: configuration, VM description, firmware tables,
//! devices, the VMM thread with its event loop and control API, and (on
//! aarch64 KVM hosts) the VM itself.

pub mod acpi;
pub mod affinity;
pub mod api;
pub mod boot;
pub mod bus;
pub mod config;
pub mod control;
pub mod counters;
pub mod description;
pub mod device_manager;
pub mod event_loop;
pub mod events;
pub mod exit;
pub mod host_backend;
pub mod host_topology;
pub mod irqchip;
pub mod logging;
pub mod memory;
pub mod named_thread;
pub mod pty;
pub mod seccomp;
pub mod serial_backend;
pub mod serial_socket;
pub mod virtio;

#[cfg(target_arch = "aarch64")]
pub mod kvm;
#[cfg(target_arch = "aarch64")]
pub mod vm;
