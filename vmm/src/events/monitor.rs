//! The event stream's sink: `--event-monitor path=<file>|fd=<fd>`, opened
//! once at start, written by whichever thread an event happens on (the
//! VMM thread, a vCPU trapping a CMD-QV register, the API thread).
//!
//! Writes never block. The fd is O_NONBLOCK and each event is one
//! `write(2)` of one line, shorter than PIPE_BUF, so on a pipe it lands
//! whole or not at all: a reader that stops reading (or never starts)
//! fills the pipe, and then events are dropped and counted ([`dropped`]),
//! with one warning in the log the first time. A vCPU must never wait for
//! a management process to read, and a writer thread would only move the
//! wait: its queue would grow or drop just the same, and events written
//! from the thread where they happen keep their order with no extra
//! machinery. A short lock serialises the writers.
//!
//! A FIFO (libvirt creates one with mkfifo and opens its read end while
//! the VMM starts) is opened O_RDWR: that never blocks and never fails for
//! want of a reader, unlike O_WRONLY (which blocks until a reader comes,
//! or with O_NONBLOCK fails with ENXIO and would need a retry loop with a
//! deadline). Events written before the reader opens wait in the pipe
//! (64 KiB by default, a few hundred events) and are read in order when it
//! does; a reader blocked in its own open(O_RDONLY) is released by ours.
//! Holding the read end as well means a reader that goes away causes no
//! EPIPE: the pipe fills and further events are dropped, as above.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use super::Event;
use crate::config::options::{OptionError, Options};

/// `--event-monitor` syntax.
pub const EVENT_MONITOR_SYNTAX: &str = "JSON event stream, one event per line \
     (cloud-hypervisor's timestamp/source/event/properties; docs/events.md): \"path=<file or \
     FIFO>\" or \"fd=<fd>\" (an open, writable file descriptor inherited from the parent)";

/// `--event-monitor`: where the events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventMonitorConfig {
    /// A file (created or truncated) or an existing FIFO.
    Path(PathBuf),
    /// An fd inherited from the parent (a pipe's write end, a file).
    Fd(RawFd),
}

impl EventMonitorConfig {
    /// Parse `path=<path>` or `fd=<fd>`.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        let opts = Options::parse("event-monitor", input, &["path", "fd"], false)?;
        match (opts.get("path"), opts.get("fd")) {
            (Some(path), None) => Ok(EventMonitorConfig::Path(PathBuf::from(path))),
            (None, Some(raw)) => match opts.number::<i32>("fd")? {
                Some(fd) => Ok(EventMonitorConfig::Fd(fd)),
                None => Err(opts.invalid("fd", raw, "expected a file descriptor number")),
            },
            (Some(_), Some(_)) => {
                Err(opts.invalid("event-monitor", input, "give one of path= or fd=, not both"))
            }
            (None, None) => {
                Err(opts.invalid("event-monitor", input, "give path=<file> or fd=<fd>"))
            }
        }
    }
}

/// Why the event monitor could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum EventMonitorError {
    /// `path=` could not be created or opened.
    #[error("--event-monitor path={path}: cannot open it for writing: {source}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `fd=` is not an open file descriptor.
    #[error("--event-monitor fd={fd}: not an open file descriptor of this process ({source})")]
    BadFd {
        /// The fd given.
        fd: RawFd,
        /// What fcntl said.
        source: io::Error,
    },
    /// `fd=` is open read-only, or is one of stdin, stdout, stderr.
    #[error(
        "--event-monitor fd={fd}: {why}; pass the write end of a pipe or a file opened for writing"
    )]
    UnusableFd {
        /// The fd given.
        fd: RawFd,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Making the fd non-blocking failed.
    #[error("--event-monitor: cannot make the fd non-blocking: {0}")]
    NonBlocking(io::Error),
    /// `start` was called twice.
    #[error("--event-monitor is already open")]
    AlreadyStarted,
}

/// An open event stream.
pub struct EventMonitor {
    start: Instant,
    out: Mutex<File>,
    dropped: AtomicU64,
    warned: AtomicBool,
}

impl EventMonitor {
    /// Open the sink `config` names; timestamps count from now.
    pub fn open(config: &EventMonitorConfig) -> Result<Self, EventMonitorError> {
        let file = match config {
            EventMonitorConfig::Path(path) => open_path(path)?,
            EventMonitorConfig::Fd(fd) => adopt_fd(*fd)?,
        };
        set_nonblocking(&file).map_err(EventMonitorError::NonBlocking)?;
        Ok(EventMonitor {
            start: Instant::now(),
            out: Mutex::new(file),
            dropped: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        })
    }

    /// Write `event` now, or count it as dropped; never blocks.
    pub fn write(&self, event: &Event) {
        let mut line = event.to_line(self.start.elapsed());
        line.push('\n');
        let result = {
            let mut out = devices::lock_unpoisoned(&self.out);
            out.write(line.as_bytes())
        };
        match result {
            Ok(n) if n == line.len() => {}
            // A regular file that took part of the line (a full disk).
            Ok(_) => self.drop_one("the file took only part of an event"),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.drop_one("the pipe is full: no reader, or one that does not keep up")
            }
            Err(e) => self.drop_one(&e.to_string()),
        }
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn drop_one(&self, why: &str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if !self.warned.swap(true, Ordering::Relaxed) {
            log::warn!(
                target: "events",
                "--event-monitor: an event was dropped ({why}); the VMM goes on and counts \
                 further drops without saying so again"
            );
        }
    }
}

/// A FIFO is opened O_RDWR (see the module doc); anything else is created
/// or truncated, as upstream does.
fn open_path(path: &Path) -> Result<File, EventMonitorError> {
    let err = |source| EventMonitorError::Open {
        path: path.to_path_buf(),
        source,
    };
    let is_fifo = std::fs::metadata(path)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    let mut options = std::fs::OpenOptions::new();
    if is_fifo {
        options
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK);
    } else {
        options.write(true).create(true).truncate(true);
    }
    options.open(path).map_err(err)
}

/// Take ownership of an inherited fd after checking it can be written.
fn adopt_fd(fd: RawFd) -> Result<File, EventMonitorError> {
    if (0..=2).contains(&fd) {
        return Err(EventMonitorError::UnusableFd {
            fd,
            why: "it is stdin, stdout or stderr, which the VMM uses for the console and its log",
        });
    }
    // SAFETY: F_GETFL reads the flags of `fd`; an fd that is not open
    // fails with EBADF and nothing else happens.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(EventMonitorError::BadFd {
            fd,
            source: io::Error::last_os_error(),
        });
    }
    if flags & libc::O_ACCMODE == libc::O_RDONLY {
        return Err(EventMonitorError::UnusableFd {
            fd,
            why: "it is open read-only",
        });
    }
    // SAFETY: `fd` is open (F_GETFL succeeded) and was handed to this
    // process for the event stream alone: nothing else owns or closes it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn set_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on an fd `file` owns; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The process's event stream, set once by [`start`].
static MONITOR: OnceLock<EventMonitor> = OnceLock::new();

/// Open the process's event stream (`--event-monitor`), once.
pub fn start(config: &EventMonitorConfig) -> Result<(), EventMonitorError> {
    if MONITOR.get().is_some() {
        return Err(EventMonitorError::AlreadyStarted);
    }
    let monitor = EventMonitor::open(config)?;
    MONITOR
        .set(monitor)
        .map_err(|_| EventMonitorError::AlreadyStarted)
}

/// Write `event` to the process's stream; nothing without `--event-monitor`.
pub fn emit(event: Event) {
    if let Some(monitor) = MONITOR.get() {
        monitor.write(&event);
    }
}

/// Events the process's stream dropped (a full pipe, a failed write).
pub fn dropped() -> u64 {
    MONITOR.get().map_or(0, EventMonitor::dropped)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read};
    use std::time::Duration;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ch-events-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; mkfifo reads it and nothing else.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn option_takes_a_path_or_an_fd() {
        assert_eq!(
            EventMonitorConfig::parse("path=/run/ch/events").unwrap(),
            EventMonitorConfig::Path("/run/ch/events".into())
        );
        assert_eq!(
            EventMonitorConfig::parse("fd=7").unwrap(),
            EventMonitorConfig::Fd(7)
        );
    }

    #[test]
    fn option_refuses_both_neither_and_a_bad_fd() {
        assert_eq!(
            EventMonitorConfig::parse("path=/a,fd=3")
                .unwrap_err()
                .to_string(),
            "--event-monitor: event-monitor=path=/a,fd=3 is not valid: give one of path= or fd=, \
             not both"
        );
        assert_eq!(
            EventMonitorConfig::parse("").unwrap_err().to_string(),
            "--event-monitor: event-monitor= is not valid: give path=<file> or fd=<fd>"
        );
        assert_eq!(
            EventMonitorConfig::parse("fd=three")
                .unwrap_err()
                .to_string(),
            "--event-monitor: fd=three is not valid: expected a whole number in range"
        );
        assert!(EventMonitorConfig::parse("fd=-1").is_err());
        assert!(EventMonitorConfig::parse("/tmp/events").is_err());
        assert!(EventMonitorConfig::parse("socket=/tmp/s").is_err());
    }

    #[test]
    fn fds_that_cannot_carry_events_are_refused_by_number() {
        let err = EventMonitor::open(&EventMonitorConfig::Fd(1))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("--event-monitor fd=1: it is stdin"),
            "{err}"
        );
        let err = EventMonitor::open(&EventMonitorConfig::Fd(999_999))
            .err()
            .unwrap();
        assert!(
            matches!(err, EventMonitorError::BadFd { fd: 999_999, .. }),
            "{err}"
        );
        let dir = temp_dir("readonly");
        std::fs::write(dir.join("f"), b"").unwrap();
        let file = File::open(dir.join("f")).unwrap();
        let fd = file.as_raw_fd();
        let err = EventMonitor::open(&EventMonitorConfig::Fd(fd))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "--event-monitor fd={fd}: it is open read-only; pass the write end of a pipe or \
                 a file opened for writing"
            )
        );
    }

    #[test]
    fn a_file_gets_one_json_object_per_line() {
        let dir = temp_dir("file");
        let path = dir.join("events");
        std::fs::write(&path, "stale content of an earlier run\n").unwrap();
        let monitor = EventMonitor::open(&EventMonitorConfig::Path(path.clone())).unwrap();
        monitor.write(&Event::VmmStarting);
        monitor.write(&Event::VmBooting { boot: 1 });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(
            (first["source"].as_str(), first["event"].as_str()),
            (Some("vmm"), Some("starting"))
        );
        assert!(first["timestamp"]["secs"].is_u64() && first["timestamp"]["nanos"].is_u64());
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["properties"]["boot"], "1");
        assert_eq!(monitor.dropped(), 0);
    }

    #[test]
    fn a_fifo_reader_that_opens_after_the_vmm_gets_every_event_in_order() {
        let dir = temp_dir("fifo-late");
        let path = dir.join("fifo");
        mkfifo(&path);
        let started = Instant::now();
        let monitor = EventMonitor::open(&EventMonitorConfig::Path(path.clone())).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "opening waited for a reader"
        );
        monitor.write(&Event::VmmStarting);
        monitor.write(&Event::VmBooting { boot: 1 });
        // The reader comes later (libvirt opens its end after spawning us).
        let reader = std::thread::spawn(move || {
            let file = File::open(&path).unwrap();
            let mut names = Vec::new();
            for line in BufReader::new(file).lines().take(3) {
                let json: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
                names.push(format!(
                    "{}:{}",
                    json["source"].as_str().unwrap(),
                    json["event"].as_str().unwrap()
                ));
            }
            names
        });
        std::thread::sleep(Duration::from_millis(50));
        monitor.write(&Event::VmBooted { boot: 1 });
        let names = reader.join().unwrap();
        assert_eq!(names, ["vmm:starting", "vm:booting", "vm:booted"]);
        assert_eq!(monitor.dropped(), 0);
    }

    #[test]
    fn a_fifo_reader_that_never_opens_costs_dropped_events_not_a_stall() {
        let dir = temp_dir("fifo-never");
        let path = dir.join("fifo");
        mkfifo(&path);
        let started = Instant::now();
        let monitor = EventMonitor::open(&EventMonitorConfig::Path(path.clone())).unwrap();
        // Far more than a 64 KiB pipe holds.
        for index in 0..4000 {
            monitor.write(&Event::HwQueueAlloc {
                cmdqv: 0,
                index,
                gpa: 0x4000_0000,
                length: 4096,
            });
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "writing to a FIFO nobody reads took {:?}",
            started.elapsed()
        );
        let dropped = monitor.dropped();
        assert!(dropped > 0 && dropped < 4000, "dropped {dropped}");
        // What did fit is whole lines, from the first event on.
        let mut reader = File::open(&path).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = reader.read(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["properties"]["index"], "0");
    }

    #[test]
    fn a_pipe_fd_carries_events_to_its_reader() {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array it is given.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: the read end is ours alone.
        let read_end = unsafe { File::from_raw_fd(fds[0]) };
        let monitor = EventMonitor::open(&EventMonitorConfig::Fd(fds[1])).unwrap();
        monitor.write(&Event::VmmShutdown);
        drop(monitor);
        let mut text = String::new();
        BufReader::new(read_end).read_to_string(&mut text).unwrap();
        assert!(
            text.ends_with("\"source\":\"vmm\",\"event\":\"shutdown\",\"properties\":null}\n"),
            "{text}"
        );
    }
}
