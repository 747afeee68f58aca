//! ACPI tables of the VM: RSDP, XSDT, FADT, MADT, GTDT, MCFG, SPCR, DSDT,
//! IORT and, with guest NUMA nodes, SRAT and SLIT, laid out at the start of
//! the firmware region at the top of RAM.

pub mod dsdt;
pub mod iort;
pub mod platform;
pub mod srat;

use std::io;
use std::path::Path;

use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;

use crate::description::VmDescription;

/// OEM id in every table header.
pub const OEM_ID: [u8; 6] = *b"CLOUDH";
/// OEM table id in every table header.
pub const OEM_TABLE_ID: [u8; 8] = *b"CHVSMMU3";
/// OEM revision in every table header.
pub const OEM_REVISION: u32 = 1;

/// XSDT revision 1.
const XSDT_REVISION: u8 = 1;
/// Tables start on 8-byte boundaries (XSDT entries are 64-bit pointers).
const TABLE_ALIGN: u64 = 8;

/// One table and where it sits in guest memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiTable {
    /// Four-letter signature (`RSDP` for the root pointer).
    pub signature: String,
    /// Guest physical address.
    pub addr: u64,
    /// Raw bytes, checksummed.
    pub bytes: Vec<u8>,
}

/// Every table of one VM.
#[derive(Clone, Debug)]
pub struct AcpiTables {
    /// Tables in placement order; the RSDP first.
    pub tables: Vec<AcpiTable>,
}

fn align_up(addr: u64) -> u64 {
    addr.div_ceil(TABLE_ALIGN) * TABLE_ALIGN
}

impl AcpiTables {
    /// Build and place every table of `vm` as its configuration alone
    /// decides them (`--dump-acpi`: no host, so `ats=auto` shows no ATS).
    pub fn build(vm: &VmDescription) -> Self {
        let ats: Vec<bool> = vm
            .vsmmus
            .iter()
            .map(|_| vm.config.vsmmu.ats == crate::config::AtsMode::On)
            .collect();
        Self::build_with_ats(vm, &ats)
    }

    /// Build and place every table of `vm`; `ats[i]` is whether vSMMU `i`
    /// shows ATS (its IDR0.ATS, composed with the host's), which the IORT
    /// root complex behind it must agree with.
    pub fn build_with_ats(vm: &VmDescription, ats: &[bool]) -> Self {
        let base = vm.layout.firmware.base;
        // The tables the XSDT lists, FADT last so it can point at the DSDT.
        let listed: Vec<(&str, Vec<u8>)> = vec![
            ("APIC", platform::madt(vm).as_slice().to_vec()),
            ("GTDT", platform::gtdt().as_slice().to_vec()),
            ("MCFG", platform::mcfg(vm)),
            ("SPCR", platform::spcr().as_slice().to_vec()),
            ("IORT", iort::build(vm, ats).as_slice().to_vec()),
        ];
        let numa = [("SRAT", srat::srat(vm)), ("SLIT", srat::slit(vm))];
        let listed: Vec<(&str, Vec<u8>)> = listed
            .into_iter()
            .chain(
                numa.into_iter()
                    .filter_map(|(sig, t)| Some((sig, t?.as_slice().to_vec()))),
            )
            .collect();
        let dsdt = dsdt::build(vm).as_slice().to_vec();
        let fadt_len = platform::fadt(0).len() as u64;
        let xsdt_len = 36 + 8 * (listed.len() as u64 + 1);

        let rsdp_addr = base;
        let xsdt_addr = align_up(rsdp_addr + Rsdp::len() as u64);
        let dsdt_addr = align_up(xsdt_addr + xsdt_len);
        let fadt_addr = align_up(dsdt_addr + dsdt.len() as u64);
        let mut next = align_up(fadt_addr + fadt_len);
        let mut placed = Vec::with_capacity(listed.len());
        for (signature, bytes) in listed {
            placed.push(AcpiTable {
                signature: signature.to_string(),
                addr: next,
                bytes,
            });
            next = align_up(next + placed.last().map_or(0, |t| t.bytes.len() as u64));
        }

        let mut xsdt = Sdt::new(
            *b"XSDT",
            36,
            XSDT_REVISION,
            OEM_ID,
            OEM_TABLE_ID,
            OEM_REVISION,
        );
        xsdt.append_slice(&fadt_addr.to_le_bytes());
        for table in &placed {
            xsdt.append_slice(&table.addr.to_le_bytes());
        }
        xsdt.update_checksum();

        let mut rsdp_bytes = Vec::new();
        acpi_tables::Aml::to_aml_bytes(&Rsdp::new(OEM_ID, xsdt_addr), &mut rsdp_bytes);

        let mut tables = vec![
            AcpiTable {
                signature: "RSDP".into(),
                addr: rsdp_addr,
                bytes: rsdp_bytes,
            },
            AcpiTable {
                signature: "XSDT".into(),
                addr: xsdt_addr,
                bytes: xsdt.as_slice().to_vec(),
            },
            AcpiTable {
                signature: "DSDT".into(),
                addr: dsdt_addr,
                bytes: dsdt,
            },
            AcpiTable {
                signature: "FACP".into(),
                addr: fadt_addr,
                bytes: platform::fadt(dsdt_addr).as_slice().to_vec(),
            },
        ];
        tables.extend(placed);
        AcpiTables { tables }
    }

    /// Address of the RSDP (what the EFI configuration table points at).
    pub fn rsdp_addr(&self) -> u64 {
        self.tables.first().map_or(0, |t| t.addr)
    }

    /// The table with `signature`.
    pub fn get(&self, signature: &str) -> Option<&AcpiTable> {
        self.tables.iter().find(|t| t.signature == signature)
    }

    /// Total bytes from the RSDP to the end of the last table.
    pub fn span(&self) -> u64 {
        self.tables
            .iter()
            .map(|t| t.addr + t.bytes.len() as u64)
            .max()
            .unwrap_or(0)
            - self.rsdp_addr()
    }

    /// Write every table to `dir/<SIGNATURE>.dat`, raw, as `acpidump -b` does.
    pub fn dump(&self, dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::with_capacity(self.tables.len());
        for table in &self.tables {
            let path = dir.join(format!("{}.dat", table.signature));
            std::fs::write(&path, &table.bytes)?;
            log::info!(target: "acpi", "{}: {} bytes -> {}", table.signature, table.bytes.len(), path.display());
            written.push(path);
        }
        Ok(written)
    }
}
