//! The JSON bodies of the API besides the VM's configuration, with
//! cloud-hypervisor's field names (vmm/src/api/openapi/cloud-hypervisor.yaml
//! there, v53.0), and what `vm.info` shows as `config`.
//!
//! The VmConfig that `vm.create` takes and `vm.info` shows is
//! [`crate::config::VmConfig`] itself, the model the command line fills
//! too (see `crate::config` for its field names). The fields of upstream's
//! VmConfig that this VMM knows but does not implement are checked first
//! by [`super::upstream_fields`], which refuses a value that asks for
//! something missing here.

use serde::{Deserialize, Serialize};

use crate::config::VmConfig;

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

/// `vm.remove-device`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRemoveDeviceData {
    /// The device's id.
    pub id: String,
}

/// What `vm.info` shows as `config`: the body `vm.create` was given, with
/// the fields this VMM parses replaced by their normalised values
/// (`typed`), `cpus.max_vcpus` filled in (upstream requires it), and for
/// serial mode Pty the pty's path in `serial.file`, where libvirt reads it.
pub fn shown_config(
    typed: &VmConfig,
    given: Option<&serde_json::Value>,
    pty: Option<&std::path::Path>,
    console_pty: Option<&std::path::Path>,
) -> serde_json::Value {
    // `devices`, `test_devices` and `disks` are shown even when empty, so
    // that a device removed before boot does not come back from the body
    // as given.
    let mut shown = serde_json::to_value(typed).unwrap_or_default();
    // Nor a vsock removed before boot.
    if let Some(fields) = shown.as_object_mut() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConsoleConfig, SerialConfig};

    /// A `vm.create` body as the API reads it.
    fn create(json: &str) -> VmConfig {
        let mut config: VmConfig = serde_json::from_str(json).unwrap();
        config.name_unnamed();
        config
    }

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
        let config = create(json);
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
        assert_eq!(shown_config(&config, Some(&given), None, None), given);
    }

    #[test]
    fn a_minimal_body_takes_the_command_lines_defaults() {
        let config = create(r#"{"payload": {"kernel": "/k"}}"#);
        let mut expected = VmConfig::default();
        expected.payload.kernel = Some("/k".into());
        assert_eq!(config, expected);
        assert_eq!((config.cpus.boot, config.memory.size), (1, 512 << 20));
        assert_eq!(config.serial, SerialConfig::Tty);
        assert_eq!(config.console, ConsoleConfig::Off);
        // Unnamed devices get the names the command line gives them.
        let config = create(
            r#"{"payload": {}, "devices": [{"path": "/dev/vfio/devices/vfio0", "id": null}],
                "test_devices": [{}, {"iommu": false, "id": null}], "disks": [{"path": "/d"}]}"#,
        );
        assert_eq!(config.devices[0].id, "_dev0");
        assert!(!config.devices[0].iommu);
        let tests: Vec<(&str, bool)> = config
            .test_devices
            .iter()
            .map(|t| (t.id.as_str(), t.iommu))
            .collect();
        assert_eq!(tests, [("_test0", true), ("_test1", false)]);
        assert_eq!(config.disks[0].id, "_disk0");
        // Our own objects refuse unknown fields.
        let typo = serde_json::from_str::<VmConfig>(
            r#"{"payload": {}, "test_devices": [{"iomu": true}]}"#,
        );
        assert!(
            typo.unwrap_err()
                .to_string()
                .contains("unknown field `iomu`")
        );
        let missing = serde_json::from_str::<VmConfig>(r#"{"cpus": {"boot_vcpus": 1}}"#);
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("missing field `payload`")
        );
    }

    #[test]
    fn net_takes_cloud_hypervisors_net_config_and_null_is_none() {
        let json = r#"{"payload": {"kernel": "/k"}, "net": [
            {"tap": "vmtap0", "ip": "192.168.249.1", "mask": "255.255.255.0",
             "mac": "52:54:00:12:34:56", "num_queues": 2, "queue_size": 256, "id": "eth0",
             "iommu": false, "offload_tso": true, "vhost_user": false, "fds": null},
            {"tap": "vmtap1"}]}"#;
        let config = create(json);
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
        let config = create(r#"{"payload": {}, "net": null, "cpus": null, "serial": null}"#);
        assert!(config.net.is_empty());
        assert_eq!(config, VmConfig::default());
    }

    #[test]
    fn unknown_fields_are_accepted_and_shown_back() {
        let json = r#"{"payload": {"kernel": "/k"}, "cpus": {"boot_vcpus": 2, "max_vcpus": 8,
            "topology": {"packages": 1}}, "memory": {"size": 1073741824, "shared": true},
            "rate_limit_groups": [], "serial": {"mode": "Pty"}}"#;
        let config = create(json);
        assert_eq!(config.cpus.boot, 2);
        assert_eq!(config.serial, SerialConfig::Pty);
        let given: serde_json::Value = serde_json::from_str(json).unwrap();
        let shown = shown_config(
            &config,
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
        // A VM from the command line shows upstream's required max_vcpus.
        let shown = shown_config(&VmConfig::default(), None, None, None);
        assert_eq!(
            shown["cpus"],
            serde_json::json!({"boot_vcpus": 1, "max_vcpus": 1})
        );
        assert_eq!(shown["devices"], serde_json::json!([]));
    }

    #[test]
    fn values_this_vmm_cannot_honour_are_refused_by_name() {
        let refused = |json: &str| {
            serde_json::from_str::<VmConfig>(json)
                .unwrap_err()
                .to_string()
        };
        let config = create(r#"{"payload": {}, "cpus": {"boot_vcpus": 4, "max_vcpus": 2}}"#);
        assert_eq!(
            config.cpus.validate().unwrap_err().to_string(),
            "field cpus.max_vcpus=2 is not supported: max_vcpus is below boot_vcpus; give at \
             least boot_vcpus or leave it out"
        );
        let err = refused(r#"{"payload": {}, "serial": {"mode": "Tty", "file": "/x"}}"#);
        assert!(err.starts_with("field serial.file="), "{err}");
        let err = refused(r#"{"payload": {}, "console": {"mode": "Socket", "socket": "/s"}}"#);
        assert!(err.starts_with("field console.mode="), "{err}");
        let err = refused(r#"{"payload": {}, "console": {"mode": "File"}}"#);
        assert!(err.starts_with("field console.file="), "{err}");
        let err = refused(r#"{"payload": {}, "serial": {"mode": "Socket"}}"#);
        assert!(
            err.starts_with(
                "field serial.socket=null is not supported: mode Socket needs the socket's path"
            ),
            "{err}"
        );
        let config = create(r#"{"payload": {}, "cpus": {"boot_vcpus": 1, "max_vcpus": 4}}"#);
        assert!(
            config.cpus.validate().is_ok(),
            "a hot-plug ceiling is kept, not refused"
        );
    }
}
