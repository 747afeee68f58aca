//! The PCI segments: each segment's functions in the description's order,
//! one builder per device kind (passthrough, test endpoint, virtio-blk,
//! virtio-console, virtio-rng, virtio-net, virtio-vsock), the BARs placed,
//! and the segment's ECAM and BAR windows on the bus.

use std::sync::{Arc, Mutex};

use arch::layout::PciSegmentLayout;
use devices::GuestMemory;
use pci::test_endpoint::TestEndpoint;
use pci::{PciDevice, PciSegment};
use virtio_devices::block::BlockCounters;
use virtio_devices::net::NetCounters;

use super::error::DeviceError;
use super::passthrough::{self, PassthroughWiring};
use crate::bus::MmioBus;
use crate::description::{DeviceKind, PlacedDevice, VmDescription};
use crate::virtio::{self, VirtioWiring};

/// The (id, host path) of a segment's passthrough functions.
pub(super) type Bound = Vec<(String, String)>;

/// Host bridges, and beside each its [`Bound`] functions.
pub(super) type BuiltSegments = (Vec<Arc<Mutex<PciSegment>>>, Vec<Bound>);

/// Builds the VM's PCI functions, segment by segment, and keeps the
/// counters of the virtio disks and net devices it made.
pub(super) struct Functions<'a> {
    /// The VM.
    pub vm: &'a VmDescription,
    /// Guest RAM (virtio queues).
    pub mem: &'a GuestMemory,
    /// What passthrough functions are wired to, when the VM has a host
    /// side.
    pub passthrough: Option<PassthroughWiring<'a>>,
    /// What virtio functions are wired to.
    pub virtio: VirtioWiring,
    /// Each virtio disk's id and I/O counters, as built.
    pub disks: Vec<(String, Arc<BlockCounters>)>,
    /// Each virtio-net device's id and traffic counters, as built.
    pub nets: Vec<(String, Arc<NetCounters>)>,
}

impl Functions<'_> {
    /// Every segment of the VM, in order, with its functions on `bus`.
    pub fn segments(&mut self, bus: &mut MmioBus) -> Result<BuiltSegments, DeviceError> {
        let count = self.vm.layout.pci_segments.len();
        let (mut segments, mut passthrough) =
            (Vec::with_capacity(count), Vec::with_capacity(count));
        for segment in &self.vm.layout.pci_segments {
            let (ecam, bound) = self.segment(segment, bus)?;
            segments.push(ecam);
            passthrough.push(bound);
        }
        Ok((segments, passthrough))
    }

    /// The host bridge of `segment` with every function placed there, its
    /// BARs allocated (firmware's job, done before the guest looks), and
    /// its ECAM and BAR windows on `bus`.
    fn segment(
        &mut self,
        segment: &PciSegmentLayout,
        bus: &mut MmioBus,
    ) -> Result<(Arc<Mutex<PciSegment>>, Bound), DeviceError> {
        let mut ecam = PciSegment::new(*segment);
        let mut bound = Vec::new();
        for device in self.vm.devices.iter().filter(|d| d.segment == segment.id) {
            let function = self.function(segment, device, &mut bound)?;
            ecam.add_device(device.bdf, function)
                .map_err(|cause| DeviceError::Slot {
                    id: device.id.clone(),
                    cause,
                })?;
        }
        ecam.allocate_bars().map_err(|cause| DeviceError::Bars {
            segment: segment.id,
            cause,
        })?;
        let ecam = Arc::new(Mutex::new(ecam));
        bus.register("pci-ecam", segment.ecam, ecam.clone())?;
        bus.register("pci-bars", segment.mmio32, ecam.clone())?;
        bus.register("pci-bars", segment.mmio64, ecam.clone())?;
        Ok((ecam, bound))
    }

    /// The function of `device`, by its kind; a passthrough function's
    /// (id, host path) goes to `bound`.
    fn function(
        &mut self,
        segment: &PciSegmentLayout,
        device: &PlacedDevice,
        bound: &mut Bound,
    ) -> Result<Box<dyn PciDevice>, DeviceError> {
        let (vm, mem, wiring) = (self.vm, self.mem, &self.virtio);
        Ok(match (device.kind, &self.passthrough) {
            (DeviceKind::Passthrough, Some(host)) => {
                let (function, path) = passthrough::function(vm, segment, device, host)?;
                bound.push((device.id.clone(), path));
                Box::new(function)
            }
            // needs_host() holds whenever there is a `--device`, so a
            // passthrough function has its host side here.
            (DeviceKind::Passthrough | DeviceKind::TestEndpoint, _) => {
                test_endpoint(segment, device)
            }
            (DeviceKind::VirtioBlock, _) => {
                let (function, counters) = virtio::block(vm, device, mem, wiring)?;
                self.disks.push((device.id.clone(), counters));
                function
            }
            (DeviceKind::VirtioConsole, _) => virtio::console(vm, device, mem, wiring)?,
            (DeviceKind::VirtioRng, _) => virtio::rng(vm, device, mem, wiring)?,
            (DeviceKind::VirtioNet, _) => {
                let (function, counters) = virtio::net(vm, device, mem, wiring)?;
                self.nets.push((device.id.clone(), counters));
                function
            }
            (DeviceKind::VirtioVsock, _) => virtio::vsock(vm, device, mem, wiring)?,
        })
    }
}

/// An emulated test endpoint (`--test-device`).
fn test_endpoint(segment: &PciSegmentLayout, device: &PlacedDevice) -> Box<dyn PciDevice> {
    log::info!(
        target: "vmm",
        "test endpoint {} at {:04x}:{}, StreamID {:#x}",
        device.id, segment.id, device.bdf, device.stream_id()
    );
    Box::new(TestEndpoint::new())
}
