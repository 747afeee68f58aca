//! One io_uring (the `io-uring` crate, no async runtime) per disk queue,
//! owning every operation it has in flight: reads and writes of guest
//! memory at image offsets (IORING_OP_READV / WRITEV) and data syncs
//! (IORING_OP_FSYNC with IORING_FSYNC_DATASYNC).
//!
//! This is the crate's io_uring module: the `unsafe` submission calls are
//! here and nowhere else. Above it everything is safe, because the ring
//! itself keeps alive what the kernel reads or writes until the operation's
//! completion is reaped:
//! - the `iovec` arrays: each operation's own `Vec`, owned by the ring's
//!   table of operations until its completion;
//! - the guest buffers they point at: the ring makes the iovecs itself
//!   from guest addresses ([`Ring::add_read`]), and holds a clone of the
//!   guest memory (whose regions stay mapped while a clone lives) for as
//!   long as any operation is queued or in flight;
//! - the image: the ring owns a duplicate of its file descriptor.
//!
//! [`Ring::run`] returns only when every operation has completed. Should
//! io_uring_enter itself fail with operations in flight, the kernel may
//! still write guest memory later: the ring and its memory clone are then
//! leaked, never unmapped, and the ring is gone ([`Ring::usable`] false).
//!
//! The ring is made, probed and restricted on the VMM thread when the disk
//! is built ([`Ring::new`]): created disabled, checked for the three
//! opcodes, restricted to them with IORING_REGISTER_RESTRICTIONS (no other
//! opcode, no SQE flag, no io_uring_register call), then enabled. The
//! queue's worker only calls io_uring_enter. io_uring runs the operations
//! in kernel context (or its io-wq threads), outside the worker's seccomp
//! filter: the restriction is what keeps an open, a connect or any other
//! opcode out of the ring.
//!
//! Short transfers are resubmitted from where they stopped; a transfer
//! that makes no progress fails (UnexpectedEof / WriteZero), so a short
//! read or write is never reported as success. An operation with more than
//! IOV_MAX (1024) buffers is submitted 1024 at a time, the same way.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use io_uring::{IoUring, opcode, register::Probe, register::Restriction, types};

use super::request::Segment;
use crate::GuestMemory;
use vm_memory::GuestMemoryError;

/// iovecs one READV / WRITEV takes at most (UIO_MAXIOV).
const IOV_MAX: usize = 1024;
/// Retries of an operation the kernel answered EAGAIN or EINTR.
const MAX_RETRIES: u32 = 16;
/// Consecutive io_uring_enter calls answered EAGAIN / EBUSY before the
/// ring is given up.
const MAX_BUSY: u32 = 1000;

/// Why a disk's queues run synchronously.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The `kernel.io_uring_disabled` sysctl is set.
    #[error("kernel.io_uring_disabled={0}")]
    Disabled(String),
    /// The kernel has no io_uring (ENOSYS).
    #[error("the kernel has no io_uring (io_uring_setup: ENOSYS)")]
    NoSyscall,
    /// io_uring_setup refused (EPERM): a seccomp filter, a container
    /// runtime, or the sysctl for this user.
    #[error(
        "io_uring_setup is not permitted (EPERM: a seccomp filter or kernel.io_uring_disabled)"
    )]
    NotPermitted,
    /// Another setup failure (an old kernel without IORING_SETUP_R_DISABLED
    /// answers EINVAL).
    #[error("{what}: {source}")]
    Setup {
        /// The call.
        what: &'static str,
        /// The host's error.
        source: io::Error,
    },
    /// The kernel lacks an opcode we need.
    #[error("the kernel's io_uring lacks {0}")]
    MissingOp(&'static str),
}

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// READV into guest memory.
    Read,
    /// WRITEV from guest memory.
    Write,
    /// FSYNC (DATASYNC), submitted once every earlier operation completed.
    Flush,
}

/// One operation in the ring's table.
struct Op {
    kind: OpKind,
    tag: u64,
    /// Image offset of `iovecs[next]` (after `done` bytes).
    offset: u64,
    iovecs: Vec<libc::iovec>,
    /// The first iovec not yet (fully) transferred.
    next: usize,
    done: u64,
    retries: u32,
}

// SAFETY: the iovecs' raw pointers point into guest memory, which the ring
// keeps mapped (its GuestMemory clone) and which is shared with the guest
// anyway; an Op is only touched by the thread that owns the ring.
unsafe impl Send for Op {}

/// A finished operation: its tag and the bytes moved, or the error.
pub type Completion = (u64, io::Result<u64>);

/// A disk queue's ring; see the module doc.
pub struct Ring {
    ring: Option<IoUring>,
    image: File,
    ops: Vec<Option<Op>>,
    free: Vec<usize>,
    /// Operations waiting for room in the ring, in guest order.
    backlog: VecDeque<usize>,
    /// SQEs pushed and not yet reaped.
    in_flight: usize,
    /// Most SQEs in flight: the completion queue never overflows.
    limit: usize,
    /// Guest memory, kept mapped while any operation is queued.
    mem: Option<GuestMemory>,
}

/// Why io_uring_setup failed, in the words of the fallback's log line.
fn setup_refused(e: io::Error) -> Unavailable {
    match e.raw_os_error() {
        Some(libc::ENOSYS) => Unavailable::NoSyscall,
        Some(libc::EPERM) => Unavailable::NotPermitted,
        _ => Unavailable::Setup {
            what: "io_uring_setup",
            source: e,
        },
    }
}

/// Read a sysctl under /proc/sys (None where it does not exist).
fn sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether io_uring can issue I/O on `file` itself, without its io-wq
/// threads: the file is open with FMODE_NOWAIT (ext4, xfs, btrfs, f2fs,
/// block devices; not tmpfs in Linux 7.2). Without it io_uring/rw.c
/// answers itself -EAGAIN for every read and write and punts each to an
/// io-wq thread: the ring is then only a thread pool that costs a thread
/// switch each way per request. Probed with a one-byte
/// preadv2(RWF_NOWAIT) at offset 0, which the kernel refuses with
/// EOPNOTSUPP on a file without FMODE_NOWAIT (kiocb_set_rw_flags) and
/// otherwise answers with data, EAGAIN, or (O_DIRECT) EINVAL.
pub fn issues_without_workers(file: &File) -> bool {
    let mut byte = 0u8;
    let iov = libc::iovec {
        iov_base: (&raw mut byte).cast(),
        iov_len: 1,
    };
    // SAFETY: one iovec, pointing at `byte` (one byte, alive across the
    // call); `file` keeps the descriptor open.
    let rc = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, 0, libc::RWF_NOWAIT) };
    rc >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EOPNOTSUPP)
}

/// `statfs.f_type` of the file systems whose buffered writes io_uring
/// issues inline (FOP_BUFFER_WASYNC in Linux 7.2): XFS_SUPER_MAGIC and
/// BTRFS_SUPER_MAGIC.
const ASYNC_BUFFERED_WRITE_FS: [libc::__fsword_t; 2] = [0x5846_5342, 0x9123_683e];

/// Whether io_uring hands a buffered write to a regular file on a file
/// system of type `f_type` to an io-wq thread: io_uring/rw.c io_write()
/// answers itself -EAGAIN (then punts) for any buffered write to a regular
/// file whose file system lacks FOP_BUFFER_WASYNC (ext4 and tmpfs among
/// them), and io-wq runs the buffered writes to one inode one at a time
/// (hashed work). Such a write costs a thread switch each way and gains
/// nothing over the queue's worker writing it itself.
pub(super) fn punts_writes_on(f_type: libc::__fsword_t) -> bool {
    !ASYNC_BUFFERED_WRITE_FS.contains(&f_type)
}

/// [`punts_writes_on`] for the file system holding `file` (a buffered
/// regular file: [`super::image::DiskImage::buffered_file`]); false when
/// fstatfs fails, so the ring keeps every write.
pub fn punts_buffered_writes(file: &File) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: fstatfs writes one `struct statfs` into `st`, which is that
    // large and lives across the call; `file` keeps the descriptor open.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: fstatfs succeeded, so it filled `st` (zeroed before anyway).
    let st = unsafe { st.assume_init() };
    punts_writes_on(st.f_type)
}

impl Ring {
    /// A ring of `entries` submission entries over `image` (a duplicate
    /// of the image's fd), restricted to READV, WRITEV and FSYNC.
    pub fn new(entries: u32, image: &File) -> Result<Ring, Unavailable> {
        if let Some(v) = sysctl("/proc/sys/kernel/io_uring_disabled").filter(|v| v != "0") {
            // 1 still lets io_uring_group members in: try, and say why if refused.
            if v != "1" {
                return Err(Unavailable::Disabled(v));
            }
        }
        let setup = |what, source: io::Error| Unavailable::Setup { what, source };
        let ring = IoUring::builder()
            .setup_r_disabled()
            .build(entries)
            .map_err(setup_refused)?;
        let submitter = ring.submitter();
        let mut probe = Probe::new();
        submitter
            .register_probe(&mut probe)
            .map_err(|e| setup("IORING_REGISTER_PROBE", e))?;
        for (code, name) in [
            (opcode::Readv::CODE, "IORING_OP_READV"),
            (opcode::Writev::CODE, "IORING_OP_WRITEV"),
            (opcode::Fsync::CODE, "IORING_OP_FSYNC"),
        ] {
            if !probe.is_supported(code) {
                return Err(Unavailable::MissingOp(name));
            }
        }
        let mut restrictions = [
            Restriction::sqe_op(opcode::Readv::CODE),
            Restriction::sqe_op(opcode::Writev::CODE),
            Restriction::sqe_op(opcode::Fsync::CODE),
        ];
        submitter
            .register_restrictions(&mut restrictions)
            .map_err(|e| setup("IORING_REGISTER_RESTRICTIONS", e))?;
        submitter
            .register_enable_rings()
            .map_err(|e| setup("IORING_REGISTER_ENABLE_RINGS", e))?;
        let image = image.try_clone().map_err(|e| setup("dup", e))?;
        let limit = ring.params().sq_entries() as usize;
        Ok(Ring {
            ring: Some(ring),
            image,
            ops: Vec::new(),
            free: Vec::new(),
            backlog: VecDeque::new(),
            in_flight: 0,
            limit,
            mem: None,
        })
    }

    /// False once io_uring_enter failed for good (the queue then runs
    /// synchronously).
    pub fn usable(&self) -> bool {
        self.ring.is_some()
    }

    /// Queue a read (`Read`) or write (`Write`) of `data` at image byte
    /// `offset`; `tag` comes back with its completion. Fails, queueing
    /// nothing, when a buffer is not guest RAM.
    pub fn add_transfer(
        &mut self,
        mem: &GuestMemory,
        kind: OpKind,
        offset: u64,
        data: &[Segment],
        tag: u64,
    ) -> Result<(), GuestMemoryError> {
        let iovecs = super::vectored::iovecs(mem, data)?;
        self.queue(
            mem,
            Op {
                kind,
                tag,
                offset,
                iovecs,
                next: 0,
                done: 0,
                retries: 0,
            },
        );
        Ok(())
    }

    /// Queue a data sync, submitted once everything queued before it has
    /// completed.
    pub fn add_flush(&mut self, mem: &GuestMemory, tag: u64) {
        self.queue(
            mem,
            Op {
                kind: OpKind::Flush,
                tag,
                offset: 0,
                iovecs: Vec::new(),
                next: 0,
                done: 0,
                retries: 0,
            },
        );
    }

    fn queue(&mut self, mem: &GuestMemory, op: Op) {
        if self.mem.is_none() {
            self.mem = Some(mem.clone());
        }
        let index = match self.free.pop() {
            Some(i) => {
                self.ops[i] = Some(op);
                i
            }
            None => {
                self.ops.push(Some(op));
                self.ops.len() - 1
            }
        };
        self.backlog.push_back(index);
    }

    /// Submit everything queued and wait until all of it completed,
    /// appending each operation's completion to `out`. On Err the ring is
    /// gone and every operation not completed is in `out` as failed.
    pub fn run(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        let mut busy = 0;
        while !self.backlog.is_empty() || self.in_flight > 0 {
            self.fill();
            let Some(ring) = self.ring.as_mut() else {
                return Err(self.abandon(out, io::Error::other("no ring")));
            };
            match ring.submit_and_wait(1) {
                Ok(_) => busy = 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY))
                        && busy < MAX_BUSY =>
                {
                    busy += 1;
                }
                Err(e) => return Err(self.abandon(out, e)),
            }
            self.reap(out);
        }
        self.mem = None;
        Ok(())
    }

    /// Move operations from the backlog into the submission queue while
    /// there is room; a flush waits at the head until nothing before it
    /// is in flight.
    fn fill(&mut self) {
        while let Some(&index) = self.backlog.front() {
            if self.in_flight >= self.limit {
                return;
            }
            let Some(op) = self.ops.get(index).and_then(Option::as_ref) else {
                self.backlog.pop_front();
                continue;
            };
            if op.kind == OpKind::Flush && self.in_flight > 0 {
                return;
            }
            if !self.push(index) {
                return;
            }
            self.backlog.pop_front();
            self.in_flight += 1;
        }
    }

    /// Push operation `index`'s next SQE; false when the queue is full.
    fn push(&mut self, index: usize) -> bool {
        let (Some(ring), Some(Some(op))) = (self.ring.as_mut(), self.ops.get(index)) else {
            return false;
        };
        let fd = types::Fd(self.image.as_raw_fd());
        let iovecs = op.iovecs.get(op.next..).unwrap_or(&[]);
        let count = iovecs.len().min(IOV_MAX) as u32;
        let entry = match op.kind {
            OpKind::Read => opcode::Readv::new(fd, iovecs.as_ptr(), count)
                .offset(op.offset)
                .build(),
            OpKind::Write => opcode::Writev::new(fd, iovecs.as_ptr(), count)
                .offset(op.offset)
                .build(),
            OpKind::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        }
        .user_data(index as u64);
        // SAFETY: the entry's iovec array is the heap buffer of
        // `op.iovecs`, owned by `self.ops[index]` (a move of the table
        // moves the Vec, not its buffer) and neither changed nor freed
        // until this
        // operation's completion is reaped (`reap` is the only place that
        // takes it out); each iovec points into guest memory made by
        // `add_transfer` from `self.mem`, which stays Some (its regions
        // mapped) until `run` saw every operation complete, or is leaked by
        // `abandon`. The fd is `self.image`, owned by the ring.
        unsafe { ring.submission().push(&entry).is_ok() }
    }

    /// Take every completion the kernel posted.
    fn reap(&mut self, out: &mut Vec<Completion>) {
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        let posted: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (user_data, result) in posted {
            self.in_flight = self.in_flight.saturating_sub(1);
            let index = user_data as usize;
            match self.advance(index, result) {
                Some(done) => {
                    if let Some(op) = self.ops.get_mut(index).and_then(Option::take) {
                        self.free.push(index);
                        out.push((op.tag, done));
                    }
                }
                None => self.backlog.push_front(index),
            }
        }
    }

    /// Account `result` to operation `index`: Some when it is finished,
    /// None when the rest must be submitted again.
    fn advance(&mut self, index: usize, result: i32) -> Option<io::Result<u64>> {
        let op = self.ops.get_mut(index)?.as_mut()?;
        if result < 0 {
            let errno = -result;
            if matches!(errno, libc::EAGAIN | libc::EINTR) && op.retries < MAX_RETRIES {
                op.retries += 1;
                return None;
            }
            return Some(Err(io::Error::from_raw_os_error(errno)));
        }
        if op.kind == OpKind::Flush {
            return Some(Ok(0));
        }
        let moved = result as usize;
        if moved == 0 && op.next < op.iovecs.len() {
            let kind = if op.kind == OpKind::Read {
                io::ErrorKind::UnexpectedEof
            } else {
                io::ErrorKind::WriteZero
            };
            return Some(Err(io::Error::from(kind)));
        }
        op.done += moved as u64;
        op.offset += moved as u64;
        super::vectored::advance(&mut op.iovecs, &mut op.next, moved);
        if op.next >= op.iovecs.len() {
            return Some(Ok(op.done));
        }
        None
    }

    /// io_uring_enter failed for good: report every queued operation as
    /// failed; the kernel may still complete those in flight, so the ring
    /// and the guest memory clone are leaked (see the module doc).
    fn abandon(&mut self, out: &mut Vec<Completion>, err: io::Error) -> io::Error {
        for op in self.ops.iter().flatten() {
            out.push((op.tag, Err(io::Error::new(err.kind(), err.to_string()))));
        }
        self.backlog.clear();
        self.free.clear();
        let ops = std::mem::take(&mut self.ops);
        if self.in_flight > 0 {
            // The kernel may still read the iovecs and the buffers.
            std::mem::forget(ops);
            std::mem::forget(self.ring.take());
            std::mem::forget(self.mem.take());
        } else {
            self.ring = None;
            self.mem = None;
        }
        self.in_flight = 0;
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::tempfile::TempFile;

    fn ring() -> Ring {
        let file = TempFile::new().unwrap();
        file.as_file().set_len(4096).unwrap();
        Ring::new(4, file.as_file())
            .unwrap_or_else(|reason| panic!("io_uring is unavailable on this host ({reason})"))
    }

    #[test]
    fn the_ring_refuses_every_opcode_but_readv_writev_and_fsync() {
        let mut r = ring();
        let uring = r.ring.as_mut().unwrap();
        let path = c"/etc/hostname";
        let refused = [
            opcode::Nop::new().build().user_data(1),
            opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
                .build()
                .user_data(2),
        ];
        for entry in &refused {
            // SAFETY: a NOP points at nothing; the OPENAT's path is a
            // static C string; both are refused before they run anyway.
            unsafe { uring.submission().push(entry).unwrap() };
            uring.submit_and_wait(1).unwrap();
            let results: Vec<(u64, i32)> = uring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            assert_eq!(results, [(entry.get_user_data(), -libc::EACCES)]);
        }
        // No io_uring_register call either, once the ring is enabled.
        let err = uring
            .submitter()
            .register_probe(&mut Probe::new())
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
    }

    #[test]
    fn a_flush_is_held_back_until_every_earlier_operation_completed() {
        let mut r = ring();
        let mem = GuestMemory::from_ranges(&[(vm_memory::GuestAddress(0), 0x4000)]).unwrap();
        let data = [Segment {
            addr: vm_memory::GuestAddress(0x1000),
            len: 512,
        }];
        for tag in 0..3 {
            r.add_transfer(&mem, OpKind::Write, tag * 512, &data, tag)
                .unwrap();
        }
        r.add_flush(&mem, 100);
        r.add_transfer(&mem, OpKind::Read, 0, &data, 200).unwrap();
        r.fill();
        // The writes are in the ring, the flush (and what follows) waits.
        assert_eq!(r.in_flight, 3);
        assert_eq!(r.backlog.len(), 2);
        let mut done = Vec::new();
        r.run(&mut done).unwrap();
        let order: Vec<u64> = done.iter().map(|(tag, _)| *tag).collect();
        let at = |tag: u64| order.iter().position(|t| *t == tag).unwrap();
        assert!((0..3).all(|w| at(w) < at(100)), "{order:?}");
        assert!(done.iter().all(|(_, result)| result.is_ok()));
    }

    #[test]
    fn a_tmpfs_file_needs_io_wq_and_a_pipe_end_does_not() {
        // tmpfs has no FMODE_NOWAIT (Linux 7.2); a pipe has (and answers
        // EAGAIN or ESPIPE, not EOPNOTSUPP).
        if let Ok(file) = TempFile::new_in(std::path::Path::new("/dev/shm")) {
            file.as_file().set_len(4096).unwrap();
            assert!(!issues_without_workers(file.as_file()));
        }
        let (read, _write) = std::io::pipe().unwrap();
        assert!(issues_without_workers(&File::from(
            std::os::fd::OwnedFd::from(read)
        )));
    }

    #[test]
    fn buffered_writes_stay_in_the_ring_only_on_xfs_and_btrfs() {
        const EXT4: libc::__fsword_t = 0xef53;
        const TMPFS: libc::__fsword_t = 0x0102_1994;
        assert!(!punts_writes_on(0x5846_5342), "xfs");
        assert!(!punts_writes_on(0x9123_683e), "btrfs");
        assert!(punts_writes_on(EXT4));
        assert!(punts_writes_on(TMPFS));
        // The host's own answer for a file on tmpfs (/dev/shm), when it
        // has one.
        if let Ok(file) = TempFile::new_in(std::path::Path::new("/dev/shm")) {
            assert!(punts_buffered_writes(file.as_file()));
        }
    }

    #[test]
    fn a_refused_setup_names_its_reason() {
        let reason = |errno| setup_refused(io::Error::from_raw_os_error(errno)).to_string();
        assert_eq!(
            reason(libc::ENOSYS),
            "the kernel has no io_uring (io_uring_setup: ENOSYS)"
        );
        assert!(reason(libc::EPERM).starts_with("io_uring_setup is not permitted (EPERM"));
        assert!(reason(libc::EINVAL).starts_with("io_uring_setup: Invalid argument"));
        assert_eq!(
            Unavailable::Disabled("2".into()).to_string(),
            "kernel.io_uring_disabled=2"
        );
    }

    #[test]
    fn a_flush_completes_through_the_ring() {
        let mut r = ring();
        let mem = GuestMemory::from_ranges(&[(vm_memory::GuestAddress(0), 0x1000)]).unwrap();
        r.add_flush(&mem, 9);
        let mut done = Vec::new();
        r.run(&mut done).unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0, 9);
        assert_eq!(done[0].1.as_ref().unwrap(), &0);
        assert!(r.mem.is_none(), "guest memory released once idle");
    }
}
