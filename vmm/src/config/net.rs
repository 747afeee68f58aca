//! `--net` (virtio-net over a tap) in cloud-hypervisor's syntax and its
//! NetConfig's JSON field names, and its rules.
//!
//! Like every virtio device here it is never behind the vSMMU: `iommu=on`
//! is refused.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Deserializer, Serialize};
use virtio_devices::net::{MAX_QUEUE_PAIRS, MacAddr, Offloads, tap};

use super::options::{OptionError, Options, list_items};
use super::virtio::MAX_QUEUE_SIZE;

/// `--net` syntax.
pub const NET_SYNTAX: &str = "virtio-net over a tap: \"tap=<if name>,ip=<host IPv4>,\
     mask=<netmask>,mac=<guest MAC>,fd=<open tap fd>|[fd,fd,...],num_queues=<queues>,\
     queue_size=<size>,offload_tso=on|off,offload_ufo=on|off,offload_csum=on|off,\
     id=<device_id>,pci_segment=<segment_id>,iommu=off\" (tap= is created or attached, the \
     kernel names one when absent; ip=/mask= configure its host side; fd= takes taps opened \
     with IFF_VNET_HDR instead, one per queue pair; num_queues counts queues, two per pair, \
     2 to 32; defaults num_queues=2, queue_size=256, offloads on, a random mac)";

/// cloud-hypervisor's default: one queue pair (two queues).
pub const DEFAULT_NUM_QUEUES: u16 = 2;
/// cloud-hypervisor's default queue size for net.
pub const DEFAULT_QUEUE_SIZE: u16 = virtio_devices::net::DEFAULT_QUEUE_SIZE;
/// The netmask when `ip=` comes without `mask=` (cloud-hypervisor's).
pub const DEFAULT_MASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);

fn default_num_queues() -> u16 {
    DEFAULT_NUM_QUEUES
}

fn default_queue_size() -> u16 {
    DEFAULT_QUEUE_SIZE
}

fn yes() -> bool {
    true
}

/// An offload field: absent or `null` is upstream's default, on.
fn null_is_true<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

/// `--net` (the API's `net[]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    /// The tap's name (created if missing); the kernel picks one if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// The host side's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// The host side's netmask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<Ipv4Addr>,
    /// The guest's MAC; a random one is filled in when absent.
    #[serde(default)]
    pub mac: Option<String>,
    /// Queues: two per queue pair (one receive, one transmit).
    #[serde(default = "default_num_queues")]
    pub num_queues: u16,
    /// Size of each queue.
    #[serde(default = "default_queue_size")]
    pub queue_size: u16,
    /// Identifier; `_net<N>` when not given.
    #[serde(default)]
    pub id: String,
    /// Already open tap descriptors (one per queue pair), libvirt's way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fds: Option<Vec<i32>>,
    /// TCP segmentation offload both ways (if the tap takes it).
    #[serde(default = "yes", deserialize_with = "null_is_true")]
    pub offload_tso: bool,
    /// UDP fragmentation offload both ways (if the tap takes it).
    #[serde(default = "yes", deserialize_with = "null_is_true")]
    pub offload_ufo: bool,
    /// Checksum offload both ways (if the tap takes it).
    #[serde(default = "yes", deserialize_with = "null_is_true")]
    pub offload_csum: bool,
    /// Behind the vSMMU: refused (virtio devices never are).
    #[serde(default)]
    pub iommu: bool,
    /// PCI segment.
    #[serde(default)]
    pub pci_segment: u16,
}

impl NetConfig {
    /// Parse `--net`; `index` names the device when no `id=` is given.
    pub fn parse(input: &str, index: usize) -> Result<Self, OptionError> {
        let opts = Options::parse(
            "net",
            input,
            &[
                "tap",
                "ip",
                "mask",
                "mac",
                "fd",
                "num_queues",
                "queue_size",
                "offload_tso",
                "offload_ufo",
                "offload_csum",
                "id",
                "iommu",
                "pci_segment",
            ],
            false,
        )?;
        let address = |key: &str| -> Result<Option<Ipv4Addr>, OptionError> {
            opts.get(key)
                .map(|v| {
                    v.parse()
                        .map_err(|_| opts.invalid(key, v, "an IPv4 address such as 192.168.249.1"))
                })
                .transpose()
        };
        let fds = opts
            .get("fd")
            .map(|raw| {
                list_items(raw)
                    .into_iter()
                    .map(|fd| {
                        fd.parse::<i32>()
                            .ok()
                            .filter(|n| *n >= 0)
                            .ok_or_else(|| opts.invalid("fd", raw, "a file descriptor number"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let mac = match opts.get("mac") {
            Some(text) => Some(
                MacAddr::parse(text)
                    .map_err(|e| opts.invalid("mac", text, &e.to_string()))?
                    .to_string(),
            ),
            None => Some(MacAddr::random().to_string()),
        };
        Ok(NetConfig {
            tap: opts.get("tap").map(str::to_string),
            ip: address("ip")?,
            mask: address("mask")?,
            mac,
            num_queues: opts.number("num_queues")?.unwrap_or(DEFAULT_NUM_QUEUES),
            queue_size: opts.number("queue_size")?.unwrap_or(DEFAULT_QUEUE_SIZE),
            id: opts
                .get("id")
                .map_or_else(|| format!("_net{index}"), str::to_string),
            fds,
            offload_tso: opts.toggle("offload_tso", true)?,
            offload_ufo: opts.toggle("offload_ufo", true)?,
            offload_csum: opts.toggle("offload_csum", true)?,
            iommu: opts.toggle("iommu", false)?,
            pci_segment: opts.number("pci_segment")?.unwrap_or(0),
        })
    }

    /// The guest's MAC (checked by [`validate`]; random if none).
    pub fn mac_addr(&self) -> MacAddr {
        self.mac
            .as_deref()
            .and_then(|m| MacAddr::parse(m).ok())
            .unwrap_or_else(MacAddr::random)
    }

    /// Queue pairs (checked by [`validate`]).
    pub fn pairs(&self) -> usize {
        usize::from(self.num_queues / 2).max(1)
    }

    /// The offloads allowed.
    pub fn offloads(&self) -> Offloads {
        Offloads {
            csum: self.offload_csum,
            tso: self.offload_tso,
            ufo: self.offload_ufo,
        }
    }
}

/// A `--net` option that breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetConfigError {
    /// Not an even count of 2 to twice [`MAX_QUEUE_PAIRS`].
    #[error(
        "--net id={id}: num_queues={count} is not valid: it counts queues, two per queue pair \
         (receive and transmit); give an even number from 2 to {max}",
        max = 2 * MAX_QUEUE_PAIRS
    )]
    NumQueues {
        /// The device.
        id: String,
        /// The count given.
        count: u16,
    },
    /// queue_size not a power of two in range.
    #[error(
        "--net id={id}: queue_size={size} must be a power of two between 2 and {MAX_QUEUE_SIZE}"
    )]
    QueueSize {
        /// The device.
        id: String,
        /// The size given.
        size: u16,
    },
    /// A bad interface name.
    #[error(
        "--net id={id}: tap={name} is not an interface name (1 to 15 bytes, no '/', ':' or spaces)"
    )]
    TapName {
        /// The device.
        id: String,
        /// The name given.
        name: String,
    },
    /// Both tap= and fd=.
    #[error("--net id={0}: give tap= or fd=, not both (fd= is a tap already open)")]
    TapAndFd(String),
    /// fd= with other than one descriptor per queue pair.
    #[error(
        "--net id={id}: fd= gives {count} descriptors but num_queues={num_queues} takes \
         {pairs} (one tap queue per queue pair); give that many descriptors or \
         num_queues={}",
        2 * count
    )]
    FdCount {
        /// The device.
        id: String,
        /// How many were given.
        count: usize,
        /// num_queues given.
        num_queues: u16,
        /// The pairs it makes.
        pairs: usize,
    },
    /// TSO or UFO without checksum offload.
    #[error(
        "--net id={0}: offload_tso and offload_ufo need offload_csum=on (segmentation \
         offloads depend on checksum offload); set offload_csum=on, or also \
         offload_tso=off,offload_ufo=off"
    )]
    OffloadWithoutCsum(String),
    /// mask= without ip=.
    #[error("--net id={0}: mask= needs ip= (the host side's address)")]
    MaskWithoutIp(String),
    /// A bad MAC.
    #[error("--net id={id}: {reason}")]
    Mac {
        /// The device.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// iommu=on.
    #[error(
        "--net id={0}: iommu=on is not supported: virtio devices are never behind the vSMMU; \
         leave iommu off"
    )]
    Iommu(String),
    /// A device id that clashes.
    #[error("--net id={0} is already used by another device; give each device its own id=")]
    DuplicateId(String),
    /// A reserved id.
    #[error("--net id={0}: ids starting with '_' are reserved for generated names")]
    ReservedId(String),
    /// Two devices on one tap.
    #[error("--net tap={0} is given twice; each device needs its own tap")]
    DuplicateTap(String),
}

/// The net devices' rules; `ids` holds the other devices' ids.
pub fn validate<'a>(
    nets: &'a [NetConfig],
    ids: &mut BTreeSet<&'a str>,
) -> Result<(), NetConfigError> {
    let mut taps = BTreeSet::new();
    for (index, net) in nets.iter().enumerate() {
        let id = || net.id.clone();
        if net.id.starts_with('_') && net.id != format!("_net{index}") {
            return Err(NetConfigError::ReservedId(id()));
        }
        if !ids.insert(net.id.as_str()) {
            return Err(NetConfigError::DuplicateId(id()));
        }
        let count = usize::from(net.num_queues);
        if count < 2 || count % 2 != 0 || count > 2 * MAX_QUEUE_PAIRS {
            return Err(NetConfigError::NumQueues {
                id: id(),
                count: net.num_queues,
            });
        }
        let size = net.queue_size;
        if !(2..=MAX_QUEUE_SIZE).contains(&size) || !size.is_power_of_two() {
            return Err(NetConfigError::QueueSize { id: id(), size });
        }
        if net.iommu {
            return Err(NetConfigError::Iommu(id()));
        }
        if let Some(name) = &net.tap {
            if !tap::valid_name(name) {
                return Err(NetConfigError::TapName {
                    id: id(),
                    name: name.clone(),
                });
            }
            if !name.contains('%') && !taps.insert(name.as_str()) {
                return Err(NetConfigError::DuplicateTap(name.clone()));
            }
        }
        if let Some(fds) = &net.fds {
            if net.tap.is_some() {
                return Err(NetConfigError::TapAndFd(id()));
            }
            if fds.len() != net.pairs() {
                return Err(NetConfigError::FdCount {
                    id: id(),
                    count: fds.len(),
                    num_queues: net.num_queues,
                    pairs: net.pairs(),
                });
            }
        }
        if (net.offload_tso || net.offload_ufo) && !net.offload_csum {
            return Err(NetConfigError::OffloadWithoutCsum(id()));
        }
        if net.mask.is_some() && net.ip.is_none() {
            return Err(NetConfigError::MaskWithoutIp(id()));
        }
        if let Some(mac) = &net.mac {
            MacAddr::parse(mac).map_err(|e| NetConfigError::Mac {
                id: id(),
                reason: e.to_string(),
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(nets: &[&str]) -> Result<(), NetConfigError> {
        let nets: Vec<NetConfig> = nets
            .iter()
            .enumerate()
            .map(|(i, n)| NetConfig::parse(n, i).unwrap())
            .collect();
        validate(&nets, &mut BTreeSet::new())
    }

    #[test]
    fn net_parses_every_key_with_cloud_hypervisors_defaults() {
        let n = NetConfig::parse("", 2).unwrap();
        assert_eq!(
            (n.tap.as_deref(), n.num_queues, n.queue_size, n.id.as_str()),
            (None, 2, 256, "_net2")
        );
        let mac = MacAddr::parse(n.mac.as_deref().unwrap()).unwrap();
        assert_eq!(mac.0[0] & 3, 2, "a random local unicast MAC is filled in");
        let n = NetConfig::parse(
            "tap=vmtap0,ip=192.168.249.1,mask=255.255.255.0,mac=52:54:00:AA:BB:CC,\
             num_queues=2,queue_size=1024,id=eth,iommu=off,pci_segment=0",
            0,
        )
        .unwrap();
        assert_eq!(n.tap.as_deref(), Some("vmtap0"));
        assert_eq!(n.ip, Some(Ipv4Addr::new(192, 168, 249, 1)));
        assert_eq!(n.mask, Some(DEFAULT_MASK));
        assert_eq!(n.mac.as_deref(), Some("52:54:00:aa:bb:cc"));
        assert_eq!((n.queue_size, n.id.as_str(), n.iommu), (1024, "eth", false));
        assert_eq!(NetConfig::parse("fd=[5]", 0).unwrap().fds, Some(vec![5]));
        assert_eq!(NetConfig::parse("fd=7", 0).unwrap().fds, Some(vec![7]));
    }

    #[test]
    fn bad_values_are_refused_naming_them() {
        assert_eq!(
            NetConfig::parse("ip=300.1.1.1", 0).unwrap_err().to_string(),
            "--net: ip=300.1.1.1 is not valid: an IPv4 address such as 192.168.249.1"
        );
        assert!(
            NetConfig::parse("mac=01:00:5e:00:00:01", 0)
                .unwrap_err()
                .to_string()
                .contains("multicast")
        );
        assert!(NetConfig::parse("fd=-1", 0).is_err());
        assert!(NetConfig::parse("vhost_user=on", 0).is_err());
    }

    #[test]
    fn num_queues_is_an_even_count_of_up_to_16_pairs_refused_in_one_sentence() {
        for good in [2u16, 4, 8, 32] {
            assert!(check(&[&format!("num_queues={good}")]).is_ok(), "{good}");
        }
        assert_eq!(NetConfig::parse("num_queues=8", 0).unwrap().pairs(), 4);
        for count in [0u16, 1, 3, 31, 34, 1000] {
            let err = check(&[&format!("id=n,num_queues={count}")]).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "--net id=n: num_queues={count} is not valid: it counts queues, two per \
                     queue pair (receive and transmit); give an even number from 2 to 32"
                )
            );
        }
    }

    #[test]
    fn fd_gives_one_descriptor_per_queue_pair_and_a_mismatch_names_both_numbers() {
        assert!(check(&["fd=3"]).is_ok());
        assert!(check(&["fd=[3,4],num_queues=4"]).is_ok());
        assert!(check(&["fd=[3,4,5,6],num_queues=8"]).is_ok());
        assert_eq!(
            check(&["id=n,fd=[3,4]"]).unwrap_err().to_string(),
            "--net id=n: fd= gives 2 descriptors but num_queues=2 takes 1 (one tap queue per \
             queue pair); give that many descriptors or num_queues=4"
        );
        assert_eq!(
            check(&["id=n,fd=[3],num_queues=6"])
                .unwrap_err()
                .to_string(),
            "--net id=n: fd= gives 1 descriptors but num_queues=6 takes 3 (one tap queue per \
             queue pair); give that many descriptors or num_queues=2"
        );
    }

    #[test]
    fn offloads_default_on_and_segmentation_needs_checksum() {
        let n = NetConfig::parse("", 0).unwrap();
        assert_eq!(n.offloads(), Offloads::ALL);
        let n = NetConfig::parse("offload_tso=off,offload_ufo=off,offload_csum=off", 0).unwrap();
        assert_eq!(n.offloads(), Offloads::NONE);
        assert!(check(&["offload_tso=off,offload_ufo=off,offload_csum=off"]).is_ok());
        assert!(check(&["offload_tso=off"]).is_ok());
        assert_eq!(
            check(&["id=n,offload_csum=off"]).unwrap_err().to_string(),
            "--net id=n: offload_tso and offload_ufo need offload_csum=on (segmentation \
             offloads depend on checksum offload); set offload_csum=on, or also \
             offload_tso=off,offload_ufo=off"
        );
        assert!(NetConfig::parse("offload_tso=yes", 0).is_err());
        let json: NetConfig =
            serde_json::from_str(r#"{"offload_tso": false, "offload_ufo": null}"#).unwrap();
        assert_eq!(
            (json.offload_tso, json.offload_ufo, json.offload_csum),
            (false, true, true)
        );
    }

    #[test]
    fn queue_size_tap_name_fd_mask_iommu_and_ids_follow_their_rules() {
        assert!(check(&["queue_size=32768"]).is_ok());
        assert_eq!(
            check(&["id=n,queue_size=100"]).unwrap_err().to_string(),
            "--net id=n: queue_size=100 must be a power of two between 2 and 32768"
        );
        assert!(matches!(
            check(&["tap=a/b"]),
            Err(NetConfigError::TapName { .. })
        ));
        assert!(matches!(
            check(&["tap=sixteen-chars-16"]),
            Err(NetConfigError::TapName { .. })
        ));
        assert!(matches!(
            check(&["tap=t0,fd=3"]),
            Err(NetConfigError::TapAndFd(_))
        ));
        assert!(matches!(
            check(&["mask=255.0.0.0"]),
            Err(NetConfigError::MaskWithoutIp(_))
        ));
        assert_eq!(
            check(&["id=n,iommu=on"]).unwrap_err().to_string(),
            "--net id=n: iommu=on is not supported: virtio devices are never behind the vSMMU; \
             leave iommu off"
        );
        assert!(matches!(
            check(&["id=x", "id=x"]),
            Err(NetConfigError::DuplicateId(_))
        ));
        assert!(matches!(
            check(&["id=_net3"]),
            Err(NetConfigError::ReservedId(_))
        ));
        assert!(matches!(
            check(&["tap=t0", "tap=t0"]),
            Err(NetConfigError::DuplicateTap(_))
        ));
        assert!(
            check(&["tap=t%d", "tap=t%d"]).is_ok(),
            "the kernel numbers them"
        );
    }
}
