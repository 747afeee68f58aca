//! The control API: cloud-hypervisor's REST API (`--api-socket`), HTTP/1.1
//! on a Unix socket, with its paths, methods and JSON bodies for what this
//! VMM does.
//!
//! - [`http`]: the API thread: accepts clients, reads each request within
//!   fixed bounds, answers malformed, oversized and concurrent requests
//!   itself, and hands the rest to the VMM thread.
//! - [`routes`]: path + method + body -> an [`ApiRequest`] (or a refusal).
//! - [`types`]: the JSON bodies.
//! - [`upstream_fields`]: the fields of upstream's VmConfig this VMM knows
//!   but does not implement, and which of their values it accepts.
//!
//! The API thread and the VMM thread talk as in cloud-hypervisor: a channel
//! plus an eventfd each way. The VMM thread's event loop wakes on the
//! request eventfd; the API thread's epoll wakes on the reply eventfd. At
//! most one request is with the VMM at a time; a request arriving meanwhile
//! is refused (429), so the VMM never sees two changes interleaved.
//!
//! Every error is a JSON body in cloud-hypervisor's format, a list of
//! messages (here always one sentence: the reason and what would work).

pub mod http;
mod message;
pub mod placement;
pub mod routes;
pub mod types;
pub mod upstream_fields;

/// The cloud-hypervisor release whose API this VMM implements: its
/// OpenAPI spec (`vmm/src/api/openapi/cloud-hypervisor.yaml` at tag
/// v53.0, the newest release when this was written) is the one the
/// endpoint table in docs/api-endpoints.md is measured against. Why that
/// release: libvirt's ch driver starts domains only from 22 and sends the
/// `payload` object only from 28; Kata's clh driver builds its bodies from
/// a recent spec (`landlock_enable`, `rate_limit_groups`, ...). Clients
/// read this number as cloud-hypervisor's version, so it is what
/// `--version`, `vmm.ping` and `ch-remote -V` print.
pub const CH_API_VERSION: &str = "53.0.0";

/// `cloud-hypervisor --version` and `ch-remote --version`: upstream's
/// form, `v` + the release (libvirt parses `cloud-hypervisor vN.M.P`).
pub const CH_VERSION_STRING: &str = "v53.0.0";

/// `vmm.ping`'s `build_version`: upstream's `vN.M.P` (Kata reads the part
/// before the first `-`), then this VMM's own crate version.
pub const BUILD_VERSION: &str = concat!("v53.0.0-vsmmu-vmm-", env!("CARGO_PKG_VERSION"));

use std::io;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{self, Receiver, Sender};

use vmm_sys_util::eventfd::EventFd;

use crate::config::net::NetConfig;
use crate::config::{ConfigError, DeviceConfig, VmConfig};
use crate::description::DescriptionError;

/// What the API asks of the VMM thread.
#[derive(Debug)]
pub enum ApiRequest {
    /// `GET vmm.ping`.
    VmmPing,
    /// `PUT vmm.shutdown`: stop the VM (full teardown) and exit.
    VmmShutdown,
    /// `PUT vm.create`: the configuration, and the body as given (for
    /// `vm.info`).
    VmCreate(Box<VmConfig>, Box<serde_json::Value>),
    /// `PUT vm.boot`.
    VmBoot,
    /// `PUT vm.delete`.
    VmDelete,
    /// `GET vm.info`.
    VmInfo,
    /// `GET vm.counters`.
    VmCounters,
    /// `PUT vm.pause`.
    VmPause,
    /// `PUT vm.resume`.
    VmResume,
    /// `PUT vm.reboot`.
    VmReboot,
    /// `PUT vm.shutdown`.
    VmShutdown,
    /// `PUT vm.power-button`.
    VmPowerButton,
    /// `PUT vm.add-device`: added to the configuration before boot (cold
    /// add), refused after.
    VmAddDevice(DeviceConfig),
    /// `PUT vm.add-net`: a NIC added to the configuration before boot
    /// (cold add), refused after; with the tap descriptors that came with
    /// the request (SCM_RIGHTS, libvirt's way), one per queue pair.
    VmAddNet(Box<NetConfig>, Vec<OwnedFd>),
    /// `PUT vm.remove-device`.
    VmRemoveDevice(String),
    /// `PUT vm.add-disk`: a virtio-blk disk added to the configuration
    /// before boot (cold add, as upstream), refused after.
    VmAddDisk(Box<crate::config::virtio::DiskConfig>),
    /// `PUT vm.add-vsock`: added to the configuration before boot (cold
    /// add, as upstream), refused after.
    VmAddVsock(crate::config::VsockConfig),
    /// `PUT vm.snapshot`, `vm.send-migration`: the endpoint's name.
    VmSaveState(&'static str),
    /// An endpoint of the spec this VMM does not implement.
    Unimplemented(Unimplemented),
}

/// What a VM must be for an endpoint to get as far as "not implemented".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// A created VM (else 404).
    Vm,
    /// A running VM (else 404, or the spec's wrong-state answer).
    RunningVm,
    /// No VM (`vm.restore`, `vm.receive-migration`: they define one).
    NoVm,
}

/// An endpoint of cloud-hypervisor's API that this VMM refuses, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unimplemented {
    /// The endpoint, without `vm.`.
    pub endpoint: &'static str,
    /// What it does, for "cannot <action>: the VM is ...".
    pub action: &'static str,
    /// What is missing and what would work, as the end of a sentence.
    pub why: &'static str,
    /// The state checked first.
    pub needs: Needs,
    /// The spec's status for this endpoint failing (500 where the spec
    /// lists none that fits, as upstream's server answers).
    pub status: u16,
}

/// The VMM's answer: a JSON body (200), nothing (204) or a refusal.
pub type ApiResponse = Result<Option<String>, ApiError>;

/// Why a request was not carried out. Each message is one sentence that
/// names the reason and what would work.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No such endpoint.
    #[error(
        "{0} is not an endpoint of cloud-hypervisor's API v53.0; docs/api-endpoints.md lists \
         every one and what this VMM answers"
    )]
    UnknownPath(String),
    /// An endpoint this VMM does not implement.
    #[error("vm.{}: {}", .0.endpoint, .0.why)]
    NotImplemented(Unimplemented),
    /// The endpoint exists with another method.
    #[error("{path} does not take {method}; send {allowed}")]
    WrongMethod {
        /// The path.
        path: String,
        /// The method sent.
        method: String,
        /// The method it takes.
        allowed: &'static str,
    },
    /// Not an HTTP/1.x request.
    #[error("malformed HTTP request ({0}); send an HTTP/1.1 request line, headers and CRLF CRLF")]
    MalformedRequest(String),
    /// The connection ended before the request was complete.
    #[error(
        "the request ended after {0} bytes, before its headers and body were complete; send the \
         whole request"
    )]
    TruncatedRequest(usize),
    /// A request line and headers larger than the limit.
    #[error("the request line and headers exceed {0} bytes; send smaller headers")]
    HeadersTooLarge(usize),
    /// A body larger than the limit.
    #[error(
        "a body of {length} bytes or more exceeds the API's limit of {limit} bytes; send a \
         smaller body"
    )]
    BodyTooLarge {
        /// Content-Length.
        length: u64,
        /// The limit.
        limit: usize,
    },
    /// A transfer coding other than chunked.
    #[error(
        "Transfer-Encoding {0} is not accepted; send the body with Content-Length or \
         Transfer-Encoding: chunked"
    )]
    LengthRequired(String),
    /// A chunked body whose framing is broken.
    #[error("the chunked body is malformed ({0}); send hex chunk sizes, CRLF after each chunk")]
    MalformedChunk(String),
    /// The client stopped sending.
    #[error("the request was not complete within {0} seconds; send it whole and at once")]
    RequestTimeout(u64),
    /// Another request is with the VMM.
    #[error("another API request is in flight; retry once it has been answered")]
    Busy,
    /// More descriptors in one request than any request takes.
    #[error(
        "the request carried more than {0} file descriptors; send a NIC's taps (one per queue \
         pair) with its vm.add-net, nothing else"
    )]
    TooManyFds(usize),
    /// vm.add-net of a running VM.
    #[error(
        "vm.add-net: NIC hot-plug is not implemented yet; add the NIC before vm.boot (vm.add-net \
         or vm.create's net) and boot the VM again"
    )]
    NetHotplugUnsupported,
    /// Too many open connections.
    #[error("the API has {0} connections open already; retry after one closes")]
    TooManyConnections(usize),
    /// The body is not what the endpoint takes.
    #[error("{endpoint}: the body is not valid: {reason}")]
    BadBody {
        /// The endpoint.
        endpoint: &'static str,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// A configuration that breaks a rule.
    #[error("the VM configuration is invalid: {0}")]
    InvalidConfig(String),
    /// No VM defined yet.
    #[error(
        "no VM is created; PUT /api/v1/vm.create with a VmConfig first (or start with --kernel)"
    )]
    VmNotCreated,
    /// vm.create twice.
    #[error("a VM is already created; PUT /api/v1/vm.delete first to define another")]
    VmAlreadyCreated,
    /// An action the VM's state does not allow.
    #[error("cannot {action}: the VM is {state}; {fix}")]
    WrongState {
        /// What was asked.
        action: &'static str,
        /// The state it is in.
        state: &'static str,
        /// What would work.
        fix: &'static str,
    },
    /// This build cannot run VMs.
    #[error(
        "cannot boot: running a VM needs an aarch64 host with KVM, and this build is for another \
         architecture; the API can still create, inspect and delete the VM definition"
    )]
    BootUnsupported,
    /// Booting failed on the host.
    #[error("the VM could not boot: {0}")]
    BootFailed(String),
    /// The host cannot back the VM's vSMMU (one sentence naming the fix).
    #[error("{0}")]
    Host(String),
    /// The serial console's pty or socket could not be set up.
    #[error("serial: {0}; use another socket path, or mode File or Tty")]
    Serial(String),
    /// Pausing failed; the VM keeps running.
    #[error("the VM could not be paused: {0}")]
    PauseFailed(String),
    /// No power button on this platform.
    #[error(
        "this VM has no power button (the aarch64 platform here has no ACPI GED or GPIO key); \
         use vm.shutdown, or power off from inside the guest"
    )]
    NoPowerButton,
    /// Hot-plug or unplug of a device behind a vSMMU.
    #[error(
        "vm.{op}: device {id} is behind vSMMU {vsmmu}, and its vDEVICE and nested HWPT{cmdqv} are \
         fixed at boot; define the VM with the devices it needs and boot it again"
    )]
    DeviceBehindVsmmu {
        /// add-device or remove-device.
        op: &'static str,
        /// The device.
        id: String,
        /// Its vSMMU.
        vsmmu: u32,
        /// " (and, with the CMD-QV, its SID slot)" when the vSMMU has one.
        cmdqv: &'static str,
    },
    /// Hot-plug is not implemented at all.
    #[error(
        "vm.{op}: device hot-plug is not implemented by this VMM; give the device in the VM's \
         configuration (--device or vm.create) and boot it again"
    )]
    HotplugUnsupported {
        /// add-device or remove-device.
        op: &'static str,
    },
    /// vm.add-vsock when the VM has one.
    #[error(
        "vm.add-vsock: the VM has a vsock already (id {id}, cid {cid}); a VM has at most one, \
         PUT vm.remove-device with its id first"
    )]
    VsockPresent {
        /// The vsock's id.
        id: String,
        /// Its CID.
        cid: u64,
    },
    /// vm.add-disk on a running VM.
    #[error(
        "vm.add-disk: disk hot-plug is not implemented; shut the VM down (vm.shutdown), add \
         the disk, then vm.boot"
    )]
    DiskHotplug,
    /// vm.add-vsock on a running VM.
    #[error(
        "vm.add-vsock: vsock hot-plug is not implemented; shut the VM down (vm.shutdown), add \
         the vsock, then vm.boot"
    )]
    VsockHotplug,
    /// remove-device of an unknown id.
    #[error("vm.remove-device: no device with id {id}; the VM's devices are: {known}")]
    UnknownDevice {
        /// The id asked for.
        id: String,
        /// The ids there are.
        known: String,
    },
    /// Snapshot or migration of a VM whose vSMMU holds host state.
    #[error(
        "vm.{op} is refused: vSMMU {vsmmus} holds host state (vIOMMU, vDEVICEs{hw_queues}) that \
         cannot be saved or moved; shut the VM down and boot it again from its configuration, or \
         run it without --vsmmu"
    )]
    VsmmuHostState {
        /// The endpoint.
        op: &'static str,
        /// The vSMMU indexes.
        vsmmus: String,
        /// ", CMD-QV HW queues" when there is a CMD-QV.
        hw_queues: &'static str,
    },
    /// Snapshot or migration, which this VMM does not implement.
    #[error(
        "vm.{0} is not implemented by this VMM; shut the VM down and boot it again from its \
         configuration"
    )]
    SaveStateUnsupported(&'static str),
    /// The VMM thread is gone.
    #[error("the VMM is shutting down; no request can be served")]
    VmmGone,
}

impl ApiError {
    /// The HTTP status of the refusal.
    ///
    /// The rules, from cloud-hypervisor's spec and server: 404 before
    /// `vm.create` (and for what names no device); 405 for an action the
    /// VM's state does not allow ([`routes::status_on`] makes it 500 where
    /// the spec lists no 405 for the path, as upstream's server answers);
    /// 400 for a bad body; 404 where `vm.add-device`/`vm.remove-device`
    /// cannot add or remove (the spec's code for both); 500 for what this
    /// VMM refuses to do (upstream's answer to any VMM error it does not
    /// classify); 501 where this host or build cannot run the VM; the
    /// HTTP-level bounds (408, 411, 413, 429, 431) are ours.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::UnknownPath(_)
            | ApiError::VmNotCreated
            | ApiError::UnknownDevice { .. }
            | ApiError::DeviceBehindVsmmu { .. }
            | ApiError::HotplugUnsupported { .. } => 404,
            ApiError::WrongMethod { .. } | ApiError::WrongState { .. } => 405,
            ApiError::MalformedRequest(_)
            | ApiError::TruncatedRequest(_)
            | ApiError::MalformedChunk(_)
            | ApiError::BadBody { .. }
            | ApiError::TooManyFds(_)
            | ApiError::InvalidConfig(_) => 400,
            ApiError::RequestTimeout(_) => 408,
            ApiError::LengthRequired(_) => 411,
            ApiError::BodyTooLarge { .. } => 413,
            ApiError::Busy | ApiError::TooManyConnections(_) => 429,
            ApiError::HeadersTooLarge(_) => 431,
            ApiError::VmAlreadyCreated
            | ApiError::NoPowerButton
            | ApiError::VsmmuHostState { .. }
            | ApiError::SaveStateUnsupported(_)
            | ApiError::BootFailed(_)
            | ApiError::PauseFailed(_)
            | ApiError::VsockPresent { .. }
            | ApiError::VsockHotplug
            | ApiError::DiskHotplug
            | ApiError::NetHotplugUnsupported
            | ApiError::Serial(_) => 500,
            ApiError::NotImplemented(unimplemented) => unimplemented.status,
            ApiError::BootUnsupported | ApiError::Host(_) => 501,
            ApiError::VmmGone => 503,
        }
    }

    /// The JSON body: cloud-hypervisor's list of error messages.
    pub fn body(&self) -> String {
        serde_json::to_string(&[self.to_string()]).unwrap_or_else(|_| "[]".into())
    }
}

impl From<ConfigError> for ApiError {
    fn from(err: ConfigError) -> Self {
        ApiError::InvalidConfig(err.to_string())
    }
}

impl From<DescriptionError> for ApiError {
    fn from(err: DescriptionError) -> Self {
        ApiError::InvalidConfig(err.to_string())
    }
}

/// The API thread's end of the channel to the VMM thread.
pub struct ApiEnd {
    requests: Sender<ApiRequest>,
    request_evt: EventFd,
    replies: Receiver<ApiResponse>,
    reply_evt: EventFd,
}

/// The VMM thread's end: register `request_evt` in its event loop.
pub struct VmmEnd {
    /// Requests from the API thread.
    pub requests: Receiver<ApiRequest>,
    /// Readable when a request is waiting.
    pub request_evt: EventFd,
    replies: Sender<ApiResponse>,
    reply_evt: EventFd,
}

impl VmmEnd {
    /// Answer the request taken last.
    pub fn reply(&self, response: ApiResponse) {
        if self.replies.send(response).is_ok() {
            if let Err(err) = self.reply_evt.write(1) {
                log::error!(target: "api", "cannot wake the API thread: {err}");
            }
        }
    }
}

/// The two ends of the API <-> VMM channel.
pub fn channel() -> io::Result<(ApiEnd, VmmEnd)> {
    let (req_tx, req_rx) = mpsc::channel();
    let (rep_tx, rep_rx) = mpsc::channel();
    let request_evt = EventFd::new(libc::EFD_NONBLOCK)?;
    let reply_evt = EventFd::new(libc::EFD_NONBLOCK)?;
    Ok((
        ApiEnd {
            requests: req_tx,
            request_evt: request_evt.try_clone()?,
            replies: rep_rx,
            reply_evt: reply_evt.try_clone()?,
        },
        VmmEnd {
            requests: req_rx,
            request_evt,
            replies: rep_tx,
            reply_evt,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_strings_agree_with_the_api_release() {
        assert_eq!(CH_VERSION_STRING, format!("v{CH_API_VERSION}"));
        assert_eq!(
            BUILD_VERSION.split('-').next(),
            Some(CH_VERSION_STRING),
            "Kata reads the release before the first '-'"
        );
        assert!(BUILD_VERSION.ends_with(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn errors_are_a_json_list_of_one_sentence() {
        let err = ApiError::DeviceBehindVsmmu {
            op: "remove-device",
            id: "dma0".into(),
            vsmmu: 0,
            cmdqv: " (and, with the CMD-QV, its SID slot)",
        };
        assert_eq!(
            err.status(),
            404,
            "the spec's code for vm.remove-device failing"
        );
        let body: Vec<String> = serde_json::from_str(&err.body()).unwrap();
        assert_eq!(body.len(), 1);
        assert!(
            body[0].contains("device dma0 is behind vSMMU 0"),
            "{body:?}"
        );
        assert!(body[0].contains("fixed at boot"), "{body:?}");
    }
}
