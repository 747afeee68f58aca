//! The vSMMUv3 window (page 0 + page 1) with guest RAM holding queues and
//! stream tables, and host events.
#![no_main]

use devices::replay::Region;
use libfuzzer_sys::fuzz_target;
use vmm_fuzz::{Action, Window, run, runner};

fuzz_target!(|actions: Vec<Action>| {
    let mut runner = runner(false);
    let window = Window {
        region: Region::Smmu,
        base: 0,
        size: 0x2_0000,
    };
    run(&mut runner, &window, &actions);
});
