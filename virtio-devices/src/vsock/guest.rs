//! The guest's end of a hybrid vsock connection, as the proxy and each
//! connection see it: a stream to a port of the guest and the way to open
//! one. The proxy ([`super::proxy`]), a connection ([`super::conn`]) and
//! the host's AF_VSOCK stream ([`super::sys`]) all build on these, so they
//! sit below all three.

use std::io;
use std::os::fd::AsRawFd;

/// A connection to a port of the guest, connecting or connected.
pub trait GuestStream: io::Read + io::Write + AsRawFd + Send + 'static {
    /// Ok(None) while connecting; Ok(Some(host port)) once connected (the
    /// port of this end, for the `OK` line); the error if it failed.
    fn connected(&self) -> io::Result<Option<u32>>;
    /// No more bytes to the guest (SHUT_WR).
    fn shutdown_write(&self) -> io::Result<()>;
}

/// How the proxy reaches the guest's ports.
pub trait GuestPorts: Send + 'static {
    /// The stream it makes.
    type Stream: GuestStream;
    /// Start a non-blocking connect to `port` of the guest.
    fn connect(&self, port: u32) -> io::Result<Self::Stream>;
}
