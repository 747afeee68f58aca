//! The fixed-layout platform tables: FADT, MADT, GTDT, MCFG and SPCR.
//!
//! MADT sub-structures and MCFG come from the acpi_tables crate; FADT, GTDT
//! and SPCR are laid out here on its generic `Sdt` because the crate's typed
//! versions do not cover arm64 (no ARM boot flags setter on its FADT builder,
//! an SBI-only SPCR, no GTDT).

use acpi_tables::Aml;
use acpi_tables::madt::{EnabledStatus, GicIts, GicVersion, Gicc, Gicd, Gicr, Trigger};
use acpi_tables::mcfg::MCFG;
use acpi_tables::sdt::Sdt;
use arch::layout::{
    GIC_DIST_BASE, GIC_ITS_BASE, GIC_MAINTENANCE_PPI, TIMER_EL1_NONSECURE_PPI,
    TIMER_EL1_SECURE_PPI, TIMER_EL2_PPI, TIMER_VIRTUAL_PPI, UART_BASE, UART_GSIV, vcpu_mpidr,
};

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::description::VmDescription;

/// FADT revision 6 (ACPI 6.x), 276 bytes, minor version 3.
const FADT_REVISION: u8 = 6;
const FADT_LEN: u32 = 276;
const FADT_MINOR_VERSION: u8 = 3;
const FADT_FLAGS_OFFSET: usize = 112;
const FADT_ARM_BOOT_ARCH_OFFSET: usize = 129;
const FADT_MINOR_VERSION_OFFSET: usize = 131;
const FADT_X_DSDT_OFFSET: usize = 140;
const FADT_HYPERVISOR_VENDOR_OFFSET: usize = 268;
/// FADT flags: HW_REDUCED_ACPI (no fixed hardware, no SCI).
const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;
/// ARM boot flags: PSCI_COMPLIANT | PSCI_USE_HVC (KVM implements PSCI over HVC).
const ARM_BOOT_ARCH_PSCI_HVC: u16 = 0b11;

/// MADT revision 6 (ACPI 6.5), whose GICC entry is 82 bytes long.
const MADT_REVISION: u8 = 6;
/// PMU overflow interrupt (PPI 7, INTID 23), level triggered.
const PMU_PPI: u32 = 23;

/// GTDT revision 2 (ACPI 6.x), 96 bytes, no platform timers.
const GTDT_REVISION: u8 = 2;
const GTDT_LEN: u32 = 96;
/// Timer interrupt flags: level triggered, active high.
const GTDT_TIMER_FLAGS: u32 = 0;

/// SPCR revision 2, 80 bytes.
const SPCR_REVISION: u8 = 2;
const SPCR_LEN: u32 = 80;
/// SPCR interface type: ARM PL011 UART.
const SPCR_INTERFACE_PL011: u8 = 3;
/// SPCR interrupt type: ARMH GIC interrupt.
const SPCR_INTERRUPT_GIC: u8 = 1 << 3;
/// SPCR baud rate code for 115200.
const SPCR_BAUD_115200: u8 = 7;

/// The FADT pointing at the DSDT at `dsdt_addr`.
pub fn fadt(dsdt_addr: u64) -> Sdt {
    let mut sdt = Sdt::new(
        *b"FACP",
        FADT_LEN,
        FADT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    sdt.write_u32(FADT_FLAGS_OFFSET, FADT_HW_REDUCED_ACPI);
    sdt.write_u16(FADT_ARM_BOOT_ARCH_OFFSET, ARM_BOOT_ARCH_PSCI_HVC);
    sdt.write_u8(FADT_MINOR_VERSION_OFFSET, FADT_MINOR_VERSION);
    sdt.write_u64(FADT_X_DSDT_OFFSET, dsdt_addr);
    sdt.write_bytes(FADT_HYPERVISOR_VENDOR_OFFSET, b"CLOUDHYP");
    sdt.update_checksum();
    sdt
}

fn append_aml(sdt: &mut Sdt, aml: &dyn Aml) {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    sdt.append_slice(&bytes);
}

/// The MADT: one GICC per vCPU, the GICv3 distributor, the redistributor
/// region and the ITS.
pub fn madt(vm: &VmDescription) -> Sdt {
    let mut sdt = Sdt::new(
        *b"APIC",
        44,
        MADT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    for cpu in 0..vm.layout.topology.vcpus {
        let gicc = Gicc::new(EnabledStatus::Enabled)
            .cpu_interface_number(cpu)
            .acpi_processor_uid(cpu)
            .mpidr(vcpu_mpidr(cpu))
            .performance_interrupt(PMU_PPI, Trigger::Level)
            .maintenance_interrupt(GIC_MAINTENANCE_PPI, Trigger::Level);
        append_aml(&mut sdt, &gicc);
    }
    append_aml(&mut sdt, &Gicd::new(0, GIC_DIST_BASE, GicVersion::GICv3));
    let redist = vm.layout.gic_redist;
    append_aml(&mut sdt, &Gicr::new(redist.base, redist.size as u32));
    append_aml(&mut sdt, &GicIts::new(0, GIC_ITS_BASE));
    sdt.update_checksum();
    sdt
}

/// The GTDT: the architected timers' PPIs; no memory-mapped timers.
pub fn gtdt() -> Sdt {
    let mut sdt = Sdt::new(
        *b"GTDT",
        GTDT_LEN,
        GTDT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    sdt.write_u64(36, u64::MAX); // CntControlBase: not present
    sdt.write_u32(48, TIMER_EL1_SECURE_PPI);
    sdt.write_u32(52, GTDT_TIMER_FLAGS);
    sdt.write_u32(56, TIMER_EL1_NONSECURE_PPI);
    sdt.write_u32(60, GTDT_TIMER_FLAGS);
    sdt.write_u32(64, TIMER_VIRTUAL_PPI);
    sdt.write_u32(68, GTDT_TIMER_FLAGS);
    sdt.write_u32(72, TIMER_EL2_PPI);
    sdt.write_u32(76, GTDT_TIMER_FLAGS);
    sdt.write_u64(80, u64::MAX); // CntReadBase: not present
    sdt.update_checksum();
    sdt
}

/// The MCFG: one ECAM window per PCI segment.
pub fn mcfg(vm: &VmDescription) -> Vec<u8> {
    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for segment in &vm.layout.pci_segments {
        mcfg.add_ecam(segment.ecam.base, segment.id, 0, segment.last_bus);
    }
    let mut bytes = Vec::new();
    mcfg.to_aml_bytes(&mut bytes);
    bytes
}

/// The SPCR: the PL011 as the console.
pub fn spcr() -> Sdt {
    let mut sdt = Sdt::new(
        *b"SPCR",
        SPCR_LEN,
        SPCR_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    sdt.write_u8(36, SPCR_INTERFACE_PL011);
    // Base address: generic address structure, system memory, 32-bit accesses.
    sdt.write_bytes(40, &[0, 32, 0, 3]);
    sdt.write_u64(44, UART_BASE);
    sdt.write_u8(52, SPCR_INTERRUPT_GIC);
    sdt.write_u32(54, UART_GSIV);
    sdt.write_u8(58, SPCR_BAUD_115200);
    sdt.write_u8(60, 1); // one stop bit
    sdt.write_u16(64, 0xffff); // not a PCI device
    sdt.write_u16(66, 0xffff);
    sdt.update_checksum();
    sdt
}
