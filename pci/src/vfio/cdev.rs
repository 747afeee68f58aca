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
//! ([`VfioCdev::open_device`]).

use std::fs::File;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    pub fn open_device(&self, iommufd: &Arc<VfioIommufd>) -> Result<VfioDevice, VfioCdevError> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| VfioCdevError::Open(self.sysfs.clone(), e))?;
        VfioDevice::new_from_bound_fd(file, iommufd.clone(), false).map_err(|e| {
            VfioCdevError::Ioctl {
                path: self.sysfs.clone(),
                call: "VFIO_DEVICE_GET_INFO / GET_REGION_INFO / GET_IRQ_INFO",
                err: std::io::Error::other(e.to_string()),
            }
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
        let mut arg = vfio_device_detach_iommufd_pt {
            argsz: size_of::<vfio_device_detach_iommufd_pt>() as u32,
            ..Default::default()
        };
        // SAFETY: as in `bind`: the exact struct, read by the kernel.
        let rc =
            unsafe { ioctl_with_mut_ref(&self.file, VFIO_DEVICE_DETACH_IOMMUFD_PT(), &mut arg) };
        check(rc, &self.sysfs, "VFIO_DEVICE_DETACH_IOMMUFD_PT")
    }
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
}
