//! The host backend behind each vSMMU: the `emulated` software model of the
//! kernel contract, or the host's own SMMU through /dev/iommu (`iommufd`).
//!
//! A VM with passthrough functions or an `iommufd` vSMMU owns one
//! [`HostIommu`]: the iommufd, one IOAS with all guest RAM at IOVA = GPA,
//! and every passthrough function bound to it through its VFIO cdev;
//! `iommu=off` functions are attached to the IOAS itself. Each vSMMU then
//! gets an `iommufd::Viommu` over the functions behind it (vDEVICE virt_id
//! = the StreamID the IORT gives the guest). The IOAS is the one
//! vfio-ioctls' `VfioIommufd` allocates, so the guest-visible functions
//! (vfio-ioctls `VfioDevice`s) and the vIOMMUs share it. Teardown order is
//! the kernel's: the functions are quiesced, the vIOMMUs go, then the
//! bindings, the IOAS and the fd.

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;

use devices::GuestMemory;
use devices::cmdqv::CmdqvBackend;
use devices::emulated::EmulatedBackend;
use devices::emulated::cmdqv::{EmulatedCmdqv, EmulatedCmdqvConfig};
use devices::irq::InterruptSink;
use devices::smmuv3::VsmmuBackend;
use iommufd::{ArmSmmuv3, HostError, Ioctl, Iommufd, IommufdDevice, SharedViommu, Viommu};
use pci::vfio::{CdevDevice, VfioCdev, VfioIommufd};

use crate::description::HOST_SW_MSI;

/// Does the VM need /dev/iommu: a vSMMU on backend=iommufd, or any
/// passthrough function?
pub fn needs_host(config: &crate::config::VmConfig) -> bool {
    use crate::config::{BackendKind, VsmmuKind};
    (config.vsmmu.kind != VsmmuKind::Off && config.vsmmu.backend == BackendKind::Iommufd)
        || !config.devices.is_empty()
}

/// Check, before anything else is set up, that the host can back the
/// VM's vSMMUs and passthrough functions: /dev/iommu must open.
pub fn preflight(config: &crate::config::VmConfig) -> Result<(), HostError> {
    if needs_host(config) {
        iommufd::open_host()?;
    }
    Ok(())
}

/// A passthrough function to bind.
pub struct HostFunction {
    /// Its sysfs node.
    pub path: PathBuf,
    /// `iommu=off`: attached to the IOAS (no vSMMU translates it).
    pub direct: bool,
}

/// The `msi` window of the function's IOMMU group (`reserved_regions`
/// lines are "START END TYPE", inclusive, in hex).
fn sw_msi_window(function: &std::path::Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(function.join("iommu_group/reserved_regions")).ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (start, end, kind) = (f.next()?, f.next()?, f.next()?);
        let hex = |v: &str| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok();
        (kind == "msi").then(|| Some((hex(start)?, hex(end)?)))?
    })
}

/// A function behind a vSMMU needs the host's MSI window where the IORT's
/// RMR tells the guest it is ([`HOST_SW_MSI`]); a host that reports none
/// (an SMMU with a hardware MSI window) needs no RMR and is fine.
fn check_sw_msi(function: &std::path::Path) -> Result<(), HostError> {
    match sw_msi_window(function) {
        Some((start, end)) if start != HOST_SW_MSI.base || end + 1 != HOST_SW_MSI.end() => {
            Err(setup_error(
                function,
                format!(
                    "its IOMMU group's MSI window is {start:#x}..={end:#x}, but the guest's IORT \
                     RMR covers {:#x}..{:#x} (arm-smmu-v3's MSI_IOVA_BASE); this host's SMMU \
                     driver is not supported behind a vSMMU (use iommu=off)",
                    HOST_SW_MSI.base,
                    HOST_SW_MSI.end()
                ),
            ))
        }
        _ => Ok(()),
    }
}

fn setup_error(device: &std::path::Path, op: String) -> HostError {
    HostError::Setup(iommufd::Error::Device {
        device: device.display().to_string(),
        op,
        errno: libc::ENODEV,
    })
}

/// The VM's host IOMMU state.
pub struct HostIommu {
    /// Bound functions by sysfs path; the vIOMMUs hold clones.
    functions: Vec<(PathBuf, Arc<VfioCdev>)>,
    /// vfio-ioctls' view of the iommufd; owns the IOAS holding guest RAM.
    vfio: Arc<VfioIommufd>,
    fd: Arc<Iommufd>,
}

impl HostIommu {
    /// Open /dev/iommu, map guest RAM (whole pages of `host_page` bytes)
    /// into a new IOAS, bind `functions` (and attach the `direct` ones to
    /// the IOAS).
    pub fn new(
        mem: &GuestMemory,
        functions: &[HostFunction],
        host_page: u64,
    ) -> Result<Self, HostError> {
        let fd = iommufd::open_host()?;
        let vfio = VfioIommufd::new(fd.shared(), None, None).map_err(|e| {
            HostError::Setup(iommufd::Error::Ioctl {
                call: Ioctl::IoasAlloc,
                what: format!("vfio-ioctls VfioIommufd: {e}"),
                errno: libc::EIO,
            })
        })?;
        let ioas = vfio.ioas().id();
        iommufd::ioas::map_guest_ram(&fd, ioas, mem, host_page)?;
        let mut bound = Vec::with_capacity(functions.len());
        for f in functions {
            let function = VfioCdev::bind(&f.path, fd.raw_fd())
                .map_err(|e| setup_error(&f.path, e.to_string()))?;
            if !f.direct {
                check_sw_msi(&f.path)?;
            }
            if f.direct {
                function
                    .attach(ioas)
                    .map_err(|e| setup_error(&f.path, e.to_string()))?;
                log::info!(target: "vfio", "{}: iommu=off, attached to IOAS {ioas}", f.path.display());
            }
            bound.push((f.path.clone(), Arc::new(function)));
        }
        Ok(HostIommu {
            functions: bound,
            vfio: Arc::new(vfio),
            fd,
        })
    }

    /// The guest-visible side of the bound function at `path`: its
    /// regions, interrupts and reset through vfio-ioctls.
    pub fn open_function(&self, path: &std::path::Path) -> Result<CdevDevice, HostError> {
        let (_, cdev) = self
            .functions
            .iter()
            .find(|(p, _)| p == path)
            .ok_or_else(|| setup_error(path, "not bound".into()))?;
        cdev.open_device(&self.vfio)
            .map_err(|e| setup_error(path, e.to_string()))
    }

    /// A vIOMMU (ARM SMMUv3, or Tegra241 CMD-QV with `cmdqv`) over the
    /// functions at `paths`, each seen by the guest as the paired vSID.
    pub fn viommu(&self, cmdqv: bool, paths: &[(PathBuf, u32)]) -> Result<SharedViommu, HostError> {
        let devices = paths
            .iter()
            .filter_map(|(path, vsid)| {
                self.functions
                    .iter()
                    .find(|(p, _)| p == path)
                    .map(|(_, f)| (f.clone() as Arc<dyn IommufdDevice>, *vsid))
            })
            .collect();
        let viommu = Viommu::new(
            &self.fd,
            self.vfio.ioas().id(),
            Arc::new(ArmSmmuv3 { cmdqv }),
            devices,
        )?;
        Ok(SharedViommu::new(viommu))
    }

    /// The VM's iommufd (its per-ioctl counters).
    pub fn fd(&self) -> &Arc<Iommufd> {
        &self.fd
    }
}

/// One vSMMU's backend.
#[derive(Clone, Debug)]
pub enum VsmmuHost {
    /// The software model (`backend=emulated`).
    Emulated(EmulatedBackend),
    /// A vIOMMU on the host SMMU (`backend=iommufd`).
    Iommufd(SharedViommu),
}

impl VsmmuHost {
    /// What the vSMMU model talks to.
    pub fn vsmmu(&self) -> Box<dyn VsmmuBackend> {
        match self {
            VsmmuHost::Emulated(b) => Box::new(b.clone()),
            VsmmuHost::Iommufd(v) => Box::new(v.vsmmu()),
        }
    }

    /// What the CMD-QV model talks to.
    pub fn cmdqv(
        &self,
        mem: &GuestMemory,
        irq: Arc<dyn InterruptSink>,
        mapped: bool,
    ) -> Result<Box<dyn CmdqvBackend>, String> {
        match self {
            VsmmuHost::Emulated(b) => {
                let config = EmulatedCmdqvConfig {
                    mapped,
                    ..EmulatedCmdqvConfig::default()
                };
                let host = EmulatedCmdqv::new(b.clone(), mem.clone(), irq, config)
                    .map_err(|e| e.to_string())?;
                Ok(Box::new(host))
            }
            VsmmuHost::Iommufd(v) => v
                .cmdqv()
                .map(|b| Box::new(b) as Box<dyn CmdqvBackend>)
                .ok_or_else(|| "the host vIOMMU is not a Tegra241 CMD-QV".to_string()),
        }
    }

    /// Declare the endpoint `vsid` (the emulated backend's vDEVICE; with
    /// iommufd the vIOMMU made it already).
    pub fn add_endpoint(&self, vsid: u32) -> Result<(), devices::backend::BackendError> {
        match self {
            VsmmuHost::Emulated(b) => b.vdevice_alloc(vsid, vsid),
            VsmmuHost::Iommufd(_) => Ok(()),
        }
    }

    /// Backend calls by kind, with the emulated backend's names:
    /// `invalidate`, `install_ste`, `hw_queue_alloc`, `vcmdq_exec`...
    /// (with iommufd: this vIOMMU's ioctls; VCMDQ commands run in hardware and
    /// are not counted).
    pub fn call_counts(&self) -> BTreeMap<String, u64> {
        match self {
            VsmmuHost::Emulated(b) => b.call_counts(),
            VsmmuHost::Iommufd(v) => {
                // This vIOMMU's own calls: the fd (and its counts) is
                // shared by every vIOMMU of the VM.
                let viommu = v.lock();
                [
                    ("invalidate", Ioctl::HwptInvalidate),
                    ("install_ste", Ioctl::HwptAlloc),
                    ("hw_queue_alloc", Ioctl::HwQueueAlloc),
                ]
                .into_iter()
                .map(|(name, ioctl)| (name.to_string(), viommu.call_count(ioctl)))
                .collect()
            }
        }
    }

    /// Tear the host side down now, in the kernel's order (HW queues,
    /// detach, nested HWPTs, vDEVICEs, vEVENTQs, munmap, vIOMMU, nest
    /// parent); the models keep handles that then find nothing to release.
    pub fn release(&self) {
        if let VsmmuHost::Iommufd(v) = self {
            v.lock().teardown();
        }
    }

    /// The fds that become readable when the host has events for the guest.
    pub fn event_fds(&self) -> Vec<RawFd> {
        match self {
            VsmmuHost::Emulated(b) => b.events_fd().into_iter().collect(),
            VsmmuHost::Iommufd(v) => v.lock().event_fds(),
        }
    }

    /// Must the VMM poll this backend for events (it has no fd to wait on)?
    pub fn needs_polling(&self) -> bool {
        matches!(self, VsmmuHost::Emulated(b) if b.events_fd().is_none())
    }

    /// Before its events are drained: quiet the emulated backend's fd (an
    /// iommufd vEVENTQ stays readable until read, which the drain does).
    pub fn events_taken(&self) {
        if let VsmmuHost::Emulated(b) = self {
            b.reset_events_fd();
        }
    }
}
