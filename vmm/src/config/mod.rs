//! The VM configuration: every command-line option parsed into a typed,
//! serde-serialisable struct, and [`VmConfig::validate`] with one typed error
//! per rule. Nothing here touches the host.

pub mod options;
pub mod virtio;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use options::{OptionError, Options};
pub use virtio::{CONSOLE_SYNTAX, ConsoleConfig, DISK_SYNTAX, DiskConfig, VirtioConfigError};

/// `--cpus` syntax.
pub const CPUS_SYNTAX: &str = "Number of vCPUs: \"boot=<boot_vcpus>\"";
/// `--memory` syntax.
pub const MEMORY_SYNTAX: &str = "Guest RAM: \"size=<guest_memory_size>,hugepages=on|off\" \
     (sizes take K, M, G or T; hugepages=on backs RAM with huge pages, which HW queues need on \
     a real host)";
/// `--device` syntax.
pub const DEVICE_SYNTAX: &str = "Passthrough device: \
     \"path=<sysfs device dir|/dev/vfio/devices/vfioN>,iommu=on|off,id=<device_id>,\
     pci_segment=<segment_id>\" (iommu=on puts the device behind the vSMMU of its segment)";
/// `--test-device` syntax.
pub const TEST_DEVICE_SYNTAX: &str = "Emulated PCI test endpoint (no host device; for DMA-API \
     tests such as dma_map_benchmark in the guest): \"iommu=on|off,id=<device_id>,\
     pci_segment=<segment_id>\" (needs --vsmmu ...,backend=emulated when iommu=on)";
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

/// `--cpus`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpusConfig {
    /// vCPUs at boot.
    pub boot: u32,
}

impl Default for CpusConfig {
    fn default() -> Self {
        CpusConfig { boot: 1 }
    }
}

impl CpusConfig {
    /// Parse `boot=N`.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        let opts = Options::parse("cpus", input, &["boot"], false)?;
        let boot = opts
            .number::<u32>("boot")?
            .ok_or_else(|| opts.invalid("boot", "", "give the number of vCPUs, e.g. boot=2"))?;
        Ok(CpusConfig { boot })
    }
}

/// `--memory`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryConfig {
    /// Guest RAM in bytes.
    pub size: u64,
    /// Back RAM with huge pages.
    pub hugepages: bool,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            size: 512 << 20,
            hugepages: false,
        }
    }
}

impl MemoryConfig {
    /// Parse `size=...,hugepages=on|off`.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        let opts = Options::parse("memory", input, &["size", "hugepages"], false)?;
        let size = opts
            .size("size")?
            .unwrap_or_else(|| MemoryConfig::default().size);
        let hugepages = opts.toggle("hugepages", false)?;
        Ok(MemoryConfig { size, hugepages })
    }
}

/// `--device`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    /// sysfs directory of the PCI function, or its VFIO cdev.
    pub path: PathBuf,
    /// Behind the vSMMU of its segment.
    pub iommu: bool,
    /// Identifier; `_dev<N>` when not given.
    pub id: String,
    /// PCI segment (domain) the device sits on.
    pub pci_segment: u16,
}

impl DeviceConfig {
    /// Parse `path=...,iommu=on|off,id=...,pci_segment=N`; `index` names
    /// the device when no `id=` is given.
    pub fn parse(input: &str, index: usize) -> Result<Self, OptionError> {
        let opts = Options::parse(
            "device",
            input,
            &["path", "iommu", "id", "pci_segment"],
            false,
        )?;
        let path = PathBuf::from(opts.require("path")?);
        let iommu = opts.toggle("iommu", false)?;
        let id = opts
            .get("id")
            .map_or_else(|| format!("_dev{index}"), str::to_string);
        let pci_segment = opts.number::<u16>("pci_segment")?.unwrap_or(0);
        Ok(DeviceConfig {
            path,
            iommu,
            id,
            pci_segment,
        })
    }
}

/// `--test-device`: an emulated PCI endpoint with no host device behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestDeviceConfig {
    /// Behind the vSMMU of its segment.
    pub iommu: bool,
    /// Identifier; `_test<N>` when not given.
    pub id: String,
    /// PCI segment.
    pub pci_segment: u16,
}

impl TestDeviceConfig {
    /// Parse `iommu=on|off,id=...,pci_segment=N`; `index` names it when no `id=`.
    pub fn parse(input: &str, index: usize) -> Result<Self, OptionError> {
        let opts = Options::parse("test-device", input, &["iommu", "id", "pci_segment"], false)?;
        Ok(TestDeviceConfig {
            iommu: opts.toggle("iommu", true)?,
            id: opts
                .get("id")
                .map_or_else(|| format!("_test{index}"), str::to_string),
            pci_segment: opts.number::<u16>("pci_segment")?.unwrap_or(0),
        })
    }
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
}

impl Default for VsmmuConfig {
    fn default() -> Self {
        VsmmuConfig {
            kind: VsmmuKind::Off,
            backend: BackendKind::Iommufd,
            page0: None,
        }
    }
}

impl VsmmuConfig {
    /// Parse `off|smmuv3|cmdqv[,backend=...][,page0=...]`.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        let opts = Options::parse("vsmmu", input, &["backend", "page0"], true)?;
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
        Ok(VsmmuConfig {
            kind,
            backend,
            page0,
        })
    }

    /// The page0 mode in effect.
    pub fn page0_mode(&self) -> Page0Mode {
        self.page0.unwrap_or(Page0Mode::Mapped)
    }
}

/// `--serial`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialConfig {
    /// The VMM's stdout/stdin.
    Tty,
    /// Output appended to a file.
    File(PathBuf),
    /// No console.
    Off,
    /// Output discarded (upstream's Null: the device is there, silent).
    Null,
    /// A pseudo-terminal the VMM opens (see `crate::pty`).
    Pty,
    /// A Unix socket the VMM listens on (see `crate::serial_socket`).
    Socket(PathBuf),
}

impl SerialConfig {
    /// Parse `tty|off|null|pty|file=<path>|socket=<path>`.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        match input {
            "tty" => Ok(SerialConfig::Tty),
            "off" => Ok(SerialConfig::Off),
            "null" => Ok(SerialConfig::Null),
            "pty" => Ok(SerialConfig::Pty),
            _ => {
                let opts = Options::parse("serial", input, &["file", "socket"], false)?;
                match (opts.get("file"), opts.get("socket")) {
                    (Some(file), None) => Ok(SerialConfig::File(PathBuf::from(file))),
                    (None, Some(socket)) => Ok(SerialConfig::Socket(PathBuf::from(socket))),
                    _ => Err(opts.invalid(
                        "serial",
                        input,
                        "use tty, off, null, pty, file=<path> or socket=<path>",
                    )),
                }
            }
        }
    }
}

/// The whole VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    /// Kernel Image to boot.
    pub kernel: Option<PathBuf>,
    /// Initramfs.
    pub initramfs: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// vCPUs.
    pub cpus: CpusConfig,
    /// RAM.
    pub memory: MemoryConfig,
    /// Passthrough devices.
    pub devices: Vec<DeviceConfig>,
    /// Emulated test endpoints.
    #[serde(default)]
    pub test_devices: Vec<TestDeviceConfig>,
    /// The vSMMU.
    pub vsmmu: VsmmuConfig,
    /// Console.
    pub serial: SerialConfig,
    /// virtio-blk disks.
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// The virtio-console.
    #[serde(default)]
    pub console: ConsoleConfig,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            kernel: None,
            initramfs: None,
            cmdline: String::new(),
            cpus: CpusConfig::default(),
            memory: MemoryConfig::default(),
            devices: Vec::new(),
            test_devices: Vec::new(),
            vsmmu: VsmmuConfig::default(),
            serial: SerialConfig::Tty,
            disks: Vec::new(),
            console: ConsoleConfig::Off,
        }
    }
}

/// A VM configuration that breaks a rule. Each error names the bad value
/// and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
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
    /// Kernel missing when a VM is to run.
    #[error("--kernel is required to boot a VM (only --dump-acpi works without one)")]
    MissingKernel,
    /// hugepages with the emulated backend cannot be honoured on a host without them: kept as
    /// a host check at run time; here only sizes are checked.
    #[error("--memory size={0:#x} is too small; a guest needs at least 64M")]
    MemoryTooSmall(u64),
    /// A `--disk` or `--console` rule.
    #[error(transparent)]
    Virtio(#[from] VirtioConfigError),
}

impl VmConfig {
    /// Check every rule that needs no host access. `needs_kernel` is false
    /// for `--dump-acpi`, which describes the VM without booting it.
    pub fn validate(&self, needs_kernel: bool) -> Result<(), ConfigError> {
        if needs_kernel && self.kernel.is_none() {
            return Err(ConfigError::MissingKernel);
        }
        if self.memory.size < 64 << 20 {
            return Err(ConfigError::MemoryTooSmall(self.memory.size));
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
mod tests {
    use super::*;

    fn device(input: &str, index: usize) -> DeviceConfig {
        DeviceConfig::parse(input, index).unwrap()
    }

    fn cmdqv_emulated() -> VmConfig {
        VmConfig {
            vsmmu: VsmmuConfig::parse("cmdqv,backend=emulated").unwrap(),
            ..VmConfig::default()
        }
    }

    #[test]
    fn device_parses_every_key() {
        let d = device(
            "path=/sys/bus/pci/devices/0009:01:00.0,iommu=on,id=gpu0,pci_segment=1",
            0,
        );
        assert_eq!(d.path, PathBuf::from("/sys/bus/pci/devices/0009:01:00.0"));
        assert!(d.iommu);
        assert_eq!(d.id, "gpu0");
        assert_eq!(d.pci_segment, 1);
        let d = device("path=/dev/vfio/devices/vfio3", 4);
        assert_eq!(d.id, "_dev4");
        assert!(!d.iommu);
        assert_eq!(d.pci_segment, 0);
    }

    #[test]
    fn device_without_path_is_refused() {
        let err = DeviceConfig::parse("iommu=on", 0).unwrap_err();
        assert_eq!(err.to_string(), "--device: 'path=' is required");
    }

    #[test]
    fn vsmmu_parses_kind_backend_and_page0() {
        let v = VsmmuConfig::parse("cmdqv,backend=emulated,page0=trapped").unwrap();
        assert_eq!(v.kind, VsmmuKind::Cmdqv);
        assert_eq!(v.backend, BackendKind::Emulated);
        assert_eq!(v.page0_mode(), Page0Mode::Trapped);
        let v = VsmmuConfig::parse("smmuv3").unwrap();
        assert_eq!(v.backend, BackendKind::Iommufd);
        assert_eq!(v.page0_mode(), Page0Mode::Mapped);
        assert_eq!(VsmmuConfig::parse("off").unwrap().kind, VsmmuKind::Off);
    }

    #[test]
    fn vsmmu_rejects_unknown_kind_backend_and_page0() {
        assert_eq!(
            VsmmuConfig::parse("smmuv2").unwrap_err().to_string(),
            "--vsmmu: vsmmu=smmuv2 is not valid: use off, smmuv3 or cmdqv"
        );
        assert_eq!(
            VsmmuConfig::parse("cmdqv,backend=vfio")
                .unwrap_err()
                .to_string(),
            "--vsmmu: backend=vfio is not valid: use iommufd or emulated"
        );
        assert_eq!(
            VsmmuConfig::parse("cmdqv,page0=direct")
                .unwrap_err()
                .to_string(),
            "--vsmmu: page0=direct is not valid: use mapped or trapped"
        );
    }

    #[test]
    fn memory_parses_size_and_hugepages() {
        let m = MemoryConfig::parse("size=2G,hugepages=on").unwrap();
        assert_eq!(m.size, 2 << 30);
        assert!(m.hugepages);
        assert_eq!(
            MemoryConfig::parse("size=lots").unwrap_err().to_string(),
            "--memory: size=lots is not valid: expected a size such as 512M, 2G or 1073741824"
        );
    }

    #[test]
    fn cpus_parse_boot_and_reject_garbage() {
        assert_eq!(CpusConfig::parse("boot=8").unwrap().boot, 8);
        assert!(CpusConfig::parse("boot=eight").is_err());
        assert!(CpusConfig::parse("max=8").is_err());
    }

    #[test]
    fn serial_parses_tty_off_and_file() {
        assert_eq!(SerialConfig::parse("tty").unwrap(), SerialConfig::Tty);
        assert_eq!(SerialConfig::parse("off").unwrap(), SerialConfig::Off);
        assert_eq!(
            SerialConfig::parse("file=/tmp/console").unwrap(),
            SerialConfig::File("/tmp/console".into())
        );
        assert_eq!(SerialConfig::parse("pty").unwrap(), SerialConfig::Pty);
        assert_eq!(SerialConfig::parse("null").unwrap(), SerialConfig::Null);
        assert_eq!(
            SerialConfig::parse("socket=/tmp/s").unwrap(),
            SerialConfig::Socket("/tmp/s".into())
        );
        assert!(SerialConfig::parse("file=/a,socket=/b").is_err());
        assert!(SerialConfig::parse("fancy").is_err());
    }

    #[test]
    fn duplicate_device_ids_are_refused() {
        let mut config = cmdqv_emulated();
        config.devices = vec![
            device("path=/dev/vfio/devices/vfio0,id=a", 0),
            device("path=/dev/vfio/devices/vfio1,id=a", 1),
        ];
        assert_eq!(
            config.validate(false),
            Err(ConfigError::DuplicateDeviceId("a".into()))
        );
    }

    #[test]
    fn duplicate_device_paths_are_refused() {
        let mut config = cmdqv_emulated();
        config.devices = vec![
            device("path=/dev/vfio/devices/vfio0", 0),
            device("path=/dev/vfio/devices/vfio0", 1),
        ];
        assert_eq!(
            config.validate(false),
            Err(ConfigError::DuplicateDevicePath(
                "/dev/vfio/devices/vfio0".into()
            ))
        );
    }

    #[test]
    fn iommu_on_without_vsmmu_is_refused() {
        let config = VmConfig {
            devices: vec![device("path=/dev/vfio/devices/vfio0,iommu=on,id=nic", 0)],
            ..VmConfig::default()
        };
        let err = config.validate(false).unwrap_err();
        assert_eq!(err, ConfigError::IommuWithoutVsmmu("nic".into()));
        assert!(err.to_string().contains("add --vsmmu"));
    }

    #[test]
    fn iommufd_vsmmu_without_iommu_device_is_refused() {
        let config = VmConfig {
            vsmmu: VsmmuConfig::parse("cmdqv").unwrap(),
            devices: vec![device("path=/dev/vfio/devices/vfio0", 0)],
            ..VmConfig::default()
        };
        assert_eq!(
            config.validate(false),
            Err(ConfigError::IommufdVsmmuWithoutDevice("cmdqv"))
        );
        let mut config = config;
        config.devices[0].iommu = true;
        assert_eq!(config.validate(false), Ok(()));
    }

    #[test]
    fn emulated_vsmmu_needs_no_device() {
        assert_eq!(cmdqv_emulated().validate(false), Ok(()));
    }

    #[test]
    fn page0_is_refused_with_iommufd_and_without_cmdqv() {
        let mut config = VmConfig {
            vsmmu: VsmmuConfig::parse("cmdqv,page0=trapped").unwrap(),
            devices: vec![device("path=/dev/vfio/devices/vfio0,iommu=on", 0)],
            ..VmConfig::default()
        };
        assert_eq!(
            config.validate(false),
            Err(ConfigError::Page0WithIommufd("trapped"))
        );
        config.vsmmu = VsmmuConfig::parse("smmuv3,backend=emulated,page0=mapped").unwrap();
        assert_eq!(config.validate(false), Err(ConfigError::Page0WithoutCmdqv));
    }

    #[test]
    fn device_paths_must_name_a_pci_function_or_cdev() {
        for bad in [
            "/dev/vfio/devices/vfio",
            "/dev/vfio/devices/vfiox",
            "/sys/bus/pci/devices/0009:01:00",
            "/sys/bus/pci/devices/zzzz:01:00.0",
            "/tmp/dev",
        ] {
            let mut config = cmdqv_emulated();
            config.devices = vec![device(&format!("path={bad}"), 0)];
            assert_eq!(
                config.validate(false),
                Err(ConfigError::BadDevicePath(bad.into())),
                "{bad}"
            );
        }
        let mut config = cmdqv_emulated();
        config.devices = vec![device("path=/sys/bus/pci/devices/0009:01:00.0/", 0)];
        assert_eq!(config.validate(false), Ok(()));
    }

    #[test]
    fn reserved_ids_are_refused() {
        let mut config = cmdqv_emulated();
        config.devices = vec![device("path=/dev/vfio/devices/vfio0,id=_dev7", 0)];
        assert_eq!(
            config.validate(false),
            Err(ConfigError::ReservedDeviceId("_dev7".into()))
        );
    }

    #[test]
    fn kernel_is_required_only_to_boot() {
        let config = cmdqv_emulated();
        assert_eq!(config.validate(true), Err(ConfigError::MissingKernel));
        assert_eq!(config.validate(false), Ok(()));
    }

    #[test]
    fn tiny_memory_is_refused() {
        let mut config = cmdqv_emulated();
        config.memory.size = 1 << 20;
        assert_eq!(
            config.validate(false),
            Err(ConfigError::MemoryTooSmall(1 << 20))
        );
    }

    #[test]
    fn test_devices_parse_and_need_an_emulated_vsmmu() {
        let t = TestDeviceConfig::parse("pci_segment=1,id=dma0", 0).unwrap();
        assert!(t.iommu, "behind the vSMMU unless iommu=off");
        assert_eq!((t.id.as_str(), t.pci_segment), ("dma0", 1));
        assert!(TestDeviceConfig::parse("path=/x", 0).is_err());
        let mut config = cmdqv_emulated();
        config.test_devices = vec![TestDeviceConfig::parse("", 0).unwrap()];
        assert_eq!(config.validate(false), Ok(()));
        config.vsmmu = VsmmuConfig::parse("smmuv3").unwrap();
        config.devices = vec![device("path=/dev/vfio/devices/vfio0,iommu=on", 0)];
        assert_eq!(
            config.validate(false),
            Err(ConfigError::TestDeviceNeedsEmulated("_test0".into()))
        );
        config.vsmmu = VsmmuConfig::parse("off").unwrap();
        config.devices.clear();
        assert_eq!(
            config.validate(false),
            Err(ConfigError::IommuWithoutVsmmu("_test0".into()))
        );
    }

    #[test]
    fn test_device_ids_share_the_id_space_with_devices() {
        let mut config = cmdqv_emulated();
        config.devices = vec![device("path=/dev/vfio/devices/vfio0,id=x", 0)];
        config.test_devices = vec![TestDeviceConfig::parse("id=x", 0).unwrap()];
        assert_eq!(
            config.validate(false),
            Err(ConfigError::DuplicateDeviceId("x".into()))
        );
    }

    #[test]
    fn api_socket_takes_path_fd_or_a_bare_path() {
        assert_eq!(
            ApiSocket::parse("path=/tmp/ch.sock").unwrap(),
            ApiSocket::Path("/tmp/ch.sock".into())
        );
        assert_eq!(ApiSocket::parse("fd=3").unwrap(), ApiSocket::Fd(3));
        assert_eq!(
            ApiSocket::parse("/run/ch.sock").unwrap(),
            ApiSocket::Path("/run/ch.sock".into())
        );
        assert!(ApiSocket::parse("fd=three").is_err());
        assert!(ApiSocket::parse("path=/a,fd=3").is_err());
        assert!(ApiSocket::parse("socket=/a").is_err());
    }

    #[test]
    fn config_serialises_with_serde() {
        let mut config = cmdqv_emulated();
        config.devices = vec![device("path=/dev/vfio/devices/vfio0,iommu=on,id=gpu", 0)];
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains("\"kind\":\"cmdqv\""), "{json}");
        let back: VmConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
    }
}
