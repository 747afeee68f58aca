//! Placement (what QEMU users spell with one `pxb-pcie` + `arm-smmuv3` per
//! host SMMU, done here automatically): every `iommu=on` function whose
//! host SMMU is the same shares one vSMMU (and, with `cmdqv`, one CMD-QV);
//! each vSMMU has a PCI segment of its own, hence its own IORT root
//! complex, SMMUv3 node and NVDA200C companion. A device with an explicit
//! `pci_segment=` goes there; the others of its host SMMU follow it; a
//! host SMMU with no explicit segment takes the lowest segment no other
//! host SMMU holds. Two host SMMUs on one segment would put both behind
//! one vIOMMU, which the kernel refuses (a vIOMMU is one physical SMMU's),
//! so that is refused here, naming both devices. `iommu=off` functions sit
//! on their `pci_segment=` or on segment 0, and so do functions with no
//! known host SMMU (the emulated backend without `host_smmu=`): there
//! `pci_segment=` alone decides, one vSMMU per segment, as before host
//! SMMUs were known.
//!
//! Then the address map's 64-bit windows are sized for the passthrough
//! BARs, each segment's functions get their slots (a GPU, or a function a
//! Generic Initiator node names, takes devfn 0), and a CMD-QV's StreamID
//! slots are checked.

use std::collections::BTreeMap;

use arch::layout::{Layout, LayoutError};
use pci::SlotAllocator;

use super::functions::Function;
use super::placed::{DescriptionError, DeviceKind, PlacedDevice, VsmmuDescription};
use crate::config::{VmConfig, VsmmuKind};
use crate::host_topology::HostTopology;

/// How an SMMU key prints in errors.
fn smmu_name(smmu: &Option<String>) -> String {
    smmu.clone().unwrap_or_else(|| "(unnamed)".into())
}

/// The segment of every function in `functions`, in order (see the module
/// documentation for the rules).
pub(super) fn place_segments(functions: &[Function<'_>]) -> Result<Vec<u16>, DescriptionError> {
    // Segment -> (host SMMU, the device that claimed it), explicit claims first.
    let mut claims: BTreeMap<u16, (&Option<String>, &Function<'_>)> = BTreeMap::new();
    let mut home: Vec<(&Option<String>, u16)> = Vec::new();
    // No known host SMMU: the segment given, or 0, and nobody follows it.
    let explicit = |f: &Function<'_>| f.explicit.or(f.smmu.is_none().then_some(0));
    for f in functions.iter().filter(|f| f.iommu) {
        let Some(segment) = explicit(f) else { continue };
        match claims.get(&segment) {
            Some((smmu, first)) if **smmu != f.smmu => {
                return Err(DescriptionError::HostSmmusShareSegment {
                    segment,
                    first: first.name(),
                    first_smmu: smmu_name(smmu),
                    second: f.name(),
                    second_smmu: smmu_name(&f.smmu),
                });
            }
            Some(_) => {}
            None => {
                claims.insert(segment, (&f.smmu, f));
            }
        }
        if f.smmu.is_some() && !home.iter().any(|(smmu, _)| **smmu == f.smmu) {
            home.push((&f.smmu, segment));
        }
    }
    let mut segments = Vec::with_capacity(functions.len());
    for f in functions {
        let segment = match (f.iommu, explicit(f)) {
            (_, Some(segment)) => segment,
            (false, None) => 0,
            (true, None) => match home.iter().find(|(smmu, _)| **smmu == f.smmu) {
                Some((_, segment)) => *segment,
                None => {
                    let free = (0..=u16::MAX)
                        .find(|s| !claims.contains_key(s))
                        .ok_or(LayoutError::TooManySegments(u16::MAX))?;
                    claims.insert(free, (&f.smmu, f));
                    home.push((&f.smmu, free));
                    free
                }
            },
        };
        segments.push(segment);
    }
    Ok(segments)
}

/// Segments that get a vSMMU, with their host SMMU: every segment with an
/// `iommu=on` function; with a vSMMU requested but no such function (the
/// emulated backend), segment 0.
pub(super) fn vsmmu_segments(
    config: &VmConfig,
    functions: &[Function<'_>],
    segments: &[u16],
) -> Vec<(u16, Option<String>)> {
    if config.vsmmu.kind == VsmmuKind::Off {
        return Vec::new();
    }
    let mut with_devices: BTreeMap<u16, Option<String>> = BTreeMap::new();
    for (f, segment) in functions.iter().zip(segments) {
        if f.iommu {
            with_devices
                .entry(*segment)
                .or_insert_with(|| f.smmu.clone());
        }
    }
    if with_devices.is_empty() {
        vec![(0, None)]
    } else {
        with_devices.into_iter().collect()
    }
}

/// How many segments the VM has: up to the highest one placed, at least
/// one.
pub(super) fn segment_count(placed: &[u16]) -> u16 {
    placed
        .iter()
        .map(|s| s.saturating_add(1))
        .max()
        .unwrap_or(1)
}

/// Each segment's 64-bit window: its passthrough functions' 64-bit BARs
/// (a Grace GPU's is 128 GiB or more) plus the fixed 64 GiB's worth of
/// room for everything else.
pub(super) fn bar64_needs(
    host: &HostTopology,
    functions: &[Function<'_>],
    placed: &[u16],
    segments: u16,
) -> Vec<u64> {
    let mut bar64_needs = vec![arch::layout::PCI_MMIO64_SIZE; usize::from(segments)];
    for (f, segment) in functions.iter().zip(placed) {
        if f.kind == DeviceKind::Passthrough
            && let Some(need) = bar64_needs.get_mut(usize::from(*segment))
        {
            let bars = host
                .device_bar64_bytes
                .get(f.config_index)
                .copied()
                .unwrap_or(0);
            *need = need.saturating_add(bars);
        }
    }
    bar64_needs
}

/// The vSMMUs, one per segment of `vsmmu_segments`, at their place in
/// `layout`.
pub(super) fn vsmmus(
    config: &VmConfig,
    vsmmu_segments: &[(u16, Option<String>)],
    layout: &Layout,
) -> Vec<VsmmuDescription> {
    let cmdqv = config.vsmmu.kind == VsmmuKind::Cmdqv;
    vsmmu_segments
        .iter()
        .zip(&layout.vsmmus)
        .map(|((segment, host_smmu), vlayout)| VsmmuDescription {
            index: vlayout.index,
            segment: *segment,
            cmdqv,
            iort_id: vlayout.index + 1,
            layout: *vlayout,
            host_smmu: host_smmu.clone(),
        })
        .collect()
}

/// Every function at its address on its segment (`placed`), behind its
/// segment's vSMMU if `iommu=on`.
pub(super) fn devices(
    config: &VmConfig,
    host: &HostTopology,
    functions: &[Function<'_>],
    placed: Vec<u16>,
    vsmmus: &[VsmmuDescription],
    segments: u16,
) -> Result<Vec<PlacedDevice>, DescriptionError> {
    let mut slots: Vec<SlotAllocator> = (0..segments).map(SlotAllocator::new).collect();
    let mut devices = Vec::with_capacity(functions.len());
    for (f, segment) in functions.iter().zip(placed) {
        let slots = slots
            .get_mut(usize::from(segment))
            .ok_or(LayoutError::TooManySegments(segment))?;
        let gpu = takes_devfn_zero(config, host, f);
        let bdf = match gpu.then(|| slots.take_device_zero()).flatten() {
            Some(bdf) => bdf,
            None => slots.allocate()?,
        };
        let vsmmu = if f.iommu {
            let v = vsmmus
                .iter()
                .find(|v| v.segment == segment)
                .ok_or_else(|| DescriptionError::NoVsmmu(f.id.to_string()))?;
            Some(v.index)
        } else {
            None
        };
        devices.push(PlacedDevice {
            kind: f.kind,
            config_index: f.config_index,
            id: f.id.to_string(),
            segment,
            bdf,
            vsmmu,
            host_smmu: f.smmu.clone(),
        });
    }
    Ok(devices)
}

/// A GPU goes to devfn 0 of its segment, in the host bridge's place:
/// NVIDIA's driver matches its SRAT Generic Initiator entries on devfn 0
/// and ignores a GPU anywhere else. So does any function a Generic
/// Initiator node names (`--numa device_id=`), whatever its class: its GI
/// entries are then found by that rule too. A second such function on the
/// segment gets the next slot.
fn takes_devfn_zero(config: &VmConfig, host: &HostTopology, f: &Function<'_>) -> bool {
    f.kind == DeviceKind::Passthrough
        && (host
            .gpu_devices
            .get(f.config_index)
            .copied()
            .unwrap_or(false)
            || config
                .numa
                .iter()
                .any(|n| n.device_id.as_deref() == Some(f.id)))
}

/// With CMD-QV, each vSMMU's endpoints fit its CMD-QV's StreamID slots
/// (`cmdqv_sid_slots`).
pub(super) fn check_cmdqv_sid_slots(
    config: &VmConfig,
    vsmmus: &[VsmmuDescription],
    devices: &[PlacedDevice],
    cmdqv_sid_slots: usize,
) -> Result<(), DescriptionError> {
    if config.vsmmu.kind != VsmmuKind::Cmdqv {
        return Ok(());
    }
    for v in vsmmus {
        let count = devices.iter().filter(|d| d.vsmmu == Some(v.index)).count();
        if count > cmdqv_sid_slots {
            return Err(DescriptionError::TooManyVsids {
                segment: v.segment,
                count,
                max: cmdqv_sid_slots,
            });
        }
    }
    Ok(())
}
