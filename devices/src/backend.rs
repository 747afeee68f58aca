//! Types shared by the host-backend traits of the vSMMU and the CMDQ-V.
//!
//! The backends mirror the kernel's iommufd contract, so their errors are the
//! kernel's errno classes. A model turns a backend error into the
//! guest-visible error the hardware would raise; it never panics on one.

use std::fmt;

/// An error from a host backend, in the kernel's errno terms.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{errno}: {reason}")]
pub struct BackendError {
    /// The errno class the kernel would return.
    pub errno: Errno,
    /// What was wrong, naming the bad value.
    pub reason: String,
}

impl BackendError {
    /// Build an error of the given class with a reason naming the bad value.
    pub fn new(errno: Errno, reason: impl Into<String>) -> Self {
        BackendError {
            errno,
            reason: reason.into(),
        }
    }
}

/// The errno classes the iommufd uAPI uses (include/uapi/linux/iommufd.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Errno {
    /// EINVAL: a value out of range.
    Inval,
    /// EEXIST: the object already exists.
    Exist,
    /// EIO: a command or STE field the kernel refuses, an ordering rule broken.
    Io,
    /// EBUSY: the object is still in use.
    Busy,
    /// EFAULT: memory that could not be pinned or is not contiguous.
    Fault,
    /// EOPNOTSUPP: the host lacks the feature.
    NotSupported,
    /// EOVERFLOW: an address range that wraps.
    Overflow,
    /// ENOENT: no such object.
    NoEnt,
    /// ENOSPC: no free slot.
    NoSpc,
    /// ETIMEDOUT: the host's command queue did not complete a CMD_SYNC
    /// (an ATC invalidation that timed out).
    TimedOut,
    /// Any other errno from a real ioctl.
    Other(i32),
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Errno::Inval => f.write_str("EINVAL"),
            Errno::Exist => f.write_str("EEXIST"),
            Errno::Io => f.write_str("EIO"),
            Errno::Busy => f.write_str("EBUSY"),
            Errno::Fault => f.write_str("EFAULT"),
            Errno::NotSupported => f.write_str("EOPNOTSUPP"),
            Errno::Overflow => f.write_str("EOVERFLOW"),
            Errno::NoEnt => f.write_str("ENOENT"),
            Errno::NoSpc => f.write_str("ENOSPC"),
            Errno::TimedOut => f.write_str("ETIMEDOUT"),
            Errno::Other(n) => write!(f, "errno {n}"),
        }
    }
}

/// One recorded backend call: `name key=value ...`, printed by the replay
/// tool as `backend <name> <key>=<value>...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendCall {
    /// The call, e.g. `install_ste`, `invalidate`, `hw_queue_alloc`.
    pub name: &'static str,
    /// Its arguments and results, in print order.
    pub args: Vec<(&'static str, String)>,
}

impl BackendCall {
    /// Start a call record.
    pub fn new(name: &'static str) -> Self {
        BackendCall {
            name,
            args: Vec::new(),
        }
    }

    /// Add a hex-printed numeric argument.
    pub fn hex(mut self, key: &'static str, value: u64) -> Self {
        self.args.push((key, format!("{value:#x}")));
        self
    }

    /// Add a decimal-printed numeric argument (counts).
    pub fn dec(mut self, key: &'static str, value: u64) -> Self {
        self.args.push((key, value.to_string()));
        self
    }

    /// Add a word argument (an enum value's name).
    pub fn word(mut self, key: &'static str, value: &str) -> Self {
        self.args.push((key, value.to_string()));
        self
    }
}

impl fmt::Display for BackendCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)?;
        for (key, value) in &self.args {
            write!(f, " {key}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_call_prints_hex_decimal_and_words_in_order() {
        let call = BackendCall::new("install_ste")
            .hex("sid", 8)
            .word("cfg", "s1")
            .dec("entries", 3);
        assert_eq!(call.to_string(), "install_ste sid=0x8 cfg=s1 entries=3");
    }

    #[test]
    fn backend_error_names_errno_and_reason() {
        let err = BackendError::new(Errno::Exist, "HW queue index 1 already allocated");
        assert_eq!(
            err.to_string(),
            "EEXIST: HW queue index 1 already allocated"
        );
    }
}
