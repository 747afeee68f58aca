//! Path + method + body -> [`ApiRequest`]: cloud-hypervisor's endpoints
//! under `/api/v1`, each with the one method it takes (GET for what only
//! reads, PUT for the rest) and its JSON body, parsed here so that a bad
//! body is refused before the VMM thread sees anything.

use serde::Deserialize;

use super::types::{ApiDeviceConfig, ApiVmConfig, VmRemoveDeviceData};
use super::{ApiError, ApiRequest, upstream_fields};
use crate::config::VmConfig;

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

/// Every endpoint: name, method, and how its body becomes a request.
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
        save_state("receive-migration", "receiver_url", body)
    }),
];

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

/// `field <path>: <reason>`, or the reason alone for the body as a whole.
fn field_error(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    if err.path().iter().next().is_none() {
        err.inner().to_string()
    } else {
        format!("field {}: {}", err.path(), err.inner())
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
    let api: ApiVmConfig = json_fields("vm.create", &given)?;
    let config = VmConfig::try_from(api).map_err(|e| ApiError::BadBody {
        endpoint: "vm.create",
        reason: e.to_string(),
    })?;
    Ok(ApiRequest::VmCreate(Box::new(config), Box::new(given)))
}

fn vm_add_device(body: &[u8]) -> Result<ApiRequest, ApiError> {
    let device: ApiDeviceConfig = json("vm.add-device", body)?;
    Ok(ApiRequest::VmAddDevice(device.to_config(0)))
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
            br#"{"payload":{},"net":[{"tap":"t"}]}"#,
        )
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .contains(r#"field net=[{"tap":"t"}] is not supported: virtio-net"#),
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
        let err = route("PUT", "/api/v1/vm.send-migration", b"{}")
            .err()
            .unwrap();
        assert!(err.to_string().contains("destination_url"), "{err}");
    }
}
