//! The aarch64 KVM side of a VM: the VM file descriptor with the largest
//! IPA size the host allows, guest RAM and page0 memory slots, the in-kernel
//! GICv3 with its ITS, and interrupt injection. Every `unsafe` block of the
//! run path lives in this module.

mod routing;
pub mod vcpu;

use std::io;
use std::sync::{Arc, Mutex};

use arch::layout::{GIC_DIST_BASE, GIC_ITS_BASE, GIC_NR_IRQS, GIC_REDIST_BASE, Layout};
use kvm_bindings::{
    KVM_ARM_IRQ_TYPE_SHIFT, KVM_ARM_IRQ_TYPE_SPI, KVM_DEV_ARM_VGIC_CTRL_INIT,
    KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
    KVM_MSI_VALID_DEVID, KVM_VGIC_ITS_ADDR_TYPE, KVM_VGIC_V3_ADDR_TYPE_DIST,
    KVM_VGIC_V3_ADDR_TYPE_REDIST, kvm_create_device, kvm_device_attr,
    kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3, kvm_msi,
    kvm_userspace_memory_region,
};
use kvm_ioctls::{DeviceFd, IoEventAddress, Kvm, NoDatamatch, VcpuFd, VmFd};
use vm_memory::{GuestMemoryBackend as _, GuestMemoryRegion};

use crate::device_manager::GuestMapper;
use crate::irqchip::IrqChip;
use devices::mapping::Mapping;
use devices::{GuestMemory, lock_unpoisoned};
use pci::vfio::caps::MsiMessage;
use pci::vfio::{MsiError, MsiRouter};
use pci::{MapError, SlotId};
use virtio_devices::NotifyRegistrar;
use vmm_sys_util::eventfd::EventFd;

/// KVM's default IPA size when the host does not report KVM_CAP_ARM_VM_IPA_SIZE.
const DEFAULT_IPA_BITS: u32 = 40;
/// Memory slot of the first RAM region; page0 slots follow the RAM slots.
const FIRST_RAM_SLOT: u32 = 0;
/// Memory slots the VMM uses at most: arm64 KVM has always allowed 512
/// (KVM_CAP_NR_MEMSLOTS), far more than RAM, page0s and BAR pieces need.
const MAX_SLOTS: u32 = 512;

/// What can go wrong setting up KVM; each names the call and the value.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// /dev/kvm could not be opened or is not API 12.
    #[error("cannot use /dev/kvm: {0}")]
    Open(kvm_ioctls::Error),
    /// The guest address map needs more IPA bits than the host gives.
    #[error(
        "the guest address map ends at {top:#x} (RAM, then the PCI 64-bit windows sized for the \
         passthrough BARs) and needs {needed} IPA bits, but this host's KVM allows {limit}; give \
         the VM less RAM or fewer large-BAR functions"
    )]
    IpaTooSmall {
        /// The first address past the layout.
        top: u64,
        /// Bits the layout needs.
        needed: u32,
        /// Bits KVM allows.
        limit: u32,
    },
    /// A Grace GPU whose memory BAR KVM cannot map cacheable.
    #[error(
        "--device {device} is on nvgrace-gpu-vfio-pci, whose GPU memory the guest must map \
         cacheable, but this host's KVM lacks KVM_CAP_ARM_CACHEABLE_PFNMAP_SUPPORTED (243; it \
         needs FEAT_S2FWB): the guest would fault at its first access; use a host kernel and CPU \
         that report the capability"
    )]
    NoCacheablePfnmap {
        /// The device's id.
        device: String,
    },
    /// An ioctl failed.
    #[error("{call} failed: {err}")]
    Ioctl {
        /// The ioctl and its argument.
        call: String,
        /// The errno.
        err: kvm_ioctls::Error,
    },
}

fn ioctl(call: impl Into<String>) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    let call = call.into();
    move |err| KvmError::Ioctl { call, err }
}

/// A KVM VM with its GICv3 and ITS.
pub struct KvmVm {
    _kvm: Kvm,
    vm: VmFd,
    gic: Option<DeviceFd>,
    its: Option<DeviceFd>,
    ram_slots: u32,
    /// Slots over host memory (CMD-QV page0, passthrough BARs). Declared
    /// after `vm`: the VM fd closes (taking its slots) before any mapping a
    /// slot still holds is unmapped.
    host_slots: Mutex<Vec<HostSlot>>,
    /// GSI routes of passthrough MSIs.
    routes: routing::GsiRoutes,
}

/// A memory slot over host memory and the mapping it keeps alive.
struct HostSlot {
    slot: u32,
    gpa: u64,
    mapping: Arc<Mapping>,
}

/// Bits needed to address everything up to (excluding) `end`.
fn bits_for(end: u64) -> u32 {
    64 - (end.saturating_sub(1)).leading_zeros()
}

/// KVM_CAP_ARM_CACHEABLE_PFNMAP_SUPPORTED (Linux 6.18's uapi), defined
/// here because kvm-bindings 0.14 predates it: KVM maps a cacheable PFNMAP
/// (a VFIO BAR of device memory) as cacheable in stage 2 only when it
/// reports this capability.
const KVM_CAP_ARM_CACHEABLE_PFNMAP_SUPPORTED: libc::c_ulong = 243;

/// Refuse the first of `devices` (functions whose BARs must be mapped
/// cacheable) when KVM's answer to capability 243 was `cap` <= 0.
fn check_cacheable_pfnmap(devices: &[String], cap: i32) -> Result<(), KvmError> {
    match devices.first() {
        Some(device) if cap <= 0 => Err(KvmError::NoCacheablePfnmap {
            device: device.clone(),
        }),
        _ => Ok(()),
    }
}

impl KvmVm {
    /// Refuse to start when a function in `devices` needs cacheable BAR
    /// mappings this KVM cannot make (a slot over it would fault).
    pub fn require_cacheable_pfnmap(&self, devices: &[String]) -> Result<(), KvmError> {
        if devices.is_empty() {
            return Ok(());
        }
        let cap = self
            .vm
            .check_extension_raw(KVM_CAP_ARM_CACHEABLE_PFNMAP_SUPPORTED);
        check_cacheable_pfnmap(devices, cap)
    }

    /// Create a VM whose IPA space is as large as the host allows and at
    /// least as large as `layout` needs.
    pub fn new(layout: &Layout) -> Result<Self, KvmError> {
        let kvm = Kvm::new().map_err(KvmError::Open)?;
        let limit = match kvm.get_host_ipa_limit() {
            n if n > 0 => n as u32,
            _ => DEFAULT_IPA_BITS,
        };
        let top = layout
            .pci_segments
            .iter()
            .map(|s| s.mmio64.end())
            .chain([layout.ram.end()])
            .max()
            .unwrap_or(layout.ram.end());
        let needed = bits_for(top);
        if needed > limit {
            return Err(KvmError::IpaTooSmall { top, needed, limit });
        }
        let vm = kvm
            .create_vm_with_type(u64::from(limit))
            .map_err(ioctl(format!("KVM_CREATE_VM(ipa={limit})")))?;
        log::info!(target: "kvm", "VM created with a {limit}-bit IPA space (layout needs {needed})");
        Ok(KvmVm {
            _kvm: kvm,
            vm,
            gic: None,
            its: None,
            ram_slots: 0,
            host_slots: Mutex::new(Vec::new()),
            routes: routing::GsiRoutes::default(),
        })
    }

    /// Register every region of guest RAM as a memory slot.
    pub fn add_ram(&mut self, mem: &GuestMemory) -> Result<(), KvmError> {
        for (index, region) in mem.iter().enumerate() {
            let slot = FIRST_RAM_SLOT + index as u32;
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|_| KvmError::Ioctl {
                    call: format!("host address of RAM region {index}"),
                    err: kvm_ioctls::Error::new(libc::EFAULT),
                })?;
            let entry = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the region is a live mapping owned by `mem`, which the
            // VM keeps alive (the device manager holds it) until the VM fd is
            // closed; the guest range does not overlap any other slot.
            unsafe { self.vm.set_user_memory_region(entry) }
                .map_err(ioctl(format!("KVM_SET_USER_MEMORY_REGION(slot {slot})")))?;
            self.ram_slots = slot + 1;
        }
        Ok(())
    }

    /// `KVM_SET_USER_MEMORY_REGION` of `slot` with `mapping` at `gpa`,
    /// recorded in `slots` with its mapping once KVM took it.
    fn install_slot(
        &self,
        slots: &mut Vec<HostSlot>,
        slot: u32,
        gpa: u64,
        mapping: Arc<Mapping>,
    ) -> io::Result<()> {
        let entry = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: mapping.len(),
            userspace_addr: mapping.host_addr(),
        };
        // SAFETY: on success the mapping is stored with the slot in
        // `slots` below and leaves it only when the slot is deleted
        // (`delete_slot`), or after the VM fd closed (field order), so the
        // memory outlives the slot. The guest range is in an MMIO window
        // (CMD-QV page0 or a PCI window) and KVM refuses one that overlaps
        // another slot.
        unsafe { self.vm.set_user_memory_region(entry) }
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        slots.push(HostSlot { slot, gpa, mapping });
        Ok(())
    }

    /// Delete `slots[at]` from KVM, then hand its mapping back.
    fn delete_slot(&self, slots: &mut Vec<HostSlot>, at: usize) -> io::Result<Arc<Mapping>> {
        let Some(host) = slots.get(at) else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        let entry = kvm_userspace_memory_region {
            slot: host.slot,
            flags: 0,
            guest_phys_addr: host.gpa,
            memory_size: 0,
            userspace_addr: 0,
        };
        // SAFETY: a zero-sized region deletes the slot; no memory is handed
        // to the kernel.
        unsafe { self.vm.set_user_memory_region(entry) }
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        Ok(slots.swap_remove(at).mapping)
    }

    /// Create vCPU `id`.
    pub fn create_vcpu(&self, id: u64) -> Result<VcpuFd, KvmError> {
        self.vm
            .create_vcpu(id)
            .map_err(ioctl(format!("KVM_CREATE_VCPU({id})")))
    }

    /// The VM fd, for vCPU initialisation.
    pub fn vm_fd(&self) -> &VmFd {
        &self.vm
    }

    /// Create the GICv3 (distributor, one redistributor per vCPU) and the
    /// ITS. Call after every vCPU exists, then [`KvmVm::finalize_gic`].
    pub fn create_gic(&mut self, layout: &Layout) -> Result<(), KvmError> {
        let gic = self.create_device(kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3, "GICv3")?;
        set_attr(
            &gic,
            KVM_DEV_ARM_VGIC_GRP_ADDR,
            KVM_VGIC_V3_ADDR_TYPE_DIST,
            GIC_DIST_BASE,
        )?;
        set_attr(
            &gic,
            KVM_DEV_ARM_VGIC_GRP_ADDR,
            KVM_VGIC_V3_ADDR_TYPE_REDIST,
            GIC_REDIST_BASE,
        )?;
        set_attr(&gic, KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, GIC_NR_IRQS)?;
        let its = self.create_device(kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS, "GIC ITS")?;
        set_attr(
            &its,
            KVM_DEV_ARM_VGIC_GRP_ADDR,
            KVM_VGIC_ITS_ADDR_TYPE,
            GIC_ITS_BASE,
        )?;
        log::info!(
            target: "kvm",
            "GICv3: distributor {GIC_DIST_BASE:#x}, redistributors {}, ITS {GIC_ITS_BASE:#x}",
            layout.gic_redist
        );
        self.gic = Some(gic);
        self.its = Some(its);
        Ok(())
    }

    /// Initialise the GIC and the ITS (after every vCPU is initialised).
    pub fn finalize_gic(&self) -> Result<(), KvmError> {
        for device in [&self.gic, &self.its].into_iter().flatten() {
            let attr = kvm_device_attr {
                group: KVM_DEV_ARM_VGIC_GRP_CTRL,
                attr: u64::from(KVM_DEV_ARM_VGIC_CTRL_INIT),
                addr: 0,
                flags: 0,
            };
            device
                .set_device_attr(&attr)
                .map_err(ioctl("KVM_DEV_ARM_VGIC_CTRL_INIT"))?;
        }
        Ok(())
    }

    fn create_device(&self, type_: u32, name: &str) -> Result<DeviceFd, KvmError> {
        let mut device = kvm_create_device {
            type_,
            fd: 0,
            flags: 0,
        };
        self.vm
            .create_device(&mut device)
            .map_err(ioctl(format!("KVM_CREATE_DEVICE({name})")))
    }
}

/// KVM_SET_DEVICE_ATTR with `value` (a u32 or u64, as the attribute wants)
/// passed by address.
fn set_attr<T: Copy + std::fmt::LowerHex>(
    device: &DeviceFd,
    group: u32,
    attr: u32,
    value: T,
) -> Result<(), KvmError> {
    let attr_desc = kvm_device_attr {
        group,
        attr: u64::from(attr),
        addr: &value as *const T as u64,
        flags: 0,
    };
    device.set_device_attr(&attr_desc).map_err(ioctl(format!(
        "KVM_SET_DEVICE_ATTR(group {group}, attr {attr}, {value:#x})"
    )))
}

/// Host memory as its own memory slot (a CMD-QV page0, a passthrough BAR
/// area), so the guest's accesses cause no VM exit; the slot holds its
/// mapping until removed.
impl GuestMapper for KvmVm {
    fn add_region(&self, gpa: u64, mapping: Arc<Mapping>) -> Result<SlotId, MapError> {
        let mut slots = lock_unpoisoned(&self.host_slots);
        let len = mapping.len();
        let slot = (self.ram_slots..MAX_SLOTS)
            .find(|s| !slots.iter().any(|h| h.slot == *s))
            .ok_or(MapError::NoFreeSlot {
                gpa,
                len,
                used: slots.len(),
            })?;
        self.install_slot(&mut slots, slot, gpa, mapping)
            .map_err(|source| MapError::Install {
                slot,
                gpa,
                len,
                source,
            })?;
        log::info!(target: "kvm", "slot {slot} installed at {gpa:#x} ({len:#x} bytes of host memory)");
        Ok(SlotId::new(slot))
    }

    fn remove_region(&self, slot: SlotId) -> Result<Arc<Mapping>, MapError> {
        let mut slots = lock_unpoisoned(&self.host_slots);
        let slot = slot.get();
        let at = slots
            .iter()
            .position(|h| h.slot == slot)
            .ok_or(MapError::Unknown(slot))?;
        let gpa = slots.get(at).map_or(0, |h| h.gpa);
        let mapping = self
            .delete_slot(&mut slots, at)
            .map_err(|source| MapError::Remove { slot, gpa, source })?;
        log::info!(target: "kvm", "slot {slot} removed from {gpa:#x}");
        Ok(mapping)
    }
}

impl MsiRouter for KvmVm {
    fn allocate_gsi(&self) -> Option<u32> {
        self.routes.allocate()
    }

    fn set_msi_route(&self, gsi: u32, msg: MsiMessage, devid: u32) -> Result<(), MsiError> {
        self.routes.set(&self.vm, gsi, msg, devid)
    }

    fn free_gsi(&self, gsi: u32) {
        self.routes.free(&self.vm, gsi);
    }

    fn irqfd(&self, fd: &EventFd, gsi: u32, assign: bool) -> Result<(), MsiError> {
        routing::irqfd(&self.vm, fd, gsi, assign)
    }
}

/// A virtio queue's notify address as an ioeventfd (`KVM_IOEVENTFD`, any
/// access length, no data match): the vCPU's write signals the queue's
/// worker and returns to the guest without a trip to userspace.
impl NotifyRegistrar for KvmVm {
    fn register(&self, addr: u64, fd: &EventFd) -> std::io::Result<()> {
        self.vm
            .register_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }

    fn unregister(&self, addr: u64, fd: &EventFd) -> std::io::Result<()> {
        self.vm
            .unregister_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}

impl IrqChip for KvmVm {
    fn set_spi_level(&self, intid: u32, asserted: bool) {
        let irq = (KVM_ARM_IRQ_TYPE_SPI << KVM_ARM_IRQ_TYPE_SHIFT) | intid;
        if let Err(err) = self.vm.set_irq_line(irq, asserted) {
            devices::guest_log!(error, target: "kvm", "KVM_IRQ_LINE(INTID {intid}, {asserted}) failed: {err}");
        }
    }

    fn signal_msi(&self, addr: u64, data: u32, device_id: u32) {
        let msi = kvm_msi {
            address_lo: addr as u32,
            address_hi: (addr >> 32) as u32,
            data,
            flags: KVM_MSI_VALID_DEVID,
            devid: device_id,
            ..Default::default()
        };
        if let Err(err) = self.vm.signal_msi(msi) {
            devices::guest_log!(warn, target: "kvm", "KVM_SIGNAL_MSI({addr:#x}, {data:#x}, devid {device_id:#x}) failed: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipa_bits_cover_the_last_byte() {
        assert_eq!(bits_for(1 << 40), 40);
        assert_eq!(bits_for((1 << 40) + 1), 41);
        assert_eq!(bits_for(0x180_0000_0000), 41);
    }

    #[test]
    fn a_cacheable_bar_without_capability_243_is_refused_naming_the_device() {
        let gpus = vec!["gpu0".to_string(), "gpu1".to_string()];
        assert!(check_cacheable_pfnmap(&gpus, 1).is_ok());
        assert!(check_cacheable_pfnmap(&[], 0).is_ok());
        let err = check_cacheable_pfnmap(&gpus, 0).unwrap_err().to_string();
        assert!(
            err.starts_with("--device gpu0 is on nvgrace-gpu-vfio-pci")
                && err.contains("KVM_CAP_ARM_CACHEABLE_PFNMAP_SUPPORTED (243"),
            "{err}"
        );
    }

    #[test]
    #[ignore = "needs an aarch64 KVM host (/dev/kvm, API 12): cargo test -p vmm --lib -- --ignored kvm::"]
    fn vm_creation_works_on_a_real_kvm_host() {
        // Under qemu-user the x86 /dev/kvm opens but every ioctl fails: the
        // API version says which KVM this is.
        let kvm = Kvm::new().expect("open /dev/kvm");
        assert_eq!(kvm.get_api_version(), 12, "not an aarch64 KVM");
        let layout = Layout::new(arch::layout::Topology {
            vcpus: 1,
            ram_size: 64 << 20,
            pci_segments: 1,
            vsmmus: 1,
        })
        .unwrap();
        let mut vm = KvmVm::new(&layout).unwrap();
        vm.create_vcpu(0).unwrap();
        vm.create_gic(&layout).unwrap();
    }
}
