//! The JSON bodies of the API, with cloud-hypervisor's field names
//! (vmm/src/api/openapi/cloud-hypervisor.yaml there) for what this VMM
//! supports, plus our own `vsmmu` and `test_devices` keys.
//!
//! Every struct refuses unknown fields: a cloud-hypervisor field this VMM
//! does not implement (`disks`, `net`, `max_vcpus` above `boot_vcpus`,
//! `hotplug_size`, ...) is an error naming that field, never dropped.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{
    CpusConfig, DeviceConfig, MemoryConfig, SerialConfig, TestDeviceConfig, VmConfig, VsmmuConfig,
};

/// `GET /api/v1/vmm.ping`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmPingResponse {
    /// The build's version string.
    pub build_version: String,
    /// The package version.
    pub version: String,
    /// The VMM's process id.
    pub pid: i64,
    /// Optional features built in.
    pub features: Vec<String>,
}

/// The VM's life-cycle state, as cloud-hypervisor names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// Defined (vm.create), not booted.
    Created,
    /// vCPUs running.
    Running,
    /// Stopped by vm.shutdown; vm.boot starts it again.
    Shutdown,
    /// vCPUs parked by vm.pause.
    Paused,
}

/// `GET /api/v1/vm.info`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmInfoResponse {
    /// The configuration the VM was created with.
    pub config: ApiVmConfig,
    /// Where it is in its life cycle.
    pub state: VmState,
    /// Guest RAM in bytes.
    pub memory_actual_size: u64,
}

/// `cpus`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiCpusConfig {
    /// vCPUs at boot.
    pub boot_vcpus: u32,
    /// cloud-hypervisor's hot-plug ceiling; must equal `boot_vcpus` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vcpus: Option<u32>,
}

/// `memory`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiMemoryConfig {
    /// Guest RAM in bytes.
    pub size: u64,
    /// Back RAM with huge pages.
    #[serde(default)]
    pub hugepages: bool,
}

/// `payload`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiPayloadConfig {
    /// Kernel Image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Initramfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<PathBuf>,
}

/// `devices[]` (and the body of `vm.add-device`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiDeviceConfig {
    /// sysfs directory of the PCI function, or its VFIO cdev.
    pub path: PathBuf,
    /// Behind the vSMMU of its segment.
    #[serde(default)]
    pub iommu: bool,
    /// Identifier; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// PCI segment.
    #[serde(default)]
    pub pci_segment: u16,
}

/// How the console's output leaves the VMM (cloud-hypervisor's ConsoleMode
/// values this VMM implements).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiConsoleMode {
    /// No console.
    Off,
    /// The VMM's stdin/stdout.
    Tty,
    /// Appended to `file`.
    File,
    /// Discarded (same as Off here).
    Null,
}

/// `serial`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSerialConfig {
    /// Where output goes.
    pub mode: ApiConsoleMode,
    /// The file for mode File.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

/// `VmConfig`: what `vm.create` takes and `vm.info` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiVmConfig {
    /// vCPUs (default: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<ApiCpusConfig>,
    /// RAM (default: 512 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ApiMemoryConfig>,
    /// What to boot.
    pub payload: ApiPayloadConfig,
    /// Passthrough devices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<ApiDeviceConfig>,
    /// The PL011 console (default: Tty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<ApiSerialConfig>,
    /// Ours: the vSMMU (`--vsmmu`), e.g.
    /// `{"kind": "cmdqv", "backend": "emulated", "page0": "mapped"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsmmu: Option<VsmmuConfig>,
    /// Ours: emulated PCI test endpoints (`--test-device`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_devices: Vec<ApiTestDeviceConfig>,
}

/// `test_devices[]` (ours).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTestDeviceConfig {
    /// Behind the vSMMU of its segment (default: on).
    #[serde(default = "default_true")]
    pub iommu: bool,
    /// Identifier; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// PCI segment.
    #[serde(default)]
    pub pci_segment: u16,
}

fn default_true() -> bool {
    true
}

/// `vm.remove-device`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRemoveDeviceData {
    /// The device's id.
    pub id: String,
}

/// A body that names a field with a value this VMM cannot honour.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}={value} is not supported: {fix}")]
pub struct UnsupportedValue {
    /// The JSON field.
    pub field: &'static str,
    /// The value given.
    pub value: String,
    /// What would work.
    pub fix: &'static str,
}

impl ApiDeviceConfig {
    /// The `--device` config; `index` names it when no id is given.
    pub fn to_config(&self, index: usize) -> DeviceConfig {
        DeviceConfig {
            path: self.path.clone(),
            iommu: self.iommu,
            id: self.id.clone().unwrap_or_else(|| format!("_dev{index}")),
            pci_segment: self.pci_segment,
        }
    }
}

impl TryFrom<ApiVmConfig> for VmConfig {
    type Error = UnsupportedValue;

    fn try_from(api: ApiVmConfig) -> Result<Self, Self::Error> {
        let cpus = match api.cpus {
            None => CpusConfig::default(),
            Some(c) => {
                if let Some(max) = c.max_vcpus.filter(|m| *m != c.boot_vcpus) {
                    return Err(UnsupportedValue {
                        field: "cpus.max_vcpus",
                        value: max.to_string(),
                        fix: "vCPU hot-plug is not implemented; give max_vcpus = boot_vcpus or leave it out",
                    });
                }
                CpusConfig { boot: c.boot_vcpus }
            }
        };
        let memory = api
            .memory
            .map_or_else(MemoryConfig::default, |m| MemoryConfig {
                size: m.size,
                hugepages: m.hugepages,
            });
        let serial = match api.serial {
            None => SerialConfig::Tty,
            Some(s) => match (s.mode, s.file) {
                (ApiConsoleMode::Tty, None) => SerialConfig::Tty,
                (ApiConsoleMode::Off | ApiConsoleMode::Null, None) => SerialConfig::Off,
                (ApiConsoleMode::File, Some(path)) => SerialConfig::File(path),
                (mode, file) => {
                    return Err(UnsupportedValue {
                        field: "serial",
                        value: format!("mode {mode:?} with file {file:?}"),
                        fix: "give a file exactly with mode File",
                    });
                }
            },
        };
        Ok(VmConfig {
            kernel: api.payload.kernel,
            initramfs: api.payload.initramfs,
            cmdline: api.payload.cmdline.unwrap_or_default(),
            cpus,
            memory,
            devices: api
                .devices
                .iter()
                .enumerate()
                .map(|(i, d)| d.to_config(i))
                .collect(),
            test_devices: api
                .test_devices
                .iter()
                .enumerate()
                .map(|(i, d)| TestDeviceConfig {
                    iommu: d.iommu,
                    id: d.id.clone().unwrap_or_else(|| format!("_test{i}")),
                    pci_segment: d.pci_segment,
                })
                .collect(),
            vsmmu: api.vsmmu.unwrap_or_default(),
            serial,
        })
    }
}

impl From<&VmConfig> for ApiVmConfig {
    fn from(config: &VmConfig) -> Self {
        let serial = match &config.serial {
            SerialConfig::Tty => ApiSerialConfig {
                mode: ApiConsoleMode::Tty,
                file: None,
            },
            SerialConfig::Off => ApiSerialConfig {
                mode: ApiConsoleMode::Off,
                file: None,
            },
            SerialConfig::File(path) => ApiSerialConfig {
                mode: ApiConsoleMode::File,
                file: Some(path.clone()),
            },
        };
        ApiVmConfig {
            cpus: Some(ApiCpusConfig {
                boot_vcpus: config.cpus.boot,
                max_vcpus: Some(config.cpus.boot),
            }),
            memory: Some(ApiMemoryConfig {
                size: config.memory.size,
                hugepages: config.memory.hugepages,
            }),
            payload: ApiPayloadConfig {
                kernel: config.kernel.clone(),
                cmdline: Some(config.cmdline.clone()),
                initramfs: config.initramfs.clone(),
            },
            devices: config
                .devices
                .iter()
                .map(|d| ApiDeviceConfig {
                    path: d.path.clone(),
                    iommu: d.iommu,
                    id: Some(d.id.clone()),
                    pci_segment: d.pci_segment,
                })
                .collect(),
            serial: Some(serial),
            vsmmu: Some(config.vsmmu.clone()),
            test_devices: config
                .test_devices
                .iter()
                .map(|d| ApiTestDeviceConfig {
                    iommu: d.iommu,
                    id: Some(d.id.clone()),
                    pci_segment: d.pci_segment,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_hypervisor_field_names_parse() {
        let json = r#"{
            "cpus": {"boot_vcpus": 2, "max_vcpus": 2},
            "memory": {"size": 536870912, "hugepages": true},
            "payload": {"kernel": "/k", "cmdline": "console=ttyAMA0", "initramfs": "/i"},
            "devices": [{"path": "/sys/bus/pci/devices/0009:01:00.0", "iommu": true, "id": "gpu0", "pci_segment": 1}],
            "serial": {"mode": "File", "file": "/tmp/console"},
            "vsmmu": {"kind": "cmdqv", "backend": "emulated", "page0": "trapped"},
            "test_devices": [{"id": "dma0"}]
        }"#;
        let api: ApiVmConfig = serde_json::from_str(json).unwrap();
        let config = VmConfig::try_from(api.clone()).unwrap();
        assert_eq!(config.cpus.boot, 2);
        assert_eq!(config.memory.size, 512 << 20);
        assert!(config.memory.hugepages);
        assert_eq!(config.devices[0].id, "gpu0");
        assert_eq!(config.devices[0].pci_segment, 1);
        assert_eq!(config.serial, SerialConfig::File("/tmp/console".into()));
        assert_eq!(config.test_devices[0].id, "dma0");
        assert!(config.test_devices[0].iommu);
        // vm.info shows it back in the same shape.
        assert_eq!(ApiVmConfig::from(&config), api);
    }

    #[test]
    fn unsupported_fields_are_refused_by_name() {
        for (json, field) in [
            (r#"{"payload": {}, "disks": []}"#, "disks"),
            (r#"{"payload": {"firmware": "/f"}}"#, "firmware"),
            (
                r#"{"payload": {}, "memory": {"size": 1, "hotplug_size": 2}}"#,
                "hotplug_size",
            ),
            (
                r#"{"payload": {}, "devices": [{"path": "/x", "pci_device_id": 3}]}"#,
                "pci_device_id",
            ),
        ] {
            let err = serde_json::from_str::<ApiVmConfig>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("unknown field `{field}`")), "{err}");
        }
        let api: ApiVmConfig =
            serde_json::from_str(r#"{"payload": {}, "cpus": {"boot_vcpus": 1, "max_vcpus": 4}}"#)
                .unwrap();
        let err = VmConfig::try_from(api).unwrap_err();
        assert_eq!(err.field, "cpus.max_vcpus");
        let api: ApiVmConfig =
            serde_json::from_str(r#"{"payload": {}, "serial": {"mode": "Tty", "file": "/x"}}"#)
                .unwrap();
        assert_eq!(VmConfig::try_from(api).unwrap_err().field, "serial");
    }
}
