//! KVM's GSI routing table for passthrough MSIs: one MSI route per vector
//! (address, data and the function's ITS DeviceID, `KVM_MSI_VALID_DEVID`)
//! and the irqfds that inject them.
//!
//! `KVM_SET_GSI_ROUTING` replaces the whole table, so the table is kept
//! here and sent whole on every change; it always starts with the identity
//! routes of the SPIs (what the vGIC installs by default), so replacing it
//! takes nothing away. MSI GSIs are numbered after the SPIs.

use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;

use arch::layout::{GIC_NR_IRQS, SPI_BASE};
use devices::mapping::Sentence;
use kvm_bindings::{
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_MSI_VALID_DEVID, KvmIrqRouting,
    kvm_irq_routing_entry,
};
use kvm_ioctls::VmFd;
use pci::vfio::MsiError;
use pci::vfio::caps::MsiMessage;
use vmm_sys_util::eventfd::EventFd;

/// SPI identity routes take GSIs 0..SPIS.
const SPIS: u32 = GIC_NR_IRQS - SPI_BASE;
/// KVM's limit on routing entries (KVM_MAX_IRQ_ROUTES).
const MAX_ROUTES: u32 = 4096;

/// The MSI part of the table: GSI -> (message, DeviceID), or reserved.
#[derive(Default)]
pub struct GsiRoutes {
    msi: Mutex<BTreeMap<u32, Option<(MsiMessage, u32)>>>,
}

impl GsiRoutes {
    /// The lowest free MSI GSI, reserved.
    pub fn allocate(&self) -> Option<u32> {
        let mut msi = devices::lock_unpoisoned(&self.msi);
        let gsi = (SPIS..MAX_ROUTES).find(|g| !msi.contains_key(g))?;
        msi.insert(gsi, None);
        Some(gsi)
    }

    /// Set `gsi`'s route and send the table.
    pub fn set(&self, vm: &VmFd, gsi: u32, msg: MsiMessage, devid: u32) -> Result<(), MsiError> {
        let mut msi = devices::lock_unpoisoned(&self.msi);
        let old = msi.insert(gsi, Some((msg, devid)));
        let result = send(vm, gsi, &msi);
        if result.is_err() {
            // Keep the table what the kernel has.
            msi.insert(gsi, old.flatten());
        }
        result
    }

    /// Drop `gsi`'s route and send the table.
    pub fn free(&self, vm: &VmFd, gsi: u32) {
        let mut msi = devices::lock_unpoisoned(&self.msi);
        if let Some(Some(_)) = msi.remove(&gsi)
            && let Err(e) = send(vm, gsi, &msi)
        {
            log::error!(target: "kvm", "{}", Sentence(&e));
        }
    }
}

/// `KVM_SET_GSI_ROUTING` with the SPI identity routes and `msi`, for a
/// change of `gsi`.
fn send(
    vm: &VmFd,
    gsi: u32,
    msi: &BTreeMap<u32, Option<(MsiMessage, u32)>>,
) -> Result<(), MsiError> {
    let routed: Vec<_> = msi
        .iter()
        .filter_map(|(gsi, r)| r.map(|r| (*gsi, r)))
        .collect();
    let count = SPIS as usize + routed.len();
    let refused = |source| MsiError::Route {
        gsi,
        entries: count,
        source,
    };
    // Only a count past the FAM limit fails here, which KVM would refuse too.
    let mut table = KvmIrqRouting::new(count)
        .map_err(|_| refused(io::Error::from_raw_os_error(libc::EINVAL)))?;
    let entries = table.as_mut_slice();
    for (spi, entry) in entries.iter_mut().take(SPIS as usize).enumerate() {
        entry.gsi = spi as u32;
        entry.type_ = KVM_IRQ_ROUTING_IRQCHIP;
        entry.u.irqchip.irqchip = 0;
        entry.u.irqchip.pin = spi as u32;
    }
    for (entry, (gsi, (msg, devid))) in entries.iter_mut().skip(SPIS as usize).zip(routed) {
        *entry = kvm_irq_routing_entry {
            gsi,
            type_: KVM_IRQ_ROUTING_MSI,
            flags: KVM_MSI_VALID_DEVID,
            ..Default::default()
        };
        entry.u.msi.address_lo = msg.addr as u32;
        entry.u.msi.address_hi = (msg.addr >> 32) as u32;
        entry.u.msi.data = msg.data;
        entry.u.msi.__bindgen_anon_1.devid = devid;
    }
    vm.set_gsi_routing(&table)
        .map_err(|e| refused(io::Error::from_raw_os_error(e.errno())))
}

/// `KVM_IRQFD` assign / deassign.
pub fn irqfd(vm: &VmFd, fd: &EventFd, gsi: u32, assign: bool) -> Result<(), MsiError> {
    let result = if assign {
        vm.register_irqfd(fd, gsi)
    } else {
        vm.unregister_irqfd(fd, gsi)
    };
    result.map_err(|e| MsiError::Irqfd {
        gsi,
        assign,
        source: io::Error::from_raw_os_error(e.errno()),
    })
}
