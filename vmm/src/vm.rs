//! One run of an aarch64 KVM VM: memory, devices, firmware hand-off, vCPU
//! threads, and the teardown order when the guest powers off or resets.
//! A reset rebuilds the whole VM from its description, so every device
//! (the vSMMU and its CMD-QV included) goes through its full teardown and
//! comes back in power-on state.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use crate::acpi::AcpiTables;
use crate::boot::{self, BootError};
use crate::bus::MmioBus;
use crate::config::SerialConfig;
use crate::description::VmDescription;
use crate::device_manager::{DeviceError, DeviceManager};
use crate::kvm::vcpu::{self, RunState, VmExit};
use crate::kvm::{KvmError, KvmVm};
use crate::memory::{self, MemoryError};
use devices::legacy::Pl011;

/// How often host-side events (vEVENTQ records, CMD-QV queue errors) are
/// delivered to the guest.
const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// How often a stopping VM re-kicks vCPUs that have not left KVM_RUN yet.
const KICK_INTERVAL: Duration = Duration::from_millis(10);

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
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Set by SIGTERM / SIGINT: stop the guest and tear down in order.
static TERMINATE: AtomicI32 = AtomicI32::new(0);

extern "C" fn terminate_handler(
    signal: libc::c_int,
    _: *mut libc::siginfo_t,
    _: *mut libc::c_void,
) {
    TERMINATE.store(signal, Ordering::SeqCst);
}

/// Boot the VM once and run it until the guest powers off or resets.
pub fn run_once(vm: &VmDescription) -> Result<VmExit, VmError> {
    let layout = &vm.layout;
    let config = &vm.config;
    let mut kvm = KvmVm::new(layout)?;
    let mem = memory::create(layout, config.memory.hugepages)?;
    kvm.add_ram(&mem)?;

    let vcpus = (0..layout.topology.vcpus)
        .map(|i| kvm.create_vcpu(u64::from(i)))
        .collect::<Result<Vec<_>, _>>()?;
    kvm.create_gic(layout)?;
    let kvm = Arc::new(kvm);

    let console = console(&config.serial).map_err(|e| VmError::Thread("console", e))?;
    let mut devices = DeviceManager::new(vm, &mem, kvm.clone(), kvm.clone(), console)?;
    if config.serial == SerialConfig::Tty {
        spawn_console_input(devices.uart.clone())
            .map_err(|e| VmError::Thread("console input", e))?;
    }

    let tables = AcpiTables::build(vm);
    let kernel_path = config
        .kernel
        .as_deref()
        .ok_or(BootError::Firmware("no --kernel given".into()))?;
    let kernel = boot::load_kernel(&mem, layout, kernel_path)?;
    let initrd = config
        .initramfs
        .as_deref()
        .map(|path| boot::load_initramfs(&mem, layout, kernel, path))
        .transpose()?;
    let fdt = boot::write_firmware(&mem, layout, &tables, &config.cmdline, initrd)?;

    for (index, vcpu) in vcpus.iter().enumerate() {
        vcpu::init(kvm.vm_fd(), vcpu, index as u32, kernel.entry, fdt)?;
    }
    kvm.finalize_gic()?;

    // A no-op handler: its only job is to make KVM_RUN return EINTR.
    register_signal_handler(SIGRTMIN(), kick_handler)
        .map_err(|e| VmError::Thread("signal", std::io::Error::from_raw_os_error(e.errno())))?;
    for signal in [libc::SIGTERM, libc::SIGINT] {
        register_signal_handler(signal, terminate_handler)
            .map_err(|e| VmError::Thread("signal", std::io::Error::from_raw_os_error(e.errno())))?;
    }

    let state = Arc::new(RunState::default());
    let bus = devices.bus.clone();
    let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(vcpus.len());
    for (index, vcpu) in vcpus.into_iter().enumerate() {
        let (bus, state) = (bus.clone(), state.clone());
        let handle = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || vcpu::run(vcpu, index as u32, bus, state))
            .map_err(|e| VmError::Thread("vCPU", e))?;
        threads.push(handle);
    }
    log::info!(target: "vmm", "VM running: {} vCPUs, {} MiB", threads.len(), layout.ram.size >> 20);

    while !state.stopping() {
        devices.poll();
        let signal = TERMINATE.load(Ordering::SeqCst);
        if signal != 0 {
            state.request_stop(VmExit::Failed(format!("terminated by signal {signal}")));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    // Kick until every vCPU has left KVM_RUN: a kick that lands while a
    // thread is between two KVM_RUNs is lost, so repeat it.
    while threads.iter().any(|t| !t.is_finished()) {
        for t in threads.iter().filter(|t| !t.is_finished()) {
            let _ = t.kill(SIGRTMIN());
        }
        std::thread::sleep(KICK_INTERVAL);
    }
    for t in threads {
        let _ = t.join();
    }
    let exit = state.exit();
    log_exit_counts(&bus);
    for line in devices.stats() {
        log::info!(target: "stats", "{line}");
    }
    log::info!(target: "vmm", "VM stopped: {exit:?}; tearing down");
    devices.shutdown();
    drop(devices);
    drop(kvm);
    Ok(exit)
}

/// Where the guest's console output goes.
fn console(serial: &SerialConfig) -> std::io::Result<Box<dyn std::io::Write + Send>> {
    Ok(match serial {
        SerialConfig::Tty => Box::new(std::io::stdout()),
        SerialConfig::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        SerialConfig::Off => Box::new(std::io::sink()),
    })
}

/// Feed the VMM's stdin to the console, as the FIFO has room; ends at EOF.
fn spawn_console_input(uart: Arc<std::sync::Mutex<Pl011>>) -> std::io::Result<()> {
    use std::io::Read;
    std::thread::Builder::new()
        .name("console-in".into())
        .spawn(move || {
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
