//! VINTF0 page0 (PROD/CONS/CONFIG/GERRORN, trapped) driving the software
//! VCMDQ engine over guest RAM contents: queue 0 has a valid 4 KiB queue at
//! the start of RAM and is enabled; the fuzzer writes commands to RAM and
//! moves PROD, CONFIG and GERRORN.
#![no_main]

use devices::replay::Region;
use libfuzzer_sys::fuzz_target;
use vmm_fuzz::{Action, RAM_BASE, Window, run, runner, write};

fuzz_target!(|actions: Vec<Action>| {
    let mut runner = runner(true);
    // Enable CMD-QV and VINTF0, map LVCMDQ 0, give it a 256-entry queue
    // (LOG2SIZE 8) at RAM_BASE, enable it in page0.
    for (line, op) in [
        write(Region::Cmdqv, 0x0, 4, 1),
        write(Region::Cmdqv, 0x1000, 4, 1),
        write(Region::Cmdqv, 0x200, 4, 1),
        write(Region::Cmdqv, 0x4_0000, 8, RAM_BASE | 8),
        write(Region::Cmdqv, 0x3_0008, 4, 1),
    ]
    .iter()
    .enumerate()
    {
        let _ = runner.apply(10 + line, op);
    }
    let window = Window {
        region: Region::Cmdqv,
        base: 0x3_0000,
        size: 0x100,
    };
    run(&mut runner, &window, &actions);
});
