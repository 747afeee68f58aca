//! Threads whose name is visible once they are spawned.
//!
//! std names a thread from inside it, as the thread starts: until the new
//! thread first runs, `/proc/PID/task/TID/comm` shows its parent's name.
//! libvirt reads those names right after `vm.boot` answers, to find the
//! vCPU threads (`vcpuN`) it pins and puts in cgroups; a loaded host (the
//! e2e's nested L1 was one) can be that slow to run a new thread, and
//! libvirt then takes the vCPUs for emulator threads. [`spawn`] returns
//! only once the thread runs under its name.

use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long [`spawn`] waits for the thread to start, at most: a thread not
/// running by then is left to start on its own (and logged).
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Spawn `f` on a thread named `name`; return once the thread has started
/// (std has set its name) and is about to run `f`.
pub fn spawn<F, T>(name: String, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (started_tx, started) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let _ = started_tx.send(());
            f()
        })?;
    if started.recv_timeout(START_TIMEOUT).is_err() {
        log::warn!(
            target: "vmm",
            "thread {name} has not started within {} s; its name shows once it does",
            START_TIMEOUT.as_secs()
        );
    }
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn comms() -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|comm| comm.trim_end().to_string())
            .collect()
    }

    #[test]
    fn spawn_returns_with_the_thread_running_under_its_name() {
        for index in 0..16 {
            let name = format!("named-test{index}");
            let running = Arc::new(AtomicBool::new(false));
            let (release_tx, release) = mpsc::channel::<()>();
            let flag = running.clone();
            let handle = spawn(name.clone(), move || {
                flag.store(true, Ordering::SeqCst);
                let _ = release.recv();
            })
            .unwrap();
            // What libvirt reads right after vm.boot.
            assert!(comms().contains(&name), "{name} not in {:?}", comms());
            // The thread got as far as its closure before spawn returned
            // (a store it makes first: at most a moment after the send).
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !running.load(Ordering::SeqCst) {
                assert!(std::time::Instant::now() < deadline);
                std::thread::yield_now();
            }
            drop(release_tx);
            handle.join().unwrap();
        }
    }
}
