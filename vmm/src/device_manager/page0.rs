//! The page0 slot of one CMD-QV: VINTF0's page0 (its VCMDQ registers)
//! mapped into the guest and removed again as the model says, each with
//! its event and log line; a failed removal keeps the slot for a later
//! teardown.

use std::sync::Arc;

use arch::layout::{CMDQV_VINTF0_PAGE0_OFFSET, Range};
use devices::cmdqv::Page0Event;
use devices::mapping::Sentence;
use pci::{GuestMapper, SlotId};

use crate::events::{self, Event};

/// The page0 memory slot of one CMD-QV, installed and removed as its
/// model says ([`Page0Event`]).
pub(super) struct Page0Slot {
    mapper: Arc<dyn GuestMapper>,
    cmdqv: u32,
    window: Range,
    installed: Option<SlotId>,
}

impl Page0Slot {
    /// The slot of CMD-QV `cmdqv`, whose window is `window`; nothing
    /// installed yet.
    pub fn new(mapper: Arc<dyn GuestMapper>, cmdqv: u32, window: Range) -> Self {
        Page0Slot {
            mapper,
            cmdqv,
            window,
            installed: None,
        }
    }

    /// Install or remove page0 as `event` says.
    pub fn apply(&mut self, event: Page0Event) {
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
