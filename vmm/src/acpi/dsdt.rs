//! The DSDT: PCIe host bridges, the PL011 console and the CMDQ-V companion
//! devices, in AML built with the acpi_tables crate.
//!
//! The CMDQ-V device is what the guest's arm-smmu-v3 driver looks up when it
//! probes an IORT SMMUv3 node of model "generic": `_HID "NVDA200C"` with a
//! `_UID` equal to that node's IORT identifier. Its `_CRS` holds the whole
//! 0x50000 window as a QWordMemory descriptor (the 6.12-6.18 driver takes the
//! first address-space descriptor) and an edge-triggered, active-high
//! interrupt.

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Arg, BufferData, Device, EISAName, Equal, If, Interrupt,
    Memory32Fixed, Method, Name, Path, ResourceTemplate, Return, Scope, Uuid,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::{Aml, AmlSink};
use arch::layout::{PciSegmentLayout, UART_BASE, UART_GSIV, UART_SIZE};

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::description::{VmDescription, VsmmuDescription};

/// DSDT revision 2: 64-bit AML integers.
const DSDT_REVISION: u8 = 2;
/// The companion device's hardware id (drivers/iommu/arm/arm-smmu-v3/tegra241-cmdqv.c).
pub const CMDQV_HID: &str = "NVDA200C";

/// AML already serialised, for handing owned children to a `Scope`.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

fn serialise(aml: &dyn Aml) -> RawAml {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    RawAml(bytes)
}

fn pci_host_bridge(segment: &PciSegmentLayout) -> RawAml {
    let name = format!("PC{:02X}", segment.id);
    let seg = u64::from(segment.id);
    let mmio32 = segment.mmio32;
    let mmio64 = segment.mmio64;
    let buses = AddressSpace::<u16>::new_bus_number(0, u16::from(segment.last_bus));
    let window32 = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        mmio32.base as u32,
        (mmio32.end() - 1) as u32,
        None,
    );
    let window64 = AddressSpace::<u64>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        mmio64.base,
        mmio64.end() - 1,
        None,
    );
    let crs = ResourceTemplate::new(vec![&buses, &window32, &window64]);
    // PCI Firmware spec 4.6.5 (_DSM function 5 = 0): keep the BARs as the
    // VMM placed them. Linux honours an IORT RMR for a PCI function only
    // then (the RMR's StreamIDs must stay valid), and the VMM places every
    // BAR itself anyway. Function 0 reports functions 0 and 5.
    let uuid = Uuid::new(PCI_DSM_UUID);
    let functions = BufferData::new(vec![(1 << 0) | (1 << 5)]);
    let none = BufferData::new(vec![0]);
    let (zero, five) = (0u8, 5u8);
    let is_pci = Equal::new(&Arg(0), &uuid);
    let query = Equal::new(&Arg(2), &zero);
    let preserve = Equal::new(&Arg(2), &five);
    let answer_query = Return::new(&functions);
    let answer_preserve = Return::new(&zero);
    let if_query = If::new(&query, vec![&answer_query]);
    let if_preserve = If::new(&preserve, vec![&answer_preserve]);
    let if_pci = If::new(&is_pci, vec![&if_query, &if_preserve]);
    let otherwise = Return::new(&none);
    let dsm = Method::new("_DSM".into(), 4, false, vec![&if_pci, &otherwise]);
    serialise(&Device::new(
        Path::new(&name),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0A08")),
            &Name::new("_CID".into(), &EISAName::new("PNP0A03")),
            &Name::new("_ADR".into(), &0u64),
            &Name::new("_SEG".into(), &seg),
            &Name::new("_UID".into(), &seg),
            &Name::new("_BBN".into(), &0u64),
            &Name::new("_CCA".into(), &1u64),
            &Name::new("_CRS".into(), &crs),
            &dsm,
        ],
    ))
}

/// The PCI host bridge _DSM UUID (PCI Firmware spec 4.6).
const PCI_DSM_UUID: &str = "e5c937d0-3553-4d7a-9117-ea4d19c3434d";

/// A motherboard-resources device (PNP0C02) claiming a segment's ECAM
/// window, as firmware does, so the OS knows the window is taken (Linux
/// otherwise logs "[Firmware Bug]: ECAM area ... not reserved").
fn ecam_reservation(segment: &PciSegmentLayout) -> RawAml {
    let name = format!("RS{:02X}", segment.id);
    let window = AddressSpace::<u64>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        segment.ecam.base,
        segment.ecam.end() - 1,
        None,
    );
    let crs = ResourceTemplate::new(vec![&window]);
    serialise(&Device::new(
        Path::new(&name),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0C02")),
            &Name::new("_UID".into(), &u64::from(segment.id)),
            &Name::new("_CRS".into(), &crs),
        ],
    ))
}

fn pl011() -> RawAml {
    let registers = Memory32Fixed::new(true, UART_BASE as u32, UART_SIZE as u32);
    // consumer, level triggered, active high, exclusive
    let irq = Interrupt::new(true, false, false, false, UART_GSIV);
    let crs = ResourceTemplate::new(vec![&registers, &irq]);
    serialise(&Device::new(
        "COM0".into(),
        vec![
            &Name::new("_HID".into(), &"ARMH0011"),
            &Name::new("_UID".into(), &0u64),
            &Name::new("_CRS".into(), &crs),
        ],
    ))
}

/// The NVDA200C companion of `vsmmu`.
fn cmdqv(vsmmu: &VsmmuDescription) -> RawAml {
    let window = vsmmu.layout.cmdqv;
    let name = format!("CV{:02X}", vsmmu.index);
    let registers = AddressSpace::<u64>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        window.base,
        window.end() - 1,
        None,
    );
    // consumer, edge triggered, active high, exclusive
    let irq = Interrupt::new(true, true, false, false, vsmmu.layout.cmdqv_gsiv);
    let crs = ResourceTemplate::new(vec![&registers, &irq]);
    serialise(&Device::new(
        Path::new(&name),
        vec![
            &Name::new("_HID".into(), &CMDQV_HID),
            &Name::new("_UID".into(), &u64::from(vsmmu.iort_id)),
            &Name::new("_CCA".into(), &1u64),
            &Name::new("_CRS".into(), &crs),
        ],
    ))
}

/// Build the DSDT of `vm`.
pub fn build(vm: &VmDescription) -> Sdt {
    let mut children: Vec<RawAml> = vec![pl011()];
    children.extend(vm.layout.pci_segments.iter().map(pci_host_bridge));
    children.extend(vm.layout.pci_segments.iter().map(ecam_reservation));
    children.extend(vm.vsmmus.iter().filter(|v| v.cmdqv).map(cmdqv));
    let refs: Vec<&dyn Aml> = children.iter().map(|c| c as &dyn Aml).collect();
    let mut sdt = Sdt::new(
        *b"DSDT",
        36,
        DSDT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    Scope::new("\\_SB_".into(), refs).to_aml_bytes(&mut sdt);
    sdt.update_checksum();
    sdt
}
