//! virtio-console (virtio 1.2 section 5.3) with one port: receiveq 0
//! carries host input to the guest, transmitq 1 the guest's output to the
//! host sink. The guest sees it as /dev/hvc0.
//!
//! `virtio-bindings` 0.2.7 has no virtio_console module: the device
//! configuration layout (`cols`, `rows`, `max_nr_ports`, `emerg_wr`) is
//! defined here by hand.
//!
//! Implemented: output to any `Write` sink (flushed after every chain);
//! input from a pollable fd (a tty's stdin, a pty), buffered up to
//! [`INPUT_BUFFER`] bytes while the guest has no receive buffers (input is
//! not read meanwhile). Deliberately not implemented: MULTIPORT (and its
//! control queues), VIRTIO_CONSOLE_F_SIZE (resize), EMERG_WRITE.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vm_memory::Bytes;

use crate::worker::{Progress, QueueHandler, Workers, serve_chains};
use crate::{GuestMemory, VirtioDevice, feature};

/// Size of both queues.
pub const QUEUE_SIZE: u16 = 256;
/// Undelivered input kept while the guest has no receive buffers.
pub const INPUT_BUFFER: usize = 64 << 10;
/// Largest single guest buffer copied at once.
const MAX_COPY: u32 = 64 << 10;

/// Where guest output goes.
pub type ConsoleSink = Arc<Mutex<Box<dyn Write + Send>>>;

/// A virtio-console device.
pub struct Console {
    workers: Workers,
}

impl Console {
    /// A console writing to `output`, reading `input` when given; its two
    /// queue workers started (parked).
    pub fn new(id: String, output: Box<dyn Write + Send>, input: Option<File>) -> io::Result<Self> {
        let mut workers = Workers::new()?;
        let receive = Receive {
            input,
            pending: VecDeque::new(),
        };
        workers.spawn(format!("{id}-rx"), receive)?;
        let transmit = Transmit {
            output: Arc::new(Mutex::new(output)),
        };
        workers.spawn(format!("{id}-tx"), transmit)?;
        Ok(Console { workers })
    }
}

/// The transmit queue: guest output to the sink.
struct Transmit {
    output: ConsoleSink,
}

impl QueueHandler for Transmit {
    fn process_queue(&mut self, queue: &mut Queue, mem: &GuestMemory, _: Progress<'_>) -> bool {
        serve_chains(queue, mem, "virtio-console", |chain| {
            let mut out = Vec::new();
            for d in chain.filter(|d| !d.is_write_only()) {
                let mut buf = vec![0u8; d.len().min(MAX_COPY) as usize];
                match mem.read_slice(&mut buf, d.addr()) {
                    Ok(()) => out.extend_from_slice(&buf),
                    Err(e) => {
                        log::warn!(target: "virtio-console", "output buffer at {:#x}: {e}", d.addr().0)
                    }
                }
            }
            let mut sink = self.output.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = sink.write_all(&out).and_then(|()| sink.flush()) {
                log::warn!(target: "virtio-console", "output: {e}");
            }
            drop(sink);
            0
        })
    }
}

/// The receive queue: host input to the guest.
struct Receive {
    input: Option<File>,
    pending: VecDeque<u8>,
}

impl Receive {
    /// Move pending input into the guest's receive buffers.
    fn deliver(&mut self, queue: &mut Queue, mem: &GuestMemory) -> bool {
        let mut used = false;
        while !self.pending.is_empty() {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let mut written = 0u32;
            for d in chain.filter(|d| d.is_write_only()) {
                let n = (d.len() as usize).min(self.pending.len());
                let bytes: Vec<u8> = self.pending.iter().take(n).copied().collect();
                if mem.write_slice(&bytes, d.addr()).is_err() {
                    log::warn!(target: "virtio-console", "input buffer at {:#x} is not RAM", d.addr().0);
                    break;
                }
                self.pending.drain(..n);
                written += n as u32;
                if self.pending.is_empty() {
                    break;
                }
            }
            if let Err(e) = queue.add_used(mem, head, written) {
                log::error!(target: "virtio-console", "used ring: {e}");
            }
            used = true;
        }
        used
    }
}

impl QueueHandler for Receive {
    fn process_queue(&mut self, queue: &mut Queue, mem: &GuestMemory, _: Progress<'_>) -> bool {
        self.deliver(queue, mem)
    }

    fn input_fd(&self) -> Option<RawFd> {
        self.input.as_ref().map(|f| f.as_raw_fd())
    }

    fn wants_input(&self) -> bool {
        self.pending.len() < INPUT_BUFFER
    }

    fn input_ready(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemory,
        _: Progress<'_>,
    ) -> io::Result<bool> {
        let Some(input) = self.input.as_mut() else {
            return Ok(false);
        };
        let mut buf = [0u8; 4096];
        let room = INPUT_BUFFER
            .saturating_sub(self.pending.len())
            .min(buf.len());
        let n = match input.read(&mut buf[..room]) {
            Ok(0) if room > 0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        self.pending.extend(&buf[..n]);
        Ok(self.deliver(queue, mem))
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_RING_F_EVENT_IDX)
    }

    /// `struct virtio_console_config`: cols, rows (0: unknown), one port.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; 12];
        config[4..8].copy_from_slice(&1u32.to_le_bytes());
        data.fill(0);
        let at = offset as usize;
        if let Some(src) = config.get(at..at.saturating_add(data.len())) {
            data.copy_from_slice(src);
        }
    }

    fn workers(&self) -> Option<&Workers> {
        Some(&self.workers)
    }
}

#[cfg(test)]
mod tests;
