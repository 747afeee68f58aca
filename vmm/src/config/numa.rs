//! Guest NUMA: memory zones (`--memory-zone`) and NUMA nodes (`--numa`),
//! with cloud-hypervisor's syntax and JSON field names.
//!
//! A node owns vCPUs, memory zones, distances to the other nodes, and may
//! be a Generic Initiator node for a passthrough function (`device_id=`): a
//! node with no CPU and no memory that the function's memory (a Grace GPU's,
//! hot-added by NVIDIA's driver) lands on. The firmware tables are SRAT and
//! SLIT (`crate::acpi::srat`). Guest RAM is the zones one after the other,
//! each bound to its host node when `host_numa_node=` is given.
//!
//! Not implemented: `hotplug_size`, `shared`/`file` zones, vCPU pinning and
//! `pci_segments=` of a node (cloud-hypervisor's PCI-to-node affinity).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::options::{OptionError, Options, list_items, parse_u64};

/// `--memory-zone` syntax.
pub const MEMORY_ZONE_SYNTAX: &str = "A guest memory zone (give --memory size=0 with zones): \
\"id=<zone_id>,size=<size>,hugepages=on|off,host_numa_node=<node>\"";

/// `--numa` syntax.
pub const NUMA_SYNTAX: &str = "A guest NUMA node: \"guest_numa_id=<id>,cpus=[<a>-<b>,<c>],\
distances=[<node>@<distance>,...],memory_zones=[<zone_id>,...],device_id=<passthrough id>\"";

/// The distance of a node to itself (ACPI SLIT).
pub const LOCAL_DISTANCE: u8 = 10;

/// One memory zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryZoneConfig {
    /// Its id, named by `--numa memory_zones=`.
    pub id: String,
    /// Bytes.
    pub size: u64,
    /// Back it with huge pages.
    #[serde(default)]
    pub hugepages: bool,
    /// The host node its pages come from (mbind, strict).
    #[serde(default)]
    pub host_numa_node: Option<u32>,
}

impl MemoryZoneConfig {
    /// Parse `id=,size=,hugepages=,host_numa_node=`.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        let opts = Options::parse(
            "memory-zone",
            input,
            &["id", "size", "hugepages", "host_numa_node"],
            false,
        )?;
        Ok(MemoryZoneConfig {
            id: opts.require("id")?.to_string(),
            size: opts
                .size("size")?
                .ok_or_else(|| opts.invalid("size", "", "every zone needs a size"))?,
            hugepages: opts.toggle("hugepages", false)?,
            host_numa_node: opts.number("host_numa_node")?,
        })
    }
}

/// The distance from one node to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaDistance {
    /// The other node's `guest_numa_id`.
    pub destination: u32,
    /// Its distance (SLIT; 10 is local).
    pub distance: u8,
}

/// One guest NUMA node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaConfig {
    /// The node's number (its SRAT proximity domain).
    pub guest_numa_id: u32,
    /// vCPUs on it.
    #[serde(default)]
    pub cpus: Option<Vec<u32>>,
    /// Distances to other nodes.
    #[serde(default)]
    pub distances: Option<Vec<NumaDistance>>,
    /// Memory zones on it.
    #[serde(default)]
    pub memory_zones: Option<Vec<String>>,
    /// A passthrough function whose Generic Initiator node this is.
    #[serde(default)]
    pub device_id: Option<String>,
}

impl NumaConfig {
    /// Parse `guest_numa_id=,cpus=,distances=,memory_zones=,device_id=`.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        let opts = Options::parse(
            "numa",
            input,
            &[
                "guest_numa_id",
                "cpus",
                "distances",
                "memory_zones",
                "device_id",
            ],
            false,
        )?;
        let guest_numa_id = opts
            .number("guest_numa_id")?
            .ok_or(OptionError::MissingKey {
                option: "numa",
                key: "guest_numa_id",
            })?;
        let cpus = opts
            .get("cpus")
            .map(|raw| {
                parse_cpus(raw)
                    .ok_or_else(|| opts.invalid("cpus", raw, "expected a list such as [0-3,6]"))
            })
            .transpose()?;
        let distances = opts
            .get("distances")
            .map(|raw| {
                parse_distances(raw).ok_or_else(|| {
                    opts.invalid(
                        "distances",
                        raw,
                        "expected a list such as [1@20,2@30] (node@distance, distance 10-254)",
                    )
                })
            })
            .transpose()?;
        let memory_zones = opts
            .get("memory_zones")
            .map(|raw| list_items(raw).into_iter().map(str::to_string).collect());
        Ok(NumaConfig {
            guest_numa_id,
            cpus,
            distances,
            memory_zones,
            device_id: opts.get("device_id").map(str::to_string),
        })
    }
}

/// `[0-3,6]`: vCPU indices, each once, ascending in the result.
pub(crate) fn parse_cpus(raw: &str) -> Option<Vec<u32>> {
    let mut cpus = BTreeSet::new();
    for item in list_items(raw) {
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (parse_u64(a)?, parse_u64(b)?),
            None => (parse_u64(item)?, parse_u64(item)?),
        };
        if first > last || last > u64::from(u16::MAX) {
            return None;
        }
        for cpu in first..=last {
            cpus.insert(u32::try_from(cpu).ok()?);
        }
    }
    (!cpus.is_empty()).then(|| cpus.into_iter().collect())
}

/// CPU numbers as a list with ranges, ascending: `0-3,6`.
pub fn cpu_list(cpus: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// `[1@20,2@30]`.
fn parse_distances(raw: &str) -> Option<Vec<NumaDistance>> {
    list_items(raw)
        .into_iter()
        .map(|item| {
            let (node, distance) = item.split_once('@')?;
            let distance = u8::try_from(parse_u64(distance)?).ok()?;
            (LOCAL_DISTANCE..=254)
                .contains(&distance)
                .then_some(NumaDistance {
                    destination: u32::try_from(parse_u64(node)?).ok()?,
                    distance,
                })
        })
        .collect()
}

/// A NUMA layout that breaks a rule; each names the node, zone or device.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NumaError {
    /// Zones given with a non-zero `--memory size=`.
    #[error(
        "--memory size={0:#x} with --memory-zone: the zones are the guest RAM; give --memory size=0"
    )]
    SizeWithZones(u64),
    /// A zone id used twice.
    #[error("--memory-zone id={0} is given twice; zone ids must be unique")]
    DuplicateZone(String),
    /// A zone smaller than the guest granule.
    #[error(
        "--memory-zone id={id}: size={size:#x} is not a whole number of 2M blocks (at least 2M)"
    )]
    ZoneSize {
        /// The zone.
        id: String,
        /// Its size.
        size: u64,
    },
    /// A node number used twice.
    #[error("--numa guest_numa_id={0} is given twice")]
    DuplicateNode(u32),
    /// A vCPU beyond `--cpus boot=`.
    #[error("--numa guest_numa_id={node}: vCPU {cpu} does not exist (the VM has {boot} vCPUs)")]
    UnknownCpu {
        /// The node.
        node: u32,
        /// The vCPU.
        cpu: u32,
        /// vCPUs of the VM.
        boot: u32,
    },
    /// A vCPU in two nodes.
    #[error(
        "vCPU {cpu} is in --numa guest_numa_id={first} and guest_numa_id={second}; a vCPU sits on one node"
    )]
    CpuInTwoNodes {
        /// The vCPU.
        cpu: u32,
        /// One node.
        first: u32,
        /// The other.
        second: u32,
    },
    /// A zone no `--memory-zone` defines.
    #[error(
        "--numa guest_numa_id={node}: memory zone '{zone}' is not defined by any --memory-zone id="
    )]
    UnknownZone {
        /// The node.
        node: u32,
        /// The zone.
        zone: String,
    },
    /// A zone on two nodes, or on none.
    #[error("memory zone '{0}' must be on exactly one --numa node (memory_zones=)")]
    ZonePlacement(String),
    /// A distance to an unknown node or to itself.
    #[error("--numa guest_numa_id={node}: distance to node {destination} is not valid: {why}")]
    BadDistance {
        /// The node.
        node: u32,
        /// The other node.
        destination: u32,
        /// Why.
        why: &'static str,
    },
    /// `a -> b` differs from `b -> a`.
    #[error(
        "--numa distances are asymmetric: node {a} -> {b} is {ab}, node {b} -> {a} is {ba}; give both the same"
    )]
    Asymmetric {
        /// One node.
        a: u32,
        /// The other.
        b: u32,
        /// a to b.
        ab: u8,
        /// b to a.
        ba: u8,
    },
    /// `device_id=` naming no passthrough function.
    #[error(
        "--numa guest_numa_id={node}: device_id={device} is not a --device id= (Generic Initiator nodes are for passthrough functions)"
    )]
    UnknownDevice {
        /// The node.
        node: u32,
        /// The id.
        device: String,
    },
    /// A Generic Initiator node with CPUs or memory.
    #[error(
        "--numa guest_numa_id={0}: a node with device_id= is a Generic Initiator node and has no cpus= or memory_zones="
    )]
    InitiatorWithResources(u32),
    /// Nodes given but some vCPU on none.
    #[error("vCPU {0} is on no --numa node; with --numa every vCPU needs a node")]
    CpuWithoutNode(u32),
}

/// Check the zones and nodes of a VM with `boot_cpus` vCPUs, `memory_size`
/// from `--memory size=`, and `devices` the passthrough ids.
pub fn validate(
    zones: &[MemoryZoneConfig],
    nodes: &[NumaConfig],
    boot_cpus: u32,
    memory_size: u64,
    devices: &[&str],
) -> Result<(), NumaError> {
    if !zones.is_empty() && memory_size != 0 {
        return Err(NumaError::SizeWithZones(memory_size));
    }
    let mut zone_ids = BTreeSet::new();
    for zone in zones {
        if !zone_ids.insert(zone.id.as_str()) {
            return Err(NumaError::DuplicateZone(zone.id.clone()));
        }
        if zone.size == 0 || zone.size % (2 << 20) != 0 {
            return Err(NumaError::ZoneSize {
                id: zone.id.clone(),
                size: zone.size,
            });
        }
    }
    let mut ids = BTreeSet::new();
    let mut cpu_node = BTreeMap::new();
    let mut zone_node = BTreeMap::new();
    for node in nodes {
        let id = node.guest_numa_id;
        if !ids.insert(id) {
            return Err(NumaError::DuplicateNode(id));
        }
        if let Some(device) = &node.device_id {
            if node.cpus.is_some() || node.memory_zones.is_some() {
                return Err(NumaError::InitiatorWithResources(id));
            }
            if !devices.contains(&device.as_str()) {
                return Err(NumaError::UnknownDevice {
                    node: id,
                    device: device.clone(),
                });
            }
        }
        for &cpu in node.cpus.iter().flatten() {
            if cpu >= boot_cpus {
                return Err(NumaError::UnknownCpu {
                    node: id,
                    cpu,
                    boot: boot_cpus,
                });
            }
            if let Some(first) = cpu_node.insert(cpu, id) {
                return Err(NumaError::CpuInTwoNodes {
                    cpu,
                    first,
                    second: id,
                });
            }
        }
        for zone in node.memory_zones.iter().flatten() {
            if !zone_ids.contains(zone.as_str()) {
                return Err(NumaError::UnknownZone {
                    node: id,
                    zone: zone.clone(),
                });
            }
            if zone_node.insert(zone.clone(), id).is_some() {
                return Err(NumaError::ZonePlacement(zone.clone()));
            }
        }
    }
    if nodes.is_empty() {
        return Ok(());
    }
    if let Some(zone) = zone_ids.iter().find(|z| !zone_node.contains_key(**z)) {
        return Err(NumaError::ZonePlacement(zone.to_string()));
    }
    if let Some(cpu) = (0..boot_cpus).find(|c| !cpu_node.contains_key(c)) {
        return Err(NumaError::CpuWithoutNode(cpu));
    }
    validate_distances(nodes, &ids)
}

fn validate_distances(nodes: &[NumaConfig], ids: &BTreeSet<u32>) -> Result<(), NumaError> {
    let mut given = BTreeMap::new();
    for node in nodes {
        for d in node.distances.iter().flatten() {
            let bad = |why| NumaError::BadDistance {
                node: node.guest_numa_id,
                destination: d.destination,
                why,
            };
            if d.destination == node.guest_numa_id {
                return Err(bad("a node's distance to itself is always 10"));
            }
            if !ids.contains(&d.destination) {
                return Err(bad("no --numa node has that guest_numa_id"));
            }
            if d.distance <= LOCAL_DISTANCE {
                return Err(bad("a remote distance is more than 10"));
            }
            given.insert((node.guest_numa_id, d.destination), d.distance);
        }
    }
    for (&(a, b), &ab) in &given {
        if let Some(&ba) = given.get(&(b, a))
            && ab != ba
        {
            return Err(NumaError::Asymmetric { a, b, ab, ba });
        }
    }
    Ok(())
}

/// The SLIT matrix for `nodes` in the order given: 10 on the diagonal, the
/// given distance (either direction), 20 where none was given.
pub fn distance_matrix(nodes: &[NumaConfig]) -> Vec<Vec<u8>> {
    let given: BTreeMap<(u32, u32), u8> = nodes
        .iter()
        .flat_map(|n| {
            n.distances
                .iter()
                .flatten()
                .map(move |d| ((n.guest_numa_id, d.destination), d.distance))
        })
        .collect();
    nodes
        .iter()
        .map(|a| {
            nodes
                .iter()
                .map(|b| {
                    let (a, b) = (a.guest_numa_id, b.guest_numa_id);
                    if a == b {
                        LOCAL_DISTANCE
                    } else {
                        given
                            .get(&(a, b))
                            .or_else(|| given.get(&(b, a)))
                            .copied()
                            .unwrap_or(20)
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(id: &str, size: u64) -> MemoryZoneConfig {
        MemoryZoneConfig {
            id: id.into(),
            size,
            hugepages: false,
            host_numa_node: None,
        }
    }

    fn two_nodes() -> (Vec<MemoryZoneConfig>, Vec<NumaConfig>) {
        let zones = vec![zone("mem0", 256 << 20), zone("mem1", 256 << 20)];
        let nodes = vec![
            NumaConfig::parse("guest_numa_id=0,cpus=[0-1],distances=[1@20],memory_zones=mem0")
                .unwrap(),
            NumaConfig::parse("guest_numa_id=1,cpus=[2-3],distances=[0@20],memory_zones=[mem1]")
                .unwrap(),
            NumaConfig::parse("guest_numa_id=2,device_id=gpu0").unwrap(),
        ];
        (zones, nodes)
    }

    #[test]
    fn cloud_hypervisor_syntax_parses() {
        let z = MemoryZoneConfig::parse("id=mem0,size=1G,hugepages=on,host_numa_node=1").unwrap();
        assert_eq!(
            (z.id.as_str(), z.size, z.hugepages, z.host_numa_node),
            ("mem0", 1 << 30, true, Some(1))
        );
        let n = NumaConfig::parse(
            "guest_numa_id=0,cpus=[0-3,6],distances=[1@15,2@20],memory_zones=[mem0,mem1]",
        )
        .unwrap();
        assert_eq!(n.cpus, Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(
            n.distances,
            Some(vec![
                NumaDistance {
                    destination: 1,
                    distance: 15
                },
                NumaDistance {
                    destination: 2,
                    distance: 20
                }
            ])
        );
        assert_eq!(
            n.memory_zones,
            Some(vec!["mem0".to_string(), "mem1".to_string()])
        );
        let err = NumaConfig::parse("guest_numa_id=0,distances=[1@5]").unwrap_err();
        assert!(
            err.to_string().contains("distances=[1@5] is not valid"),
            "{err}"
        );
        assert!(
            NumaConfig::parse("cpus=[0]").is_err(),
            "guest_numa_id is required"
        );
        assert!(NumaConfig::parse("guest_numa_id=0,cpus=[3-1]").is_err());
    }

    #[test]
    fn a_consistent_layout_passes_and_gives_a_symmetric_matrix() {
        let (zones, nodes) = two_nodes();
        assert_eq!(validate(&zones, &nodes, 4, 0, &["gpu0"]), Ok(()));
        assert_eq!(
            distance_matrix(&nodes),
            vec![vec![10, 20, 20], vec![20, 10, 20], vec![20, 20, 10]]
        );
    }

    #[test]
    fn every_inconsistency_is_refused_by_name() {
        let (zones, nodes) = two_nodes();
        let check = |zones: &[MemoryZoneConfig], nodes: &[NumaConfig], want: NumaError| {
            assert_eq!(validate(zones, nodes, 4, 0, &["gpu0"]), Err(want));
        };
        assert_eq!(
            validate(&zones, &nodes, 4, 512 << 20, &["gpu0"]),
            Err(NumaError::SizeWithZones(512 << 20))
        );
        let mut n = nodes.clone();
        n[1].cpus = Some(vec![1, 2, 3]);
        check(
            &zones,
            &n,
            NumaError::CpuInTwoNodes {
                cpu: 1,
                first: 0,
                second: 1,
            },
        );
        let mut n = nodes.clone();
        n[1].cpus = Some(vec![2, 3, 4]);
        check(
            &zones,
            &n,
            NumaError::UnknownCpu {
                node: 1,
                cpu: 4,
                boot: 4,
            },
        );
        let mut n = nodes.clone();
        n[1].cpus = Some(vec![2]);
        check(&zones, &n, NumaError::CpuWithoutNode(3));
        let mut n = nodes.clone();
        n[1].memory_zones = Some(vec!["memX".into()]);
        check(
            &zones,
            &n,
            NumaError::UnknownZone {
                node: 1,
                zone: "memX".into(),
            },
        );
        let mut n = nodes.clone();
        n[1].memory_zones = Some(vec!["mem0".into()]);
        check(&zones, &n, NumaError::ZonePlacement("mem0".into()));
        let mut n = nodes.clone();
        n[1].distances = Some(vec![NumaDistance {
            destination: 0,
            distance: 30,
        }]);
        check(
            &zones,
            &n,
            NumaError::Asymmetric {
                a: 0,
                b: 1,
                ab: 20,
                ba: 30,
            },
        );
        let mut n = nodes.clone();
        n[0].distances = Some(vec![NumaDistance {
            destination: 0,
            distance: 20,
        }]);
        assert!(matches!(
            validate(&zones, &n, 4, 0, &["gpu0"]),
            Err(NumaError::BadDistance {
                node: 0,
                destination: 0,
                ..
            })
        ));
        let mut n = nodes.clone();
        n[0].distances = Some(vec![NumaDistance {
            destination: 7,
            distance: 20,
        }]);
        assert!(matches!(
            validate(&zones, &n, 4, 0, &["gpu0"]),
            Err(NumaError::BadDistance {
                node: 0,
                destination: 7,
                ..
            })
        ));
        let mut n = nodes.clone();
        n[2].device_id = Some("nic9".into());
        check(
            &zones,
            &n,
            NumaError::UnknownDevice {
                node: 2,
                device: "nic9".into(),
            },
        );
        let mut n = nodes.clone();
        n[2].cpus = Some(vec![3]);
        n[1].cpus = Some(vec![2]);
        check(&zones, &n, NumaError::InitiatorWithResources(2));
        let mut n = nodes.clone();
        n[1].guest_numa_id = 0;
        check(&zones, &n, NumaError::DuplicateNode(0));
        let mut z = zones.clone();
        z[1].id = "mem0".into();
        check(&z, &nodes, NumaError::DuplicateZone("mem0".into()));
        let mut z = zones.clone();
        z[0].size = 3 << 20;
        check(
            &z,
            &nodes,
            NumaError::ZoneSize {
                id: "mem0".into(),
                size: 3 << 20,
            },
        );
    }

    #[test]
    fn errors_are_one_sentence_naming_the_value() {
        let e = NumaError::CpuInTwoNodes {
            cpu: 1,
            first: 0,
            second: 1,
        }
        .to_string();
        assert_eq!(
            e,
            "vCPU 1 is in --numa guest_numa_id=0 and guest_numa_id=1; a vCPU sits on one node"
        );
    }
}
