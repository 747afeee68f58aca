//! A pseudo-terminal for the guest's serial console (`--serial pty`, the
//! API's serial mode `Pty`): the VMM holds the master side for the life of
//! the VM definition (the same path across reboots), a client opens the
//! slave path (`virsh console`, `screen`), which `vm.info` reports in
//! `config.serial.file`, where libvirt reads it.
//!
//! The master is non-blocking and raw: the guest's bytes pass unchanged,
//! and output nobody reads is dropped once the pty's buffer is full rather
//! than stalling the vCPU that writes the UART.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the input side waits for bytes before checking whether the VM
/// is stopping.
pub const INPUT_POLL: Duration = Duration::from_millis(100);

/// The master side of a pseudo-terminal and the path of its slave.
#[derive(Debug)]
pub struct Pty {
    master: File,
    path: PathBuf,
}

impl Pty {
    /// Open a new pty pair in raw, non-blocking mode.
    pub fn open() -> io::Result<Pty> {
        // SAFETY: posix_openpt takes flags only; the descriptor it returns
        // is checked and then owned by `master`.
        let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let master = unsafe { File::from_raw_fd(fd) };
        // SAFETY: grantpt and unlockpt act on the master fd we own.
        if unsafe { libc::grantpt(fd) } != 0 || unsafe { libc::unlockpt(fd) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: ptsname_r writes at most `name.len()` bytes, NUL included,
        // into the buffer it is given.
        let rc = unsafe { libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: on success ptsname_r left a NUL-terminated string in
        // `name`, which outlives this borrow.
        let path = unsafe { CStr::from_ptr(name.as_ptr()) };
        let path = PathBuf::from(path.to_string_lossy().into_owned());
        make_raw(fd)?;
        set_nonblocking(fd)?;
        Ok(Pty { master, path })
    }

    /// The slave's path, e.g. `/dev/pts/3`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the UART writes: output nobody reads is dropped.
    pub fn writer(&self) -> io::Result<PtyWriter> {
        Ok(PtyWriter(self.master.try_clone()?))
    }

    /// The master for reading, to poll beside other fds (the
    /// virtio-console's receive worker).
    pub fn input(&self) -> io::Result<File> {
        self.master.try_clone()
    }

    /// Bytes typed on the slave, waiting at most [`INPUT_POLL`]: `Ok(0)`
    /// when none came (or no client has the slave open).
    pub fn read_input(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut pollfd = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, and its count is 1.
        let ready = unsafe { libc::poll(&mut pollfd, 1, INPUT_POLL.as_millis() as libc::c_int) };
        if ready <= 0 {
            return Ok(0);
        }
        if pollfd.revents & libc::POLLIN == 0 {
            // POLLHUP: no client has the slave open; wait rather than spin.
            std::thread::sleep(INPUT_POLL);
            return Ok(0);
        }
        match (&self.master).read(buf) {
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(0)
            }
            // EIO: the last client closed the slave.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
            Err(e) => Err(e),
        }
    }
}

/// The UART's output into the pty master.
pub struct PtyWriter(File);

impl Write for PtyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.write(buf) {
            // Nobody drains the pty: drop the output, never stall the guest.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(buf.len()),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(buf.len()),
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn make_raw(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: termios is plain data; tcgetattr fills it for the fd we own.
    let mut termios: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `termios` is a valid, writable termios.
    if unsafe { libc::tcgetattr(fd, &mut termios) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: cfmakeraw only edits the struct it is given.
    unsafe { libc::cfmakeraw(&mut termios) };
    // SAFETY: `termios` is a valid termios for the fd we own.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &termios) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_nonblocking(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on the fd we own; no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    #[test]
    fn bytes_pass_both_ways_between_master_and_slave() {
        let pty = Pty::open().unwrap();
        assert!(pty.path().starts_with("/dev/pts/"), "{:?}", pty.path());
        let mut slave = OpenOptions::new()
            .read(true)
            .write(true)
            .open(pty.path())
            .unwrap();
        let mut writer = pty.writer().unwrap();
        writer.write_all(b"guest\r\n").unwrap();
        let mut got = [0u8; 7];
        slave.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"guest\r\n", "raw: no translation");
        slave.write_all(b"typed").unwrap();
        let mut buf = [0u8; 16];
        let mut n = 0;
        for _ in 0..20 {
            n = pty.read_input(&mut buf).unwrap();
            if n > 0 {
                break;
            }
        }
        assert_eq!(&buf[..n], b"typed");
    }

    #[test]
    fn output_nobody_reads_is_dropped_not_blocking() {
        let pty = Pty::open().unwrap();
        let mut writer = pty.writer().unwrap();
        let block = [b'x'; 4096];
        // Far more than the pty holds: the rest is dropped, nothing blocks.
        for _ in 0..64 {
            writer.write_all(&block).unwrap();
        }
        let mut buf = [0u8; 8];
        assert_eq!(pty.read_input(&mut buf).unwrap(), 0);
    }
}
