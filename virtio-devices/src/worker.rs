//! One thread per queue: it waits (epoll) on the queue's notification
//! eventfd, a kill eventfd shared by the device's workers and, for a
//! console's receive queue, the host input fd; it serves the queue and
//! interrupts the guest when it used buffers. The vCPU that wrote the
//! notify register only signalled an eventfd (a KVM ioeventfd), so device
//! I/O never runs on a vCPU thread.
//!
//! Every worker runs [`crate::thread_started`] first with the thread kind
//! [`WORKER_KIND`], where the VMM installs the worker's seccomp filter.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::thread::JoinHandle;

use virtio_queue::Queue;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::{ActiveQueue, GuestMemory};

/// The seccomp thread kind of every virtio worker.
pub const WORKER_KIND: &str = "virtio-worker";

const KILL: u64 = 0;
const KICK: u64 = 1;
const INPUT: u64 = 2;

/// What a device does with its queue.
pub trait QueueHandler: Send + 'static {
    /// Serve what the driver made available; true when buffers were used
    /// (the guest is interrupted).
    fn process_queue(&mut self, queue: &mut Queue, mem: &GuestMemory) -> bool;

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
    /// when buffers were used. `Err` ends input (end of file or error).
    fn input_ready(&mut self, _queue: &mut Queue, _mem: &GuestMemory) -> io::Result<bool> {
        Ok(false)
    }
}

/// The worker threads of one device.
pub struct Workers {
    kill: EventFd,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// No workers yet.
    pub fn new() -> io::Result<Self> {
        Ok(Workers {
            kill: EventFd::new(EFD_NONBLOCK)?,
            threads: Vec::new(),
        })
    }

    /// Start a thread named `name` serving `queue` with `handler`.
    pub fn spawn(
        &mut self,
        name: String,
        mem: GuestMemory,
        queue: ActiveQueue,
        handler: impl QueueHandler,
    ) -> io::Result<()> {
        let kill = self.kill.try_clone()?;
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                if let Err(e) = crate::thread_started(WORKER_KIND) {
                    log::error!(target: "virtio", "{name}: not started: {e}");
                    return;
                }
                if let Err(e) = run(&kill, mem, queue, handler) {
                    log::error!(target: "virtio", "{name}: stopped: {e}");
                }
            })?;
        self.threads.push(thread);
        Ok(())
    }

    /// Stop and join every worker; the workers can be spawned again.
    pub fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        if let Err(e) = self.kill.write(1) {
            log::error!(target: "virtio", "worker kill eventfd: {e}");
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::error!(target: "virtio", "a worker thread panicked");
            }
        }
        // Consume the kill so the next workers start clean.
        let _ = self.kill.read();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
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

fn run(
    kill: &EventFd,
    mem: GuestMemory,
    active: ActiveQueue,
    mut handler: impl QueueHandler,
) -> io::Result<()> {
    let ActiveQueue {
        mut queue,
        kick,
        interrupt,
        ..
    } = active;
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        kill.as_raw_fd(),
        EpollEvent::new(EventSet::IN, KILL),
    )?;
    epoll.ctl(
        ControlOperation::Add,
        kick.as_raw_fd(),
        EpollEvent::new(EventSet::IN, KICK),
    )?;
    let mut input = handler.input_fd();
    let mut input_registered = false;
    // Buffers made available before the worker started (a driver may
    // notify before DRIVER_OK's activation finished).
    if handler.process_queue(&mut queue, &mem) {
        interrupt.signal();
    }
    let mut events = [EpollEvent::default(); 4];
    loop {
        if let Some(fd) = input {
            set_input(&epoll, fd, handler.wants_input(), &mut input_registered);
        }
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for event in events.iter().take(n) {
            let used = match event.data() {
                KILL => return Ok(()),
                KICK => {
                    let _ = kick.read();
                    handler.process_queue(&mut queue, &mem)
                }
                _ => match handler.input_ready(&mut queue, &mem) {
                    Ok(used) => used,
                    Err(e) => {
                        log::info!(target: "virtio", "input ends: {e}");
                        if let Some(fd) = input.take() {
                            set_input(&epoll, fd, false, &mut input_registered);
                        }
                        false
                    }
                },
            };
            if used {
                interrupt.signal();
            }
        }
    }
}
