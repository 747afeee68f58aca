//! The fields of cloud-hypervisor's VmConfig (v53.0 spec) that this VMM
//! knows but does not implement, and the values of each it accepts.
//!
//! The rule, upstream's leniency with one exception: cloud-hypervisor
//! deserialises VmConfig without `deny_unknown_fields`, and its clients
//! (Kata's Go client above all) send every field, most at their off value.
//! So a field is accepted when its value asks for nothing this VMM lacks
//! (null, false, empty, or upstream's default), and refused, naming the
//! field, the value and why, when it asks for something this VMM does not
//! do: accepting it would start a VM that differs from the one asked for
//! without saying so. Fields not listed here and not parsed by
//! [`super::types`] are accepted and kept (`vm.info` shows them back): they
//! are ceilings for features that are refused where they would act
//! (`cpus.max_vcpus`, `memory.hotplug_size` for `vm.resize`), or
//! descriptions that change nothing here (`rate_limit_groups` when no
//! disk names one, `platform.num_pci_segments`, SMBIOS strings).
//!
//! Decided per field:
//! - `memory.shared` is implemented (guest RAM from a memfd mapped
//!   shared, [`crate::memory::Backing`]), so it is parsed, not listed.
//! - `rng` is implemented (virtio-rng reading `src`), so it is parsed;
//!   only `rng.iommu: true` is refused.
//! - `net` is implemented (virtio-net over a tap), so it is parsed; its
//!   vhost-user, MTU, host MAC, rate limiting and `fds` fields are refused
//!   when set (`vm.add-net` takes taps as descriptors sent with the
//!   request, not as numbers).
//! - `vsock` is implemented (virtio-vsock over vhost-vsock with the hybrid
//!   vsock socket Kata's agent client uses), so it is parsed; only
//!   `vsock.iommu: true` is refused.

use serde_json::Value;

/// A field whose value asks for something this VMM does not do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demand {
    /// Its path, e.g. `cpus.kvm_hyperv` or `devices[1].pci_device_id`.
    pub path: String,
    /// The value given, as JSON (at most 80 characters).
    pub value: String,
    /// Why it is refused and what would work.
    pub why: &'static str,
}

impl std::fmt::Display for Demand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "field {}={} is not supported: {}",
            self.path, self.value, self.why
        )
    }
}

/// Which values of a field are accepted.
#[derive(Clone, Copy)]
enum Accepts {
    /// Only the off values: null, false, 0, "", [], {}.
    Off,
    /// The off values and `true` (upstream's default is true).
    OffOrTrue,
    /// Only `true` or null (the default is true; false asks for less).
    TrueOrNull,
    /// Only null or one of these strings.
    OneOf(&'static [&'static str]),
    /// Only null or an integer no larger than this.
    AtMost(u64),
}

impl Accepts {
    fn allows(self, value: &Value) -> bool {
        match self {
            Accepts::Off => is_off(value),
            Accepts::OffOrTrue => is_off(value) || value == &Value::Bool(true),
            Accepts::TrueOrNull => value.is_null() || value == &Value::Bool(true),
            Accepts::OneOf(texts) => {
                value.is_null() || value.as_str().is_some_and(|v| texts.contains(&v))
            }
            Accepts::AtMost(max) => value.is_null() || value.as_u64().is_some_and(|n| n <= max),
        }
    }
}

/// null, false, 0, "", [] or {}.
fn is_off(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

const VHOST_NET: &str = "vhost-user NICs are not implemented; give tap (the VMM serves the \
                         NIC itself)";

const VIRTIO: &str = "virtio and vhost-user devices are not implemented yet; give the VM \
                      passthrough functions (devices) or leave it out";

/// Every known-but-unimplemented field: path (`[]` = each element of an
/// array), accepted values, and why any other value is refused.
const FIELDS: &[(&str, Accepts, &str)] = &[
    ("disks[].vhost_user", Accepts::Off, VIRTIO),
    ("disks[].vhost_socket", Accepts::Off, VIRTIO),
    (
        "disks[].iommu",
        Accepts::Off,
        "virtio devices are never behind the vSMMU; leave iommu off",
    ),
    (
        "disks[].rate_limiter_config",
        Accepts::Off,
        "disk rate limiting is not implemented; leave it out",
    ),
    (
        "disks[].rate_limit_group",
        Accepts::Off,
        "disk rate limiting is not implemented; leave it out",
    ),
    (
        "disks[].queue_affinity",
        Accepts::Off,
        "queue affinity is not implemented; pin the disk's worker threads from outside",
    ),
    (
        "net[].iommu",
        Accepts::Off,
        "virtio devices are never behind the vSMMU; leave iommu off",
    ),
    (
        "net[].fds",
        Accepts::Off,
        "descriptor numbers in JSON would name this VMM's own files; send the taps themselves \
         with vm.add-net (SCM_RIGHTS), or give tap= and let the VMM open it",
    ),
    (
        "net[].host_mac",
        Accepts::Off,
        "setting the tap's host-side MAC is not implemented; leave host_mac out",
    ),
    (
        "net[].mtu",
        Accepts::Off,
        "VIRTIO_NET_F_MTU is not implemented; leave mtu out (set the tap's MTU on the host)",
    ),
    ("net[].vhost_user", Accepts::Off, VHOST_NET),
    ("net[].vhost_socket", Accepts::Off, VHOST_NET),
    (
        "net[].rate_limiter_config",
        Accepts::Off,
        "net rate limiting is not implemented; leave it out",
    ),
    ("fs", Accepts::Off, VIRTIO),
    ("pmem", Accepts::Off, VIRTIO),
    ("generic-vhost-user", Accepts::Off, VIRTIO),
    ("vdpa", Accepts::Off, VIRTIO),
    (
        "balloon",
        Accepts::Off,
        "virtio-balloon is not implemented; leave balloon out",
    ),
    (
        "user_devices",
        Accepts::Off,
        "vfio-user devices are not implemented; give VFIO passthrough functions (devices)",
    ),
    (
        "rng.iommu",
        Accepts::Off,
        "virtio devices are never behind the vSMMU (the host SMMU cannot translate for them)",
    ),
    (
        "vsock.iommu",
        Accepts::Off,
        "virtio devices are never behind the vSMMU (vhost-vsock reads guest-physical addresses)",
    ),
    (
        "iommu",
        Accepts::Off,
        "virtio-iommu is not implemented; put devices behind the vSMMU (vsmmu, devices[].iommu)",
    ),
    (
        "watchdog",
        Accepts::Off,
        "the virtio watchdog is not implemented",
    ),
    (
        "pvpanic",
        Accepts::Off,
        "the pvpanic device is not implemented",
    ),
    ("tpm", Accepts::Off, "TPM emulation is not implemented"),
    (
        "landlock_enable",
        Accepts::Off,
        "Landlock sandboxing is not implemented; confine the VMM from outside",
    ),
    (
        "landlock_rules",
        Accepts::Off,
        "Landlock sandboxing is not implemented",
    ),
    (
        "pci_segments",
        Accepts::Off,
        "per-segment aperture weights are not implemented; the layout is fixed",
    ),
    (
        "serial.iommu",
        Accepts::Off,
        "the PL011 is a platform device; no IOMMU translates it",
    ),
    (
        "console.mode",
        Accepts::OneOf(&["Off", "Null", "Tty", "Pty", "File"]),
        "the virtio-console has no Socket mode yet; use Pty or File (or serial mode Socket)",
    ),
    (
        "debug_console.mode",
        Accepts::OneOf(&["Off", "Null"]),
        "the debug console is an x86 I/O port; use serial",
    ),
    (
        "cpus.kvm_hyperv",
        Accepts::Off,
        "Hyper-V enlightenments are x86 only",
    ),
    (
        "cpus.features",
        Accepts::Off,
        "CPU feature selection (AMX) is x86 only",
    ),
    (
        "cpus.topology.threads_per_core",
        Accepts::AtMost(1),
        "the guest sees one thread per core",
    ),
    (
        "cpus.topology.dies_per_package",
        Accepts::AtMost(1),
        "the guest sees one die per package",
    ),
    (
        "memory.hotplugged_size",
        Accepts::Off,
        "memory hot-plug is not implemented",
    ),
    (
        "memory.mergeable",
        Accepts::Off,
        "KSM merging is not implemented",
    ),
    (
        "memory.prefault",
        Accepts::Off,
        "prefaulting is not implemented",
    ),
    (
        "memory.reserve",
        Accepts::Off,
        "reserving RAM is not implemented",
    ),
    (
        "memory.hugepage_size",
        Accepts::Off,
        "only the host's default huge page size is used; leave hugepage_size out",
    ),
    (
        "memory.thp",
        Accepts::TrueOrNull,
        "transparent huge pages cannot be turned off here",
    ),
    (
        "payload.firmware",
        Accepts::Off,
        "only a kernel Image boots (payload.kernel); firmware is not implemented",
    ),
    (
        "payload.igvm",
        Accepts::Off,
        "IGVM (confidential guests) is not implemented",
    ),
    (
        "payload.host_data",
        Accepts::Off,
        "confidential guests are not implemented",
    ),
    ("platform.tdx", Accepts::Off, "TDX is x86 only"),
    ("platform.sev_snp", Accepts::Off, "SEV-SNP is x86 only"),
    (
        "platform.iommu_segments",
        Accepts::Off,
        "virtio-iommu is not implemented; put devices behind the vSMMU (vsmmu, devices[].iommu)",
    ),
    (
        "platform.iommufd",
        Accepts::OffOrTrue,
        "passthrough always uses iommufd here",
    ),
    (
        "devices[].pci_device_id",
        Accepts::Off,
        "PCI slots are assigned by this VMM; leave pci_device_id out",
    ),
    (
        "devices[].x_nv_gpudirect_clique",
        Accepts::Off,
        "GPUDirect cliques are not implemented",
    ),
    (
        "devices[].x_exclude_mmap_bars",
        Accepts::Off,
        "every mappable BAR is mapped here",
    ),
];

/// Every field of `config` (a VmConfig body) whose value asks for
/// something this VMM does not do.
pub fn demands(config: &Value) -> Vec<Demand> {
    let mut found = Vec::new();
    for (path, accepts, why) in FIELDS {
        let steps: Vec<&str> = path.split('.').collect();
        visit(config, &steps, String::new(), &mut |at, value| {
            if !accepts.allows(value) {
                found.push(Demand {
                    path: at,
                    value: shorten(value),
                    why,
                });
            }
        });
    }
    found
}

/// Call `found` with the path and value of every field `steps` reaches.
fn visit(value: &Value, steps: &[&str], at: String, found: &mut dyn FnMut(String, &Value)) {
    let Some((step, rest)) = steps.split_first() else {
        found(at, value);
        return;
    };
    let (name, each) = match step.strip_suffix("[]") {
        Some(name) => (name, true),
        None => (*step, false),
    };
    let Some(child) = value.get(name) else {
        return;
    };
    let here = if at.is_empty() {
        name.to_string()
    } else {
        format!("{at}.{name}")
    };
    if !each {
        visit(child, rest, here, found);
        return;
    }
    for (index, element) in child.as_array().into_iter().flatten().enumerate() {
        visit(element, rest, format!("{here}[{index}]"), found);
    }
}

fn shorten(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 80 {
        return text;
    }
    let mut short: String = text.chars().take(77).collect();
    short.push_str("...");
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(json: &str) -> Vec<String> {
        let value: Value = serde_json::from_str(json).unwrap();
        demands(&value).iter().map(|d| d.path.clone()).collect()
    }

    #[test]
    fn off_values_and_upstream_defaults_are_accepted() {
        let kata_like = r#"{
            "payload": {"kernel": "/k", "firmware": ""},
            "cpus": {"boot_vcpus": 1, "max_vcpus": 8, "kvm_hyperv": false,
                     "topology": {"threads_per_core": 1, "cores_per_die": 8, "dies_per_package": 1, "packages": 1}},
            "memory": {"size": 1073741824, "shared": true, "hotplug_size": 0, "thp": true},
            "rng": {"src": "/dev/urandom", "iommu": false},
            "vsock": {"cid": 3, "socket": "/run/vc/vm/x/clh.sock", "iommu": false},
            "iommu": false, "watchdog": false, "pvpanic": false, "landlock_enable": false,
            "disks": [], "net": null, "numa": [], "platform": {"num_pci_segments": 1},
            "devices": [{"path": "/sys/bus/pci/devices/0000:01:00.0/", "pci_device_id": null}]
        }"#;
        assert_eq!(refused(kata_like), Vec::<String>::new());
    }

    #[test]
    fn values_that_ask_for_more_are_refused_naming_the_path() {
        let json = r#"{
            "payload": {"kernel": "/k"},
            "cpus": {"boot_vcpus": 2, "kvm_hyperv": true, "topology": {"threads_per_core": 2}},
            "memory": {"size": 1073741824, "thp": false},
            "vsock": {"cid": 3, "socket": "/tmp/v", "iommu": true},
            "rng": {"src": "/dev/hwrng", "iommu": true},
            "devices": [{"path": "/a"}, {"path": "/b", "pci_device_id": 3}],
            "disks": [{"path": "/img"}, {"path": "/img2", "iommu": true, "vhost_user": false}],
            "net": [{"tap": "t0", "offload_tso": true, "vhost_mode": "Client"}, {"mtu": 9000, "iommu": true}],
            "console": {"mode": "Socket"}
        }"#;
        assert_eq!(
            refused(json),
            [
                "disks[1].iommu",
                "net[1].iommu",
                "net[1].mtu",
                "rng.iommu",
                "vsock.iommu",
                "console.mode",
                "cpus.kvm_hyperv",
                "cpus.topology.threads_per_core",
                "memory.thp",
                "devices[1].pci_device_id"
            ]
        );
        let value: Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            demands(&value)[4].to_string(),
            "field vsock.iommu=true is not supported: virtio devices are never behind the vSMMU \
             (vhost-vsock reads guest-physical addresses)"
        );
    }

    #[test]
    fn long_values_are_shortened() {
        let long = Value::String("x".repeat(500));
        assert_eq!(shorten(&long).chars().count(), 80);
    }
}
