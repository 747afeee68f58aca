//! The control API's requests as the VMM thread answers them: what each
//! needs (no VM, a created one, a running one), and the refusals with their
//! reasons (see the parent module's doc).

use std::os::fd::{AsRawFd, OwnedFd};

use virtio_devices::net::Tap;

use super::*;
use crate::config::net::NetConfig;

impl Vmm {
    pub(super) fn serve_api(&mut self) -> Next {
        let Some(api) = self.api.take() else {
            return Next::Continue;
        };
        let _ = api.request_evt.read();
        let mut next = Next::Continue;
        while let Ok(request) = api.requests.try_recv() {
            log::info!(target: "api", "request: {request:?}");
            let (response, then) = self.handle(request);
            api.reply(response);
            if then == Next::Exit {
                next = Next::Exit;
                break;
            }
        }
        self.api = Some(api);
        next
    }

    /// Carry out one API request. Each either completes or changes nothing.
    pub(super) fn handle(&mut self, request: ApiRequest) -> (ApiResponse, Next) {
        let response = match request {
            ApiRequest::VmmPing => json(&VmmPingResponse {
                build_version: crate::api::BUILD_VERSION.into(),
                version: crate::api::CH_API_VERSION.into(),
                pid: i64::from(std::process::id()),
                features: Vec::new(),
            }),
            ApiRequest::VmmShutdown => {
                self.stop_vm(VmExit::Shutdown, ShutdownReason::Api);
                log::info!(target: "vmm", "VMM shut down through the API");
                return (Ok(None), Next::Exit);
            }
            ApiRequest::VmCreate(mut config, given) => {
                if let Some(default) = &self.vsmmu_default {
                    apply_vsmmu_default(&mut config, &given, default);
                }
                self.create(*config).map(|()| {
                    self.given_config = Some(*given);
                    None
                })
            }
            ApiRequest::VmBoot => self.boot().map(|()| None),
            ApiRequest::VmDelete => {
                self.stop_vm(VmExit::Shutdown, ShutdownReason::Api);
                match self.vm {
                    Vm::None => Err(ApiError::VmNotCreated),
                    _ => {
                        self.vm = Vm::None;
                        self.given_config = None;
                        self.serial = None;
                        self.console_pty = None;
                        self.net_fds.clear();
                        events::emit(Named::VmDeleted);
                        Ok(None)
                    }
                }
            }
            ApiRequest::VmInfo => self.info(),
            ApiRequest::VmCounters => match &self.vm {
                Vm::Running { vm, .. } => json(&vm.counters()),
                other => Err(not_running(other, "read counters")),
            },
            ApiRequest::VmPause => match &mut self.vm {
                Vm::Running { vm, .. } if vm.paused() => Err(ApiError::WrongState {
                    action: "pause",
                    state: "paused",
                    fix: "PUT vm.resume to run it",
                }),
                Vm::Running { vm, .. } => {
                    events::emit(Named::VmPausing);
                    vm.pause()
                        .map(|()| events::emit(Named::VmPaused))
                        .map(|()| None)
                        .map_err(|e| ApiError::PauseFailed(e.to_string()))
                }
                other => Err(not_running(other, "pause")),
            },
            ApiRequest::VmResume => match &mut self.vm {
                Vm::Running { vm, .. } if vm.paused() => {
                    events::emit(Named::VmResuming);
                    vm.resume();
                    events::emit(Named::VmResumed);
                    Ok(None)
                }
                Vm::Running { .. } => Err(ApiError::WrongState {
                    action: "resume",
                    state: "running",
                    fix: "only a paused VM resumes (PUT vm.pause first)",
                }),
                other => Err(not_running(other, "resume")),
            },
            ApiRequest::VmReboot => self.reboot(),
            ApiRequest::VmShutdown => match &self.vm {
                Vm::Running { .. } => {
                    self.stop_vm(VmExit::Shutdown, ShutdownReason::Api);
                    Ok(None)
                }
                other => Err(not_running(other, "shut down")),
            },
            ApiRequest::VmPowerButton => match &self.vm {
                Vm::Running { .. } => Err(ApiError::NoPowerButton),
                other => Err(not_running(other, "press the power button")),
            },
            ApiRequest::VmAddDevice(device) => self.add_device(device),
            ApiRequest::VmAddNet(net, fds) => self.add_net(*net, fds),
            ApiRequest::VmRemoveDevice(id) => self.remove_device(&id),
            ApiRequest::VmAddVsock(vsock) => self.add_vsock(vsock),
            ApiRequest::VmAddDisk(disk) => self.add_disk(*disk),
            ApiRequest::VmSaveState(op) => self.refuse_save_state(op),
            ApiRequest::Unimplemented(what) => Err(self.refuse_unimplemented(what)),
        };
        (response, Next::Continue)
    }

    pub(super) fn description(&self) -> Option<&VmDescription> {
        match &self.vm {
            Vm::None => None,
            Vm::Defined { description, .. } | Vm::Running { description, .. } => Some(description),
        }
    }

    pub(super) fn info(&self) -> ApiResponse {
        let (description, state) = match &self.vm {
            Vm::None => return Err(ApiError::VmNotCreated),
            Vm::Defined {
                description,
                shut_down,
            } => (
                description,
                if *shut_down {
                    VmState::Shutdown
                } else {
                    VmState::Created
                },
            ),
            Vm::Running {
                description, vm, ..
            } => (
                description,
                if vm.paused() {
                    VmState::Paused
                } else {
                    VmState::Running
                },
            ),
        };
        json(&VmInfoResponse {
            config: shown_config(
                &description.config,
                self.given_config.as_ref(),
                self.serial.as_deref().and_then(SerialBackend::pty_path),
                self.console_pty.as_deref().map(crate::pty::Pty::path),
            ),
            state,
            memory_actual_size: description.config.memory.total(),
            placement: Some(ApiPlacement::from(&**description)),
        })
    }

    pub(super) fn reboot(&mut self) -> ApiResponse {
        let Some((description, vm, boots)) = self.take_running() else {
            return Err(not_running(&self.vm, "reboot"));
        };
        events::emit(Named::VmRebooting {
            cause: RebootCause::Api,
        });
        self.stop_running(vm, VmExit::Reset);
        log::info!(target: "vmm", "vm.reboot: rebuilding the VM (boot {})", boots + 1);
        self.launch(description, boots + 1, true)?;
        events::emit(Named::VmRebooted { boot: boots + 1 });
        Ok(None)
    }

    /// `vm.add-device`: before boot (or after a shutdown) the function
    /// joins the VM's configuration, as upstream's cold add; a running VM
    /// is refused.
    pub(super) fn add_device(&mut self, mut device: DeviceConfig) -> ApiResponse {
        let Vm::Defined { description, .. } = &self.vm else {
            return self.refuse_add(&device);
        };
        let mut config = description.config.clone();
        if device.id.is_empty() {
            device.id = format!("_dev{}", config.devices.len());
        }
        config.devices.push(device);
        self.redefine(config)
    }

    /// `vm.add-vsock`: before boot (or after a shutdown) the vsock joins
    /// the configuration, as upstream's cold add, once the host can give
    /// it (socket path, vhost-vsock, CID); a running VM is refused.
    pub(super) fn add_vsock(&mut self, vsock: crate::config::VsockConfig) -> ApiResponse {
        let description = match &self.vm {
            Vm::None => return Err(ApiError::VmNotCreated),
            Vm::Running { .. } => return Err(ApiError::VsockHotplug),
            Vm::Defined { description, .. } => description,
        };
        if let Some(present) = &description.config.vsock {
            return Err(ApiError::VsockPresent {
                id: present.id.clone(),
                cid: present.cid,
            });
        }
        let mut config = description.config.clone();
        config.vsock = Some(vsock);
        config.validate(true)?;
        crate::virtio::check_vsock(config.vsock.as_ref())
            .map_err(|e| ApiError::InvalidConfig(e.to_string()))?;
        self.redefine(config)
    }

    /// `vm.add-disk`: before boot (or after a shutdown) the disk joins the
    /// configuration, as upstream's cold add, once its image opens and
    /// locks; a running VM is refused.
    pub(super) fn add_disk(&mut self, mut disk: crate::config::virtio::DiskConfig) -> ApiResponse {
        let description = match &self.vm {
            Vm::None => return Err(ApiError::VmNotCreated),
            Vm::Running { .. } => return Err(ApiError::DiskHotplug),
            Vm::Defined { description, .. } => description,
        };
        let mut config = description.config.clone();
        if disk.id.is_empty() {
            disk.id = format!("_disk{}", config.disks.len());
        }
        config.disks.push(disk);
        config.validate(true)?;
        crate::virtio::check_images(&config).map_err(|e| ApiError::InvalidConfig(e.to_string()))?;
        self.redefine(config)
    }

    /// `vm.add-net`: before boot (or after a shutdown) the NIC joins the
    /// VM's configuration, as upstream's cold add, with the taps that came
    /// with the request (checked to be vnet-header taps now, so a wrong one
    /// is refused here rather than at boot); a running VM is refused. A
    /// refused request's taps are closed.
    pub(super) fn add_net(&mut self, mut net: NetConfig, fds: Vec<OwnedFd>) -> ApiResponse {
        let Vm::Defined { description, .. } = &self.vm else {
            return Err(match self.vm {
                Vm::None => ApiError::VmNotCreated,
                _ => ApiError::NetHotplugUnsupported,
            });
        };
        let mut config = description.config.clone();
        if net.id.is_empty() {
            net.id = format!("_net{}", config.net.len());
        }
        if net.mac.is_none() {
            net.mac = Some(virtio_devices::net::MacAddr::random().to_string());
        }
        if !fds.is_empty() {
            let refused = |e: virtio_devices::net::TapError| {
                ApiError::InvalidConfig(format!(
                    "vm.add-net id={}: a descriptor sent with the request: {e}",
                    net.id
                ))
            };
            let raw: Vec<_> = fds.iter().map(AsRawFd::as_raw_fd).collect();
            let taps = raw
                .iter()
                .map(|fd| Tap::from_borrowed_fd(*fd))
                .collect::<Result<Vec<_>, _>>()
                .map_err(refused)?;
            Tap::check_queues(&taps, &raw).map_err(refused)?;
            net.fds = Some(raw);
        }
        config.net.push(net);
        self.redefine(config)?;
        self.net_fds.extend(fds);
        Ok(None)
    }

    /// `vm.remove-device`: before boot the function (or test endpoint, or
    /// the vsock) leaves the configuration; a running VM is refused.
    pub(super) fn remove_device(&mut self, id: &str) -> ApiResponse {
        let Vm::Defined { description, .. } = &self.vm else {
            return self.refuse_remove(id);
        };
        let mut config = description.config.clone();
        if config.vsock.as_ref().is_some_and(|v| v.id == id) {
            config.vsock = None;
            return self.redefine(config);
        }
        let before = config.devices.len() + config.test_devices.len();
        config.devices.retain(|d| d.id != id);
        config.test_devices.retain(|d| d.id != id);
        if config.devices.len() + config.test_devices.len() == before {
            return self.refuse_remove(id);
        }
        // Generated ids name their position: the ones after the gap move up.
        for (index, device) in config.devices.iter_mut().enumerate() {
            if device.id.starts_with("_dev") {
                device.id = format!("_dev{index}");
            }
        }
        for (index, device) in config.test_devices.iter_mut().enumerate() {
            if device.id.starts_with("_test") {
                device.id = format!("_test{index}");
            }
        }
        self.redefine(config)
    }

    /// Replace the defined VM's configuration, if it is valid; nothing
    /// changes otherwise.
    pub(super) fn redefine(&mut self, config: VmConfig) -> ApiResponse {
        let Vm::Defined { description, .. } = &mut self.vm else {
            return Err(not_running(&self.vm, "change the configuration"));
        };
        config.validate(true)?;
        **description = describe(config)?;
        Ok(None)
    }

    /// An endpoint this VMM does not implement: 404 without a VM, the
    /// spec's wrong-state answer, or the reason it is not implemented.
    pub(super) fn refuse_unimplemented(&self, what: Unimplemented) -> ApiError {
        match (what.needs, &self.vm) {
            (Needs::NoVm, Vm::None) => ApiError::NotImplemented(what),
            (Needs::NoVm, _) => ApiError::VmAlreadyCreated,
            (_, Vm::None) => ApiError::VmNotCreated,
            (Needs::RunningVm, vm @ Vm::Defined { .. }) => not_running(vm, what.action),
            _ => ApiError::NotImplemented(what),
        }
    }

    pub(super) fn refuse_add(&self, device: &DeviceConfig) -> ApiResponse {
        let description = self.description().ok_or(ApiError::VmNotCreated)?;
        let vsmmu = description.vsmmu_of_segment(device.pci_segment.unwrap_or(0));
        match vsmmu {
            Some(v) if device.iommu => Err(ApiError::DeviceBehindVsmmu {
                op: "add-device",
                id: device.path.display().to_string(),
                vsmmu: v.index,
                cmdqv: cmdqv_note(v.cmdqv),
            }),
            _ => Err(ApiError::HotplugUnsupported { op: "add-device" }),
        }
    }

    pub(super) fn refuse_remove(&self, id: &str) -> ApiResponse {
        let description = self.description().ok_or(ApiError::VmNotCreated)?;
        let Some(device) = description.devices.iter().find(|d| d.id == id) else {
            let known: Vec<&str> = description.devices.iter().map(|d| d.id.as_str()).collect();
            return Err(ApiError::UnknownDevice {
                id: id.chars().take(64).collect(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        };
        match device.vsmmu {
            Some(index) => Err(ApiError::DeviceBehindVsmmu {
                op: "remove-device",
                id: device.id.clone(),
                vsmmu: index,
                cmdqv: cmdqv_note(description.config.vsmmu.kind == VsmmuKind::Cmdqv),
            }),
            None => Err(ApiError::HotplugUnsupported {
                op: "remove-device",
            }),
        }
    }

    pub(super) fn refuse_save_state(&self, op: &'static str) -> ApiResponse {
        let description = self.description().ok_or(ApiError::VmNotCreated)?;
        if matches!(self.vm, Vm::Defined { .. }) {
            let action = match op {
                "snapshot" => "take a snapshot",
                _ => "send a migration",
            };
            return Err(not_running(&self.vm, action));
        }
        if description.vsmmus.is_empty() {
            return Err(ApiError::SaveStateUnsupported(op));
        }
        let indexes: Vec<String> = description
            .vsmmus
            .iter()
            .map(|v| v.index.to_string())
            .collect();
        Err(ApiError::VsmmuHostState {
            op,
            vsmmus: indexes.join(", "),
            hw_queues: if description.vsmmus.iter().any(|v| v.cmdqv) {
                ", CMD-QV HW queues"
            } else {
                ""
            },
        })
    }
}

fn cmdqv_note(cmdqv: bool) -> &'static str {
    if cmdqv {
        " (and, with the CMD-QV, its SID slot)"
    } else {
        ""
    }
}

/// The refusal of `action` for a VM that is not running.
fn not_running(vm: &Vm, action: &'static str) -> ApiError {
    match vm {
        Vm::None => ApiError::VmNotCreated,
        Vm::Defined { shut_down, .. } => ApiError::WrongState {
            action,
            state: if *shut_down { "shut down" } else { "created" },
            fix: "PUT vm.boot first",
        },
        Vm::Running { .. } => ApiError::WrongState {
            action,
            state: "running",
            fix: "retry",
        },
    }
}

fn json<T: serde::Serialize>(value: &T) -> ApiResponse {
    serde_json::to_string(value)
        .map(Some)
        .map_err(|e| ApiError::BootFailed(e.to_string()))
}

/// `--vsmmu` beside `--api-socket` alone, applied to a `vm.create` body
/// (`given`) that names no `vsmmu`: the VM gets that vSMMU, and each of its
/// passthrough functions whose body names no `iommu` sits behind it. This
/// is how a client that cannot ask for a vSMMU (libvirt: its ch driver
/// refuses `<iommu>` and sends a `<hostdev>` as its path alone) gets one. A
/// body that names `vsmmu` is taken as it is.
pub(super) fn apply_vsmmu_default(
    config: &mut VmConfig,
    given: &serde_json::Value,
    default: &crate::config::VsmmuConfig,
) {
    if given.get("vsmmu").is_some() {
        return;
    }
    config.vsmmu = default.clone();
    let given_devices = given.get("devices").and_then(serde_json::Value::as_array);
    for (index, device) in config.devices.iter_mut().enumerate() {
        let named = given_devices
            .and_then(|d| d.get(index))
            .is_some_and(|d| d.get("iommu").is_some_and(|v| !v.is_null()));
        if !named {
            device.iommu = true;
        }
    }
}
