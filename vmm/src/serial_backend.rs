//! The other end of the guest's PL011 when the VMM holds it: a pty or a
//! listening Unix socket, opened when the VM is defined and kept across
//! its reboots (clients keep the path they were given). Tty, File, Null
//! and Off need nothing held (see `vm::console`).

use std::io::{self, Write};
use std::path::Path;

use crate::config::SerialConfig;
use crate::pty::Pty;
use crate::serial_socket::SerialSocket;

/// A pty or a socket the serial console runs over.
#[derive(Debug)]
pub enum SerialBackend {
    /// Serial mode Pty.
    Pty(Pty),
    /// Serial mode Socket.
    Socket(SerialSocket),
}

impl SerialBackend {
    /// What `serial` needs held, if anything.
    pub fn open(serial: &SerialConfig) -> Result<Option<SerialBackend>, String> {
        Ok(match serial {
            SerialConfig::Pty => {
                let pty = Pty::open().map_err(|e| format!("cannot open a pty: {e}"))?;
                log::info!(target: "vmm", "serial console on {}", pty.path().display());
                Some(SerialBackend::Pty(pty))
            }
            SerialConfig::Socket(path) => Some(SerialBackend::Socket(
                SerialSocket::open(path).map_err(|e| e.to_string())?,
            )),
            _ => None,
        })
    }

    /// Where the UART's output goes.
    pub fn writer(&self) -> io::Result<Box<dyn Write + Send>> {
        Ok(match self {
            SerialBackend::Pty(pty) => Box::new(pty.writer()?),
            SerialBackend::Socket(socket) => Box::new(socket.writer()),
        })
    }

    /// Input for the UART, waiting briefly; `Ok(0)` when none came.
    pub fn read_input(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SerialBackend::Pty(pty) => pty.read_input(buf),
            SerialBackend::Socket(socket) => socket.read_input(buf),
        }
    }

    /// The pty's path, which `vm.info` reports in `config.serial.file`.
    pub fn pty_path(&self) -> Option<&Path> {
        match self {
            SerialBackend::Pty(pty) => Some(pty.path()),
            SerialBackend::Socket(_) => None,
        }
    }
}
