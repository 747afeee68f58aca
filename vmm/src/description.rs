//! The VM description: where every segment, vSMMU and device sits. Built
//! from a validated [`VmConfig`] and the [`HostTopology`] read before it,
//! without touching the host itself, so the firmware tables of a VM can be
//! produced and inspected anywhere.
//!
//! Placement (what QEMU users spell with one `pxb-pcie` + `arm-smmuv3` per
//! host SMMU, done here automatically): every `iommu=on` function whose
//! host SMMU is the same shares one vSMMU (and, with `cmdqv`, one CMD-QV);
//! each vSMMU has a PCI segment of its own, hence its own IORT root
//! complex, SMMUv3 node and NVDA200C companion. A device with an explicit
//! `pci_segment=` goes there; the others of its host SMMU follow it; a
//! host SMMU with no explicit segment takes the lowest segment no other
//! host SMMU holds. Two host SMMUs on one segment would put both behind
//! one vIOMMU, which the kernel refuses (a vIOMMU is one physical SMMU's),
//! so that is refused here, naming both devices. `iommu=off` functions sit
//! on their `pci_segment=` or on segment 0, and so do functions with no
//! known host SMMU (the emulated backend without `host_smmu=`): there
//! `pci_segment=` alone decides, one vSMMU per segment, as before host
//! SMMUs were known.

use std::collections::BTreeMap;

use arch::layout::{Layout, LayoutError, Topology, VsmmuLayout};
use pci::{Bdf, SlotAllocator, SlotError};

use crate::config::{ConsoleConfig, VmConfig, VsmmuKind};
use crate::host_topology::HostTopology;

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
/// The id of the virtio-rng (there is at most one).
pub const RNG_ID: &str = "_rng";

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
    /// The host SMMU behind it (`None`: the emulated backend's unnamed one).
    pub host_smmu: Option<String>,
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
    /// The virtio-rng (`--rng`).
    VirtioRng,
    /// A virtio-net device (`--net`); never behind a vSMMU.
    VirtioNet,
    /// The virtio-vsock (`--vsock`, at most one); never behind a vSMMU.
    VirtioVsock,
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
    /// The host SMMU it sits behind, if `iommu=on` and known.
    pub host_smmu: Option<String>,
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
    /// The host's page size (the granule of BAR mappings and IOAS maps).
    pub host_page_size: u64,
    /// Ids of the passthrough functions whose BARs KVM must map cacheable
    /// (a Grace GPU on nvgrace-gpu-vfio-pci).
    pub cacheable_devices: Vec<String>,
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
    /// Two host SMMUs behind one vSMMU.
    #[error(
        "{first} (host SMMU {first_smmu}) and {second} (host SMMU {second_smmu}) are both on \
         PCI segment {segment}, but one vSMMU can only stand for one host SMMU: drop \
         pci_segment= from one of them (each host SMMU then gets a segment of its own) or give \
         them different segments"
    )]
    HostSmmusShareSegment {
        /// The segment.
        segment: u16,
        /// The device that claimed it first.
        first: String,
        /// Its host SMMU.
        first_smmu: String,
        /// The device that would join it.
        second: String,
        /// Its host SMMU.
        second_smmu: String,
    },
    /// A device without iommu on a segment with a vSMMU, or the reverse, is fine; a device
    /// with iommu=on needs a vSMMU, which validate() checked. This variant covers a config
    /// that was not validated.
    #[error("device {0} has iommu=on but the VM has no vSMMU")]
    NoVsmmu(String),
}

/// One PCI function as placement sees it.
struct Function<'a> {
    kind: DeviceKind,
    config_index: usize,
    id: &'a str,
    iommu: bool,
    explicit: Option<u16>,
    smmu: Option<String>,
}

impl Function<'_> {
    /// How errors and vm.info name it: `--device gpu0`.
    fn name(&self) -> String {
        match self.kind {
            DeviceKind::Passthrough => format!("--device {}", self.id),
            DeviceKind::TestEndpoint => format!("--test-device {}", self.id),
            DeviceKind::VirtioBlock => format!("--disk {}", self.id),
            DeviceKind::VirtioConsole => "--console".to_string(),
            DeviceKind::VirtioRng => "--rng".to_string(),
            DeviceKind::VirtioNet => format!("--net {}", self.id),
            DeviceKind::VirtioVsock => format!("--vsock {}", self.id),
        }
    }
}

/// How an SMMU key prints in errors.
fn smmu_name(smmu: &Option<String>) -> String {
    smmu.clone().unwrap_or_else(|| "(unnamed)".into())
}

/// The segment of every function in `functions`, in order (see the module
/// documentation for the rules).
fn place_segments(functions: &[Function<'_>]) -> Result<Vec<u16>, DescriptionError> {
    // Segment -> (host SMMU, the device that claimed it), explicit claims first.
    let mut claims: BTreeMap<u16, (&Option<String>, &Function<'_>)> = BTreeMap::new();
    let mut home: Vec<(&Option<String>, u16)> = Vec::new();
    // No known host SMMU: the segment given, or 0, and nobody follows it.
    let explicit = |f: &Function<'_>| f.explicit.or(f.smmu.is_none().then_some(0));
    for f in functions.iter().filter(|f| f.iommu) {
        let Some(segment) = explicit(f) else { continue };
        match claims.get(&segment) {
            Some((smmu, first)) if **smmu != f.smmu => {
                return Err(DescriptionError::HostSmmusShareSegment {
                    segment,
                    first: first.name(),
                    first_smmu: smmu_name(smmu),
                    second: f.name(),
                    second_smmu: smmu_name(&f.smmu),
                });
            }
            Some(_) => {}
            None => {
                claims.insert(segment, (&f.smmu, f));
            }
        }
        if f.smmu.is_some() && !home.iter().any(|(smmu, _)| **smmu == f.smmu) {
            home.push((&f.smmu, segment));
        }
    }
    let mut segments = Vec::with_capacity(functions.len());
    for f in functions {
        let segment = match (f.iommu, explicit(f)) {
            (_, Some(segment)) => segment,
            (false, None) => 0,
            (true, None) => match home.iter().find(|(smmu, _)| **smmu == f.smmu) {
                Some((_, segment)) => *segment,
                None => {
                    let free = (0..=u16::MAX)
                        .find(|s| !claims.contains_key(s))
                        .ok_or(LayoutError::TooManySegments(u16::MAX))?;
                    claims.insert(free, (&f.smmu, f));
                    home.push((&f.smmu, free));
                    free
                }
            },
        };
        segments.push(segment);
    }
    Ok(segments)
}

impl VmDescription {
    /// Place everything. `host` is the host's shape (page size, the host
    /// SMMU of each function); `cmdqv_sid_slots` is how many vDEVICEs one
    /// CMD-QV takes (1 << log2vsids of the CMD-QV the VM exposes).
    pub fn new(
        config: VmConfig,
        host: &HostTopology,
        cmdqv_sid_slots: usize,
    ) -> Result<Self, DescriptionError> {
        // RAM is whole 2 MiB blocks (the layout refuses anything else), so
        // whole host pages on every arm64 page size: IOAS maps and KVM
        // slots of it need no further check.
        let smmu_of = |list: &[Option<String>], i: usize| list.get(i).cloned().flatten();
        let functions: Vec<Function<'_>> = config
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| Function {
                kind: DeviceKind::Passthrough,
                config_index: i,
                id: &d.id,
                iommu: d.iommu,
                explicit: d.pci_segment,
                smmu: smmu_of(&host.device_smmus, i),
            })
            .chain(
                config
                    .test_devices
                    .iter()
                    .enumerate()
                    .map(|(i, d)| Function {
                        kind: DeviceKind::TestEndpoint,
                        config_index: i,
                        id: &d.id,
                        iommu: d.iommu,
                        explicit: d.pci_segment,
                        smmu: smmu_of(&host.test_device_smmus, i),
                    }),
            )
            // Virtio functions come after the others, so adding a disk or
            // the console moves no passthrough or test function; they are
            // never behind a vSMMU.
            .chain(config.disks.iter().enumerate().map(|(i, d)| Function {
                kind: DeviceKind::VirtioBlock,
                config_index: i,
                id: &d.id,
                iommu: false,
                explicit: Some(d.pci_segment),
                smmu: None,
            }))
            .chain((config.console != ConsoleConfig::Off).then_some(Function {
                kind: DeviceKind::VirtioConsole,
                config_index: 0,
                id: CONSOLE_ID,
                iommu: false,
                explicit: Some(0),
                smmu: None,
            }))
            .chain(config.rng.is_some().then_some(Function {
                kind: DeviceKind::VirtioRng,
                config_index: 0,
                id: RNG_ID,
                iommu: false,
                explicit: Some(0),
                smmu: None,
            }))
            .chain(config.net.iter().enumerate().map(|(i, n)| Function {
                kind: DeviceKind::VirtioNet,
                config_index: i,
                id: &n.id,
                iommu: false,
                explicit: Some(n.pci_segment),
                smmu: None,
            }))
            .chain(config.vsock.iter().map(|v| Function {
                kind: DeviceKind::VirtioVsock,
                config_index: 0,
                id: &v.id,
                iommu: false,
                explicit: Some(v.pci_segment),
                smmu: None,
            }))
            .collect();
        let placed_segments = place_segments(&functions)?;
        let segments = placed_segments
            .iter()
            .map(|s| s.saturating_add(1))
            .max()
            .unwrap_or(1);
        let vsmmu_segments = vsmmu_segments(&config, &functions, &placed_segments);
        // Each segment's 64-bit window holds its passthrough functions'
        // 64-bit BARs (a Grace GPU's is 128 GiB or more) plus the fixed
        // 64 GiB's worth of room for everything else.
        let mut bar64_needs = vec![arch::layout::PCI_MMIO64_SIZE; usize::from(segments)];
        for (f, segment) in functions.iter().zip(&placed_segments) {
            if f.kind == DeviceKind::Passthrough
                && let Some(need) = bar64_needs.get_mut(usize::from(*segment))
            {
                let bars = host
                    .device_bar64_bytes
                    .get(f.config_index)
                    .copied()
                    .unwrap_or(0);
                *need = need.saturating_add(bars);
            }
        }
        let layout = Layout::new(Topology {
            vcpus: config.cpus.boot,
            ram_size: config.memory.total(),
            pci_segments: segments,
            vsmmus: u32::try_from(vsmmu_segments.len()).unwrap_or(u32::MAX),
        })?
        .fit_mmio64(&bar64_needs)?;
        let cmdqv = config.vsmmu.kind == VsmmuKind::Cmdqv;
        let vsmmus: Vec<VsmmuDescription> = vsmmu_segments
            .iter()
            .zip(&layout.vsmmus)
            .map(|((segment, host_smmu), vlayout)| VsmmuDescription {
                index: vlayout.index,
                segment: *segment,
                cmdqv,
                iort_id: vlayout.index + 1,
                layout: *vlayout,
                host_smmu: host_smmu.clone(),
            })
            .collect();

        let mut slots: Vec<SlotAllocator> = (0..segments).map(SlotAllocator::new).collect();
        let mut devices = Vec::with_capacity(functions.len());
        for (f, segment) in functions.iter().zip(placed_segments) {
            let slots = slots
                .get_mut(usize::from(segment))
                .ok_or(LayoutError::TooManySegments(segment))?;
            // A GPU goes to devfn 0 of its segment, in the host bridge's
            // place: NVIDIA's driver matches its SRAT Generic Initiator
            // entries on devfn 0 and ignores a GPU anywhere else. So does
            // any function a Generic Initiator node names (`--numa
            // device_id=`), whatever its class: its GI entries are then
            // found by that rule too. A second such function on the
            // segment gets the next slot.
            let gpu = f.kind == DeviceKind::Passthrough
                && (host
                    .gpu_devices
                    .get(f.config_index)
                    .copied()
                    .unwrap_or(false)
                    || config
                        .numa
                        .iter()
                        .any(|n| n.device_id.as_deref() == Some(f.id)));
            let bdf = match gpu.then(|| slots.take_device_zero()).flatten() {
                Some(bdf) => bdf,
                None => slots.allocate()?,
            };
            let vsmmu = if f.iommu {
                let v = vsmmus
                    .iter()
                    .find(|v| v.segment == segment)
                    .ok_or_else(|| DescriptionError::NoVsmmu(f.id.to_string()))?;
                Some(v.index)
            } else {
                None
            };
            devices.push(PlacedDevice {
                kind: f.kind,
                config_index: f.config_index,
                id: f.id.to_string(),
                segment,
                bdf,
                vsmmu,
                host_smmu: f.smmu.clone(),
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
            host_page_size: host.page_size,
            cacheable_devices: host.cacheable_bar_devices.clone(),
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

/// Segments that get a vSMMU, with their host SMMU: every segment with an
/// `iommu=on` function; with a vSMMU requested but no such function (the
/// emulated backend), segment 0.
fn vsmmu_segments(
    config: &VmConfig,
    functions: &[Function<'_>],
    segments: &[u16],
) -> Vec<(u16, Option<String>)> {
    if config.vsmmu.kind == VsmmuKind::Off {
        return Vec::new();
    }
    let mut with_devices: BTreeMap<u16, Option<String>> = BTreeMap::new();
    for (f, segment) in functions.iter().zip(segments) {
        if f.iommu {
            with_devices
                .entry(*segment)
                .or_insert_with(|| f.smmu.clone());
        }
    }
    if with_devices.is_empty() {
        vec![(0, None)]
    } else {
        with_devices.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeviceConfig, NumaConfig, TestDeviceConfig, VsmmuConfig};
    use crate::host_topology::tests::{FakeSysfs, iommufd_config};

    /// Describe `config` on a 4 KiB host with the emulated backend's SMMUs.
    fn describe(config: VmConfig, slots: usize) -> Result<VmDescription, DescriptionError> {
        let host = HostTopology::emulated(&config, 4 << 10);
        VmDescription::new(config, &host, slots)
    }

    /// (segment, vSMMU, host SMMU) of every device.
    fn placement(vm: &VmDescription) -> Vec<(u16, Option<u32>, Option<&str>)> {
        vm.devices
            .iter()
            .map(|d| (d.segment, d.vsmmu, d.host_smmu.as_deref()))
            .collect()
    }

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
        let vm = describe(
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
        let vm = describe(
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
        let vm = describe(c, 16).unwrap();
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
        let vm = describe(config("cmdqv,backend=emulated", &[]), 16).unwrap();
        assert_eq!(vm.vsmmus.len(), 1);
        assert_eq!(vm.vsmmus[0].segment, 0);
    }

    #[test]
    fn more_devices_than_cmdqv_sid_slots_is_an_error() {
        let devices: Vec<String> = (0..3)
            .map(|i| format!("path=/dev/vfio/devices/vfio{i},iommu=on"))
            .collect();
        let refs: Vec<&str> = devices.iter().map(String::as_str).collect();
        let err = describe(config("cmdqv,backend=emulated", &refs), 2).unwrap_err();
        assert_eq!(
            err,
            DescriptionError::TooManyVsids {
                segment: 0,
                count: 3,
                max: 2
            }
        );
        // A plain SMMUv3 has no SID slot limit.
        describe(config("smmuv3,backend=emulated", &refs), 2).unwrap();
    }

    #[test]
    fn layout_errors_pass_through() {
        let mut c = config("off", &[]);
        c.cpus.boot = 1000;
        assert!(matches!(
            describe(c, 16),
            Err(DescriptionError::Layout(LayoutError::TooManyVcpus(1000)))
        ));
    }

    #[test]
    fn functions_behind_one_host_smmu_share_one_vsmmu_on_segment_zero() {
        let sysfs = FakeSysfs::new("one-smmu");
        sysfs
            .function("0009:01:00.0", Some("smmu3.0x0000000012000000"))
            .function("0009:02:00.0", Some("smmu3.0x0000000012000000"));
        let config = iommufd_config(&[
            "path=/sys/bus/pci/devices/0009:01:00.0,iommu=on,id=gpu0",
            "path=/sys/bus/pci/devices/0009:02:00.0,iommu=on,id=nic0",
        ]);
        let host = HostTopology::probe(&config, &sysfs.root, 64 << 10).unwrap();
        let vm = VmDescription::new(config, &host, 16).unwrap();
        assert_eq!(vm.vsmmus.len(), 1);
        assert_eq!(
            vm.vsmmus[0].host_smmu.as_deref(),
            Some("smmu3.0x0000000012000000")
        );
        let smmu = Some("smmu3.0x0000000012000000");
        assert_eq!(placement(&vm), [(0, Some(0), smmu), (0, Some(0), smmu)]);
        assert_eq!(vm.host_page_size, 64 << 10);
    }

    #[test]
    fn a_gpu_takes_devfn_0_of_its_segment_and_the_others_keep_their_slots() {
        let sysfs = FakeSysfs::new("gpu-devfn0");
        let (a, b) = ("smmu3.a", "smmu3.b");
        sysfs
            .function("0009:02:00.0", Some(a))
            .class("0009:02:00.0", 0x02_00_00)
            .function("0009:01:00.0", Some(a))
            .class("0009:01:00.0", 0x03_02_00)
            .function("0019:01:00.0", Some(b))
            .class("0019:01:00.0", 0x03_02_00)
            .function("0019:01:00.1", Some(b))
            .class("0019:01:00.1", 0x03_02_00);
        let config = iommufd_config(&[
            "path=/sys/bus/pci/devices/0009:02:00.0,iommu=on,id=nic0",
            "path=/sys/bus/pci/devices/0009:01:00.0,iommu=on,id=gpu0",
            "path=/sys/bus/pci/devices/0019:01:00.0,iommu=on,id=gpu1",
            "path=/sys/bus/pci/devices/0019:01:00.1,iommu=on,id=gpu2",
        ]);
        let host = HostTopology::probe(&config, &sysfs.root, 4 << 10).unwrap();
        let vm = VmDescription::new(config, &host, 16).unwrap();
        let at: Vec<(&str, u16, String)> = vm
            .devices
            .iter()
            .map(|d| (d.id.as_str(), d.segment, d.bdf.to_string()))
            .collect();
        assert_eq!(
            at,
            [
                ("nic0", 0, "00:01.0".to_string()),
                ("gpu0", 0, "00:00.0".to_string()),
                ("gpu1", 1, "00:00.0".to_string()),
                ("gpu2", 1, "00:01.0".to_string()),
            ]
        );
        // StreamID 0 is the GPU's (RID 0): the vDEVICE's virt_id follows.
        assert_eq!(vm.devices[1].stream_id(), 0);
    }

    #[test]
    fn a_function_with_generic_initiator_nodes_takes_devfn_0_whatever_its_class() {
        let sysfs = FakeSysfs::new("gi-devfn0");
        sysfs
            .function("0000:00:02.0", Some("smmu3.a"))
            .class("0000:00:02.0", 0x01_00_00)
            .function("0000:00:05.0", Some("smmu3.a"))
            .class("0000:00:05.0", 0x05_00_00);
        let mut config = iommufd_config(&[
            "path=/sys/bus/pci/devices/0000:00:02.0,iommu=on,id=disk0",
            "path=/sys/bus/pci/devices/0000:00:05.0,iommu=on,id=shm0",
        ]);
        let host = HostTopology::probe(&config, &sysfs.root, 4 << 10).unwrap();
        let at = |vm: &VmDescription| -> Vec<(String, String)> {
            vm.devices
                .iter()
                .map(|d| (d.id.clone(), d.bdf.to_string()))
                .collect()
        };
        let plain = VmDescription::new(config.clone(), &host, 16).unwrap();
        assert_eq!(
            at(&plain),
            [
                ("disk0".to_string(), "00:01.0".to_string()),
                ("shm0".to_string(), "00:02.0".to_string()),
            ],
            "a memory-class function without GI nodes keeps the slot order"
        );
        config.cpus.boot = 1;
        config.numa = vec![
            NumaConfig::parse("guest_numa_id=0,cpus=[0]").unwrap(),
            NumaConfig::parse("guest_numa_id=1,device_id=shm0").unwrap(),
        ];
        let vm = VmDescription::new(config, &host, 16).unwrap();
        assert_eq!(
            at(&vm),
            [
                ("disk0".to_string(), "00:01.0".to_string()),
                ("shm0".to_string(), "00:00.0".to_string()),
            ]
        );
    }

    #[test]
    fn a_128g_gpu_bar_grows_its_segments_64_bit_window() {
        let sysfs = FakeSysfs::new("gpu-bar");
        let mem64 = 0x0010_0200;
        sysfs
            .function("0009:01:00.0", Some("smmu3.a"))
            .resources(
                "0009:01:00.0",
                &[
                    (0, 0, 0),
                    (0, 0, 0),
                    (0, 0, 0),
                    (0, 0, 0),
                    (0x800_0000_0000, 128 << 30, mem64),
                ],
            )
            .function("0019:01:00.0", Some("smmu3.b"));
        let config = iommufd_config(&[
            "path=/sys/bus/pci/devices/0009:01:00.0,iommu=on,id=gpu0",
            "path=/sys/bus/pci/devices/0019:01:00.0,iommu=on,id=nic0",
        ]);
        let host = HostTopology::probe(&config, &sysfs.root, 4 << 10).unwrap();
        let vm = VmDescription::new(config, &host, 16).unwrap();
        let w: Vec<(u64, u64)> = vm
            .layout
            .pci_segments
            .iter()
            .map(|s| (s.mmio64.base, s.mmio64.size))
            .collect();
        assert_eq!(w[0].1, 256 << 30, "128 GiB BAR + room for the rest");
        assert_eq!(w[0].0 % w[0].1, 0);
        assert_eq!(w[1], (w[0].0 + w[0].1, 64 << 30));
    }

    #[test]
    fn two_host_smmus_get_two_vsmmus_each_on_its_own_segment() {
        let sysfs = FakeSysfs::new("two-smmus");
        let (a, b) = ("smmu3.0x0000000012000000", "smmu3.0x0000000022000000");
        sysfs
            .function("0009:01:00.0", Some(a))
            .function("0019:01:00.0", Some(b))
            .function("0009:02:00.0", Some(a))
            .cdev(4, "0019:01:00.0");
        let config = iommufd_config(&[
            "path=/sys/bus/pci/devices/0009:01:00.0,iommu=on,id=gpu0",
            "path=/dev/vfio/devices/vfio4,iommu=on,id=gpu1",
            "path=/sys/bus/pci/devices/0009:02:00.0,iommu=on,id=nic0",
        ]);
        let host = HostTopology::probe(&config, &sysfs.root, 4 << 10).unwrap();
        let vm = VmDescription::new(config, &host, 16).unwrap();
        let vsmmus: Vec<(u32, u16, Option<&str>, u32)> = vm
            .vsmmus
            .iter()
            .map(|v| (v.index, v.segment, v.host_smmu.as_deref(), v.iort_id))
            .collect();
        assert_eq!(vsmmus, [(0, 0, Some(a), 1), (1, 1, Some(b), 2)]);
        assert_eq!(
            placement(&vm),
            [
                (0, Some(0), Some(a)),
                (1, Some(1), Some(b)),
                (0, Some(0), Some(a))
            ]
        );
        assert_eq!(
            vm.devices[1].stream_id(),
            0x08,
            "first function of segment 1"
        );
        assert_ne!(
            vm.vsmmus[0].layout.cmdqv.base,
            vm.vsmmus[1].layout.cmdqv.base
        );
    }

    #[test]
    fn an_explicit_segment_holding_two_host_smmus_is_refused_naming_both() {
        let sysfs = FakeSysfs::new("mismatch");
        sysfs
            .function("0009:01:00.0", Some("smmu3.0x12000000"))
            .function("0019:01:00.0", Some("smmu3.0x22000000"));
        let config = iommufd_config(&[
            "path=/sys/bus/pci/devices/0009:01:00.0,iommu=on,id=gpu0,pci_segment=1",
            "path=/sys/bus/pci/devices/0019:01:00.0,iommu=on,id=gpu1,pci_segment=1",
        ]);
        let host = HostTopology::probe(&config, &sysfs.root, 4 << 10).unwrap();
        let err = VmDescription::new(config, &host, 16).unwrap_err();
        let text = err.to_string();
        assert!(matches!(
            err,
            DescriptionError::HostSmmusShareSegment { segment: 1, .. }
        ));
        for part in [
            "--device gpu0",
            "smmu3.0x12000000",
            "--device gpu1",
            "smmu3.0x22000000",
        ] {
            assert!(text.contains(part), "{part} missing: {text}");
        }
        assert!(
            !text.contains(". ") && !text.contains('\n'),
            "one sentence: {text}"
        );
    }

    #[test]
    fn explicit_segments_are_kept_and_the_rest_of_their_smmu_follows() {
        let mut c = config("cmdqv,backend=emulated", &[]);
        c.test_devices = [
            "host_smmu=a",
            "host_smmu=b,pci_segment=0",
            "host_smmu=a",
            "iommu=off",
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| TestDeviceConfig::parse(t, i).unwrap())
        .collect();
        let vm = describe(c, 16).unwrap();
        // b claimed segment 0, so a (first seen without a segment) gets 1.
        assert_eq!(
            placement(&vm),
            [
                (1, Some(1), Some("a")),
                (0, Some(0), Some("b")),
                (1, Some(1), Some("a")),
                (0, None, None)
            ]
        );
        let hosts: Vec<Option<&str>> = vm.vsmmus.iter().map(|v| v.host_smmu.as_deref()).collect();
        assert_eq!(hosts, [Some("b"), Some("a")]);
    }
}
