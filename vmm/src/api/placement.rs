//! `vm.info`'s `placement` (ours): which vSMMU, PCI segment and address
//! each device got and which host SMMU stands behind it, so an operator can
//! check the automatic one-vSMMU-per-host-SMMU choice without reading the
//! guest's IORT.

use serde::{Deserialize, Serialize};

use crate::description::{DeviceKind, VmDescription};

/// Every vSMMU and every device of the VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiPlacement {
    /// vSMMUs by index.
    pub vsmmus: Vec<ApiVsmmuPlacement>,
    /// Devices in command-line order (passthrough, then test endpoints).
    pub devices: Vec<ApiDevicePlacement>,
}

/// One vSMMU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiVsmmuPlacement {
    /// Its index (`vsmmu` in events and errors).
    pub index: u32,
    /// The PCI segment it translates.
    pub pci_segment: u16,
    /// Its IORT SMMUv3 node identifier (the CMD-QV's `_UID`).
    pub iort_id: u32,
    /// Has a CMD-QV.
    pub cmdqv: bool,
    /// The host SMMU behind it (absent: the emulated backend's unnamed one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_smmu: Option<String>,
    /// Ids of the devices it translates.
    pub devices: Vec<String>,
}

/// One device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiDevicePlacement {
    /// Its id.
    pub id: String,
    /// `passthrough` or `test`.
    pub kind: String,
    /// Guest address, `segment:bus:device.function`.
    pub bdf: String,
    /// The vSMMU translating it (absent: iommu=off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsmmu: Option<u32>,
    /// The StreamID the guest sees for it (the vDEVICE's virt_id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<u32>,
    /// Its host SMMU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_smmu: Option<String>,
}

impl From<&VmDescription> for ApiPlacement {
    fn from(vm: &VmDescription) -> Self {
        ApiPlacement {
            vsmmus: vm
                .vsmmus
                .iter()
                .map(|v| ApiVsmmuPlacement {
                    index: v.index,
                    pci_segment: v.segment,
                    iort_id: v.iort_id,
                    cmdqv: v.cmdqv,
                    host_smmu: v.host_smmu.clone(),
                    devices: vm
                        .devices
                        .iter()
                        .filter(|d| d.vsmmu == Some(v.index))
                        .map(|d| d.id.clone())
                        .collect(),
                })
                .collect(),
            devices: vm
                .devices
                .iter()
                .map(|d| ApiDevicePlacement {
                    id: d.id.clone(),
                    kind: match d.kind {
                        DeviceKind::Passthrough => "passthrough",
                        DeviceKind::TestEndpoint => "test",
                        DeviceKind::VirtioBlock => "virtio-blk",
                        DeviceKind::VirtioConsole => "virtio-console",
                        DeviceKind::VirtioRng => "virtio-rng",
                        DeviceKind::VirtioNet => "virtio-net",
                        DeviceKind::VirtioVsock => "virtio-vsock",
                    }
                    .into(),
                    bdf: format!("{:04x}:{}", d.segment, d.bdf),
                    vsmmu: d.vsmmu,
                    stream_id: d.vsmmu.map(|_| d.stream_id()),
                    host_smmu: d.host_smmu.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TestDeviceConfig, VmConfig, VsmmuConfig};
    use crate::host_topology::HostTopology;

    #[test]
    fn placement_names_each_vsmmus_host_smmu_and_devices() {
        let config = VmConfig {
            vsmmu: VsmmuConfig::parse("cmdqv,backend=emulated").unwrap(),
            test_devices: [
                "id=dma0,host_smmu=smmu3.a",
                "id=dma1,host_smmu=smmu3.b",
                "id=x,iommu=off",
            ]
            .iter()
            .enumerate()
            .map(|(i, t)| TestDeviceConfig::parse(t, i).unwrap())
            .collect(),
            ..VmConfig::default()
        };
        let host = HostTopology::emulated(&config, 4 << 10);
        let vm = VmDescription::new(config, &host, 16).unwrap();
        let placement = serde_json::to_value(ApiPlacement::from(&vm)).unwrap();
        assert_eq!(
            placement,
            serde_json::json!({
                "vsmmus": [
                    {"index": 0, "pci_segment": 0, "iort_id": 1, "cmdqv": true,
                     "host_smmu": "smmu3.a", "devices": ["dma0"]},
                    {"index": 1, "pci_segment": 1, "iort_id": 2, "cmdqv": true,
                     "host_smmu": "smmu3.b", "devices": ["dma1"]}
                ],
                "devices": [
                    {"id": "dma0", "kind": "test", "bdf": "0000:00:01.0", "vsmmu": 0,
                     "stream_id": 8, "host_smmu": "smmu3.a"},
                    {"id": "dma1", "kind": "test", "bdf": "0001:00:01.0", "vsmmu": 1,
                     "stream_id": 8, "host_smmu": "smmu3.b"},
                    {"id": "x", "kind": "test", "bdf": "0000:00:02.0"}
                ]
            })
        );
    }
}
