//! The VM's PCI functions as placement sees them, one list per device kind,
//! in the order they are placed: passthrough functions, test endpoints,
//! then the virtio functions (disks, console, rng, net devices, vsock).
//! Virtio functions come after the others, so adding a disk or the
//! console moves no passthrough or test function; they are never behind a
//! vSMMU.

use super::placed::{CONSOLE_ID, DeviceKind, RNG_ID};
use crate::config::{ConsoleConfig, VmConfig};
use crate::host_topology::HostTopology;

/// One PCI function as placement sees it.
pub(super) struct Function<'a> {
    /// What backs it.
    pub kind: DeviceKind,
    /// Index of its option among those of its kind.
    pub config_index: usize,
    /// Its id.
    pub id: &'a str,
    /// Behind a vSMMU (`iommu=on`).
    pub iommu: bool,
    /// The `pci_segment=` it asked for.
    pub explicit: Option<u16>,
    /// Its host SMMU, if known.
    pub smmu: Option<String>,
}

impl Function<'_> {
    /// How errors and vm.info name it: `--device gpu0`.
    pub fn name(&self) -> String {
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

/// Every function of `config`, in placement order.
pub(super) fn all<'a>(config: &'a VmConfig, host: &'a HostTopology) -> Vec<Function<'a>> {
    passthrough(config, host)
        .chain(test_endpoints(config, host))
        .chain(disks(config))
        .chain(console(config))
        .chain(rng(config))
        .chain(nets(config))
        .chain(vsock(config))
        .collect()
}

/// The host SMMU of entry `i` of `list`, if known.
fn smmu_of(list: &[Option<String>], i: usize) -> Option<String> {
    list.get(i).cloned().flatten()
}

/// `--device`: passthrough functions.
fn passthrough<'a>(
    config: &'a VmConfig,
    host: &'a HostTopology,
) -> impl Iterator<Item = Function<'a>> {
    config
        .devices
        .iter()
        .enumerate()
        .map(move |(i, d)| Function {
            kind: DeviceKind::Passthrough,
            config_index: i,
            id: &d.id,
            iommu: d.iommu,
            explicit: d.pci_segment,
            smmu: smmu_of(&host.device_smmus, i),
        })
}

/// `--test-device`: emulated test endpoints.
fn test_endpoints<'a>(
    config: &'a VmConfig,
    host: &'a HostTopology,
) -> impl Iterator<Item = Function<'a>> {
    config
        .test_devices
        .iter()
        .enumerate()
        .map(move |(i, d)| Function {
            kind: DeviceKind::TestEndpoint,
            config_index: i,
            id: &d.id,
            iommu: d.iommu,
            explicit: d.pci_segment,
            smmu: smmu_of(&host.test_device_smmus, i),
        })
}

/// `--disk`: virtio-blk functions.
fn disks(config: &VmConfig) -> impl Iterator<Item = Function<'_>> {
    config.disks.iter().enumerate().map(|(i, d)| Function {
        kind: DeviceKind::VirtioBlock,
        config_index: i,
        id: &d.id,
        iommu: false,
        explicit: Some(d.pci_segment),
        smmu: None,
    })
}

/// `--console`: the virtio-console, on segment 0, unless it is off.
fn console(config: &VmConfig) -> Option<Function<'_>> {
    (config.console != ConsoleConfig::Off).then_some(Function {
        kind: DeviceKind::VirtioConsole,
        config_index: 0,
        id: CONSOLE_ID,
        iommu: false,
        explicit: Some(0),
        smmu: None,
    })
}

/// `--rng`: the virtio-rng, on segment 0.
fn rng(config: &VmConfig) -> Option<Function<'_>> {
    config.rng.is_some().then_some(Function {
        kind: DeviceKind::VirtioRng,
        config_index: 0,
        id: RNG_ID,
        iommu: false,
        explicit: Some(0),
        smmu: None,
    })
}

/// `--net`: virtio-net functions.
fn nets(config: &VmConfig) -> impl Iterator<Item = Function<'_>> {
    config.net.iter().enumerate().map(|(i, n)| Function {
        kind: DeviceKind::VirtioNet,
        config_index: i,
        id: &n.id,
        iommu: false,
        explicit: Some(n.pci_segment),
        smmu: None,
    })
}

/// `--vsock`: the virtio-vsock.
fn vsock(config: &VmConfig) -> Option<Function<'_>> {
    config.vsock.as_ref().map(|v| Function {
        kind: DeviceKind::VirtioVsock,
        config_index: 0,
        id: &v.id,
        iommu: false,
        explicit: Some(v.pci_segment),
        smmu: None,
    })
}
