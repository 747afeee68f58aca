//! One thread per queue, started when the device is built (by the VMM
//! thread: a vCPU thread, which handles the guest's DRIVER_OK, may not
//! create threads under its seccomp filter) and parked until the driver
//! starts the device. Serving, it waits (epoll) on the queue's notification
//! eventfd, its control eventfd, the device's kill eventfd and, for a
//! console's receive queue, the host input fd; it serves the queue and
//! interrupts the guest when it used buffers. The vCPU that wrote the
//! notify register only signalled an eventfd (a KVM ioeventfd), so device
//! I/O never runs on a vCPU thread.
//!
//! [`Workers::start`] hands a worker its queue; [`Workers::stop`] takes
//! every queue back and returns once no worker touches guest memory any
//! more (device reset). Every worker runs [`crate::thread_started`] first
//! with the thread kind [`WORKER_KIND`], where the VMM installs the
//! worker's seccomp filter.

use std::cell::Cell;
use std::io;
use std::num::Wrapping;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{Ordering, fence};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::error::ActivateError;
use crate::{ActiveQueue, GuestMemory};

/// The seccomp thread kind of every virtio worker.
pub const WORKER_KIND: &str = "virtio-worker";

const KILL: u64 = 0;
const CONTROL: u64 = 1;
const KICK: u64 = 2;
const INPUT: u64 = 3;
const WAKE: u64 = 4;

/// What a device does with its queue.
pub trait QueueHandler: Send + 'static {
    /// Serve what the driver made available; true when buffers were used
    /// (the guest is interrupted). A handler whose requests take long
    /// enough that the guest should hear of each one done before the
    /// batch ends uses `progress`; the others serve the batch whole and
    /// the worker interrupts once after it.
    fn process_queue(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemory,
        progress: Progress<'_>,
    ) -> bool;

    /// A host fd this queue also waits on (console input), if any.
    fn input_fd(&self) -> Option<RawFd> {
        None
    }

    /// Whether the worker should read input now (false while the handler
    /// holds as much undelivered input as it will buffer).
    fn wants_input(&self) -> bool {
        false
    }

    /// The input fd is readable: take input and deliver what fits; true
    /// when buffers were used (`progress`: as in [`Self::process_queue`]).
    /// `Err` ends input (end of file or error).
    fn input_ready(
        &mut self,
        _queue: &mut Queue,
        _mem: &GuestMemory,
        _progress: Progress<'_>,
    ) -> io::Result<bool> {
        Ok(false)
    }

    /// An eventfd another thread signals when what [`Self::wants_input`]
    /// answers may have changed (a virtio-net pair enabled or disabled by
    /// the control queue), if any.
    fn wake_fd(&self) -> Option<RawFd> {
        None
    }

    /// The wake eventfd fired: read it (it is level-triggered) and act on
    /// the change; true when buffers were used.
    fn woken(&mut self, _queue: &mut Queue, _mem: &GuestMemory) -> bool {
        false
    }
}

/// Lets a handler interrupt the guest in the middle of a batch for the
/// buffers it used so far, where the driver asks for it (EVENT_IDX's
/// used_event; without EVENT_IDX, unless the driver turned interrupts
/// off). A disk queue copying 1 MiB requests one after the other uses it:
/// the driver refills the ring while the rest of the batch is copied, and
/// the worker takes the new requests without a notification, where a
/// batch answered only at its end left the disk idle between batches.
#[derive(Clone, Copy)]
pub struct Progress<'a> {
    signal: Option<&'a Signal>,
}

impl<'a> Progress<'a> {
    /// No interrupt before the batch ends (tests, the fuzz target).
    pub const QUIET: Progress<'static> = Progress { signal: None };

    /// Progress signalled through `signal`.
    pub fn new(signal: &'a Signal) -> Self {
        Progress {
            signal: Some(signal),
        }
    }

    /// Interrupt the guest for what is on the used ring now, if the driver
    /// wants to hear of it.
    pub fn publish(&self, queue: &Queue, mem: &GuestMemory) {
        if let Some(signal) = self.signal {
            signal.notify(queue, mem);
        }
    }
}

/// A queue's interrupt and whether the driver wants it (virtio 1.2 section
/// 2.7.10, VIRTIO_F_EVENT_IDX): the guest is interrupted when the used
/// index passes the driver's `used_event` since the last decision.
///
/// Ours, not virtio-queue's `needs_notification`: that one counts only the
/// entries its own `add_used` added, and a merged receive frame goes on the
/// used ring with one index update ([`add_used_batch`]), which it would not
/// see. Without EVENT_IDX every decision interrupts (the driver's
/// VRING_AVAIL_F_NO_INTERRUPT is only a hint, and virtio-queue ignores it
/// too).
pub struct Signal {
    interrupt: crate::QueueInterrupt,
    /// The used index at the last decision.
    decided: Cell<Wrapping<u16>>,
}

impl Signal {
    /// `interrupt` for `queue`, nothing used since it started.
    pub fn new(interrupt: crate::QueueInterrupt, queue: &Queue) -> Self {
        Signal {
            interrupt,
            decided: Cell::new(Wrapping(queue.next_used())),
        }
    }

    /// Interrupt the guest for the entries used since the last decision,
    /// unless the driver said (used_event) it does not want one yet.
    pub fn notify(&self, queue: &Queue, mem: &GuestMemory) {
        if self.wanted(queue, mem) {
            self.interrupt.signal();
        }
    }

    fn wanted(&self, queue: &Queue, mem: &GuestMemory) -> bool {
        let new = Wrapping(queue.next_used());
        let old = self.decided.replace(new);
        if !queue.event_idx_enabled() {
            return true;
        }
        // The used index's store before the driver's used_event is read
        // (the driver writes used_event, then reads the used index).
        fence(Ordering::SeqCst);
        let at = u64::from(queue.size()) * 2 + 4;
        let used_event = match GuestAddress(queue.avail_ring())
            .checked_add(at)
            .map(|a| mem.load::<u16>(a, Ordering::Relaxed))
        {
            Some(Ok(v)) => Wrapping(u16::from_le(v)),
            // A ring the driver placed past RAM: interrupt, as before any
            // decision.
            _ => return true,
        };
        new - used_event - Wrapping(1) < new - old
    }
}

/// Put `entries` (head, used length) on `queue`'s used ring with one update
/// of the used index, so the driver sees all of them or none: a merged
/// receive frame's buffers must appear together (virtio 1.2 section
/// 5.1.6.4: the driver reads `num_buffers` from the first and takes that
/// many). virtio-queue's `add_used` publishes the index per entry, and a
/// driver polling between two of them dropped the frame ("buffers
/// missing"), which TCP then retransmitted.
pub(crate) fn add_used_batch(
    queue: &mut Queue,
    mem: &GuestMemory,
    entries: &[(u16, u32)],
) -> Result<(), virtio_queue::Error> {
    let size = queue.size();
    if entries.iter().any(|&(head, _)| head >= size) {
        return Err(virtio_queue::Error::InvalidDescriptorIndex);
    }
    let ring = GuestAddress(queue.used_ring());
    let start = Wrapping(queue.next_used());
    for (i, &(head, len)) in entries.iter().enumerate() {
        let slot = u64::from((start + Wrapping(i as u16)).0 % size);
        let at = ring
            .checked_add(4 + slot * 8)
            .ok_or(virtio_queue::Error::AddressOverflow)?;
        // struct virtq_used_elem: le32 id, le32 len.
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_slice(&elem, at)
            .map_err(virtio_queue::Error::GuestMemory)?;
    }
    let end = start + Wrapping(entries.len() as u16);
    let idx = ring
        .checked_add(2)
        .ok_or(virtio_queue::Error::AddressOverflow)?;
    mem.store(end.0.to_le(), idx, Ordering::Release)
        .map_err(virtio_queue::Error::GuestMemory)?;
    queue.set_next_used(end.0);
    Ok(())
}

/// What a worker is told to do, and whether it is serving.
#[derive(Default)]
struct Slot {
    queue: Option<(GuestMemory, ActiveQueue)>,
    serving: bool,
}

struct Shared {
    slot: Mutex<Slot>,
    changed: Condvar,
    control: EventFd,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The worker threads of one device, one per queue.
pub struct Workers {
    kill: EventFd,
    workers: Vec<(Arc<Shared>, Option<JoinHandle<()>>)>,
}

impl Workers {
    /// No workers yet.
    pub fn new() -> io::Result<Self> {
        Ok(Workers {
            kill: EventFd::new(EFD_NONBLOCK)?,
            workers: Vec::new(),
        })
    }

    /// Start the parked thread `name` for the next queue, with `handler`.
    pub fn spawn(&mut self, name: String, handler: impl QueueHandler) -> io::Result<()> {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot::default()),
            changed: Condvar::new(),
            control: EventFd::new(EFD_NONBLOCK)?,
        });
        let kill = self.kill.try_clone()?;
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                if let Err(e) = crate::thread_started(WORKER_KIND) {
                    log::error!(target: "virtio", "{name}: not started: {e}");
                    return;
                }
                if let Err(e) = run(&kill, &theirs, handler) {
                    log::error!(target: "virtio", "{name}: stopped: {e}");
                }
                // Never leave `stop` waiting on a dead worker.
                theirs.lock().serving = false;
                theirs.changed.notify_all();
            })?;
        self.workers.push((shared, Some(thread)));
        Ok(())
    }

    /// Serve `queue` (its index picks the worker).
    pub fn start(&self, mem: GuestMemory, queue: ActiveQueue) -> Result<(), ActivateError> {
        self.start_on(usize::from(queue.index), mem, queue)
    }

    /// Serve `queue` on the worker spawned `worker`-th (a device whose
    /// queue numbering depends on the features, as virtio-net's control
    /// queue, picks it).
    pub fn start_on(
        &self,
        worker: usize,
        mem: GuestMemory,
        queue: ActiveQueue,
    ) -> Result<(), ActivateError> {
        let index = queue.index;
        let (shared, _) = self
            .workers
            .get(worker)
            .ok_or(ActivateError::NoWorker(index))?;
        shared.lock().queue = Some((mem, queue));
        shared
            .control
            .write(1)
            .map_err(|source| ActivateError::Host {
                queue: index,
                what: "worker wakeup",
                source,
            })
    }

    /// Serve every queue the driver enabled (DRIVER_OK); on a failure the
    /// ones already started are taken back.
    pub fn start_all(
        &self,
        mem: &GuestMemory,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        for queue in queues {
            if let Err(e) = self.start(mem.clone(), queue) {
                self.stop();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Take every queue back; returns once no worker serves one.
    pub fn stop(&self) {
        for (shared, thread) in &self.workers {
            let mut slot = shared.lock();
            slot.queue = None;
            if !slot.serving {
                continue;
            }
            if let Err(e) = shared.control.write(1) {
                log::error!(target: "virtio", "worker control eventfd: {e}");
                continue;
            }
            while slot.serving && thread.as_ref().is_some_and(|t| !t.is_finished()) {
                slot = shared.changed.wait(slot).unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if let Err(e) = self.kill.write(1) {
            log::error!(target: "virtio", "worker kill eventfd: {e}");
        }
        for (_, thread) in &mut self.workers {
            if let Some(t) = thread.take()
                && t.join().is_err()
            {
                log::error!(target: "virtio", "a worker thread panicked");
            }
        }
    }
}

fn set_input(epoll: &Epoll, fd: RawFd, on: bool, registered: &mut bool) {
    if on == *registered {
        return;
    }
    let op = if on {
        ControlOperation::Add
    } else {
        ControlOperation::Delete
    };
    match epoll.ctl(op, fd, EpollEvent::new(EventSet::IN, INPUT)) {
        Ok(()) => *registered = on,
        // A regular file or /dev/null cannot be polled: no input then.
        Err(e) => log::warn!(target: "virtio", "input fd {fd}: {e}; input ignored"),
    }
}

fn wait(epoll: &Epoll, events: &mut [EpollEvent]) -> io::Result<usize> {
    loop {
        match epoll.wait(-1, events) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Park until a queue is handed over, serve it until it is taken back;
/// return on kill.
fn run(kill: &EventFd, shared: &Shared, mut handler: impl QueueHandler) -> io::Result<()> {
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        kill.as_raw_fd(),
        EpollEvent::new(EventSet::IN, KILL),
    )?;
    epoll.ctl(
        ControlOperation::Add,
        shared.control.as_raw_fd(),
        EpollEvent::new(EventSet::IN, CONTROL),
    )?;
    let mut events = [EpollEvent::default(); 4];
    loop {
        let n = wait(&epoll, &mut events)?;
        if events.iter().take(n).any(|e| e.data() == KILL) {
            return Ok(());
        }
        let _ = shared.control.read();
        let taken = {
            let mut slot = shared.lock();
            let taken = slot.queue.take();
            slot.serving = taken.is_some();
            taken
        };
        let Some((mem, queue)) = taken else {
            continue;
        };
        let killed = serve(&epoll, &mut handler, mem, queue);
        shared.lock().serving = false;
        shared.changed.notify_all();
        if killed? {
            return Ok(());
        }
    }
}

/// Serve one queue until the control eventfd fires (stop) or kill; true
/// on kill.
fn serve(
    epoll: &Epoll,
    handler: &mut impl QueueHandler,
    mem: GuestMemory,
    active: ActiveQueue,
) -> io::Result<bool> {
    let ActiveQueue {
        mut queue,
        kick,
        interrupt,
        ..
    } = active;
    epoll.ctl(
        ControlOperation::Add,
        kick.as_raw_fd(),
        EpollEvent::new(EventSet::IN, KICK),
    )?;
    let mut input = handler.input_fd();
    let mut input_registered = false;
    let wake = handler.wake_fd();
    if let Some(fd) = wake {
        epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, WAKE),
        )?;
    }
    let signal = Signal::new(interrupt, &queue);
    let progress = Progress::new(&signal);
    // Buffers made available before the queue was handed over.
    if serve_kick(handler, &mut queue, &mem, progress) {
        signal.notify(&queue, &mem);
    }
    let mut events = [EpollEvent::default(); 4];
    let result = loop {
        if let Some(fd) = input {
            set_input(epoll, fd, handler.wants_input(), &mut input_registered);
        }
        let n = match wait(epoll, &mut events) {
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        let mut used = false;
        let mut stop = None;
        for event in events.iter().take(n) {
            match event.data() {
                KILL => stop = Some(true),
                CONTROL => stop = Some(false),
                KICK => {
                    let _ = kick.read();
                    used |= serve_quietly(handler, &mut queue, &mem, progress);
                }
                WAKE => used |= handler.woken(&mut queue, &mem),
                _ => match handler.input_ready(&mut queue, &mem, progress) {
                    Ok(u) => used |= u,
                    Err(e) => {
                        log::info!(target: "virtio", "input ends: {e}");
                        if let Some(fd) = input.take() {
                            set_input(epoll, fd, false, &mut input_registered);
                        }
                    }
                },
            }
        }
        // Whatever woke the worker: publish how far it read, and serve
        // again what the driver made available since, if the handler takes
        // it (a receive queue whose frame waited for buffers).
        if stop.is_none() {
            used |= rearm(handler, &mut queue, &mem, progress);
        }
        if used {
            signal.notify(&queue, &mem);
        }
        if let Some(killed) = stop {
            break Ok(killed);
        }
    };
    // Leave the control event for the outer loop to consume.
    let _ = epoll.ctl(
        ControlOperation::Delete,
        kick.as_raw_fd(),
        EpollEvent::new(EventSet::IN, KICK),
    );
    if let Some(fd) = wake {
        let _ = epoll.ctl(
            ControlOperation::Delete,
            fd,
            EpollEvent::new(EventSet::IN, WAKE),
        );
    }
    if let Some(fd) = input.filter(|_| input_registered) {
        let _ = epoll.ctl(
            ControlOperation::Delete,
            fd,
            EpollEvent::new(EventSet::IN, INPUT),
        );
    }
    result
}

/// Serve a kicked queue with the driver's notifications off (the
/// VRING_USED_F_NO_NOTIFY flag; with VIRTIO_RING_F_EVENT_IDX the driver
/// only notifies once it passes the published avail_event, which stays
/// behind while serving), then turn them back on and serve again what
/// arrived meanwhile: a driver that added a buffer after the handler's
/// last look but before the re-enable did not notify. True when buffers
/// were used.
fn serve_kick(
    handler: &mut impl QueueHandler,
    queue: &mut Queue,
    mem: &GuestMemory,
    progress: Progress<'_>,
) -> bool {
    serve_quietly(handler, queue, mem, progress) | rearm(handler, queue, mem, progress)
}

/// The first half of [`serve_kick`]: serve with the driver's notifications
/// off. The event loop calls this for a kick and [`rearm`] once at the end
/// of its round, whatever woke it.
fn serve_quietly(
    handler: &mut impl QueueHandler,
    queue: &mut Queue,
    mem: &GuestMemory,
    progress: Progress<'_>,
) -> bool {
    if let Err(e) = queue.disable_notification(mem) {
        log::debug!(target: "virtio", "notification flag: {e}");
    }
    handler.process_queue(queue, mem, progress)
}

/// Re-enable the driver's notifications (with EVENT_IDX: avail_event set to
/// where the device stopped reading), and while the driver had made more
/// available and the handler takes some of it, serve it. Without this a
/// worker that waits with avail_event behind the driver's index is never
/// notified again. True when buffers were used.
fn rearm(
    handler: &mut impl QueueHandler,
    queue: &mut Queue,
    mem: &GuestMemory,
    progress: Progress<'_>,
) -> bool {
    let mut used = false;
    loop {
        match queue.enable_notification(mem) {
            Ok(true) => {}
            Ok(false) => return used,
            Err(e) => {
                log::debug!(target: "virtio", "notification re-enable: {e}");
                return used;
            }
        }
        let before = queue.next_avail();
        used |= serve_quietly(handler, queue, mem, progress);
        if queue.next_avail() == before {
            // Buffers the handler leaves for now (a receive queue with no
            // frame to deliver, or too few buffers for it). Without
            // EVENT_IDX: notifications back on. With it, avail_event stays
            // as published last, above or by the handler, which may have
            // asked for more than next_avail (virtio-net's merged receive).
            if !queue.event_idx_enabled()
                && let Err(e) = queue.enable_notification(mem)
            {
                log::debug!(target: "virtio", "notification re-enable: {e}");
            }
            return used;
        }
    }
}

/// Serve every chain the driver made available on `queue`: `serve` handles
/// one and returns the bytes it wrote into it, and the chain goes back on
/// the used ring with that length (a used-ring failure is logged under the
/// device's log `target`). True when any chain was served, so the caller
/// signals the guest.
pub(crate) fn serve_chains(
    queue: &mut Queue,
    mem: &GuestMemory,
    target: &str,
    mut serve: impl FnMut(virtio_queue::DescriptorChain<&GuestMemory>) -> u32,
) -> bool {
    let mut used = false;
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        let written = serve(chain);
        if let Err(e) = queue.add_used(mem, head, written) {
            log::error!(target: target, "used ring: {e}");
        }
        used = true;
    }
    used
}

/// Interrupts the tests count.
#[cfg(test)]
pub(crate) mod counted {
    use std::sync::Arc;

    use virtio_queue::Queue;
    use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

    use super::Signal;

    /// A signal for `queue` on a fresh MSI-X eventfd, and that eventfd.
    pub fn signal(queue: &Queue) -> (Signal, Arc<EventFd>) {
        let vector = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let interrupt = crate::QueueInterrupt::new(Some(vector.clone()), Default::default());
        (Signal::new(interrupt, queue), vector)
    }

    /// Interrupts signalled on `vector` since the last call.
    pub fn interrupts(vector: &EventFd) -> u64 {
        match vector.read() {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => panic!("{e}"),
        }
    }
}

#[cfg(test)]
mod tests;
