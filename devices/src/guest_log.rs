//! One rate limit for every log line a guest can cause.
//!
//! A guest that loops on a bad register write, an illegal command or a
//! misprogrammed MSI-X vector must not flood the host's log. Every such line
//! goes through [`guest_log!`](crate::guest_log!): each call site logs its
//! first [`BURST`] occurrences, then only the 2^n-th ones, so a long-running
//! fault still shows it is going on without costing a line per exit. Call
//! sites are limited separately, so one noisy fault does not hide another.
//! The lines left out are counted process-wide ([`dropped`]); the VMM shows
//! that count in `vm.counters` (`guest_log.dropped_lines`).
//!
//! Lines about the host (a failed ioctl the guest did not ask for, a thread
//! that could not start) are not limited: they are rare and each matters.

use std::sync::atomic::{AtomicU64, Ordering};

/// How many lines a call site logs before it thins out to powers of two.
pub const BURST: u64 = 16;

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Lines left out by every call site of the process so far.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The occurrence count of one call site.
#[derive(Debug, Default)]
pub struct LogLimit {
    seen: AtomicU64,
}

impl LogLimit {
    /// A call site that has not logged yet.
    pub const fn new() -> Self {
        LogLimit {
            seen: AtomicU64::new(0),
        }
    }

    /// Whether this occurrence is logged; a line left out is added to
    /// `dropped`.
    pub fn allow_counting(&self, dropped: &AtomicU64) -> bool {
        let n = self.seen.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let allowed = n <= BURST || n.is_power_of_two();
        if !allowed {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    /// Whether this occurrence is logged, counting a left-out line in the
    /// process-wide [`dropped`].
    pub fn allow(&self) -> bool {
        self.allow_counting(&DROPPED)
    }
}

/// `log`'s macro of the given level (`warn`, `error`, `info`), rate-limited
/// per call site: `guest_log!(warn, target: "smmuv3", "GERROR = {:#x}", v)`.
/// For lines a guest can cause; see the module doc.
#[macro_export]
macro_rules! guest_log {
    ($level:ident, target: $target:expr, $($arg:tt)+) => {{
        static LIMIT: $crate::guest_log::LogLimit = $crate::guest_log::LogLimit::new();
        if LIMIT.allow() {
            ::log::$level!(target: $target, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_site_logs_a_burst_then_powers_of_two_and_counts_the_rest() {
        let site = LogLimit::new();
        let dropped = AtomicU64::new(0);
        let logged: Vec<u64> = (1..=1000)
            .filter(|_| site.allow_counting(&dropped))
            .collect();
        let mut expected: Vec<u64> = (1..=BURST).collect();
        expected.extend([32, 64, 128, 256, 512]);
        assert_eq!(logged, expected);
        assert_eq!(
            dropped.load(Ordering::Relaxed),
            1000 - expected.len() as u64
        );
    }

    #[test]
    fn call_sites_are_limited_separately() {
        let noisy = LogLimit::new();
        let quiet = LogLimit::new();
        let dropped = AtomicU64::new(0);
        for _ in 0..100 {
            noisy.allow_counting(&dropped);
        }
        assert!(quiet.allow_counting(&dropped));
    }
}
