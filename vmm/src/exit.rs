//! Why a VM stopped: what the vCPUs report and the control loop acts on.

/// Why a VM stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// PSCI SYSTEM_OFF.
    PowerOff,
    /// PSCI SYSTEM_RESET, or vm.reboot.
    Reset,
    /// Stopped by the VMM: vm.shutdown, vm.delete, vmm.shutdown.
    Shutdown,
    /// A vCPU could not go on, or a signal ended the VMM.
    Failed(VmFailure),
}

/// What made a VM fail, with the vCPU and the kernel's errno where there
/// is one, so a caller can tell a host problem from a guest one before it
/// becomes the one-sentence message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VmFailure {
    /// KVM reported a system event the VMM does not know.
    #[error("vCPU {vcpu}: unknown system event {event}")]
    UnknownSystemEvent {
        /// The vCPU.
        vcpu: u32,
        /// KVM_SYSTEM_EVENT_* value.
        event: u32,
    },
    /// A KVM_RUN exit the VMM does not handle.
    #[error("vCPU {vcpu}: unexpected exit {exit}")]
    UnexpectedExit {
        /// The vCPU.
        vcpu: u32,
        /// The exit as kvm-ioctls names it.
        exit: String,
    },
    /// KVM_RUN failed with something other than EINTR/EAGAIN.
    #[error("vCPU {vcpu}: KVM_RUN failed: {}", std::io::Error::from_raw_os_error(*errno))]
    KvmRun {
        /// The vCPU.
        vcpu: u32,
        /// errno.
        errno: i32,
    },
    /// The vCPU thread could not install its seccomp filter.
    #[error("vCPU {vcpu}: {reason}")]
    Seccomp {
        /// The vCPU.
        vcpu: u32,
        /// The filter error.
        reason: String,
    },
    /// The vCPU thread could not be pinned to its host CPUs.
    #[error("vCPU {vcpu}: cannot pin to host CPUs {cpus}: {}", std::io::Error::from_raw_os_error(*errno))]
    Pin {
        /// The vCPU.
        vcpu: u32,
        /// The host CPUs, as a list.
        cpus: String,
        /// errno of sched_setaffinity.
        errno: i32,
    },
    /// The vCPU thread could not be created.
    #[error("cannot start vCPU {vcpu}: {}", std::io::Error::from_raw_os_error(*errno))]
    VcpuStart {
        /// The vCPU.
        vcpu: u32,
        /// errno of the failed clone.
        errno: i32,
    },
    /// SIGTERM or SIGINT ended the VMM.
    #[error("terminated by signal {0}")]
    Signal(i32),
    /// The vCPUs stopped and none said why.
    #[error("vCPUs stopped without a reason")]
    NoReason,
    /// The VMM stopped the vCPUs itself (a reason that is never the first).
    #[error("stopped")]
    Stopped,
}
