//! The VMM thread: owns the VM's life cycle (created, running, paused,
//! shut down), sleeps in the [`EventLoop`] until a signal, the API, or the
//! VM itself needs it, and answers the control API.
//!
//! Every way out of a running VM goes through [`RunningVm::stop`], the one
//! teardown (page0 out of the guest, HW queues freed descending, vIOMMU
//! objects released): the guest powering off or resetting, SIGTERM/SIGINT,
//! `vm.shutdown`, `vm.reboot`, `vm.delete` and `vmm.shutdown`.
//!
//! What this VMM refuses through the API, and why: device hot-plug (not
//! implemented; for a device behind a vSMMU it cannot be, since its
//! vDEVICE, nested HWPT and CMD-QV SID slot are fixed at boot), snapshot
//! and migration (a vSMMU holds host state that cannot be saved), and the
//! power button (the platform has none).

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::register_signal_handler;

use crate::api::placement::ApiPlacement;
use crate::api::types::{VmInfoResponse, VmState, VmmPingResponse, shown_config};
use crate::api::{ApiError, ApiRequest, ApiResponse, Needs, Unimplemented, VmmEnd};
use crate::config::{DeviceConfig, VmConfig, VsmmuKind};
use crate::description::VmDescription;
use crate::event_loop::EventLoop;
use crate::events::{self, Event as Named, RebootCause, ShutdownReason};
use crate::exit::{VmExit, VmFailure};
use crate::host_topology::HostTopology;
use crate::serial_backend::SerialBackend;

mod requests;

/// SID slots of the CMD-QV a VM sees (PARAM.NUM_SID_PER_VM_LOG2 = 4), the
/// number QEMU exposes too; a host with fewer lowers it at run time.
pub const CMDQV_SID_SLOTS: usize = 16;

/// How often host-side events are collected from a backend that has no fd
/// to wait on (an emulated backend whose eventfd could not be made). The
/// iommufd backend's vEVENTQ fds and the emulated backend's eventfd are
/// registered in the event loop instead and wake it when readable.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

#[cfg(target_arch = "aarch64")]
use crate::vm::RunningVm;

/// Stand-in where KVM for aarch64 is not available: it never starts, so
/// the API serves everything that needs no running VM.
#[cfg(not(target_arch = "aarch64"))]
mod no_kvm {
    use super::{ApiError, EventFd, VmDescription, VmExit};
    use crate::counters::VmCounters;

    /// Uninhabited: no VM ever runs in this build.
    pub enum RunningVm {}

    impl RunningVm {
        pub fn start(
            _: &VmDescription,
            _: EventFd,
            _: Option<std::sync::Arc<crate::serial_backend::SerialBackend>>,
            _: Option<std::sync::Arc<crate::pty::Pty>>,
        ) -> Result<Self, ApiError> {
            Err(ApiError::BootUnsupported)
        }
        pub fn stop_requested(&self) -> bool {
            match *self {}
        }
        pub fn stop_reason(&self) -> Option<VmExit> {
            match *self {}
        }
        pub fn paused(&self) -> bool {
            match *self {}
        }
        pub fn poll_devices(&self) {
            match *self {}
        }
        pub fn polled(&self) -> bool {
            match *self {}
        }
        pub fn host_event_fds(&self) -> Vec<std::os::fd::RawFd> {
            match *self {}
        }
        pub fn counters(&self) -> VmCounters {
            match *self {}
        }
        pub fn pause(&mut self) -> Result<(), ApiError> {
            match *self {}
        }
        pub fn resume(&mut self) {
            match *self {}
        }
        pub fn stop(self, _: VmExit) -> VmExit {
            match self {}
        }
    }
}
#[cfg(not(target_arch = "aarch64"))]
use no_kvm::RunningVm;

/// The signal that asked the VMM to stop (0: none yet).
static TERMINATE_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Written by the SIGTERM/SIGINT handler: wakes the event loop.
static TERMINATE_EVT: OnceLock<EventFd> = OnceLock::new();

extern "C" fn terminate_handler(
    signal: libc::c_int,
    _: *mut libc::siginfo_t,
    _: *mut libc::c_void,
) {
    TERMINATE_SIGNAL.store(signal, Ordering::SeqCst);
    // Only write(2) on an eventfd made before the handler was installed:
    // async-signal-safe.
    if let Some(evt) = TERMINATE_EVT.get() {
        let _ = evt.write(1);
    }
}

/// What woke the VMM thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// SIGTERM or SIGINT.
    Terminate,
    /// A request from the API thread.
    Api,
    /// The guest or a vCPU asked the VM to stop.
    VmStopped,
    /// A host vEVENTQ (or the emulated backend's eventfd) has events for
    /// the guest.
    HostEvents,
}

/// Where the VMM thread is going next, after a request.
#[derive(PartialEq, Eq)]
enum Next {
    Continue,
    Exit,
}

/// Where the VM is.
enum Vm {
    /// Nothing defined yet (`--api-socket` alone).
    None,
    /// Defined; not running (never booted, or shut down).
    Defined {
        description: Box<VmDescription>,
        shut_down: bool,
    },
    /// Running or paused.
    Running {
        description: Box<VmDescription>,
        vm: Box<RunningVm>,
        boots: u32,
    },
}

/// Why the VMM errs when it stops.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// Setting up the event loop or signals.
    #[error("cannot set up the VMM thread: {0}")]
    Setup(io::Error),
    /// The VM stopped with an error, or a signal ended the VMM.
    #[error("{0}")]
    Vm(String),
}

/// The VMM thread's state.
pub struct Vmm {
    events: EventLoop<Event>,
    terminate: &'static EventFd,
    stopped: EventFd,
    api: Option<VmmEnd>,
    vm: Vm,
    /// The running VM's vEVENTQ fds, registered with `events`.
    host_fds: Vec<std::os::fd::RawFd>,
    /// The VmConfig body `vm.create` was given (`vm.info` shows its fields
    /// back, the ones this VMM parses normalised).
    given_config: Option<serde_json::Value>,
    /// The serial console's pty or socket (modes Pty and Socket), for the
    /// VM's definition.
    serial: Option<Arc<SerialBackend>>,
    /// `--vsmmu` given with `--api-socket` alone: the vSMMU of a VM whose
    /// `vm.create` body names none (see [`requests::apply_vsmmu_default`]).
    vsmmu_default: Option<crate::config::VsmmuConfig>,
    /// The virtio-console's pty (console mode Pty), for the VM's
    /// definition: `vm.info` names it in `config.console.file`.
    console_pty: Option<Arc<crate::pty::Pty>>,
    /// The taps `vm.add-net` brought (SCM_RIGHTS), held open for the VM's
    /// definition: its `net[].fds` name them, and each boot attaches to a
    /// duplicate.
    net_fds: Vec<std::os::fd::OwnedFd>,
}

impl Vmm {
    /// A VMM with no VM, answering `api` if given. Installs the
    /// SIGTERM/SIGINT handlers.
    pub fn new(api: Option<VmmEnd>) -> Result<Self, VmmError> {
        let terminate = match TERMINATE_EVT.get() {
            Some(evt) => evt,
            None => {
                let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(VmmError::Setup)?;
                TERMINATE_EVT.get_or_init(|| evt)
            }
        };
        for signal in [libc::SIGTERM, libc::SIGINT] {
            register_signal_handler(signal, terminate_handler)
                .map_err(|e| VmmError::Setup(io::Error::from_raw_os_error(e.errno())))?;
        }
        let stopped = EventFd::new(libc::EFD_NONBLOCK).map_err(VmmError::Setup)?;
        let mut events = EventLoop::new().map_err(VmmError::Setup)?;
        events
            .add(terminate, Event::Terminate)
            .map_err(VmmError::Setup)?;
        events
            .add(&stopped, Event::VmStopped)
            .map_err(VmmError::Setup)?;
        if let Some(api) = &api {
            events
                .add(&api.request_evt, Event::Api)
                .map_err(VmmError::Setup)?;
        }
        Ok(Vmm {
            events,
            terminate,
            stopped,
            api,
            vm: Vm::None,
            host_fds: Vec::new(),
            given_config: None,
            serial: None,
            vsmmu_default: None,
            console_pty: None,
            net_fds: Vec::new(),
        })
    }

    /// The vSMMU for `vm.create` bodies that name none (`--vsmmu` beside
    /// `--api-socket` alone); `off` sets none.
    pub fn set_vsmmu_default(&mut self, vsmmu: crate::config::VsmmuConfig) {
        self.vsmmu_default = (vsmmu.kind != VsmmuKind::Off).then_some(vsmmu);
    }

    /// Define the VM (`vm.create`, or the command line).
    pub fn create(&mut self, config: VmConfig) -> Result<(), ApiError> {
        if !matches!(self.vm, Vm::None) {
            return Err(ApiError::VmAlreadyCreated);
        }
        config.validate(true)?;
        crate::virtio::check_images(&config).map_err(|e| ApiError::InvalidConfig(e.to_string()))?;
        crate::virtio::check_vsock(config.vsock.as_ref())
            .map_err(|e| ApiError::InvalidConfig(e.to_string()))?;
        let description = describe(config)?;
        self.serial = SerialBackend::open(&description.config.serial)
            .map_err(ApiError::Serial)?
            .map(Arc::new);
        self.console_pty = match description.config.console {
            crate::config::virtio::ConsoleConfig::Pty => {
                Some(Arc::new(crate::pty::Pty::open().map_err(|e| {
                    ApiError::InvalidConfig(format!("console: cannot open a pty: {e}"))
                })?))
            }
            _ => None,
        };
        self.given_config = None;
        self.net_fds.clear();
        self.vm = Vm::Defined {
            description: Box::new(description),
            shut_down: false,
        };
        Ok(())
    }

    /// Boot the defined VM (`vm.boot`, or the command line).
    pub fn boot(&mut self) -> Result<(), ApiError> {
        match std::mem::replace(&mut self.vm, Vm::None) {
            Vm::None => Err(ApiError::VmNotCreated),
            running @ Vm::Running { .. } => {
                self.vm = running;
                Err(ApiError::WrongState {
                    action: "boot",
                    state: "running",
                    fix: "PUT vm.shutdown first, or vm.reboot",
                })
            }
            Vm::Defined {
                description,
                shut_down,
            } => self.launch(description, 1, shut_down),
        }
    }

    /// Start boot number `boot` of `description`: the VM is running
    /// after, or defined again (`shut_down` as given) with the error.
    fn launch(
        &mut self,
        description: Box<VmDescription>,
        boot: u32,
        shut_down: bool,
    ) -> Result<(), ApiError> {
        match self.start(&description, boot) {
            Ok(vm) => {
                self.vm = Vm::Running {
                    description,
                    vm: Box::new(vm),
                    boots: boot,
                };
                Ok(())
            }
            Err(err) => {
                self.vm = Vm::Defined {
                    description,
                    shut_down,
                };
                Err(err)
            }
        }
    }

    fn start(&mut self, description: &VmDescription, boot: u32) -> Result<RunningVm, ApiError> {
        let stopped = self
            .stopped
            .try_clone()
            .map_err(|e| ApiError::BootFailed(e.to_string()))?;
        // Drain a stop notice of the VM before, if any.
        let _ = self.stopped.read();
        log::info!(target: "vmm", "booting the VM (boot {boot})");
        events::emit(Named::VmBooting { boot });
        // A host that cannot back the vSMMU is told before anything is built.
        crate::host_backend::preflight(&description.config)
            .map_err(|e| ApiError::Host(e.to_string()))?;
        let serial = self.serial.clone();
        let console_pty = self.console_pty.clone();
        #[cfg(target_arch = "aarch64")]
        let vm = RunningVm::start(description, stopped, serial, console_pty)
            .map_err(|e| ApiError::BootFailed(e.to_string()));
        #[cfg(not(target_arch = "aarch64"))]
        let vm = RunningVm::start(description, stopped, serial, console_pty);
        let vm = vm?;
        events::emit(Named::VmBooted { boot });
        // The host's vEVENTQs (or the emulated backend's eventfd) wake the
        // loop; nothing polls them.
        for fd in vm.host_event_fds() {
            match self.events.add(&fd, Event::HostEvents) {
                Ok(()) => self.host_fds.push(fd),
                Err(e) => log::error!(target: "vmm", "vEVENTQ fd {fd} not watched: {e}"),
            }
        }
        Ok(vm)
    }

    /// Stop `vm` for `why`, its vEVENTQ fds leaving the loop first.
    fn stop_running(&mut self, vm: RunningVm, why: VmExit) -> VmExit {
        for fd in std::mem::take(&mut self.host_fds) {
            let _ = self.events.remove(&fd);
        }
        vm.stop(why)
    }

    /// Run until the VM powers off (Ok), fails or a signal ends the VMM
    /// (Err), or `vmm.shutdown` (Ok).
    pub fn run(mut self) -> Result<(), VmmError> {
        loop {
            // Only a backend with no fd to wait on (emulated) is polled.
            let polled = matches!(&self.vm, Vm::Running { vm, .. } if !vm.paused() && vm.polled());
            let ready = self
                .events
                .wait(polled.then_some(POLL_INTERVAL))
                .map_err(VmmError::Setup)?;
            for event in ready {
                match event {
                    Event::Terminate => {
                        let _ = self.terminate.read();
                        let signal = TERMINATE_SIGNAL.load(Ordering::SeqCst);
                        let why = VmFailure::Signal(signal);
                        self.stop_vm(VmExit::Failed(why.clone()), ShutdownReason::Signal(signal));
                        return Err(VmmError::Vm(why.to_string()));
                    }
                    Event::VmStopped => {
                        let _ = self.stopped.read();
                        if let Some(result) = self.vm_stopped() {
                            return result;
                        }
                    }
                    Event::Api => {
                        if self.serve_api() == Next::Exit {
                            return Ok(());
                        }
                    }
                    // Drained even while paused: the loop is level-triggered.
                    Event::HostEvents => {
                        if let Vm::Running { vm, .. } = &self.vm {
                            vm.poll_devices();
                        }
                    }
                }
            }
            if let Vm::Running { vm, .. } = &self.vm {
                if !vm.paused() {
                    vm.poll_devices();
                }
            }
        }
    }

    /// The guest (or a vCPU) stopped the VM: tear it down; a reset boots
    /// it again. `Some` when the VMM is done.
    fn vm_stopped(&mut self) -> Option<Result<(), VmmError>> {
        let Vm::Running { vm, .. } = &self.vm else {
            return None;
        };
        if !vm.stop_requested() {
            return None;
        }
        let reset = vm.stop_reason() == Some(VmExit::Reset);
        let (description, vm, boots) = self.take_running()?;
        if reset {
            events::emit(Named::VmRebooting {
                cause: RebootCause::Guest,
            });
        }
        match self.stop_running(vm, VmExit::Failed(VmFailure::Stopped)) {
            VmExit::PowerOff => {
                log::info!(target: "vmm", "guest powered off after {boots} boot(s)");
                events::emit(Named::VmShutdown {
                    reason: ShutdownReason::PowerOff,
                });
                Some(Ok(()))
            }
            VmExit::Reset => {
                log::info!(target: "vmm", "guest reset: rebuilding the VM (boot {})", boots + 1);
                match self.launch(description, boots + 1, true) {
                    Ok(()) => {
                        events::emit(Named::VmRebooted { boot: boots + 1 });
                        None
                    }
                    Err(err) => Some(Err(VmmError::Vm(err.to_string()))),
                }
            }
            VmExit::Shutdown => {
                events::emit(Named::VmShutdown {
                    reason: ShutdownReason::Api,
                });
                Some(Ok(()))
            }
            VmExit::Failed(why) => {
                events::emit(Named::VmShutdown {
                    reason: ShutdownReason::Failed(why.to_string()),
                });
                Some(Err(VmmError::Vm(why.to_string())))
            }
        }
    }

    /// Take the running VM out of `self.vm` (left `Vm::None`); `None`, and
    /// `self.vm` untouched, when no VM is running.
    fn take_running(&mut self) -> Option<(Box<VmDescription>, RunningVm, u32)> {
        if !matches!(self.vm, Vm::Running { .. }) {
            return None;
        }
        match std::mem::replace(&mut self.vm, Vm::None) {
            Vm::Running {
                description,
                vm,
                boots,
            } => Some((description, *vm, boots)),
            other => {
                self.vm = other;
                None
            }
        }
    }

    /// Tear the running VM down for `why` (the event names `reason`,
    /// unless the guest powered off first); it stays defined, shut down.
    fn stop_vm(&mut self, why: VmExit, reason: ShutdownReason) {
        if let Some((description, vm, _)) = self.take_running() {
            let reason = match self.stop_running(vm, why) {
                VmExit::PowerOff => ShutdownReason::PowerOff,
                _ => reason,
            };
            events::emit(Named::VmShutdown { reason });
            self.vm = Vm::Defined {
                description,
                shut_down: true,
            };
        }
    }
}

/// Lay `config` out on this host, whose shape is read once here: the page
/// size and, for a vSMMU on backend=iommufd, each function's host SMMU from
/// sysfs (after /dev/iommu is found to open, so a host without iommufd is
/// told that first).
pub fn describe(config: VmConfig) -> Result<VmDescription, ApiError> {
    use crate::config::{BackendKind, VsmmuKind};
    if config.vsmmu.kind != VsmmuKind::Off && config.vsmmu.backend == BackendKind::Iommufd {
        crate::host_backend::preflight(&config).map_err(|e| ApiError::Host(e.to_string()))?;
    }
    let host = HostTopology::read(&config).map_err(|e| ApiError::InvalidConfig(e.to_string()))?;
    Ok(VmDescription::new(config, &host, CMDQV_SID_SLOTS)?)
}

#[cfg(test)]
mod tests;
