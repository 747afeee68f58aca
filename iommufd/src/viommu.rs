//! One vIOMMU and everything the kernel hangs off it, built and torn down
//! in the kernel's dependency order, written once for every [`Flavour`].
//!
//! Build (`Viommu::new`): hw info through the first device -> nest-parent
//! HWPT on the IOAS -> every device attached to it -> vIOMMU (with the
//! flavour's data) -> mmap of its region (the Tegra241 VINTF page0) ->
//! shared abort and bypass nested HWPTs -> one vDEVICE per device (virt_id
//! = its vSID) -> vEVENTQs. A step that fails drops what was built, which
//! runs the teardown below: nothing is leaked by a half-built vIOMMU.
//!
//! Teardown (`Viommu::teardown`, also on drop) is the reverse dependency
//! order, the only order in which the kernel answers 0 to every destroy:
//! HW queues in descending index (queue n depends on n-1) -> devices
//! detached (a HWPT in use is EBUSY) -> nested HWPTs -> vDEVICEs ->
//! vEVENTQs (fd closed first) -> munmap of the region (a live mapping
//! keeps the vIOMMU busy) -> vIOMMU -> nest parent. The VMM removes the
//! page0 memory slot before any of this (the CMD-QV model's shutdown).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use devices::backend::{BackendError, Errno};
use devices::mapping::Mapping;
use devices::smmuv3::cmd::Command;
use devices::smmuv3::{InvalidateError, NestedSte, SteConfig};
use iommufd_bindings::iommufd::{
    iommu_hw_queue_alloc, iommu_hwpt_alloc, iommu_hwpt_data_type_IOMMU_HWPT_DATA_NONE,
    iommu_hwpt_invalidate, iommu_viommu_alloc,
    iommufd_hwpt_alloc_flags_IOMMU_HWPT_ALLOC_NEST_PARENT,
};

use crate::device::IommufdDevice;
use crate::error::{Error, HostError};
use crate::fd::{Iommufd, Object, ObjectKind};
use crate::flavour::{HostInfo, SharedFlavour};
use crate::ioctl::Ioctl;
use crate::veventq::Veventq;

/// vEVENTQ depth: events the kernel holds before it reports LOST_EVENTS.
pub const VEVENTQ_DEPTH: u32 = 64;

/// What a device is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attached {
    Parent,
    Abort,
    Bypass,
    Nested,
}

/// One device behind the vIOMMU.
struct Endpoint {
    device: Arc<dyn IommufdDevice>,
    vsid: u32,
    vdevice: Option<Object>,
    /// Its own nested HWPT (S1 STE), if the guest gave it one.
    nested: Option<Object>,
    attached: Attached,
}

/// A vIOMMU with its devices, HW queues, vEVENTQs and mmap'd region.
pub struct Viommu {
    fd: Arc<Iommufd>,
    flavour: SharedFlavour,
    info: HostInfo,
    endpoints: Vec<Endpoint>,
    /// SID replacement slots (CMD-QV): the kernel takes the lowest free
    /// slot per vDEVICE and never moves the others.
    sid_slots: Vec<Option<u32>>,
    hw_queues: BTreeMap<u32, Object>,
    /// Shared with the page0 memory slot while the guest sees it.
    region: Option<Arc<Mapping>>,
    /// The kernel's mmap offset of `region`.
    region_offset: Option<u64>,
    smmu_events: Option<Veventq>,
    cmdqv_events: Option<Veventq>,
    /// CMD-QV error maps read from the vEVENTQ, not yet handed out.
    cmdqv_pending: std::collections::VecDeque<[u64; 2]>,
    abort: Option<Object>,
    bypass: Option<Object>,
    viommu: Option<Object>,
    parent: Option<Object>,
    /// This vIOMMU's own ioctls by kind (the fd's counts are the VM's,
    /// summed over every vIOMMU on it).
    calls: [AtomicU64; Ioctl::ALL.len()],
}

impl std::fmt::Debug for Viommu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viommu")
            .field("flavour", &self.flavour.name())
            .field("id", &self.viommu.as_ref().map(Object::id))
            .finish()
    }
}

impl Viommu {
    /// Build a vIOMMU of `flavour` over the IOAS `ioas_id` for `devices`
    /// (each with the vSID the guest sees it by).
    pub fn new(
        fd: &Arc<Iommufd>,
        ioas_id: u32,
        flavour: SharedFlavour,
        devices: Vec<(Arc<dyn IommufdDevice>, u32)>,
    ) -> Result<Self, HostError> {
        let Some((first, _)) = devices.first() else {
            return Err(HostError::NoDevice);
        };
        let (dev_id, first_name) = (first.dev_id(), first.name());
        let info = flavour.probe(fd, dev_id, &first_name)?;
        let slots = info
            .cmdqv
            .map_or(devices.len(), |c| 1usize << c.log2vsids.min(16));
        if devices.len() > slots {
            return Err(HostError::TooManyDevices {
                count: devices.len(),
                slots,
            });
        }
        let mut v = Viommu {
            fd: fd.clone(),
            flavour,
            info,
            endpoints: devices
                .into_iter()
                .map(|(device, vsid)| Endpoint {
                    device,
                    vsid,
                    vdevice: None,
                    nested: None,
                    attached: Attached::Parent,
                })
                .collect(),
            sid_slots: vec![None; if info.cmdqv.is_some() { slots } else { 0 }],
            hw_queues: BTreeMap::new(),
            region: None,
            region_offset: None,
            smmu_events: None,
            cmdqv_events: None,
            cmdqv_pending: Default::default(),
            abort: None,
            bypass: None,
            viommu: None,
            parent: None,
            calls: Default::default(),
        };
        v.build(ioas_id, dev_id, &first_name)?;
        log::info!(
            target: "iommufd",
            "vIOMMU {} ({}) ready: {} vDEVICE(s), region {:?}",
            v.viommu_id(),
            v.flavour.name(),
            v.endpoints.len(),
            v.region.as_ref().map(|m| (m.host_addr(), m.len()))
        );
        Ok(v)
    }

    fn build(&mut self, ioas_id: u32, dev_id: u32, first_name: &str) -> Result<(), HostError> {
        let fd = self.fd.clone();
        let mut parent = iommu_hwpt_alloc {
            size: size_of::<iommu_hwpt_alloc>() as u32,
            flags: iommufd_hwpt_alloc_flags_IOMMU_HWPT_ALLOC_NEST_PARENT,
            dev_id,
            pt_id: ioas_id,
            data_type: iommu_hwpt_data_type_IOMMU_HWPT_DATA_NONE,
            ..Default::default()
        };
        self.counted(Ioctl::HwptAlloc);
        let parent_id = fd.hwpt_alloc(&mut parent).map_err(|e| match e.errno() {
            Some(libc::EOPNOTSUPP) => HostError::NoNesting {
                device: first_name.to_string(),
                why: e.to_string(),
            },
            _ => e.into(),
        })?;
        self.parent = Some(Object::new(fd.clone(), parent_id, ObjectKind::ParentHwpt));
        for endpoint in &self.endpoints {
            endpoint.device.attach(parent_id)?;
        }

        let mut data = self.flavour.viommu_data();
        let mut alloc = iommu_viommu_alloc {
            size: size_of::<iommu_viommu_alloc>() as u32,
            type_: self.flavour.viommu_type(),
            dev_id,
            hwpt_id: parent_id,
            data_len: data.len() as u32,
            data_uptr: if data.is_empty() {
                0
            } else {
                data.as_mut_ptr() as u64
            },
            ..Default::default()
        };
        let viommu_id = fd.viommu_alloc(&mut alloc).map_err(|e| match e.errno() {
            Some(libc::ENOTTY) => HostError::KernelTooOld("IOMMU_VIOMMU_ALLOC"),
            Some(libc::EOPNOTSUPP) => HostError::NoNesting {
                device: first_name.to_string(),
                why: e.to_string(),
            },
            _ => e.into(),
        })?;
        self.viommu = Some(Object::new(fd.clone(), viommu_id, ObjectKind::Viommu));

        if let Some((offset, len)) = self.flavour.mmap_region(&data) {
            let mapping = Mapping::shared(fd.raw_fd(), offset, len).map_err(|e| Error::Mmap {
                offset,
                len,
                errno: e.errno().unwrap_or(libc::EIO),
            })?;
            log::info!(target: "iommufd", "vIOMMU {viommu_id}: region {offset:#x}+{len:#x} mapped at {:#x}", mapping.host_addr());
            self.region = Some(Arc::new(mapping));
            self.region_offset = Some(offset);
        }

        self.abort = Some(self.nested_hwpt(dev_id, &NestedSte::abort())?);
        self.bypass = Some(self.nested_hwpt(dev_id, &NestedSte::bypass())?);

        for i in 0..self.endpoints.len() {
            let Some(endpoint) = self.endpoints.get(i) else {
                continue;
            };
            let (dev, vsid) = (endpoint.device.dev_id(), endpoint.vsid);
            let id = fd.vdevice_alloc(viommu_id, dev, u64::from(vsid))?;
            let object = Object::new(fd.clone(), id, ObjectKind::Vdevice);
            if let Some(slot) = self.sid_slots.iter_mut().find(|s| s.is_none()) {
                *slot = Some(vsid);
            }
            if let Some(endpoint) = self.endpoints.get_mut(i) {
                endpoint.vdevice = Some(object);
            }
            log::info!(target: "iommufd", "vDEVICE {id}: dev {dev} as vSID {vsid:#x}");
        }

        if let Some(format) = self.flavour.smmu_events() {
            self.smmu_events = Some(Veventq::new(&fd, viommu_id, format, VEVENTQ_DEPTH).map_err(
                |e| match e.errno() {
                    Some(libc::ENOTTY) => HostError::KernelTooOld("IOMMU_VEVENTQ_ALLOC"),
                    _ => e.into(),
                },
            )?);
        }
        if let Some(ty) = self.flavour.cmdqv_events() {
            let format = crate::flavour::EventFormat { ty, payload: 16 };
            self.cmdqv_events = Some(Veventq::new(&fd, viommu_id, format, VEVENTQ_DEPTH)?);
        }
        Ok(())
    }

    fn nested_hwpt(&self, dev_id: u32, ste: &NestedSte) -> Result<Object, Error> {
        let (data_type, mut data) = self.flavour.nested_hwpt(ste);
        let mut arg = iommu_hwpt_alloc {
            size: size_of::<iommu_hwpt_alloc>() as u32,
            dev_id,
            pt_id: self.viommu_id(),
            data_type,
            data_len: data.len() as u32,
            data_uptr: data.as_mut_ptr() as u64,
            ..Default::default()
        };
        self.counted(Ioctl::HwptAlloc);
        let id = self.fd.hwpt_alloc(&mut arg)?;
        Ok(Object::new(self.fd.clone(), id, ObjectKind::NestedHwpt))
    }

    /// How many ioctls of `kind` this vIOMMU issued (successful or not):
    /// `IOMMU_HWPT_ALLOC` (its nest parent and nested HWPTs),
    /// `IOMMU_HWPT_INVALIDATE`, `IOMMU_HW_QUEUE_ALLOC`. A VM with one
    /// vIOMMU per host SMMU shares one fd; these are this vIOMMU's alone.
    pub fn call_count(&self, kind: Ioctl) -> u64 {
        self.calls[kind as usize].load(Ordering::Relaxed)
    }

    fn counted(&self, kind: Ioctl) {
        self.calls[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The vIOMMU's id.
    pub fn viommu_id(&self) -> u32 {
        self.viommu.as_ref().map_or(0, Object::id)
    }

    /// What the host reported.
    pub fn info(&self) -> HostInfo {
        self.info
    }

    /// The iommufd this vIOMMU lives on.
    pub fn fd(&self) -> &Arc<Iommufd> {
        &self.fd
    }

    /// The mmap'd region (Tegra241: the VINTF page0), shared: a memory
    /// slot over it keeps it mapped until the slot is removed.
    pub fn region(&self) -> Option<Arc<Mapping>> {
        self.region.clone()
    }

    /// The kernel's mmap offset of the region (to map it again).
    pub fn region_offset(&self) -> Option<u64> {
        self.region_offset
    }

    /// The fds the event loop waits on.
    pub fn event_fds(&self) -> Vec<i32> {
        [&self.smmu_events, &self.cmdqv_events]
            .into_iter()
            .filter_map(|q| q.as_ref().and_then(Veventq::raw_fd))
            .collect()
    }

    /// The vSIDs in their SID replacement slots (CMD-QV).
    pub fn sid_slots(&self) -> &[Option<u32>] {
        &self.sid_slots
    }

    // ---- the vSMMU's calls ----

    /// Make `vsid`'s device translate as `ste` says: the shared abort or
    /// bypass HWPT, or a nested HWPT of its own for a stage-1 STE.
    ///
    /// A refused STE (nested HWPT alloc or attach failed) puts the device on
    /// the shared abort HWPT before the error is returned: the guest is told
    /// C_BAD_STE and believes the stream aborts, so the previous translation
    /// (a bypass is DMA to all guest RAM) must not stay. If even the abort
    /// attach fails, that is logged as an error and named in the returned
    /// error.
    pub fn install_ste(&mut self, vsid: u32, ste: &NestedSte) -> Result<(), BackendError> {
        let index = self
            .endpoints
            .iter()
            .position(|e| e.vsid == vsid)
            .ok_or_else(|| {
                BackendError::new(Errno::NoEnt, format!("vSID {vsid:#x} has no vDEVICE"))
            })?;
        let Err(mut refused) = self.attach_ste(index, ste) else {
            return Ok(());
        };
        let fallback = if ste.config == SteConfig::Abort {
            Err(refused.clone())
        } else {
            self.attach_ste(index, &NestedSte::abort())
        };
        match fallback {
            Ok(()) => {
                log::warn!(target: "iommufd", "vSID {vsid:#x}: {} STE refused ({refused}); device on the abort HWPT",
                    ste.config.name());
                refused.reason.push_str("; the device is on the abort HWPT");
            }
            Err(abort_err) => {
                let on = self.attachment(vsid).map_or("unknown", |(name, _)| name);
                log::error!(
                    target: "iommufd",
                    "vSID {vsid:#x}: {} STE refused ({refused}) and the abort HWPT could not be \
                     attached ({abort_err}): the device stays on its {on} translation",
                    ste.config.name()
                );
                refused.reason.push_str(&format!(
                    "; abort attach failed too ({abort_err}): the device stays on {on}"
                ));
            }
        }
        Err(refused)
    }

    /// Attach endpoint `index` to what `ste` needs. A new nested HWPT is
    /// allocated before the old one goes; on failure nothing changed.
    fn attach_ste(&mut self, index: usize, ste: &NestedSte) -> Result<(), BackendError> {
        let (dev_id, device, vsid) = match self.endpoints.get(index) {
            Some(e) => (e.device.dev_id(), e.device.clone(), e.vsid),
            None => return Err(BackendError::new(Errno::NoEnt, "no endpoint")),
        };
        let (target, nested, attached) = match ste.config {
            SteConfig::Abort => (
                self.abort.as_ref().map_or(0, Object::id),
                None,
                Attached::Abort,
            ),
            SteConfig::Bypass => (
                self.bypass.as_ref().map_or(0, Object::id),
                None,
                Attached::Bypass,
            ),
            SteConfig::S1Translate => {
                let object = self.nested_hwpt(dev_id, ste)?;
                (object.id(), Some(object), Attached::Nested)
            }
        };
        device.attach(target)?;
        log::info!(target: "iommufd", "vSID {vsid:#x} -> HWPT {target} ({})", ste.config.name());
        if let Some(endpoint) = self.endpoints.get_mut(index) {
            endpoint.attached = attached;
            // The previous per-device HWPT is unused now: destroy it.
            let old = std::mem::replace(&mut endpoint.nested, nested);
            if let Some(old) = old {
                let _ = old.destroy();
            }
        }
        Ok(())
    }

    /// What `vsid`'s device is attached to, as this vIOMMU attached it:
    /// `parent`, `abort`, `bypass` or `nested`, and that HWPT's id.
    pub fn attachment(&self, vsid: u32) -> Option<(&'static str, u32)> {
        let endpoint = self.endpoints.iter().find(|e| e.vsid == vsid)?;
        let id = |object: &Option<Object>| object.as_ref().map_or(0, Object::id);
        Some(match endpoint.attached {
            Attached::Parent => ("parent", id(&self.parent)),
            Attached::Abort => ("abort", id(&self.abort)),
            Attached::Bypass => ("bypass", id(&self.bypass)),
            Attached::Nested => ("nested", id(&endpoint.nested)),
        })
    }

    /// ONE `IOMMU_HWPT_INVALIDATE` on the vIOMMU for the whole batch; the
    /// kernel's written-back `entry_num` says where a failure stopped it.
    pub fn invalidate(&mut self, commands: &[Command]) -> Result<(), InvalidateError> {
        if commands.is_empty() {
            return Ok(());
        }
        let (data_type, entry_len) = self.flavour.invalidation();
        let mut entries = Vec::with_capacity(commands.len() * entry_len as usize);
        for command in commands {
            self.flavour.encode_invalidation(*command, &mut entries);
        }
        let n = commands.len() as u32;
        let mut arg = iommu_hwpt_invalidate {
            size: size_of::<iommu_hwpt_invalidate>() as u32,
            hwpt_id: self.viommu_id(),
            data_uptr: entries.as_ptr() as u64,
            data_type,
            entry_len,
            entry_num: n,
            __reserved: 0,
        };
        self.counted(Ioctl::HwptInvalidate);
        match self.fd.hwpt_invalidate(&mut arg) {
            Ok(()) if arg.entry_num == n => Ok(()),
            Ok(()) => Err(InvalidateError {
                done: arg.entry_num as usize,
                error: BackendError::new(
                    Errno::Io,
                    format!("the kernel handled {} of {n} invalidations", arg.entry_num),
                ),
            }),
            Err((e, done)) => Err(InvalidateError {
                done: done.min(n) as usize,
                error: e.into(),
            }),
        }
    }

    /// Drain the device-fault vEVENTQ: SMMUv3 records with the vSID in place.
    pub fn poll_smmu_events(&mut self) -> Vec<[u64; 4]> {
        let Some(queue) = self.smmu_events.as_mut() else {
            return Vec::new();
        };
        match queue.read() {
            Ok(payloads) => payloads
                .iter()
                .map(|p| self.flavour.decode_smmu_event(p))
                .collect(),
            Err(e) => {
                log::error!(target: "iommufd", "{e}");
                Vec::new()
            }
        }
    }

    /// True once after the kernel dropped device-fault events.
    pub fn take_smmu_events_lost(&mut self) -> bool {
        self.smmu_events.as_mut().is_some_and(Veventq::take_lost)
    }

    // ---- the CMD-QV's calls ----

    /// `IOMMU_HW_QUEUE_ALLOC(index, nesting_parent_iova = gpa, length = len)`.
    pub fn hw_queue_alloc(&mut self, index: u32, gpa: u64, len: u64) -> Result<(), BackendError> {
        let Some(ty) = self.flavour.hw_queue_type() else {
            return Err(BackendError::new(
                Errno::NotSupported,
                "this vIOMMU has no HW queues",
            ));
        };
        let mut arg = iommu_hw_queue_alloc {
            size: size_of::<iommu_hw_queue_alloc>() as u32,
            flags: 0,
            viommu_id: self.viommu_id(),
            type_: ty,
            index,
            out_hw_queue_id: 0,
            nesting_parent_iova: gpa,
            length: len,
        };
        self.counted(Ioctl::HwQueueAlloc);
        match self.fd.hw_queue_alloc(&mut arg) {
            Ok(id) => {
                self.hw_queues
                    .insert(index, Object::new(self.fd.clone(), id, ObjectKind::HwQueue));
                Ok(())
            }
            Err(e) => {
                let hint = match e.errno() {
                    Some(libc::EFAULT) => {
                        "; the queue's guest memory is not physically contiguous: back guest RAM with --memory ...,hugepages=on"
                    }
                    Some(libc::ENOENT) => "; the queue is not in guest RAM mapped into the IOAS",
                    Some(libc::ENOTTY) => "; this kernel has no HW queues (needs Linux >= 6.17)",
                    _ => "",
                };
                let mut error = BackendError::from(e);
                error.reason.push_str(hint);
                Err(error)
            }
        }
    }

    /// `IOMMU_DESTROY` of HW queue `index`; kept (and EBUSY returned) while
    /// a higher queue depends on it.
    pub fn hw_queue_free(&mut self, index: u32) -> Result<(), BackendError> {
        let Some(queue) = self.hw_queues.get_mut(&index) else {
            return Err(BackendError::new(
                Errno::NoEnt,
                format!("no HW queue at index {index}"),
            ));
        };
        queue.try_destroy()?;
        self.hw_queues.remove(&index);
        Ok(())
    }

    /// Indexes of the HW queues allocated now.
    pub fn hw_queue_indexes(&self) -> Vec<u32> {
        self.hw_queues.keys().copied().collect()
    }

    /// A 32-bit register of the mapped region (0 outside it).
    pub fn region_read(&self, offset: u64) -> u32 {
        self.region
            .as_ref()
            .and_then(|m| m.read_u32(offset))
            .unwrap_or(0)
    }

    /// Write a 32-bit register of the mapped region (ignored outside it).
    pub fn region_write(&self, offset: u64, value: u32) {
        let written = self
            .region
            .as_ref()
            .is_some_and(|m| m.write_u32(offset, value));
        if !written {
            log::debug!(target: "iommufd", "region write at {offset:#x} outside the mapping ignored");
        }
    }

    /// The next CMD-QV error vEVENT: the 128-bit LVCMDQ error map.
    pub fn poll_cmdqv_error(&mut self) -> Option<[u64; 2]> {
        if self.cmdqv_pending.is_empty()
            && let Some(queue) = self.cmdqv_events.as_mut()
        {
            match queue.read() {
                Ok(payloads) => self.cmdqv_pending.extend(
                    payloads
                        .iter()
                        .map(|p| [crate::flavour::le64(p, 0), crate::flavour::le64(p, 8)]),
                ),
                Err(e) => log::error!(target: "iommufd", "{e}"),
            }
        }
        self.cmdqv_pending.pop_front()
    }

    // ---- teardown ----

    /// Release everything in the kernel's dependency order. Idempotent.
    pub fn teardown(&mut self) {
        let id = self.viommu_id();
        // HW queue n depends on n-1: highest index first.
        while let Some((index, queue)) = self.hw_queues.pop_last() {
            log::info!(target: "iommufd", "vIOMMU {id}: HW queue {index} destroyed");
            let _ = queue.destroy();
        }
        // A HWPT a device is attached to cannot be destroyed.
        for endpoint in &mut self.endpoints {
            if let Err(e) = endpoint.device.detach() {
                log::error!(target: "iommufd", "{e}");
            }
            endpoint.attached = Attached::Parent;
        }
        for endpoint in &mut self.endpoints {
            if let Some(nested) = endpoint.nested.take() {
                let _ = nested.destroy();
            }
        }
        for shared in [self.abort.take(), self.bypass.take()]
            .into_iter()
            .flatten()
        {
            let _ = shared.destroy();
        }
        for endpoint in &mut self.endpoints {
            if let Some(vdevice) = endpoint.vdevice.take() {
                let _ = vdevice.destroy();
            }
        }
        for slot in &mut self.sid_slots {
            *slot = None;
        }
        for queue in [self.smmu_events.take(), self.cmdqv_events.take()]
            .into_iter()
            .flatten()
        {
            let _ = queue.close();
        }
        // A live mapping holds the vIOMMU (EBUSY). A memory slot still
        // holding a share keeps it mapped: the destroy below then fails and
        // says so, rather than the guest's slot losing its memory.
        if let Some(region) = self.region.take()
            && Arc::strong_count(&region) > 1
        {
            log::error!(target: "iommufd", "vIOMMU {id}: its region is still shared (a page0 memory slot was not removed); it stays mapped");
        }
        if let Some(viommu) = self.viommu.take() {
            let _ = viommu.destroy();
            log::info!(target: "iommufd", "vIOMMU {id} destroyed");
        }
        if let Some(parent) = self.parent.take() {
            let _ = parent.destroy();
        }
    }
}

impl Drop for Viommu {
    fn drop(&mut self) {
        self.teardown();
    }
}
