//! Errors a device model shows its guest (a GERROR bit, a queue's CONS.ERR,
//! an event record it writes itself), reported to a listener the VMM
//! installs, which names them in its event stream (`guest-error`). A model
//! only calls the listener; it never knows what the VMM does with it.

/// One error shown to the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestError {
    /// The architecture's name: `CERROR_ILL`, `C_BAD_STE`, `CMDQ_INIT_ERR`...
    pub kind: &'static str,
    /// The command queue it stopped (a CMD-QV LVCMDQ index).
    pub queue: Option<u32>,
    /// The StreamID it is about.
    pub vsid: Option<u32>,
}

/// Where a model reports the errors it shows its guest.
pub type GuestErrorListener = Box<dyn FnMut(GuestError) + Send>;

/// The SMMUv3 CERROR names of a command queue's CONS.ERR (spec 7.1; a
/// Tegra241 VCMDQ reports the same codes in its CONS.ERR).
pub fn cerror_name(code: u64) -> &'static str {
    match code {
        0 => "CERROR_NONE",
        1 => "CERROR_ILL",
        2 => "CERROR_ABT",
        3 => "CERROR_ATC_INV_SYNC",
        _ => "CERROR_UNKNOWN",
    }
}
