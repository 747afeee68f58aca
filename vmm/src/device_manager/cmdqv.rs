//! The CMD-QV of one vSMMU (`--vsmmu cmdqv`): the model over its host
//! backend, its interrupts, and the page0 slot it installs in the guest
//! and removes again ([`Page0Slot`]).

use std::sync::Arc;

use arch::layout::{CMDQV_VINTF0_PAGE0_OFFSET, Range};
use devices::cmdqv::{Cmdqv, CmdqvConfig, Page0Event};
use devices::irq::IrqLine;
use devices::mapping::Sentence;
use devices::smmuv3::Smmuv3;
use pci::{GuestMapper, SlotId};

use super::DeviceError;
use super::vsmmu::VsmmuWiring;
use crate::config::Page0Mode;
use crate::description::{VmDescription, VsmmuDescription};
use crate::events::{self, Event, GuestErrorDevice, cmdqv::EventingCmdqv};
use crate::host_backend::VsmmuHost;
use crate::irqchip::RoutedInterrupts;

/// The CMD-QV model of the vSMMU `description`, beside its SMMUv3 `smmu`
/// (whose CMDQ size it takes) over the same `backend`; `endpoints` is
/// how many functions sit behind it (checked against its StreamID slots).
pub(super) fn build(
    vm: &VmDescription,
    description: &VsmmuDescription,
    wiring: &VsmmuWiring<'_>,
    backend: &VsmmuHost,
    smmu: &Smmuv3,
    endpoints: usize,
) -> Result<Cmdqv, DeviceError> {
    let index = description.index;
    let err = |reason: String| DeviceError::Vsmmu { index, reason };
    let l = &description.layout;
    let mapped = vm.config.vsmmu.page0_mode() == Page0Mode::Mapped;
    // One sink for the CMD-QV's error interrupt and its VCMDQs' CMD_SYNC
    // MSIs, which carry the vSMMU's ITS DeviceID like the SMMU's own.
    let irq = Arc::new(RoutedInterrupts::new(
        wiring.chip.clone(),
        vec![(IrqLine::Cmdqv, l.cmdqv_gsiv)],
        l.its_device_id,
    ));
    let host = Box::new(EventingCmdqv::new(
        backend
            .cmdqv(wiring.mem, irq.clone(), mapped)
            .map_err(err)?,
        index,
    ));
    let config = CmdqvConfig {
        cmdqs: smmu.id_registers().cmdq_log2size() as u8,
        ..CmdqvConfig::default()
    };
    let mut model =
        Cmdqv::new(host, wiring.mem.clone(), irq, config).map_err(|e| err(e.to_string()))?;
    model
        .check_device_count(endpoints)
        .map_err(|e| err(e.to_string()))?;
    let mut slot = Page0Slot {
        mapper: wiring.page0.clone(),
        cmdqv: index,
        window: l.cmdqv,
        installed: None,
    };
    model.set_page0_listener(Box::new(move |event| slot.apply(event)));
    model.set_guest_error_listener(events::guest_error_listener(GuestErrorDevice::Cmdqv(index)));
    Ok(model)
}

/// The page0 memory slot of one CMD-QV, installed and removed as its
/// model says ([`Page0Event`]).
struct Page0Slot {
    mapper: Arc<dyn GuestMapper>,
    cmdqv: u32,
    window: Range,
    installed: Option<SlotId>,
}

impl Page0Slot {
    fn apply(&mut self, event: Page0Event) {
        let page0 = self.window.base + CMDQV_VINTF0_PAGE0_OFFSET;
        let (what, result) = match event {
            Page0Event::Map { offset, region } => {
                let (gpa, length) = (self.window.base + offset, region.len());
                let result = self.mapper.add_region(gpa, region).map(|slot| {
                    self.installed = Some(slot);
                    events::emit(Event::Page0Mapped {
                        cmdqv: self.cmdqv,
                        gpa,
                        length,
                    });
                });
                ("installed", result)
            }
            Page0Event::Unmap { offset } => {
                let Some(slot) = self.installed.take() else {
                    return;
                };
                let gpa = self.window.base + offset;
                let result = match self.mapper.remove_region(slot) {
                    Ok(_page0) => {
                        events::emit(Event::Page0Unmapped {
                            cmdqv: self.cmdqv,
                            gpa,
                        });
                        Ok(())
                    }
                    Err(e) => {
                        // Still installed: a later teardown tries again.
                        self.installed = Some(slot);
                        Err(e)
                    }
                };
                ("removed", result)
            }
        };
        match result {
            Ok(()) => log::info!(target: "vmm", "CMD-QV page0 slot {what} at {page0:#x}"),
            // The guest keeps working through the trapped path: the model
            // serves page0 accesses that reach it.
            Err(e) => log::error!(target: "vmm", "CMD-QV page0 at {page0:#x}: {}", Sentence(&e)),
        }
    }
}
