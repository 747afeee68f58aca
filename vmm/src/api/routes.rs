//! Path + method + body -> [`ApiRequest`]: cloud-hypervisor's endpoints
//! under `/api/v1`, each with the one method it takes (GET for what only
//! reads, PUT for the rest) and its JSON body, parsed here so that a bad
//! body is refused before the VMM thread sees anything.

use serde::Deserialize;

use super::types::VmRemoveDeviceData;
use super::{ApiError, ApiRequest, Needs, Unimplemented, upstream_fields};
use crate::config::net::NetConfig;
use crate::config::{DeviceConfig, VmConfig, VsockConfig};

/// Where every endpoint lives.
const ROOT: &str = "/api/v1/";

/// The method of an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Put,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
        }
    }
}

/// How an endpoint's body becomes a request.
type Parse = fn(&[u8]) -> Result<ApiRequest, ApiError>;

/// Every endpoint of cloud-hypervisor's API v53.0 ([`SPEC`]): name,
/// method, and how its body becomes a request.
const ENDPOINTS: &[(&str, Method, Parse)] = &[
    ("vmm.ping", Method::Get, |_| Ok(ApiRequest::VmmPing)),
    ("vmm.shutdown", Method::Put, |_| Ok(ApiRequest::VmmShutdown)),
    ("vm.create", Method::Put, vm_create),
    ("vm.boot", Method::Put, |_| Ok(ApiRequest::VmBoot)),
    ("vm.delete", Method::Put, |_| Ok(ApiRequest::VmDelete)),
    ("vm.info", Method::Get, |_| Ok(ApiRequest::VmInfo)),
    ("vm.counters", Method::Get, |_| Ok(ApiRequest::VmCounters)),
    ("vm.pause", Method::Put, |_| Ok(ApiRequest::VmPause)),
    ("vm.resume", Method::Put, |_| Ok(ApiRequest::VmResume)),
    ("vm.reboot", Method::Put, |_| Ok(ApiRequest::VmReboot)),
    ("vm.shutdown", Method::Put, |_| Ok(ApiRequest::VmShutdown)),
    ("vm.power-button", Method::Put, |_| {
        Ok(ApiRequest::VmPowerButton)
    }),
    ("vm.add-device", Method::Put, vm_add_device),
    ("vm.remove-device", Method::Put, vm_remove_device),
    ("vm.snapshot", Method::Put, |body| {
        save_state("snapshot", "destination_url", body)
    }),
    ("vm.send-migration", Method::Put, |body| {
        save_state("send-migration", "destination_url", body)
    }),
    ("vm.receive-migration", Method::Put, |body| {
        unimplemented(RECEIVE_MIGRATION, Some("receiver_url"), body)
    }),
    ("vm.add-disk", Method::Put, vm_add_disk),
    ("vm.add-net", Method::Put, vm_add_net),
    ("vm.add-vsock", Method::Put, vm_add_vsock),
    ("vm.add-fs", Method::Put, |body| {
        unimplemented(ADD_FS, Some("socket"), body)
    }),
    ("vm.add-pmem", Method::Put, |body| {
        unimplemented(ADD_PMEM, Some("file"), body)
    }),
    ("vm.add-vdpa", Method::Put, |body| {
        unimplemented(ADD_VDPA, Some("path"), body)
    }),
    ("vm.add-generic-vhost-user", Method::Put, |body| {
        unimplemented(ADD_GENERIC_VHOST_USER, Some("socket"), body)
    }),
    ("vm.add-user-device", Method::Put, |body| {
        unimplemented(ADD_USER_DEVICE, Some("socket"), body)
    }),
    ("vm.resize", Method::Put, |body| {
        unimplemented(RESIZE, None, body)
    }),
    ("vm.resize-zone", Method::Put, |body| {
        unimplemented(RESIZE_ZONE, None, body)
    }),
    ("vm.resize-disk", Method::Put, |body| {
        unimplemented(RESIZE_DISK, None, body)
    }),
    ("vm.restore", Method::Put, |body| {
        unimplemented(RESTORE, Some("source_url"), body)
    }),
    ("vm.coredump", Method::Put, |body| {
        unimplemented(COREDUMP, Some("destination_url"), body)
    }),
    ("vm.nmi", Method::Put, |_| {
        Ok(ApiRequest::Unimplemented(NMI))
    }),
];

const ADD_FS: Unimplemented = Unimplemented {
    endpoint: "add-fs",
    action: "add a virtio-fs share",
    why: "virtio-fs (vhost-user) is not implemented yet; share files through an initramfs or a \
          passthrough disk controller",
    needs: Needs::Vm,
    status: 500,
};
const ADD_PMEM: Unimplemented = Unimplemented {
    endpoint: "add-pmem",
    action: "add a pmem device",
    why: "virtio-pmem is not implemented",
    needs: Needs::Vm,
    status: 500,
};
const ADD_VDPA: Unimplemented = Unimplemented {
    endpoint: "add-vdpa",
    action: "add a vDPA device",
    why: "vDPA devices are not implemented",
    needs: Needs::Vm,
    status: 500,
};
const ADD_GENERIC_VHOST_USER: Unimplemented = Unimplemented {
    endpoint: "add-generic-vhost-user",
    action: "add a vhost-user device",
    why: "vhost-user devices are not implemented yet",
    needs: Needs::Vm,
    status: 500,
};
const ADD_USER_DEVICE: Unimplemented = Unimplemented {
    endpoint: "add-user-device",
    action: "add a vfio-user device",
    why: "vfio-user devices are not implemented; give VFIO passthrough functions with \
          vm.add-device before vm.boot",
    needs: Needs::Vm,
    status: 404,
};
const RESIZE: Unimplemented = Unimplemented {
    endpoint: "resize",
    action: "resize the VM",
    why: "vCPU and memory hot-plug are not implemented; define the VM with the vCPUs and RAM it \
          needs",
    needs: Needs::Vm,
    status: 500,
};
const RESIZE_ZONE: Unimplemented = Unimplemented {
    endpoint: "resize-zone",
    action: "resize a memory zone",
    why: "resizing memory zones (memory hot-plug) is not implemented",
    needs: Needs::Vm,
    status: 500,
};
const RESIZE_DISK: Unimplemented = Unimplemented {
    endpoint: "resize-disk",
    action: "resize a disk",
    why: "resizing a disk is not implemented yet; resize its image while the VM is shut down",
    needs: Needs::Vm,
    status: 500,
};
const RESTORE: Unimplemented = Unimplemented {
    endpoint: "restore",
    action: "restore a snapshot",
    why: "restoring a snapshot is not implemented (vm.snapshot is refused too); define the VM \
          with vm.create",
    needs: Needs::NoVm,
    status: 500,
};
const RECEIVE_MIGRATION: Unimplemented = Unimplemented {
    endpoint: "receive-migration",
    action: "receive a migration",
    why: "live migration is not implemented (a vSMMU's host state cannot be moved); define the \
          VM here with vm.create",
    needs: Needs::NoVm,
    status: 500,
};
const COREDUMP: Unimplemented = Unimplemented {
    endpoint: "coredump",
    action: "take a core dump",
    why: "guest core dumps are not implemented",
    needs: Needs::RunningVm,
    status: 500,
};
const NMI: Unimplemented = Unimplemented {
    endpoint: "nmi",
    action: "inject an NMI",
    why: "NMI injection is not implemented; use vm.reboot or vm.shutdown",
    needs: Needs::RunningVm,
    status: 500,
};

/// The spec's paths, methods and status codes (extracted from the v53.0
/// OpenAPI file; the endpoint table test walks the same list).
pub const SPEC: &str = include_str!("../../tests/data/cloud-hypervisor-v53.0-endpoints.txt");

/// The status codes the spec lists for `name` (e.g. `vm.pause`).
pub fn spec_codes(name: &str) -> Vec<u16> {
    SPEC.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, path) = (fields.next()?, fields.next()?);
            (path == name).then(|| fields.filter_map(|c| c.parse().ok()).collect())
        })
        .next()
        .unwrap_or_default()
}

/// The status of `err` answering a request for `target`: a wrong-state
/// refusal is 405 only where the spec lists 405 for the path (500, as
/// upstream's server answers, elsewhere); `vm.restore` over an existing VM
/// is the spec's 404.
pub fn status_on(target: &str, err: &ApiError) -> u16 {
    let name = target
        .split('?')
        .next()
        .and_then(|path| path.strip_prefix(ROOT))
        .unwrap_or_default();
    match err {
        ApiError::WrongState { .. } if !spec_codes(name).contains(&405) => 500,
        ApiError::VmAlreadyCreated if name == "vm.restore" => 404,
        _ => err.status(),
    }
}

/// The request for `method` on `target` (a request target; a query string
/// is ignored) with `body`.
pub fn route(method: &str, target: &str, body: &[u8]) -> Result<ApiRequest, ApiError> {
    let path = target.split('?').next().unwrap_or(target);
    let Some((_, expected, parse)) = path
        .strip_prefix(ROOT)
        .and_then(|name| ENDPOINTS.iter().find(|(n, _, _)| *n == name))
    else {
        return Err(ApiError::UnknownPath(printable(path)));
    };
    if method != expected.name() {
        return Err(ApiError::WrongMethod {
            path: path.to_string(),
            method: printable(method),
            allowed: expected.name(),
        });
    }
    parse(body)
}

/// The method an endpoint takes (for the `Allow` header of a 405).
pub fn allowed_method(target: &str) -> Option<&'static str> {
    let path = target.split('?').next().unwrap_or(target);
    let name = path.strip_prefix(ROOT)?;
    ENDPOINTS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, m, _)| m.name())
}

/// At most 64 printable characters of a client-supplied string, for
/// messages and logs.
fn printable(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// Parse a required JSON body.
fn json<'a, T: Deserialize<'a>>(endpoint: &'static str, body: &'a [u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadBody {
            endpoint,
            reason: "it is empty; send a JSON object with Content-Length".into(),
        });
    }
    let mut input = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut input).map_err(|e| ApiError::BadBody {
        endpoint,
        reason: field_error(&e),
    })?;
    input.end().map_err(|e| ApiError::BadBody {
        endpoint,
        reason: e.to_string(),
    })?;
    Ok(value)
}

/// `field <path>: <reason>`, or the reason alone for the body as a whole
/// or when it names its field already (a console object whose fields do
/// not fit its mode: `field serial.file=... is not supported: ...`).
fn field_error(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let reason = err.inner().to_string();
    if err.path().iter().next().is_none() || reason.starts_with("field ") {
        reason
    } else {
        format!("field {}: {reason}", err.path())
    }
}

/// Parse a required JSON body into `T`, naming the field at fault
/// (`field cpus.boot_vcpus: invalid type: ...`).
fn json_fields<T: serde::de::DeserializeOwned>(
    endpoint: &'static str,
    value: &serde_json::Value,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| ApiError::BadBody {
        endpoint,
        reason: field_error(&e),
    })
}

fn vm_create(body: &[u8]) -> Result<ApiRequest, ApiError> {
    let given: serde_json::Value = json("vm.create", body)?;
    let demands = upstream_fields::demands(&given);
    if !demands.is_empty() {
        let list: Vec<String> = demands.iter().map(ToString::to_string).collect();
        return Err(ApiError::BadBody {
            endpoint: "vm.create",
            reason: list.join("; "),
        });
    }
    let mut config: VmConfig = json_fields("vm.create", &given)?;
    config.name_unnamed();
    Ok(ApiRequest::VmCreate(Box::new(config), Box::new(given)))
}

/// A NetConfig, with the same rules as an element of `vm.create`'s `net`
/// (its refusals name the field as `net.<field>`). Its tap descriptors,
/// if the client sent any, are attached by the API thread.
fn vm_add_net(body: &[u8]) -> Result<ApiRequest, ApiError> {
    let given: serde_json::Value = json("vm.add-net", body)?;
    if !given.is_object() {
        return Err(ApiError::BadBody {
            endpoint: "vm.add-net",
            reason: "it needs a JSON object (cloud-hypervisor's NetConfig)".into(),
        });
    }
    let wrapped = serde_json::json!({ "net": [given] });
    let demands = upstream_fields::demands(&wrapped);
    if !demands.is_empty() {
        let list: Vec<String> = demands
            .iter()
            .map(|d| d.to_string().replacen("net[0].", "net.", 1))
            .collect();
        return Err(ApiError::BadBody {
            endpoint: "vm.add-net",
            reason: list.join("; "),
        });
    }
    let net: NetConfig = json_fields("vm.add-net", &given)?;
    Ok(ApiRequest::VmAddNet(Box::new(net), Vec::new()))
}

fn vm_add_device(body: &[u8]) -> Result<ApiRequest, ApiError> {
    let device: DeviceConfig = json("vm.add-device", body)?;
    Ok(ApiRequest::VmAddDevice(device))
}

/// An endpoint this VMM refuses: its body must still be a JSON object
/// (with `required`, the one field every upstream body of it has), so a
/// client's mistake is told apart from the refusal.
fn unimplemented(
    what: Unimplemented,
    required: Option<&'static str>,
    body: &[u8],
) -> Result<ApiRequest, ApiError> {
    let endpoint = match ENDPOINTS
        .iter()
        .find(|(name, _, _)| name.ends_with(what.endpoint))
    {
        Some((name, _, _)) => *name,
        None => "vm",
    };
    let value: serde_json::Value = json(endpoint, body)?;
    if !value.is_object() || required.is_some_and(|field| value.get(field).is_none()) {
        return Err(ApiError::BadBody {
            endpoint,
            reason: match required {
                Some(field) => format!("it needs a JSON object with field {field}"),
                None => "it needs a JSON object".into(),
            },
        });
    }
    Ok(ApiRequest::Unimplemented(what))
}

/// `vm.add-vsock`: cloud-hypervisor's VsockConfig (cid and socket
/// required, unknown fields ignored as upstream).
/// `vm.add-disk`: upstream's DiskConfig, with the `disks[]` rules of
/// vm.create (vhost-user, rate limits, `iommu: true` refused by name).
fn vm_add_disk(body: &[u8]) -> Result<ApiRequest, ApiError> {
    let value: serde_json::Value = json("vm.add-disk", body)?;
    let demands = upstream_fields::demands(&serde_json::json!({ "disks": [value.clone()] }));
    if let Some(demand) = demands.first() {
        return Err(ApiError::BadBody {
            endpoint: "vm.add-disk",
            reason: demand.to_string().replacen("disks[0].", "", 1),
        });
    }
    let config: crate::config::virtio::DiskConfig = json_fields("vm.add-disk", &value)?;
    Ok(ApiRequest::VmAddDisk(Box::new(config)))
}

fn vm_add_vsock(body: &[u8]) -> Result<ApiRequest, ApiError> {
    let value: serde_json::Value = json("vm.add-vsock", body)?;
    let config: VsockConfig = json_fields("vm.add-vsock", &value)?;
    Ok(ApiRequest::VmAddVsock(config))
}

fn vm_remove_device(body: &[u8]) -> Result<ApiRequest, ApiError> {
    let data: VmRemoveDeviceData = json("vm.remove-device", body)?;
    Ok(ApiRequest::VmRemoveDevice(data.id))
}

/// Snapshot and migration bodies: a JSON object with its URL; the rest of
/// cloud-hypervisor's fields are accepted as they never get used.
fn save_state(
    endpoint: &'static str,
    url_field: &'static str,
    body: &[u8],
) -> Result<ApiRequest, ApiError> {
    let full = match endpoint {
        "snapshot" => "vm.snapshot",
        "send-migration" => "vm.send-migration",
        _ => "vm.receive-migration",
    };
    let value: serde_json::Value = json(full, body)?;
    if !value
        .get(url_field)
        .is_some_and(serde_json::Value::is_string)
    {
        return Err(ApiError::BadBody {
            endpoint: full,
            reason: format!("it needs a string field {url_field}"),
        });
    }
    Ok(ApiRequest::VmSaveState(endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_routes_with_its_method() {
        assert!(matches!(
            route("GET", "/api/v1/vmm.ping", b""),
            Ok(ApiRequest::VmmPing)
        ));
        assert!(matches!(
            route("GET", "/api/v1/vm.counters?pretty", b""),
            Ok(ApiRequest::VmCounters)
        ));
        assert!(matches!(
            route("PUT", "/api/v1/vm.remove-device", br#"{"id":"dma0"}"#),
            Ok(ApiRequest::VmRemoveDevice(id)) if id == "dma0"
        ));
        assert!(matches!(
            route(
                "PUT",
                "/api/v1/vm.snapshot",
                br#"{"destination_url":"file:///x"}"#
            ),
            Ok(ApiRequest::VmSaveState("snapshot"))
        ));
        for (name, _, _) in ENDPOINTS {
            assert!(allowed_method(&format!("/api/v1/{name}")).is_some());
        }
    }

    #[test]
    fn every_path_of_the_spec_is_routed_with_its_method() {
        let spec: Vec<(&str, &str)> = SPEC
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?, f.next()?))
            })
            .collect();
        assert_eq!(spec.len(), 31);
        assert_eq!(spec.len(), ENDPOINTS.len());
        for (method, path) in spec {
            assert_eq!(
                allowed_method(&format!("/api/v1/{path}")),
                Some(method),
                "{path}"
            );
        }
        assert_eq!(spec_codes("vm.pause"), [204, 404, 405]);
        let wrong_state = ApiError::WrongState {
            action: "boot",
            state: "running",
            fix: "x",
        };
        assert_eq!(status_on("/api/v1/vm.pause", &wrong_state), 405);
        assert_eq!(status_on("/api/v1/vm.boot", &wrong_state), 500);
        assert_eq!(
            status_on("/api/v1/vm.restore", &ApiError::VmAlreadyCreated),
            404
        );
        assert_eq!(
            status_on("/api/v1/vm.create", &ApiError::VmAlreadyCreated),
            500
        );
    }

    #[test]
    fn unknown_paths_and_wrong_methods_are_refused() {
        let err = route("GET", "/api/v1/vm.nope", b"").err().unwrap();
        assert_eq!(err.status(), 404);
        assert!(
            err.to_string()
                .starts_with("/api/v1/vm.nope is not an endpoint")
        );
        let err = route("GET", "/api/v1/vm.pause", b"").err().unwrap();
        assert_eq!(err.status(), 405);
        assert_eq!(
            err.to_string(),
            "/api/v1/vm.pause does not take GET; send PUT"
        );
        assert_eq!(allowed_method("/api/v1/vm.info"), Some("GET"));
        let err = route("\u{1}\u{2}", "/\u{7f}", b"").err().unwrap();
        assert_eq!(err.to_string().split(' ').next(), Some("/?"));
    }

    #[test]
    fn bad_bodies_are_refused_naming_the_problem() {
        let err = route("PUT", "/api/v1/vm.create", b"").err().unwrap();
        assert_eq!(err.status(), 400);
        let err = route("PUT", "/api/v1/vm.create", b"{not json")
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("vm.create: the body is not valid")
        );
        let err = route(
            "PUT",
            "/api/v1/vm.create",
            br#"{"payload":{},"net":[{"tap":"t","mtu":9000}]}"#,
        )
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .contains("field net[0].mtu=9000 is not supported: VIRTIO_NET_F_MTU"),
            "{err}"
        );
        let err = route(
            "PUT",
            "/api/v1/vm.create",
            br#"{"payload":{},"serial":{"mode":"Fancy"}}"#,
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().starts_with(
                "vm.create: the body is not valid: field serial.mode: unknown variant `Fancy`"
            ),
            "{err}"
        );
        let err = route(
            "PUT",
            "/api/v1/vm.create",
            br#"{"payload":{},"cpus":{"boot_vcpus":"two"}}"#,
        )
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .contains("field cpus.boot_vcpus: invalid type"),
            "{err}"
        );
        let err = route("PUT", "/api/v1/vm.remove-device", br#"{"idd":"x"}"#)
            .err()
            .unwrap();
        assert!(err.to_string().contains("missing field `id`"), "{err}");
        let err = route("PUT", "/api/v1/vm.add-device", br#"{"path": 7}"#)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("field path: invalid type: integer `7`"),
            "{err}"
        );
        let err = route("PUT", "/api/v1/vm.add-vsock", br#"{"socket":"/s"}"#)
            .err()
            .unwrap();
        assert!(err.to_string().contains("missing field `cid`"), "{err}");
        assert!(matches!(
            route(
                "PUT",
                "/api/v1/vm.add-vsock",
                br#"{"cid":4,"socket":"/s","future":1}"#
            ),
            Ok(ApiRequest::VmAddVsock(v)) if v.cid == 4 && v.id == "_vsock0"
        ));
        let err = route("PUT", "/api/v1/vm.send-migration", b"{}")
            .err()
            .unwrap();
        assert!(err.to_string().contains("destination_url"), "{err}");
    }
}
