//! The VMM's named events, written to `--event-monitor` as cloud-hypervisor
//! does: one JSON object per event,
//!
//! ```json
//! {"timestamp":{"secs":0,"nanos":29228206},"source":"vm","event":"booted","properties":{"boot":"1"}}
//! ```
//!
//! `timestamp` is the time since the VMM started, `source` the component,
//! `event` what happened, `properties` an object of strings (upstream's
//! `HashMap<String, String>`) or `null`. Management software (libvirt's ch
//! driver) and this repository's end-to-end tests read the stream; the log
//! is for people. Every event is named once, in [`Event`]: its source,
//! name and properties come from [`Event::source`], [`Event::name`] and
//! [`Event::properties`], and nowhere else.
//!
//! Upstream's lifecycle events (`vmm`: starting, shutdown; `vm`: booting,
//! booted, pausing, paused, resuming, resumed, rebooting, rebooted,
//! shutdown, deleted) keep upstream's names and order, so libvirt can
//! drive this VMM: it stops a domain on `vm:shutdown` and `vmm:shutdown`.
//! A reboot (the guest's PSCI SYSTEM_RESET or `vm.reboot`) is `rebooting`,
//! the teardown, `booting`, `booted`, `rebooted`, and never `vm:shutdown`.
//! This VMM's own events name what the host did for the vSMMU and its
//! CMD-QV (vIOMMU, vDEVICEs, HW queues, page0, passthrough functions) and
//! the errors the guest was shown. docs/events.md lists them all.
//!
//! Deliberate differences from upstream: each event is one line (upstream
//! pretty-prints over several lines with a blank line between events);
//! libvirt splits the stream at the closing brace of each top-level
//! object, so it reads both, and a line is what `grep`, `awk` and `jq -c`
//! read. libvirt's splitter counts braces without knowing about strings,
//! so no property value may hold `{` or `}`: free text is cleaned by
//! [`Properties`].

pub mod cmdqv;
pub mod monitor;
pub mod vsmmu;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::config::{BackendKind, VsmmuKind};

pub use monitor::{
    EVENT_MONITOR_SYNTAX, EventMonitor, EventMonitorConfig, EventMonitorError, dropped, emit, start,
};

/// One thing that happened, named for the event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `vmm:starting`: the VMM process is up (first event of a stream).
    VmmStarting,
    /// `vmm:shutdown`: the VMM is exiting (last event of a stream).
    VmmShutdown,
    /// `vm:booting`: boot number `boot` of the defined VM begins (1, then
    /// one more after each reboot).
    VmBooting {
        /// Boot number.
        boot: u32,
    },
    /// `vm:booted`: the VM's devices are built and its vCPUs run.
    VmBooted {
        /// Boot number.
        boot: u32,
    },
    /// `vm:pausing`.
    VmPausing,
    /// `vm:paused`: every vCPU parked.
    VmPaused,
    /// `vm:resuming`.
    VmResuming,
    /// `vm:resumed`.
    VmResumed,
    /// `vm:rebooting`: the VM is torn down to be built again.
    VmRebooting {
        /// Who asked.
        cause: RebootCause,
    },
    /// `vm:rebooted`: the rebuilt VM runs (boot number `boot`).
    VmRebooted {
        /// Boot number of the new run.
        boot: u32,
    },
    /// `vm:shutdown`: the VM stopped and its teardown is done.
    VmShutdown {
        /// Why it stopped.
        reason: ShutdownReason,
    },
    /// `vm:deleted`: `vm.delete` dropped the VM's definition.
    VmDeleted,
    /// `vm:counters`: one device's `vm.counters` when its VM stopped
    /// (after the vCPUs, before the teardown), one event per device.
    VmCounters {
        /// The device's name in `vm.counters` (`vsmmu0`, `cmdqv0`, `uart`).
        device: String,
        /// Its counters, named as in `vm.counters`.
        counters: BTreeMap<String, u64>,
    },
    /// `vsmmu:viommu-ready`: a vSMMU's host side exists (with iommufd: the
    /// vIOMMU and every vDEVICE of the functions behind it).
    ViommuReady {
        /// vSMMU index (`vsmmu<N>` in the counters).
        vsmmu: u32,
        /// smmuv3 or cmdqv.
        kind: VsmmuKind,
        /// iommufd or emulated.
        backend: BackendKind,
        /// The host vIOMMU object id (iommufd only).
        viommu_id: Option<u32>,
        /// vDEVICEs (endpoints) behind it.
        vdevices: usize,
    },
    /// `vsmmu:viommu-released`: the host vIOMMU and its objects are gone.
    ViommuReleased {
        /// vSMMU index.
        vsmmu: u32,
    },
    /// `vsmmu:vdevice`: an endpoint behind a vSMMU has its vDEVICE
    /// (`IOMMU_VDEVICE_ALLOC`), seen by the guest as `vsid`.
    Vdevice {
        /// vSMMU index.
        vsmmu: u32,
        /// The device's id (`--device id=`, `--test-device id=`).
        device: String,
        /// The StreamID the guest sees.
        vsid: u32,
    },
    /// `vsmmu:ste-installed`: the host now translates `vsid` as the guest's
    /// STE says (iommufd: a nested HWPT allocated and attached).
    SteInstalled {
        /// vSMMU index.
        vsmmu: u32,
        /// The StreamID the guest sees.
        vsid: u32,
        /// `abort`, `bypass` or `translate` (stage 1 nested on stage 2).
        config: &'static str,
    },
    /// `cmdqv:hw-queue-alloc`: `IOMMU_HW_QUEUE_ALLOC` for LVCMDQ `index`.
    HwQueueAlloc {
        /// CMD-QV index (that of its vSMMU).
        cmdqv: u32,
        /// LVCMDQ index.
        index: u32,
        /// Guest physical base of the queue.
        gpa: u64,
        /// Queue length in bytes.
        length: u64,
    },
    /// `cmdqv:hw-queue-free`: the HW queue of LVCMDQ `index` was freed.
    HwQueueFree {
        /// CMD-QV index.
        cmdqv: u32,
        /// LVCMDQ index.
        index: u32,
        /// Guest physical base it had.
        gpa: u64,
        /// Its length in bytes.
        length: u64,
    },
    /// `cmdqv:page0-mapped`: the host VINTF page0 is a guest memory slot.
    Page0Mapped {
        /// CMD-QV index.
        cmdqv: u32,
        /// Guest physical address of the slot.
        gpa: u64,
        /// Its size in bytes.
        length: u64,
    },
    /// `cmdqv:page0-unmapped`: that slot left the guest.
    Page0Unmapped {
        /// CMD-QV index.
        cmdqv: u32,
        /// Guest physical address of the slot.
        gpa: u64,
    },
    /// `vfio:device-bound`: a passthrough function is bound to iommufd and
    /// placed on the guest's PCI bus.
    DeviceBound {
        /// Its id.
        id: String,
        /// Its host sysfs path (or VFIO cdev).
        path: String,
        /// Where the guest sees it, `SSSS:BB:DD.F`.
        guest_bdf: String,
        /// The vSMMU it sits behind; `None` for `iommu=off`.
        vsmmu: Option<u32>,
    },
    /// `vfio:device-released`: the function was reset and handed back.
    DeviceReleased {
        /// Its id.
        id: String,
        /// Its host sysfs path.
        path: String,
    },
    /// `vsmmu:guest-error` or `cmdqv:guest-error`: an error the guest is
    /// shown in a register, a queue or an event record.
    GuestError {
        /// Which device shows it (`vsmmu<N>`, `cmdqv<N>`).
        device: GuestErrorDevice,
        /// The architecture's name: `CERROR_ILL`, `C_BAD_STE`, ...
        kind: String,
        /// The LVCMDQ in error (CMD-QV queue errors).
        queue: Option<u32>,
        /// The StreamID the error is about (SMMU events).
        vsid: Option<u32>,
        /// The address it is about (a translation fault's input address).
        address: Option<u64>,
    },
}

/// A device model's guest-error listener that emits `guest-error` events
/// for `device`.
pub fn guest_error_listener(device: GuestErrorDevice) -> devices::guest_error::GuestErrorListener {
    Box::new(move |error| {
        emit(Event::GuestError {
            device,
            kind: error.kind.to_string(),
            queue: error.queue,
            vsid: error.vsid,
            address: None,
        })
    })
}

/// Who asked for a reboot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebootCause {
    /// The guest (PSCI SYSTEM_RESET).
    Guest,
    /// `vm.reboot`.
    Api,
}

/// Why the VM stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    /// The guest powered off (PSCI SYSTEM_OFF).
    PowerOff,
    /// `vm.shutdown`, `vm.delete` or `vmm.shutdown`.
    Api,
    /// SIGTERM or SIGINT.
    Signal(i32),
    /// A vCPU or the VMM failed; the text says how.
    Failed(String),
}

/// The device an error is shown by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestErrorDevice {
    /// vSMMU `n`.
    Vsmmu(u32),
    /// CMD-QV `n`.
    Cmdqv(u32),
}

/// Every event name with its source, as the stream spells them
/// (`source:event`); docs/events.md documents each.
pub const NAMES: &[&str] = &[
    "vmm:starting",
    "vmm:shutdown",
    "vm:booting",
    "vm:booted",
    "vm:pausing",
    "vm:paused",
    "vm:resuming",
    "vm:resumed",
    "vm:rebooting",
    "vm:rebooted",
    "vm:shutdown",
    "vm:deleted",
    "vm:counters",
    "vsmmu:viommu-ready",
    "vsmmu:viommu-released",
    "vsmmu:vdevice",
    "vsmmu:ste-installed",
    "vsmmu:guest-error",
    "cmdqv:hw-queue-alloc",
    "cmdqv:hw-queue-free",
    "cmdqv:page0-mapped",
    "cmdqv:page0-unmapped",
    "cmdqv:guest-error",
    "vfio:device-bound",
    "vfio:device-released",
];

impl Event {
    /// The component the event comes from (upstream's `source`).
    pub fn source(&self) -> &'static str {
        match self {
            Event::VmmStarting | Event::VmmShutdown => "vmm",
            Event::VmBooting { .. }
            | Event::VmBooted { .. }
            | Event::VmPausing
            | Event::VmPaused
            | Event::VmResuming
            | Event::VmResumed
            | Event::VmRebooting { .. }
            | Event::VmRebooted { .. }
            | Event::VmShutdown { .. }
            | Event::VmDeleted
            | Event::VmCounters { .. } => "vm",
            Event::ViommuReady { .. }
            | Event::ViommuReleased { .. }
            | Event::Vdevice { .. }
            | Event::SteInstalled { .. } => "vsmmu",
            Event::HwQueueAlloc { .. }
            | Event::HwQueueFree { .. }
            | Event::Page0Mapped { .. }
            | Event::Page0Unmapped { .. } => "cmdqv",
            Event::DeviceBound { .. } | Event::DeviceReleased { .. } => "vfio",
            Event::GuestError { device, .. } => match device {
                GuestErrorDevice::Vsmmu(_) => "vsmmu",
                GuestErrorDevice::Cmdqv(_) => "cmdqv",
            },
        }
    }

    /// The event's name (upstream's `event`).
    pub fn name(&self) -> &'static str {
        match self {
            Event::VmmStarting => "starting",
            Event::VmmShutdown => "shutdown",
            Event::VmBooting { .. } => "booting",
            Event::VmBooted { .. } => "booted",
            Event::VmPausing => "pausing",
            Event::VmPaused => "paused",
            Event::VmResuming => "resuming",
            Event::VmResumed => "resumed",
            Event::VmRebooting { .. } => "rebooting",
            Event::VmRebooted { .. } => "rebooted",
            Event::VmShutdown { .. } => "shutdown",
            Event::VmDeleted => "deleted",
            Event::VmCounters { .. } => "counters",
            Event::ViommuReady { .. } => "viommu-ready",
            Event::ViommuReleased { .. } => "viommu-released",
            Event::Vdevice { .. } => "vdevice",
            Event::SteInstalled { .. } => "ste-installed",
            Event::HwQueueAlloc { .. } => "hw-queue-alloc",
            Event::HwQueueFree { .. } => "hw-queue-free",
            Event::Page0Mapped { .. } => "page0-mapped",
            Event::Page0Unmapped { .. } => "page0-unmapped",
            Event::DeviceBound { .. } => "device-bound",
            Event::DeviceReleased { .. } => "device-released",
            Event::GuestError { .. } => "guest-error",
        }
    }

    /// The event's properties; `None` for an event that has none (upstream
    /// writes `null` then). Numbers are decimal, addresses and StreamIDs
    /// `0x` hex, device names those of `vm.counters` (`vsmmu0`, `cmdqv0`).
    pub fn properties(&self) -> Option<Properties> {
        let mut p = Properties::default();
        match self {
            Event::VmmStarting
            | Event::VmmShutdown
            | Event::VmPausing
            | Event::VmPaused
            | Event::VmResuming
            | Event::VmResumed
            | Event::VmDeleted => return None,
            Event::VmBooting { boot } | Event::VmBooted { boot } | Event::VmRebooted { boot } => {
                p.dec("boot", *boot);
            }
            Event::VmRebooting { cause } => {
                p.text(
                    "cause",
                    match cause {
                        RebootCause::Guest => "guest",
                        RebootCause::Api => "api",
                    },
                );
            }
            Event::VmShutdown { reason } => match reason {
                ShutdownReason::PowerOff => p.text("reason", "poweroff"),
                ShutdownReason::Api => p.text("reason", "api"),
                ShutdownReason::Signal(signal) => {
                    p.text("reason", "signal");
                    p.dec("signal", *signal);
                }
                ShutdownReason::Failed(why) => {
                    p.text("reason", "failed");
                    p.text("error", why);
                }
            },
            Event::ViommuReady {
                vsmmu,
                kind,
                backend,
                viommu_id,
                vdevices,
            } => {
                p.text("id", &format!("vsmmu{vsmmu}"));
                p.text(
                    "kind",
                    match kind {
                        VsmmuKind::Off => "off",
                        VsmmuKind::Smmuv3 => "smmuv3",
                        VsmmuKind::Cmdqv => "cmdqv",
                    },
                );
                p.text(
                    "backend",
                    match backend {
                        BackendKind::Iommufd => "iommufd",
                        BackendKind::Emulated => "emulated",
                    },
                );
                if let Some(id) = viommu_id {
                    p.dec("viommu", *id);
                }
                p.dec("vdevices", *vdevices);
            }
            Event::VmCounters { device, counters } => {
                p.text("id", device);
                for (name, value) in counters {
                    if name != "id" {
                        p.0.insert(name.clone(), value.to_string());
                    }
                }
            }
            Event::ViommuReleased { vsmmu } => p.text("id", &format!("vsmmu{vsmmu}")),
            Event::Vdevice {
                vsmmu,
                device,
                vsid,
            } => {
                p.text("id", &format!("vsmmu{vsmmu}"));
                p.text("device", device);
                p.hex("vsid", u64::from(*vsid));
            }
            Event::SteInstalled {
                vsmmu,
                vsid,
                config,
            } => {
                p.text("id", &format!("vsmmu{vsmmu}"));
                p.hex("vsid", u64::from(*vsid));
                p.text("config", config);
            }
            Event::HwQueueAlloc {
                cmdqv,
                index,
                gpa,
                length,
            }
            | Event::HwQueueFree {
                cmdqv,
                index,
                gpa,
                length,
            } => {
                p.text("id", &format!("cmdqv{cmdqv}"));
                p.dec("index", *index);
                p.hex("gpa", *gpa);
                p.dec("length", *length);
            }
            Event::Page0Mapped { cmdqv, gpa, length } => {
                p.text("id", &format!("cmdqv{cmdqv}"));
                p.hex("gpa", *gpa);
                p.dec("length", *length);
            }
            Event::Page0Unmapped { cmdqv, gpa } => {
                p.text("id", &format!("cmdqv{cmdqv}"));
                p.hex("gpa", *gpa);
            }
            Event::DeviceBound {
                id,
                path,
                guest_bdf,
                vsmmu,
            } => {
                p.text("id", id);
                p.text("path", path);
                p.text("guest_bdf", guest_bdf);
                match vsmmu {
                    Some(index) => p.text("iommu", &format!("vsmmu{index}")),
                    None => p.text("iommu", "off"),
                }
            }
            Event::DeviceReleased { id, path } => {
                p.text("id", id);
                p.text("path", path);
            }
            Event::GuestError {
                device,
                kind,
                queue,
                vsid,
                address,
            } => {
                p.text(
                    "id",
                    &match device {
                        GuestErrorDevice::Vsmmu(n) => format!("vsmmu{n}"),
                        GuestErrorDevice::Cmdqv(n) => format!("cmdqv{n}"),
                    },
                );
                p.text("kind", kind);
                if let Some(queue) = queue {
                    p.dec("queue", *queue);
                }
                if let Some(vsid) = vsid {
                    p.hex("vsid", u64::from(*vsid));
                }
                if let Some(address) = address {
                    p.hex("address", *address);
                }
            }
        }
        Some(p)
    }

    /// The event as one line of the stream (no newline), `elapsed` after
    /// the VMM started.
    pub fn to_line(&self, elapsed: Duration) -> String {
        let record = Record {
            timestamp: elapsed,
            source: self.source(),
            event: self.name(),
            properties: self.properties().map(|p| p.0),
        };
        // A record of strings and integers always serialises; the fallback
        // keeps the stream one object per line whatever happens.
        serde_json::to_string(&record).unwrap_or_else(|_| {
            format!(
                "{{\"timestamp\":{{\"secs\":{},\"nanos\":{}}},\"source\":\"{}\",\"event\":\"{}\",\"properties\":null}}",
                elapsed.as_secs(),
                elapsed.subsec_nanos(),
                self.source(),
                self.name()
            )
        })
    }
}

/// Upstream's record: `timestamp` serialises as serde's `Duration`
/// (`{"secs": N, "nanos": N}`), `properties` as an object of strings or
/// `null`.
#[derive(Serialize)]
struct Record {
    timestamp: Duration,
    source: &'static str,
    event: &'static str,
    properties: Option<BTreeMap<String, String>>,
}

/// Longest property value: with a handful of properties an event stays
/// far below PIPE_BUF (4096), so a write to a pipe is all or nothing.
const MAX_VALUE_LEN: usize = 256;

/// An event's properties: upstream's map of strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties(BTreeMap<String, String>);

impl Properties {
    /// A free-text value: braces become parentheses (libvirt's splitter
    /// counts braces, strings or not) and it is cut to [`MAX_VALUE_LEN`].
    fn text(&mut self, key: &'static str, value: &str) {
        let clean: String = value
            .chars()
            .map(|c| match c {
                '{' => '(',
                '}' => ')',
                c => c,
            })
            .take(MAX_VALUE_LEN)
            .collect();
        self.0.insert(key.to_string(), clean);
    }

    fn dec(&mut self, key: &'static str, value: impl ToString) {
        self.0.insert(key.to_string(), value.to_string());
    }

    fn hex(&mut self, key: &'static str, value: u64) {
        self.0.insert(key.to_string(), format!("{value:#x}"));
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

#[cfg(test)]
mod tests;
