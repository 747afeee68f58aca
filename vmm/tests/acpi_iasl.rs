//! Dump the ACPI tables of three VMs with `cloud-hypervisor --dump-acpi`,
//! disassemble every table with `iasl -d` (acpica-tools), and check the
//! disassembly says what the guest's IORT and CMDQ-V code needs.
//!
//! Skip-free on purpose: with no iasl the test fails, so CI (which installs
//! acpica-tools) cannot pass without having checked the bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cloud-hypervisor");

/// A dump directory, removed when the test ends.
struct DumpDir(PathBuf);

impl Drop for DumpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for DumpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

fn dump(name: &str, args: &[&str]) -> DumpDir {
    let dir = std::env::temp_dir().join(format!("ch-acpi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(BIN)
        .args(args)
        .arg("--dump-acpi")
        .arg(&dir)
        .output()
        .expect("run cloud-hypervisor");
    assert!(
        out.status.success(),
        "cloud-hypervisor {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    DumpDir(dir)
}

fn read(dir: &Path, sig: &str) -> Vec<u8> {
    std::fs::read(dir.join(format!("{sig}.dat"))).unwrap_or_else(|e| panic!("{sig}.dat: {e}"))
}

/// Disassemble one table; fail on any error or warning iasl reports.
fn iasl(dir: &Path, sig: &str) -> String {
    let out = Command::new("iasl")
        .current_dir(dir)
        .args(["-d", &format!("{sig}.dat")])
        .output()
        .expect("iasl not found: install acpica-tools (apt-get install acpica-tools)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "iasl -d {sig}.dat failed:\n{text}");
    for line in text.lines() {
        let lower = line.to_lowercase();
        assert!(
            !(lower.contains("error") || lower.contains("warning") || lower.contains("invalid")),
            "iasl -d {sig}.dat reported: {line}\n{text}"
        );
    }
    let dsl = std::fs::read_to_string(dir.join(format!("{sig}.dsl"))).expect("iasl wrote no .dsl");
    // iasl learned the IORT RMR node (type 6, spec E.d) in 2021; Debian
    // bookworm ships 20200925, which stops at it with this one line. The
    // nodes before it are still checked here, the RMR bytes by
    // acpi::iort's unit tests and by the guest kernel in the nested lane.
    let unknown_rmr = "**** Unknown IORT node type 0x6";
    let flagged: Vec<&str> = dsl
        .lines()
        .filter(|l| l.contains("****") && !(sig == "IORT" && l.trim() == unknown_rmr))
        .collect();
    assert!(flagged.is_empty(), "iasl flagged {sig}: {flagged:?}\n{dsl}");
    dsl
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// Check every table: SDTs through iasl and their checksums; the RSDP by
/// hand, because iasl 20200925 (Debian 12) only disassembles tables with a
/// standard SDT header and refuses a standalone RSDP.
fn check_all(dir: &Path) -> BTreeMap<String, String> {
    let rsdp = read(dir, "RSDP");
    assert_eq!(&rsdp[0..8], b"RSD PTR ");
    assert_eq!(rsdp.len(), 36);
    assert!(checksum_ok(&rsdp[..20]), "RSDP checksum");
    assert!(checksum_ok(&rsdp), "RSDP extended checksum");
    assert_eq!(rsdp[15], 2, "RSDP revision");

    let xsdt = read(dir, "XSDT");
    let entries = (xsdt.len() - 36) / 8;
    let mut dsl = BTreeMap::new();
    let mut listed = Vec::new();
    for entry in 0..entries {
        listed.push(le64(&xsdt, 36 + 8 * entry));
    }
    assert_eq!(
        listed.len(),
        6,
        "XSDT lists FACP, APIC, GTDT, MCFG, SPCR, IORT"
    );
    for sig in [
        "XSDT", "FACP", "APIC", "GTDT", "MCFG", "SPCR", "IORT", "DSDT",
    ] {
        let bytes = read(dir, sig);
        assert_eq!(&bytes[0..4], sig.as_bytes());
        assert_eq!(le32(&bytes, 4) as usize, bytes.len(), "{sig} length field");
        assert!(checksum_ok(&bytes), "{sig} checksum");
        dsl.insert(sig.to_string(), iasl(dir, sig));
    }
    dsl
}

/// `[off] Field Name : Value` lines of a data-table disassembly, in order.
fn fields(dsl: &str) -> Vec<(String, String)> {
    dsl.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix('[')?;
            let (_, rest) = rest.split_once(']')?;
            let (name, value) = rest.split_once(':')?;
            Some((name.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}

fn hex(value: &str) -> u64 {
    let v = value.split_whitespace().next().unwrap();
    u64::from_str_radix(v, 16).unwrap_or_else(|_| panic!("not hex: {value}"))
}

#[derive(Debug, Default, Clone)]
struct IortNode {
    offset: u64,
    kind: u64,
    identifier: u64,
    values: Vec<(String, String)>,
    mappings: Vec<(u64, u64, u64, u64)>, // input base, id count, output base, output reference
}

/// Split the IORT disassembly into nodes. The node header's identifier is
/// printed as "Identifier" by newer iasl and as "Reserved" by 20200925.
fn iort_nodes(dsl: &str) -> Vec<IortNode> {
    let mut nodes = Vec::new();
    let mut current: Option<IortNode> = None;
    let mut mapping: Vec<u64> = Vec::new();
    for line in dsl.lines() {
        let Some(rest) = line.trim_start().strip_prefix('[') else {
            continue;
        };
        let Some((off, rest)) = rest.split_once(']') else {
            continue;
        };
        let Some((name, value)) = rest.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        let offset = u64::from_str_radix(off.split('h').next().unwrap().trim(), 16).unwrap();
        if name == "Type" {
            if let Some(node) = current.take() {
                nodes.push(node);
            }
            current = Some(IortNode {
                offset,
                kind: hex(value),
                ..Default::default()
            });
            continue;
        }
        let Some(node) = current.as_mut() else {
            continue;
        };
        if offset == node.offset + 4 {
            node.identifier = hex(value);
        }
        match name {
            "Input base" => mapping = vec![hex(value)],
            "ID Count" | "Output Base" => mapping.push(hex(value)),
            "Output Reference" => {
                mapping.push(hex(value));
                node.mappings
                    .push((mapping[0], mapping[1], mapping[2], mapping[3]));
            }
            _ => node.values.push((name.to_string(), value.to_string())),
        }
    }
    nodes.extend(current);
    nodes
}

fn value<'a>(node: &'a IortNode, name: &str) -> &'a str {
    &node
        .values
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in {node:?}"))
        .1
}

#[derive(Debug)]
struct CmdqvDevice {
    name: String,
    uid: u64,
    base: u64,
    length: u64,
    irq_edge_high: bool,
}

fn aml_int(token: &str) -> u64 {
    match token {
        "Zero" => 0,
        "One" => 1,
        t => u64::from_str_radix(t.trim_start_matches("0x"), 16).unwrap(),
    }
}

/// Every `_HID "NVDA200C"` device of a DSDT disassembly.
fn cmdqv_devices(dsl: &str) -> Vec<CmdqvDevice> {
    let mut devices = Vec::new();
    for block in dsl.split("Device (").skip(1) {
        if !block.contains("Name (_HID, \"NVDA200C\")") {
            continue;
        }
        let name = block[..4].to_string();
        let uid = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("Name (_UID, "))
            .map(|rest| aml_int(rest.split(')').next().unwrap()))
            .unwrap();
        let lines: Vec<&str> = block.lines().map(str::trim).collect();
        let grab = |label: &str| {
            lines
                .iter()
                .find(|l| l.ends_with(label))
                .map(|l| aml_int(l.split(',').next().unwrap()))
                .unwrap_or_else(|| panic!("{label} missing in {name}"))
        };
        assert!(
            block.contains("QWordMemory ("),
            "CMD-QV window must be a QWordMemory descriptor"
        );
        let (base, length) = (grab("// Range Minimum"), grab("// Length"));
        devices.push(CmdqvDevice {
            name,
            uid,
            base,
            length,
            irq_edge_high: block
                .contains("Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive"),
        });
    }
    devices
}

#[test]
fn no_vsmmu_tables_disassemble_cleanly_and_have_no_smmu() {
    let dir = dump("none", &["--cpus", "boot=2"]);
    let dsl = check_all(&dir);
    let nodes = iort_nodes(&dsl["IORT"]);
    assert_eq!(nodes.iter().filter(|n| n.kind == 4).count(), 0);
    let its = nodes.iter().find(|n| n.kind == 0).expect("ITS group");
    let rc = nodes.iter().find(|n| n.kind == 2).expect("root complex");
    assert_eq!(rc.mappings.len(), 1);
    assert_eq!(
        rc.mappings[0].1, 0xfff,
        "id_count is the number of RIDs minus one"
    );
    assert_eq!(rc.mappings[0].3, its.offset, "RIDs go straight to the ITS");
    assert!(cmdqv_devices(&dsl["DSDT"]).is_empty());
    // The host bridge asks the guest to keep the BARs where the VMM put
    // them (_DSM function 5 returns 0), without which Linux ignores RMRs.
    let dsdt = &dsl["DSDT"];
    let dsm = dsdt.find("Method (_DSM, 4").expect("a host bridge _DSM");
    let body = &dsdt[dsm..];
    assert!(
        body.contains("e5c937d0-3553-4d7a-9117-ea4d19c3434d"),
        "{body}"
    );
    let five = body.find("If ((Arg2 == 0x05))").expect("function 5");
    assert!(
        body[five..]
            .trim_start_matches(|c: char| c != 'R')
            .starts_with("Return (Zero)"),
        "{body}"
    );
    let madt = fields(&dsl["APIC"]);
    let gicc = madt
        .iter()
        .filter(|(n, v)| n == "Subtable Type" && v.starts_with("0B"))
        .count();
    assert_eq!(gicc, 2, "one GICC per vCPU");
}

#[test]
fn cmdqv_with_two_devices_describes_companion_matching_the_smmu_node() {
    let dir = dump(
        "cmdqv",
        &[
            "--vsmmu",
            "cmdqv,backend=emulated",
            "--device",
            "path=/sys/bus/pci/devices/0009:01:00.0,iommu=on",
            "--device",
            "path=/dev/vfio/devices/vfio7,iommu=on,id=nic",
        ],
    );
    let dsl = check_all(&dir);
    let nodes = iort_nodes(&dsl["IORT"]);
    let smmus: Vec<&IortNode> = nodes.iter().filter(|n| n.kind == 4).collect();
    assert_eq!(smmus.len(), 1);
    let smmu = smmus[0];
    assert_eq!(
        value(smmu, "Model"),
        "00000000",
        "generic model, or Linux ignores NVDA200C"
    );
    assert_eq!(
        hex(value(smmu, "Flags (decoded below)")) & 1,
        1,
        "COHACC override"
    );
    for gsiv in ["Event GSIV", "GERR GSIV", "Sync GSIV"] {
        assert_ne!(hex(value(smmu, gsiv)), 0, "{gsiv}");
    }
    let its = nodes.iter().find(|n| n.kind == 0).unwrap();
    let own = smmu.mappings[hex(value(smmu, "Device ID Mapping Index")) as usize];
    assert_eq!(
        (own.1, own.3),
        (0, its.offset),
        "the SMMU's own DeviceID maps to the ITS"
    );

    let cmdqvs = cmdqv_devices(&dsl["DSDT"]);
    assert_eq!(cmdqvs.len(), 1);
    let cv = &cmdqvs[0];
    assert_eq!(
        cv.uid, smmu.identifier,
        "{} _UID must equal the IORT SMMUv3 identifier",
        cv.name
    );
    assert_eq!(cv.base, 0x0B00_0000, "CMD-QV window at the CMD-QV base");
    assert_eq!(cv.length, 0x5_0000, "CMD-QV window is 0x50000");
    assert!(
        cv.irq_edge_high,
        "CMD-QV interrupt must be edge, active high"
    );

    let rc = nodes.iter().find(|n| n.kind == 2).unwrap();
    assert_eq!(rc.mappings.len(), 1);
    assert_eq!(
        rc.mappings[0],
        (0, 0xfff, 0, smmu.offset),
        "all RIDs map 1:1 to StreamIDs"
    );
}

#[test]
fn two_vsmmus_on_two_segments_each_own_their_root_complex() {
    let dir = dump(
        "two",
        &[
            "--vsmmu",
            "cmdqv,backend=emulated",
            "--device",
            "path=/dev/vfio/devices/vfio0,iommu=on",
            "--device",
            "path=/dev/vfio/devices/vfio1,iommu=on,pci_segment=1",
            "--device",
            "path=/dev/vfio/devices/vfio2,iommu=off,pci_segment=1",
        ],
    );
    let dsl = check_all(&dir);
    let nodes = iort_nodes(&dsl["IORT"]);
    let its = nodes.iter().find(|n| n.kind == 0).unwrap();
    let smmus: Vec<&IortNode> = nodes.iter().filter(|n| n.kind == 4).collect();
    let rcs: Vec<&IortNode> = nodes.iter().filter(|n| n.kind == 2).collect();
    assert_eq!((smmus.len(), rcs.len()), (2, 2));
    assert_ne!(
        smmus[0].identifier, smmus[1].identifier,
        "identifiers are unique"
    );

    let cmdqvs = cmdqv_devices(&dsl["DSDT"]);
    assert_eq!(cmdqvs.len(), 2);
    for (cv, smmu) in cmdqvs.iter().zip(&smmus) {
        assert_eq!(cv.uid, smmu.identifier);
        assert_eq!(cv.length, 0x5_0000);
    }
    assert_ne!(cmdqvs[0].base, cmdqvs[1].base);

    // Segment 0: everything to SMMU 0.
    assert_eq!(value(rcs[0], "PCI Segment Number"), "00000000");
    assert_eq!(rcs[0].mappings, vec![(0, 0xfff, 0, smmus[0].offset)]);
    // Segment 1: 00:01.x (iommu=on) to SMMU 1, 00:02.x (iommu=off) to the
    // ITS with the segment's DeviceID base, the rest to SMMU 1.
    assert_eq!(value(rcs[1], "PCI Segment Number"), "00000001");
    assert_eq!(
        rcs[1].mappings,
        vec![
            (0, 0x0f, 0, smmus[1].offset),
            (0x10, 7, 0x1000 + 0x10, its.offset),
            (0x18, 0xfff - 0x18, 0x18, smmus[1].offset),
        ]
    );
    let mcfg = fields(&dsl["MCFG"]);
    let segments: Vec<&str> = mcfg
        .iter()
        .filter(|(n, _)| n == "Segment Group Number")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(segments, ["0000", "0001"]);
}

#[test]
fn two_host_smmus_get_two_vsmmus_with_their_own_root_complex_and_companion() {
    // No pci_segment= anywhere: the host SMMU of each endpoint alone puts
    // gpu0 and nic0 behind one vSMMU (segment 0) and gpu1 behind another.
    let dir = dump(
        "host-smmus",
        &[
            "--vsmmu",
            "cmdqv,backend=emulated",
            "--test-device",
            "id=gpu0,host_smmu=smmu3.0x0000000012000000",
            "--test-device",
            "id=gpu1,host_smmu=smmu3.0x0000000022000000",
            "--test-device",
            "id=nic0,host_smmu=smmu3.0x0000000012000000",
        ],
    );
    let dsl = check_all(&dir);
    let nodes = iort_nodes(&dsl["IORT"]);
    let smmus: Vec<&IortNode> = nodes.iter().filter(|n| n.kind == 4).collect();
    let rcs: Vec<&IortNode> = nodes.iter().filter(|n| n.kind == 2).collect();
    assert_eq!((smmus.len(), rcs.len()), (2, 2));
    assert_ne!(smmus[0].identifier, smmus[1].identifier);
    for (segment, (rc, smmu)) in rcs.iter().zip(&smmus).enumerate() {
        assert_eq!(hex(value(rc, "PCI Segment Number")), segment as u64);
        assert_eq!(
            rc.mappings,
            vec![(0, 0xfff, 0, smmu.offset)],
            "segment {segment}"
        );
    }
    let cmdqvs = cmdqv_devices(&dsl["DSDT"]);
    assert_eq!(cmdqvs.len(), 2);
    for (cv, smmu) in cmdqvs.iter().zip(&smmus) {
        assert_eq!(
            cv.uid, smmu.identifier,
            "{} pairs with its own SMMUv3 node",
            cv.name
        );
    }
}

#[test]
fn bad_options_exit_non_zero_naming_the_value_without_a_backtrace() {
    for (args, needle) in [
        (vec!["--vsmmu", "cmdqv,backend=nope"], "backend=nope"),
        (vec!["--memory", "size=lots"], "size=lots"),
        (
            vec!["--device", "path=/dev/vfio/devices/vfio0,iommu=on"],
            "--vsmmu is off",
        ),
        (vec!["--vsmmu", "cmdqv"], "needs at least one --device"),
        (
            vec!["--device", "path=/dev/vfio/devices/vfio0,colour=red"],
            "unknown key 'colour'",
        ),
    ] {
        let dir = std::env::temp_dir().join("ch-acpi-never-written");
        let out = Command::new(BIN)
            .args(&args)
            .arg("--dump-acpi")
            .arg(&dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "{stderr}"
        );
    }
}

#[test]
fn numa_with_a_generic_initiator_decodes_in_srat_and_slit() {
    let dir = dump(
        "numa",
        &[
            "--cpus",
            "boot=4",
            "--memory",
            "size=0",
            "--memory-zone",
            "id=mem0,size=256M",
            "--memory-zone",
            "id=mem1,size=128M",
            "--device",
            "path=/sys/bus/pci/devices/0009:01:00.0,id=gpu0",
            "--numa",
            "guest_numa_id=0,cpus=[0-1],distances=[1@15,2@20],memory_zones=mem0",
            "--numa",
            "guest_numa_id=1,cpus=[2-3],memory_zones=[mem1]",
            "--numa",
            "guest_numa_id=2,device_id=gpu0",
        ],
    );
    let xsdt = read(&dir, "XSDT");
    assert_eq!((xsdt.len() - 36) / 8, 8, "XSDT lists SRAT and SLIT too");
    for sig in ["SRAT", "SLIT"] {
        let bytes = read(&dir, sig);
        assert!(checksum_ok(&bytes), "{sig} checksum");
        assert_eq!(le32(&bytes, 4) as usize, bytes.len(), "{sig} length field");
    }
    let srat = iasl(&dir, "SRAT");
    let f = fields(&srat);
    let count = |name: &str, value: &str| {
        f.iter()
            .filter(|(n, v)| n == name && v.starts_with(value))
            .count()
    };
    // iasl names each structure by its subtable type.
    assert_eq!(count("Subtable Type", "03"), 4, "{srat}");
    assert_eq!(count("Subtable Type", "01"), 2, "{srat}");
    assert_eq!(count("Subtable Type", "05"), 1, "{srat}");
    let lengths: Vec<u64> = f
        .iter()
        .filter(|(n, _)| n == "Address Length")
        .map(|(_, v)| hex(v))
        .collect();
    assert!(
        lengths.contains(&(256 << 20)) && lengths.contains(&(128 << 20)),
        "{srat}"
    );
    // Segment 0, bus 0 (byte 2), devfn 0 (byte 3): a Generic Initiator
    // node names gpu0, so it sits at 00:00.0, where NVIDIA's rule looks.
    assert_eq!(
        count(
            "Device Handle",
            "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
        ),
        1,
        "{srat}"
    );
    let slit = iasl(&dir, "SLIT");
    assert!(slit.contains("Localities : 0000000000000003"), "{slit}");
    assert!(slit.contains("Locality   0 : 0A 0F 14"), "{slit}");
    assert!(slit.contains("Locality   1 : 0F 0A 14"), "{slit}");
    assert!(slit.contains("Locality   2 : 14 14 0A"), "{slit}");
}

#[test]
fn inconsistent_numa_is_refused_naming_the_vcpu() {
    let out = Command::new(BIN)
        .args([
            "--cpus",
            "boot=2",
            "--numa",
            "guest_numa_id=0,cpus=[0-1]",
            "--numa",
            "guest_numa_id=1,cpus=[1]",
            "--dump-acpi",
            "/nonexistent-not-written",
        ])
        .output()
        .expect("run cloud-hypervisor");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "vCPU 1 is in --numa guest_numa_id=0 and guest_numa_id=1; a vCPU sits on one node"
        ),
        "{err}"
    );
}

#[test]
fn ats_on_shows_in_the_root_complex() {
    let dir = dump(
        "ats",
        &[
            "--vsmmu",
            "smmuv3,backend=emulated,ats=on",
            "--device",
            "path=/sys/bus/pci/devices/0009:01:00.0,iommu=on",
        ],
    );
    let dsl = check_all(&dir);
    let ats: Vec<String> = fields(&dsl["IORT"])
        .into_iter()
        .filter(|(n, _)| n == "ATS Attribute")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(ats, ["00000001"], "{}", dsl["IORT"]);
}
