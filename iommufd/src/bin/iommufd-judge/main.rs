//! `iommufd-judge`: the iommufd backend and the device models over the
//! kernel's own iommufd code (the CONFIG_IOMMUFD_TEST selftest mock).
//!
//! Runs as /init of a small x86_64 VM (scripts/iommufd-mock/run.sh) or on
//! any host whose kernel has the mock. Every check drives the product code
//! (the vSMMU and CMD-QV models over `iommufd::Viommu` with the selftest
//! flavour) and asserts what the KERNEL answered: mappings it reports,
//! errnos it returns, objects it still holds. Prints one line per check and
//! `N passed, M failed`; as PID 1 it reports through isa-debug-exit
//! (port 0xf4: 0 = pass) so QEMU's exit status carries the verdict.

mod checks;
mod rig;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use iommufd::Iommufd;

use checks::*;
use rig::Rig;

mod pid1 {
    //! PID-1 duties: the judge is the VM's init, and std has no mount(2).

    /// Mount devtmpfs on /dev and proc on /proc (errors: already mounted).
    pub fn mount_filesystems() {
        for (source, target, fstype) in
            [("devtmpfs", "/dev", "devtmpfs"), ("proc", "/proc", "proc")]
        {
            let _ = std::fs::create_dir_all(target);
            let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
            let (source, target, fstype) = (c(source), c(target), c(fstype));
            // SAFETY: all three are valid NUL-terminated strings that live
            // across the call; no data pointer is passed.
            let rc = unsafe {
                libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    fstype.as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                eprintln!(
                    "judge: mount {target:?}: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }

    /// Write `code` to isa-debug-exit (QEMU exits with `(code << 1) | 1`).
    pub fn report(code: u8) {
        use std::io::{Seek, SeekFrom, Write};
        let result = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/port")
            .and_then(|mut port| {
                port.seek(SeekFrom::Start(0xf4))?;
                port.write_all(&[code])
            });
        if let Err(e) = result {
            eprintln!("judge: /dev/port: {e} (is CONFIG_DEVPORT set?)");
        }
    }
}

/// Prints every log line and keeps them, so checks can assert on the
/// models' guest-visible error messages.
struct CaptureLog(Mutex<Vec<String>>);

impl log::Log for CaptureLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let line = format!("[{} {}] {}", record.level(), record.target(), record.args());
            eprintln!("{line}");
            devices::lock_unpoisoned(&self.0).push(line);
        }
    }

    fn flush(&self) {}
}

static LOG: CaptureLog = CaptureLog(Mutex::new(Vec::new()));

fn log_since(mark: usize) -> Vec<String> {
    devices::lock_unpoisoned(&LOG.0)
        .iter()
        .skip(mark)
        .cloned()
        .collect()
}

fn log_mark() -> usize {
    devices::lock_unpoisoned(&LOG.0).len()
}

type Check = Result<(), String>;

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Check {
    if cond { Ok(()) } else { Err(what()) }
}

/// What the process holds: open fds and mappings (from /proc/self).
fn footprint() -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let maps = std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count());
    (fds, maps)
}

fn main() -> ExitCode {
    let pid1 = std::process::id() == 1;
    if pid1 {
        pid1::mount_filesystems();
    }
    let _ = log::set_logger(&LOG);
    log::set_max_level(log::LevelFilter::Info);

    let baseline = footprint();
    let (passed, failed) = match Iommufd::open() {
        Ok(fd) => run_checks(Arc::new(fd), baseline),
        Err(e) => {
            println!("JUDGE FAIL open: {e} (a kernel with CONFIG_IOMMUFD_TEST?)");
            (0, 1)
        }
    };
    println!("{passed} passed, {failed} failed");
    let code = u8::from(failed != 0);
    if pid1 {
        pid1::report(code);
    }
    ExitCode::from(code)
}

fn run_checks(fd: Arc<Iommufd>, baseline: (usize, usize)) -> (usize, usize) {
    let mut passed = 0;
    let mut failed = 0;
    let mut record = |name: &str, result: Check| match result {
        Ok(()) => {
            println!("JUDGE ok   {name}");
            passed += 1;
        }
        Err(why) => {
            println!("JUDGE FAIL {name}: {why}");
            failed += 1;
        }
    };
    record("ioas_maps_guest_ram", ioas_maps_guest_ram(&fd));
    match Rig::new(&fd) {
        Ok(mut rig) => {
            type RigCheck = fn(&mut Rig) -> Check;
            let checks: [(&str, RigCheck); 9] = [
                ("viommu_region_is_the_kernels", viommu_region_is_the_kernels),
                ("vdevice_per_device_with_its_vsid", vdevice_per_device),
                (
                    "backend_out_of_order_gets_kernel_errno",
                    backend_order_errors,
                ),
                (
                    "hw_queues_0_then_1_through_the_model",
                    hw_queues_ascending_through_the_model,
                ),
                (
                    "kernel_refusals_become_cmdq_init_err",
                    kernel_refusals_become_cmdq_init_err,
                ),
                (
                    "invalidation_batch_is_one_ioctl",
                    invalidation_batch_is_one_ioctl,
                ),
                ("bad_entry_stops_cons_on_it", bad_entry_stops_cons_on_it),
                (
                    "vevent_reaches_guest_event_queue",
                    vevent_reaches_guest_event_queue,
                ),
                (
                    "lost_vevents_set_the_overflow_flag",
                    lost_vevents_set_the_overflow_flag,
                ),
            ];
            for (name, check) in checks {
                record(name, check(&mut rig));
            }
            record("teardown_in_kernel_order", rig.teardown());
        }
        Err(e) => record("rig", Err(e)),
    }
    record("errno_table_emulated_vs_kernel", errno_table(&fd));
    record(
        "failed_setup_leaks_nothing",
        failed_setup_leaks_nothing(&fd),
    );
    record(
        "every_setup_step_failing_leaks_nothing",
        every_setup_step_failing_leaks_nothing(&fd),
    );
    record(
        "refused_ste_leaves_device_on_abort",
        refused_ste_leaves_device_on_abort(&fd),
    );
    let every = fd.every_object();
    let left: Vec<u32> = every
        .iter()
        .copied()
        .filter(|id| fd.destroy(*id).err().and_then(|e| e.errno()) != Some(libc::ENOENT))
        .collect();
    record(
        "no_object_left",
        ensure(left.is_empty() && !every.is_empty(), || {
            format!("ids still alive in the kernel: {left:?}")
        }),
    );
    drop(fd);
    let after = footprint();
    record(
        "fds_and_mappings_back_to_start",
        ensure(after == baseline, || {
            format!("fds/maps {baseline:?} -> {after:?}")
        }),
    );
    (passed, failed)
}
