//! Passthrough functions (`--device`): the host side they need (the
//! iommufd, its IOAS, the bound functions), each VFIO function on its
//! segment with its MSI routes, and the routes' translation through the
//! vSMMU for a function behind one.

use std::sync::{Arc, Mutex};

use arch::layout::{PciSegmentLayout, pci_its_device_id};
use devices::smmuv3::Smmuv3;
use devices::{GuestMemory, lock_unpoisoned};
use pci::GuestMapper;
use pci::vfio::caps::MsiMessage;
use pci::vfio::{MsiError, MsiRouter, VfioPciDevice, Wiring};
use vmm_sys_util::eventfd::EventFd;

use super::error::DeviceError;
use super::vsmmu::VsmmuDevices;
use crate::config::{BackendKind, VsmmuKind};
use crate::description::{DeviceKind, PlacedDevice, VmDescription};
use crate::events::{self, Event};
use crate::host_backend::{HostFunction, HostIommu};

/// The host state of the VM's passthrough functions, when it needs one
/// (`needs_host`): the iommufd and its IOAS over guest RAM, every
/// function bound. Passthrough with backend=emulated is refused first.
pub(super) fn host_iommu(
    vm: &VmDescription,
    mem: &GuestMemory,
) -> Result<Option<HostIommu>, DeviceError> {
    let vsmmu_config = &vm.config.vsmmu;
    let passthrough: Vec<_> = vm
        .devices
        .iter()
        .filter(|d| d.kind == DeviceKind::Passthrough)
        .collect();
    if vsmmu_config.kind != VsmmuKind::Off
        && vsmmu_config.backend == BackendKind::Emulated
        && let Some(device) = passthrough.first()
    {
        return Err(DeviceError::PassthroughNeedsIommufd(device.id.clone()));
    }
    if !crate::host_backend::needs_host(&vm.config) {
        return Ok(None);
    }
    let functions: Vec<_> = passthrough
        .iter()
        .filter_map(|d| {
            vm.config.devices.get(d.config_index).map(|c| HostFunction {
                path: c.path.clone(),
                direct: d.vsmmu.is_none(),
            })
        })
        .collect();
    Ok(Some(HostIommu::new(mem, &functions, vm.host_page_size)?))
}

/// What a passthrough function is wired to.
pub(super) struct PassthroughWiring<'a> {
    /// The bound functions.
    pub host: &'a HostIommu,
    /// The VM's vSMMUs (a function behind one routes its MSIs through it).
    pub vsmmus: &'a [VsmmuDevices],
    /// The VM's MSI routes.
    pub router: &'a Arc<dyn MsiRouter>,
    /// Where BARs are mapped into the guest.
    pub mapper: &'a Arc<dyn GuestMapper>,
}

/// The VFIO function of `device` on `segment`, announced (log line and
/// `device-bound` event); with the host path it was opened at.
pub(super) fn function(
    vm: &VmDescription,
    segment: &PciSegmentLayout,
    device: &PlacedDevice,
    wiring: &PassthroughWiring<'_>,
) -> Result<(VfioPciDevice, String), DeviceError> {
    let path = &vm.config.devices[device.config_index].path;
    let vfio = wiring.host.open_function(path)?;
    let behind = device
        .vsmmu
        .and_then(|i| wiring.vsmmus.iter().find(|v| v.description.index == i));
    let msi_router: Arc<dyn MsiRouter> = match behind {
        Some(v) => Arc::new(VsmmuMsiRouter {
            inner: wiring.router.clone(),
            smmu: v.smmu.clone(),
            vsid: device.stream_id(),
        }),
        None => wiring.router.clone(),
    };
    let vfio_wiring = Wiring {
        name: path.display().to_string(),
        devid: pci_its_device_id(segment.id, device.bdf.rid()),
        windows: vec![segment.mmio32, segment.mmio64],
        router: msi_router,
        mapper: wiring.mapper.clone(),
        host_page: vm.host_page_size,
    };
    let f =
        VfioPciDevice::new(Box::new(vfio), vfio_wiring).map_err(|cause| DeviceError::Function {
            id: device.id.clone(),
            cause,
        })?;
    log::info!(
        target: "vmm",
        "passthrough {} ({}) at {:04x}:{}, StreamID {:#x}, {}",
        device.id, path.display(), segment.id, device.bdf, device.stream_id(),
        if device.vsmmu.is_some() { "behind the vSMMU" } else { "iommu=off" }
    );
    let path = path.display().to_string();
    events::emit(Event::DeviceBound {
        id: device.id.clone(),
        path: path.clone(),
        guest_bdf: format!("{:04x}:{}", segment.id, device.bdf),
        vsmmu: device.vsmmu,
    });
    Ok((f, path))
}

/// MSI routes of a passthrough function behind a vSMMU: the guest programs
/// its MSI-X table with an IOVA (its DMA domain maps the ITS doorbell), so
/// the address is translated through the guest's stage 1 for the
/// function's vSID before KVM sees it (KVM finds the vITS by the doorbell's
/// guest physical address).
struct VsmmuMsiRouter {
    inner: Arc<dyn MsiRouter>,
    smmu: Arc<Mutex<Smmuv3>>,
    vsid: u32,
}

impl MsiRouter for VsmmuMsiRouter {
    fn allocate_gsi(&self) -> Option<u32> {
        self.inner.allocate_gsi()
    }

    fn set_msi_route(&self, gsi: u32, msg: MsiMessage, devid: u32) -> Result<(), MsiError> {
        let gpa = lock_unpoisoned(&self.smmu)
            .translate_iova(self.vsid, msg.addr)
            .map_err(|reason| MsiError::Untranslated {
                vsid: self.vsid,
                iova: msg.addr,
                reason,
            })?;
        log::debug!(target: "vfio", "vSID {:#x}: MSI IOVA {:#x} -> {gpa:#x}", self.vsid, msg.addr);
        self.inner
            .set_msi_route(gsi, MsiMessage { addr: gpa, ..msg }, devid)
    }

    fn free_gsi(&self, gsi: u32) {
        self.inner.free_gsi(gsi);
    }

    fn irqfd(&self, fd: &EventFd, gsi: u32, assign: bool) -> Result<(), MsiError> {
        self.inner.irqfd(fd, gsi, assign)
    }
}
