//! The VMM thread's event loop: one epoll set in which every file
//! descriptor is registered with the event its readiness stands for (an API
//! request, a signal, a VM that stopped, later a vEVENTQ), and a wait with
//! an optional timeout. Nothing here polls: the thread sleeps in
//! `epoll_wait` until a registered fd is readable or the timeout passes.
//!
//! Registering another source is one line:
//! `events.add(&veventq_fd, Event::Veventq(index))?`, plus its arm in the
//! caller's `match`. The loop is level-triggered, so whoever handles an
//! event must drain its fd (read the eventfd) or it fires again at once.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// Ready fds handed back by one wait at most.
const MAX_READY: usize = 32;

/// An epoll set whose fds each stand for an event of type `E`.
pub struct EventLoop<E: Copy> {
    epoll: Epoll,
    /// The event of each registration, indexed by the epoll user data.
    registered: Vec<Option<(RawFd, E)>>,
}

impl<E: Copy> EventLoop<E> {
    /// An empty loop.
    pub fn new() -> io::Result<Self> {
        Ok(EventLoop {
            epoll: Epoll::new()?,
            registered: Vec::new(),
        })
    }

    /// Report `event` whenever `fd` is readable.
    pub fn add(&mut self, fd: &impl AsRawFd, event: E) -> io::Result<()> {
        let raw = fd.as_raw_fd();
        let slot = match self.registered.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.registered.push(None);
                self.registered.len() - 1
            }
        };
        self.epoll.ctl(
            ControlOperation::Add,
            raw,
            EpollEvent::new(EventSet::IN, slot as u64),
        )?;
        self.registered[slot] = Some((raw, event));
        Ok(())
    }

    /// Stop watching `fd` (before it is closed, e.g. when a VM goes).
    pub fn remove(&mut self, fd: &impl AsRawFd) -> io::Result<()> {
        let raw = fd.as_raw_fd();
        self.epoll
            .ctl(ControlOperation::Delete, raw, EpollEvent::default())?;
        for slot in &mut self.registered {
            if matches!(slot, Some((r, _)) if *r == raw) {
                *slot = None;
            }
        }
        Ok(())
    }

    /// Sleep until at least one registered fd is readable or `timeout`
    /// passes (`None`: no timeout). Returns the events of the ready fds;
    /// empty on timeout or when a signal interrupted the wait.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<Vec<E>> {
        let timeout_ms = match timeout {
            None => -1,
            // Round up: a 0.5 ms remainder must not become a busy 0.
            Some(t) => i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
        };
        let mut ready = [EpollEvent::default(); MAX_READY];
        let count = match self.epoll.wait(timeout_ms, &mut ready) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        Ok(ready[..count]
            .iter()
            .filter_map(|e| self.registered.get(e.data() as usize).copied().flatten())
            .map(|(_, event)| event)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use vmm_sys_util::eventfd::EventFd;

    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Event {
        A,
        B,
    }

    #[test]
    fn reports_the_event_of_each_readable_fd() {
        let mut events = EventLoop::new().unwrap();
        let (a, b) = (
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        );
        events.add(&a, Event::A).unwrap();
        events.add(&b, Event::B).unwrap();
        b.write(1).unwrap();
        assert_eq!(events.wait(None).unwrap(), [Event::B]);
        b.read().unwrap();
        a.write(1).unwrap();
        b.write(1).unwrap();
        let mut ready = events.wait(Some(Duration::ZERO)).unwrap();
        ready.sort_by_key(|e| *e as u8);
        assert_eq!(ready, [Event::A, Event::B]);
    }

    #[test]
    fn times_out_empty_and_forgets_removed_fds() {
        let mut events = EventLoop::new().unwrap();
        let a = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        events.add(&a, Event::A).unwrap();
        let start = Instant::now();
        assert!(
            events
                .wait(Some(Duration::from_millis(20)))
                .unwrap()
                .is_empty()
        );
        assert!(start.elapsed() >= Duration::from_millis(20));
        a.write(1).unwrap();
        events.remove(&a).unwrap();
        assert!(events.wait(Some(Duration::ZERO)).unwrap().is_empty());
        // The freed slot is reused.
        let b = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        events.add(&b, Event::B).unwrap();
        b.write(1).unwrap();
        assert_eq!(events.wait(None).unwrap(), [Event::B]);
    }
}
