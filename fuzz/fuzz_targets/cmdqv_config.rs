//! The CMD-QV config page: CONFIG/STATUS, PARAM, error maps, CMDQ_ALLOC_MAP,
//! the VINTF0 block.
#![no_main]

use devices::replay::Region;
use libfuzzer_sys::fuzz_target;
use vmm_fuzz::{Action, Window, run, runner};

fuzz_target!(|actions: Vec<Action>| {
    let mut runner = runner(true);
    let window = Window {
        region: Region::Cmdqv,
        base: 0,
        size: 0x1_0000,
    };
    run(&mut runner, &window, &actions);
});
