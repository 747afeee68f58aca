//! `cloud-hypervisor`: boot an aarch64 KVM guest with a virtual SMMUv3 and,
//! optionally, the NVIDIA Tegra241 CMDQ-V.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vmm::acpi::AcpiTables;
use vmm::api::http::ApiServer;
use vmm::config::{
    API_SOCKET_SYNTAX, ApiSocket, CONSOLE_SYNTAX, CPUS_SYNTAX, ConsoleConfig, CpusConfig,
    DEVICE_SYNTAX, DISK_SYNTAX, DeviceConfig, DiskConfig, MEMORY_SYNTAX, MEMORY_ZONE_SYNTAX,
    MemoryConfig, MemoryZoneConfig, NET_SYNTAX, NUMA_SYNTAX, NetConfig, NumaConfig, PayloadConfig,
    RNG_SYNTAX, RngConfig, SERIAL_SYNTAX, SerialConfig, TEST_DEVICE_SYNTAX, TestDeviceConfig,
    VSMMU_SYNTAX, VSOCK_SYNTAX, VmConfig, VsmmuConfig, VsockConfig,
};
use vmm::control::{CMDQV_SID_SLOTS, Vmm};
use vmm::description::VmDescription;
use vmm::events::{self, EVENT_MONITOR_SYNTAX, Event, EventMonitorConfig};
use vmm::host_topology::HostTopology;
use vmm::seccomp::{SECCOMP_SYNTAX, SeccompMode, ThreadKind};

#[derive(Parser, Debug)]
#[command(
    name = "cloud-hypervisor",
    version = vmm::api::CH_VERSION_STRING,
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
    #[arg(long = "memory-zone", value_name = "OPTIONS", help = MEMORY_ZONE_SYNTAX, value_parser = MemoryZoneConfig::parse, action = clap::ArgAction::Append)]
    memory_zone: Vec<MemoryZoneConfig>,
    #[arg(long, value_name = "OPTIONS", help = NUMA_SYNTAX, value_parser = NumaConfig::parse, action = clap::ArgAction::Append)]
    numa: Vec<NumaConfig>,
    #[arg(long, value_name = "OPTIONS", help = DEVICE_SYNTAX, action = clap::ArgAction::Append)]
    device: Vec<String>,
    #[arg(long = "test-device", value_name = "OPTIONS", help = TEST_DEVICE_SYNTAX, action = clap::ArgAction::Append)]
    test_device: Vec<String>,
    #[arg(long, value_name = "OPTIONS", help = DISK_SYNTAX, action = clap::ArgAction::Append)]
    disk: Vec<String>,
    #[arg(long, value_name = "OPTIONS", help = NET_SYNTAX, action = clap::ArgAction::Append)]
    net: Vec<String>,
    #[arg(long, value_name = "OPTIONS", help = CONSOLE_SYNTAX, value_parser = ConsoleConfig::parse)]
    console: Option<ConsoleConfig>,
    #[arg(long, value_name = "OPTIONS", help = RNG_SYNTAX, value_parser = RngConfig::parse)]
    rng: Option<RngConfig>,
    #[arg(long, value_name = "OPTIONS", help = VSOCK_SYNTAX, value_parser = VsockConfig::parse)]
    vsock: Option<VsockConfig>,
    #[arg(long, value_name = "OPTIONS", help = VSMMU_SYNTAX, value_parser = VsmmuConfig::parse)]
    vsmmu: Option<VsmmuConfig>,
    #[arg(long, value_name = "OPTIONS", help = SERIAL_SYNTAX, value_parser = SerialConfig::parse)]
    serial: Option<SerialConfig>,
    #[arg(long = "api-socket", value_name = "OPTIONS", help = API_SOCKET_SYNTAX, value_parser = ApiSocket::parse)]
    api_socket: Option<ApiSocket>,
    #[arg(long = "event-monitor", value_name = "OPTIONS", help = EVENT_MONITOR_SYNTAX, value_parser = EventMonitorConfig::parse)]
    event_monitor: Option<EventMonitorConfig>,
    /// Write every ACPI table of the VM to DIR/<SIGNATURE>.dat and exit
    /// without starting the VM (no KVM, no host devices needed).
    #[arg(long, value_name = "DIR")]
    dump_acpi: Option<PathBuf>,
    #[arg(long, value_name = "true|false|log", help = SECCOMP_SYNTAX, default_value = "true", value_parser = SeccompMode::parse)]
    seccomp: SeccompMode,
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG
    /// (env_logger syntax, e.g. cmdqv=info) overrides it per target.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

impl Cli {
    fn into_config(self) -> Result<(VmConfig, Option<PathBuf>, Option<ApiSocket>), String> {
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
        let disks = self
            .disk
            .iter()
            .enumerate()
            .map(|(i, d)| DiskConfig::parse(d, i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let net = self
            .net
            .iter()
            .enumerate()
            .map(|(i, n)| NetConfig::parse(n, i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let config = VmConfig {
            payload: PayloadConfig {
                kernel: self.kernel,
                initramfs: self.initramfs,
                cmdline: self.cmdline,
            },
            cpus: self.cpus.unwrap_or_default(),
            memory: MemoryConfig {
                zones: self.memory_zone,
                ..self.memory.unwrap_or_default()
            },
            devices,
            test_devices,
            vsmmu: self.vsmmu.unwrap_or_default(),
            serial: self.serial.unwrap_or(SerialConfig::Tty),
            numa: self.numa,
            disks,
            net,
            console: self.console.unwrap_or_default(),
            rng: self.rng,
            vsock: self.vsock,
        };
        Ok((config, self.dump_acpi, self.api_socket))
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let event_monitor = cli.event_monitor.clone();
    let seccomp = cli.seccomp;
    let (config, dump_acpi, api_socket) = cli.into_config()?;
    if let Some(dir) = dump_acpi {
        config.validate(false).map_err(|e| e.to_string())?;
        let host = HostTopology::read(&config).map_err(|e| e.to_string())?;
        let vm = VmDescription::new(config, &host, CMDQV_SID_SLOTS).map_err(|e| e.to_string())?;
        let written = AcpiTables::build(&vm)
            .dump(&dir)
            .map_err(|e| format!("cannot write ACPI tables to {}: {e}", dir.display()))?;
        for path in written {
            println!("{}", path.display());
        }
        return Ok(());
    }
    // With --api-socket alone the VM comes from vm.create. --vsmmu may come
    // with it: the vSMMU of a VM whose vm.create body names none (a libvirt
    // domain cannot); other VM options without --kernel would be dropped,
    // so they are refused.
    let define_now = config.payload.kernel.is_some() || api_socket.is_none();
    let api_defaults = VmConfig {
        vsmmu: config.vsmmu.clone(),
        ..VmConfig::default()
    };
    if !define_now && config != api_defaults {
        return Err(
            "VM options without --kernel define no VM (only --vsmmu may come with \
             --api-socket alone, as the default for vm.create); give --kernel, or start with \
             --api-socket and PUT /api/v1/vm.create"
                .into(),
        );
    }
    vmm::seccomp::init(seccomp).map_err(|e| e.to_string())?;
    if let Some(monitor) = &event_monitor {
        events::start(monitor).map_err(|e| e.to_string())?;
    }
    events::emit(Event::VmmStarting);
    let result = run_vmm(config, define_now, api_socket);
    events::emit(Event::VmmShutdown);
    if events::dropped() > 0 {
        log::warn!(target: "events", "--event-monitor: {} event(s) dropped", events::dropped());
    }
    result
}

/// Run the VMM thread (and the API server) until the VMM is done.
fn run_vmm(
    config: VmConfig,
    define_now: bool,
    api_socket: Option<ApiSocket>,
) -> Result<(), String> {
    let (api_end, vmm_end) = match &api_socket {
        Some(_) => vmm::api::channel()
            .map(|(a, v)| (Some(a), Some(v)))
            .map_err(|e| format!("cannot set up the API channel: {e}"))?,
        None => (None, None),
    };
    let mut vmm = Vmm::new(vmm_end).map_err(|e| e.to_string())?;
    if !define_now {
        vmm.set_vsmmu_default(config.vsmmu.clone());
    }
    let server = match (&api_socket, api_end) {
        (Some(socket), Some(end)) => {
            Some(ApiServer::start(socket, end).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let result = if define_now {
        vmm.create(config)
            .and_then(|()| vmm.boot())
            .map_err(|e| e.to_string())
    } else {
        Ok(())
    };
    let result = result
        .and_then(|()| vmm::seccomp::apply(ThreadKind::Vmm).map_err(|e| e.to_string()))
        .and_then(|()| vmm.run().map_err(|e| e.to_string()));
    if let Some(server) = server {
        server.stop();
    }
    result
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    vmm::logging::init(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cloud-hypervisor: {message}");
            ExitCode::FAILURE
        }
    }
}
