//! One vSMMU instance: its host backend (a vIOMMU over iommufd, or the
//! emulated one), the SMMUv3 model, its CMD-QV with `--vsmmu cmdqv` (whose
//! page0 goes in and out of the guest through a [`Page0Slot`]), and the
//! endpoints behind it declared; then its windows on the bus.

use std::sync::{Arc, Mutex};

use devices::GuestMemory;
use devices::cmdqv::{Cmdqv, CmdqvConfig};
use devices::emulated::EmulatedBackend;
use devices::irq::IrqLine;
use devices::smmuv3::{HostChoice, Smmuv3, VsmmuConfig as SmmuModelConfig};
use pci::GuestMapper;

use super::error::DeviceError;
use super::page0::Page0Slot;
use crate::bus::MmioBus;
use crate::config::{AtsMode, Page0Mode};
use crate::description::{DeviceKind, PlacedDevice, VmDescription, VsmmuDescription};
use crate::events::cmdqv::EventingCmdqv;
use crate::events::{self, Event, GuestErrorDevice, vsmmu::EventingVsmmu};
use crate::host_backend::{HostIommu, VsmmuHost};
use crate::irqchip::{IrqChip, RoutedInterrupts};

/// The devices of one vSMMU.
pub struct VsmmuDevices {
    /// Where it sits.
    pub description: VsmmuDescription,
    /// The SMMUv3 model.
    pub smmu: Arc<Mutex<Smmuv3>>,
    /// Its CMD-QV, with `--vsmmu cmdqv`.
    pub cmdqv: Option<Arc<Mutex<Cmdqv>>>,
    /// The host backend both share.
    pub backend: VsmmuHost,
}

/// What every vSMMU of the VM is built against.
pub(super) struct VsmmuWiring<'a> {
    /// Guest RAM (queues, tables).
    pub mem: &'a GuestMemory,
    /// Wired interrupts.
    pub chip: &'a Arc<dyn IrqChip>,
    /// Where a CMD-QV's page0 goes into the guest.
    pub page0: &'a Arc<dyn GuestMapper>,
    /// The iommufd side, with backend=iommufd or passthrough functions.
    pub host: Option<&'a HostIommu>,
}

/// The devices of the vSMMU `description`: backend, SMMUv3, CMD-QV, then
/// the vDEVICEs of the functions behind it and its `viommu-ready` event.
pub(super) fn build(
    vm: &VmDescription,
    description: &VsmmuDescription,
    wiring: &VsmmuWiring<'_>,
) -> Result<VsmmuDevices, DeviceError> {
    let index = description.index;
    let behind: Vec<_> = vm
        .devices
        .iter()
        .filter(|d| d.vsmmu == Some(index))
        .collect();
    let backend = backend(vm, description, &behind, wiring.host)?;
    let mut smmu = smmu(vm, description, wiring, &backend)?;
    let cmdqv = if description.cmdqv {
        let model = cmdqv(vm, description, wiring, &backend, &smmu, behind.len())?;
        Some(Arc::new(Mutex::new(model)))
    } else {
        None
    };
    add_vdevices(index, &backend, &mut smmu, &behind)?;
    events::emit(Event::ViommuReady {
        vsmmu: index,
        kind: vm.config.vsmmu.kind,
        backend: vm.config.vsmmu.backend,
        viommu_id: match &backend {
            VsmmuHost::Iommufd(v) => Some(v.lock().viommu_id()),
            VsmmuHost::Emulated(_) => None,
        },
        vdevices: behind.len(),
    });
    Ok(VsmmuDevices {
        description: description.clone(),
        smmu: Arc::new(Mutex::new(smmu)),
        cmdqv,
        backend,
    })
}

/// The host side of one vSMMU: a vIOMMU over the IOAS for the passthrough
/// functions behind it, or the emulated backend (counting only).
fn backend(
    vm: &VmDescription,
    description: &VsmmuDescription,
    behind: &[&PlacedDevice],
    host: Option<&HostIommu>,
) -> Result<VsmmuHost, DeviceError> {
    let Some(host) = host else {
        return Ok(VsmmuHost::Emulated(EmulatedBackend::counting_only()));
    };
    let functions: Vec<_> = behind
        .iter()
        .filter(|d| d.kind == DeviceKind::Passthrough)
        .filter_map(|d| {
            let path = vm.config.devices.get(d.config_index)?.path.clone();
            Some((path, d.stream_id()))
        })
        .collect();
    Ok(VsmmuHost::Iommufd(
        host.viommu(description.cmdqv, &functions)?,
    ))
}

/// The SMMUv3 model of one vSMMU, its interrupts routed and its guest
/// errors reported as events.
fn smmu(
    vm: &VmDescription,
    description: &VsmmuDescription,
    wiring: &VsmmuWiring<'_>,
    backend: &VsmmuHost,
) -> Result<Smmuv3, DeviceError> {
    let index = description.index;
    let err = |reason: String| DeviceError::Vsmmu { index, reason };
    let l = &description.layout;
    let smmu_irq = Arc::new(RoutedInterrupts::new(
        wiring.chip.clone(),
        vec![
            (IrqLine::SmmuEventq, l.eventq_gsiv),
            (IrqLine::SmmuGerror, l.gerror_gsiv),
            (IrqLine::SmmuCmdqSync, l.sync_gsiv),
        ],
        l.its_device_id,
    ));
    let model_config = SmmuModelConfig {
        ipa_bits: 48,
        // MSIs through the ITS, with the vSMMU's own IORT DeviceID
        // (`RoutedInterrupts` signals them with `its_device_id`).
        msi: true,
        // A VCMDQ (and Linux sizes it from IDR1.CMDQS) must be physically
        // contiguous in the host: one page of guest RAM is.
        ram_page_size: crate::memory::backing_page_size(
            vm.config.memory.backed_by_hugepages(),
            vm.host_page_size,
        )
        .map_err(|e| err(e.to_string()))?,
        ats: match vm.config.vsmmu.ats {
            AtsMode::Off => HostChoice::Off,
            AtsMode::On => HostChoice::On,
            AtsMode::Auto => HostChoice::Auto,
        },
        ssid_bits: vm.config.vsmmu.ssidsize,
        ..SmmuModelConfig::default()
    };
    let host_smmu = Box::new(EventingVsmmu::new(backend.vsmmu(), index));
    let mut smmu = Smmuv3::new(&model_config, host_smmu, wiring.mem.clone(), smmu_irq)
        .map_err(|e| err(e.to_string()))?;
    smmu.set_guest_error_listener(events::guest_error_listener(GuestErrorDevice::Vsmmu(index)));
    Ok(smmu)
}

/// The CMD-QV model of the vSMMU `description`, beside its SMMUv3 `smmu`
/// (whose CMDQ size it takes) over the same `backend`; `endpoints` is
/// how many functions sit behind it (checked against its StreamID slots).
fn cmdqv(
    vm: &VmDescription,
    description: &VsmmuDescription,
    wiring: &VsmmuWiring<'_>,
    backend: &VsmmuHost,
    smmu: &Smmuv3,
    endpoints: usize,
) -> Result<Cmdqv, DeviceError> {
    let index = description.index;
    let err = |reason: String| DeviceError::Vsmmu { index, reason };
    let l = &description.layout;
    let mapped = vm.config.vsmmu.page0_mode() == Page0Mode::Mapped;
    // One sink for the CMD-QV's error interrupt and its VCMDQs' CMD_SYNC
    // MSIs, which carry the vSMMU's ITS DeviceID like the SMMU's own.
    let irq = Arc::new(RoutedInterrupts::new(
        wiring.chip.clone(),
        vec![(IrqLine::Cmdqv, l.cmdqv_gsiv)],
        l.its_device_id,
    ));
    let host = Box::new(EventingCmdqv::new(
        backend
            .cmdqv(wiring.mem, irq.clone(), mapped)
            .map_err(err)?,
        index,
    ));
    let config = CmdqvConfig {
        cmdqs: smmu.id_registers().cmdq_log2size() as u8,
        ..CmdqvConfig::default()
    };
    let mut model =
        Cmdqv::new(host, wiring.mem.clone(), irq, config).map_err(|e| err(e.to_string()))?;
    model
        .check_device_count(endpoints)
        .map_err(|e| err(e.to_string()))?;
    let mut slot = Page0Slot::new(wiring.page0.clone(), index, l.cmdqv);
    model.set_page0_listener(Box::new(move |event| slot.apply(event)));
    model.set_guest_error_listener(events::guest_error_listener(GuestErrorDevice::Cmdqv(index)));
    Ok(model)
}

/// Declare each endpoint behind vSMMU `index` to its backend and model,
/// with a `vdevice` event per endpoint.
fn add_vdevices(
    index: u32,
    backend: &VsmmuHost,
    smmu: &mut Smmuv3,
    behind: &[&PlacedDevice],
) -> Result<(), DeviceError> {
    for device in behind {
        let vsid = device.stream_id();
        backend
            .add_endpoint(vsid)
            .map_err(|cause| DeviceError::Vdevice {
                index,
                id: device.id.clone(),
                cause,
            })?;
        smmu.register_stream(vsid);
        events::emit(Event::Vdevice {
            vsmmu: index,
            device: device.id.clone(),
            vsid,
        });
    }
    Ok(())
}

/// Every vSMMU's windows on the bus: its SMMUv3, then its CMD-QV.
pub(super) fn add_windows(bus: &mut MmioBus, vsmmus: &[VsmmuDevices]) -> Result<(), DeviceError> {
    for devices in vsmmus {
        let smmu_dev: Arc<Mutex<Smmuv3>> = devices.smmu.clone();
        bus.register("smmuv3", devices.description.layout.smmu, smmu_dev)?;
        if let Some(cmdqv) = &devices.cmdqv {
            bus.register("cmdqv", devices.description.layout.cmdqv, cmdqv.clone())?;
        }
    }
    Ok(())
}
