//! A disk queue served through its io_uring ([`super::uring::Ring`]):
//! every chain the driver made available is popped and checked exactly as
//! on the synchronous path ([`request::parse`], so a malformed chain gets
//! the same status), IN and OUT go to the ring as READV / WRITEV straight
//! on the guest's buffers and FLUSH as a data sync that waits for every
//! earlier operation, while GET_ID, DISCARD and WRITE_ZEROES (and failed
//! checks) are answered at once, synchronously, and so is OUT on a
//! buffered image file whose writes io_uring would only hand to one of its
//! threads (`inline_writes`). Then, while anything is in the ring: wait for
//! completions, write each one's status byte and use its chain, interrupt
//! the guest (as its notification rules allow) and take the chains the
//! driver added meanwhile, so the driver refills the queue while the rest
//! of its requests are in flight, as a disk's own queue would let it.
//!
//! An operation the kernel answered EINVAL (O_DIRECT with a guest buffer
//! not aligned as the host disk needs: the synchronous path goes through
//! an aligned bounce buffer) is served again synchronously; every other
//! error is VIRTIO_BLK_S_IOERR, as on the synchronous path.

use std::sync::atomic::Ordering;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

use super::request::{self, Failure, Parsed, Plan, RequestContext};
use super::uring::{Completion, OpKind, Ring};
use crate::worker::notify;
use crate::{GuestMemory, QueueInterrupt};

/// A request whose operation is in the ring.
struct Waiting {
    head: u16,
    status: GuestAddress,
    /// Kept for the synchronous retry and the counters.
    plan: Plan,
}

/// A queue's io_uring path.
pub(super) struct UringQueue {
    ring: Ring,
    /// OUT is written by the worker itself, not through the ring: the
    /// image is a buffered file whose writes io_uring would hand to io-wq
    /// ([`super::uring::punts_buffered_writes`]).
    inline_writes: bool,
    /// The requests in the ring, by tag (a slot index); `free` holds the
    /// empty slots.
    waiting: Vec<Option<Waiting>>,
    free: Vec<usize>,
    in_ring: usize,
    completions: Vec<Completion>,
}

/// Chains one [`UringQueue::process`] call takes off the queue at most, in
/// queue sizes: past it the call finishes what it started and returns, so
/// a driver that keeps the queue full cannot keep the worker from its
/// control events (a reset, a stop).
const ROUNDS_PER_CALL: usize = 4;

impl UringQueue {
    pub(super) fn new(ring: Ring, inline_writes: bool) -> Self {
        UringQueue {
            ring,
            inline_writes,
            waiting: Vec::new(),
            free: Vec::new(),
            in_ring: 0,
            completions: Vec::new(),
        }
    }

    /// False once the ring failed for good: the queue runs synchronously.
    pub(super) fn usable(&self) -> bool {
        self.ring.usable()
    }

    /// Request slots made so far (each reused once its request completed).
    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.waiting.len()
    }

    /// Serve what the driver makes available until nothing is in the ring:
    /// each completion is answered (status, used ring) as the kernel posts
    /// it, the guest interrupted through `interrupt` (as its notification
    /// rules allow) for what completed, and chains the driver added
    /// meanwhile join the ring, so the driver refills the queue while the
    /// rest is in flight. True when any chain was used.
    pub(super) fn process(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemory,
        ctx: &mut RequestContext<'_>,
        interrupt: Option<&QueueInterrupt>,
    ) -> bool {
        let mut used = false;
        let mut budget = usize::from(queue.size()) * ROUNDS_PER_CALL;
        loop {
            while budget > 0 {
                let Some(chain) = queue.pop_descriptor_chain(mem) else {
                    break;
                };
                budget -= 1;
                used = true;
                let head = chain.head_index();
                let descriptors: Vec<Descriptor> = chain.collect();
                let answered = match request::parse(&descriptors, mem, ctx.image, ctx.readonly) {
                    None => Some(0),
                    Some(parsed) => self.start(head, parsed, mem, ctx),
                };
                if let Some(written) = answered {
                    add_used(queue, mem, head, written);
                }
            }
            if self.in_ring == 0 {
                return used;
            }
            if let Err(e) = self.ring.step(&mut self.completions) {
                log::error!(target: "virtio-blk", "{}: io_uring: {e}; the queue runs synchronously from now on", ctx.image.path().display());
            }
            for (tag, result) in std::mem::take(&mut self.completions) {
                let slot = tag as usize;
                let Some(waiting) = self.waiting.get_mut(slot).and_then(Option::take) else {
                    continue;
                };
                self.free.push(slot);
                self.in_ring -= 1;
                let written = complete(waiting.status, waiting.plan, result, mem, ctx);
                add_used(queue, mem, waiting.head, written);
            }
            if let Some(interrupt) = interrupt {
                notify(queue, mem, interrupt);
            }
            if !self.ring.usable() {
                // Every request the ring held came back failed above.
                return used;
            }
        }
    }

    /// Put the request in the ring, or answer it now: Some(used length)
    /// when answered.
    fn start(
        &mut self,
        head: u16,
        parsed: Parsed,
        mem: &GuestMemory,
        ctx: &mut RequestContext<'_>,
    ) -> Option<u32> {
        let slot = self.free.last().copied().unwrap_or(self.waiting.len());
        let tag = slot as u64;
        let plan = match parsed.plan {
            Ok(plan @ (Plan::Read { .. } | Plan::Flush)) => plan,
            Ok(plan @ Plan::Write { .. }) if !self.inline_writes => plan,
            other => {
                let result = other.and_then(|plan| request::run(plan, mem, ctx));
                return Some(request::finish(mem, ctx.image, parsed.status, result));
            }
        };
        let queued = match &plan {
            Plan::Read { offset, data } => {
                self.ring
                    .add_transfer(mem, OpKind::Read, *offset, data, tag)
            }
            Plan::Write { offset, data } => {
                self.ring
                    .add_transfer(mem, OpKind::Write, *offset, data, tag)
            }
            _ => {
                self.ring.add_flush(mem, tag);
                Ok(())
            }
        };
        if let Err(e) = queued {
            let failure = Failure::BadAddress(match e {
                vm_memory::GuestMemoryError::InvalidGuestAddress(a) => a.0,
                _ => 0,
            });
            return Some(request::finish(mem, ctx.image, parsed.status, Err(failure)));
        }
        let waiting = Some(Waiting {
            head,
            status: parsed.status,
            plan,
        });
        if self.free.pop().is_some() {
            self.waiting[slot] = waiting;
        } else {
            self.waiting.push(waiting);
        }
        self.in_ring += 1;
        None
    }
}

/// The status of a request whose operation completed with `result`, its
/// counters bumped; the used length.
fn complete(
    status: GuestAddress,
    plan: Plan,
    result: std::io::Result<u64>,
    mem: &GuestMemory,
    ctx: &mut RequestContext<'_>,
) -> u32 {
    let outcome = match (result, &plan) {
        (Err(e), _) if e.raw_os_error() == Some(libc::EINVAL) => request::run(plan, mem, ctx),
        (Err(e), _) => Err(Failure::Io(e)),
        (Ok(_), Plan::Flush) => {
            ctx.counters.uring_ops.fetch_add(1, Ordering::Relaxed);
            Ok(0)
        }
        (Ok(moved), Plan::Read { data, .. } | Plan::Write { data, .. }) => {
            let to_guest = matches!(plan, Plan::Read { .. });
            let len = request::total(data);
            if moved == len {
                request::count(ctx.counters, to_guest, len);
                ctx.counters.uring_ops.fetch_add(1, Ordering::Relaxed);
                Ok(if to_guest { len } else { 0 })
            } else {
                Err(Failure::Io(std::io::Error::other(format!(
                    "io_uring moved {moved} of {len} bytes"
                ))))
            }
        }
        (Ok(_), _) => Err(Failure::Malformed("not an io_uring request")),
    };
    request::finish(mem, ctx.image, status, outcome)
}

fn add_used(queue: &mut Queue, mem: &GuestMemory, head: u16, written: u32) {
    if let Err(e) = queue.add_used(mem, head, written) {
        log::error!(target: "virtio-blk", "used ring: {e}");
    }
}
