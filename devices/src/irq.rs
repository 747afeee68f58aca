//! How a device model raises an interrupt without knowing how the VM wires it.

/// A wired interrupt output of a device model. The VMM maps each line of each
/// device to a GSIV (the same number it writes into IORT / DSDT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IrqLine {
    /// SMMUv3 event queue ("eventq" in IORT terms).
    SmmuEventq,
    /// SMMUv3 global error ("gerror").
    SmmuGerror,
    /// SMMUv3 CMD_SYNC completion ("cmdq-sync").
    SmmuCmdqSync,
    /// The CMDQ-V error interrupt (the NVDA200C `_CRS` Interrupt).
    Cmdqv,
    /// The PL011 console UART (level-high SPI, DSDT `ARMH0011` / SPCR).
    Uart,
}

impl IrqLine {
    /// The name used in logs and in the replay tool's output.
    pub fn name(self) -> &'static str {
        match self {
            IrqLine::SmmuEventq => "eventq",
            IrqLine::SmmuGerror => "gerror",
            IrqLine::SmmuCmdqSync => "cmdq-sync",
            IrqLine::Cmdqv => "cmdqv",
            IrqLine::Uart => "uart",
        }
    }
}

/// Where a device model's interrupts go. Edge-triggered lines use
/// [`trigger`](Self::trigger) (each call is one pulse); level-triggered
/// lines use [`set_level`](Self::set_level).
pub trait InterruptSink: Send + Sync {
    /// Pulse a wired, edge-triggered interrupt line.
    fn trigger(&self, line: IrqLine);
    /// Drive a wired, level-triggered interrupt line (for KVM: `KVM_IRQ_LINE`
    /// with level 1 / 0). Models call it only when the level changes.
    fn set_level(&self, line: IrqLine, asserted: bool);
    /// Perform an MSI write (doorbell address and payload) on behalf of the device.
    fn msi(&self, addr: u64, data: u32);
}

/// An interrupt sink that drops everything (a device with no interrupt wired).
#[derive(Debug, Default)]
pub struct NoInterrupts;

impl InterruptSink for NoInterrupts {
    fn trigger(&self, _line: IrqLine) {}
    fn set_level(&self, _line: IrqLine, _asserted: bool) {}
    fn msi(&self, _addr: u64, _data: u32) {}
}
