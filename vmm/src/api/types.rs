//! The JSON bodies of the API, with cloud-hypervisor's field names
//! (vmm/src/api/openapi/cloud-hypervisor.yaml there, v53.0) for what this
//! VMM supports, plus our own `vsmmu` and `test_devices` keys.
//!
//! As upstream, the structs take unknown fields; the fields of upstream's
//! VmConfig that this VMM knows but does not implement are checked first
//! by [`super::upstream_fields`], which refuses a value that asks for
//! something missing here. Our own keys (`vsmmu`, `test_devices`) refuse
//! unknown fields: a typo there is ours to catch.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{
    ConsoleConfig, CpusConfig, DeviceConfig, DiskConfig, MemoryConfig, MemoryZoneConfig, NetConfig,
    NumaConfig, RngConfig, SerialConfig, TestDeviceConfig, VmConfig, VsmmuConfig, VsockConfig,
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
    /// The configuration the VM was created with (see [`shown_config`]).
    pub config: serde_json::Value,
    /// Where it is in its life cycle.
    pub state: VmState,
    /// Guest RAM in bytes.
    pub memory_actual_size: u64,
    /// Ours: where every vSMMU and device sits, and the host SMMU behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<super::placement::ApiPlacement>,
}

/// `cpus`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCpusConfig {
    /// vCPUs at boot.
    pub boot_vcpus: u32,
    /// cloud-hypervisor's hot-plug ceiling: at least `boot_vcpus`, kept and
    /// shown back; the guest sees `boot_vcpus` (vm.resize is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vcpus: Option<u32>,
    /// vCPU pinning, upstream's `[{"vcpu": 0, "host_cpus": [0, 1]}]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Vec<crate::config::CpuAffinity>>,
}

/// `memory`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiMemoryConfig {
    /// Guest RAM in bytes.
    pub size: u64,
    /// Back RAM with huge pages.
    #[serde(default)]
    pub hugepages: bool,
    /// RAM from a memfd mapped shared (vhost-user back-ends map it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub shared: bool,
    /// Memory zones (`size` is 0 with zones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<MemoryZoneConfig>>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// `payload`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct ApiDeviceConfig {
    /// sysfs directory of the PCI function, or its VFIO cdev.
    pub path: PathBuf,
    /// Behind the vSMMU of its segment.
    #[serde(default)]
    pub iommu: bool,
    /// Identifier; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// PCI segment; absent: chosen by the device's host SMMU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_segment: Option<u16>,
    /// Ours: the host SMMU, for backend=emulated (`--device host_smmu=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_smmu: Option<String>,
}

/// How the console's output leaves the VMM: cloud-hypervisor's
/// ConsoleMode values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiConsoleMode {
    /// No console.
    Off,
    /// A pseudo-terminal the VMM opens; vm.info shows its path in `file`.
    Pty,
    /// The VMM's stdin/stdout.
    Tty,
    /// Appended to `file`.
    File,
    /// A Unix socket the VMM listens on (`socket`), one client at a time.
    Socket,
    /// Discarded.
    Null,
}

/// `serial`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiSerialConfig {
    /// Where output goes.
    pub mode: ApiConsoleMode,
    /// The file for mode File; for mode Pty, vm.info reports the pty here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// The socket for mode Socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
}

/// `VmConfig`: what `vm.create` takes and `vm.info` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// virtio-blk disks (cloud-hypervisor's DiskConfig fields; `id`
    /// generated when absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskConfig>,
    /// virtio-net devices over taps (cloud-hypervisor's NetConfig fields;
    /// `id` generated and `mac` chosen at random when absent; null is
    /// none, as Kata sends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<Vec<NetConfig>>,
    /// The virtio-console (default: Off, unlike upstream's Tty: the PL011
    /// of `serial` is this VMM's console).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<ApiSerialConfig>,
    /// The virtio-rng: absent or null, none (upstream gives every VM one;
    /// Kata always sends `{"src": "/dev/urandom"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng: Option<RngConfig>,
    /// The virtio-vsock over vhost-vsock with its hybrid socket
    /// (cloud-hypervisor's VsockConfig; Kata's agent channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
    /// Ours: the vSMMU (`--vsmmu`), e.g.
    /// `{"kind": "cmdqv", "backend": "emulated", "page0": "mapped"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsmmu: Option<VsmmuConfig>,
    /// Ours: emulated PCI test endpoints (`--test-device`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_devices: Vec<ApiTestDeviceConfig>,
    /// Guest NUMA nodes (`--numa`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa: Option<Vec<NumaConfig>>,
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
    /// PCI segment; absent: chosen by its host SMMU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_segment: Option<u16>,
    /// The host SMMU it pretends to sit behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_smmu: Option<String>,
}

fn default_true() -> bool {
    true
}

/// `vm.remove-device`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRemoveDeviceData {
    /// The device's id.
    pub id: String,
}

/// A body that names a field with a value this VMM cannot honour.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field {field}={value} is not supported: {fix}")]
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
            host_smmu: self.host_smmu.clone(),
        }
    }
}

impl TryFrom<ApiVmConfig> for VmConfig {
    type Error = UnsupportedValue;

    fn try_from(api: ApiVmConfig) -> Result<Self, Self::Error> {
        let cpus = match api.cpus {
            None => CpusConfig::default(),
            Some(c) => {
                if let Some(max) = c.max_vcpus.filter(|m| *m < c.boot_vcpus) {
                    return Err(UnsupportedValue {
                        field: "cpus.max_vcpus",
                        value: max.to_string(),
                        fix: "max_vcpus is below boot_vcpus; give at least boot_vcpus or leave it out",
                    });
                }
                CpusConfig {
                    boot: c.boot_vcpus,
                    affinity: c.affinity.unwrap_or_default(),
                }
            }
        };
        let memory = api
            .memory
            .map_or_else(MemoryConfig::default, |m| MemoryConfig {
                size: m.size,
                hugepages: m.hugepages,
                shared: m.shared,
                zones: m.zones.unwrap_or_default(),
            });
        let serial = match api.serial {
            None => SerialConfig::Tty,
            Some(s) => serial_config(s)?,
        };
        let console = match api.console {
            None => ConsoleConfig::Off,
            Some(c) => console_config(c)?,
        };
        let disks = api
            .disks
            .into_iter()
            .enumerate()
            .map(|(i, mut d)| {
                if d.id.is_empty() {
                    d.id = format!("_disk{i}");
                }
                d
            })
            .collect();
        let net = api
            .net
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, mut n)| {
                if n.id.is_empty() {
                    n.id = format!("_net{i}");
                }
                if n.mac.is_none() {
                    n.mac = Some(virtio_devices::net::MacAddr::random().to_string());
                }
                n
            })
            .collect();
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
                    host_smmu: d.host_smmu.clone(),
                })
                .collect(),
            vsmmu: api.vsmmu.unwrap_or_default(),
            serial,
            numa: api.numa.unwrap_or_default(),
            disks,
            net,
            console,
            rng: api.rng,
            vsock: api.vsock,
        })
    }
}

/// What `vm.info` shows as `config`: the body `vm.create` was given, with
/// the fields this VMM parses replaced by their normalised values
/// (`typed`), `cpus.max_vcpus` filled in (upstream requires it), and for
/// serial mode Pty the pty's path in `serial.file`, where libvirt reads it.
pub fn shown_config(
    typed: &ApiVmConfig,
    given: Option<&serde_json::Value>,
    pty: Option<&std::path::Path>,
    console_pty: Option<&std::path::Path>,
) -> serde_json::Value {
    let mut shown = serde_json::to_value(typed).unwrap_or_default();
    // The lists this VMM owns are shown even when empty, so that a device
    // removed before boot does not come back from the body as given.
    if let Some(fields) = shown.as_object_mut() {
        for list in ["devices", "test_devices", "disks"] {
            fields.entry(list).or_insert_with(|| serde_json::json!([]));
        }
        // Nor a vsock removed before boot.
        if given.is_some_and(|g| g.get("vsock").is_some()) {
            fields.entry("vsock").or_insert(serde_json::Value::Null);
        }
    }
    if let Some(given) = given {
        keep_given_fields(&mut shown, given);
    }
    if let Some(cpus) = shown.get_mut("cpus").and_then(|c| c.as_object_mut()) {
        if !cpus.contains_key("max_vcpus") {
            let boot = cpus.get("boot_vcpus").cloned().unwrap_or(1.into());
            cpus.insert("max_vcpus".into(), boot);
        }
    }
    // Where upstream reports a pty, and libvirt reads it.
    for (path, field) in [(pty, "serial"), (console_pty, "console")] {
        if let (Some(path), Some(object)) =
            (path, shown.get_mut(field).and_then(|s| s.as_object_mut()))
        {
            object.insert("file".into(), path.display().to_string().into());
        }
    }
    shown
}

/// Add to `shown` every field of `given` it lacks, through nested objects.
fn keep_given_fields(shown: &mut serde_json::Value, given: &serde_json::Value) {
    let (Some(shown), Some(given)) = (shown.as_object_mut(), given.as_object()) else {
        return;
    };
    for (key, value) in given {
        match shown.get_mut(key) {
            Some(existing) => keep_given_fields(existing, value),
            None => {
                shown.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The PL011's configuration for `serial`.
fn serial_config(serial: ApiSerialConfig) -> Result<SerialConfig, UnsupportedValue> {
    match (serial.mode, serial.file) {
        (ApiConsoleMode::Tty, None) => Ok(SerialConfig::Tty),
        (ApiConsoleMode::Off, None) => Ok(SerialConfig::Off),
        (ApiConsoleMode::Null, None) => Ok(SerialConfig::Null),
        // A file given with Pty is where upstream reports the pty: ignored.
        (ApiConsoleMode::Pty, _) => Ok(SerialConfig::Pty),
        (ApiConsoleMode::File, Some(path)) => Ok(SerialConfig::File(path)),
        (ApiConsoleMode::Socket, None) => match serial.socket {
            Some(path) => Ok(SerialConfig::Socket(path)),
            None => Err(UnsupportedValue {
                field: "serial.socket",
                value: "null".into(),
                fix: "mode Socket needs the socket's path",
            }),
        },
        (mode, file) => Err(UnsupportedValue {
            field: "serial.file",
            value: format!("{file:?}"),
            fix: if mode == ApiConsoleMode::File {
                "mode File needs a file"
            } else {
                "give a file only with mode File"
            },
        }),
    }
}

/// The virtio-console's configuration for `console` (no Socket mode;
/// upstream_fields refuses it first, this is the typed check).
fn console_config(console: ApiSerialConfig) -> Result<ConsoleConfig, UnsupportedValue> {
    match (console.mode, console.file) {
        (ApiConsoleMode::Off, None) => Ok(ConsoleConfig::Off),
        (ApiConsoleMode::Null, None) => Ok(ConsoleConfig::Null),
        (ApiConsoleMode::Tty, None) => Ok(ConsoleConfig::Tty),
        (ApiConsoleMode::Pty, _) => Ok(ConsoleConfig::Pty),
        (ApiConsoleMode::File, Some(path)) => Ok(ConsoleConfig::File(path)),
        (ApiConsoleMode::Socket, _) => Err(UnsupportedValue {
            field: "console.mode",
            value: "\"Socket\"".into(),
            fix: "the virtio-console has no Socket mode yet; use Pty or File",
        }),
        (mode, file) => Err(UnsupportedValue {
            field: "console.file",
            value: format!("{file:?}"),
            fix: if mode == ApiConsoleMode::File {
                "mode File needs a file"
            } else {
                "give a file only with mode File"
            },
        }),
    }
}

impl From<&VmConfig> for ApiVmConfig {
    fn from(config: &VmConfig) -> Self {
        let (mode, file, socket) = match &config.serial {
            SerialConfig::Tty => (ApiConsoleMode::Tty, None, None),
            SerialConfig::Off => (ApiConsoleMode::Off, None, None),
            SerialConfig::Null => (ApiConsoleMode::Null, None, None),
            SerialConfig::Pty => (ApiConsoleMode::Pty, None, None),
            SerialConfig::File(path) => (ApiConsoleMode::File, Some(path.clone()), None),
            SerialConfig::Socket(path) => (ApiConsoleMode::Socket, None, Some(path.clone())),
        };
        let serial = ApiSerialConfig { mode, file, socket };
        let (mode, file) = match &config.console {
            ConsoleConfig::Off => (ApiConsoleMode::Off, None),
            ConsoleConfig::Null => (ApiConsoleMode::Null, None),
            ConsoleConfig::Pty => (ApiConsoleMode::Pty, None),
            ConsoleConfig::Tty => (ApiConsoleMode::Tty, None),
            ConsoleConfig::File(path) => (ApiConsoleMode::File, Some(path.clone())),
        };
        let console = ApiSerialConfig {
            mode,
            file,
            socket: None,
        };
        ApiVmConfig {
            // max_vcpus comes from the body as given (see `shown_config`).
            cpus: Some(ApiCpusConfig {
                boot_vcpus: config.cpus.boot,
                max_vcpus: None,
                affinity: (!config.cpus.affinity.is_empty()).then(|| config.cpus.affinity.clone()),
            }),
            memory: Some(ApiMemoryConfig {
                size: config.memory.size,
                hugepages: config.memory.hugepages,
                shared: config.memory.shared,
                zones: (!config.memory.zones.is_empty()).then(|| config.memory.zones.clone()),
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
                    host_smmu: d.host_smmu.clone(),
                })
                .collect(),
            serial: Some(serial),
            disks: config.disks.clone(),
            net: (!config.net.is_empty()).then(|| config.net.clone()),
            console: Some(console),
            rng: config.rng.clone(),
            vsock: config.vsock.clone(),
            vsmmu: Some(config.vsmmu.clone()),
            test_devices: config
                .test_devices
                .iter()
                .map(|d| ApiTestDeviceConfig {
                    iommu: d.iommu,
                    id: Some(d.id.clone()),
                    pci_segment: d.pci_segment,
                    host_smmu: d.host_smmu.clone(),
                })
                .collect(),
            numa: (!config.numa.is_empty()).then(|| config.numa.clone()),
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
            "test_devices": [{"id": "dma0", "iommu": true, "pci_segment": 0}],
            "disks": [{"path": "/img", "readonly": true, "direct": false, "num_queues": 2,
                       "queue_size": 256, "id": "root", "serial": "S1", "pci_segment": 0,
                       "image_type": "Raw", "disable_io_uring": false}],
            "console": {"mode": "File", "file": "/tmp/hvc0"}
        }"#;
        let api: ApiVmConfig = serde_json::from_str(json).unwrap();
        let config = VmConfig::try_from(api.clone()).unwrap();
        assert_eq!(config.cpus.boot, 2);
        assert_eq!(config.memory.size, 512 << 20);
        assert!(config.memory.hugepages);
        assert_eq!(config.devices[0].id, "gpu0");
        assert_eq!(config.devices[0].pci_segment, Some(1));
        assert_eq!(config.serial, SerialConfig::File("/tmp/console".into()));
        assert_eq!(config.test_devices[0].id, "dma0");
        assert!(config.test_devices[0].iommu);
        assert_eq!(config.disks[0].id, "root");
        assert!(config.disks[0].readonly);
        assert_eq!(
            (config.disks[0].num_queues, config.disks[0].queue_size),
            (2, 256)
        );
        assert_eq!(config.console, ConsoleConfig::File("/tmp/hvc0".into()));
        // vm.info shows it back in the same shape.
        let given: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            shown_config(&ApiVmConfig::from(&config), Some(&given), None, None),
            given
        );
    }

    #[test]
    fn net_takes_cloud_hypervisors_net_config_and_null_is_none() {
        let json = r#"{"payload": {"kernel": "/k"}, "net": [
            {"tap": "vmtap0", "ip": "192.168.249.1", "mask": "255.255.255.0",
             "mac": "52:54:00:12:34:56", "num_queues": 2, "queue_size": 256, "id": "eth0",
             "iommu": false, "offload_tso": true, "vhost_user": false, "fds": null},
            {"tap": "vmtap1"}]}"#;
        let api: ApiVmConfig = serde_json::from_str(json).unwrap();
        let config = VmConfig::try_from(api).unwrap();
        assert_eq!(config.net.len(), 2);
        let eth0 = &config.net[0];
        assert_eq!(eth0.tap.as_deref(), Some("vmtap0"));
        assert_eq!(eth0.ip, Some(std::net::Ipv4Addr::new(192, 168, 249, 1)));
        assert_eq!(eth0.mac.as_deref(), Some("52:54:00:12:34:56"));
        assert_eq!((eth0.num_queues, eth0.queue_size), (2, 256));
        let second = &config.net[1];
        assert_eq!((second.id.as_str(), second.num_queues), ("_net1", 2));
        assert!(second.mac.is_some(), "a MAC is chosen once, at vm.create");
        assert!(config.validate(true).is_ok());
        let api: ApiVmConfig = serde_json::from_str(r#"{"payload": {}, "net": null}"#).unwrap();
        assert!(VmConfig::try_from(api).unwrap().net.is_empty());
    }

    #[test]
    fn unknown_fields_are_accepted_and_shown_back() {
        let json = r#"{"payload": {"kernel": "/k"}, "cpus": {"boot_vcpus": 2, "max_vcpus": 8,
            "topology": {"packages": 1}}, "memory": {"size": 1073741824, "shared": true},
            "rate_limit_groups": [], "serial": {"mode": "Pty"}}"#;
        let api: ApiVmConfig = serde_json::from_str(json).unwrap();
        let config = VmConfig::try_from(api).unwrap();
        assert_eq!(config.cpus.boot, 2);
        assert_eq!(config.serial, SerialConfig::Pty);
        let given: serde_json::Value = serde_json::from_str(json).unwrap();
        let shown = shown_config(
            &ApiVmConfig::from(&config),
            Some(&given),
            Some(std::path::Path::new("/dev/pts/7")),
            None,
        );
        assert_eq!(shown["cpus"]["max_vcpus"], 8);
        assert_eq!(shown["cpus"]["topology"]["packages"], 1);
        assert_eq!(shown["memory"]["shared"], true);
        assert_eq!(shown["memory"]["hugepages"], false, "normalised");
        assert_eq!(shown["serial"]["file"], "/dev/pts/7");
        assert_eq!(shown["payload"]["cmdline"], "");
    }

    #[test]
    fn values_this_vmm_cannot_honour_are_refused_by_name() {
        let refused = |json: &str| {
            let api: ApiVmConfig = serde_json::from_str(json).unwrap();
            VmConfig::try_from(api).unwrap_err()
        };
        let err = refused(r#"{"payload": {}, "cpus": {"boot_vcpus": 4, "max_vcpus": 2}}"#);
        assert_eq!(err.field, "cpus.max_vcpus");
        let err = refused(r#"{"payload": {}, "serial": {"mode": "Tty", "file": "/x"}}"#);
        assert_eq!(err.field, "serial.file");
        let err = refused(r#"{"payload": {}, "console": {"mode": "Socket", "socket": "/s"}}"#);
        assert_eq!(err.field, "console.mode");
        let err = refused(r#"{"payload": {}, "console": {"mode": "File"}}"#);
        assert_eq!(err.field, "console.file");
        let err = refused(r#"{"payload": {}, "serial": {"mode": "Socket"}}"#);
        assert_eq!(
            err.to_string(),
            "field serial.socket=null is not supported: mode Socket needs the socket's path"
        );
        let api: ApiVmConfig =
            serde_json::from_str(r#"{"payload": {}, "cpus": {"boot_vcpus": 1, "max_vcpus": 4}}"#)
                .unwrap();
        assert!(
            VmConfig::try_from(api).is_ok(),
            "a hot-plug ceiling is kept, not refused"
        );
    }
}
