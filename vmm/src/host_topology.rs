//! The host's shape, read once before a VM is laid out: its base page size
//! (the granule of every mmap, memory slot and IOAS map the VMM makes) and
//! the host SMMU behind each passthrough function that asks for a vSMMU.
//! VM assembly ([`crate::description`]) consumes the plain
//! [`HostTopology`]; nothing else reads sysfs for these facts.
//!
//! The SMMU of a PCI function is the target of its sysfs `iommu` link
//! (`/sys/bus/pci/devices/<bdf>/iommu -> ../../.../iommu/smmu3.0x...`),
//! named by the link target's last component, which Linux's arm-smmu-v3
//! makes unique per SMMU instance (`smmu3.<MMIO base>`). A VFIO cdev path
//! (`/dev/vfio/devices/vfioN`) is followed to its function through
//! `/sys/class/vfio-dev/vfioN/device`. The sysfs root is a parameter so
//! tests build fake trees in a temporary directory.
//!
//! With `backend=emulated` nothing is read from sysfs: a device's
//! `host_smmu=` option says which host SMMU it pretends to sit behind
//! (absent: one unnamed SMMU shared by every such device).
//!
//! Not read here (yet): NUMA nodes, KVM capabilities, whether an SMMU has
//! a CMD-QV (the iommufd probe of each vIOMMU answers that).

use std::path::{Path, PathBuf};

use crate::config::{BackendKind, VmConfig, VsmmuKind};

/// Where sysfs is mounted on a real host.
pub const SYSFS: &str = "/sys";

/// Why the host's shape could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// sysconf gave no usable page size.
    #[error("the host page size (sysconf _SC_PAGESIZE) is {0}, not a power of two")]
    PageSize(libc::c_long),
    /// A function behind a vSMMU that no host IOMMU translates.
    #[error(
        "--device {id} ({path}) has iommu=on but the host puts it behind no IOMMU ({link} does \
         not exist): a vSMMU needs a host SMMU under the device, so set iommu=off or pass a \
         function the host SMMU translates"
    )]
    NoHostIommu {
        /// Device id.
        id: String,
        /// Its `path=`.
        path: PathBuf,
        /// The sysfs link looked for.
        link: PathBuf,
    },
    /// A device path with no sysfs node (no such function, or a cdev that
    /// does not exist).
    #[error(
        "--device {id}: {path} has no node in sysfs, so its host SMMU cannot be found; give an \
         existing /sys/bus/pci/devices/<DDDD:BB:DD.F> or /dev/vfio/devices/vfio<N>"
    )]
    NotInSysfs {
        /// Device id.
        id: String,
        /// Its `path=`.
        path: PathBuf,
    },
}

/// The host facts VM assembly needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostTopology {
    /// The host's base page size (4 KiB, 16 KiB or 64 KiB on arm64).
    pub page_size: u64,
    /// The host SMMU of each `--device`, by config index: `None` for an
    /// `iommu=off` function (not looked up) or, with the emulated backend,
    /// one without `host_smmu=`.
    pub device_smmus: Vec<Option<String>>,
    /// The same for each `--test-device` (always from `host_smmu=`).
    pub test_device_smmus: Vec<Option<String>>,
    /// Ids of the `--device` functions bound to a driver whose BARs KVM
    /// must map cacheable ([`CACHEABLE_BAR_DRIVERS`]).
    pub cacheable_bar_devices: Vec<String>,
    /// Whether each `--device` is a display controller (PCI base class
    /// 0x03: a GPU), by config index; such a function is placed at devfn 0.
    pub gpu_devices: Vec<bool>,
    /// Bytes of 64-bit memory BARs of each `--device`, by config index (a
    /// Grace GPU's memory BAR alone is 128 GiB or more): what its
    /// segment's 64-bit window must hold.
    pub device_bar64_bytes: Vec<u64>,
}

/// `IORESOURCE_MEM` and `IORESOURCE_MEM_64` in a sysfs `resource` line.
const IORESOURCE_MEM: u64 = 0x0000_0200;
const IORESOURCE_MEM_64: u64 = 0x0010_0000;
/// Lines 0-5 of `resource` are the BARs (then the ROM, bridge windows).
const BAR_LINES: usize = 6;

/// PCI base class of display controllers (VGA 0x0300, 3D 0x0302).
const CLASS_DISPLAY: u32 = 0x03;

/// Host drivers that hand out device memory the guest must map cacheable:
/// nvgrace-gpu-vfio-pci exposes a Grace GPU's memory as a cacheable BAR,
/// which KVM maps only with KVM_CAP_ARM_CACHEABLE_PFNMAP_SUPPORTED.
pub const CACHEABLE_BAR_DRIVERS: &[&str] = &["nvgrace-gpu-vfio-pci"];

impl HostTopology {
    /// Read this host: the page size from sysconf, the SMMUs from `/sys`.
    pub fn read(config: &VmConfig) -> Result<Self, TopologyError> {
        Self::probe(config, Path::new(SYSFS), host_page_size()?)
    }

    /// The topology of `config` on a host whose sysfs is at `sysfs` and
    /// whose page size is `page_size`.
    pub fn probe(config: &VmConfig, sysfs: &Path, page_size: u64) -> Result<Self, TopologyError> {
        let from_sysfs =
            config.vsmmu.kind != VsmmuKind::Off && config.vsmmu.backend == BackendKind::Iommufd;
        let device_smmus = config
            .devices
            .iter()
            .map(|d| match (d.iommu, from_sysfs) {
                (false, _) => Ok(None),
                (true, false) => Ok(d.host_smmu.clone()),
                (true, true) => function_smmu(sysfs, &d.id, &d.path).map(Some),
            })
            .collect::<Result<_, _>>()?;
        let test_device_smmus = config
            .test_devices
            .iter()
            .map(|d| d.iommu.then(|| d.host_smmu.clone()).flatten())
            .collect();
        let cacheable_bar_devices = config
            .devices
            .iter()
            .filter(|d| {
                function_driver(sysfs, &d.path)
                    .is_some_and(|driver| CACHEABLE_BAR_DRIVERS.contains(&driver.as_str()))
            })
            .map(|d| d.id.clone())
            .collect();
        let gpu_devices = config
            .devices
            .iter()
            .map(|d| function_class(sysfs, &d.path).is_some_and(|c| c >> 16 == CLASS_DISPLAY))
            .collect();
        let device_bar64_bytes = config
            .devices
            .iter()
            .map(|d| function_bar64_bytes(sysfs, &d.path))
            .collect();
        Ok(HostTopology {
            page_size,
            device_smmus,
            test_device_smmus,
            cacheable_bar_devices,
            gpu_devices,
            device_bar64_bytes,
        })
    }

    /// A host with `page_size` pages and no SMMU lookups: what the emulated
    /// backend's `host_smmu=` options say, as [`Self::probe`] would read them.
    pub fn emulated(config: &VmConfig, page_size: u64) -> Self {
        let smmus = |iommu: bool, name: &Option<String>| iommu.then(|| name.clone()).flatten();
        HostTopology {
            page_size,
            device_smmus: config
                .devices
                .iter()
                .map(|d| smmus(d.iommu, &d.host_smmu))
                .collect(),
            test_device_smmus: config
                .test_devices
                .iter()
                .map(|d| smmus(d.iommu, &d.host_smmu))
                .collect(),
            cacheable_bar_devices: Vec::new(),
            gpu_devices: vec![false; config.devices.len()],
            device_bar64_bytes: vec![0; config.devices.len()],
        }
    }
}

/// Bytes of the 64-bit memory BARs of the function at `path`, from its
/// sysfs `resource` file ("start end flags" per line); 0 when unreadable.
fn function_bar64_bytes(sysfs: &Path, path: &Path) -> u64 {
    let Some(text) = function_dir(sysfs, path)
        .and_then(|dir| std::fs::read_to_string(dir.join("resource")).ok())
    else {
        return 0;
    };
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    text.lines()
        .take(BAR_LINES)
        .filter_map(|line| {
            let mut f = line.split_whitespace().map(hex);
            let (start, end, flags) = (f.next()??, f.next()??, f.next()??);
            let is_mem64 = flags & IORESOURCE_MEM != 0 && flags & IORESOURCE_MEM_64 != 0;
            (is_mem64 && end > start).then(|| (end - start + 1).next_power_of_two())
        })
        .fold(0u64, u64::saturating_add)
}

/// The PCI class code (24 bits) of the function at `path`, from sysfs.
fn function_class(sysfs: &Path, path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(function_dir(sysfs, path)?.join("class")).ok()?;
    u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

/// The name of the driver the function at `path` is bound to, if any.
fn function_driver(sysfs: &Path, path: &Path) -> Option<String> {
    let link = std::fs::read_link(function_dir(sysfs, path)?.join("driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// The host's base page size, from sysconf; once per VM definition.
pub fn host_page_size() -> Result<u64, TopologyError> {
    // SAFETY: sysconf only reads a system constant; it takes no pointer.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size)
        .ok()
        .filter(|size| size.is_power_of_two())
        .ok_or(TopologyError::PageSize(size))
}

/// The sysfs directory of the function at `path` (a sysfs PCI function or
/// a VFIO cdev), under `sysfs`.
fn function_dir(sysfs: &Path, path: &Path) -> Option<PathBuf> {
    if let Ok(rest) = path.strip_prefix("/sys") {
        return Some(sysfs.join(rest));
    }
    let cdev = path.strip_prefix("/dev/vfio/devices").ok()?;
    Some(sysfs.join("class/vfio-dev").join(cdev).join("device"))
}

/// The name of the host SMMU translating the function at `path`.
fn function_smmu(sysfs: &Path, id: &str, path: &Path) -> Result<String, TopologyError> {
    let dir = function_dir(sysfs, path).ok_or_else(|| TopologyError::NotInSysfs {
        id: id.to_string(),
        path: path.to_path_buf(),
    })?;
    if !dir.exists() {
        return Err(TopologyError::NotInSysfs {
            id: id.to_string(),
            path: path.to_path_buf(),
        });
    }
    let link = dir.join("iommu");
    let no_iommu = || TopologyError::NoHostIommu {
        id: id.to_string(),
        path: path.to_path_buf(),
        link: link.clone(),
    };
    let target = std::fs::read_link(&link).map_err(|_| no_iommu())?;
    target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(no_iommu)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{DeviceConfig, TestDeviceConfig, VsmmuConfig};

    /// A fake sysfs in a temporary directory, removed on drop.
    pub(crate) struct FakeSysfs {
        pub(crate) root: PathBuf,
    }

    impl FakeSysfs {
        pub(crate) fn new(tag: &str) -> Self {
            let root = std::env::temp_dir().join(format!(
                "ch-fake-sysfs-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            FakeSysfs { root }
        }

        /// PCI function `bdf` behind the SMMU named `smmu` (None: no
        /// IOMMU), with the link shape Linux gives it.
        pub(crate) fn function(&self, bdf: &str, smmu: Option<&str>) -> &Self {
            let dir = self.root.join("bus/pci/devices").join(bdf);
            std::fs::create_dir_all(&dir).unwrap();
            if let Some(smmu) = smmu {
                let target =
                    format!("../../../../devices/platform/arm-smmu-v3.0.auto/iommu/{smmu}");
                std::os::unix::fs::symlink(target, dir.join("iommu")).unwrap();
            }
            self
        }

        /// Function `bdf`'s class code.
        pub(crate) fn class(&self, bdf: &str, class: u32) -> &Self {
            let dir = self.root.join("bus/pci/devices").join(bdf);
            std::fs::write(dir.join("class"), format!("{class:#08x}\n")).unwrap();
            self
        }

        /// Function `bdf`'s sysfs `resource` lines (start, size, flags).
        pub(crate) fn resources(&self, bdf: &str, bars: &[(u64, u64, u64)]) -> &Self {
            let dir = self.root.join("bus/pci/devices").join(bdf);
            let text: String = bars
                .iter()
                .map(|(start, size, flags)| {
                    let end = if *size == 0 { 0 } else { start + size - 1 };
                    format!("{start:#018x} {end:#018x} {flags:#018x}\n")
                })
                .collect();
            std::fs::write(dir.join("resource"), text).unwrap();
            self
        }

        /// Function `bdf` bound to `driver`.
        pub(crate) fn driver(&self, bdf: &str, driver: &str) -> &Self {
            let dir = self.root.join("bus/pci/devices").join(bdf);
            let target = format!("../../../../bus/pci/drivers/{driver}");
            std::os::unix::fs::symlink(target, dir.join("driver")).unwrap();
            self
        }

        /// VFIO cdev `vfioN` of function `bdf`.
        pub(crate) fn cdev(&self, n: u32, bdf: &str) -> &Self {
            let dir = self.root.join("class/vfio-dev").join(format!("vfio{n}"));
            std::fs::create_dir_all(&dir).unwrap();
            let function = self.root.join("bus/pci/devices").join(bdf);
            std::os::unix::fs::symlink(function, dir.join("device")).unwrap();
            self
        }
    }

    impl Drop for FakeSysfs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    pub(crate) fn iommufd_config(devices: &[&str]) -> VmConfig {
        VmConfig {
            vsmmu: VsmmuConfig::parse("cmdqv").unwrap(),
            devices: devices
                .iter()
                .enumerate()
                .map(|(i, d)| DeviceConfig::parse(d, i).unwrap())
                .collect(),
            ..VmConfig::default()
        }
    }

    #[test]
    fn functions_on_nvgrace_gpu_vfio_pci_are_the_cacheable_ones() {
        let sysfs = FakeSysfs::new("drivers");
        sysfs
            .function("0009:01:00.0", Some("smmu3.0x12000000"))
            .driver("0009:01:00.0", "nvgrace-gpu-vfio-pci")
            .function("0009:02:00.0", Some("smmu3.0x12000000"))
            .driver("0009:02:00.0", "vfio-pci")
            .function("0009:03:00.0", Some("smmu3.0x12000000"))
            .cdev(4, "0009:03:00.0")
            .driver("0009:03:00.0", "nvgrace-gpu-vfio-pci");
        let config = iommufd_config(&[
            "path=/sys/bus/pci/devices/0009:01:00.0,iommu=on,id=gpu0",
            "path=/sys/bus/pci/devices/0009:02:00.0,iommu=on,id=nic0",
            "path=/dev/vfio/devices/vfio4,iommu=on,id=gpu1",
        ]);
        let host = HostTopology::probe(&config, &sysfs.root, 4 << 10).unwrap();
        assert_eq!(host.cacheable_bar_devices, ["gpu0", "gpu1"]);
    }

    #[test]
    fn sixty_four_bit_bars_are_summed_from_sysfs_resource() {
        let sysfs = FakeSysfs::new("bars");
        let mem64 = IORESOURCE_MEM | IORESOURCE_MEM_64 | 0x2000;
        sysfs.function("0009:01:00.0", Some("smmu3.a")).resources(
            "0009:01:00.0",
            &[
                (0x6_0000_0000, 16 << 20, IORESOURCE_MEM), // BAR0: 32-bit
                (0x0, 0, 0),                               // (BAR1: upper half)
                (0x400_0000_0000, 1 << 30, mem64),         // BAR2: 1 GiB
                (0x0, 0, 0),
                (0x800_0000_0000, 128 << 30, mem64), // BAR4: 128 GiB
                (0x0, 0, 0),
                (0x0, 0, 0),                         // ROM
                (0x900_0000_0000, 512 << 30, mem64), // not a BAR line
            ],
        );
        let config = iommufd_config(&["path=/sys/bus/pci/devices/0009:01:00.0,iommu=on,id=gpu0"]);
        let host = HostTopology::probe(&config, &sysfs.root, 4 << 10).unwrap();
        assert_eq!(host.device_bar64_bytes, [(128 << 30) + (1 << 30)]);
    }

    #[test]
    fn display_class_functions_are_the_gpus() {
        let sysfs = FakeSysfs::new("classes");
        sysfs
            .function("0009:01:00.0", Some("smmu3.a"))
            .class("0009:01:00.0", 0x03_02_00)
            .function("0009:02:00.0", Some("smmu3.a"))
            .class("0009:02:00.0", 0x02_00_00)
            .function("0009:03:00.0", Some("smmu3.a"));
        let config = iommufd_config(&[
            "path=/sys/bus/pci/devices/0009:01:00.0,iommu=on,id=gpu0",
            "path=/sys/bus/pci/devices/0009:02:00.0,iommu=on,id=nic0",
            "path=/sys/bus/pci/devices/0009:03:00.0,iommu=on,id=x",
        ]);
        let host = HostTopology::probe(&config, &sysfs.root, 4 << 10).unwrap();
        assert_eq!(host.gpu_devices, [true, false, false]);
    }

    #[test]
    fn functions_name_the_smmu_their_iommu_link_points_at() {
        let sysfs = FakeSysfs::new("names");
        sysfs
            .function("0009:01:00.0", Some("smmu3.0x0000000012000000"))
            .function("0019:01:00.0", Some("smmu3.0x0000000022000000"))
            .cdev(3, "0019:01:00.0");
        let config = iommufd_config(&[
            "path=/sys/bus/pci/devices/0009:01:00.0,iommu=on",
            "path=/dev/vfio/devices/vfio3,iommu=on",
            "path=/sys/bus/pci/devices/0000:00:00.0",
        ]);
        let topology = HostTopology::probe(&config, &sysfs.root, 64 << 10).unwrap();
        assert_eq!(topology.page_size, 64 << 10);
        assert_eq!(
            topology.device_smmus,
            [
                Some("smmu3.0x0000000012000000".to_string()),
                Some("smmu3.0x0000000022000000".to_string()),
                None,
            ],
            "an iommu=off function is not looked up (it has no sysfs node here)"
        );
    }

    #[test]
    fn a_function_with_no_iommu_is_refused_in_one_sentence() {
        let sysfs = FakeSysfs::new("none");
        sysfs.function("0000:03:00.0", None);
        let config = iommufd_config(&["path=/sys/bus/pci/devices/0000:03:00.0,iommu=on,id=nic"]);
        let err = HostTopology::probe(&config, &sysfs.root, 4 << 10).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, TopologyError::NoHostIommu { ref id, .. } if id == "nic"));
        assert!(
            text.contains("--device nic") && text.contains("set iommu=off"),
            "{text}"
        );
        assert_eq!(text.matches(". ").count(), 0, "one sentence: {text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn a_function_missing_from_sysfs_is_named_as_missing_not_as_untranslated() {
        let sysfs = FakeSysfs::new("missing");
        let config = iommufd_config(&["path=/dev/vfio/devices/vfio9,iommu=on,id=gpu"]);
        let err = HostTopology::probe(&config, &sysfs.root, 4 << 10).unwrap_err();
        assert!(matches!(err, TopologyError::NotInSysfs { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("/dev/vfio/devices/vfio9 has no node"),
            "{err}"
        );
    }

    #[test]
    fn the_emulated_backend_takes_host_smmu_options_and_reads_no_sysfs() {
        let mut config = iommufd_config(&["path=/sys/bus/pci/devices/0000:03:00.0,iommu=on"]);
        config.vsmmu.backend = BackendKind::Emulated;
        config.devices[0].host_smmu = Some("a".into());
        config.test_devices = vec![
            TestDeviceConfig::parse("host_smmu=b", 0).unwrap(),
            TestDeviceConfig::parse("iommu=off,host_smmu=c", 1).unwrap(),
            TestDeviceConfig::parse("", 2).unwrap(),
        ];
        let nowhere = Path::new("/nonexistent-sysfs");
        let topology = HostTopology::probe(&config, nowhere, 4 << 10).unwrap();
        assert_eq!(topology.device_smmus, [Some("a".to_string())]);
        assert_eq!(
            topology.test_device_smmus,
            [Some("b".to_string()), None, None]
        );
        assert_eq!(topology, HostTopology::emulated(&config, 4 << 10));
    }

    #[test]
    fn the_host_page_size_is_what_the_kernel_maps_with() {
        let page = host_page_size().unwrap();
        assert!(page.is_power_of_two() && page >= 4 << 10, "{page:#x}");
    }
}
