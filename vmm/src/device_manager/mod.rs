//! Builds the VM's devices from its description and puts them on the MMIO
//! bus, one builder per device kind, in this order: the host side of the
//! passthrough functions ([`passthrough`]); the PL011 console; per vSMMU
//! the SMMUv3 model and (with `cmdqv`) its CMD-QV, both over one host
//! backend ([`vsmmu`]; the CMD-QV's page0 slot in [`page0`]); one PCIe
//! ECAM host bridge per segment with its functions ([`segments`]); the
//! vSMMU windows. Owns the teardown order: page0 leaves the guest and HW
//! queues are freed (descending) before any vIOMMU object goes.

mod error;
mod page0;
mod passthrough;
mod segments;
mod vsmmu;

use std::sync::{Arc, Mutex};

use arch::layout::{Range, UART_BASE, UART_GSIV, UART_SIZE};
use devices::irq::IrqLine;
use devices::legacy::Pl011;
use devices::{GuestMemory, lock_unpoisoned};
use pci::PciSegment;
use pci::vfio::MsiRouter;
use virtio_devices::NotifyRegistrar;
use virtio_devices::block::BlockCounters;
use virtio_devices::net::NetCounters;

use crate::bus::MmioBus;
use crate::description::VmDescription;
use crate::events::{self, Event};
use crate::host_backend::HostIommu;
use crate::irqchip::{IrqChip, RoutedInterrupts};
use crate::virtio::VirtioWiring;
use passthrough::PassthroughWiring;
use segments::Functions;
use vsmmu::VsmmuWiring;

pub use error::DeviceError;
pub use pci::GuestMapper;
pub use vsmmu::VsmmuDevices;

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
    passthrough: Vec<segments::Bound>,
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
        let virtio = VirtioWiring {
            router: router.clone(),
            notify,
            console_pty: virtio_pty,
        };
        let host = passthrough::host_iommu(vm, mem)?;
        let mut bus = MmioBus::new();
        let uart = add_uart(&mut bus, &chip, console)?;
        // The vSMMUs first: a passthrough function behind one translates its
        // MSI doorbell through it.
        let vsmmu_wiring = VsmmuWiring {
            mem,
            chip: &chip,
            page0: &page0,
            host: host.as_ref(),
        };
        let vsmmus = vm
            .vsmmus
            .iter()
            .map(|description| vsmmu::build(vm, description, &vsmmu_wiring))
            .collect::<Result<Vec<_>, _>>()?;
        let mut functions = Functions {
            vm,
            mem,
            passthrough: host.as_ref().map(|host| PassthroughWiring {
                host,
                vsmmus: &vsmmus,
                router: &router,
                mapper: &page0,
            }),
            virtio,
            disks: Vec::new(),
            nets: Vec::new(),
        };
        let (segments, passthrough) = functions.segments(&mut bus)?;
        let Functions { disks, nets, .. } = functions;
        vsmmu::add_windows(&mut bus, &vsmmus)?;
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

/// The PL011 console on `bus`, its interrupt wired, writing to `console`.
fn add_uart(
    bus: &mut MmioBus,
    chip: &Arc<dyn IrqChip>,
    console: Box<dyn std::io::Write + Send>,
) -> Result<Arc<Mutex<Pl011>>, DeviceError> {
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
    Ok(uart)
}

#[cfg(test)]
mod tests;
