//! The VM configuration, one model for both ways in: every command-line
//! option parses into these types, and they (de)serialise as the API's
//! VmConfig with cloud-hypervisor's field names and nesting (`payload`,
//! `cpus.boot_vcpus`, `serial.mode`, ...; v53.0's openapi), plus our own
//! `vsmmu` and `test_devices`. `vm.create` deserialises its body straight
//! into [`VmConfig`], [`VmConfig::name_unnamed`] fills what the body may
//! leave out, and [`VmConfig::validate`] runs the same rules, one typed
//! error each, as for the command line; `vm.info` serialises it back.
//! Unknown fields are accepted as upstream accepts them (the API checks the
//! upstream fields this VMM lacks first, api/upstream_fields.rs); our own
//! `vsmmu` and `test_devices` refuse unknown fields. Nothing here touches
//! the host.

pub mod cpus;
pub mod net;
pub mod numa;
pub mod options;
pub mod serial;
pub mod virtio;
pub mod vsock;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

pub use cpus::{CpuAffinity, CpusConfig, MAX_HOST_CPU};

pub use net::{NET_SYNTAX, NetConfig, NetConfigError};
pub use numa::{MEMORY_ZONE_SYNTAX, MemoryZoneConfig, NUMA_SYNTAX, NumaConfig, NumaError};
use options::{OptionError, Options};
pub use serial::SerialConfig;
pub use virtio::{
    CONSOLE_SYNTAX, ConsoleConfig, DISK_SYNTAX, DiskConfig, ImageType, RNG_SYNTAX, RngConfig,
    VirtioConfigError,
};
pub use vsock::{VSOCK_SYNTAX, VsockConfig, VsockConfigError};

/// `--cpus` syntax.
pub const CPUS_SYNTAX: &str = "Number of vCPUs: \"boot=<boot_vcpus>\"";
/// `--memory` syntax.
pub const MEMORY_SYNTAX: &str = "Guest RAM: \"size=<guest_memory_size>,hugepages=on|off,shared=on|off\" \
     (sizes take K, M, G or T; hugepages=on backs RAM with huge pages, which HW queues need on \
     a real host; shared=on maps it from a memfd another process can map)";
/// `--device` syntax.
pub const DEVICE_SYNTAX: &str = "Passthrough device: \
     \"path=<sysfs device dir|/dev/vfio/devices/vfioN>,iommu=on|off,id=<device_id>,\
     pci_segment=<segment_id>,host_smmu=<name>\" (iommu=on puts the device behind a vSMMU: one \
     per host SMMU, each on its own PCI segment, chosen from sysfs unless pci_segment= is given; \
     host_smmu= names the host SMMU for backend=emulated only)";
/// `--test-device` syntax.
pub const TEST_DEVICE_SYNTAX: &str = "Emulated PCI test endpoint (no host device; for DMA-API \
     tests such as dma_map_benchmark in the guest): \"iommu=on|off,id=<device_id>,\
     pci_segment=<segment_id>,host_smmu=<name>\" (needs --vsmmu ...,backend=emulated when \
     iommu=on; endpoints with different host_smmu= names get different vSMMUs)";
/// `--vsmmu` syntax.
pub const VSMMU_SYNTAX: &str = "Virtual SMMUv3: \
     \"off|smmuv3|cmdqv[,backend=iommufd|emulated][,page0=mapped|trapped]\" (cmdqv adds the \
     NVIDIA Tegra241 CMDQ-V; backend=emulated needs no SMMU on the host; page0 is for the \
     emulated backend only)";
/// `--serial` syntax.
pub const SERIAL_SYNTAX: &str = "PL011 console: \"tty|off|null|pty|file=<path>|socket=<path>\" \
     (pty: a pseudo-terminal whose path the log (-v) and vm.info show; socket: a Unix socket the \
     VMM listens on, one client at a time)";
/// `--api-socket` syntax.
pub const API_SOCKET_SYNTAX: &str = "HTTP API socket (UNIX domain socket): \
     \"path=<path>\" or \"fd=<fd>\" (a bare path works too); with only this option the VM is \
     defined through PUT /api/v1/vm.create";

/// `--api-socket`: where the control API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiSocket {
    /// Bind a new socket at this path.
    Path(PathBuf),
    /// A listening Unix socket inherited from the parent process.
    Fd(i32),
}

impl ApiSocket {
    /// Parse `path=<path>`, `fd=<fd>` or a bare path.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        if !input.contains('=') && !input.is_empty() {
            return Ok(ApiSocket::Path(PathBuf::from(input)));
        }
        let opts = Options::parse("api-socket", input, &["path", "fd"], false)?;
        match (opts.get("path"), opts.number::<i32>("fd")?) {
            (Some(path), None) => Ok(ApiSocket::Path(PathBuf::from(path))),
            (None, Some(fd)) => Ok(ApiSocket::Fd(fd)),
            _ => Err(opts.invalid("api-socket", input, "give exactly one of path= or fd=")),
        }
    }
}

/// `--memory`, with its `--memory-zone`s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryConfig {
    /// Guest RAM in bytes (0 when zones give it).
    pub size: u64,
    /// Back RAM with huge pages.
    #[serde(default)]
    pub hugepages: bool,
    /// RAM shareable with another process (a memfd mapped shared), as
    /// vhost-user back-ends need (Kata asks for it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub shared: bool,
    /// Memory zones, in guest address order (`--memory-zone`).
    #[serde(
        default,
        deserialize_with = "null_is_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub zones: Vec<MemoryZoneConfig>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A field that JSON may give as null, meaning its default (upstream's
/// optional fields; Kata and libvirt send null for "none").
fn null_is_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// `payload`: what to boot (`--kernel`, `--initramfs`, `--cmdline`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadConfig {
    /// Kernel Image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default, deserialize_with = "null_is_default")]
    pub cmdline: String,
    /// Initramfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<PathBuf>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            size: 512 << 20,
            hugepages: false,
            shared: false,
            zones: Vec::new(),
        }
    }
}

impl MemoryConfig {
    /// Guest RAM in bytes: the zones' sum, or `size` without zones.
    pub fn total(&self) -> u64 {
        if self.zones.is_empty() {
            self.size
        } else {
            self.zones.iter().map(|z| z.size).sum()
        }
    }

    /// Whether RAM is on huge pages (with zones, they all agree: validated).
    pub fn backed_by_hugepages(&self) -> bool {
        self.zones.first().map_or(self.hugepages, |z| z.hugepages)
    }

    /// Parse `size=...,hugepages=on|off`.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        let opts = Options::parse("memory", input, &["size", "hugepages", "shared"], false)?;
        let size = opts
            .size("size")?
            .unwrap_or_else(|| MemoryConfig::default().size);
        let hugepages = opts.toggle("hugepages", false)?;
        let shared = opts.toggle("shared", false)?;
        Ok(MemoryConfig {
            size,
            hugepages,
            shared,
            zones: Vec::new(),
        })
    }
}

/// `--device` (the API's `devices[]` and the body of `vm.add-device`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    /// sysfs directory of the PCI function, or its VFIO cdev.
    pub path: PathBuf,
    /// Behind the vSMMU of its segment.
    #[serde(default)]
    pub iommu: bool,
    /// Identifier; `_dev<N>` when not given (empty until named).
    #[serde(
        default,
        deserialize_with = "null_is_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub id: String,
    /// PCI segment (domain) the device sits on; `None`: chosen by its host
    /// SMMU (see `crate::description`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_segment: Option<u16>,
    /// The host SMMU it sits behind, as the emulated backend pretends
    /// (`backend=iommufd` reads it from sysfs and refuses this option).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_smmu: Option<String>,
}

impl DeviceConfig {
    /// Parse `path=...,iommu=on|off,id=...,pci_segment=N,host_smmu=NAME`;
    /// `index` names the device when no `id=` is given.
    pub fn parse(input: &str, index: usize) -> Result<Self, OptionError> {
        let opts = Options::parse(
            "device",
            input,
            &["path", "iommu", "id", "pci_segment", "host_smmu"],
            false,
        )?;
        let path = PathBuf::from(opts.require("path")?);
        let iommu = opts.toggle("iommu", false)?;
        let id = opts
            .get("id")
            .map_or_else(|| format!("_dev{index}"), str::to_string);
        let pci_segment = opts.number::<u16>("pci_segment")?;
        Ok(DeviceConfig {
            path,
            iommu,
            id,
            pci_segment,
            host_smmu: opts.get("host_smmu").map(str::to_string),
        })
    }
}

/// `--test-device`: an emulated PCI endpoint with no host device behind it
/// (the API's `test_devices[]`, ours: unknown fields are refused).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestDeviceConfig {
    /// Behind the vSMMU of its segment (default: on).
    #[serde(default = "yes")]
    pub iommu: bool,
    /// Identifier; `_test<N>` when not given (empty until named).
    #[serde(
        default,
        deserialize_with = "null_is_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub id: String,
    /// PCI segment; `None`: chosen by its host SMMU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_segment: Option<u16>,
    /// The host SMMU it pretends to sit behind (endpoints with different
    /// names get different vSMMUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_smmu: Option<String>,
}

impl TestDeviceConfig {
    /// Parse `iommu=on|off,id=...,pci_segment=N,host_smmu=NAME`; `index`
    /// names it when no `id=`.
    pub fn parse(input: &str, index: usize) -> Result<Self, OptionError> {
        let opts = Options::parse(
            "test-device",
            input,
            &["iommu", "id", "pci_segment", "host_smmu"],
            false,
        )?;
        Ok(TestDeviceConfig {
            iommu: opts.toggle("iommu", true)?,
            id: opts
                .get("id")
                .map_or_else(|| format!("_test{index}"), str::to_string),
            pci_segment: opts.number::<u16>("pci_segment")?,
            host_smmu: opts.get("host_smmu").map(str::to_string),
        })
    }
}

fn yes() -> bool {
    true
}

/// Which vSMMU the VM gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VsmmuKind {
    /// No vSMMU.
    Off,
    /// A nested-mode vSMMUv3.
    Smmuv3,
    /// A vSMMUv3 with the Tegra241 CMDQ-V.
    Cmdqv,
}

/// Where the vSMMU's host side lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The host SMMU through /dev/iommu and VFIO cdevs.
    Iommufd,
    /// A software model of the kernel contract (no SMMU needed).
    Emulated,
}

/// How the CMDQ-V's VINTF0 page0 reaches the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Page0Mode {
    /// Mapped into the guest as memory: no VM exit per command.
    Mapped,
    /// Every page0 access traps to the model (deterministic; emulated only).
    Trapped,
}

/// `ats=`: whether the guest sees ATS (IDR0.ATS and the IORT root complex's
/// ATS attribute).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AtsMode {
    /// Never (the default: the guest keeps its functions' ATCs off).
    #[default]
    Off,
    /// Always; refused at start on a host SMMU without ATS.
    On,
    /// When the host SMMU has it (its IDR0.ATS; `--dump-acpi` has no host
    /// and shows it off).
    Auto,
}

impl AtsMode {
    fn is_off(&self) -> bool {
        *self == AtsMode::Off
    }
}

/// The largest IDR1.SSIDSIZE (20 PASID bits).
pub const MAX_SSID_BITS: u8 = 20;

/// `--vsmmu` (in the API's VmConfig: the `vsmmu` object; absent keys take
/// their defaults, unknown keys are refused).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VsmmuConfig {
    /// off, smmuv3 or cmdqv.
    pub kind: VsmmuKind,
    /// iommufd or emulated.
    pub backend: BackendKind,
    /// page0 mode; `None` = the backend's default (mapped).
    pub page0: Option<Page0Mode>,
    /// ATS.
    #[serde(skip_serializing_if = "AtsMode::is_off")]
    pub ats: AtsMode,
    /// Substream ID (PASID) bits; `None` (`ssidsize=auto`) = the host's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssidsize: Option<u8>,
}

impl Default for VsmmuConfig {
    fn default() -> Self {
        VsmmuConfig {
            kind: VsmmuKind::Off,
            backend: BackendKind::Iommufd,
            page0: None,
            ats: AtsMode::Off,
            ssidsize: None,
        }
    }
}

impl VsmmuConfig {
    /// Parse `off|smmuv3|cmdqv[,backend=...][,page0=...][,ats=...][,ssidsize=...]`.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        let opts = Options::parse(
            "vsmmu",
            input,
            &["backend", "page0", "ats", "ssidsize"],
            true,
        )?;
        let word = opts.word.as_deref().unwrap_or("smmuv3");
        let kind = match word {
            "off" => VsmmuKind::Off,
            "smmuv3" => VsmmuKind::Smmuv3,
            "cmdqv" => VsmmuKind::Cmdqv,
            other => return Err(opts.invalid("vsmmu", other, "use off, smmuv3 or cmdqv")),
        };
        let backend = match opts.get("backend") {
            None | Some("iommufd") => BackendKind::Iommufd,
            Some("emulated") => BackendKind::Emulated,
            Some(other) => return Err(opts.invalid("backend", other, "use iommufd or emulated")),
        };
        let page0 = match opts.get("page0") {
            None => None,
            Some("mapped") => Some(Page0Mode::Mapped),
            Some("trapped") => Some(Page0Mode::Trapped),
            Some(other) => return Err(opts.invalid("page0", other, "use mapped or trapped")),
        };
        let ats = match opts.get("ats") {
            None | Some("off") => AtsMode::Off,
            Some("on") => AtsMode::On,
            Some("auto") => AtsMode::Auto,
            Some(other) => return Err(opts.invalid("ats", other, "use on, off or auto")),
        };
        let ssidsize = match opts.get("ssidsize") {
            None | Some("auto") => None,
            Some(raw) => Some(
                options::parse_u64(raw)
                    .and_then(|n| u8::try_from(n).ok())
                    .filter(|n| *n <= MAX_SSID_BITS)
                    .ok_or_else(|| {
                        opts.invalid(
                            "ssidsize",
                            raw,
                            "use auto or a number of PASID bits from 0 to 20",
                        )
                    })?,
            ),
        };
        Ok(VsmmuConfig {
            kind,
            backend,
            page0,
            ats,
            ssidsize,
        })
    }

    /// The page0 mode in effect.
    pub fn page0_mode(&self) -> Page0Mode {
        self.page0.unwrap_or(Page0Mode::Mapped)
    }
}

/// The whole VM: the command line's options, and the API's VmConfig.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    /// What to boot (required in the API, as upstream).
    pub payload: PayloadConfig,
    /// vCPUs (default: 1).
    #[serde(default, deserialize_with = "null_is_default")]
    pub cpus: CpusConfig,
    /// RAM (default: 512 MiB).
    #[serde(default, deserialize_with = "null_is_default")]
    pub memory: MemoryConfig,
    /// Passthrough devices.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Ours: emulated test endpoints (`--test-device`).
    #[serde(default)]
    pub test_devices: Vec<TestDeviceConfig>,
    /// Ours: the vSMMU (`--vsmmu`), e.g.
    /// `{"kind": "cmdqv", "backend": "emulated", "page0": "mapped"}`.
    #[serde(default, deserialize_with = "null_is_default")]
    pub vsmmu: VsmmuConfig,
    /// The PL011 console (default: Tty).
    #[serde(default, deserialize_with = "null_is_default")]
    pub serial: SerialConfig,
    /// Guest NUMA nodes (`--numa`); none: one node.
    #[serde(
        default,
        deserialize_with = "null_is_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub numa: Vec<NumaConfig>,
    /// virtio-blk disks (cloud-hypervisor's DiskConfig).
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// virtio-net devices over taps (`--net`; cloud-hypervisor's
    /// NetConfig; null is none, as Kata sends it).
    #[serde(
        default,
        deserialize_with = "null_is_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub net: Vec<NetConfig>,
    /// The virtio-console (default: Off, unlike upstream's Tty: the PL011
    /// of `serial` is this VMM's console).
    #[serde(default, deserialize_with = "null_is_default")]
    pub console: ConsoleConfig,
    /// The virtio-rng (`--rng`): absent or null, none (upstream gives
    /// every VM one; Kata always sends `{"src": "/dev/urandom"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng: Option<RngConfig>,
    /// The virtio-vsock over vhost-vsock (`--vsock`, at most one); none
    /// without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
}

/// A VM configuration that breaks a rule. Each error names the bad value
/// and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A `--cpus affinity=` entry breaks a rule (named in the text).
    #[error("--cpus affinity: {0}")]
    Affinity(String),
    /// The API's `cpus.max_vcpus` below `boot_vcpus`.
    #[error(
        "field cpus.max_vcpus={0} is not supported: max_vcpus is below boot_vcpus; give at \
         least boot_vcpus or leave it out"
    )]
    MaxVcpusBelowBoot(u32),
    /// Two devices share an id.
    #[error("two --device options use id={0}; give each device its own id=")]
    DuplicateDeviceId(String),
    /// Two devices name the same host device.
    #[error("--device path={0} is given twice; a host device can be passed through once")]
    DuplicateDevicePath(PathBuf),
    /// `iommu=on` with no vSMMU.
    #[error(
        "--device id={0} has iommu=on but --vsmmu is off; add --vsmmu smmuv3 or --vsmmu cmdqv, \
         or set iommu=off"
    )]
    IommuWithoutVsmmu(String),
    /// An iommufd vSMMU needs a device to allocate the vIOMMU against.
    #[error(
        "--vsmmu {0} with backend=iommufd needs at least one --device ...,iommu=on: the host \
         vIOMMU is allocated against a passthrough device (use backend=emulated to run without one)"
    )]
    IommufdVsmmuWithoutDevice(&'static str),
    /// page0= given for the iommufd backend.
    #[error(
        "--vsmmu page0={0} is only for backend=emulated; the iommufd backend always maps the \
         host VINTF page0 into the guest"
    )]
    Page0WithIommufd(&'static str),
    /// page0= given without a CMD-QV.
    #[error("--vsmmu page0= only applies to --vsmmu cmdqv")]
    Page0WithoutCmdqv,
    /// A device path that is neither a sysfs PCI device nor a VFIO cdev.
    #[error(
        "--device path={0} is not a PCI device: use /sys/bus/pci/devices/<DDDD:BB:DD.F> or \
         /dev/vfio/devices/vfio<N>"
    )]
    BadDevicePath(PathBuf),
    /// A device id that would clash with generated ids.
    #[error("--device id={0}: ids starting with '_' are reserved for generated names")]
    ReservedDeviceId(String),
    /// A test endpoint behind a vSMMU that is not emulated.
    #[error(
        "--test-device id={0} has iommu=on but the vSMMU backend is not emulated; a test endpoint \
         has no host device to register with the host IOMMU: use --vsmmu ...,backend=emulated"
    )]
    TestDeviceNeedsEmulated(String),
    /// `host_smmu=` on a passthrough device with the iommufd backend.
    #[error(
        "--device id={0} has host_smmu= but the vSMMU backend is iommufd, which reads each \
         device's host SMMU from sysfs; drop host_smmu= (it is for backend=emulated)"
    )]
    HostSmmuWithIommufd(String),
    /// Kernel missing when a VM is to run.
    #[error("--kernel is required to boot a VM (only --dump-acpi works without one)")]
    MissingKernel,
    /// hugepages with the emulated backend cannot be honoured on a host without them: kept as
    /// a host check at run time; here only sizes are checked.
    /// Zones disagree on huge pages.
    #[error(
        "--memory-zone: hugepages=on on some zones and off on others; give every zone the same"
    )]
    MixedHugepages,
    /// A NUMA layout rule.
    #[error(transparent)]
    Numa(#[from] NumaError),
    #[error("--memory size={0:#x} is too small; a guest needs at least 64M")]
    MemoryTooSmall(u64),
    /// A `--disk` or `--console` rule.
    #[error(transparent)]
    Virtio(#[from] VirtioConfigError),
    /// A `--net` rule.
    #[error(transparent)]
    Net(#[from] NetConfigError),
    /// A `--vsock` rule.
    #[error(transparent)]
    Vsock(#[from] VsockConfigError),
}

impl VmConfig {
    /// Name what came unnamed, by position (`_dev<N>`, `_test<N>`,
    /// `_disk<N>`, `_net<N>`), and give each NIC without a MAC a random one,
    /// chosen once here so every boot shows the guest the same. The command
    /// line's parsers name as they go; an API body may leave them out.
    pub fn name_unnamed(&mut self) {
        fn name(id: &mut String, prefix: &str, index: usize) {
            if id.is_empty() {
                *id = format!("_{prefix}{index}");
            }
        }
        for (index, device) in self.devices.iter_mut().enumerate() {
            name(&mut device.id, "dev", index);
        }
        for (index, device) in self.test_devices.iter_mut().enumerate() {
            name(&mut device.id, "test", index);
        }
        for (index, disk) in self.disks.iter_mut().enumerate() {
            name(&mut disk.id, "disk", index);
        }
        for (index, net) in self.net.iter_mut().enumerate() {
            name(&mut net.id, "net", index);
            if net.mac.is_none() {
                net.mac = Some(virtio_devices::net::MacAddr::random().to_string());
            }
        }
    }

    /// Check every rule that needs no host access. `needs_kernel` is false
    /// for `--dump-acpi`, which describes the VM without booting it.
    pub fn validate(&self, needs_kernel: bool) -> Result<(), ConfigError> {
        if needs_kernel && self.payload.kernel.is_none() {
            return Err(ConfigError::MissingKernel);
        }
        self.cpus.validate()?;
        let device_ids: Vec<&str> = self.devices.iter().map(|d| d.id.as_str()).collect();
        numa::validate(
            &self.memory.zones,
            &self.numa,
            self.cpus.boot,
            self.memory.size,
            &device_ids,
        )?;
        if self
            .memory
            .zones
            .iter()
            .any(|z| z.hugepages != self.memory.backed_by_hugepages())
        {
            return Err(ConfigError::MixedHugepages);
        }
        if self.memory.total() < 64 << 20 {
            return Err(ConfigError::MemoryTooSmall(self.memory.total()));
        }
        let mut ids = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for (index, device) in self.devices.iter().enumerate() {
            if device.id.starts_with('_') && device.id != format!("_dev{index}") {
                return Err(ConfigError::ReservedDeviceId(device.id.clone()));
            }
            if !ids.insert(device.id.as_str()) {
                return Err(ConfigError::DuplicateDeviceId(device.id.clone()));
            }
            if !paths.insert(device.path.as_path()) {
                return Err(ConfigError::DuplicateDevicePath(device.path.clone()));
            }
            if !is_pci_device_path(&device.path) {
                return Err(ConfigError::BadDevicePath(device.path.clone()));
            }
            if device.iommu && self.vsmmu.kind == VsmmuKind::Off {
                return Err(ConfigError::IommuWithoutVsmmu(device.id.clone()));
            }
            if device.host_smmu.is_some() && self.vsmmu.backend == BackendKind::Iommufd {
                return Err(ConfigError::HostSmmuWithIommufd(device.id.clone()));
            }
        }
        for (index, device) in self.test_devices.iter().enumerate() {
            if device.id.starts_with('_') && device.id != format!("_test{index}") {
                return Err(ConfigError::ReservedDeviceId(device.id.clone()));
            }
            if !ids.insert(device.id.as_str()) {
                return Err(ConfigError::DuplicateDeviceId(device.id.clone()));
            }
            if device.iommu && self.vsmmu.kind == VsmmuKind::Off {
                return Err(ConfigError::IommuWithoutVsmmu(device.id.clone()));
            }
            if device.iommu && self.vsmmu.backend != BackendKind::Emulated {
                return Err(ConfigError::TestDeviceNeedsEmulated(device.id.clone()));
            }
        }
        virtio::validate(self, &mut ids)?;
        net::validate(&self.net, &mut ids)?;
        vsock::validate(self.vsock.as_ref(), &mut ids)?;
        self.validate_vsmmu()
    }

    fn validate_vsmmu(&self) -> Result<(), ConfigError> {
        let vsmmu = &self.vsmmu;
        let kind_name = match vsmmu.kind {
            VsmmuKind::Off => "off",
            VsmmuKind::Smmuv3 => "smmuv3",
            VsmmuKind::Cmdqv => "cmdqv",
        };
        if let Some(page0) = vsmmu.page0 {
            if vsmmu.kind != VsmmuKind::Cmdqv {
                return Err(ConfigError::Page0WithoutCmdqv);
            }
            if vsmmu.backend == BackendKind::Iommufd {
                let name = match page0 {
                    Page0Mode::Mapped => "mapped",
                    Page0Mode::Trapped => "trapped",
                };
                return Err(ConfigError::Page0WithIommufd(name));
            }
        }
        if vsmmu.kind != VsmmuKind::Off
            && vsmmu.backend == BackendKind::Iommufd
            && !self.devices.iter().any(|d| d.iommu)
        {
            return Err(ConfigError::IommufdVsmmuWithoutDevice(kind_name));
        }
        Ok(())
    }
}

/// A sysfs PCI function directory or a VFIO device cdev, by its shape (the
/// path is only opened when a VM runs with the iommufd backend).
fn is_pci_device_path(path: &Path) -> bool {
    let text = path.to_string_lossy();
    if let Some(name) = text.strip_prefix("/dev/vfio/devices/vfio") {
        return !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
    }
    let Some(bdf) = text
        .strip_prefix("/sys/bus/pci/devices/")
        .map(|s| s.trim_end_matches('/'))
    else {
        return false;
    };
    // DDDD:BB:DD.F
    let bytes = bdf.as_bytes();
    bytes.len() == 12
        && bytes[4] == b':'
        && bytes[7] == b':'
        && bytes[10] == b'.'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| matches!(i, 4 | 7 | 10) || b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests;
