//! A disk queue served through its io_uring ([`super::uring::Ring`]), one
//! batch per notification: every chain the driver made available is
//! popped and checked exactly as on the synchronous path
//! ([`request::parse`], so a malformed chain gets the same status), IN and
//! OUT go to the ring as READV / WRITEV straight on the guest's buffers and
//! FLUSH as a data sync that waits for every earlier operation, while
//! GET_ID, DISCARD and WRITE_ZEROES (and failed checks) are answered at
//! once, synchronously, and so is OUT on a buffered image file whose writes
//! io_uring would only hand to one of its threads (`inline_writes`). Then
//! the ring runs until every operation completed,
//! each status byte is written and its chain used; the worker interrupts
//! the guest once for the batch.
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
use crate::GuestMemory;

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
    waiting: Vec<Option<Waiting>>,
    completions: Vec<Completion>,
}

impl UringQueue {
    pub(super) fn new(ring: Ring, inline_writes: bool) -> Self {
        UringQueue {
            ring,
            inline_writes,
            waiting: Vec::new(),
            completions: Vec::new(),
        }
    }

    /// False once the ring failed for good: the queue runs synchronously.
    pub(super) fn usable(&self) -> bool {
        self.ring.usable()
    }

    /// Serve every available chain as one batch; true when any was used.
    pub(super) fn process(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemory,
        ctx: &mut RequestContext<'_>,
    ) -> bool {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
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
        if self.waiting.is_empty() {
            return used;
        }
        if let Err(e) = self.ring.run(&mut self.completions) {
            log::error!(target: "virtio-blk", "{}: io_uring: {e}; the queue runs synchronously from now on", ctx.image.path().display());
        }
        for (tag, result) in std::mem::take(&mut self.completions) {
            let Some(waiting) = self.waiting.get_mut(tag as usize).and_then(Option::take) else {
                continue;
            };
            let written = complete(waiting.status, waiting.plan, result, mem, ctx);
            add_used(queue, mem, waiting.head, written);
        }
        self.waiting.clear();
        used
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
        let tag = self.waiting.len() as u64;
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
        self.waiting.push(Some(Waiting {
            head,
            status: parsed.status,
            plan,
        }));
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
