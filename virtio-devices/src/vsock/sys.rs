//! The host end of a guest connection: an AF_VSOCK stream socket, made
//! non-blocking and connected to (guest CID, port) through the host
//! kernel's vhost-vsock transport. std has no AF_VSOCK, so the socket
//! calls are made here, each in a small `unsafe` block with its argument;
//! everything above this module is safe.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::guest::GuestStream;

/// A non-blocking AF_VSOCK stream to a port of the guest.
#[derive(Debug)]
pub struct HostVsockStream {
    // A File reads and writes a socket with read(2) / write(2).
    socket: File,
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn sockaddr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain old data (integers and a byte array);
    // all-zero is a valid value of every field.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    addr
}

impl HostVsockStream {
    /// Start connecting to `port` of the guest with CID `cid`; the
    /// connection completes (or fails) later, see
    /// [`GuestStream::connected`].
    pub fn connect(cid: u32, port: u32) -> io::Result<Self> {
        // SAFETY: socket(2) takes integers and returns a new descriptor,
        // owned from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_VSOCK,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        check(fd)?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let socket = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let addr = sockaddr(cid, port);
        // SAFETY: connect(2) reads `size_of::<sockaddr_vm>()` bytes from
        // `addr`, which lives across the call.
        let ret = unsafe {
            libc::connect(
                socket.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        };
        match check(ret) {
            Ok(()) => Ok(HostVsockStream { socket }),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(HostVsockStream { socket }),
            Err(e) => Err(e),
        }
    }

    /// The socket's pending error (SO_ERROR), cleared by reading it.
    fn pending_error(&self) -> io::Result<Option<io::Error>> {
        let mut err: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: SO_ERROR writes one int into `err` and its size into
        // `len`, both valid for the call.
        let ret = unsafe {
            libc::getsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut err).cast(),
                &mut len,
            )
        };
        check(ret)?;
        Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
    }

    /// getsockname(2) or getpeername(2): the port of that end.
    fn port_of(&self, peer: bool) -> io::Result<u32> {
        let mut addr = sockaddr(0, 0);
        let mut len = size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        let fd = self.socket.as_raw_fd();
        let ptr = (&raw mut addr).cast();
        // SAFETY: both calls write at most `len` bytes into `addr`, a
        // sockaddr_vm of that size, and the length into `len`.
        let ret = unsafe {
            if peer {
                libc::getpeername(fd, ptr, &mut len)
            } else {
                libc::getsockname(fd, ptr, &mut len)
            }
        };
        check(ret)?;
        Ok(addr.svm_port)
    }
}

impl GuestStream for HostVsockStream {
    fn connected(&self) -> io::Result<Option<u32>> {
        if let Some(err) = self.pending_error()? {
            return Err(err);
        }
        match self.port_of(true) {
            Ok(_) => self.port_of(false).map(Some),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        // SAFETY: shutdown(2) takes integers, on the socket this owns.
        check(unsafe { libc::shutdown(self.socket.as_raw_fd(), libc::SHUT_WR) })
    }
}

impl Read for HostVsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.read(buf)
    }
}

impl Write for HostVsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for HostVsockStream {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing on this host listens on CID 3 (or there is no vsock at
    /// all): the connect fails, now or once done, and never hangs.
    #[test]
    fn a_connect_nobody_answers_fails_without_hanging() {
        let Ok(stream) = HostVsockStream::connect(3, 1) else {
            return;
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match stream.connected() {
                Err(_) => break,
                Ok(Some(port)) => panic!("connected from port {port}"),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Ok(None) => panic!("still connecting after 5 s"),
            }
        }
    }
}
