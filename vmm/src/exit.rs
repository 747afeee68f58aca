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
    Failed(String),
}
