//! Trapped command queue throughput: bursts of N TLBI_NH_VA + CMD_SYNC (an
//! unmap of N pages) consumed by the vSMMU model with the emulated backend,
//! for N = 1, 16, 256. Reports commands per second (criterion throughput)
//! and checks backend calls per CMD_SYNC, which batching keeps at 1.
//!
//! Two call-log settings of the emulated backend, in the same run, as in
//! the `vcmdq_engine` bench: `log_on` formats the batch's `invalidate` call
//! into a 256-entry ring (what a VM did before), `counting_only` counts it
//! (what a VM does now).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use devices::GuestMemory;
use devices::emulated::{EmulatedBackend, VM_CALL_LOG_LEN};
use devices::irq::NoInterrupts;
use devices::smmuv3::{Smmuv3, VsmmuConfig};
use vm_memory::{Bytes, GuestAddress};

const RAM: u64 = 0x4000_0000;
const CMDQ: u64 = RAM + 0x1_0000;
/// 512 entries: room for the largest burst plus its CMD_SYNC.
const CMDQ_LOG2SIZE: u64 = 9;
const CR0: u64 = 0x20;
const CMDQ_BASE: u64 = 0x90;
const CMDQ_PROD: u64 = 0x98;
const CMDQ_CONS: u64 = 0x9c;
const SMMUEN: u32 = 1;
const CMDQEN: u32 = 1 << 3;

fn w32(smmu: &mut Smmuv3, offset: u64, value: u32) {
    smmu.write(offset, &value.to_le_bytes());
}

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

/// A model whose command queue holds `burst` TLBI_NH_VA and a CMD_SYNC.
fn setup(backend: &EmulatedBackend, burst: u64) -> Smmuv3 {
    let mem = GuestMemory::from_ranges(&[(GuestAddress(RAM), 0x10_0000)]).unwrap();
    let mut smmu = Smmuv3::new(
        &VsmmuConfig::default(),
        Box::new(backend.clone()),
        mem.clone(),
        Arc::new(NoInterrupts),
    )
    .unwrap();
    for i in 0..burst {
        let entry = CMDQ + i * 16;
        let va = 0x8000_0000u64 + (i << 12);
        mem.write_obj(0x12u64 | (1 << 48), GuestAddress(entry))
            .unwrap();
        mem.write_obj(va | 1, GuestAddress(entry + 8)).unwrap();
    }
    mem.write_obj(0x46u64, GuestAddress(CMDQ + burst * 16))
        .unwrap();
    smmu.write(CMDQ_BASE, &(CMDQ | CMDQ_LOG2SIZE).to_le_bytes());
    w32(&mut smmu, CR0, SMMUEN | CMDQEN);
    smmu
}

/// Rewind the queue to empty at index 0, then publish the burst.
fn run_burst(smmu: &mut Smmuv3, burst: u64) {
    w32(smmu, CR0, SMMUEN);
    w32(smmu, CMDQ_CONS, 0);
    w32(smmu, CMDQ_PROD, 0);
    w32(smmu, CR0, SMMUEN | CMDQEN);
    w32(smmu, CMDQ_PROD, (burst + 1) as u32);
}

fn trapped_cmdq(c: &mut Criterion) {
    let mut group = c.benchmark_group("trapped_cmdq");
    for burst in [1u64, 16, 256] {
        for (name, make) in CALL_LOGS {
            let backend = make();
            let mut smmu = setup(&backend, burst);
            let before = backend.call_counts().get("invalidate").copied();
            run_burst(&mut smmu, burst);
            let calls = backend.call_counts().get("invalidate").copied();
            assert_eq!(
                calls.unwrap_or(0) - before.unwrap_or(0),
                1,
                "{name}: burst {burst} took other than one backend call per CMD_SYNC"
            );
            group.throughput(Throughput::Elements(burst + 1));
            group.bench_with_input(BenchmarkId::new(name, burst), &burst, |b, &burst| {
                b.iter(|| run_burst(&mut smmu, black_box(burst)));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, trapped_cmdq);
criterion_main!(benches);
