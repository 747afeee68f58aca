//! Threads that serve a batch's large reads and writes beside the queue's
//! worker, on the synchronous path of a raw image: the worker pops and
//! checks every chain the driver made available, keeps small requests
//! (and every one that is not IN or OUT) for itself and hands each IN
//! of [`HANDOFF_MIN`] bytes or more to the queue's helpers, and each such
//! OUT too where the kernel lets two threads write the image at once
//! ([`Handoff::for_image`]); it then takes handed-over requests itself
//! too until none is left, waits for the ones a helper holds, and puts
//! every chain on the used ring before the batch's one interrupt. A
//! request's bytes are still copied once (preadv / pwritev on the guest's
//! buffers), but on as many host CPUs as there are threads: one worker
//! copies 1 MiB requests one after the other, which held sequential reads
//! at 0.7-1.0x QEMU's, whose thread pool copies on every CPU
//! (docs/perf/peer-virtio.md).
//!
//! Requests in flight together may complete in any order (virtio 1.2
//! section 5.2.6.1: the driver orders what it needs ordered by waiting for
//! completions); FLUSH, DISCARD and WRITE_ZEROES still wait for every
//! earlier request of their batch, as the io_uring path's flush does.
//!
//! Helpers are started by the VMM thread with the worker, run
//! [`crate::thread_started`] with [`crate::worker::WORKER_KIND`] (the
//! worker's seccomp filter) and touch guest memory only between a
//! worker's hand-off and its wait: once [`Helpers::finish`] returned, no
//! helper holds a request or the guest memory, so stopping the worker
//! (device reset) stops them too.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use virtio_bindings::virtio_blk::VIRTIO_BLK_ID_BYTES;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

use super::image::DiskImage;
use super::request::{self, BlockCounters, Plan, RequestContext};
use crate::GuestMemory;
use crate::worker::Progress;

/// Smallest IN / OUT handed to a helper, in bytes: below it the wakeup
/// costs more than the copy it would share (4 KiB random reads stay with
/// the worker).
pub(super) const HANDOFF_MIN: u64 = 64 << 10;

/// Helper threads for a disk queue on a host with `cpus` CPUs: one fewer
/// than the CPUs, at most three (the worker is the fourth thread copying).
pub(super) fn count_for(cpus: usize) -> usize {
    cpus.clamp(1, 4) - 1
}

/// Which requests the worker hands over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Handoff {
    /// Smallest IN / OUT handed over, in bytes.
    pub min: u64,
    /// Whether OUT is handed over at all.
    pub writes: bool,
}

impl Handoff {
    /// Every IN and OUT (the tests and the fuzz target).
    pub const EVERY: Handoff = Handoff {
        min: 0,
        writes: true,
    };

    /// The VMM's choice for `image`: IN and OUT of [`HANDOFF_MIN`] bytes
    /// or more, but OUT only to a block device or an image opened with
    /// O_DIRECT. A buffered write to a regular file holds the file's inode
    /// lock in the kernel while it copies (tmpfs, ext4 and xfs alike), so a
    /// second thread writing the same image only waits for the first, and
    /// the handoff is pure cost: with writes handed over, sequential write
    /// to a tmpfs image fell from 1.3x QEMU's to 0.8-0.9x. Reads of the
    /// page cache take no such lock, and a block device is written without
    /// it.
    pub fn for_image(image: &DiskImage) -> Handoff {
        Handoff {
            min: HANDOFF_MIN,
            writes: image.buffered_file().is_none(),
        }
    }

    /// Whether `plan` goes to the helpers.
    pub fn takes(&self, plan: &Plan) -> bool {
        let kind = match plan {
            Plan::Read { .. } => true,
            Plan::Write { .. } => self.writes,
            _ => false,
        };
        kind && plan.bytes() >= self.min
    }
}

/// One IN or OUT the worker handed over.
struct Job {
    head: u16,
    status: GuestAddress,
    plan: Plan,
}

#[derive(Default)]
struct State {
    /// The batch's guest memory while the worker has requests out.
    mem: Option<GuestMemory>,
    jobs: VecDeque<Job>,
    /// Requests a helper took and has not answered yet.
    running: usize,
    /// (head, used length) of the answered ones.
    answered: Vec<(u16, u32)>,
    exit: bool,
}

/// What a helper needs to serve a request.
struct Disk {
    image: Arc<DiskImage>,
    readonly: bool,
    serial: [u8; VIRTIO_BLK_ID_BYTES as usize],
    counters: Arc<BlockCounters>,
}

struct Shared {
    state: Mutex<State>,
    /// A job was queued, or exit.
    work: Condvar,
    /// A helper answered a job.
    answered: Condvar,
    disk: Disk,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serve `job` outside the lock: its used length.
    fn serve(&self, job: Job, mem: &GuestMemory, buffer: &mut Vec<u8>) -> (u16, u32) {
        let mut ctx = RequestContext {
            image: &self.disk.image,
            readonly: self.disk.readonly,
            serial: &self.disk.serial,
            counters: &self.disk.counters,
            buffer,
        };
        let result = request::run(job.plan, mem, &mut ctx);
        (
            job.head,
            request::finish(mem, &self.disk.image, job.status, result),
        )
    }
}

/// The helper threads of one disk queue.
pub(super) struct Helpers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Requests handed over in the current batch and not yet collected.
    outstanding: usize,
    /// Which requests are handed over.
    handoff: Handoff,
}

impl Helpers {
    /// Start `count` helpers named `name`-h0, -h1, ... (parked until the
    /// worker hands them a request).
    pub(super) fn spawn(
        name: &str,
        count: usize,
        image: Arc<DiskImage>,
        readonly: bool,
        serial: [u8; VIRTIO_BLK_ID_BYTES as usize],
        counters: Arc<BlockCounters>,
        handoff: Handoff,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            answered: Condvar::new(),
            disk: Disk {
                image,
                readonly,
                serial,
                counters,
            },
        });
        let mut helpers = Helpers {
            shared,
            threads: Vec::new(),
            outstanding: 0,
            handoff,
        };
        for n in 0..count {
            let shared = helpers.shared.clone();
            let thread_name = format!("{name}-h{n}");
            let thread = std::thread::Builder::new()
                .name(thread_name.clone())
                .spawn(move || {
                    if let Err(e) = crate::thread_started(crate::worker::WORKER_KIND) {
                        log::error!(target: "virtio-blk", "{thread_name}: not started: {e}");
                        return;
                    }
                    help(&shared);
                })?;
            // On an error above, Drop ends the helpers already started.
            helpers.threads.push(thread);
        }
        Ok(helpers)
    }

    /// Hand `plan` (an IN or OUT [`Handoff::takes`]) over.
    pub(super) fn hand_off(
        &mut self,
        mem: &GuestMemory,
        head: u16,
        status: GuestAddress,
        plan: Plan,
    ) {
        let mut state = self.shared.lock();
        if state.mem.is_none() {
            state.mem = Some(mem.clone());
        }
        state.jobs.push_back(Job { head, status, plan });
        drop(state);
        self.outstanding += 1;
        self.shared.work.notify_one();
    }

    /// Serve what no helper took yet, wait for the rest; `used` gets
    /// (head, used length) of every request handed over since the last
    /// call. No helper touches guest memory once this returns.
    pub(super) fn finish(
        &mut self,
        mem: &GuestMemory,
        buffer: &mut Vec<u8>,
        used: &mut Vec<(u16, u32)>,
    ) {
        while self.step(mem, buffer, used) {}
    }

    /// Serve one request no helper took yet, or else wait until a helper
    /// answers one; `used` gets (head, used length) of every request
    /// answered so far. False, with nothing done, once none is
    /// outstanding: from then on no helper touches guest memory.
    pub(super) fn step(
        &mut self,
        mem: &GuestMemory,
        buffer: &mut Vec<u8>,
        used: &mut Vec<(u16, u32)>,
    ) -> bool {
        if self.outstanding == 0 {
            return false;
        }
        let mut state = self.shared.lock();
        if let Some(job) = state.jobs.pop_front() {
            drop(state);
            used.push(self.shared.serve(job, mem, buffer));
            self.outstanding -= 1;
            state = self.shared.lock();
        } else {
            // Every outstanding request is with a helper, or answered.
            while state.answered.is_empty() && state.running > 0 {
                state = self
                    .shared
                    .answered
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
        self.outstanding -= state.answered.len();
        used.append(&mut state.answered);
        if self.outstanding == 0 {
            state.mem = None;
        }
        true
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        self.shared.lock().exit = true;
        self.shared.work.notify_all();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                log::error!(target: "virtio-blk", "a disk helper thread panicked");
            }
        }
    }
}

/// Serve every chain the driver made available, the large reads and
/// writes shared with `helpers`; true when any was used.
///
/// Each IN or OUT of [`HANDOFF_MIN`] bytes or more goes on the used ring
/// as soon as it is done, and `progress` interrupts the guest for it (if
/// the driver asks): the driver then refills the ring while the rest of
/// the batch is copied, and the new chains are served in this same call,
/// without a notification. Answered only at the batch's end, 16 requests
/// of 1 MiB left the disk idle for the whole round trip of an interrupt
/// and the next notification between batches. Small requests wait for the
/// end of the batch, which then takes one interrupt (from the worker).
pub(super) fn process(
    helpers: &mut Helpers,
    queue: &mut Queue,
    mem: &GuestMemory,
    ctx: &mut RequestContext<'_>,
    progress: Progress<'_>,
) -> bool {
    let mut used = Vec::new();
    let mut any = false;
    // A driver that refills as fast as the requests are answered would
    // keep one call going for ever: one call serves at most two rings'
    // worth, and the worker's rearm comes back for the rest.
    let mut budget = 2 * usize::from(queue.size());
    loop {
        while budget > 0
            && let Some(chain) = queue.pop_descriptor_chain(mem)
        {
            budget -= 1;
            any = true;
            let head = chain.head_index();
            let descriptors: Vec<Descriptor> = chain.collect();
            let Some(parsed) = request::parse(&descriptors, mem, ctx.image, ctx.readonly) else {
                used.push((head, 0));
                continue;
            };
            let plan = match parsed.plan {
                Ok(plan @ (Plan::Read { .. } | Plan::Write { .. })) => plan,
                other => {
                    // FLUSH, DISCARD and WRITE_ZEROES come after every
                    // earlier request of the batch; GET_ID and failed
                    // checks need not, but are rare enough to wait too.
                    helpers.finish(mem, ctx.buffer, &mut used);
                    let result = other.and_then(|plan| request::run(plan, mem, ctx));
                    used.push((head, request::finish(mem, ctx.image, parsed.status, result)));
                    continue;
                }
            };
            if helpers.handoff.takes(&plan) {
                helpers.hand_off(mem, head, parsed.status, plan);
            } else {
                let large = plan.bytes() >= HANDOFF_MIN;
                let result = request::run(plan, mem, ctx);
                used.push((head, request::finish(mem, ctx.image, parsed.status, result)));
                if large {
                    publish(queue, mem, &mut used, progress);
                }
            }
        }
        // What a helper answered is large by the handoff's rule.
        if !helpers.step(mem, ctx.buffer, &mut used) {
            break;
        }
        publish(queue, mem, &mut used, progress);
    }
    // The worker interrupts once for what is left.
    publish(queue, mem, &mut used, Progress::QUIET);
    any
}

/// Put `used` on the used ring, and let `progress` interrupt the guest
/// for it now.
fn publish(
    queue: &mut Queue,
    mem: &GuestMemory,
    used: &mut Vec<(u16, u32)>,
    progress: Progress<'_>,
) {
    if used.is_empty() {
        return;
    }
    for (head, written) in used.drain(..) {
        if let Err(e) = queue.add_used(mem, head, written) {
            log::error!(target: "virtio-blk", "used ring: {e}");
        }
    }
    progress.publish(queue, mem);
}

/// A helper's loop: take a job, serve it, answer; until exit.
fn help(shared: &Shared) {
    let mut buffer = Vec::new();
    let mut state = shared.lock();
    loop {
        if state.exit {
            return;
        }
        // The worker sets the memory before it queues a batch's first job.
        let taken = match state.mem.clone() {
            Some(mem) => state.jobs.pop_front().map(|job| (job, mem)),
            None => None,
        };
        let Some((job, mem)) = taken else {
            state = shared.work.wait(state).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        state.running += 1;
        drop(state);
        let write = matches!(job.plan, Plan::Write { .. });
        let answer = shared.serve(job, &mem, &mut buffer);
        drop(mem);
        let counters = &shared.disk.counters;
        counters.helper_ops.fetch_add(1, Ordering::Relaxed);
        if write {
            counters.helper_write_ops.fetch_add(1, Ordering::Relaxed);
        }
        state = shared.lock();
        state.running -= 1;
        state.answered.push(answer);
        shared.answered.notify_one();
    }
}
