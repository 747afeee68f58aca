//! How device interrupts reach the guest's interrupt controller, and the
//! per-device interrupt sinks that route a device's lines to GSIVs.

use std::sync::Arc;

use devices::irq::{InterruptSink, IrqLine};

/// The VM's interrupt controller as the devices see it (KVM's in-kernel
/// GICv3 + ITS on aarch64; a recorder in tests).
pub trait IrqChip: Send + Sync {
    /// Drive a shared peripheral interrupt (INTID = GSIV) to a level.
    fn set_spi_level(&self, intid: u32, asserted: bool);
    /// Deliver an MSI write from ITS DeviceID `device_id`.
    fn signal_msi(&self, addr: u64, data: u32, device_id: u32);
}

/// Routes one device's [`IrqLine`]s to GSIVs of an [`IrqChip`].
pub struct RoutedInterrupts {
    chip: Arc<dyn IrqChip>,
    routes: Vec<(IrqLine, u32)>,
    device_id: u32,
}

impl RoutedInterrupts {
    /// A sink sending `routes` lines to their GSIVs and MSIs with `device_id`.
    pub fn new(chip: Arc<dyn IrqChip>, routes: Vec<(IrqLine, u32)>, device_id: u32) -> Self {
        RoutedInterrupts {
            chip,
            routes,
            device_id,
        }
    }

    fn gsiv(&self, line: IrqLine) -> Option<u32> {
        let gsiv = self
            .routes
            .iter()
            .find(|(l, _)| *l == line)
            .map(|(_, g)| *g);
        if gsiv.is_none() {
            log::warn!(target: "irq", "interrupt line {} is not wired", line.name());
        }
        gsiv
    }
}

impl InterruptSink for RoutedInterrupts {
    fn trigger(&self, line: IrqLine) {
        // An edge-triggered SPI: a rising edge makes it pending.
        if let Some(gsiv) = self.gsiv(line) {
            self.chip.set_spi_level(gsiv, true);
            self.chip.set_spi_level(gsiv, false);
        }
    }

    fn set_level(&self, line: IrqLine, asserted: bool) {
        if let Some(gsiv) = self.gsiv(line) {
            self.chip.set_spi_level(gsiv, asserted);
        }
    }

    fn msi(&self, addr: u64, data: u32) {
        self.chip.signal_msi(addr, data, self.device_id);
    }
}

#[cfg(test)]
pub mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records every interrupt controller call.
    #[derive(Default)]
    pub struct RecordingChip {
        /// `spi INTID level` / `msi ADDR DATA DEVID` lines.
        pub events: Mutex<Vec<String>>,
    }

    impl IrqChip for RecordingChip {
        fn set_spi_level(&self, intid: u32, asserted: bool) {
            self.events
                .lock()
                .unwrap()
                .push(format!("spi {intid} {}", u8::from(asserted)));
        }
        fn signal_msi(&self, addr: u64, data: u32, device_id: u32) {
            self.events
                .lock()
                .unwrap()
                .push(format!("msi {addr:#x} {data:#x} {device_id:#x}"));
        }
    }

    #[test]
    fn lines_route_to_their_gsivs_and_pulses_are_edges() {
        let chip = Arc::new(RecordingChip::default());
        let sink = RoutedInterrupts::new(
            chip.clone(),
            vec![(IrqLine::SmmuEventq, 48), (IrqLine::SmmuGerror, 49)],
            0xf000,
        );
        sink.trigger(IrqLine::SmmuGerror);
        sink.set_level(IrqLine::SmmuEventq, true);
        sink.trigger(IrqLine::Cmdqv); // not wired: dropped with a warning
        sink.msi(0x0809_0040, 7);
        assert_eq!(
            *chip.events.lock().unwrap(),
            [
                "spi 49 1",
                "spi 49 0",
                "spi 48 1",
                "msi 0x8090040 0x7 0xf000"
            ]
        );
    }
}
