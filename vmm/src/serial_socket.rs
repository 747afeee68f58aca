//! The guest's serial console on a Unix socket (`--serial socket=<path>`,
//! the API's serial mode `Socket`, libvirt's `<serial type='unix'>`): the
//! VMM listens at the path for the life of the VM definition; one client
//! at a time reads the guest's output and types its input, a second one
//! is closed at once. Output with no client, or more than a slow client
//! takes, is dropped: the guest never stalls on its UART.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::pty::INPUT_POLL;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SerialSocketError {
    /// Something that is not a stale socket is at the path.
    #[error("serial socket {0}: the path exists and is not a socket left by a VMM that is gone")]
    InUse(PathBuf),
    /// bind() or setup failed.
    #[error("serial socket {0}: cannot listen there: {1}")]
    Bind(PathBuf, io::Error),
}

/// A listening socket and its one client.
#[derive(Debug)]
pub struct SerialSocket {
    listener: UnixListener,
    path: PathBuf,
    client: Arc<Mutex<Option<UnixStream>>>,
}

impl SerialSocket {
    /// Listen at `path`; a socket file nobody answers on is replaced.
    pub fn open(path: &Path) -> Result<SerialSocket, SerialSocketError> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() || UnixStream::connect(path).is_ok() {
                return Err(SerialSocketError::InUse(path.to_path_buf()));
            }
            let _ = std::fs::remove_file(path);
        }
        let bind_error = |e| SerialSocketError::Bind(path.to_path_buf(), e);
        let listener = UnixListener::bind(path).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        Ok(SerialSocket {
            listener,
            path: path.to_path_buf(),
            client: Arc::new(Mutex::new(None)),
        })
    }

    /// Where the UART writes.
    pub fn writer(&self) -> SocketWriter {
        SocketWriter(self.client.clone())
    }

    /// Take a waiting client and read what the current one typed, waiting
    /// at most [`INPUT_POLL`]: `Ok(0)` when nothing came.
    pub fn read_input(&self, buf: &mut [u8]) -> io::Result<usize> {
        let client = devices::lock_unpoisoned(&self.client)
            .as_ref()
            .map(UnixStream::try_clone)
            .transpose()?;
        let mut fds = [
            libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: client.as_ref().map_or(-1, |c| c.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds (a negative fd is ignored), count 2.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, INPUT_POLL.as_millis() as i32) };
        if ready <= 0 {
            return Ok(0);
        }
        if fds[0].revents & libc::POLLIN != 0 {
            self.accept();
        }
        let Some(mut client) = client.filter(|_| fds[1].revents != 0) else {
            return Ok(0);
        };
        match client.read(buf) {
            Ok(0) => {
                self.disconnect();
                Ok(0)
            }
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(0)
            }
            Err(_) => {
                self.disconnect();
                Ok(0)
            }
        }
    }

    /// The first waiting client becomes the console; others are closed.
    fn accept(&self) {
        while let Ok((stream, _)) = self.listener.accept() {
            let mut client = devices::lock_unpoisoned(&self.client);
            if client.is_some() || stream.set_nonblocking(true).is_err() {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                continue;
            }
            log::info!(target: "vmm", "serial socket {}: client connected", self.path.display());
            *client = Some(stream);
        }
    }

    fn disconnect(&self) {
        devices::lock_unpoisoned(&self.client).take();
    }
}

impl Drop for SerialSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The UART's output to the socket's client.
pub struct SocketWriter(Arc<Mutex<Option<UnixStream>>>);

impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut client = devices::lock_unpoisoned(&self.0);
        if let Some(stream) = client.as_mut() {
            match stream.write(buf) {
                Ok(n) => return Ok(n),
                // A slow client: drop what it cannot take.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => *client = None,
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ch-serial-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("serial.sock")
    }

    fn input(socket: &SerialSocket) -> Vec<u8> {
        let mut buf = [0u8; 64];
        for _ in 0..20 {
            let n = socket.read_input(&mut buf).unwrap();
            if n > 0 {
                return buf[..n].to_vec();
            }
        }
        Vec::new()
    }

    #[test]
    fn one_client_reads_output_and_types_input_a_second_is_closed() {
        let path = temp("one");
        let socket = SerialSocket::open(&path).unwrap();
        let mut writer = socket.writer();
        writer.write_all(b"before anyone listens\n").unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        client.write_all(b"typed").unwrap();
        assert_eq!(input(&socket), b"typed");
        writer.write_all(b"guest\n").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = [0u8; 6];
        client.read_exact(&mut got).unwrap();
        assert_eq!(
            &got, b"guest\n",
            "output before the client came was dropped"
        );
        let mut second = UnixStream::connect(&path).unwrap();
        second
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = input(&socket);
        let mut rest = Vec::new();
        assert_eq!(second.read_to_end(&mut rest).unwrap(), 0, "closed at once");
        // The first client leaves; the next one is taken.
        drop(client);
        let _ = input(&socket);
        let mut third = UnixStream::connect(&path).unwrap();
        third.write_all(b"again").unwrap();
        assert_eq!(input(&socket), b"again");
        drop(socket);
        assert!(!path.exists(), "the socket file goes with the definition");
    }

    #[test]
    fn a_live_socket_or_a_file_at_the_path_is_not_taken_over() {
        let path = temp("busy");
        let first = SerialSocket::open(&path).unwrap();
        assert!(matches!(
            SerialSocket::open(&path),
            Err(SerialSocketError::InUse(_))
        ));
        drop(first);
        std::fs::write(&path, b"a file").unwrap();
        assert!(matches!(
            SerialSocket::open(&path),
            Err(SerialSocketError::InUse(_))
        ));
    }
}
