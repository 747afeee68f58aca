//! `cloud-hypervisor`: boot an aarch64 KVM guest with a virtual SMMUv3 and,
//! optionally, the NVIDIA Tegra241 CMDQ-V.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vmm::acpi::AcpiTables;
use vmm::config::{
    CPUS_SYNTAX, CpusConfig, DEVICE_SYNTAX, DeviceConfig, MEMORY_SYNTAX, MemoryConfig,
    SERIAL_SYNTAX, SerialConfig, TEST_DEVICE_SYNTAX, TestDeviceConfig, VSMMU_SYNTAX, VmConfig,
    VsmmuConfig,
};
use vmm::description::VmDescription;

/// SID slots of the CMD-QV a VM sees (PARAM.NUM_SID_PER_VM_LOG2 = 4), the
/// number QEMU exposes too; a host with fewer lowers it at run time.
const CMDQV_SID_SLOTS: usize = 16;

#[derive(Parser, Debug)]
#[command(
    name = "cloud-hypervisor",
    version,
    about = "Boot an aarch64 KVM guest with a virtual SMMUv3 and the NVIDIA Tegra241 CMDQ-V"
)]
struct Cli {
    /// Kernel Image to boot.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Initramfs to hand the kernel.
    #[arg(long, value_name = "PATH")]
    initramfs: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STRING", default_value = "")]
    cmdline: String,
    #[arg(long, value_name = "OPTIONS", help = CPUS_SYNTAX, value_parser = CpusConfig::parse)]
    cpus: Option<CpusConfig>,
    #[arg(long, value_name = "OPTIONS", help = MEMORY_SYNTAX, value_parser = MemoryConfig::parse)]
    memory: Option<MemoryConfig>,
    #[arg(long, value_name = "OPTIONS", help = DEVICE_SYNTAX, action = clap::ArgAction::Append)]
    device: Vec<String>,
    #[arg(long = "test-device", value_name = "OPTIONS", help = TEST_DEVICE_SYNTAX, action = clap::ArgAction::Append)]
    test_device: Vec<String>,
    #[arg(long, value_name = "OPTIONS", help = VSMMU_SYNTAX, value_parser = VsmmuConfig::parse)]
    vsmmu: Option<VsmmuConfig>,
    #[arg(long, value_name = "OPTIONS", help = SERIAL_SYNTAX, value_parser = SerialConfig::parse)]
    serial: Option<SerialConfig>,
    /// Write every ACPI table of the VM to DIR/<SIGNATURE>.dat and exit
    /// without starting the VM (no KVM, no host devices needed).
    #[arg(long, value_name = "DIR")]
    dump_acpi: Option<PathBuf>,
    /// More log output (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

impl Cli {
    fn into_config(self) -> Result<(VmConfig, Option<PathBuf>), String> {
        let devices = self
            .device
            .iter()
            .enumerate()
            .map(|(i, d)| DeviceConfig::parse(d, i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let test_devices = self
            .test_device
            .iter()
            .enumerate()
            .map(|(i, d)| TestDeviceConfig::parse(d, i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let config = VmConfig {
            kernel: self.kernel,
            initramfs: self.initramfs,
            cmdline: self.cmdline,
            cpus: self.cpus.unwrap_or_default(),
            memory: self.memory.unwrap_or_default(),
            devices,
            test_devices,
            vsmmu: self.vsmmu.unwrap_or_default(),
            serial: self.serial.unwrap_or(SerialConfig::Tty),
        };
        Ok((config, self.dump_acpi))
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let (config, dump_acpi) = cli.into_config()?;
    config
        .validate(dump_acpi.is_none())
        .map_err(|e| e.to_string())?;
    let vm = VmDescription::new(config, CMDQV_SID_SLOTS).map_err(|e| e.to_string())?;
    let tables = AcpiTables::build(&vm);
    if let Some(dir) = dump_acpi {
        let written = tables
            .dump(&dir)
            .map_err(|e| format!("cannot write ACPI tables to {}: {e}", dir.display()))?;
        for path in written {
            println!("{}", path.display());
        }
        return Ok(());
    }
    vmm::host_backend::preflight(&vm.config).map_err(|e| e.to_string())?;
    boot(&vm)
}

/// Run the VM until the guest powers off; a guest reset rebuilds it.
#[cfg(target_arch = "aarch64")]
fn boot(vm: &VmDescription) -> Result<(), String> {
    use vmm::kvm::vcpu::VmExit;
    let mut boots = 0u32;
    loop {
        boots += 1;
        match vmm::vm::run_once(vm).map_err(|e| e.to_string())? {
            VmExit::PowerOff => {
                log::info!(target: "vmm", "guest powered off after {boots} boot(s)");
                return Ok(());
            }
            VmExit::Reset => {
                log::info!(target: "vmm", "guest reset: rebuilding the VM (boot {})", boots + 1);
            }
            VmExit::Failed(why) => return Err(why),
        }
    }
}

#[cfg(not(target_arch = "aarch64"))]
fn boot(_vm: &VmDescription) -> Result<(), String> {
    Err("booting a VM needs an aarch64 KVM host; this build can only --dump-acpi".into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    env_logger::Builder::new().filter_level(level).init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cloud-hypervisor: {message}");
            ExitCode::FAILURE
        }
    }
}
