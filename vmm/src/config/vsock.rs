//! `--vsock` (virtio-vsock over vhost-vsock, with cloud-hypervisor's hybrid
//! vsock socket) in cloud-hypervisor's syntax and its VsockConfig's JSON
//! field names, and its rules. At most one per VM, as upstream.
//!
//! Like every virtio device here it is never behind the vSMMU: `iommu=on`
//! is refused. What needs the host (the socket path free, its directory
//! there, /dev/vhost-vsock, the CID free) is checked when the VM is
//! defined and again when the device is built (`crate::virtio`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use virtio_devices::vsock::MIN_GUEST_CID;

use super::options::{OptionError, Options};

/// `--vsock` syntax.
pub const VSOCK_SYNTAX: &str = "virtio-vsock over the host's vhost-vsock: \
     \"cid=<context_id>,socket=<socket_path>,iommu=off,id=<device_id>,pci_segment=<segment_id>\" \
     (cid: the guest's CID, 3 or more, unique on the host; socket: a Unix socket the VMM \
     creates, where a host client sends \"CONNECT <port>\\n\" to reach a guest port; needs \
     /dev/vhost-vsock)";

/// The id when none is given (cloud-hypervisor's).
pub const DEFAULT_ID: &str = "_vsock0";
/// Highest guest CID: CIDs are 32 bits and u32::MAX is VMADDR_CID_ANY.
pub const MAX_GUEST_CID: u64 = u32::MAX as u64 - 1;

fn default_id() -> String {
    DEFAULT_ID.into()
}

/// `--vsock` (the API's `vsock`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockConfig {
    /// The guest's context ID.
    pub cid: u64,
    /// The hybrid vsock Unix socket the VMM listens on.
    pub socket: PathBuf,
    /// Behind the vSMMU: refused (virtio devices never are).
    #[serde(default)]
    pub iommu: bool,
    /// Identifier; `_vsock0` when not given.
    #[serde(default = "default_id")]
    pub id: String,
    /// PCI segment.
    #[serde(default)]
    pub pci_segment: u16,
}

impl VsockConfig {
    /// Parse `--vsock`.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        let opts = Options::parse(
            "vsock",
            input,
            &["cid", "socket", "iommu", "id", "pci_segment"],
            false,
        )?;
        let cid_text = opts.require("cid")?;
        let cid = opts
            .number::<u64>("cid")?
            .ok_or_else(|| opts.invalid("cid", cid_text, "a whole number"))?;
        Ok(VsockConfig {
            cid,
            socket: PathBuf::from(opts.require("socket")?),
            iommu: opts.toggle("iommu", false)?,
            id: opts.get("id").map_or_else(default_id, str::to_string),
            pci_segment: opts.number("pci_segment")?.unwrap_or(0),
        })
    }
}

/// A `--vsock` option that breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VsockConfigError {
    /// A CID the guest cannot have.
    #[error(
        "--vsock cid={0} is not a guest CID: 0, 1 and 2 are the hypervisor, loopback and host, \
         and CIDs are 32 bits; give a cid from {MIN_GUEST_CID} to {MAX_GUEST_CID}"
    )]
    Cid(u64),
    /// No socket path.
    #[error("--vsock id={0}: socket= is empty; give the path of the Unix socket to create")]
    NoSocket(String),
    /// iommu=on.
    #[error(
        "--vsock id={0}: iommu=on is not supported: virtio devices are never behind the vSMMU \
         (vhost-vsock reads guest-physical addresses); use iommu=off"
    )]
    Iommu(String),
    /// An id reserved for generated names.
    #[error("--vsock id={0}: ids starting with '_' are reserved for generated names")]
    ReservedId(String),
    /// The id of another device.
    #[error("--vsock id={0}: another device has this id; give the vsock its own id=")]
    DuplicateId(String),
}

/// Check the vsock's rules; its id joins `ids`.
pub fn validate<'a>(
    vsock: Option<&'a VsockConfig>,
    ids: &mut BTreeSet<&'a str>,
) -> Result<(), VsockConfigError> {
    let Some(vsock) = vsock else {
        return Ok(());
    };
    let id = || vsock.id.clone();
    if !(MIN_GUEST_CID..=MAX_GUEST_CID).contains(&vsock.cid) {
        return Err(VsockConfigError::Cid(vsock.cid));
    }
    if vsock.socket.as_os_str().is_empty() {
        return Err(VsockConfigError::NoSocket(id()));
    }
    if vsock.iommu {
        return Err(VsockConfigError::Iommu(id()));
    }
    if vsock.id.starts_with('_') && vsock.id != DEFAULT_ID {
        return Err(VsockConfigError::ReservedId(id()));
    }
    if !ids.insert(vsock.id.as_str()) {
        return Err(VsockConfigError::DuplicateId(id()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str) -> Result<VsockConfig, String> {
        let config = VsockConfig::parse(input).map_err(|e| e.to_string())?;
        validate(Some(&config), &mut BTreeSet::new()).map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn upstreams_syntax_parses_with_its_defaults() {
        assert_eq!(
            check("cid=3,socket=/run/vc/clh.sock").unwrap(),
            VsockConfig {
                cid: 3,
                socket: "/run/vc/clh.sock".into(),
                iommu: false,
                id: "_vsock0".into(),
                pci_segment: 0,
            }
        );
        let full = check("cid=0xffff,socket=/s,iommu=off,id=agent,pci_segment=1").unwrap();
        assert_eq!(
            (full.cid, full.id.as_str(), full.pci_segment),
            (0xffff, "agent", 1)
        );
    }

    #[test]
    fn each_rule_is_refused_naming_the_value() {
        let err = |input: &str| check(input).unwrap_err();
        assert!(err("cid=2,socket=/s").starts_with("--vsock cid=2 is not a guest CID"));
        assert!(err("cid=0,socket=/s").contains("give a cid from 3 to 4294967294"));
        assert!(err("cid=4294967295,socket=/s").starts_with("--vsock cid=4294967295"));
        assert_eq!(err("socket=/s"), "--vsock: 'cid=' is required");
        assert_eq!(err("cid=3"), "--vsock: 'socket=' is required");
        assert!(err("cid=three,socket=/s").starts_with("--vsock: cid=three is not valid"));
        assert!(err("cid=3,socket=/s,iommu=on").contains("iommu=on is not supported"));
        assert!(err("cid=3,socket=/s,id=_x").contains("id=_x: ids starting with '_'"));
        assert!(err("cid=3,socket=/s,port=1").contains("unknown key 'port'"));
        let empty = VsockConfig {
            socket: PathBuf::new(),
            ..VsockConfig::parse("cid=3,socket=/s").unwrap()
        };
        let e = validate(Some(&empty), &mut BTreeSet::new()).unwrap_err();
        assert_eq!(e, VsockConfigError::NoSocket("_vsock0".into()));
        let mut ids = BTreeSet::from(["disk0"]);
        let clash = VsockConfig::parse("cid=3,socket=/s,id=disk0").unwrap();
        assert_eq!(
            validate(Some(&clash), &mut ids).unwrap_err(),
            VsockConfigError::DuplicateId("disk0".into())
        );
    }

    #[test]
    fn the_api_body_kata_sends_deserialises() {
        let config: VsockConfig = serde_json::from_str(
            r#"{"cid": 3, "socket": "/run/vc/vm/sandbox/clh.sock", "iommu": false}"#,
        )
        .unwrap();
        assert_eq!(config.id, "_vsock0");
        let err = serde_json::from_str::<VsockConfig>(r#"{"cid": 3}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `socket`"), "{err}");
    }
}
