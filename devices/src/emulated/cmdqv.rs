//! The emulated CMD-QV backend: the kernel's Tegra241 HW-queue contract
//! (fact sheet §2.7) over the software VCMDQ engine.
//!
//! It shares its vIOMMU state (call log, vDEVICE table) with the
//! [`EmulatedBackend`] it is built from, and owns the engine and, in mapped
//! mode, the worker thread that polls page0 like hardware would. The thread
//! is stopped and joined when this backend is dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::EmulatedBackend;
use super::vcmdq_engine::{Page0Memory, VcmdqEngine};
use crate::GuestMemory;
use crate::backend::{BackendCall, BackendError, Errno};
use crate::cmdqv::backend::{CmdqvBackend, CmdqvHostInfo, Page0Mode};
use crate::cmdqv::regs::{VCMDQ_BASE_ADDR, VCMDQ_STRIDE};
use crate::irq::InterruptSink;

/// How long the worker keeps polling after the last command it executed
/// before it starts sleeping between polls. Guests issue invalidations in
/// bursts (an unmap every few microseconds under load); a worker that went
/// to sleep between two of them would add the host's sleep granularity
/// (1 ms and more on a loaded or emulated host) to every CMD_SYNC.
const SPIN_WINDOW: Duration = Duration::from_millis(5);
/// The worker thread's name, also its kind for the thread-start hook.
const WORKER_NAME: &str = "vcmdq-engine";
/// Worker sleep while idle.
const IDLE_SLEEP: Duration = Duration::from_micros(50);

/// What the emulated host looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmulatedCmdqvConfig {
    /// Host CMD-QV info (QEMU's guest view: version 1, 2 VCMDQs, 16 SIDs).
    pub info: CmdqvHostInfo,
    /// Expose page0 as a mappable region (with a worker thread) instead of
    /// trapping it.
    pub mapped: bool,
}

impl Default for EmulatedCmdqvConfig {
    fn default() -> Self {
        EmulatedCmdqvConfig {
            info: CmdqvHostInfo {
                version: 1,
                log2vcmdqs: 1,
                log2vsids: 4,
                cmdqs: 19,
            },
            mapped: false,
        }
    }
}

/// Errors building the emulated CMD-QV.
#[derive(Debug, thiserror::Error)]
pub enum EmulatedCmdqvError {
    /// The anonymous page0 mapping failed.
    #[error("cannot map the emulated VINTF page0: {}", crate::mapping::Sentence(.0))]
    Page0Map(#[from] crate::mapping::MmapError),
    /// The worker thread could not be spawned.
    #[error("cannot spawn the VCMDQ engine thread: {0}")]
    Worker(std::io::Error),
    /// The worker thread's start hook (its seccomp filter) failed.
    #[error("the VCMDQ engine thread could not start: {0}")]
    WorkerStart(std::io::Error),
    /// The host info asks for more queues than the register map holds.
    #[error("log2vcmdqs {0} exceeds the 128 LVCMDQs a VINTF can hold")]
    TooManyQueues(u8),
}

struct Worker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// The emulated CMD-QV host backend.
pub struct EmulatedCmdqv {
    viommu: EmulatedBackend,
    mem: GuestMemory,
    config: EmulatedCmdqvConfig,
    engine: Arc<Mutex<VcmdqEngine>>,
    worker: Option<Worker>,
}

fn lock(engine: &Mutex<VcmdqEngine>) -> MutexGuard<'_, VcmdqEngine> {
    // The register file is consistent pass by pass: keep serving after a
    // panic elsewhere rather than panic twice.
    crate::lock_unpoisoned(engine)
}

impl EmulatedCmdqv {
    /// A CMD-QV on the vIOMMU `viommu`, reading queues from `mem`. Limits
    /// the vIOMMU's vDEVICEs to the host's SID slots. `msi` receives the
    /// MSIs the VCMDQs' CMD_SYNCs send to addresses outside guest RAM (the
    /// SMMU's own MSI path: give it the sink that carries the SMMU's ITS
    /// DeviceID).
    pub fn new(
        viommu: EmulatedBackend,
        mem: GuestMemory,
        msi: Arc<dyn InterruptSink>,
        config: EmulatedCmdqvConfig,
    ) -> Result<Self, EmulatedCmdqvError> {
        let log2vcmdqs = config.info.log2vcmdqs;
        if log2vcmdqs > 7 {
            return Err(EmulatedCmdqvError::TooManyQueues(log2vcmdqs));
        }
        viommu.set_vdevice_slots(1usize << config.info.log2vsids.min(4));
        let engine = VcmdqEngine::new(
            mem.clone(),
            viommu.clone(),
            msi,
            Page0Memory::new()?,
            1usize << log2vcmdqs,
        );
        let engine = Arc::new(Mutex::new(engine));
        let worker = if config.mapped {
            Some(Self::spawn_worker(&engine)?)
        } else {
            None
        };
        Ok(EmulatedCmdqv {
            viommu,
            mem,
            config,
            engine,
            worker,
        })
    }

    fn spawn_worker(engine: &Arc<Mutex<VcmdqEngine>>) -> Result<Worker, EmulatedCmdqvError> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread_engine = engine.clone();
        // The thread reports whether its start hook (the VMM's seccomp
        // filter) is in place before it touches a guest queue.
        let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
        let handle = std::thread::Builder::new()
            .name(WORKER_NAME.into())
            .spawn(move || {
                let started = crate::thread_started(WORKER_NAME);
                let ok = started.is_ok();
                let _ = started_tx.send(started);
                if !ok {
                    return;
                }
                let mut last_activity = Instant::now();
                while !thread_stop.load(Ordering::Acquire) {
                    if lock(&thread_engine).run_pass() {
                        last_activity = Instant::now();
                    }
                    // Poll hot while the guest is issuing commands, then
                    // sleep like an idle hardware poller.
                    if last_activity.elapsed() < SPIN_WINDOW {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(IDLE_SLEEP);
                    }
                }
            })
            .map_err(EmulatedCmdqvError::Worker)?;
        let started = started_rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the thread ended before it started")));
        if let Err(err) = started {
            let _ = handle.join();
            return Err(EmulatedCmdqvError::WorkerStart(err));
        }
        Ok(Worker {
            stop,
            handle: Some(handle),
        })
    }

    fn num_lvcmdqs(&self) -> u32 {
        1u32 << self.config.info.log2vcmdqs
    }

    /// The kernel's checks, in its order: core (length, overflow, pinning),
    /// then the Tegra driver (index, slot, ascending order, length, align).
    fn check_alloc(&self, index: u32, gpa: u64, len: u64) -> Result<u32, BackendError> {
        let err = |errno, reason: String| Err(BackendError::new(errno, reason));
        if len == 0 {
            return err(Errno::Inval, "HW queue length 0".into());
        }
        let Some(last) = gpa.checked_add(len - 1) else {
            return err(Errno::Overflow, format!("HW queue {gpa:#x}+{len:#x} wraps"));
        };
        // Pinning: an IOVA not mapped in the IOAS (guest RAM) is ENOENT;
        // RAM that spans two backing regions is not physically contiguous.
        let in_ram = |a: u64| self.mem.find_region(GuestAddress(a)).is_some();
        if !in_ram(gpa) || !in_ram(last) {
            return err(
                Errno::NoEnt,
                format!("HW queue {gpa:#x}+{len:#x} is not in guest RAM"),
            );
        }
        let contiguous = self
            .mem
            .find_region(GuestAddress(gpa))
            .is_some_and(|r| last <= r.start_addr().0.saturating_add(r.len() - 1));
        if !contiguous {
            return err(
                Errno::Fault,
                format!("HW queue {gpa:#x}+{len:#x} is not contiguous guest RAM"),
            );
        }
        if index >= self.num_lvcmdqs() {
            return err(Errno::Inval, format!("HW queue index {index} out of range"));
        }
        let engine = lock(&self.engine);
        if engine.is_allocated(index as usize) {
            return err(
                Errno::Exist,
                format!("HW queue index {index} already allocated"),
            );
        }
        if index > 0 && !engine.is_allocated(index as usize - 1) {
            return err(
                Errno::Io,
                format!("HW queue index {index} needs index {} first", index - 1),
            );
        }
        let max = 16u64 << self.config.info.cmdqs;
        if !len.is_power_of_two() || len < 32 || len > max {
            return err(
                Errno::Inval,
                format!("HW queue length {len:#x} not a power of two in [0x20, {max:#x}]"),
            );
        }
        if gpa & (len - 1) != 0 || gpa & !VCMDQ_BASE_ADDR.mask() != 0 {
            return err(
                Errno::Inval,
                format!("HW queue base {gpa:#x} not aligned to length {len:#x}"),
            );
        }
        Ok(len.trailing_zeros() - 4)
    }
}

impl Drop for EmulatedCmdqv {
    fn drop(&mut self) {
        if let Some(mut worker) = self.worker.take() {
            worker.stop.store(true, Ordering::Release);
            if let Some(handle) = worker.handle.take()
                && handle.join().is_err()
            {
                log::error!(target: "cmdqv", "VCMDQ engine thread panicked");
            }
        }
    }
}

impl CmdqvBackend for EmulatedCmdqv {
    fn info(&self) -> CmdqvHostInfo {
        self.config.info
    }

    fn page0_mode(&self) -> Page0Mode {
        if self.config.mapped {
            Page0Mode::Mapped(lock(&self.engine).page0().mapping().clone())
        } else {
            Page0Mode::Trapped
        }
    }

    fn hw_queue_alloc(&mut self, index: u32, gpa: u64, len: u64) -> Result<(), BackendError> {
        let result = self.check_alloc(index, gpa, len);
        let mut call = BackendCall::new("hw_queue_alloc")
            .dec("index", u64::from(index))
            .hex("gpa", gpa)
            .hex("len", len);
        if let Err(e) = &result {
            call = call.word("err", &e.errno.to_string());
        }
        self.viommu.record(call);
        let log2size = result?;
        lock(&self.engine).attach(index as usize, gpa, log2size);
        Ok(())
    }

    fn hw_queue_free(&mut self, index: u32) -> Result<(), BackendError> {
        let mut engine = lock(&self.engine);
        let result = if !engine.is_allocated(index as usize) {
            Err(BackendError::new(
                Errno::NoEnt,
                format!("no HW queue at index {index}"),
            ))
        } else if engine.is_allocated(index as usize + 1) {
            Err(BackendError::new(
                Errno::Busy,
                format!("HW queue {} still depends on index {index}", index + 1),
            ))
        } else {
            engine.detach(index as usize);
            Ok(())
        };
        let mut call = BackendCall::new("hw_queue_free").dec("index", u64::from(index));
        if let Err(e) = &result {
            call = call.word("err", &e.errno.to_string());
        }
        self.viommu.record(call);
        result
    }

    fn page0_read(&mut self, offset: u64) -> u32 {
        lock(&self.engine).page0().load(offset)
    }

    fn page0_write(&mut self, offset: u64, value: u32) {
        let mut engine = lock(&self.engine);
        engine.guest_write(offset, value);
        // Synchronous pass: deterministic in trapped mode, harmless (and
        // prompt) alongside the worker in mapped mode.
        engine.service((offset / VCMDQ_STRIDE) as usize);
    }

    fn poll_error_event(&mut self) -> Option<[u64; 2]> {
        lock(&self.engine).pop_event()
    }

    fn sid_slots(&self) -> Vec<Option<u32>> {
        self.viommu.sid_slots()
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use vm_memory::Bytes;

    use crate::cmdqv::regs::{
        VCMDQ_CONFIG, VCMDQ_CONS, VCMDQ_GERROR, VCMDQ_GERRORN, VCMDQ_PROD, VCMDQ_STATUS,
    };
    use crate::emulated::vcmdq_engine::PAGE0_BYTES;
    use crate::irq::NoInterrupts;

    const RAM: u64 = 0x4000_0000;

    fn backend(mapped: bool) -> (EmulatedCmdqv, EmulatedBackend) {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(RAM), 0x10_0000)]).unwrap();
        let viommu = EmulatedBackend::new();
        let config = EmulatedCmdqvConfig {
            info: CmdqvHostInfo {
                cmdqs: 8,
                ..EmulatedCmdqvConfig::default().info
            },
            mapped,
        };
        (
            EmulatedCmdqv::new(viommu.clone(), mem, Arc::new(NoInterrupts), config).unwrap(),
            viommu,
        )
    }

    fn errno(result: Result<(), BackendError>) -> Errno {
        result.unwrap_err().errno
    }

    #[test]
    fn hw_queue_alloc_enforces_kernel_index_rules() {
        let (mut b, _) = backend(false);
        assert_eq!(errno(b.hw_queue_alloc(2, RAM, 0x1000)), Errno::Inval);
        assert_eq!(errno(b.hw_queue_alloc(1, RAM, 0x1000)), Errno::Io);
        b.hw_queue_alloc(0, RAM, 0x1000).unwrap();
        assert_eq!(errno(b.hw_queue_alloc(0, RAM, 0x1000)), Errno::Exist);
    }

    #[test]
    fn hw_queue_alloc_enforces_kernel_length_and_address_rules() {
        let (mut b, _) = backend(false);
        assert_eq!(errno(b.hw_queue_alloc(0, RAM, 0)), Errno::Inval);
        assert_eq!(errno(b.hw_queue_alloc(0, RAM, 16)), Errno::Inval);
        assert_eq!(errno(b.hw_queue_alloc(0, RAM, 0x3000)), Errno::Inval);
        assert_eq!(
            errno(b.hw_queue_alloc(0, RAM, 0x2000)),
            Errno::Inval,
            "> 16 << 8"
        );
        assert_eq!(
            errno(b.hw_queue_alloc(0, RAM + 0x800, 0x1000)),
            Errno::Inval
        );
        assert_eq!(
            errno(b.hw_queue_alloc(0, 0x8000_0000, 0x1000)),
            Errno::NoEnt,
            "not in the IOAS (the kernel's mock answers the same)"
        );
        assert_eq!(
            errno(b.hw_queue_alloc(0, u64::MAX - 0xfff, 0x2000)),
            Errno::Overflow
        );
    }

    #[test]
    fn hw_queue_alloc_resets_the_queue_like_the_kernel() {
        let (mut b, _) = backend(false);
        // What an earlier user of the slot left behind: pointers and
        // GERRORN bits (an INIT_ERR acknowledgement, bit 2, among them).
        b.page0_write(VCMDQ_PROD.offset, 5);
        b.page0_write(VCMDQ_CONS.offset, 3);
        b.page0_write(VCMDQ_GERRORN.offset, 0b101);
        b.hw_queue_alloc(0, RAM, 0x1000).unwrap();
        // tegra241_vcmdq_hw_init_user runs hw_deinit first.
        assert_eq!(b.page0_read(VCMDQ_PROD.offset), 0);
        assert_eq!(b.page0_read(VCMDQ_CONS.offset), 0);
        assert_eq!(
            b.page0_read(VCMDQ_GERRORN.offset),
            b.page0_read(VCMDQ_GERROR.offset),
            "GERRORN = GERROR: no error pending on a fresh queue"
        );
    }

    #[test]
    fn hw_queue_free_refuses_lower_queue_while_higher_exists() {
        let (mut b, viommu) = backend(false);
        b.hw_queue_alloc(0, RAM, 0x1000).unwrap();
        b.hw_queue_alloc(1, RAM + 0x1000, 0x1000).unwrap();
        assert_eq!(errno(b.hw_queue_free(0)), Errno::Busy);
        b.hw_queue_free(1).unwrap();
        b.hw_queue_free(0).unwrap();
        assert_eq!(errno(b.hw_queue_free(0)), Errno::NoEnt);
        let calls: Vec<String> = viommu.take_calls().iter().map(|c| c.to_string()).collect();
        assert_eq!(
            calls,
            [
                "hw_queue_alloc index=0 gpa=0x40000000 len=0x1000",
                "hw_queue_alloc index=1 gpa=0x40001000 len=0x1000",
                "hw_queue_free index=0 err=EBUSY",
                "hw_queue_free index=1",
                "hw_queue_free index=0",
                "hw_queue_free index=0 err=ENOENT",
            ]
        );
    }

    #[test]
    fn a_counting_backend_tallies_executed_commands_without_logging_them() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(RAM), 0x10_0000)]).unwrap();
        let viommu = EmulatedBackend::counting_only();
        let mut b = EmulatedCmdqv::new(
            viommu.clone(),
            mem.clone(),
            Arc::new(NoInterrupts),
            EmulatedCmdqvConfig::default(),
        )
        .unwrap();
        b.hw_queue_alloc(0, RAM, 0x1000).unwrap();
        viommu.take_calls();
        // Three TLBI_NH_VA and a CMD_SYNC (CS=NONE).
        for i in 0..3u64 {
            mem.write_obj(
                [0x12u64 | (1 << 48), 0x1000 * (i + 1)],
                GuestAddress(RAM + 16 * i),
            )
            .unwrap();
        }
        mem.write_obj([0x46u64, 0], GuestAddress(RAM + 48)).unwrap();
        b.page0_write(VCMDQ_CONFIG.offset, 1);
        b.page0_write(VCMDQ_PROD.offset, 4);
        assert_eq!(b.page0_read(VCMDQ_CONS.offset), 4);
        let counts = viommu.call_counts();
        assert_eq!(counts.get("vcmdq_exec"), Some(&4));
        assert_eq!(counts.get("vcmdq_exec:TLBI_NH_VA"), Some(&3));
        assert_eq!(counts.get("vcmdq_exec:CMD_SYNC"), Some(&1));
        assert!(viommu.take_calls().is_empty(), "nothing formatted");
    }

    #[test]
    fn vdevice_slots_follow_host_log2vsids() {
        let (_b, viommu) = backend(false);
        for sid in 0..16 {
            viommu.vdevice_alloc(sid, 0x100 + sid).unwrap();
        }
        assert_eq!(
            viommu.vdevice_alloc(16, 0x200).unwrap_err().errno,
            Errno::NoSpc
        );
    }

    #[test]
    fn trapped_page0_enables_only_allocated_queues() {
        let (mut b, _) = backend(false);
        b.page0_write(VCMDQ_CONFIG.offset, 1);
        assert_eq!(b.page0_read(VCMDQ_STATUS.offset), 0);
        b.hw_queue_alloc(0, RAM, 0x1000).unwrap();
        b.page0_write(VCMDQ_CONFIG.offset, 1);
        assert_eq!(b.page0_read(VCMDQ_STATUS.offset), 1);
        b.page0_write(VCMDQ_STATUS.offset, 0);
        assert_eq!(b.page0_read(VCMDQ_STATUS.offset), 1, "STATUS is read-only");
    }

    #[test]
    fn mapped_page0_is_served_by_the_engine_thread_and_joined_on_drop() {
        let (mut b, _) = backend(true);
        let Page0Mode::Mapped(region) = b.page0_mode() else {
            panic!("mapped mode expected");
        };
        assert_eq!(region.len(), PAGE0_BYTES as u64);
        b.hw_queue_alloc(0, RAM, 0x1000).unwrap();
        // A direct store, as a vCPU writing through the memory slot would.
        lock(&b.engine).page0().store(VCMDQ_CONFIG.offset, 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while lock(&b.engine).page0().load(VCMDQ_STATUS.offset) != 1 {
            assert!(
                Instant::now() < deadline,
                "engine thread never enabled the queue"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(b);
    }
}
