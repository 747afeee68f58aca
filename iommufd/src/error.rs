//! Errors of the iommufd backend: a failed ioctl names the call, its
//! arguments and the kernel's errno; host-capability errors (see
//! [`HostError`]) are one sentence that names what to change.

use devices::backend::{BackendError, Errno};

use crate::ioctl::Ioctl;

/// A failed iommufd operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// /dev/iommu could not be opened.
    #[error("cannot open /dev/iommu: {0}")]
    Open(std::io::Error),
    /// An ioctl failed.
    #[error("{} ({what}) failed: {}", call.name(), errno_name(*errno))]
    Ioctl {
        /// Which ioctl.
        call: Ioctl,
        /// Its arguments, for the log.
        what: String,
        /// The kernel's errno.
        errno: i32,
    },
    /// mmap of a vIOMMU region on the iommufd fd failed.
    #[error("mmap of the vIOMMU region (offset {offset:#x}, length {len:#x}) failed: {}", errno_name(*errno))]
    Mmap {
        /// The kernel's mmap offset.
        offset: u64,
        /// The region length.
        len: u64,
        /// The errno.
        errno: i32,
    },
    /// A device attach/detach (VFIO cdev or the selftest mock) failed.
    #[error("{device}: {op} failed: {}", errno_name(*errno))]
    Device {
        /// The device (sysfs path or mock name).
        device: String,
        /// What was attempted.
        op: String,
        /// The errno.
        errno: i32,
    },
    /// A vEVENTQ read failed.
    #[error("reading the vEVENTQ failed: {0}")]
    EventRead(std::io::Error),
}

impl Error {
    pub(crate) fn ioctl(call: Ioctl, what: String, errno: i32) -> Self {
        Error::Ioctl { call, what, errno }
    }

    /// The errno, when the kernel gave one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Open(e) | Error::EventRead(e) => e.raw_os_error(),
            Error::Ioctl { errno, .. }
            | Error::Mmap { errno, .. }
            | Error::Device { errno, .. } => Some(*errno),
        }
    }
}

impl From<Error> for BackendError {
    fn from(e: Error) -> Self {
        let errno = e.errno().map_or(Errno::Io, errno_class);
        BackendError::new(errno, e.to_string())
    }
}

/// The errno class the models understand.
pub fn errno_class(errno: i32) -> Errno {
    match errno {
        libc::EINVAL => Errno::Inval,
        libc::EEXIST => Errno::Exist,
        libc::EIO => Errno::Io,
        libc::EBUSY => Errno::Busy,
        libc::EFAULT => Errno::Fault,
        libc::EOPNOTSUPP => Errno::NotSupported,
        libc::EOVERFLOW => Errno::Overflow,
        libc::ENOENT => Errno::NoEnt,
        libc::ENOSPC => Errno::NoSpc,
        libc::ETIMEDOUT => Errno::TimedOut,
        other => Errno::Other(other),
    }
}

/// `EBUSY (Device or resource busy)`: the symbol, then the C library's text.
pub fn errno_name(errno: i32) -> String {
    let symbol = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ENOTTY => "ENOTTY",
        libc::E2BIG => "E2BIG",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EADDRINUSE => "EADDRINUSE",
        _ => {
            return format!(
                "errno {errno} ({})",
                std::io::Error::from_raw_os_error(errno)
            );
        }
    };
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    format!("{symbol} ({text})")
}

/// Why a host cannot back a vSMMU: each one sentence that names the fix.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// No /dev/iommu.
    #[error(
        "cannot open /dev/iommu ({0}): passthrough (--device) and --vsmmu backend=iommufd need a \
         Linux host with CONFIG_IOMMUFD (>= 6.17 for a vSMMU) and an SMMUv3; on a machine \
         without one use --vsmmu ...,backend=emulated with --test-device"
    )]
    NoIommufd(std::io::Error),
    /// The kernel lacks an ioctl the backend needs.
    #[error(
        "this kernel has no {0} (ENOTTY): the iommufd backend needs Linux >= 6.17 \
         (vIOMMU, vDEVICE, vEVENTQ and HW queue support)"
    )]
    KernelTooOld(&'static str),
    /// The SMMU behind a device cannot nest.
    #[error(
        "the host SMMU behind {device} cannot do nested translation ({why}): an accelerated \
         vSMMU needs an SMMUv3 with stage 1 + stage 2 (FEAT_NESTING) and a device that is \
         CANWBS or an SMMU with S2FWB; use backend=emulated on this host"
    )]
    NoNesting {
        /// The device.
        device: String,
        /// What the kernel or the IDRs said.
        why: String,
    },
    /// `--vsmmu cmdqv` on an SMMU without the Tegra241 CMD-QV.
    #[error(
        "the host SMMU behind {device} has no NVIDIA Tegra241 CMD-QV ({why}); use --vsmmu smmuv3 \
         (trapped command queue) on this host"
    )]
    NoCmdqv {
        /// The device.
        device: String,
        /// What the kernel said.
        why: String,
    },
    /// The host's CMD-QV is a version this VMM does not model.
    #[error("the host CMD-QV behind {device} is version {version}; only version 1 is supported")]
    CmdqvVersion {
        /// The device.
        device: String,
        /// PARAM.VER.
        version: u8,
    },
    /// More devices than the VINTF has SID replacement slots.
    #[error(
        "{count} devices behind one vSMMU but the host CMD-QV VINTF has {slots} SID slots; \
         put the others behind a second --vsmmu (another PCI segment)"
    )]
    TooManyDevices {
        /// Devices asked for.
        count: usize,
        /// Slots the host has.
        slots: usize,
    },
    /// A vSMMU with no device: the kernel allocates a vIOMMU through a device.
    #[error(
        "a vSMMU with backend=iommufd needs at least one --device ...,iommu=on behind it \
         (the kernel allocates the vIOMMU through a device)"
    )]
    NoDevice,
    /// A passthrough function could not be bound to the iommufd (the
    /// binding's own error, which names the function and the fix).
    #[error("{0}")]
    Bind(String),
    /// Any other failure while building the host objects.
    #[error("{0}")]
    Setup(#[from] Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_name_gives_symbol_and_text() {
        assert_eq!(errno_name(libc::EBUSY), "EBUSY (Device or resource busy)");
        assert!(errno_name(4095).starts_with("errno 4095"));
    }

    #[test]
    fn ioctl_error_maps_to_the_backend_errno_class() {
        let e = Error::ioctl(Ioctl::HwQueueAlloc, "index 1".into(), libc::EIO);
        let b = BackendError::from(e);
        assert_eq!(b.errno, Errno::Io);
        assert!(
            b.reason
                .contains("IOMMU_HW_QUEUE_ALLOC (index 1) failed: EIO"),
            "{b}"
        );
        assert_eq!(errno_class(libc::EFAULT), Errno::Fault);
        assert_eq!(errno_class(libc::ENOTTY), Errno::Other(libc::ENOTTY));
    }

    #[test]
    fn host_errors_name_the_fix() {
        let e = HostError::NoCmdqv {
            device: "0009:01:00.0".into(),
            why: "EOPNOTSUPP".into(),
        };
        assert!(e.to_string().contains("use --vsmmu smmuv3"));
        let e = HostError::NoIommufd(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert!(e.to_string().contains("backend=emulated"));
    }
}
