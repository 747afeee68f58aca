//! The IO Remapping Table (Arm DEN 0049, revision E.b layout), hand-built
//! because the acpi_tables crate has no IORT module.
//!
//! Nodes, in order: one ITS group (identifier 0); one SMMUv3 node per vSMMU
//! (identifier `index + 1`, the `_UID` of its NVDA200C companion); one PCI
//! root complex node per segment. A root complex maps its RIDs to its
//! segment's vSMMU (StreamID = RID) or, with no vSMMU or for an `iommu=off`
//! device, straight to the ITS. Every vSMMU maps StreamIDs on to ITS
//! DeviceIDs (so endpoint MSIs still reach the ITS) and has a single mapping
//! for its own DeviceID.
//!
//! With passthrough functions behind a vSMMU, one RMR node per such vSMMU
//! (spec E.d, so the table is then revision 5) asks the guest to identity
//! map the host's MSI window for their StreamIDs: the host kernel programs
//! the physical function's MSI address inside that window
//! ([`HOST_SW_MSI`]) and maps the host ITS doorbell there in stage 2, but
//! the write first goes through the guest's stage 1, which must pass it
//! through unchanged.

use acpi_tables::sdt::Sdt;
use arch::layout::{PCI_RIDS_PER_SEGMENT, pci_its_device_id};

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::description::{DeviceKind, HOST_SW_MSI, IORT_ITS_ID, VmDescription, VsmmuDescription};

/// IORT table revision 3 (spec E.b): node headers carry an identifier.
const IORT_REVISION: u8 = 3;
/// Revision 5 (spec E.d): the first Linux reads RMR nodes from.
const IORT_REVISION_RMR: u8 = 5;
/// Offset of the first node: header + node count + node offset + reserved.
const NODES_OFFSET: u32 = 48;

const NODE_ITS_GROUP: u8 = 0;
const NODE_ROOT_COMPLEX: u8 = 2;
const NODE_SMMU_V3: u8 = 4;
const NODE_RMR: u8 = 6;

const ITS_GROUP_REVISION: u8 = 1;
const SMMU_V3_REVISION: u8 = 4;
const ROOT_COMPLEX_REVISION: u8 = 3;
const RMR_REVISION: u8 = 3;

/// Node header: type, length, revision, identifier, mapping count and offset.
const NODE_HEADER_LEN: u32 = 16;
/// ITS group with one ITS identifier.
const ITS_GROUP_LEN: u32 = NODE_HEADER_LEN + 4 + 4;
/// SMMUv3 node data (base, flags, reserved, VATOS, model, 4 GSIVs, PXM, id index).
const SMMU_V3_LEN: u32 = NODE_HEADER_LEN + 52;
/// Root complex node data (memory properties, ATS, segment, address limit, PASID, reserved).
const ROOT_COMPLEX_LEN: u32 = NODE_HEADER_LEN + 20;
/// One ID mapping.
const ID_MAPPING_LEN: u32 = 20;
/// RMR node data (flags, descriptor count, descriptor offset).
const RMR_LEN: u32 = NODE_HEADER_LEN + 12;
/// One RMR memory range descriptor (base, length, reserved).
const RMR_DESC_LEN: u32 = 20;
/// RMR flags: remapping permitted (the guest may still give the function
/// another domain, e.g. to VFIO), access attributes Device-nGnRE (bits 9:2
/// = 0x01): the window is a doorbell, not memory.
const RMR_FLAGS: u32 = 1 | (0x01 << 2);

/// SMMUv3 flags bit 0: the SMMU's accesses are cache coherent.
const SMMU_FLAG_COHACC_OVERRIDE: u32 = 1 << 0;
/// SMMUv3 model: generic (the only model that makes Linux look for NVDA200C).
const SMMU_MODEL_GENERIC: u32 = 0;
/// ID mapping flag: a single ID (the node's own DeviceID).
const ID_MAPPING_SINGLE: u32 = 1 << 0;
/// Root complex memory access: fully coherent (CCA = 1).
const RC_CACHE_COHERENT: u32 = 1;
/// Root complex memory flags: CPM (coherent path to memory) | DACS (device
/// attributes cacheable and inner shareable). CANWBS is left clear: it is a
/// host property the guest has no use for.
const RC_MEMORY_FLAGS: u8 = 0b011;
/// Root complex memory address size limit in bits.
const RC_MEMORY_ADDRESS_LIMIT: u8 = 64;

/// One ID mapping: `count` IDs from `input_base` go to `output_base` of the
/// node at `output_node` (an offset in the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMapping {
    /// First input ID.
    pub input_base: u32,
    /// Number of IDs (the table stores `count - 1`).
    pub count: u32,
    /// First output ID.
    pub output_base: u32,
    /// Offset of the target node.
    pub output_node: u32,
    /// Single mapping.
    pub single: bool,
}

/// Where the RIDs of one segment go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RidTarget {
    Smmu,
    Its,
}

/// Split `[0, total)` into runs: the ranges in `exceptions` (start, count,
/// sorted, non-overlapping) get `exception`, the gaps get `default`.
fn rid_runs(
    total: u32,
    exceptions: &[(u32, u32)],
    default: RidTarget,
    exception: RidTarget,
) -> Vec<(u32, u32, RidTarget)> {
    let mut runs = Vec::new();
    let mut next = 0;
    for &(start, count) in exceptions {
        if start > next {
            runs.push((next, start - next, default));
        }
        runs.push((start, count, exception));
        next = start + count;
    }
    if next < total {
        runs.push((next, total - next, default));
    }
    // Neighbouring runs with the same target become one mapping.
    let mut merged: Vec<(u32, u32, RidTarget)> = Vec::with_capacity(runs.len());
    for run in runs {
        match merged.last_mut() {
            Some(last) if last.2 == run.2 && last.0 + last.1 == run.0 => last.1 += run.1,
            _ => merged.push(run),
        }
    }
    merged
}

/// The root complex mappings of every segment, computed once so that the
/// node lengths and the bytes agree.
fn root_complex_mappings(vm: &VmDescription, its: u32, smmu: &[u32]) -> Vec<Vec<IdMapping>> {
    vm.layout
        .pci_segments
        .iter()
        .map(|segment| {
            let vsmmu = vm.vsmmu_of_segment(segment.id);
            let mut passthrough: Vec<(u32, u32)> = vm
                .devices
                .iter()
                .filter(|d| d.segment == segment.id && d.vsmmu.is_none())
                .map(|d| (u32::from(d.bdf.rid()), u32::from(pci::FUNCTIONS_PER_DEVICE)))
                .collect();
            passthrough.sort_unstable();
            let runs = match vsmmu {
                Some(_) => rid_runs(
                    PCI_RIDS_PER_SEGMENT,
                    &passthrough,
                    RidTarget::Smmu,
                    RidTarget::Its,
                ),
                None => rid_runs(PCI_RIDS_PER_SEGMENT, &[], RidTarget::Its, RidTarget::Its),
            };
            runs.into_iter()
                .map(|(start, count, target)| match (target, vsmmu) {
                    (RidTarget::Smmu, Some(v)) => IdMapping {
                        input_base: start,
                        count,
                        output_base: start,
                        output_node: smmu[v.index as usize],
                        single: false,
                    },
                    _ => IdMapping {
                        input_base: start,
                        count,
                        output_base: pci_its_device_id(segment.id, start as u16),
                        output_node: its,
                        single: false,
                    },
                })
                .collect()
        })
        .collect()
}

fn smmu_mappings(vsmmu: &VsmmuDescription, its: u32) -> [IdMapping; 2] {
    [
        // StreamIDs (= RIDs) on to the ITS DeviceIDs of the segment.
        IdMapping {
            input_base: 0,
            count: PCI_RIDS_PER_SEGMENT,
            output_base: pci_its_device_id(vsmmu.segment, 0),
            output_node: its,
            single: false,
        },
        // The vSMMU's own DeviceID; `SMMU_ID_MAPPING_INDEX` points here.
        IdMapping {
            input_base: 0,
            count: 1,
            output_base: vsmmu.layout.its_device_id,
            output_node: its,
            single: true,
        },
    ]
}

/// Index of the vSMMU's own DeviceID mapping in its mapping array.
const SMMU_ID_MAPPING_INDEX: u32 = 1;

fn append_u8(sdt: &mut Sdt, v: u8) {
    sdt.append_slice(&[v]);
}
fn append_u16(sdt: &mut Sdt, v: u16) {
    sdt.append_slice(&v.to_le_bytes());
}
fn append_u32(sdt: &mut Sdt, v: u32) {
    sdt.append_slice(&v.to_le_bytes());
}
fn append_u64(sdt: &mut Sdt, v: u64) {
    sdt.append_slice(&v.to_le_bytes());
}

fn append_node_header(
    sdt: &mut Sdt,
    kind: u8,
    len: u32,
    revision: u8,
    id: u32,
    mappings: u32,
    mapping_offset: u32,
) {
    append_u8(sdt, kind);
    append_u16(sdt, len as u16);
    append_u8(sdt, revision);
    append_u32(sdt, id);
    append_u32(sdt, mappings);
    append_u32(sdt, if mappings == 0 { 0 } else { mapping_offset });
}

fn append_mapping(sdt: &mut Sdt, m: &IdMapping) {
    append_u32(sdt, m.input_base);
    append_u32(sdt, m.count - 1);
    append_u32(sdt, m.output_base);
    append_u32(sdt, m.output_node);
    append_u32(sdt, if m.single { ID_MAPPING_SINGLE } else { 0 });
}

/// Per vSMMU with passthrough functions behind it: (index, their StreamIDs).
fn rmr_streams(vm: &VmDescription) -> Vec<(usize, Vec<u32>)> {
    vm.vsmmus
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            let sids: Vec<u32> = vm
                .devices
                .iter()
                .filter(|d| d.kind == DeviceKind::Passthrough && d.vsmmu == Some(v.index))
                .map(|d| d.stream_id())
                .collect();
            (!sids.is_empty()).then_some((i, sids))
        })
        .collect()
}

/// Build the IORT of `vm`; `ats[i]` is whether vSMMU `i` shows ATS.
pub fn build(vm: &VmDescription, ats: &[bool]) -> Sdt {
    let its = NODES_OFFSET;
    let smmu_len = SMMU_V3_LEN + 2 * ID_MAPPING_LEN;
    let smmu: Vec<u32> = (0..vm.vsmmus.len() as u32)
        .map(|i| its + ITS_GROUP_LEN + i * smmu_len)
        .collect();
    let rc_start = its + ITS_GROUP_LEN + smmu_len * vm.vsmmus.len() as u32;
    let rc_maps = root_complex_mappings(vm, its, &smmu);
    let rc_end: u32 = rc_start
        + rc_maps
            .iter()
            .map(|maps| ROOT_COMPLEX_LEN + ID_MAPPING_LEN * maps.len() as u32)
            .sum::<u32>();
    let rmrs = rmr_streams(vm);
    let rmr_len = |sids: &[u32]| RMR_LEN + ID_MAPPING_LEN * sids.len() as u32 + RMR_DESC_LEN;
    let end = rc_end + rmrs.iter().map(|(_, sids)| rmr_len(sids)).sum::<u32>();

    let mut sdt = Sdt::new(
        *b"IORT",
        36,
        if rmrs.is_empty() {
            IORT_REVISION
        } else {
            IORT_REVISION_RMR
        },
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    let node_count = 1 + vm.vsmmus.len() + vm.layout.pci_segments.len() + rmrs.len();
    append_u32(&mut sdt, node_count as u32);
    append_u32(&mut sdt, NODES_OFFSET);
    append_u32(&mut sdt, 0);

    // ITS group: one ITS, id 0 (the MADT GIC ITS entry's id).
    append_node_header(
        &mut sdt,
        NODE_ITS_GROUP,
        ITS_GROUP_LEN,
        ITS_GROUP_REVISION,
        IORT_ITS_ID,
        0,
        0,
    );
    append_u32(&mut sdt, 1);
    append_u32(&mut sdt, 0);

    for vsmmu in &vm.vsmmus {
        let l = &vsmmu.layout;
        append_node_header(
            &mut sdt,
            NODE_SMMU_V3,
            smmu_len,
            SMMU_V3_REVISION,
            vsmmu.iort_id,
            2,
            SMMU_V3_LEN,
        );
        append_u64(&mut sdt, l.smmu.base);
        append_u32(&mut sdt, SMMU_FLAG_COHACC_OVERRIDE);
        append_u32(&mut sdt, 0); // reserved
        append_u64(&mut sdt, 0); // VATOS
        append_u32(&mut sdt, SMMU_MODEL_GENERIC);
        append_u32(&mut sdt, l.eventq_gsiv);
        append_u32(&mut sdt, 0); // no PRI queue
        append_u32(&mut sdt, l.gerror_gsiv);
        append_u32(&mut sdt, l.sync_gsiv);
        append_u32(&mut sdt, 0); // proximity domain
        append_u32(&mut sdt, SMMU_ID_MAPPING_INDEX);
        for m in &smmu_mappings(vsmmu, its) {
            append_mapping(&mut sdt, m);
        }
    }

    for (segment, maps) in vm.layout.pci_segments.iter().zip(&rc_maps) {
        let len = ROOT_COMPLEX_LEN + ID_MAPPING_LEN * maps.len() as u32;
        // ATS supported (bit 0) where the segment's vSMMU shows IDR0.ATS:
        // Linux enables a function's ATC only when both say so.
        let ats = u32::from(vm.vsmmus.iter().any(|v| {
            v.segment == segment.id && ats.get(v.index as usize).copied().unwrap_or(false)
        }));
        append_node_header(
            &mut sdt,
            NODE_ROOT_COMPLEX,
            len,
            ROOT_COMPLEX_REVISION,
            vm.iort_rc_id(segment.id),
            maps.len() as u32,
            ROOT_COMPLEX_LEN,
        );
        append_u32(&mut sdt, RC_CACHE_COHERENT);
        append_u8(&mut sdt, 0); // hints
        append_u16(&mut sdt, 0); // reserved
        append_u8(&mut sdt, RC_MEMORY_FLAGS);
        append_u32(&mut sdt, ats);
        append_u32(&mut sdt, u32::from(segment.id));
        append_u8(&mut sdt, RC_MEMORY_ADDRESS_LIMIT);
        append_u16(&mut sdt, 0); // PASID capabilities
        append_u8(&mut sdt, 0); // reserved
        for m in maps {
            append_mapping(&mut sdt, m);
        }
    }

    let first_rmr_id = 1 + vm.vsmmus.len() as u32 + vm.layout.pci_segments.len() as u32;
    for (n, (i, sids)) in rmrs.iter().enumerate() {
        let len = rmr_len(sids);
        let mappings_end = RMR_LEN + ID_MAPPING_LEN * sids.len() as u32;
        append_node_header(
            &mut sdt,
            NODE_RMR,
            len,
            RMR_REVISION,
            first_rmr_id + n as u32,
            sids.len() as u32,
            RMR_LEN,
        );
        append_u32(&mut sdt, RMR_FLAGS);
        append_u32(&mut sdt, 1);
        append_u32(&mut sdt, mappings_end);
        for sid in sids {
            append_mapping(
                &mut sdt,
                &IdMapping {
                    input_base: *sid,
                    count: 1,
                    output_base: *sid,
                    output_node: smmu[*i],
                    single: false,
                },
            );
        }
        append_u64(&mut sdt, HOST_SW_MSI.base);
        append_u64(&mut sdt, HOST_SW_MSI.size);
        append_u32(&mut sdt, 0);
    }
    debug_assert_eq!(sdt.len() as u32, end);
    sdt.update_checksum();
    sdt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rid_runs_cover_everything_in_order_with_exceptions_carved_out() {
        let runs = rid_runs(
            0x1000,
            &[(0x10, 8), (0x18, 8), (0x40, 8)],
            RidTarget::Smmu,
            RidTarget::Its,
        );
        assert_eq!(
            runs,
            vec![
                (0, 0x10, RidTarget::Smmu),
                (0x10, 0x10, RidTarget::Its),
                (0x20, 0x20, RidTarget::Smmu),
                (0x40, 8, RidTarget::Its),
                (0x48, 0x1000 - 0x48, RidTarget::Smmu),
            ]
        );
        let total: u32 = runs.iter().map(|r| r.1).sum();
        assert_eq!(total, 0x1000);
    }

    #[test]
    fn rid_runs_without_exceptions_is_one_run() {
        assert_eq!(
            rid_runs(0x1000, &[], RidTarget::Its, RidTarget::Its),
            vec![(0, 0x1000, RidTarget::Its)]
        );
    }

    fn vm(devices: &[&str]) -> VmDescription {
        let config = crate::config::VmConfig {
            vsmmu: crate::config::VsmmuConfig::parse("smmuv3").unwrap(),
            devices: devices
                .iter()
                .enumerate()
                .map(|(i, d)| crate::config::DeviceConfig::parse(d, i).unwrap())
                .collect(),
            ..crate::config::VmConfig::default()
        };
        let host = crate::host_topology::HostTopology::emulated(&config, 4 << 10);
        VmDescription::new(config, &host, 16).unwrap()
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    /// (type, offset) of every node.
    fn nodes(b: &[u8]) -> Vec<(u8, usize)> {
        let mut at = u32_at(b, 40) as usize;
        (0..u32_at(b, 36))
            .map(|_| {
                let node = (b[at], at);
                at += usize::from(u16::from_le_bytes([b[at + 1], b[at + 2]]));
                node
            })
            .collect()
    }

    #[test]
    fn passthrough_behind_a_vsmmu_gets_an_identity_rmr_over_the_host_msi_window() {
        let sdt = build(
            &vm(&[
                "path=/sys/bus/pci/devices/0000:00:02.0,iommu=on",
                "path=/sys/bus/pci/devices/0000:00:03.0",
                "path=/sys/bus/pci/devices/0000:00:04.0,iommu=on",
            ]),
            &[false],
        );
        let b = sdt.as_slice();
        assert_eq!(b[8], IORT_REVISION_RMR, "RMR needs IORT E.d");
        let n = nodes(b);
        let smmu = n.iter().find(|(t, _)| *t == NODE_SMMU_V3).unwrap().1;
        let &(_, rmr) = n.iter().find(|(t, _)| *t == NODE_RMR).expect("an RMR node");
        assert_eq!(n.last().unwrap().1, rmr, "after the root complexes");
        assert_eq!(b[rmr + 3], RMR_REVISION);
        assert_eq!(
            u32_at(b, rmr + 8),
            2,
            "the two iommu=on functions, not the iommu=off one"
        );
        let maps = rmr + u32_at(b, rmr + 12) as usize;
        for (k, sid) in [0x08u32, 0x18].into_iter().enumerate() {
            let m = maps + 20 * k;
            assert_eq!(
                [
                    u32_at(b, m),
                    u32_at(b, m + 4),
                    u32_at(b, m + 8),
                    u32_at(b, m + 12),
                    u32_at(b, m + 16)
                ],
                [sid, 0, sid, smmu as u32, 0],
                "mapping {k}: one StreamID to the same StreamID of the vSMMU"
            );
        }
        assert_eq!(u32_at(b, rmr + 16), RMR_FLAGS);
        assert_eq!(RMR_FLAGS & 1, 1, "remapping permitted");
        assert_eq!((RMR_FLAGS >> 2) & 0xff, 1, "Device-nGnRE");
        assert_eq!(u32_at(b, rmr + 20), 1, "one memory range");
        let desc = rmr + u32_at(b, rmr + 24) as usize;
        assert_eq!(
            (u64_at(b, desc), u64_at(b, desc + 8)),
            (0x0800_0000, 0x10_0000)
        );
        assert_eq!(desc + RMR_DESC_LEN as usize, b.len());
        assert_eq!(b.iter().fold(0u8, |a, x| a.wrapping_add(*x)), 0);
    }

    #[test]
    fn virtio_functions_rids_go_to_the_its_not_the_vsmmu() {
        let config = crate::config::VmConfig {
            vsmmu: crate::config::VsmmuConfig::parse("cmdqv,backend=emulated").unwrap(),
            test_devices: vec![crate::config::TestDeviceConfig::parse("id=dma0", 0).unwrap()],
            disks: vec![crate::config::DiskConfig::parse("path=/img", 0).unwrap()],
            console: crate::config::ConsoleConfig::Null,
            ..crate::config::VmConfig::default()
        };
        let host = crate::host_topology::HostTopology::emulated(&config, 4 << 10);
        let vm = VmDescription::new(config, &host, 16).unwrap();
        let maps = root_complex_mappings(&vm, 7, &[9]);
        let target = |rid: u32| {
            let m = maps[0]
                .iter()
                .find(|m| m.input_base <= rid && rid < m.input_base + m.count)
                .unwrap();
            (m.output_node, m.input_base, m.count)
        };
        assert_eq!(target(0x08).0, 9, "the test endpoint is behind the vSMMU");
        // The disk (00:02.0) and the console (00:03.0): one run to the ITS.
        assert_eq!(target(0x10), (7, 0x10, 0x10));
        assert_eq!(target(0x18), (7, 0x10, 0x10));
        assert_eq!(target(0x20).0, 9);
    }

    #[test]
    fn no_passthrough_behind_a_vsmmu_no_rmr_and_revision_e_b() {
        let sdt = build(&vm(&["path=/sys/bus/pci/devices/0000:00:03.0"]), &[false]);
        let b = sdt.as_slice();
        assert_eq!(b[8], IORT_REVISION);
        assert!(nodes(b).iter().all(|(t, _)| *t != NODE_RMR));
    }

    #[test]
    fn the_root_complex_shows_ats_exactly_when_its_vsmmu_does() {
        let vm = vm(&["path=/sys/bus/pci/devices/0000:00:02.0,iommu=on"]);
        for ats in [false, true] {
            let sdt = build(&vm, &[ats]);
            let b = sdt.as_slice();
            let &(_, rc) = nodes(b)
                .iter()
                .find(|(t, _)| *t == NODE_ROOT_COMPLEX)
                .unwrap();
            // Node data after the 16-byte header: memory properties (8), then
            // the ATS attribute.
            assert_eq!(u32_at(b, rc + 16 + 8) & 1, u32::from(ats));
        }
    }
}
