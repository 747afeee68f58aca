//! One run of an aarch64 KVM VM: memory, devices, firmware hand-off, vCPU
//! threads, pause/resume, and the teardown order when the VM stops. A
//! reset rebuilds the whole VM from its description (the VMM thread does
//! that, see `control`), so every device (the vSMMU and its CMD-QV
//! included) goes through its full teardown and comes back in power-on
//! state.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use crate::acpi::AcpiTables;
use crate::boot::{self, BootError};
use crate::bus::MmioBus;
use crate::config::SerialConfig;
use crate::counters::{self, VmCounters};
use crate::description::VmDescription;
use crate::device_manager::{Consoles, DeviceError, DeviceManager};
use crate::exit::{VmExit, VmFailure};
use crate::kvm::vcpu::{self, RunState};
use crate::kvm::{KvmError, KvmVm};
use crate::memory::{self, MemoryError};
use crate::seccomp::{self, ThreadKind};
use crate::serial_backend::SerialBackend;
use devices::GuestMemory;
use devices::legacy::Pl011;

/// How often a stopping or pausing VM re-kicks vCPUs that have not left
/// KVM_RUN yet.
const KICK_INTERVAL: Duration = Duration::from_millis(10);
/// How long every vCPU gets to park on a pause.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a VM could not run.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// KVM setup.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// Guest RAM.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Devices.
    #[error(transparent)]
    Devices(#[from] DeviceError),
    /// Kernel, initramfs, firmware tables.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// A thread could not be started.
    #[error("cannot start the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
    /// `--cpus affinity=` names host CPUs this process may not use.
    #[error(transparent)]
    Affinity(#[from] crate::affinity::AffinityError),
    /// Some vCPU did not leave the guest in time for a pause.
    #[error("not every one of the {0} vCPUs parked within 2 s; the VM keeps running")]
    Pause(usize),
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// A booted VM: its vCPU threads run the guest while the VMM thread keeps
/// this handle to pause, resume, read counters and finally stop it.
pub struct RunningVm {
    devices: DeviceManager,
    kvm: Arc<KvmVm>,
    /// Guest RAM. KVM's memory slots and the IOAS point into it, so it must
    /// outlive both; held here because without a vSMMU no device model
    /// keeps a clone (a VM without a vSMMU lost its RAM at start, and the
    /// first KVM_RUN failed with EFAULT).
    mem: GuestMemory,
    bus: Arc<MmioBus>,
    state: Arc<RunState>,
    threads: Vec<JoinHandle<()>>,
    paused: bool,
}

impl RunningVm {
    /// Build the VM of `vm` and start its vCPUs. `stopped` is written when
    /// the guest (or a failing vCPU) asks the VM to stop.
    /// `serial` is the serial console's pty or socket (modes Pty and
    /// Socket), owned by the VMM so that its path outlives a reboot.
    pub fn start(
        vm: &VmDescription,
        stopped: EventFd,
        serial: Option<Arc<SerialBackend>>,
        console_pty: Option<Arc<crate::pty::Pty>>,
    ) -> Result<Self, VmError> {
        let layout = &vm.layout;
        let config = &vm.config;
        // A pinning to CPUs this process may not use is refused before
        // anything of the VM exists.
        crate::affinity::check(&config.cpus.affinity)?;
        let mut kvm = KvmVm::new(layout)?;
        kvm.require_cacheable_pfnmap(&vm.cacheable_devices)?;
        let bindings = memory::zone_bindings(&config.memory.zones);
        let backing = memory::Backing {
            hugepages: config.memory.backed_by_hugepages(),
            shared: config.memory.shared,
        };
        let mem = memory::create(layout, backing, &bindings)?;
        kvm.add_ram(&mem)?;

        let vcpus = (0..layout.topology.vcpus)
            .map(|i| kvm.create_vcpu(u64::from(i)))
            .collect::<Result<Vec<_>, _>>()?;
        kvm.create_gic(layout)?;
        let kvm = Arc::new(kvm);

        let console = console(&config.serial, serial.as_deref())
            .map_err(|e| VmError::Thread("console", e))?;
        let devices = DeviceManager::new(
            vm,
            &mem,
            kvm.clone(),
            kvm.clone(),
            kvm.clone(),
            kvm.clone(),
            Consoles {
                uart: console,
                virtio_pty: console_pty,
            },
        )?;
        let state = Arc::new(RunState::new(stopped));
        match (&config.serial, serial) {
            (SerialConfig::Tty, _) => spawn_console_input(devices.uart.clone())
                .map_err(|e| VmError::Thread("console input", e))?,
            (_, Some(serial)) => spawn_serial_input(serial, devices.uart.clone(), state.clone())
                .map_err(|e| VmError::Thread("serial input", e))?,
            _ => {}
        }

        let ats: Vec<bool> = devices
            .vsmmus
            .iter()
            .map(|v| devices::lock_unpoisoned(&v.smmu).id_registers().ats())
            .collect();
        let tables = AcpiTables::build_with_ats(vm, &ats);
        let kernel_path = config
            .payload
            .kernel
            .as_deref()
            .ok_or(BootError::Firmware("no --kernel given".into()))?;
        let kernel = boot::load_kernel(&mem, layout, kernel_path)?;
        let initrd = config
            .payload
            .initramfs
            .as_deref()
            .map(|path| boot::load_initramfs(&mem, layout, kernel, path))
            .transpose()?;
        let fdt = boot::write_firmware(&mem, layout, &tables, &config.payload.cmdline, initrd)?;

        for (index, vcpu) in vcpus.iter().enumerate() {
            vcpu::init(kvm.vm_fd(), vcpu, index as u32, kernel.entry, fdt)?;
        }
        kvm.finalize_gic()?;

        // A no-op handler: its only job is to make KVM_RUN return EINTR.
        register_signal_handler(SIGRTMIN(), kick_handler)
            .map_err(|e| VmError::Thread("signal", std::io::Error::from_raw_os_error(e.errno())))?;

        let bus = devices.bus.clone();
        let mut running = RunningVm {
            devices,
            kvm,
            mem,
            bus,
            state,
            threads: Vec::with_capacity(vcpus.len()),
            paused: false,
        };
        for (index, vcpu) in vcpus.into_iter().enumerate() {
            let (bus, state) = (running.bus.clone(), running.state.clone());
            let pin = config
                .cpus
                .affinity
                .iter()
                .find(|a| a.vcpu as usize == index)
                .map(|a| a.host_cpus.clone());
            // Named before vm.boot answers: libvirt reads `vcpuN` right after.
            let spawned = crate::named_thread::spawn(format!("vcpu{index}"), move || {
                if let Some(cpus) = pin {
                    // Before its own filter, under the VMM thread's (which
                    // allows sched_setaffinity).
                    if let Err(e) = crate::affinity::pin_current(&cpus) {
                        state.request_stop(VmExit::Failed(VmFailure::Pin {
                            vcpu: index as u32,
                            cpus: crate::config::numa::cpu_list(&cpus),
                            errno: e.raw_os_error().unwrap_or(0),
                        }));
                        return;
                    }
                    log::info!(target: "vcpu", "vCPU {index} pinned to host CPUs {}", crate::config::numa::cpu_list(&cpus));
                }
                match seccomp::apply(ThreadKind::Vcpu) {
                    Ok(()) => vcpu::run(vcpu, index as u32, bus, state),
                    Err(err) => state.request_stop(VmExit::Failed(VmFailure::Seccomp {
                        vcpu: index as u32,
                        reason: err.to_string(),
                    })),
                }
            });
            match spawned {
                Ok(handle) => running.threads.push(handle),
                Err(e) => {
                    // Tear down the vCPUs already running before failing.
                    running.stop(VmExit::Failed(VmFailure::VcpuStart {
                        vcpu: index as u32,
                        errno: e.raw_os_error().unwrap_or(0),
                    }));
                    return Err(VmError::Thread("vCPU", e));
                }
            }
        }
        log::info!(target: "vmm", "VM running: {} vCPUs, {} MiB", running.threads.len(), layout.ram.size >> 20);
        Ok(running)
    }

    /// True once the guest or a vCPU asked the VM to stop.
    pub fn stop_requested(&self) -> bool {
        self.state.stopping()
    }

    /// Why the guest or a vCPU asked the VM to stop, once one has.
    pub fn stop_reason(&self) -> Option<VmExit> {
        self.state.stopping().then(|| self.state.exit())
    }

    /// True while the vCPUs are parked.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Deliver what the host reported (SMMU events, CMD-QV queue errors).
    pub fn poll_devices(&self) {
        self.devices.poll();
    }

    /// True when a vSMMU's backend has no fd to wait on (an emulated backend
    /// without its eventfd): the event loop then polls it every couple of ms.
    pub fn polled(&self) -> bool {
        self.devices
            .vsmmus
            .iter()
            .any(|v| v.backend.needs_polling())
    }

    /// The fds the host makes readable when it has events for the guest.
    pub fn host_event_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.devices
            .vsmmus
            .iter()
            .flat_map(|v| v.backend.event_fds())
            .collect()
    }

    /// Every device's counters now.
    pub fn counters(&self) -> VmCounters {
        counters::collect(&self.devices)
    }

    /// Park every vCPU outside KVM_RUN: the guest makes no progress until
    /// [`RunningVm::resume`]. All or nothing: if a vCPU does not park in
    /// time the others run again and the VM stays running.
    pub fn pause(&mut self) -> Result<(), VmError> {
        if self.paused {
            return Ok(());
        }
        self.state.request_pause();
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        // A kick that lands between two KVM_RUNs is lost: repeat it.
        loop {
            self.kick_vcpus();
            if self.state.wait_parked(self.threads.len(), KICK_INTERVAL) {
                break;
            }
            if self.state.stopping() || Instant::now() >= deadline {
                self.state.resume();
                return Err(VmError::Pause(self.threads.len()));
            }
        }
        self.paused = true;
        log::info!(target: "vmm", "VM paused: {} vCPUs parked", self.threads.len());
        Ok(())
    }

    /// Let the parked vCPUs run the guest again.
    pub fn resume(&mut self) {
        if self.paused {
            self.state.resume();
            self.paused = false;
            log::info!(target: "vmm", "VM resumed");
        }
    }

    /// Stop the VM (for `why`, unless the guest already gave a reason) and
    /// tear it down in the hardware's order; returns the reason it stopped.
    pub fn stop(mut self, why: VmExit) -> VmExit {
        self.state.request_stop(why);
        // Kick until every vCPU has left KVM_RUN: a kick that lands while a
        // thread is between two KVM_RUNs is lost, so repeat it.
        while self.threads.iter().any(|t| !t.is_finished()) {
            self.kick_vcpus();
            std::thread::sleep(KICK_INTERVAL);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let exit = self.state.exit();
        log_exit_counts(&self.bus);
        for line in self.devices.stats() {
            log::info!(target: "stats", "{line}");
        }
        for event in counters::events(&counters::collect(&self.devices)) {
            crate::events::emit(event);
        }
        log::info!(target: "vmm", "VM stopped: {exit:?}; tearing down");
        self.devices.shutdown();
        drop(self.devices);
        drop(self.kvm);
        drop(self.mem);
        exit
    }

    fn kick_vcpus(&self) {
        for t in self.threads.iter().filter(|t| !t.is_finished()) {
            let _ = t.kill(SIGRTMIN());
        }
    }
}

/// Where the guest's console output goes.
fn console(
    serial: &SerialConfig,
    backend: Option<&SerialBackend>,
) -> std::io::Result<Box<dyn std::io::Write + Send>> {
    Ok(match serial {
        SerialConfig::Tty => Box::new(std::io::stdout()),
        SerialConfig::Pty | SerialConfig::Socket(_) => match backend {
            Some(backend) => backend.writer()?,
            None => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "serial mode Pty or Socket without its pty or socket",
                ));
            }
        },
        SerialConfig::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        SerialConfig::Off | SerialConfig::Null => Box::new(std::io::sink()),
    })
}

/// Feed what is typed on the pty or socket to the console until the VM
/// stops.
fn spawn_serial_input(
    serial: Arc<SerialBackend>,
    uart: Arc<std::sync::Mutex<Pl011>>,
    state: Arc<RunState>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("serial-in".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            while !state.stopping() {
                let n = match serial.read_input(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        log::warn!(target: "vmm", "serial console input stops: {e}");
                        return;
                    }
                };
                let mut rest = &buf[..n];
                while !rest.is_empty() && !state.stopping() {
                    let queued = devices::lock_unpoisoned(&uart).queue_input(rest);
                    rest = &rest[queued..];
                    if !rest.is_empty() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        })?;
    Ok(())
}

/// Feed the VMM's stdin to the console, as the FIFO has room; ends at EOF.
fn spawn_console_input(uart: Arc<std::sync::Mutex<Pl011>>) -> std::io::Result<()> {
    use std::io::Read;
    std::thread::Builder::new()
        .name("console-in".into())
        .spawn(move || {
            if let Err(err) = seccomp::apply(ThreadKind::ConsoleIn) {
                log::error!(target: "vmm", "console input stops: {err}");
                return;
            }
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 64];
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut rest = &buf[..n];
                while !rest.is_empty() {
                    let queued = devices::lock_unpoisoned(&uart).queue_input(rest);
                    rest = &rest[queued..];
                    if !rest.is_empty() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        })?;
    Ok(())
}

fn log_exit_counts(bus: &MmioBus) {
    let (windows, unclaimed) = bus.exit_counts();
    let mut line = String::from("mmio exits:");
    for (name, count) in windows {
        line.push_str(&format!(" {name}={count}"));
    }
    line.push_str(&format!(" unclaimed={unclaimed}"));
    log::info!(target: "stats", "{line}");
}
