//! `--disk` (virtio-blk), `--console` (virtio-console) and `--rng` in
//! cloud-hypervisor's syntax and JSON field names, and their rules.
//!
//! Virtio devices have no `iommu=` option: they are never behind the vSMMU
//! (their RIDs go straight to the ITS in the IORT).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::options::{OptionError, Options};
use super::{SerialConfig, VmConfig};

/// `--disk` syntax.
pub const DISK_SYNTAX: &str = "virtio-blk disk: \"path=<raw image or block device>,\
     readonly=on|off,direct=on|off,num_queues=<n>,queue_size=<size>,id=<device_id>,\
     serial=<serial>,pci_segment=<segment_id>,image_type=raw|qcow2,_disable_io_uring=on|off\" \
     (without image_type, a file starting with the qcow2 magic is qcow2 and anything else raw; \
     give image_type=raw for an image a guest may have written; the image is locked: a second VM \
     using it is refused; a raw image's I/O goes through io_uring where the host has it, unless \
     _disable_io_uring=on; defaults num_queues=1, queue_size=128)";
/// `--console` syntax.
pub const CONSOLE_SYNTAX: &str = "virtio-console (/dev/hvc0 in the guest): \
     \"off|null|pty|tty|file=<path>\" (default off: the PL011 of --serial is the console; tty \
     reads stdin, so it needs --serial other than tty)";

/// `--rng` syntax.
pub const RNG_SYNTAX: &str = "virtio-rng entropy device: \"src=<entropy source path>\" \
     (default src=/dev/urandom; without --rng the guest has none)";

/// The entropy source cloud-hypervisor uses by default.
pub const DEFAULT_RNG_SOURCE: &str = "/dev/urandom";

fn default_rng_source() -> PathBuf {
    PathBuf::from(DEFAULT_RNG_SOURCE)
}

/// `--rng` (the API's `rng`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngConfig {
    /// The file the device reads entropy from.
    #[serde(default = "default_rng_source")]
    pub src: PathBuf,
}

impl RngConfig {
    /// Parse `src=<path>`.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        let opts = Options::parse("rng", input, &["src"], false)?;
        Ok(RngConfig {
            src: opts
                .get("src")
                .map_or_else(default_rng_source, PathBuf::from),
        })
    }
}

/// Default queues per disk (cloud-hypervisor's).
pub const DEFAULT_NUM_QUEUES: u16 = 1;
/// Default queue size (cloud-hypervisor's).
pub const DEFAULT_QUEUE_SIZE: u16 = 128;
/// Largest split virtqueue (virtio 1.2 section 2.7).
pub const MAX_QUEUE_SIZE: u16 = 32768;
/// Most queues per disk (one worker thread each).
pub const MAX_NUM_QUEUES: u16 = 64;

fn default_num_queues() -> u16 {
    DEFAULT_NUM_QUEUES
}

fn default_queue_size() -> u16 {
    DEFAULT_QUEUE_SIZE
}

/// Disk image formats (cloud-hypervisor's names in the API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageType {
    /// A raw image or block device.
    Raw,
    /// QEMU's qcow2 (versions 2 and 3).
    Qcow2,
}

/// `--disk` (the API's `disks[]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskConfig {
    /// Image file or block device.
    pub path: PathBuf,
    /// Read-only (VIRTIO_BLK_F_RO).
    #[serde(default)]
    pub readonly: bool,
    /// Open with O_DIRECT.
    #[serde(default)]
    pub direct: bool,
    /// Queues (one worker thread each).
    #[serde(default = "default_num_queues")]
    pub num_queues: u16,
    /// Size of each queue.
    #[serde(default = "default_queue_size")]
    pub queue_size: u16,
    /// Identifier; `_disk<N>` when not given.
    #[serde(default)]
    pub id: String,
    /// What the guest's GET_ID reads (up to 20 bytes); the id when absent.
    #[serde(default)]
    pub serial: Option<String>,
    /// PCI segment.
    #[serde(default)]
    pub pci_segment: u16,
    /// Image format; `None` (null): detected from the qcow2 magic.
    #[serde(default)]
    pub image_type: Option<ImageType>,
    /// Serve the disk with synchronous I/O even where the host has
    /// io_uring (cloud-hypervisor's testing-only `_disable_io_uring`).
    #[serde(default)]
    pub disable_io_uring: bool,
}

impl DiskConfig {
    /// Parse `--disk`; `index` names the disk when no `id=` is given.
    pub fn parse(input: &str, index: usize) -> Result<Self, OptionError> {
        let opts = Options::parse(
            "disk",
            input,
            &[
                "path",
                "readonly",
                "direct",
                "num_queues",
                "queue_size",
                "id",
                "serial",
                "pci_segment",
                "image_type",
                "_disable_io_uring",
            ],
            false,
        )?;
        let image_type = match opts.get("image_type") {
            None => None,
            Some("raw") => Some(ImageType::Raw),
            Some("qcow2") => Some(ImageType::Qcow2),
            Some(other) => {
                return Err(opts.invalid(
                    "image_type",
                    other,
                    "it must be raw or qcow2 (qemu-img convert -O raw makes a raw copy)",
                ));
            }
        };
        Ok(DiskConfig {
            path: PathBuf::from(opts.require("path")?),
            readonly: opts.toggle("readonly", false)?,
            direct: opts.toggle("direct", false)?,
            num_queues: opts.number("num_queues")?.unwrap_or(DEFAULT_NUM_QUEUES),
            queue_size: opts.number("queue_size")?.unwrap_or(DEFAULT_QUEUE_SIZE),
            id: opts
                .get("id")
                .map_or_else(|| format!("_disk{index}"), str::to_string),
            serial: opts.get("serial").map(str::to_string),
            pci_segment: opts.number("pci_segment")?.unwrap_or(0),
            image_type,
            disable_io_uring: opts.toggle("_disable_io_uring", false)?,
        })
    }
}

/// `--console`: where the virtio-console's port goes (in the API's
/// VmConfig: `console`, the JSON shape of [`super::SerialConfig`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "super::serial::ConsoleJson",
    into = "super::serial::ConsoleJson"
)]
pub enum ConsoleConfig {
    /// No virtio-console device.
    #[default]
    Off,
    /// The device, output discarded.
    Null,
    /// A pseudo-terminal (its path is logged at info level).
    Pty,
    /// stdout, and stdin as input.
    Tty,
    /// Output appended to a file.
    File(PathBuf),
}

impl ConsoleConfig {
    /// Parse `off|null|pty|tty|file=<path>`.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        match input {
            "off" => Ok(ConsoleConfig::Off),
            "null" => Ok(ConsoleConfig::Null),
            "pty" => Ok(ConsoleConfig::Pty),
            "tty" => Ok(ConsoleConfig::Tty),
            _ => {
                let opts = Options::parse("console", input, &["file"], false)?;
                Ok(ConsoleConfig::File(PathBuf::from(opts.require("file")?)))
            }
        }
    }
}

/// A virtio device option that breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VirtioConfigError {
    /// queue_size not a power of two in range.
    #[error(
        "--disk id={id}: queue_size={size} must be a power of two between 2 and {MAX_QUEUE_SIZE}"
    )]
    QueueSize {
        /// The disk.
        id: String,
        /// The size given.
        size: u16,
    },
    /// num_queues out of range.
    #[error("--disk id={id}: num_queues={count} must be between 1 and {MAX_NUM_QUEUES}")]
    NumQueues {
        /// The disk.
        id: String,
        /// The count given.
        count: u16,
    },
    /// A disk id that clashes.
    #[error("--disk id={0} is already used by another device; give each device its own id=")]
    DuplicateId(String),
    /// A reserved id.
    #[error("--disk id={0}: ids starting with '_' are reserved for generated names")]
    ReservedId(String),
    /// Serial longer than GET_ID's 20 bytes.
    #[error("--disk id={id}: serial={serial} is longer than 20 bytes")]
    SerialTooLong {
        /// The disk.
        id: String,
        /// The serial given.
        serial: String,
    },
    /// Both consoles on stdin.
    #[error(
        "--console tty and --serial tty would both read stdin; give one of them another mode \
         (e.g. --serial null, or --console file=<path>)"
    )]
    BothOnTty,
}

/// The disks' and console's rules; `ids` holds the other devices' ids.
pub fn validate<'a>(
    config: &'a VmConfig,
    ids: &mut BTreeSet<&'a str>,
) -> Result<(), VirtioConfigError> {
    for (index, disk) in config.disks.iter().enumerate() {
        if disk.id.starts_with('_') && disk.id != format!("_disk{index}") {
            return Err(VirtioConfigError::ReservedId(disk.id.clone()));
        }
        if !ids.insert(disk.id.as_str()) {
            return Err(VirtioConfigError::DuplicateId(disk.id.clone()));
        }
        let size = disk.queue_size;
        if !(2..=MAX_QUEUE_SIZE).contains(&size) || !size.is_power_of_two() {
            return Err(VirtioConfigError::QueueSize {
                id: disk.id.clone(),
                size,
            });
        }
        if disk.num_queues == 0 || disk.num_queues > MAX_NUM_QUEUES {
            return Err(VirtioConfigError::NumQueues {
                id: disk.id.clone(),
                count: disk.num_queues,
            });
        }
        if let Some(serial) = disk.serial.as_ref().filter(|s| s.len() > 20) {
            return Err(VirtioConfigError::SerialTooLong {
                id: disk.id.clone(),
                serial: serial.clone(),
            });
        }
    }
    if config.console == ConsoleConfig::Tty && config.serial == SerialConfig::Tty {
        return Err(VirtioConfigError::BothOnTty);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(disks: &[&str]) -> Result<(), VirtioConfigError> {
        let config = VmConfig {
            disks: disks
                .iter()
                .enumerate()
                .map(|(i, d)| DiskConfig::parse(d, i).unwrap())
                .collect(),
            ..VmConfig::default()
        };
        validate(&config, &mut BTreeSet::new())
    }

    #[test]
    fn disk_parses_every_key_with_cloud_hypervisors_defaults() {
        let d = DiskConfig::parse("path=/img", 3).unwrap();
        assert_eq!(
            (
                d.readonly,
                d.direct,
                d.num_queues,
                d.queue_size,
                d.id.as_str()
            ),
            (false, false, 1, 128, "_disk3")
        );
        let d = DiskConfig::parse(
            "path=/dev/vdb,readonly=on,direct=on,num_queues=4,queue_size=256,id=data,serial=S1,\
             pci_segment=1,image_type=raw",
            0,
        )
        .unwrap();
        assert_eq!(d.path, PathBuf::from("/dev/vdb"));
        assert!(d.readonly && d.direct);
        assert_eq!((d.num_queues, d.queue_size, d.pci_segment), (4, 256, 1));
        assert_eq!((d.id.as_str(), d.serial.as_deref()), ("data", Some("S1")));
        assert!(!d.disable_io_uring);
        let d = DiskConfig::parse("path=/img,_disable_io_uring=on", 0).unwrap();
        assert!(d.disable_io_uring);
        assert!(DiskConfig::parse("path=/img,_disable_io_uring=yes", 0).is_err());
    }

    #[test]
    fn image_type_is_raw_qcow2_or_detected_and_others_are_refused_in_one_sentence() {
        let parse = |s: &str| DiskConfig::parse(s, 0).unwrap().image_type;
        assert_eq!(parse("path=/img,image_type=qcow2"), Some(ImageType::Qcow2));
        assert_eq!(parse("path=/img,image_type=raw"), Some(ImageType::Raw));
        assert_eq!(parse("path=/img"), None);
        let err = DiskConfig::parse("path=/img,image_type=vhdx", 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--disk: image_type=vhdx is not valid: it must be raw or qcow2 \
             (qemu-img convert -O raw makes a raw copy)"
        );
        assert!(
            DiskConfig::parse("readonly=on", 0).is_err(),
            "path is required"
        );
    }

    #[test]
    fn queue_size_must_be_a_power_of_two_up_to_32768_and_num_queues_at_least_1() {
        assert!(check(&["path=/a,queue_size=32768,num_queues=64"]).is_ok());
        for bad in ["100", "0", "1"] {
            let err = check(&[&format!("path=/a,id=d,queue_size={bad}")]).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("--disk id=d: queue_size={bad} must be a power of two between 2 and 32768")
            );
        }
        assert!(
            DiskConfig::parse("path=/a,queue_size=65536", 0).is_err(),
            "over u16"
        );
        let err = check(&["path=/a,id=d,num_queues=0"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--disk id=d: num_queues=0 must be between 1 and 64"
        );
        assert!(check(&["path=/a,num_queues=65"]).is_err());
    }

    #[test]
    fn ids_are_unique_and_serials_fit_get_id() {
        assert_eq!(
            check(&["path=/a,id=x", "path=/b,id=x"]),
            Err(VirtioConfigError::DuplicateId("x".into()))
        );
        assert!(check(&["path=/a,id=_disk7"]).is_err());
        assert!(check(&["path=/a,serial=123456789012345678901"]).is_err());
    }

    #[test]
    fn console_modes_parse_and_tty_conflicts_with_a_tty_serial() {
        assert_eq!(ConsoleConfig::parse("off").unwrap(), ConsoleConfig::Off);
        assert_eq!(
            ConsoleConfig::parse("file=/tmp/c").unwrap(),
            ConsoleConfig::File("/tmp/c".into())
        );
        assert!(ConsoleConfig::parse("socket=/tmp/s").is_err());
        let mut config = VmConfig {
            console: ConsoleConfig::Tty,
            ..VmConfig::default()
        };
        assert_eq!(
            validate(&config, &mut BTreeSet::new()),
            Err(VirtioConfigError::BothOnTty)
        );
        config.serial = SerialConfig::Null;
        assert!(validate(&config, &mut BTreeSet::new()).is_ok());
    }
}
