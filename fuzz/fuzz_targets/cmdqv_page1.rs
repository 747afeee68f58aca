//! VINTF0 page1 (BASE / CONS_INDX_BASE of every logical VCMDQ: the trapped
//! path that becomes HW queue allocations), with CMD-QV, VINTF0 and both
//! LVCMDQs already enabled and mapped as the Linux driver leaves them, and
//! the config page reachable too so enables can be toggled around it.
#![no_main]

use devices::replay::Region;
use libfuzzer_sys::fuzz_target;
use vmm_fuzz::{Action, Window, run, runner, write};

fuzz_target!(|input: (Vec<Action>, Vec<Action>)| {
    let (page1, config) = input;
    let mut runner = runner(true);
    // CMDQV_EN, VINTF0 EN, CMDQ_ALLOC_MAP(0/1) = VINTF0 LVCMDQ 0/1, allocated.
    for (line, op) in [
        write(Region::Cmdqv, 0x0, 4, 1),
        write(Region::Cmdqv, 0x1000, 4, 1),
        write(Region::Cmdqv, 0x200, 4, 1),
        write(Region::Cmdqv, 0x204, 4, (1 << 1) | 1),
    ]
    .iter()
    .enumerate()
    {
        let _ = runner.apply(10 + line, op);
    }
    let page1_window = Window {
        region: Region::Cmdqv,
        base: 0x4_0000,
        size: 0x1_0000,
    };
    let config_window = Window {
        region: Region::Cmdqv,
        base: 0,
        size: 0x2000,
    };
    run(&mut runner, &page1_window, &page1);
    run(&mut runner, &config_window, &config);
    run(&mut runner, &page1_window, &page1);
});
