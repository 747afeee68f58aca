//! The CMD-QV's host calls as events: the model calls its backend through
//! [`CmdqvBackend`]; the VMM hands it this wrapper, which forwards every
//! call and names the ones the host carried out (`hw-queue-alloc`,
//! `hw-queue-free`) and the queue errors the guest is about to be shown
//! (`guest-error`), so the device model never knows about the stream.

use std::collections::BTreeMap;

use devices::backend::BackendError;
use devices::cmdqv::regs::{VCMDQ_CONS, VCMDQ_CONS_ERR, VCMDQ_STRIDE};
use devices::cmdqv::{CmdqvBackend, CmdqvHostInfo, Page0Mode};
use devices::guest_error::cerror_name;

use super::{Event, GuestErrorDevice};

/// A CMD-QV backend whose successful HW queue calls and error events are
/// emitted as events.
pub struct EventingCmdqv {
    inner: Box<dyn CmdqvBackend>,
    cmdqv: u32,
    /// (gpa, length) of each allocated queue, for its `hw-queue-free`.
    queues: BTreeMap<u32, (u64, u64)>,
    emit: fn(Event),
}

impl EventingCmdqv {
    /// Wrap `inner`, the backend of CMD-QV `cmdqv`.
    pub fn new(inner: Box<dyn CmdqvBackend>, cmdqv: u32) -> Self {
        Self::with_sink(inner, cmdqv, super::emit)
    }

    fn with_sink(inner: Box<dyn CmdqvBackend>, cmdqv: u32, emit: fn(Event)) -> Self {
        EventingCmdqv {
            inner,
            cmdqv,
            queues: BTreeMap::new(),
            emit,
        }
    }
}

impl CmdqvBackend for EventingCmdqv {
    fn info(&self) -> CmdqvHostInfo {
        self.inner.info()
    }

    fn page0_mode(&self) -> Page0Mode {
        self.inner.page0_mode()
    }

    fn hw_queue_alloc(&mut self, index: u32, gpa: u64, len: u64) -> Result<(), BackendError> {
        self.inner.hw_queue_alloc(index, gpa, len)?;
        self.queues.insert(index, (gpa, len));
        (self.emit)(Event::HwQueueAlloc {
            cmdqv: self.cmdqv,
            index,
            gpa,
            length: len,
        });
        Ok(())
    }

    fn hw_queue_free(&mut self, index: u32) -> Result<(), BackendError> {
        self.inner.hw_queue_free(index)?;
        let (gpa, length) = self.queues.remove(&index).unwrap_or((0, 0));
        (self.emit)(Event::HwQueueFree {
            cmdqv: self.cmdqv,
            index,
            gpa,
            length,
        });
        Ok(())
    }

    fn page0_read(&mut self, offset: u64) -> u32 {
        self.inner.page0_read(offset)
    }

    fn page0_write(&mut self, offset: u64, value: u32) {
        self.inner.page0_write(offset, value);
    }

    /// One `guest-error` per LVCMDQ the map names, with the CERROR its
    /// CONS.ERR holds (the hardware stops the queue there).
    fn poll_error_event(&mut self) -> Option<[u64; 2]> {
        let map = self.inner.poll_error_event()?;
        for queue in 0..128u32 {
            let word = map[(queue / 64) as usize];
            if word & (1 << (queue % 64)) == 0 {
                continue;
            }
            let cons = self
                .inner
                .page0_read(u64::from(queue) * VCMDQ_STRIDE + VCMDQ_CONS.offset);
            (self.emit)(Event::GuestError {
                device: GuestErrorDevice::Cmdqv(self.cmdqv),
                kind: cerror_name(VCMDQ_CONS_ERR.get(u64::from(cons))).into(),
                queue: Some(queue),
                vsid: None,
                address: None,
            });
        }
        Some(map)
    }

    fn sid_slots(&self) -> Vec<Option<u32>> {
        self.inner.sid_slots()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use devices::backend::Errno;

    /// Events the wrapper emitted in this test thread's tests.
    static SEEN: Mutex<Vec<Event>> = Mutex::new(Vec::new());

    fn record(event: Event) {
        SEEN.lock().unwrap().push(event);
    }

    /// A backend that accepts queues and has one error event pending: queue 1
    /// stopped on an illegal command.
    struct Fake {
        errors: Vec<[u64; 2]>,
    }

    impl CmdqvBackend for Fake {
        fn info(&self) -> CmdqvHostInfo {
            CmdqvHostInfo {
                version: 1,
                log2vcmdqs: 1,
                log2vsids: 4,
                cmdqs: 8,
            }
        }
        fn page0_mode(&self) -> Page0Mode {
            Page0Mode::Trapped
        }
        fn hw_queue_alloc(&mut self, index: u32, _: u64, _: u64) -> Result<(), BackendError> {
            if index > 1 {
                return Err(BackendError::new(
                    Errno::Inval,
                    format!("no LVCMDQ {index}"),
                ));
            }
            Ok(())
        }
        fn hw_queue_free(&mut self, _: u32) -> Result<(), BackendError> {
            Ok(())
        }
        fn page0_read(&mut self, offset: u64) -> u32 {
            if offset == VCMDQ_STRIDE {
                VCMDQ_CONS_ERR.make(1) as u32 | 5
            } else {
                0
            }
        }
        fn page0_write(&mut self, _: u64, _: u32) {}
        fn poll_error_event(&mut self) -> Option<[u64; 2]> {
            self.errors.pop()
        }
        fn sid_slots(&self) -> Vec<Option<u32>> {
            Vec::new()
        }
    }

    #[test]
    fn host_calls_that_succeed_and_queue_errors_become_events() {
        let fake = Fake {
            errors: vec![[1 << 1, 0]],
        };
        let mut cmdqv = EventingCmdqv::with_sink(Box::new(fake), 0, record);
        cmdqv.hw_queue_alloc(0, 0x4000_0000, 4096).unwrap();
        cmdqv.hw_queue_alloc(2, 0x4000_2000, 4096).unwrap_err();
        assert_eq!(cmdqv.poll_error_event(), Some([2, 0]));
        assert_eq!(cmdqv.poll_error_event(), None);
        cmdqv.hw_queue_free(0).unwrap();
        let seen = std::mem::take(&mut *SEEN.lock().unwrap());
        assert_eq!(
            seen,
            [
                Event::HwQueueAlloc {
                    cmdqv: 0,
                    index: 0,
                    gpa: 0x4000_0000,
                    length: 4096
                },
                Event::GuestError {
                    device: GuestErrorDevice::Cmdqv(0),
                    kind: "CERROR_ILL".into(),
                    queue: Some(1),
                    vsid: None,
                    address: None,
                },
                Event::HwQueueFree {
                    cmdqv: 0,
                    index: 0,
                    gpa: 0x4000_0000,
                    length: 4096
                },
            ]
        );
    }
}
