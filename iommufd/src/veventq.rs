//! A vEVENTQ: the fd the kernel queues a vIOMMU's events on. Read by the
//! VMM when epoll says it is readable; a LOST_EVENTS header or a gap in
//! the sequence numbers means the kernel dropped events (queue full).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use iommufd_bindings::iommufd::iommu_veventq_flag_IOMMU_VEVENTQ_FLAG_LOST_EVENTS;

use crate::error::Error;
use crate::fd::{Iommufd, Object, ObjectKind};
use crate::flavour::{EventFormat, le32};

/// `struct iommufd_vevent_header`: flags, sequence.
const HEADER: usize = 8;
/// Sequence numbers run 0..=INT_MAX, then wrap to 0.
const SEQUENCE_MAX: u32 = i32::MAX as u32;
/// Events read per read() call.
const BATCH: usize = 64;

/// One vEVENTQ. Dropping it closes the fd first (the fd holds a reference
/// on the object, EBUSY otherwise), then destroys the object.
#[derive(Debug)]
pub struct Veventq {
    file: Option<File>,
    object: Option<Object>,
    format: EventFormat,
    next_sequence: Option<u32>,
    lost: bool,
}

impl Veventq {
    /// `IOMMU_VEVENTQ_ALLOC` of `format.ty` on `viommu_id`, `depth` events deep.
    pub fn new(
        fd: &Arc<Iommufd>,
        viommu_id: u32,
        format: EventFormat,
        depth: u32,
    ) -> Result<Self, Error> {
        let (id, file) = fd.veventq_alloc(viommu_id, format.ty, depth)?;
        Ok(Veventq {
            file: Some(file),
            object: Some(Object::new(fd.clone(), id, ObjectKind::Veventq)),
            format,
            next_sequence: None,
            lost: false,
        })
    }

    /// The fd to wait on (readable when events are queued).
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.file.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Every queued event's payload, oldest first.
    pub fn read(&mut self) -> Result<Vec<Vec<u8>>, Error> {
        let mut payloads = Vec::new();
        let Some(file) = self.file.as_mut() else {
            return Ok(payloads);
        };
        let mut buf = vec![0u8; BATCH * (HEADER + self.format.payload)];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::EventRead(e)),
            };
            let mut stream = buf.get(..n).unwrap_or_default();
            while stream.len() >= HEADER {
                let (flags, sequence) = (le32(stream, 0), le32(stream, 4));
                stream = stream.get(HEADER..).unwrap_or_default();
                if flags & iommu_veventq_flag_IOMMU_VEVENTQ_FLAG_LOST_EVENTS != 0 {
                    log::warn!(target: "iommufd", "vEVENTQ type {:#x}: the kernel lost events (queue full)", self.format.ty);
                    self.lost = true;
                    self.next_sequence = None;
                    continue;
                }
                if self.next_sequence.is_some_and(|want| want != sequence) {
                    log::warn!(target: "iommufd", "vEVENTQ type {:#x}: sequence {sequence} after a gap", self.format.ty);
                    self.lost = true;
                }
                self.next_sequence = Some(if sequence >= SEQUENCE_MAX {
                    0
                } else {
                    sequence + 1
                });
                let Some(payload) = stream.get(..self.format.payload) else {
                    break;
                };
                payloads.push(payload.to_vec());
                stream = stream.get(self.format.payload..).unwrap_or_default();
            }
        }
        Ok(payloads)
    }

    /// True once since the kernel last reported lost events.
    pub fn take_lost(&mut self) -> bool {
        std::mem::take(&mut self.lost)
    }

    /// Close the fd, then destroy the object; the kernel's answer.
    pub fn close(mut self) -> Result<(), Error> {
        self.file = None;
        match self.object.take() {
            Some(object) => object.destroy(),
            None => Ok(()),
        }
    }
}

impl Drop for Veventq {
    fn drop(&mut self) {
        self.file = None;
        self.object = None;
    }
}
