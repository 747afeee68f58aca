//! aarch64 vCPUs: initialisation (PSCI 0.2, secondaries powered off until
//! PSCI CPU_ON), boot registers, and the run loop that dispatches MMIO exits
//! to the device bus until the guest powers off or resets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use arch::aarch64::regs::{BOOT_PSTATE, PC, PSTATE, xreg};
use kvm_bindings::{
    KVM_ARM_VCPU_POWER_OFF, KVM_ARM_VCPU_PSCI_0_2, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN, kvm_vcpu_init,
};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vmm_sys_util::eventfd::EventFd;

use super::{KvmError, ioctl};
use crate::bus::MmioBus;
use crate::exit::{VmExit, VmFailure};
use devices::lock_unpoisoned;

/// Shared between the vCPU threads of one VM run and the VMM thread: why
/// the VM stops, and the pause handshake.
pub struct RunState {
    stop: AtomicBool,
    exit: Mutex<Option<VmExit>>,
    /// Written when a stop is requested: wakes the VMM's event loop.
    stopped: EventFd,
    pause: Mutex<Pause>,
    /// Signalled when `pause` changes (a vCPU parks or leaves, a resume or
    /// a stop is requested).
    pause_changed: Condvar,
}

#[derive(Default)]
struct Pause {
    requested: bool,
    parked: usize,
}

impl RunState {
    /// A running VM whose stop request writes `stopped`.
    pub fn new(stopped: EventFd) -> Self {
        RunState {
            stop: AtomicBool::new(false),
            exit: Mutex::new(None),
            stopped,
            pause: Mutex::new(Pause::default()),
            pause_changed: Condvar::new(),
        }
    }

    /// Record why the VM stops (the first reason wins), ask every vCPU to
    /// stop (parked ones too) and wake the VMM thread.
    pub fn request_stop(&self, why: VmExit) {
        {
            let mut exit = lock_unpoisoned(&self.exit);
            if exit.is_none() {
                *exit = Some(why);
            }
        }
        self.stop.store(true, Ordering::SeqCst);
        let _guard = lock_unpoisoned(&self.pause);
        self.pause_changed.notify_all();
        if let Err(err) = self.stopped.write(1) {
            log::error!(target: "vcpu", "cannot wake the VMM thread: {err}");
        }
    }

    /// True once a stop was requested.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The recorded reason.
    pub fn exit(&self) -> VmExit {
        lock_unpoisoned(&self.exit)
            .clone()
            .unwrap_or(VmExit::Failed(VmFailure::NoReason))
    }

    /// Ask every vCPU to park before its next KVM_RUN (the caller kicks
    /// the ones inside KVM_RUN out with a signal).
    pub fn request_pause(&self) {
        lock_unpoisoned(&self.pause).requested = true;
    }

    /// Let parked vCPUs run again.
    pub fn resume(&self) {
        lock_unpoisoned(&self.pause).requested = false;
        self.pause_changed.notify_all();
    }

    /// Wait up to `timeout` until `count` vCPUs are parked; true if they are.
    pub fn wait_parked(&self, count: usize, timeout: Duration) -> bool {
        let pause = lock_unpoisoned(&self.pause);
        let (pause, _) = self
            .pause_changed
            .wait_timeout_while(pause, timeout, |p| p.parked < count)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pause.parked >= count
    }

    /// Called by a vCPU thread between two KVM_RUNs: while a pause is
    /// requested (and no stop), sleep here, outside the guest.
    fn park_while_paused(&self, index: u32) {
        let mut pause = lock_unpoisoned(&self.pause);
        if !pause.requested || self.stopping() {
            return;
        }
        pause.parked += 1;
        log::debug!(target: "vcpu", "vCPU {index} paused");
        self.pause_changed.notify_all();
        while pause.requested && !self.stopping() {
            pause = self
                .pause_changed
                .wait(pause)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        pause.parked -= 1;
        self.pause_changed.notify_all();
        log::debug!(target: "vcpu", "vCPU {index} resumed");
    }
}

/// Initialise vCPU `index`: PSCI 0.2 in the kernel; vCPU 0 enters the
/// kernel at `entry` with x0 = the device tree, the others wait powered off
/// for PSCI CPU_ON (Documentation/arch/arm64/booting.rst).
pub fn init(vm: &VmFd, vcpu: &VcpuFd, index: u32, entry: u64, fdt: u64) -> Result<(), KvmError> {
    let mut kvi = kvm_vcpu_init::default();
    vm.get_preferred_target(&mut kvi)
        .map_err(ioctl("KVM_ARM_PREFERRED_TARGET"))?;
    kvi.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
    if index > 0 {
        kvi.features[0] |= 1 << KVM_ARM_VCPU_POWER_OFF;
    }
    vcpu.vcpu_init(&kvi)
        .map_err(ioctl(format!("KVM_ARM_VCPU_INIT(vCPU {index})")))?;
    if index == 0 {
        set_reg(vcpu, PSTATE, BOOT_PSTATE)?;
        set_reg(vcpu, PC, entry)?;
        for (n, value) in [(0u8, fdt), (1, 0), (2, 0), (3, 0)] {
            let id = xreg(n).ok_or_else(|| KvmError::Ioctl {
                call: format!("register id of x{n}"),
                err: kvm_ioctls::Error::new(libc::EINVAL),
            })?;
            set_reg(vcpu, id, value)?;
        }
    }
    Ok(())
}

fn set_reg(vcpu: &VcpuFd, id: u64, value: u64) -> Result<(), KvmError> {
    vcpu.set_one_reg(id, &value.to_le_bytes())
        .map(|_| ())
        .map_err(ioctl(format!("KVM_SET_ONE_REG({id:#x}, {value:#x})")))
}

/// Log where a stopped vCPU was, for post-mortems of a guest that hung.
fn log_position(vcpu: &VcpuFd, index: u32) {
    let mut pc = [0u8; 8];
    let mut pstate = [0u8; 8];
    if vcpu.get_one_reg(PC, &mut pc).is_ok() && vcpu.get_one_reg(PSTATE, &mut pstate).is_ok() {
        log::info!(
            target: "vcpu",
            "vCPU {index} stopped at pc={:#x} pstate={:#x}",
            u64::from_le_bytes(pc),
            u64::from_le_bytes(pstate)
        );
    }
}

/// Run one vCPU until the VM stops. MMIO exits go to `bus`; PSCI
/// SYSTEM_OFF / SYSTEM_RESET (KVM system events) stop the whole VM. While
/// the VM is paused the thread sleeps between two KVM_RUNs, so the guest
/// makes no progress.
pub fn run(mut vcpu: VcpuFd, index: u32, bus: Arc<MmioBus>, state: Arc<RunState>) {
    while !state.stopping() {
        state.park_while_paused(index);
        if state.stopping() {
            break;
        }
        match vcpu.run() {
            Ok(VcpuExit::MmioRead(addr, data)) => bus.read(addr, data),
            Ok(VcpuExit::MmioWrite(addr, data)) => bus.write(addr, data),
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                let why = match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => VmExit::PowerOff,
                    KVM_SYSTEM_EVENT_RESET => VmExit::Reset,
                    other => VmExit::Failed(VmFailure::UnknownSystemEvent {
                        vcpu: index,
                        event: other,
                    }),
                };
                log::info!(target: "vcpu", "vCPU {index}: system event {kind}: {why:?}");
                state.request_stop(why);
            }
            Ok(other) => {
                let why = VmFailure::UnexpectedExit {
                    vcpu: index,
                    exit: format!("{other:?}"),
                };
                log::error!(target: "vcpu", "{why}");
                state.request_stop(VmExit::Failed(why));
            }
            Err(err) if err.errno() == libc::EINTR || err.errno() == libc::EAGAIN => {}
            Err(err) => {
                let why = VmFailure::KvmRun {
                    vcpu: index,
                    errno: err.errno(),
                };
                log::error!(target: "vcpu", "{why}");
                state.request_stop(VmExit::Failed(why));
            }
        }
    }
    log_position(&vcpu, index);
}
