//! VCMDQ engine throughput: bursts of N TLBI_NH_VA + CMD_SYNC (an unmap of
//! N pages as Linux sends it to a guest-owned VCMDQ: CMD_SYNC with CS=NONE,
//! CONS busy-polled) published by a PROD store into the mapped page0 and
//! consumed by one engine pass, as the VM's engine thread does, for N = 1,
//! 16, 256. Reports commands per second (criterion throughput).
//!
//! Two call-log settings of the emulated backend, in the same run:
//! - `log_on`: [`EmulatedBackend::with_call_log`] with the VM's 256 entries:
//!   every command is formatted into a `BackendCall` (a `Vec` and a `String`
//!   per argument) and kept in a ring, which is what a VM's engine did per
//!   command before data-path calls were counted only;
//! - `counting_only`: [`EmulatedBackend::counting_only`], what a VM's engine
//!   does now: the command is counted, nothing is allocated or formatted.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use devices::GuestMemory;
use devices::emulated::vcmdq_engine::{Page0Memory, VcmdqEngine};
use devices::emulated::{EmulatedBackend, VM_CALL_LOG_LEN};
use devices::irq::NoInterrupts;
use vm_memory::{Bytes, GuestAddress};

const RAM: u64 = 0x4000_0000;
const QUEUE: u64 = RAM + 0x1_0000;
/// 512 entries: room for the largest burst plus its CMD_SYNC.
const LOG2SIZE: u32 = 9;
/// LVCMDQ 0's page0 registers.
const CONS: u64 = 0x0;
const PROD: u64 = 0x4;
const CONFIG: u64 = 0x8;

/// Builds the emulated backend of one call-log setting.
type MakeBackend = fn() -> EmulatedBackend;

/// "log on": the VM's 256-entry call log, data path formatted (before).
fn log_on() -> EmulatedBackend {
    EmulatedBackend::with_call_log(VM_CALL_LOG_LEN)
}

/// The call-log settings every burst size runs with.
const CALL_LOGS: [(&str, MakeBackend); 2] = [
    ("log_on", log_on),
    ("counting_only", EmulatedBackend::counting_only),
];

/// An engine whose LVCMDQ 0 holds `burst` TLBI_NH_VA and a CMD_SYNC.
fn setup(backend: &EmulatedBackend, burst: u64) -> VcmdqEngine {
    let mem = GuestMemory::from_ranges(&[(GuestAddress(RAM), 0x10_0000)]).unwrap();
    for i in 0..burst {
        let entry = QUEUE + i * 16;
        let va = 0x8000_0000u64 + (i << 12);
        mem.write_obj(0x12u64 | (1 << 48), GuestAddress(entry))
            .unwrap();
        mem.write_obj(va | 1, GuestAddress(entry + 8)).unwrap();
    }
    mem.write_obj(0x46u64, GuestAddress(QUEUE + burst * 16))
        .unwrap();
    let mut engine = VcmdqEngine::new(
        mem,
        backend.clone(),
        Arc::new(NoInterrupts),
        Page0Memory::new().unwrap(),
        2,
    );
    engine.attach(0, QUEUE, LOG2SIZE);
    engine
}

/// Rewind LVCMDQ 0 to empty at index 0, then publish the burst with a
/// PROD store (the guest's write through the memory slot) and run one
/// engine pass.
fn run_burst(engine: &mut VcmdqEngine, burst: u64) {
    let page0 = engine.page0();
    page0.store(CONFIG, 0);
    engine.run_pass();
    let page0 = engine.page0();
    page0.store(CONS, 0);
    page0.store(PROD, 0);
    page0.store(CONFIG, 1);
    engine.run_pass();
    engine.page0().store(PROD, (burst + 1) as u32);
    engine.run_pass();
}

fn vcmdq_engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("vcmdq_engine");
    for burst in [1u64, 16, 256] {
        for (name, make) in CALL_LOGS {
            let backend = make();
            let mut engine = setup(&backend, burst);
            run_burst(&mut engine, burst);
            let executed = backend
                .call_counts()
                .get("vcmdq_exec")
                .copied()
                .unwrap_or(0);
            assert_eq!(executed, burst + 1, "{name}: the burst was not consumed");
            group.throughput(Throughput::Elements(burst + 1));
            group.bench_with_input(BenchmarkId::new(name, burst), &burst, |b, &burst| {
                b.iter(|| run_burst(&mut engine, black_box(burst)));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, vcmdq_engine);
criterion_main!(benches);
