//! vCPU pinning (`--cpus affinity=[0@[0-1],1@[2]]`, the API's
//! `cpus.affinity`): each listed vCPU thread runs only on its host CPUs, so
//! a GPU's vCPUs can sit on the Grace cores of the GPU's node.
//!
//! libc's `sched_{get,set}affinity` with a `cpu_set_t` are the calls; no
//! crate of the workspace wraps them (nix would, for these two calls only).

use std::io;

use crate::config::{CpuAffinity, MAX_HOST_CPU};

/// Why a pinning cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum AffinityError {
    /// The VMM may not run on a host CPU the pinning names.
    #[error(
        "--cpus affinity: vCPU {vcpu} is pinned to host CPU {cpu}, which this process may not \
         use (allowed: {allowed}); pin it to allowed CPUs"
    )]
    NotAllowed {
        /// The vCPU.
        vcpu: u32,
        /// The host CPU.
        cpu: u32,
        /// The allowed set, as a list.
        allowed: String,
    },
    /// A host call failed.
    #[error("--cpus affinity: {what}: {source}")]
    Host {
        /// The call.
        what: &'static str,
        /// The host's error.
        source: io::Error,
    },
}

/// The host CPUs the calling thread may run on.
pub fn allowed() -> io::Result<Vec<u32>> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a cpu_set_t of the size passed; pid 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..=MAX_HOST_CPU)
        // SAFETY: `cpu` < CPU_SETSIZE, inside `set`.
        .filter(|cpu| unsafe { libc::CPU_ISSET(*cpu as usize, &set) })
        .collect())
}

/// Check every entry of `pinning` against the CPUs this process may use
/// (before the VM is built: a bad pinning is refused at start, not by a
/// vCPU thread later).
pub fn check(pinning: &[CpuAffinity]) -> Result<(), AffinityError> {
    if pinning.is_empty() {
        return Ok(());
    }
    let allowed = allowed().map_err(|source| AffinityError::Host {
        what: "sched_getaffinity",
        source,
    })?;
    for entry in pinning {
        if let Some(cpu) = entry.host_cpus.iter().find(|c| !allowed.contains(c)) {
            return Err(AffinityError::NotAllowed {
                vcpu: entry.vcpu,
                cpu: *cpu,
                allowed: crate::config::numa::cpu_list(&allowed),
            });
        }
    }
    Ok(())
}

/// Pin the calling thread to `cpus` (each <= [`MAX_HOST_CPU`]).
pub fn pin_current(cpus: &[u32]) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in cpus.iter().filter(|c| **c <= MAX_HOST_CPU) {
        // SAFETY: `cpu` < CPU_SETSIZE, inside `set`.
        unsafe { libc::CPU_SET(*cpu as usize, &mut set) };
    }
    // SAFETY: `set` is a cpu_set_t of the size passed; pid 0 is this thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_pinned_to_one_allowed_cpu_runs_only_there_and_a_foreign_cpu_is_refused() {
        let allowed = allowed().unwrap();
        assert!(!allowed.is_empty());
        let first = allowed[0];
        std::thread::spawn(move || {
            pin_current(&[first]).unwrap();
            assert_eq!(super::allowed().unwrap(), vec![first]);
        })
        .join()
        .unwrap();
        // This thread kept its set.
        assert_eq!(super::allowed().unwrap(), allowed);
        let foreign = (0..=MAX_HOST_CPU).find(|c| !allowed.contains(c)).unwrap();
        let pinning = [CpuAffinity {
            vcpu: 1,
            host_cpus: vec![first, foreign],
        }];
        let err = check(&pinning).unwrap_err().to_string();
        assert!(
            err.contains(&format!("vCPU 1 is pinned to host CPU {foreign}")),
            "{err}"
        );
        assert!(check(&pinning[..0]).is_ok());
        let ok = [CpuAffinity {
            vcpu: 0,
            host_cpus: vec![first],
        }];
        assert!(check(&ok).is_ok());
    }
}
