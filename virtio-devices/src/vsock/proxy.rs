//! cloud-hypervisor's hybrid vsock on top of the host kernel's vsock: the
//! VMM listens on a Unix socket (`--vsock socket=PATH`); a host client
//! connects, sends `CONNECT <port>\n`, and the proxy opens an AF_VSOCK
//! stream to that port of the guest (whose packets vhost-vsock carries),
//! answers `OK <host port>\n` once the guest accepted, and from then on
//! copies bytes both ways ([`super::conn`]).
//!
//! One thread per device ([`PROXY_KIND`] for its seccomp filter) serves
//! the listener and every connection with one epoll set, level-triggered;
//! each socket is in the set only while its connection waits on it. At
//! most [`MAX_CONNECTIONS`] clients at a time: one more is told so and
//! closed. Dropping the [`Proxy`] stops the thread, closes every
//! connection and removes the socket file.
//!
//! Not implemented: guest-initiated connections to the host (upstream
//! connects them to `PATH_<port>`); a guest connecting to CID 2 reaches
//! whatever listens on the host's AF_VSOCK port instead.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::command;
use super::conn::{Connection, Interest};
use super::guest::{GuestPorts, GuestStream};

/// The seccomp thread kind of a vsock proxy.
pub const PROXY_KIND: &str = "vsock-proxy";
/// Clients served at once.
pub const MAX_CONNECTIONS: usize = 64;

const LISTENER: u64 = u64::MAX;
const KILL: u64 = u64::MAX - 1;

/// The guest's ports through the host kernel's vsock (vhost-vsock).
pub struct VhostPorts {
    /// The guest's CID.
    pub cid: u32,
}

impl GuestPorts for VhostPorts {
    type Stream = super::sys::HostVsockStream;

    fn connect(&self, port: u32) -> io::Result<Self::Stream> {
        super::sys::HostVsockStream::connect(self.cid, port)
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The socket path is taken.
    #[error(
        "socket={}: the path exists; remove it or give a path nothing uses (the VMM creates \
         the socket)", .0.display()
    )]
    PathExists(PathBuf),
    /// bind(2) or listen(2) failed.
    #[error("socket={}: cannot listen there: {err}; give a path in a writable directory", path.display())]
    Bind {
        /// The path.
        path: PathBuf,
        /// The kernel's answer.
        err: io::Error,
    },
    /// The thread or its epoll set could not be made.
    #[error("the vsock proxy thread: {0}")]
    Thread(io::Error),
}

/// The listening socket and the thread that serves it.
pub struct Proxy {
    path: PathBuf,
    kill: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listen on `path` (which must not exist) and serve clients to
    /// `ports` from a new thread named `name`.
    pub fn start(name: String, path: &Path, ports: impl GuestPorts) -> Result<Self, ProxyError> {
        if path.symlink_metadata().is_ok() {
            return Err(ProxyError::PathExists(path.to_path_buf()));
        }
        let listener = UnixListener::bind(path).map_err(|err| ProxyError::Bind {
            path: path.to_path_buf(),
            err,
        })?;
        let mut proxy = Proxy {
            path: path.to_path_buf(),
            kill: EventFd::new(EFD_NONBLOCK).map_err(ProxyError::Thread)?,
            thread: None,
        };
        listener.set_nonblocking(true).map_err(ProxyError::Thread)?;
        let kill = proxy.kill.try_clone().map_err(ProxyError::Thread)?;
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                if let Err(e) = crate::thread_started(PROXY_KIND) {
                    log::error!(target: "vsock", "{name}: not started: {e}");
                    return;
                }
                if let Err(e) = serve(&listener, &kill, &ports) {
                    log::error!(target: "vsock", "{name}: stopped: {e}");
                }
            })
            .map_err(ProxyError::Thread)?;
        proxy.thread = Some(thread);
        Ok(proxy)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Err(e) = self.kill.write(1) {
            log::error!(target: "vsock", "proxy kill eventfd: {e}");
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!(target: "vsock", "the vsock proxy thread panicked");
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::warn!(target: "vsock", "{}: {e}", self.path.display());
        }
    }
}

/// Epoll registrations of the connections, by slot: token `2 * slot` is
/// the client socket, `2 * slot + 1` the guest socket.
struct Slots<S> {
    epoll: Epoll,
    conns: Vec<Option<(Connection<S>, [Interest; 2])>>,
}

fn events(interest: Interest) -> EventSet {
    let mut set = EventSet::empty();
    if interest.read {
        set |= EventSet::IN;
    }
    if interest.write {
        set |= EventSet::OUT;
    }
    set
}

impl<S: GuestStream> Slots<S> {
    fn update_fd(&self, fd: RawFd, token: u64, old: Interest, new: Interest) -> io::Result<()> {
        let op = match (old.none(), new.none()) {
            (true, true) => return Ok(()),
            _ if old == new => return Ok(()),
            (true, false) => ControlOperation::Add,
            (false, true) => ControlOperation::Delete,
            (false, false) => ControlOperation::Modify,
        };
        self.epoll.ctl(op, fd, EpollEvent::new(events(new), token))
    }

    /// Advance the connection in `slot` and wait on what it needs next;
    /// a finished one leaves the set and its slot.
    fn advance(&mut self, slot: usize, ports: &impl GuestPorts<Stream = S>) {
        let Some(Some((conn, old))) = self.conns.get_mut(slot) else {
            return;
        };
        conn.advance(ports);
        let new = if conn.done() {
            [Interest::default(); 2]
        } else {
            [conn.client_interest(), conn.guest_interest()]
        };
        let old = std::mem::replace(old, new);
        let client = conn.client().as_raw_fd();
        let guest = conn.guest().map(AsRawFd::as_raw_fd);
        let done = conn.done();
        let token = 2 * slot as u64;
        let mut result = self.update_fd(client, token, old[0], new[0]);
        if let Some(fd) = guest {
            result = result.and(self.update_fd(fd, token + 1, old[1], new[1]));
        }
        let failed = result.is_err();
        if let Err(e) = result {
            log::warn!(target: "vsock", "connection {slot}: epoll: {e}; closed");
        }
        if done || failed {
            if let Some(Some((conn, interest))) = self.conns.get_mut(slot).map(Option::take) {
                // Sockets still registered leave the set before they close.
                let _ = self.update_fd(client, token, interest[0], Interest::default());
                if let Some(fd) = conn.guest().map(AsRawFd::as_raw_fd) {
                    let _ = self.update_fd(fd, token + 1, interest[1], Interest::default());
                }
            }
        }
    }

    fn accept(&mut self, listener: &UnixListener, ports: &impl GuestPorts<Stream = S>) {
        loop {
            let client = match listener.accept() {
                Ok((client, _)) => client,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!(target: "vsock", "accept: {e}");
                    return;
                }
            };
            let Some(slot) = self.free_slot() else {
                refuse_busy(client);
                continue;
            };
            if let Err(e) = client.set_nonblocking(true) {
                log::warn!(target: "vsock", "client socket: {e}");
                continue;
            }
            self.conns[slot] = Some((Connection::new(client), [Interest::default(); 2]));
            self.advance(slot, ports);
        }
    }

    fn free_slot(&mut self) -> Option<usize> {
        if let Some(i) = self.conns.iter().position(Option::is_none) {
            return Some(i);
        }
        (self.conns.len() < MAX_CONNECTIONS).then(|| {
            self.conns.push(None);
            self.conns.len() - 1
        })
    }
}

/// Tell a client over the limit why, best effort, and close it.
fn refuse_busy(client: UnixStream) {
    let line = command::error_line(&format!(
        "{MAX_CONNECTIONS} clients are connected already; close one and retry"
    ));
    let _ = client.set_nonblocking(true);
    let _ = io::Write::write(&mut &client, &line);
}

fn wait(epoll: &Epoll, events: &mut [EpollEvent]) -> io::Result<usize> {
    loop {
        match epoll.wait(-1, events) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The proxy's loop: until `kill` fires.
fn serve<P: GuestPorts>(listener: &UnixListener, kill: &EventFd, ports: &P) -> io::Result<()> {
    let mut slots: Slots<P::Stream> = Slots {
        epoll: Epoll::new()?,
        conns: Vec::new(),
    };
    slots.epoll.ctl(
        ControlOperation::Add,
        kill.as_raw_fd(),
        EpollEvent::new(EventSet::IN, KILL),
    )?;
    slots.epoll.ctl(
        ControlOperation::Add,
        listener.as_raw_fd(),
        EpollEvent::new(EventSet::IN, LISTENER),
    )?;
    let mut ready = [EpollEvent::default(); 32];
    loop {
        let n = wait(&slots.epoll, &mut ready)?;
        for event in ready.iter().take(n) {
            match event.data() {
                KILL => return Ok(()),
                LISTENER => slots.accept(listener, ports),
                token => slots.advance((token / 2) as usize, ports),
            }
        }
    }
}

#[cfg(test)]
mod tests;
