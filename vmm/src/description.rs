//! The VM description: where every segment, vSMMU and device sits. Built
//! from a validated [`VmConfig`] without touching the host, so the firmware
//! tables of a VM can be produced and inspected anywhere.

use arch::layout::{Layout, LayoutError, Topology, VsmmuLayout};
use pci::{Bdf, SlotAllocator, SlotError};

use crate::config::{ConsoleConfig, VmConfig, VsmmuKind};

/// The host kernel's software MSI window for an SMMUv3 (`MSI_IOVA_BASE`,
/// `MSI_IOVA_LENGTH` in arm-smmu-v3; `msi` in a function's
/// `iommu_group/reserved_regions`): iommufd maps the host ITS doorbell there
/// in stage 2 and vfio-pci programs the physical MSI address inside it. The
/// IORT gives passthrough functions behind a vSMMU an identity RMR over it,
/// and the host backend checks each function's group reports the same.
pub const HOST_SW_MSI: arch::layout::Range = arch::layout::Range {
    base: 0x0800_0000,
    size: 0x10_0000,
};

/// The virtio-console's device id (counters, logs).
pub const CONSOLE_ID: &str = "_console";

/// IORT node identifier of the ITS group. vSMMU `i` is `i + 1`; the PCI
/// root complex of segment `s` is `1 + vsmmus + s`.
pub const IORT_ITS_ID: u32 = 0;

/// One vSMMU of the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsmmuDescription {
    /// Index in the VM (and in the layout).
    pub index: u32,
    /// The PCI segment whose devices it translates.
    pub segment: u16,
    /// Has a Tegra241 CMDQ-V.
    pub cmdqv: bool,
    /// IORT SMMUv3 node identifier; the NVDA200C `_UID`.
    pub iort_id: u32,
    /// Windows and interrupts.
    pub layout: VsmmuLayout,
}

/// What backs a placed PCI function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A host device through VFIO (`--device`).
    Passthrough,
    /// An emulated test endpoint (`--test-device`).
    TestEndpoint,
    /// A virtio-blk disk (`--disk`); never behind a vSMMU.
    VirtioBlock,
    /// The virtio-console (`--console`, one per VM, segment 0); never
    /// behind a vSMMU.
    VirtioConsole,
}

/// One PCI function of the VM, placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedDevice {
    /// Passthrough or emulated.
    pub kind: DeviceKind,
    /// Index of its `--device` / `--test-device` option.
    pub config_index: usize,
    /// Its id.
    pub id: String,
    /// Segment.
    pub segment: u16,
    /// Address on the segment.
    pub bdf: Bdf,
    /// The vSMMU translating it, if `iommu=on`.
    pub vsmmu: Option<u32>,
}

impl PlacedDevice {
    /// The StreamID the guest sees for this device through IORT (the RID:
    /// the root complex maps RIDs to StreamIDs one to one); this is the
    /// `virt_id` of its vDEVICE.
    pub fn stream_id(&self) -> u32 {
        u32::from(self.bdf.rid())
    }
}

/// The whole VM.
#[derive(Clone, Debug)]
pub struct VmDescription {
    /// The configuration it was built from.
    pub config: VmConfig,
    /// The address map.
    pub layout: Layout,
    /// vSMMUs, by index.
    pub vsmmus: Vec<VsmmuDescription>,
    /// Devices, in command-line order.
    pub devices: Vec<PlacedDevice>,
}

/// Why a configuration cannot be laid out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DescriptionError {
    /// The address map has no room.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A segment has too many devices.
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// More devices behind a CMD-QV than it has SID_MATCH slots.
    #[error(
        "{count} devices with iommu=on on PCI segment {segment}, but its CMD-QV has {max} \
         StreamID slots; move devices to another pci_segment"
    )]
    TooManyVsids {
        /// Segment.
        segment: u16,
        /// Devices behind its vSMMU.
        count: usize,
        /// SID slots of the CMD-QV.
        max: usize,
    },
    /// A device without iommu on a segment with a vSMMU, or the reverse, is fine; a device
    /// with iommu=on needs a vSMMU, which validate() checked. This variant covers a config
    /// that was not validated.
    #[error("device {0} has iommu=on but the VM has no vSMMU")]
    NoVsmmu(String),
}

impl VmDescription {
    /// Place everything. `cmdqv_sid_slots` is how many vDEVICEs one CMD-QV
    /// takes (1 << log2vsids of the CMD-QV the VM exposes).
    pub fn new(config: VmConfig, cmdqv_sid_slots: usize) -> Result<Self, DescriptionError> {
        let segments = config
            .devices
            .iter()
            .map(|d| d.pci_segment)
            .chain(config.test_devices.iter().map(|d| d.pci_segment))
            .chain(config.disks.iter().map(|d| d.pci_segment))
            .map(|s| s.saturating_add(1))
            .max()
            .unwrap_or(1);
        let vsmmu_segments = vsmmu_segments(&config, segments);
        let layout = Layout::new(Topology {
            vcpus: config.cpus.boot,
            ram_size: config.memory.size,
            pci_segments: segments,
            vsmmus: u32::try_from(vsmmu_segments.len()).unwrap_or(u32::MAX),
        })?;
        let cmdqv = config.vsmmu.kind == VsmmuKind::Cmdqv;
        let vsmmus: Vec<VsmmuDescription> = vsmmu_segments
            .iter()
            .zip(&layout.vsmmus)
            .map(|(segment, vlayout)| VsmmuDescription {
                index: vlayout.index,
                segment: *segment,
                cmdqv,
                iort_id: vlayout.index + 1,
                layout: *vlayout,
            })
            .collect();

        let mut slots: Vec<SlotAllocator> = (0..segments).map(SlotAllocator::new).collect();
        let console_id = CONSOLE_ID.to_string();
        let functions = config
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| (DeviceKind::Passthrough, i, &d.id, d.pci_segment, d.iommu))
            .chain(
                config
                    .test_devices
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (DeviceKind::TestEndpoint, i, &d.id, d.pci_segment, d.iommu)),
            )
            // Virtio functions come after the others, so adding a disk or
            // the console moves no passthrough or test function.
            .chain(
                config
                    .disks
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (DeviceKind::VirtioBlock, i, &d.id, d.pci_segment, false)),
            )
            .chain((config.console != ConsoleConfig::Off).then_some((
                DeviceKind::VirtioConsole,
                0,
                &console_id,
                0,
                false,
            )));
        let mut devices = Vec::with_capacity(config.devices.len() + config.test_devices.len());
        for (kind, config_index, id, segment, iommu) in functions {
            let bdf = slots
                .get_mut(usize::from(segment))
                .ok_or(LayoutError::TooManySegments(segment))?
                .allocate()?;
            let vsmmu = if iommu {
                let v = vsmmus
                    .iter()
                    .find(|v| v.segment == segment)
                    .ok_or_else(|| DescriptionError::NoVsmmu(id.clone()))?;
                Some(v.index)
            } else {
                None
            };
            devices.push(PlacedDevice {
                kind,
                config_index,
                id: id.clone(),
                segment,
                bdf,
                vsmmu,
            });
        }
        if cmdqv {
            for v in &vsmmus {
                let count = devices.iter().filter(|d| d.vsmmu == Some(v.index)).count();
                if count > cmdqv_sid_slots {
                    return Err(DescriptionError::TooManyVsids {
                        segment: v.segment,
                        count,
                        max: cmdqv_sid_slots,
                    });
                }
            }
        }
        Ok(VmDescription {
            config,
            layout,
            vsmmus,
            devices,
        })
    }

    /// The vSMMU of a segment, if it has one.
    pub fn vsmmu_of_segment(&self, segment: u16) -> Option<&VsmmuDescription> {
        self.vsmmus.iter().find(|v| v.segment == segment)
    }

    /// IORT identifier of segment `s`'s root complex node.
    pub fn iort_rc_id(&self, segment: u16) -> u32 {
        1 + self.vsmmus.len() as u32 + u32::from(segment)
    }
}

/// Segments that get a vSMMU: every segment with an `iommu=on` device; with
/// a vSMMU requested but no such device (the emulated backend), segment 0.
fn vsmmu_segments(config: &VmConfig, segments: u16) -> Vec<u16> {
    if config.vsmmu.kind == VsmmuKind::Off {
        return Vec::new();
    }
    let with_devices: Vec<u16> = (0..segments)
        .filter(|s| {
            config
                .devices
                .iter()
                .any(|d| d.iommu && d.pci_segment == *s)
                || config
                    .test_devices
                    .iter()
                    .any(|d| d.iommu && d.pci_segment == *s)
        })
        .collect();
    if with_devices.is_empty() {
        vec![0]
    } else {
        with_devices
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeviceConfig, VsmmuConfig};

    fn config(vsmmu: &str, devices: &[&str]) -> VmConfig {
        VmConfig {
            vsmmu: VsmmuConfig::parse(vsmmu).unwrap(),
            devices: devices
                .iter()
                .enumerate()
                .map(|(i, d)| DeviceConfig::parse(d, i).unwrap())
                .collect(),
            ..VmConfig::default()
        }
    }

    #[test]
    fn devices_get_consecutive_slots_and_rid_stream_ids() {
        let vm = VmDescription::new(
            config(
                "cmdqv,backend=emulated",
                &[
                    "path=/dev/vfio/devices/vfio0,iommu=on",
                    "path=/dev/vfio/devices/vfio1,iommu=on",
                ],
            ),
            16,
        )
        .unwrap();
        assert_eq!(vm.vsmmus.len(), 1);
        assert_eq!(vm.vsmmus[0].iort_id, 1);
        assert_eq!(vm.devices[0].stream_id(), 0x08);
        assert_eq!(vm.devices[1].stream_id(), 0x10);
        assert_eq!(vm.devices[1].vsmmu, Some(0));
    }

    #[test]
    fn each_segment_with_iommu_devices_gets_its_own_vsmmu() {
        let vm = VmDescription::new(
            config(
                "smmuv3,backend=emulated",
                &[
                    "path=/dev/vfio/devices/vfio0,iommu=on",
                    "path=/dev/vfio/devices/vfio1,iommu=on,pci_segment=1",
                    "path=/dev/vfio/devices/vfio2,pci_segment=2",
                ],
            ),
            16,
        )
        .unwrap();
        assert_eq!(vm.layout.pci_segments.len(), 3);
        let segments: Vec<u16> = vm.vsmmus.iter().map(|v| v.segment).collect();
        assert_eq!(segments, [0, 1]);
        assert_eq!(vm.devices[1].vsmmu, Some(1));
        assert_eq!(vm.devices[2].vsmmu, None);
        assert_eq!(vm.iort_rc_id(2), 5);
    }

    #[test]
    fn test_endpoints_are_placed_after_passthrough_devices_and_get_vsmmus() {
        let mut c = config(
            "cmdqv,backend=emulated",
            &["path=/dev/vfio/devices/vfio0,iommu=on"],
        );
        c.test_devices = vec![
            crate::config::TestDeviceConfig::parse("id=dma0", 0).unwrap(),
            crate::config::TestDeviceConfig::parse("id=dma1,pci_segment=1", 1).unwrap(),
        ];
        let vm = VmDescription::new(c, 16).unwrap();
        let kinds: Vec<(DeviceKind, u32, Option<u32>)> = vm
            .devices
            .iter()
            .map(|d| (d.kind, d.stream_id(), d.vsmmu))
            .collect();
        assert_eq!(
            kinds,
            [
                (DeviceKind::Passthrough, 0x08, Some(0)),
                (DeviceKind::TestEndpoint, 0x10, Some(0)),
                (DeviceKind::TestEndpoint, 0x08, Some(1)),
            ]
        );
    }

    #[test]
    fn emulated_vsmmu_without_devices_sits_on_segment_zero() {
        let vm = VmDescription::new(config("cmdqv,backend=emulated", &[]), 16).unwrap();
        assert_eq!(vm.vsmmus.len(), 1);
        assert_eq!(vm.vsmmus[0].segment, 0);
    }

    #[test]
    fn more_devices_than_cmdqv_sid_slots_is_an_error() {
        let devices: Vec<String> = (0..3)
            .map(|i| format!("path=/dev/vfio/devices/vfio{i},iommu=on"))
            .collect();
        let refs: Vec<&str> = devices.iter().map(String::as_str).collect();
        let err = VmDescription::new(config("cmdqv,backend=emulated", &refs), 2).unwrap_err();
        assert_eq!(
            err,
            DescriptionError::TooManyVsids {
                segment: 0,
                count: 3,
                max: 2
            }
        );
        // A plain SMMUv3 has no SID slot limit.
        VmDescription::new(config("smmuv3,backend=emulated", &refs), 2).unwrap();
    }

    #[test]
    fn layout_errors_pass_through() {
        let mut c = config("off", &[]);
        c.cpus.boot = 1000;
        assert!(matches!(
            VmDescription::new(c, 16),
            Err(DescriptionError::Layout(LayoutError::TooManyVcpus(1000)))
        ));
    }
}
