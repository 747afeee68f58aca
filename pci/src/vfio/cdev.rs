//! The VFIO cdev binding of a passthrough PCI function to the VM's
//! iommufd: `/dev/vfio/devices/vfioN` found through the function's sysfs
//! node, `VFIO_DEVICE_BIND_IOMMUFD` (which gives the iommufd `dev_id`),
//! `VFIO_DEVICE_ATTACH_IOMMUFD_PT` (attach or atomic replace) and
//! `VFIO_DEVICE_DETACH_IOMMUFD_PT`. The host backend drives attachments
//! through [`iommufd::IommufdDevice`]; the legacy container/group path is
//! not supported.
//!
//! The three ioctls are written here over vfio-bindings' structs because
//! the iommufd backend drives attachment (nested HWPTs, replace, detach in
//! the kernel's teardown order) through [`iommufd::IommufdDevice`] before
//! the guest-visible function exists; the function's regions, interrupts
//! and reset then go through vfio-ioctls' `VfioDevice`
//! ([`VfioCdev::open_device`]), wrapped in a [`CdevDevice`] whose release
//! cannot panic (see there).

use std::fs::File;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use devices::mapping::Sentence;
use vfio_bindings::bindings::vfio::{
    VFIO_BASE, VFIO_TYPE, vfio_device_attach_iommufd_pt, vfio_device_bind_iommufd,
    vfio_device_detach_iommufd_pt,
};
use vfio_ioctls::{VfioDevice, VfioIommufd};
use vmm_sys_util::ioctl::ioctl_with_mut_ref;
use vmm_sys_util::ioctl_io_nr;

ioctl_io_nr!(VFIO_DEVICE_BIND_IOMMUFD, VFIO_TYPE as u32, VFIO_BASE + 18);
ioctl_io_nr!(
    VFIO_DEVICE_ATTACH_IOMMUFD_PT,
    VFIO_TYPE as u32,
    VFIO_BASE + 19
);
ioctl_io_nr!(
    VFIO_DEVICE_DETACH_IOMMUFD_PT,
    VFIO_TYPE as u32,
    VFIO_BASE + 20
);

/// Why a passthrough function could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum VfioCdevError {
    /// The function has no VFIO cdev: not bound to vfio-pci, or no cdev support.
    #[error(
        "{0}: no VFIO device cdev under vfio-dev/; bind the function to vfio-pci \
         (echo vfio-pci > driver_override; echo BDF > /sys/bus/pci/drivers/vfio-pci/bind) \
         on a kernel with CONFIG_VFIO_DEVICE_CDEV"
    )]
    NoCdev(PathBuf),
    /// Opening the cdev failed.
    #[error("cannot open {0}: {1}")]
    Open(PathBuf, std::io::Error),
    /// An ioctl failed.
    #[error("{path}: {call} failed: {err}")]
    Ioctl {
        /// The function's sysfs node.
        path: PathBuf,
        /// Which ioctl.
        call: &'static str,
        /// The errno.
        err: std::io::Error,
    },
}

/// Why releasing a function's VFIO device was not clean (it is closed
/// either way).
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The detach from the IOAS failed; the device was still closed.
    #[error("VFIO_DEVICE_DETACH_IOMMUFD_PT")]
    Detach(#[source] std::io::Error),
    /// vfio-ioctls' `VfioDevice` drop panicked (its own detach failed); the
    /// fd was closed here instead.
    #[error("vfio-ioctls' VfioDevice drop panicked: {why}")]
    DropPanicked {
        /// The panic message.
        why: String,
        /// Our detach's failure before it, if it failed too.
        #[source]
        detach: Option<std::io::Error>,
    },
}

/// A passthrough function bound to an iommufd.
#[derive(Debug)]
pub struct VfioCdev {
    file: File,
    sysfs: PathBuf,
    dev_id: u32,
}

/// The cdev of the function at `sysfs`: `/dev/vfio/devices/<vfio-dev/vfioN>`.
pub fn cdev_path(sysfs: &Path) -> Result<PathBuf, VfioCdevError> {
    let dir = std::fs::read_dir(sysfs.join("vfio-dev"))
        .map_err(|_| VfioCdevError::NoCdev(sysfs.into()))?;
    dir.filter_map(Result::ok)
        .map(|e| e.file_name())
        .find(|n| n.to_string_lossy().starts_with("vfio"))
        .map(|n| Path::new("/dev/vfio/devices").join(n))
        .ok_or_else(|| VfioCdevError::NoCdev(sysfs.into()))
}

impl VfioCdev {
    /// Open the function's cdev and bind it to `iommufd`.
    pub fn bind(sysfs: &Path, iommufd: RawFd) -> Result<Self, VfioCdevError> {
        let cdev = cdev_path(sysfs)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&cdev)
            .map_err(|e| VfioCdevError::Open(cdev.clone(), e))?;
        let mut arg = vfio_device_bind_iommufd {
            argsz: size_of::<vfio_device_bind_iommufd>() as u32,
            iommufd,
            ..Default::default()
        };
        // SAFETY: `file` is an open VFIO cdev; the kernel reads `argsz`
        // bytes of `arg` (its exact size) and writes `out_devid` inside it.
        let rc = unsafe { ioctl_with_mut_ref(&file, VFIO_DEVICE_BIND_IOMMUFD(), &mut arg) };
        check(rc, sysfs, "VFIO_DEVICE_BIND_IOMMUFD")?;
        log::info!(target: "vfio", "{}: bound to iommufd as dev_id {}", sysfs.display(), arg.out_devid);
        Ok(VfioCdev {
            file,
            sysfs: sysfs.into(),
            dev_id: arg.out_devid,
        })
    }

    /// The function's regions and interrupts through vfio-ioctls, over a
    /// duplicate of this (already bound) cdev; `iommufd` must wrap the
    /// iommufd it was bound to.
    pub fn open_device(&self, iommufd: &Arc<VfioIommufd>) -> Result<CdevDevice, VfioCdevError> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| VfioCdevError::Open(self.sysfs.clone(), e))?;
        let device = VfioDevice::new_from_bound_fd(file, iommufd.clone(), false).map_err(|e| {
            VfioCdevError::Ioctl {
                path: self.sysfs.clone(),
                call: "VFIO_DEVICE_GET_INFO / GET_REGION_INFO / GET_IRQ_INFO",
                err: std::io::Error::other(e.to_string()),
            }
        })?;
        Ok(CdevDevice {
            device: ManuallyDrop::new(device),
            sysfs: self.sysfs.clone(),
        })
    }

    /// The iommufd device id.
    pub fn dev_id(&self) -> u32 {
        self.dev_id
    }

    /// Attach to (or atomically replace with) the IOAS or HWPT `pt_id`.
    pub fn attach(&self, pt_id: u32) -> Result<(), VfioCdevError> {
        let mut arg = vfio_device_attach_iommufd_pt {
            argsz: size_of::<vfio_device_attach_iommufd_pt>() as u32,
            pt_id,
            ..Default::default()
        };
        // SAFETY: as in `bind`: the exact struct, updated in place.
        let rc =
            unsafe { ioctl_with_mut_ref(&self.file, VFIO_DEVICE_ATTACH_IOMMUFD_PT(), &mut arg) };
        check(rc, &self.sysfs, "VFIO_DEVICE_ATTACH_IOMMUFD_PT")
    }

    /// Leave whatever page table the function is attached to.
    pub fn detach(&self) -> Result<(), VfioCdevError> {
        detach_pt(&self.file).map_err(|err| VfioCdevError::Ioctl {
            path: self.sysfs.clone(),
            call: "VFIO_DEVICE_DETACH_IOMMUFD_PT",
            err,
        })
    }
}

/// `VFIO_DEVICE_DETACH_IOMMUFD_PT` on the bound cdev `file` (or a duplicate
/// of it: both are the same open file to the kernel).
fn detach_pt(file: &impl AsRawFd) -> std::io::Result<()> {
    let mut arg = vfio_device_detach_iommufd_pt {
        argsz: size_of::<vfio_device_detach_iommufd_pt>() as u32,
        ..Default::default()
    };
    // SAFETY: as in `VfioCdev::bind`: the exact struct, read by the kernel.
    let rc = unsafe { ioctl_with_mut_ref(file, VFIO_DEVICE_DETACH_IOMMUFD_PT(), &mut arg) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// vfio-ioctls' `VfioDevice` on a bound cdev, released without panicking.
///
/// vfio-ioctls 0.10's `Drop for VfioDevice` (cdev path) issues
/// `VFIO_DEVICE_DETACH_IOMMUFD_PT` and `unwrap()`s it, then closes the fd.
/// Detaching first ourselves is not enough to make that unwrap safe: the
/// kernel's `vfio_device_fops_unl_ioctl` resumes the device
/// (`vfio_device_pm_runtime_get`, `-EIO` on failure) *before* it looks at
/// the command, so even a no-op second detach fails on a device whose
/// runtime resume fails (a surprise-removed or dead function). So this
/// guard does both, and patching the crate is not needed:
/// 1. it detaches explicitly with our own ioctl, so the normal failure is
///    an error with the function's name and errno, logged;
/// 2. it runs the crate's drop under `catch_unwind`; if that panics (the
///    panic hook still prints its message), the crate has not reached its
///    close, so the guard closes the fd itself: nothing leaks, and the
///    cdev's binding ends as it must for the next VM.
///
/// Point 2 relies on vfio-ioctls' drop closing the fd as its last step (true
/// of 0.10.0, which Cargo.toml pins with `=`) and on `panic = "unwind"`
/// (this workspace sets no other strategy).
pub struct CdevDevice {
    device: ManuallyDrop<VfioDevice>,
    sysfs: PathBuf,
}

impl Deref for CdevDevice {
    type Target = VfioDevice;

    fn deref(&self) -> &VfioDevice {
        &self.device
    }
}

impl Drop for CdevDevice {
    fn drop(&mut self) {
        // SAFETY: `device` is taken once, here, and never used afterwards.
        let device = unsafe { ManuallyDrop::take(&mut self.device) };
        if let Err(e) = release(device, detach_pt) {
            log::error!(target: "vfio", "{}: release: {}", self.sysfs.display(), Sentence(&e));
        }
    }
}

/// Detach `device` with `detach`, then drop it, catching a panic of its
/// `Drop`; after such a panic its fd is still open and is closed here.
/// The first failure is returned.
fn release<D: AsRawFd>(
    device: D,
    detach: impl FnOnce(&D) -> std::io::Result<()>,
) -> Result<(), ReleaseError> {
    let detached = detach(&device);
    let fd = device.as_raw_fd();
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(device)));
    if let Err(panic) = dropped {
        // SAFETY: the panicking drop stopped before its close (see
        // `CdevDevice`), so `fd` is still this device's open descriptor and
        // nothing else owns it.
        unsafe { libc::close(fd) };
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)")
            .to_string();
        return Err(ReleaseError::DropPanicked {
            why,
            detach: detached.err(),
        });
    }
    detached.map_err(ReleaseError::Detach)
}

fn check(rc: i32, path: &Path, call: &'static str) -> Result<(), VfioCdevError> {
    if rc < 0 {
        return Err(VfioCdevError::Ioctl {
            path: path.into(),
            call,
            err: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn errno_of(e: &VfioCdevError) -> i32 {
    match e {
        VfioCdevError::Open(_, err) | VfioCdevError::Ioctl { err, .. } => {
            err.raw_os_error().unwrap_or(libc::EIO)
        }
        VfioCdevError::NoCdev(_) => libc::ENODEV,
    }
}

impl iommufd::IommufdDevice for VfioCdev {
    fn name(&self) -> String {
        self.sysfs.display().to_string()
    }

    fn dev_id(&self) -> u32 {
        self.dev_id
    }

    fn attach(&self, pt_id: u32) -> Result<(), iommufd::Error> {
        VfioCdev::attach(self, pt_id).map_err(|e| iommufd::Error::Device {
            device: self.name(),
            op: format!("attach to {pt_id}"),
            errno: errno_of(&e),
        })
    }

    fn detach(&self) -> Result<(), iommufd::Error> {
        VfioCdev::detach(self).map_err(|e| iommufd::Error::Device {
            device: self.name(),
            op: "detach".into(),
            errno: errno_of(&e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_vfio_base_plus_18_19_20() {
        assert_eq!(VFIO_DEVICE_BIND_IOMMUFD(), 0x3b76);
        assert_eq!(VFIO_DEVICE_ATTACH_IOMMUFD_PT(), 0x3b77);
        assert_eq!(VFIO_DEVICE_DETACH_IOMMUFD_PT(), 0x3b78);
    }

    #[test]
    fn a_function_without_a_vfio_cdev_is_refused_with_the_bind_recipe() {
        let dir = std::env::temp_dir().join(format!("vfio-cdev-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = VfioCdev::bind(&dir, -1).unwrap_err();
        assert!(matches!(err, VfioCdevError::NoCdev(_)));
        assert!(err.to_string().contains("vfio-pci"), "{err}");
        std::fs::create_dir_all(dir.join("vfio-dev/vfio7")).unwrap();
        assert_eq!(
            cdev_path(&dir).unwrap(),
            Path::new("/dev/vfio/devices/vfio7")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Stands in for vfio-ioctls' `VfioDevice`: owns `fd` and, like the
    /// crate's drop, panics on a failed detach before closing it.
    struct FakeDevice {
        fd: RawFd,
        drop_panics: bool,
    }

    impl AsRawFd for FakeDevice {
        fn as_raw_fd(&self) -> RawFd {
            self.fd
        }
    }

    impl Drop for FakeDevice {
        fn drop(&mut self) {
            assert!(!self.drop_panics, "detach_device_iommufd_pt: EIO");
            // SAFETY: the fake owns `fd`.
            unsafe { libc::close(self.fd) };
        }
    }

    /// A pipe: the read end (kept) and the write end (the fake's fd). The
    /// read end sees EOF once every copy of the write end is closed, which
    /// holds even if another test thread reuses the fd number.
    fn pipe() -> (File, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        assert_eq!(rc, 0);
        // SAFETY: pipe2 just returned this descriptor; nothing else owns it.
        let read = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
        (read, fds[1])
    }

    fn write_end_closed(read: &mut File) -> bool {
        let mut b = [0u8; 1];
        matches!(std::io::Read::read(read, &mut b), Ok(0))
    }

    fn eio(_: &FakeDevice) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::EIO))
    }

    #[test]
    fn release_turns_a_failed_detach_and_a_panicking_drop_into_an_error_and_closes_the_fd() {
        let (mut read, fd) = pipe();
        let device = FakeDevice {
            fd,
            drop_panics: true,
        };
        let err = release(device, eio).unwrap_err();
        let ReleaseError::DropPanicked {
            detach: Some(e), ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        let sentence = Sentence(&err).to_string();
        assert!(
            sentence.ends_with("Input/output error (os error 5)"),
            "{sentence}"
        );
        assert!(write_end_closed(&mut read));
    }

    #[test]
    fn release_reports_a_drop_that_panics_after_a_good_detach() {
        let (mut read, fd) = pipe();
        let device = FakeDevice {
            fd,
            drop_panics: true,
        };
        let err = release(device, |_| Ok(())).unwrap_err().to_string();
        assert!(err.contains("panicked") && err.contains("EIO"), "{err}");
        assert!(write_end_closed(&mut read));
    }

    #[test]
    fn release_of_a_healthy_device_leaves_the_close_to_its_drop() {
        let (mut read, fd) = pipe();
        let device = FakeDevice {
            fd,
            drop_panics: false,
        };
        release(device, |_| Ok(())).unwrap();
        assert!(write_end_closed(&mut read));
    }

    #[test]
    fn release_reports_a_failed_detach_of_a_device_whose_drop_succeeds() {
        let (mut read, fd) = pipe();
        let device = FakeDevice {
            fd,
            drop_panics: false,
        };
        let err = release(device, eio).unwrap_err();
        assert!(
            matches!(&err, ReleaseError::Detach(e) if e.raw_os_error() == Some(libc::EIO)),
            "{err:?}"
        );
        assert_eq!(
            Sentence(&err).to_string(),
            "VFIO_DEVICE_DETACH_IOMMUFD_PT: Input/output error (os error 5)"
        );
        assert!(write_end_closed(&mut read));
    }
}
