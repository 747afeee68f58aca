//! One host client of the hybrid vsock socket, from its `CONNECT` line to
//! the close of both ends: a state machine the proxy drives whenever one of
//! its two sockets is ready. Both sockets are non-blocking; each direction
//! has a bounded buffer ([`BUFFER`]); a socket is read only while its
//! buffer has room, so a slow reader slows the writer down instead of
//! growing memory.
//!
//! End of stream is carried over as a half close: EOF from the client
//! becomes `shutdown(SHUT_WR)` on the guest socket once what the client
//! sent is delivered, and the same the other way; the connection is done
//! when both directions are. A read or write error on either socket ends
//! it at once (both sockets closed).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use super::command::{self, Command};
use super::guest::{GuestPorts, GuestStream};

/// Bytes buffered per direction at most.
pub const BUFFER: usize = 64 << 10;
/// Bytes moved per read or write call.
const CHUNK: usize = 16 << 10;

/// Where a connection is.
#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Reading the `CONNECT <port>` line.
    Command,
    /// The guest socket is connecting to this port.
    Connecting(u32),
    /// Bytes flow both ways.
    Established,
    /// An error line is being written to the client, then the close.
    Refusing,
    /// Nothing left to do: drop it.
    Done,
}

/// What a connection wants to wait for on each of its sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    /// Wait until readable.
    pub read: bool,
    /// Wait until writable.
    pub write: bool,
}

impl Interest {
    /// Nothing to wait for (the socket is left out of the epoll set).
    pub fn none(self) -> bool {
        !self.read && !self.write
    }
}

/// One direction's bytes in flight.
#[derive(Default)]
struct Pipe {
    bytes: VecDeque<u8>,
    /// The source reached end of stream.
    eof: bool,
    /// The end of stream was passed on (SHUT_WR on the sink).
    closed: bool,
}

impl Pipe {
    fn room(&self) -> usize {
        BUFFER.saturating_sub(self.bytes.len())
    }

    /// Read from `src` while there is room; Ok(true) on progress.
    fn fill(&mut self, src: &mut impl Read) -> io::Result<bool> {
        let mut progress = false;
        let mut chunk = [0u8; CHUNK];
        while !self.eof && self.room() > 0 {
            let want = self.room().min(CHUNK);
            match src.read(&mut chunk[..want]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.bytes.extend(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            progress = true;
        }
        Ok(progress)
    }

    /// Write to `dst` until empty or it would block; Ok(true) on progress.
    fn drain(&mut self, dst: &mut impl Write) -> io::Result<bool> {
        let mut progress = false;
        while !self.bytes.is_empty() {
            let (front, _) = self.bytes.as_slices();
            let n = front.len().min(CHUNK);
            match dst.write(&front[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.bytes.drain(..n);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(progress)
    }

    /// Whether the end of stream should be passed on now.
    fn must_close(&self) -> bool {
        self.eof && self.bytes.is_empty() && !self.closed
    }

    fn done(&self) -> bool {
        self.closed
    }
}

/// A client and, once its line named a port, its guest socket.
pub struct Connection<S> {
    client: UnixStream,
    guest: Option<S>,
    phase: Phase,
    line: Vec<u8>,
    /// Client -> guest.
    to_guest: Pipe,
    /// Guest -> client (the `OK` line first).
    to_client: Pipe,
}

impl<S: GuestStream> Connection<S> {
    /// A client just accepted (non-blocking).
    pub fn new(client: UnixStream) -> Self {
        Connection {
            client,
            guest: None,
            phase: Phase::Command,
            line: Vec::with_capacity(command::MAX_LINE),
            to_guest: Pipe::default(),
            to_client: Pipe::default(),
        }
    }

    /// The client's socket.
    pub fn client(&self) -> &UnixStream {
        &self.client
    }

    /// The guest socket, once there is one.
    pub fn guest(&self) -> Option<&S> {
        self.guest.as_ref()
    }

    /// Whether the connection is over (drop it: both sockets close).
    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Make every step the sockets allow now.
    pub fn advance(&mut self, ports: &impl GuestPorts<Stream = S>) {
        if let Err(e) = self.step(ports) {
            log::debug!(target: "vsock", "connection ends: {e}");
            self.phase = Phase::Done;
        }
    }

    fn step(&mut self, ports: &impl GuestPorts<Stream = S>) -> io::Result<()> {
        loop {
            let progress = match self.phase {
                Phase::Command => self.read_command(ports)?,
                Phase::Connecting(port) => self.finish_connect(port)?,
                Phase::Established => self.pump()?,
                Phase::Refusing => {
                    self.to_client.drain(&mut self.client)?;
                    if self.to_client.bytes.is_empty() {
                        self.phase = Phase::Done;
                    }
                    false
                }
                Phase::Done => false,
            };
            if !progress {
                return Ok(());
            }
        }
    }

    fn refuse(&mut self, why: &str) {
        log::info!(target: "vsock", "hybrid vsock client refused: {why}");
        self.to_client.bytes = command::error_line(why).into();
        self.phase = Phase::Refusing;
    }

    /// Read the line a byte chunk at a time (never past [`command::MAX_LINE`]);
    /// what follows the newline is the client's first data.
    fn read_command(&mut self, ports: &impl GuestPorts<Stream = S>) -> io::Result<bool> {
        let mut chunk = [0u8; command::MAX_LINE];
        let want = command::MAX_LINE - self.line.len();
        let n = match self.client.read(&mut chunk[..want]) {
            Ok(0) => {
                self.phase = Phase::Done;
                return Ok(false);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(e),
        };
        self.line.extend_from_slice(&chunk[..n]);
        match command::parse(&self.line) {
            Command::Incomplete => {}
            Command::Bad(why) => self.refuse(&why),
            Command::Connect { port, len } => {
                self.to_guest.bytes.extend(&self.line[len..]);
                match ports.connect(port) {
                    Ok(stream) => {
                        log::debug!(target: "vsock", "client asks for guest port {port}");
                        self.guest = Some(stream);
                        self.phase = Phase::Connecting(port);
                    }
                    Err(e) => self.refuse(&format!("guest port {port}: {e}")),
                }
                self.line = Vec::new();
            }
        }
        Ok(true)
    }

    fn finish_connect(&mut self, port: u32) -> io::Result<bool> {
        let Some(guest) = &self.guest else {
            self.phase = Phase::Done;
            return Ok(false);
        };
        match guest.connected() {
            Ok(None) => Ok(false),
            Ok(Some(host_port)) => {
                let ok = command::ok_line(host_port);
                self.to_client.bytes.extend(ok);
                self.phase = Phase::Established;
                Ok(true)
            }
            Err(e) => {
                self.guest = None;
                self.refuse(&format!(
                    "guest port {port}: the guest did not accept the connection: {e}"
                ));
                Ok(true)
            }
        }
    }

    fn pump(&mut self) -> io::Result<bool> {
        let Some(guest) = self.guest.as_mut() else {
            self.phase = Phase::Done;
            return Ok(false);
        };
        let mut progress = self.to_guest.fill(&mut self.client)?;
        progress |= self.to_guest.drain(guest)?;
        progress |= self.to_client.fill(guest)?;
        progress |= self.to_client.drain(&mut self.client)?;
        if self.to_guest.must_close() {
            guest.shutdown_write()?;
            self.to_guest.closed = true;
            progress = true;
        }
        if self.to_client.must_close() {
            self.client.shutdown(std::net::Shutdown::Write)?;
            self.to_client.closed = true;
            progress = true;
        }
        if self.to_guest.done() && self.to_client.done() {
            self.phase = Phase::Done;
            return Ok(false);
        }
        Ok(progress)
    }

    /// What to wait for on the client socket.
    pub fn client_interest(&self) -> Interest {
        match self.phase {
            Phase::Command => Interest {
                read: true,
                write: false,
            },
            Phase::Connecting(_) | Phase::Done => Interest::default(),
            Phase::Refusing => Interest {
                read: false,
                write: true,
            },
            Phase::Established => Interest {
                read: !self.to_guest.eof && self.to_guest.room() > 0,
                write: !self.to_client.bytes.is_empty(),
            },
        }
    }

    /// What to wait for on the guest socket.
    pub fn guest_interest(&self) -> Interest {
        match self.phase {
            Phase::Connecting(_) => Interest {
                read: false,
                write: true,
            },
            Phase::Established => Interest {
                read: !self.to_client.eof && self.to_client.room() > 0,
                write: !self.to_guest.bytes.is_empty(),
            },
            _ => Interest::default(),
        }
    }
}
