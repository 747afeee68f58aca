//! SRAT and SLIT (ACPI 6.3 5.2.16, 5.2.17): the guest's NUMA nodes, built
//! only when the VM has `--numa` nodes.
//!
//! SRAT gives each vCPU's node (GICC affinity, by the ACPI processor UID the
//! MADT uses: the vCPU index), each memory zone's guest range and node
//! (zones sit one after the other from the start of RAM; without zones all
//! RAM is on the first node that is not a Generic Initiator), and each
//! Generic Initiator node with the PCI handle of its passthrough function
//! (segment, then bus in byte 2 and devfn in byte 3: how Linux and
//! NVIDIA's driver read it). SLIT gives the distance matrix in node order.
//!
//! acpi_tables 0.2 has no SRAT or SLIT builder, so the structures are
//! written here from the spec's tables.

use acpi_tables::sdt::Sdt;

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::config::numa::distance_matrix;
use crate::description::VmDescription;

/// SRAT revision 3 (ACPI 6.3: Generic Initiator affinity).
const SRAT_REVISION: u8 = 3;
/// SLIT revision 1.
const SLIT_REVISION: u8 = 1;
/// SRAT structure types and lengths (ACPI 6.3 tables 5-74 to 5-79).
const MEMORY_AFFINITY: u8 = 1;
const MEMORY_AFFINITY_LEN: u8 = 40;
const GICC_AFFINITY: u8 = 3;
const GICC_AFFINITY_LEN: u8 = 18;
const GENERIC_INITIATOR_AFFINITY: u8 = 5;
const GENERIC_INITIATOR_AFFINITY_LEN: u8 = 32;
/// Generic Initiator device handle type: PCI.
const DEVICE_HANDLE_PCI: u8 = 1;
/// Flags bit 0 of every structure: enabled.
const ENABLED: u32 = 1;

fn gicc_affinity(node: u32, uid: u32) -> Vec<u8> {
    let mut s = vec![GICC_AFFINITY, GICC_AFFINITY_LEN];
    s.extend_from_slice(&node.to_le_bytes());
    s.extend_from_slice(&uid.to_le_bytes());
    s.extend_from_slice(&ENABLED.to_le_bytes());
    s.extend_from_slice(&0u32.to_le_bytes()); // clock domain
    s
}

fn memory_affinity(node: u32, base: u64, len: u64) -> Vec<u8> {
    let mut s = vec![MEMORY_AFFINITY, MEMORY_AFFINITY_LEN];
    s.extend_from_slice(&node.to_le_bytes());
    s.extend_from_slice(&[0; 2]);
    s.extend_from_slice(&base.to_le_bytes());
    s.extend_from_slice(&len.to_le_bytes());
    s.extend_from_slice(&[0; 4]);
    s.extend_from_slice(&ENABLED.to_le_bytes());
    s.extend_from_slice(&[0; 8]);
    s
}

fn generic_initiator(node: u32, segment: u16, bus: u8, devfn: u8) -> Vec<u8> {
    let mut s = vec![
        GENERIC_INITIATOR_AFFINITY,
        GENERIC_INITIATOR_AFFINITY_LEN,
        0,
        DEVICE_HANDLE_PCI,
    ];
    s.extend_from_slice(&node.to_le_bytes());
    s.extend_from_slice(&segment.to_le_bytes());
    s.extend_from_slice(&[bus, devfn]);
    s.extend_from_slice(&[0; 12]);
    s.extend_from_slice(&ENABLED.to_le_bytes());
    s.extend_from_slice(&[0; 4]);
    s
}

/// The SRAT of `vm`, or `None` without `--numa` nodes.
pub fn srat(vm: &VmDescription) -> Option<Sdt> {
    let nodes = &vm.config.numa;
    if nodes.is_empty() {
        return None;
    }
    let mut sdt = Sdt::new(
        *b"SRAT",
        48,
        SRAT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    // Reserved: 1 for compatibility with ACPI 1.0 readers, then 8 bytes.
    sdt.write_u32(36, 1);
    for node in nodes {
        for &cpu in node.cpus.iter().flatten() {
            sdt.append_slice(&gicc_affinity(node.guest_numa_id, cpu));
        }
    }
    let ram = vm.layout.ram;
    let zones = &vm.config.memory.zones;
    if zones.is_empty() {
        if let Some(node) = nodes
            .iter()
            .filter(|n| n.device_id.is_none())
            .map(|n| n.guest_numa_id)
            .min()
        {
            sdt.append_slice(&memory_affinity(node, ram.base, ram.size));
        }
    } else {
        let mut base = ram.base;
        for zone in zones {
            let node = nodes
                .iter()
                .find(|n| n.memory_zones.iter().flatten().any(|z| *z == zone.id))
                .map_or(0, |n| n.guest_numa_id);
            sdt.append_slice(&memory_affinity(node, base, zone.size));
            base += zone.size;
        }
    }
    for node in nodes {
        let Some(device) = node.device_id.as_deref() else {
            continue;
        };
        if let Some(placed) = vm.devices.iter().find(|d| d.id == device) {
            let devfn = (placed.bdf.device << 3) | (placed.bdf.function & 0x7);
            sdt.append_slice(&generic_initiator(
                node.guest_numa_id,
                placed.segment,
                placed.bdf.bus,
                devfn,
            ));
        }
    }
    sdt.update_checksum();
    Some(sdt)
}

/// The SLIT of `vm`, or `None` without `--numa` nodes.
pub fn slit(vm: &VmDescription) -> Option<Sdt> {
    let nodes = &vm.config.numa;
    if nodes.is_empty() {
        return None;
    }
    let mut sdt = Sdt::new(
        *b"SLIT",
        44,
        SLIT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    sdt.write_u64(36, nodes.len() as u64);
    for row in distance_matrix(nodes) {
        sdt.append_slice(&row);
    }
    sdt.update_checksum();
    Some(sdt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeviceConfig, MemoryZoneConfig, NumaConfig, VmConfig};

    fn gpu_vm() -> VmDescription {
        let config = VmConfig {
            cpus: crate::config::CpusConfig {
                boot: 4,
                ..Default::default()
            },
            memory: crate::config::MemoryConfig {
                size: 0,
                zones: vec![
                    MemoryZoneConfig::parse("id=mem0,size=128M").unwrap(),
                    MemoryZoneConfig::parse("id=mem1,size=64M").unwrap(),
                ],
                ..Default::default()
            },
            devices: vec![
                DeviceConfig::parse("path=/sys/bus/pci/devices/0009:01:00.0,id=gpu0", 0).unwrap(),
            ],
            numa: vec![
                NumaConfig::parse("guest_numa_id=0,cpus=[0-1],distances=[1@20],memory_zones=mem0")
                    .unwrap(),
                NumaConfig::parse("guest_numa_id=1,cpus=[2-3],memory_zones=mem1").unwrap(),
                NumaConfig::parse("guest_numa_id=2,device_id=gpu0").unwrap(),
            ],
            ..VmConfig::default()
        };
        config.validate(false).unwrap();
        let host = crate::host_topology::HostTopology::emulated(&config, 4 << 10);
        VmDescription::new(config, &host, 16).unwrap()
    }

    fn structures(table: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut at = 48;
        while at + 2 <= table.len() {
            let len = usize::from(table[at + 1]);
            out.push(&table[at..at + len]);
            at += len;
        }
        out
    }

    #[test]
    fn srat_places_cpus_zones_and_the_initiator() {
        let vm = gpu_vm();
        let table = srat(&vm).unwrap();
        let bytes = table.as_slice();
        assert_eq!(&bytes[0..4], b"SRAT");
        assert_eq!(bytes[8], SRAT_REVISION);
        let s = structures(bytes);
        let gicc: Vec<(u32, u32)> = s
            .iter()
            .filter(|s| s[0] == GICC_AFFINITY)
            .map(|s| {
                (
                    u32::from_le_bytes(s[2..6].try_into().unwrap()),
                    u32::from_le_bytes(s[6..10].try_into().unwrap()),
                )
            })
            .collect();
        assert_eq!(gicc, vec![(0, 0), (0, 1), (1, 2), (1, 3)]);
        let mem: Vec<(u32, u64, u64)> = s
            .iter()
            .filter(|s| s[0] == MEMORY_AFFINITY)
            .map(|s| {
                (
                    u32::from_le_bytes(s[2..6].try_into().unwrap()),
                    u64::from_le_bytes(s[8..16].try_into().unwrap()),
                    u64::from_le_bytes(s[16..24].try_into().unwrap()),
                )
            })
            .collect();
        let base = vm.layout.ram.base;
        assert_eq!(
            mem,
            vec![(0, base, 128 << 20), (1, base + (128 << 20), 64 << 20)]
        );
        let gi: Vec<&&[u8]> = s
            .iter()
            .filter(|s| s[0] == GENERIC_INITIATOR_AFFINITY)
            .collect();
        assert_eq!(gi.len(), 1);
        let placed = vm.devices.iter().find(|d| d.id == "gpu0").unwrap();
        let devfn = placed.bdf.device << 3 | placed.bdf.function;
        // Node 2, PCI handle: segment, bus (byte 2), devfn (byte 3).
        assert_eq!(gi[0][3], DEVICE_HANDLE_PCI);
        assert_eq!(u32::from_le_bytes(gi[0][4..8].try_into().unwrap()), 2);
        assert_eq!(
            &gi[0][8..12],
            &[
                placed.segment as u8,
                (placed.segment >> 8) as u8,
                placed.bdf.bus,
                devfn
            ]
        );
        assert_eq!(
            u32::from_le_bytes(gi[0][24..28].try_into().unwrap()),
            ENABLED
        );
    }

    #[test]
    fn slit_is_the_symmetric_distance_matrix() {
        let table = slit(&gpu_vm()).unwrap();
        let bytes = table.as_slice();
        assert_eq!(u64::from_le_bytes(bytes[36..44].try_into().unwrap()), 3);
        assert_eq!(&bytes[44..], &[10, 20, 20, 20, 10, 20, 20, 20, 10]);
    }

    #[test]
    fn no_numa_no_tables() {
        let config = VmConfig::default();
        let host = crate::host_topology::HostTopology::emulated(&config, 4 << 10);
        let vm = VmDescription::new(config, &host, 16).unwrap();
        assert!(srat(&vm).is_none() && slit(&vm).is_none());
    }
}
