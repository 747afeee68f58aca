//! Builds the VM's devices from its description and puts them on the MMIO
//! bus: per vSMMU the SMMUv3 model and (with `cmdqv`) its CMD-QV, both over
//! one host backend; the PL011 console; one PCIe ECAM host bridge per
//! segment. Owns the teardown order: page0 leaves the guest and HW queues
//! are freed (descending) before any vIOMMU object goes.

use std::sync::{Arc, Mutex};

use arch::layout::pci_its_device_id;
use arch::layout::{CMDQV_VINTF0_PAGE0_OFFSET, Range, UART_BASE, UART_GSIV, UART_SIZE};
use devices::cmdqv::{Cmdqv, CmdqvConfig, Page0Event};
use devices::emulated::EmulatedBackend;
use devices::irq::IrqLine;
use devices::legacy::Pl011;
use devices::mapping::Sentence;
use devices::smmuv3::{HostChoice, Smmuv3, VsmmuConfig as SmmuModelConfig};
use devices::{GuestMemory, lock_unpoisoned};
use pci::test_endpoint::TestEndpoint;
use pci::vfio::caps::MsiMessage;
use pci::vfio::{MsiError, MsiRouter, VfioPciDevice, Wiring};
use pci::{PciDevice, PciSegment, SlotId};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{BusError, MmioBus};
use crate::config::{AtsMode, BackendKind, Page0Mode, VsmmuKind};
use crate::description::{DeviceKind, VmDescription, VsmmuDescription};
use crate::events::{self, Event, GuestErrorDevice, cmdqv::EventingCmdqv, vsmmu::EventingVsmmu};
use crate::host_backend::{HostFunction, HostIommu, VsmmuHost};
use crate::irqchip::{IrqChip, RoutedInterrupts};
use crate::virtio::{VirtioError, VirtioWiring};
use virtio_devices::NotifyRegistrar;
use virtio_devices::block::BlockCounters;
use virtio_devices::net::NetCounters;

pub use pci::GuestMapper;

/// Why the devices could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A model refused its configuration.
    #[error("vSMMU {index}: {reason}")]
    Vsmmu {
        /// vSMMU index.
        index: u32,
        /// What went wrong.
        reason: String,
    },
    /// The host cannot back the vSMMU (one sentence naming the fix).
    #[error(transparent)]
    Host(#[from] iommufd::HostError),
    /// Passthrough devices need the iommufd backend.
    #[error(
        "--device {0}: passthrough needs backend=iommufd (VFIO); with backend=emulated the VM \
         has no host device to pass through"
    )]
    PassthroughNeedsIommufd(String),
    /// A passthrough function could not be set up (its BARs, MSI-X, host
    /// handles): the typed cause is kept, and shown with its errno.
    #[error("device {id}: {}", Sentence(cause))]
    Function {
        /// The device's id.
        id: String,
        /// What the VFIO function setup reported.
        cause: pci::vfio::FunctionError,
    },
    /// A function could not take its slot on the segment's bus.
    #[error("device {id}: {cause}")]
    Slot {
        /// The device's id.
        id: String,
        /// What the host bridge refused.
        cause: pci::PciError,
    },
    /// The segment's BARs do not fit its windows.
    #[error("segment {segment}: {cause}")]
    Bars {
        /// The PCI segment.
        segment: u16,
        /// What the allocator refused.
        cause: pci::PciError,
    },
    /// The emulated backend refused a vDEVICE.
    #[error("vSMMU {index}: vDEVICE for {id}: {cause}")]
    Vdevice {
        /// vSMMU index.
        index: u32,
        /// The device's id.
        id: String,
        /// The backend's refusal, with its errno.
        cause: devices::backend::BackendError,
    },
    /// Bus placement failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A virtio function could not be built (image missing or locked...).
    #[error(transparent)]
    Virtio(#[from] VirtioError),
}

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

/// Where the VM's consoles go: the PL011's output, and the virtio-console's
/// pty when its mode is Pty (opened with the VM's definition).
pub struct Consoles {
    /// The PL011's output.
    pub uart: Box<dyn std::io::Write + Send>,
    /// The virtio-console's pty.
    pub virtio_pty: Option<Arc<crate::pty::Pty>>,
}

/// Every device of a VM.
pub struct DeviceManager {
    /// The MMIO bus the vCPUs dispatch to.
    pub bus: Arc<MmioBus>,
    /// The console.
    pub uart: Arc<Mutex<Pl011>>,
    /// vSMMUs by index.
    pub vsmmus: Vec<VsmmuDevices>,
    /// The PCI segments (their passthrough functions are released before
    /// the vIOMMUs and the host state go).
    pub segments: Vec<Arc<Mutex<PciSegment>>>,
    /// With passthrough functions or backend=iommufd: the iommufd, the
    /// IOAS, the bound functions (dropped after the vSMMUs: their vIOMMUs
    /// hang off it).
    pub host: Option<HostIommu>,
    /// (id, host path) of each segment's passthrough functions, beside
    /// `segments`, for their `device-released` events.
    passthrough: Vec<Vec<(String, String)>>,
    /// Each virtio disk's id and I/O counters.
    pub disks: Vec<(String, Arc<BlockCounters>)>,
    /// Each virtio-net device's id and traffic counters.
    pub nets: Vec<(String, Arc<NetCounters>)>,
}

impl DeviceManager {
    /// Build every device of `vm` and the bus that reaches them.
    pub fn new(
        vm: &VmDescription,
        mem: &GuestMemory,
        chip: Arc<dyn IrqChip>,
        router: Arc<dyn MsiRouter>,
        page0: Arc<dyn GuestMapper>,
        notify: Arc<dyn NotifyRegistrar>,
        consoles: Consoles,
    ) -> Result<Self, DeviceError> {
        let Consoles {
            uart: console,
            virtio_pty,
        } = consoles;
        let virtio_wiring = VirtioWiring {
            router: router.clone(),
            notify,
            console_pty: virtio_pty,
        };
        let mut disks = Vec::new();
        let mut nets = Vec::new();
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
        let host = if crate::host_backend::needs_host(&vm.config) {
            let functions: Vec<_> = passthrough
                .iter()
                .filter_map(|d| {
                    vm.config.devices.get(d.config_index).map(|c| HostFunction {
                        path: c.path.clone(),
                        direct: d.vsmmu.is_none(),
                    })
                })
                .collect();
            Some(HostIommu::new(mem, &functions, vm.host_page_size)?)
        } else {
            None
        };
        let mut bus = MmioBus::new();
        let uart_irq = Arc::new(RoutedInterrupts::new(
            chip.clone(),
            vec![(IrqLine::Uart, UART_GSIV)],
            0,
        ));
        let uart = Arc::new(Mutex::new(Pl011::new(console, uart_irq)));
        bus.register(
            "uart",
            Range {
                base: UART_BASE,
                size: UART_SIZE,
            },
            uart.clone(),
        )?;
        // The vSMMUs first: a passthrough function behind one translates its
        // MSI doorbell through it.
        let mut vsmmus = Vec::with_capacity(vm.vsmmus.len());
        for description in &vm.vsmmus {
            vsmmus.push(build_vsmmu(
                vm,
                description,
                mem,
                &chip,
                &page0,
                host.as_ref(),
            )?);
        }
        let mut segments = Vec::with_capacity(vm.layout.pci_segments.len());
        let mut passthrough = Vec::with_capacity(vm.layout.pci_segments.len());
        for segment in &vm.layout.pci_segments {
            let mut ecam = PciSegment::new(*segment);
            let mut bound = Vec::new();
            for device in vm.devices.iter().filter(|d| d.segment == segment.id) {
                let function: Box<dyn PciDevice> = match (device.kind, &host) {
                    (DeviceKind::Passthrough, Some(host)) => {
                        let path = &vm.config.devices[device.config_index].path;
                        let vfio = host.open_function(path)?;
                        let behind = device
                            .vsmmu
                            .and_then(|i| vsmmus.iter().find(|v| v.description.index == i));
                        let msi_router: Arc<dyn MsiRouter> = match behind {
                            Some(v) => Arc::new(VsmmuMsiRouter {
                                inner: router.clone(),
                                smmu: v.smmu.clone(),
                                vsid: device.stream_id(),
                            }),
                            None => router.clone(),
                        };
                        let wiring = Wiring {
                            name: path.display().to_string(),
                            devid: pci_its_device_id(segment.id, device.bdf.rid()),
                            windows: vec![segment.mmio32, segment.mmio64],
                            router: msi_router,
                            mapper: page0.clone(),
                            host_page: vm.host_page_size,
                        };
                        let f = VfioPciDevice::new(Box::new(vfio), wiring).map_err(|cause| {
                            DeviceError::Function {
                                id: device.id.clone(),
                                cause,
                            }
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
                        bound.push((device.id.clone(), path));
                        Box::new(f)
                    }
                    (
                        DeviceKind::VirtioBlock
                        | DeviceKind::VirtioConsole
                        | DeviceKind::VirtioRng
                        | DeviceKind::VirtioNet
                        | DeviceKind::VirtioVsock,
                        _,
                    ) => {
                        let built = crate::virtio::build(vm, device, mem, &virtio_wiring)?;
                        if let Some(counters) = built.disk {
                            disks.push((device.id.clone(), counters));
                        }
                        if let Some(counters) = built.net {
                            nets.push((device.id.clone(), counters));
                        }
                        built.function
                    }
                    _ => {
                        log::info!(
                            target: "vmm",
                            "test endpoint {} at {:04x}:{}, StreamID {:#x}",
                            device.id, segment.id, device.bdf, device.stream_id()
                        );
                        Box::new(TestEndpoint::new())
                    }
                };
                ecam.add_device(device.bdf, function)
                    .map_err(|cause| DeviceError::Slot {
                        id: device.id.clone(),
                        cause,
                    })?;
            }
            // Firmware's job: every BAR gets a home before the guest looks.
            ecam.allocate_bars().map_err(|cause| DeviceError::Bars {
                segment: segment.id,
                cause,
            })?;
            let ecam = Arc::new(Mutex::new(ecam));
            bus.register("pci-ecam", segment.ecam, ecam.clone())?;
            bus.register("pci-bars", segment.mmio32, ecam.clone())?;
            bus.register("pci-bars", segment.mmio64, ecam.clone())?;
            segments.push(ecam);
            passthrough.push(bound);
        }
        for devices in &vsmmus {
            let smmu_dev: Arc<Mutex<Smmuv3>> = devices.smmu.clone();
            bus.register("smmuv3", devices.description.layout.smmu, smmu_dev)?;
            if let Some(cmdqv) = &devices.cmdqv {
                bus.register("cmdqv", devices.description.layout.cmdqv, cmdqv.clone())?;
            }
        }
        Ok(DeviceManager {
            bus: Arc::new(bus),
            uart,
            vsmmus,
            segments,
            host,
            passthrough,
            disks,
            nets,
        })
    }

    /// Deliver what the hosts reported since the last call: SMMU events
    /// into guest event queues, CMD-QV queue errors into the error maps.
    pub fn poll(&self) {
        for v in &self.vsmmus {
            v.backend.events_taken();
            lock_unpoisoned(&v.smmu).process_events();
            if let Some(cmdqv) = &v.cmdqv {
                lock_unpoisoned(cmdqv).poll_host_errors();
            }
        }
    }

    /// One line per vSMMU: what its trapped queue, its host backend and its
    /// VCMDQs did. The figures behind "backend calls per unmap".
    pub fn stats(&self) -> Vec<String> {
        self.vsmmus
            .iter()
            .map(|v| {
                let cmdq = lock_unpoisoned(&v.smmu).cmdq_stats();
                let counts = v.backend.call_counts();
                let count = |key: &str| counts.get(key).copied().unwrap_or(0);
                format!(
                    "vsmmu{}: trapped_cmds={} trapped_syncs={} invalidate_calls={} \
                     install_ste_calls={} vcmdq_cmds={} vcmdq_syncs={} hw_queue_allocs={}",
                    v.description.index,
                    cmdq.commands,
                    cmdq.syncs,
                    count("invalidate"),
                    count("install_ste"),
                    count("vcmdq_exec"),
                    count("vcmdq_exec:CMD_SYNC"),
                    count("hw_queue_alloc"),
                )
            })
            .collect()
    }

    /// Tear down in the hardware's order: for every CMD-QV, page0 leaves
    /// the guest and its HW queues are freed in descending index (the
    /// model's shutdown does both, in that order); the passthrough
    /// functions are quiesced (BAR slots out, vectors unwired, reset,
    /// closed); only then do the vSMMUs and their backends (the vIOMMU
    /// objects) go, and last the bindings and the IOAS.
    pub fn shutdown(&mut self) {
        for v in &self.vsmmus {
            if let Some(cmdqv) = &v.cmdqv {
                log::info!(target: "vmm", "vSMMU {}: CMD-QV teardown", v.description.index);
                lock_unpoisoned(cmdqv).shutdown();
            }
        }
        let bound = std::mem::take(&mut self.passthrough);
        for (segment, functions) in self.segments.drain(..).zip(bound) {
            lock_unpoisoned(&segment).release();
            for (id, path) in functions {
                events::emit(Event::DeviceReleased { id, path });
            }
        }
        // The models stay reachable from the MMIO bus after this, so
        // dropping our handles would not release the host objects: the
        // vIOMMU is torn down explicitly, before the IOAS it hangs off.
        for v in self.vsmmus.drain(..) {
            let index = v.description.index;
            v.backend.release();
            log::info!(target: "vmm", "vSMMU {index}: vIOMMU released");
            events::emit(Event::ViommuReleased { vsmmu: index });
        }
        if self.host.take().is_some() {
            log::info!(target: "vmm", "iommufd: passthrough functions unbound, IOAS destroyed");
        }
    }
}

impl Drop for DeviceManager {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn build_vsmmu(
    vm: &VmDescription,
    description: &VsmmuDescription,
    mem: &GuestMemory,
    chip: &Arc<dyn IrqChip>,
    page0: &Arc<dyn GuestMapper>,
    host: Option<&HostIommu>,
) -> Result<VsmmuDevices, DeviceError> {
    let index = description.index;
    let err = |reason: String| DeviceError::Vsmmu { index, reason };
    let l = &description.layout;
    let behind: Vec<_> = vm
        .devices
        .iter()
        .filter(|d| d.vsmmu == Some(index))
        .collect();
    let backend = match host {
        Some(host) => {
            let functions: Vec<_> = behind
                .iter()
                .filter(|d| d.kind == DeviceKind::Passthrough)
                .filter_map(|d| {
                    let path = vm.config.devices.get(d.config_index)?.path.clone();
                    Some((path, d.stream_id()))
                })
                .collect();
            VsmmuHost::Iommufd(host.viommu(description.cmdqv, &functions)?)
        }
        None => VsmmuHost::Emulated(EmulatedBackend::counting_only()),
    };
    let smmu_irq = Arc::new(RoutedInterrupts::new(
        chip.clone(),
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
    let mut smmu = Smmuv3::new(&model_config, host_smmu, mem.clone(), smmu_irq)
        .map_err(|e| err(e.to_string()))?;
    smmu.set_guest_error_listener(events::guest_error_listener(GuestErrorDevice::Vsmmu(index)));

    let cmdqv = if description.cmdqv {
        let mapped = vm.config.vsmmu.page0_mode() == Page0Mode::Mapped;
        // One sink for the CMD-QV's error interrupt and its VCMDQs' CMD_SYNC
        // MSIs, which carry the vSMMU's ITS DeviceID like the SMMU's own.
        let irq = Arc::new(RoutedInterrupts::new(
            chip.clone(),
            vec![(IrqLine::Cmdqv, l.cmdqv_gsiv)],
            l.its_device_id,
        ));
        let host = Box::new(EventingCmdqv::new(
            backend.cmdqv(mem, irq.clone(), mapped).map_err(err)?,
            index,
        ));
        let config = CmdqvConfig {
            cmdqs: smmu.id_registers().cmdq_log2size() as u8,
            ..CmdqvConfig::default()
        };
        let mut model =
            Cmdqv::new(host, mem.clone(), irq, config).map_err(|e| err(e.to_string()))?;
        model
            .check_device_count(behind.len())
            .map_err(|e| err(e.to_string()))?;
        let mut slot = Page0Slot {
            mapper: page0.clone(),
            cmdqv: index,
            window: l.cmdqv,
            installed: None,
        };
        model.set_page0_listener(Box::new(move |event| slot.apply(event)));
        model
            .set_guest_error_listener(events::guest_error_listener(GuestErrorDevice::Cmdqv(index)));
        Some(Arc::new(Mutex::new(model)))
    } else {
        None
    };

    for device in &behind {
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

/// The page0 memory slot of one CMD-QV, installed and removed as its
/// model says ([`Page0Event`]).
struct Page0Slot {
    mapper: Arc<dyn GuestMapper>,
    cmdqv: u32,
    window: Range,
    installed: Option<SlotId>,
}

impl Page0Slot {
    fn apply(&mut self, event: Page0Event) {
        let page0 = self.window.base + CMDQV_VINTF0_PAGE0_OFFSET;
        let (what, result) = match event {
            Page0Event::Map { offset, region } => {
                let (gpa, length) = (self.window.base + offset, region.len());
                let result = self.mapper.add_region(gpa, region).map(|slot| {
                    self.installed = Some(slot);
                    events::emit(Event::Page0Mapped {
                        cmdqv: self.cmdqv,
                        gpa,
                        length,
                    });
                });
                ("installed", result)
            }
            Page0Event::Unmap { offset } => {
                let Some(slot) = self.installed.take() else {
                    return;
                };
                let gpa = self.window.base + offset;
                let result = match self.mapper.remove_region(slot) {
                    Ok(_page0) => {
                        events::emit(Event::Page0Unmapped {
                            cmdqv: self.cmdqv,
                            gpa,
                        });
                        Ok(())
                    }
                    Err(e) => {
                        // Still installed: a later teardown tries again.
                        self.installed = Some(slot);
                        Err(e)
                    }
                };
                ("removed", result)
            }
        };
        match result {
            Ok(()) => log::info!(target: "vmm", "CMD-QV page0 slot {what} at {page0:#x}"),
            // The guest keeps working through the trapped path: the model
            // serves page0 accesses that reach it.
            Err(e) => log::error!(target: "vmm", "CMD-QV page0 at {page0:#x}: {}", Sentence(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use arch::layout::CMDQV_VINTF0_PAGE0_OFFSET;
    use devices::emulated::EmulatedBackend;
    use devices::mapping::Mapping;
    use pci::MapError;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::config::{VmConfig, VsmmuConfig};
    use crate::irqchip::tests::RecordingChip;

    /// No MSI routing (no test here has a passthrough function).
    struct NoRouter;

    impl MsiRouter for NoRouter {
        fn allocate_gsi(&self) -> Option<u32> {
            None
        }
        fn set_msi_route(
            &self,
            _: u32,
            _: pci::vfio::caps::MsiMessage,
            _: u32,
        ) -> Result<(), MsiError> {
            Err(MsiError::NoRouting)
        }
        fn free_gsi(&self, _: u32) {}
        fn irqfd(
            &self,
            _: &vmm_sys_util::eventfd::EventFd,
            _: u32,
            _: bool,
        ) -> Result<(), MsiError> {
            Err(MsiError::NoRouting)
        }
    }

    struct NoNotify;

    impl NotifyRegistrar for NoNotify {
        fn register(&self, _: u64, _: &EventFd) -> std::io::Result<()> {
            Err(std::io::Error::other("no ioeventfds"))
        }
        fn unregister(&self, _: u64, _: &EventFd) -> std::io::Result<()> {
            Err(std::io::Error::other("no ioeventfds"))
        }
    }

    /// Records page0 map/unmap, and what the backend had done by then;
    /// holds each slot's mapping like a VM.
    #[derive(Default)]
    struct RecordingMapper {
        events: Mutex<Vec<String>>,
        backend: Mutex<Option<EmulatedBackend>>,
        slots: Mutex<Vec<(u64, Arc<Mapping>)>>,
    }

    impl RecordingMapper {
        /// The backend calls made since the last take, as `backend ...` lines.
        fn take_backend_calls(&self) -> Vec<String> {
            self.backend
                .lock()
                .unwrap()
                .as_ref()
                .map(|b| {
                    b.take_calls()
                        .iter()
                        .map(|c| format!("backend {c}"))
                        .collect()
                })
                .unwrap_or_default()
        }

        fn note(&self, what: String) {
            let calls = self.take_backend_calls();
            let mut events = self.events.lock().unwrap();
            events.extend(calls);
            events.push(what);
        }
    }

    impl GuestMapper for RecordingMapper {
        fn add_region(&self, gpa: u64, mapping: Arc<Mapping>) -> Result<SlotId, MapError> {
            self.note(format!("map {gpa:#x} {:#x}", mapping.len()));
            let mut slots = self.slots.lock().unwrap();
            slots.push((gpa, mapping));
            Ok(SlotId::new(slots.len() as u32 - 1))
        }
        fn remove_region(&self, slot: SlotId) -> Result<Arc<Mapping>, MapError> {
            let slots = self.slots.lock().unwrap();
            let (gpa, mapping) = slots
                .get(slot.get() as usize)
                .cloned()
                .ok_or(MapError::Unknown(slot.get()))?;
            drop(slots);
            self.note(format!("unmap {gpa:#x}"));
            Ok(mapping)
        }
    }

    fn vm(vsmmu: &str) -> VmDescription {
        let config = VmConfig {
            vsmmu: VsmmuConfig::parse(vsmmu).unwrap(),
            memory: crate::config::MemoryConfig {
                size: 64 << 20,
                ..Default::default()
            },
            ..VmConfig::default()
        };
        let host = crate::host_topology::HostTopology::read(&config).unwrap();
        VmDescription::new(config, &host, 16).unwrap()
    }

    fn write32(bus: &MmioBus, addr: u64, value: u32) {
        bus.write(addr, &value.to_le_bytes());
    }

    #[test]
    fn teardown_unmaps_page0_before_freeing_hw_queues_in_descending_order() {
        let vm = vm("cmdqv,backend=emulated,page0=mapped");
        let mem =
            crate::memory::create(&vm.layout, crate::memory::Backing::default(), &[]).unwrap();
        let chip = Arc::new(RecordingChip::default());
        let mapper = Arc::new(RecordingMapper::default());
        let mut dm = DeviceManager::new(
            &vm,
            &mem,
            chip,
            Arc::new(NoRouter),
            mapper.clone(),
            Arc::new(NoNotify),
            Consoles {
                uart: Box::new(std::io::sink()),
                virtio_pty: None,
            },
        )
        .unwrap();
        let VsmmuHost::Emulated(backend) = &dm.vsmmus[0].backend else {
            panic!("backend=emulated");
        };
        *mapper.backend.lock().unwrap() = Some(backend.clone());
        let base = vm.vsmmus[0].layout.cmdqv.base;
        let ram = vm.layout.ram.base;
        mem.write_obj(0u64, GuestAddress(ram)).unwrap();
        // The Linux driver's order: CMDQV_EN, VINTF0 EN, map both LVCMDQs,
        // then each queue's BASE (4 KiB queues at the start of RAM).
        write32(&dm.bus, base, 1);
        write32(&dm.bus, base + 0x1000, 1);
        write32(&dm.bus, base + 0x200, 1);
        write32(&dm.bus, base + 0x204, (1 << 1) | 1);
        dm.bus.write(base + 0x4_0000, &(ram | 8).to_le_bytes());
        dm.bus
            .write(base + 0x4_0080, &((ram + 0x1000) | 8).to_le_bytes());
        dm.shutdown();
        let events = mapper.events.lock().unwrap().clone();
        let page0 = base + CMDQV_VINTF0_PAGE0_OFFSET;
        let position = |needle: &str| {
            events
                .iter()
                .position(|e| e.starts_with(needle))
                .unwrap_or_else(|| panic!("{needle} missing in {events:#?}"))
        };
        assert!(position(&format!("map {page0:#x}")) < position("backend hw_queue_alloc index=0"));
        let unmap = position(&format!("unmap {page0:#x}"));
        let backend = mapper.take_backend_calls();
        let free1 = backend
            .iter()
            .position(|c| c.starts_with("backend hw_queue_free index=1"));
        let free0 = backend
            .iter()
            .position(|c| c.starts_with("backend hw_queue_free index=0"));
        assert!(
            unmap + 1 == events.len(),
            "nothing after the unmap yet: {events:#?}"
        );
        assert!(
            !events.iter().any(|e| e.contains("hw_queue_free")),
            "a HW queue was freed while page0 was still mapped: {events:#?}"
        );
        assert!(
            free1.is_some() && free0.is_some() && free1 < free0,
            "{backend:#?}"
        );
    }

    /// The devices of `vm` with recording interrupt and page0 sinks.
    fn build(vm: &VmDescription) -> Result<DeviceManager, DeviceError> {
        let mem =
            crate::memory::create(&vm.layout, crate::memory::Backing::default(), &[]).unwrap();
        DeviceManager::new(
            vm,
            &mem,
            Arc::new(RecordingChip::default()),
            Arc::new(NoRouter),
            Arc::new(RecordingMapper::default()),
            Arc::new(NoNotify),
            Consoles {
                uart: Box::new(std::io::sink()),
                virtio_pty: None,
            },
        )
    }

    #[test]
    #[ignore = "needs a host without /dev/iommu: the scripts/test.sh host and aarch64 lanes run it"]
    fn iommufd_backend_without_dev_iommu_names_the_fix() {
        let dev = std::path::Path::new(iommufd::fd::IOMMU_DEV);
        assert!(
            !dev.exists(),
            "a host with iommufd cannot give this refusal"
        );
        let err = build(&vm("smmuv3")).err().unwrap();
        assert!(err.to_string().contains("cannot open /dev/iommu"), "{err}");
        assert!(err.to_string().contains("backend=emulated"), "{err}");
    }

    #[test]
    fn guest_cmdqs_fits_one_host_page_of_guest_ram() {
        let vm = vm("cmdqv,backend=emulated");
        let dm = build(&vm).unwrap();
        let page = vm.host_page_size;
        let v = dm.vsmmus.first().unwrap();
        let cmdqs = lock_unpoisoned(&v.smmu).id_registers().cmdq_log2size();
        assert_eq!(16u64 << cmdqs, page, "4 KiB pages: 8, 64 KiB: 12");
    }

    #[test]
    fn every_device_window_is_on_the_bus() {
        let vm = vm("cmdqv,backend=emulated");
        let dm = build(&vm).unwrap();
        let names: Vec<&str> = dm.bus.exit_counts().0.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "uart", "pci-ecam", "pci-bars", "pci-bars", "smmuv3", "cmdqv"
            ]
        );
        // SMMU IDR0 reads through the bus: stage 1 only, AArch64 tables.
        let mut idr0 = [0u8; 4];
        dm.bus.read(vm.vsmmus[0].layout.smmu.base, &mut idr0);
        let idr0 = u32::from_le_bytes(idr0);
        assert_eq!(idr0 & 0b11, 0b10, "S1P=1, S2P=0: {idr0:#x}");
    }
}
