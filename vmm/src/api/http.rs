//! The API thread: HTTP/1.1 on a Unix socket, one epoll loop over the
//! listener, the open connections, the VMM's reply eventfd and a kill
//! eventfd.
//!
//! HTTP parsing is `httparse`'s. Why that crate: it is the request/response
//! parser under hyper, maintained, dependency-free and sans-I/O, so it fits
//! a synchronous VMM without pulling in an async runtime (hyper, axum) or a
//! server that owns its own thread pool and reads bodies for us
//! (tiny_http). cloud-hypervisor's own micro_http is not on crates.io, and
//! its published fork (dbs-uhttp) queues a second client instead of
//! refusing it and answers an oversized body with 400. Owning the I/O here
//! is what lets every bound below be enforced:
//!
//! - a request line plus headers of at most [`MAX_HEADER_BYTES`] (431), a
//!   body of at most [`MAX_BODY_BYTES`] given by Content-Length (413,
//!   answered from the headers: the body is never read) or sent with
//!   `Transfer-Encoding: chunked` (older libvirt does): 413 once the chunks
//!   pass the bound, 400 for a broken chunk size line or chunk; the chunk
//!   framing may take at most [`MAX_BODY_BYTES`] more; another transfer
//!   coding is 411; nothing is read beyond those bounds;
//! - [`REQUEST_TIMEOUT`] to send a whole request (408), the same to take
//!   the answer;
//! - one request with the VMM at a time: another one meanwhile gets 429;
//! - at most [`MAX_CONNECTIONS`] open connections (429 beyond).
//!
//! Connections persist, as HTTP/1.1's and upstream's do: after its answer a
//! connection takes the client's next request (libvirt sends one
//! `vm.add-net` per NIC on one connection, reading each answer; libcurl
//! and Go's net/http reuse a connection), unless the request said
//! `Connection: close` (or was HTTP/1.0), was malformed or came late: then
//! the answer says `Connection: close` and the connection ends. One idle
//! for [`REQUEST_TIMEOUT`] after an answer is closed without one. A
//! request sent before the previous answer is not read until that answer
//! is written.
//!
//! Descriptors sent with a request (SCM_RIGHTS: libvirt passes the taps of
//! `vm.add-net` so) are taken, at most [`MAX_REQUEST_FDS`], and handed to
//! the VMM with `vm.add-net`; any other request's are closed. More than
//! that many in one message is a 400 (the kernel's excess is closed).

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

pub use super::message::{MAX_BODY_BYTES, MAX_HEADER_BYTES};
use super::message::{Parsed, parse, response, response_with};
use super::{ApiEnd, ApiError, ApiRequest, ApiResponse, routes};
use crate::config::ApiSocket;

/// Connections open at once, at most.
pub const MAX_CONNECTIONS: usize = 32;
/// Descriptors one request may carry (a NIC's taps: one per queue pair).
pub const MAX_REQUEST_FDS: usize = virtio_devices::net::MAX_QUEUE_PAIRS;
/// Time a client has to send its request, and to take its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

const LISTENER: u64 = 0;
const KILL: u64 = 1;
const REPLY: u64 = 2;
/// Connection tokens start here.
const FIRST_CONNECTION: u64 = 16;

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// Another VMM answers on the path.
    #[error("--api-socket path={0}: another process is listening there; pick another path")]
    InUse(PathBuf),
    /// bind() failed.
    #[error("--api-socket path={0}: cannot listen there: {1}")]
    Bind(PathBuf, io::Error),
    /// fd= is not a socket this process owns.
    #[error("--api-socket fd={0}: not an open socket of this process ({1})")]
    BadFd(RawFd, String),
    /// epoll, eventfd or thread creation.
    #[error("cannot start the API thread: {0}")]
    Setup(io::Error),
}

/// The running API thread.
pub struct ApiServer {
    thread: JoinHandle<()>,
    kill: EventFd,
    path: Option<PathBuf>,
}

impl ApiServer {
    /// Listen on `socket` and serve requests, handing them to the VMM
    /// through `api`.
    pub fn start(socket: &ApiSocket, api: ApiEnd) -> Result<Self, ApiServerError> {
        let (listener, path) = match socket {
            ApiSocket::Path(path) => (bind(path)?, Some(path.clone())),
            ApiSocket::Fd(fd) => (adopt(*fd)?, None),
        };
        listener
            .set_nonblocking(true)
            .map_err(ApiServerError::Setup)?;
        let kill = EventFd::new(libc::EFD_NONBLOCK).map_err(ApiServerError::Setup)?;
        let mut server = Server::new(
            listener,
            kill.try_clone().map_err(ApiServerError::Setup)?,
            api,
        )
        .map_err(ApiServerError::Setup)?;
        let thread = std::thread::Builder::new()
            .name("http-server".into())
            .spawn(
                move || match crate::seccomp::apply(crate::seccomp::ThreadKind::Api) {
                    Ok(()) => server.run(),
                    Err(err) => log::error!(target: "api", "API stops: {err}"),
                },
            )
            .map_err(ApiServerError::Setup)?;
        if let Some(path) = &path {
            log::info!(target: "api", "API listening on {}", path.display());
        }
        Ok(ApiServer { thread, kill, path })
    }

    /// Flush the answers still being written, stop the thread and remove
    /// the socket it bound.
    pub fn stop(self) {
        if self.kill.write(1).is_ok() {
            let _ = self.thread.join();
        }
        if let Some(path) = self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Bind at `path`; a socket file left by a VMM that is gone is replaced,
/// one that still answers is not.
fn bind(path: &Path) -> Result<UnixListener, ApiServerError> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        if UnixStream::connect(path).is_ok() {
            return Err(ApiServerError::InUse(path.to_path_buf()));
        }
        let _ = std::fs::remove_file(path);
    }
    UnixListener::bind(path).map_err(|e| ApiServerError::Bind(path.to_path_buf(), e))
}

/// Take over the listening socket `fd` inherited from the parent.
fn adopt(fd: RawFd) -> Result<UnixListener, ApiServerError> {
    let meta = std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .map_err(|e| ApiServerError::BadFd(fd, e.to_string()))?;
    if fd <= 2 || !meta.file_type().is_socket() {
        return Err(ApiServerError::BadFd(
            fd,
            "give the number of an inherited listening Unix socket".into(),
        ));
    }
    // SAFETY: `fd` is open in this process and is a socket (checked just
    // above); `fd=` hands its ownership to the VMM, and nothing else in
    // the process uses it, so the listener may own and close it.
    Ok(unsafe { UnixListener::from_raw_fd(fd) })
}

enum Phase {
    /// Reading the request.
    Reading,
    /// The request is with the VMM; the fd is out of the epoll set.
    AwaitingVmm,
    /// Writing the answer; closed when done.
    Writing { out: Vec<u8>, sent: usize },
}

struct Connection {
    stream: UnixStream,
    buf: Vec<u8>,
    /// The request target, once parsed: the status of a refusal depends
    /// on the endpoint (see `routes::status_on`).
    target: String,
    phase: Phase,
    deadline: Instant,
    /// 100 Continue already sent.
    continued: bool,
    /// Descriptors that came with the request (SCM_RIGHTS).
    fds: Vec<OwnedFd>,
    /// The request parsed whole and did not ask to close: after its answer
    /// the connection carries the next one.
    keep: bool,
    /// Requests answered on this connection.
    answered: u32,
}

/// Read what `stream` has into `buf`, taking the descriptors that come
/// with it into `fds` (at most [`MAX_REQUEST_FDS`] in all: ENOBUFS beyond).
fn receive(stream: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut raw = [-1; MAX_REQUEST_FDS];
    let room = MAX_REQUEST_FDS.saturating_sub(fds.len()).max(1);
    let mut iov = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }];
    // SAFETY: the one iovec points at `buf`, writable for its whole
    // length and not otherwise borrowed during the call; `raw` has room
    // for `room` descriptors.
    let (read, count) = unsafe { stream.recv_with_fds(&mut iov, &mut raw[..room]) }
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    for fd in &raw[..count] {
        // SAFETY: recvmsg installed `fd` in this process for us alone.
        let fd = unsafe { OwnedFd::from_raw_fd(*fd) };
        if fds.len() == MAX_REQUEST_FDS {
            return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
        }
        fds.push(fd);
    }
    Ok(read)
}

struct Server {
    listener: UnixListener,
    kill: EventFd,
    api: ApiEnd,
    epoll: Epoll,
    connections: HashMap<u64, Connection>,
    next_token: u64,
    /// The connection whose request is with the VMM.
    in_flight: Option<u64>,
}

impl Server {
    fn new(listener: UnixListener, kill: EventFd, api: ApiEnd) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        for (fd, token) in [
            (listener.as_raw_fd(), LISTENER),
            (kill.as_raw_fd(), KILL),
            (api.reply_evt.as_raw_fd(), REPLY),
        ] {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        Ok(Server {
            listener,
            kill,
            api,
            epoll,
            connections: HashMap::new(),
            next_token: FIRST_CONNECTION,
            in_flight: None,
        })
    }

    fn run(&mut self) {
        loop {
            let timeout = self
                .connections
                .values()
                .filter(|c| !matches!(c.phase, Phase::AwaitingVmm))
                .map(|c| c.deadline.saturating_duration_since(Instant::now()))
                .min()
                .map_or(-1, |d| {
                    i32::try_from(d.as_millis().saturating_add(1)).unwrap_or(i32::MAX)
                });
            let mut ready = [EpollEvent::default(); 64];
            let count = match self.epoll.wait(timeout, &mut ready) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    log::error!(target: "api", "epoll_wait failed, API stops: {e}");
                    return;
                }
            };
            let mut stop = false;
            for event in &ready[..count] {
                // Nothing a client sends may take the VMM down: a bug that
                // panics on one connection drops that connection only.
                let token = event.data();
                let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    match token {
                        LISTENER => self.accept(),
                        KILL => return true,
                        REPLY => self.take_replies(),
                        token => self.serve(token, event.event_set()),
                    }
                    false
                }));
                match handled {
                    Ok(true) => stop = true,
                    Ok(false) => {}
                    Err(_) => {
                        log::error!(target: "api", "API handler panicked; dropping connection {token}");
                        self.close(token);
                    }
                }
            }
            if stop {
                self.take_replies();
                self.flush_all();
                return;
            }
            self.expire();
        }
    }

    fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!(target: "api", "accept failed: {e}");
                    return;
                }
            };
            if self.connections.len() >= MAX_CONNECTIONS {
                // Best effort, never blocking: the refusal fits the socket buffer.
                let mut stream = stream;
                let _ = stream.set_nonblocking(true);
                let refusal = response(&Err(ApiError::TooManyConnections(MAX_CONNECTIONS)), None);
                let _ = stream.write(&refusal);
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let token = self.next_token;
            self.next_token += 1;
            if self
                .epoll
                .ctl(
                    ControlOperation::Add,
                    stream.as_raw_fd(),
                    EpollEvent::new(EventSet::IN, token),
                )
                .is_err()
            {
                continue;
            }
            self.connections.insert(
                token,
                Connection {
                    stream,
                    buf: Vec::new(),
                    target: String::new(),
                    phase: Phase::Reading,
                    deadline: Instant::now() + REQUEST_TIMEOUT,
                    continued: false,
                    fds: Vec::new(),
                    keep: false,
                    answered: 0,
                },
            );
        }
    }

    fn serve(&mut self, token: u64, events: EventSet) {
        let Some(conn) = self.connections.get_mut(&token) else {
            return;
        };
        match conn.phase {
            Phase::Reading => self.read(token),
            Phase::Writing { .. } => self.write(token),
            Phase::AwaitingVmm => {}
        }
        if events.contains(EventSet::ERROR) {
            self.close(token);
        }
    }

    fn read(&mut self, token: u64) {
        let Some(conn) = self.connections.get_mut(&token) else {
            return;
        };
        let mut chunk = [0u8; 4096];
        let mut eof = false;
        loop {
            // Never hold more than one request's worth of bytes (a chunked
            // body's framing included).
            let room = (MAX_HEADER_BYTES + 2 * MAX_BODY_BYTES + 1).saturating_sub(conn.buf.len());
            if room == 0 {
                break;
            }
            let want = room.min(chunk.len());
            match receive(&conn.stream, &mut chunk[..want], &mut conn.fds) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    conn.fds.clear();
                    self.answer(token, Err(ApiError::TooManyFds(MAX_REQUEST_FDS)), None);
                    return;
                }
                Err(_) => {
                    self.close(token);
                    return;
                }
            }
        }
        match parse(&conn.buf) {
            Ok(Parsed::Incomplete { expect_continue }) => {
                if eof {
                    if conn.buf.is_empty() {
                        self.close(token);
                    } else {
                        let len = conn.buf.len();
                        self.answer(token, Err(ApiError::TruncatedRequest(len)), None);
                    }
                } else if expect_continue && !conn.continued {
                    conn.continued = true;
                    let _ = conn.stream.write(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
            }
            Ok(Parsed::Request {
                method,
                target,
                body,
                close,
            }) => {
                conn.keep = !close;
                self.dispatch(token, &method, &target, &body);
            }
            Err(err) => self.answer(token, Err(err), None),
        }
    }

    /// Route a complete request: refuse it here or hand it to the VMM.
    fn dispatch(&mut self, token: u64, method: &str, target: &str, body: &[u8]) {
        log::debug!(target: "api", "{method} {target} ({} body bytes)", body.len());
        if let Some(conn) = self.connections.get_mut(&token) {
            conn.target = target.to_string();
        }
        let fds = self
            .connections
            .get_mut(&token)
            .map(|c| std::mem::take(&mut c.fds))
            .unwrap_or_default();
        let request = match routes::route(method, target, body) {
            // The taps of a NIC; any other request's descriptors close here.
            Ok(ApiRequest::VmAddNet(net, _)) => ApiRequest::VmAddNet(net, fds),
            Ok(request) => request,
            Err(err) => {
                let allow = matches!(err, ApiError::WrongMethod { .. })
                    .then(|| routes::allowed_method(target))
                    .flatten();
                self.answer(token, Err(err), allow);
                return;
            }
        };
        if self.in_flight.is_some() {
            self.answer(token, Err(ApiError::Busy), None);
            return;
        }
        if self.api.requests.send(request).is_err() || self.api.request_evt.write(1).is_err() {
            self.answer(token, Err(ApiError::VmmGone), None);
            return;
        }
        self.in_flight = Some(token);
        if let Some(conn) = self.connections.get_mut(&token) {
            conn.phase = Phase::AwaitingVmm;
            // Out of the epoll set until the answer: a client that hangs
            // up meanwhile must not spin the loop with EPOLLHUP.
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                conn.stream.as_raw_fd(),
                EpollEvent::default(),
            );
        }
    }

    fn take_replies(&mut self) {
        let _ = self.api.reply_evt.read();
        while let Ok(reply) = self.api.replies.try_recv() {
            let Some(token) = self.in_flight.take() else {
                continue;
            };
            if let Some(conn) = self.connections.get(&token) {
                // Back into the set, for the answer to be written.
                let _ = self.epoll.ctl(
                    ControlOperation::Add,
                    conn.stream.as_raw_fd(),
                    EpollEvent::new(EventSet::OUT, token),
                );
            }
            self.answer(token, reply, None);
        }
    }

    /// Queue `reply` on connection `token` and start writing it.
    fn answer(&mut self, token: u64, reply: ApiResponse, allow: Option<&str>) {
        let Some(conn) = self.connections.get_mut(&token) else {
            return;
        };
        let status = match &reply {
            Ok(_) => None,
            Err(err) => Some(routes::status_on(&conn.target, err)),
        };
        if let (Err(err), Some(status)) = (&reply, status) {
            log::info!(target: "api", "refused ({status}): {err}");
        }
        let was_awaiting = matches!(conn.phase, Phase::AwaitingVmm);
        conn.phase = Phase::Writing {
            out: response_with(&reply, status, allow, conn.keep),
            sent: 0,
        };
        conn.deadline = Instant::now() + REQUEST_TIMEOUT;
        if !was_awaiting {
            let _ = self.epoll.ctl(
                ControlOperation::Modify,
                conn.stream.as_raw_fd(),
                EpollEvent::new(EventSet::OUT, token),
            );
        }
        self.write(token);
    }

    fn write(&mut self, token: u64) {
        let Some(conn) = self.connections.get_mut(&token) else {
            return;
        };
        let Phase::Writing { out, sent } = &mut conn.phase else {
            return;
        };
        while *sent < out.len() {
            match conn.stream.write(&out[*sent..]) {
                Ok(0) => break,
                Ok(n) => *sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.close(token);
                    return;
                }
            }
        }
        if !conn.keep {
            self.close(token);
            return;
        }
        // Ready for the client's next request on this connection.
        conn.buf.clear();
        conn.target.clear();
        conn.continued = false;
        conn.keep = false;
        conn.answered += 1;
        conn.phase = Phase::Reading;
        conn.deadline = Instant::now() + REQUEST_TIMEOUT;
        let _ = self.epoll.ctl(
            ControlOperation::Modify,
            conn.stream.as_raw_fd(),
            EpollEvent::new(EventSet::IN, token),
        );
    }

    fn close(&mut self, token: u64) {
        if let Some(conn) = self.connections.remove(&token) {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                conn.stream.as_raw_fd(),
                EpollEvent::default(),
            );
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Answer requests that did not arrive in time; drop answers nobody takes.
    fn expire(&mut self) {
        let now = Instant::now();
        // A connection idle after an answer is closed without a 408.
        let late: Vec<(u64, bool)> = self
            .connections
            .iter()
            .filter(|(_, c)| !matches!(c.phase, Phase::AwaitingVmm) && c.deadline <= now)
            .map(|(t, c)| {
                let idle = c.answered > 0 && c.buf.is_empty();
                (*t, matches!(c.phase, Phase::Reading) && !idle)
            })
            .collect();
        for (token, reading) in late {
            if reading {
                self.answer(
                    token,
                    Err(ApiError::RequestTimeout(REQUEST_TIMEOUT.as_secs())),
                    None,
                );
            } else {
                self.close(token);
            }
        }
    }

    /// On the way out: finish the answers being written, briefly.
    fn flush_all(&mut self) {
        let tokens: Vec<u64> = self.connections.keys().copied().collect();
        for token in tokens {
            if let Some(conn) = self.connections.get_mut(&token) {
                if let Phase::Writing { out, sent } = &conn.phase {
                    let _ = conn.stream.set_nonblocking(false);
                    let _ = conn
                        .stream
                        .set_write_timeout(Some(Duration::from_millis(500)));
                    let _ = conn.stream.write_all(&out[*sent..]);
                }
            }
            self.close(token);
        }
        let _ = self.kill.read();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn exchange(stream: &mut UnixStream, request: &[u8]) -> String {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    #[test]
    fn a_second_client_while_a_request_is_in_flight_is_refused() {
        let dir = std::env::temp_dir().join(format!("ch-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        let (api, vmm) = super::super::channel().unwrap();
        let server = ApiServer::start(&ApiSocket::Path(path.clone()), api).unwrap();
        let mut first = UnixStream::connect(&path).unwrap();
        first
            .write_all(b"GET /api/v1/vm.info HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        // The VMM thread has the first request and has not answered yet.
        let request = vmm.requests.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(matches!(request, super::super::ApiRequest::VmInfo));
        let mut second = UnixStream::connect(&path).unwrap();
        let answer = exchange(
            &mut second,
            b"GET /api/v1/vmm.ping HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
        assert!(
            answer.contains("another API request is in flight"),
            "{answer}"
        );
        vmm.reply(Ok(Some("{}".into())));
        let answer = exchange(&mut first, b"");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        server.stop();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_connection_carries_requests_in_turn_until_it_asks_to_close() {
        let dir = std::env::temp_dir().join(format!("ch-http-keep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        let (api, vmm) = super::super::channel().unwrap();
        let server = ApiServer::start(&ApiSocket::Path(path.clone()), api).unwrap();
        let vmm_thread = std::thread::spawn(move || {
            for _ in 0..3 {
                let request = vmm.requests.recv_timeout(Duration::from_secs(10)).unwrap();
                assert!(matches!(request, super::super::ApiRequest::VmmPing));
                vmm.reply(Ok(Some("{}".into())));
            }
        });
        let mut stream = UnixStream::connect(&path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = |request: &[u8], len: usize| -> String {
            stream.write_all(request).unwrap();
            let mut buf = vec![0u8; len];
            stream.read_exact(&mut buf).unwrap();
            String::from_utf8(buf).unwrap()
        };
        // Two requests on one connection (libvirt's vm.add-net per NIC):
        // both answered, the connection left open.
        let ping = b"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let kept = "HTTP/1.1 200 OK\r\nServer: Cloud Hypervisor API\r\nContent-Type: \
                    application/json\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(answer(ping, kept.len()), kept);
        assert_eq!(answer(ping, kept.len()), kept);
        // The third asks to close: answered, then end-of-file.
        let closing = "HTTP/1.1 200 OK\r\nServer: Cloud Hypervisor API\r\nConnection: \
                       close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(
            answer(
                b"GET /api/v1/vmm.ping HTTP/1.1\r\nConnection: close\r\n\r\n",
                closing.len()
            ),
            closing
        );
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        vmm_thread.join().unwrap();
        // A connection idle after its answer is closed without a 408.
        server.stop();
        let (api, vmm) = super::super::channel().unwrap();
        let server = ApiServer::start(&ApiSocket::Path(path.clone()), api).unwrap();
        let mut idle = UnixStream::connect(&path).unwrap();
        idle.set_read_timeout(Some(REQUEST_TIMEOUT * 3)).unwrap();
        idle.write_all(ping).unwrap();
        let request = vmm.requests.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(matches!(request, super::super::ApiRequest::VmmPing));
        vmm.reply(Ok(None));
        let started = Instant::now();
        let mut all = String::new();
        idle.read_to_string(&mut all).unwrap();
        assert_eq!(
            all,
            "HTTP/1.1 204 No Content\r\nServer: Cloud Hypervisor API\r\n\r\n"
        );
        assert!(started.elapsed() >= REQUEST_TIMEOUT - Duration::from_millis(500));
        server.stop();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn fd_takes_over_an_inherited_listener_and_refuses_anything_else() {
        use std::os::fd::IntoRawFd;
        let dir = std::env::temp_dir().join(format!("ch-http-fd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        let fd = UnixListener::bind(&path).unwrap().into_raw_fd();
        let listener = adopt(fd).unwrap();
        assert_eq!(listener.as_raw_fd(), fd);
        assert!(UnixStream::connect(&path).is_ok());
        drop(listener);
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert!(matches!(
            adopt(file.as_raw_fd()),
            Err(ApiServerError::BadFd(..))
        ));
        assert!(matches!(adopt(1), Err(ApiServerError::BadFd(1, _))));
        assert!(matches!(adopt(99_999), Err(ApiServerError::BadFd(..))));
        let _ = std::fs::remove_dir_all(dir);
    }
}
