//! The guest's MAC address (`mac=`): parsed, checked, or made up.

use std::fmt;

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

/// Why a `mac=` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// Not six colon-separated hex bytes.
    #[error("mac={0} is not six hex bytes separated by ':' (e.g. 52:54:00:12:34:56)")]
    Syntax(String),
    /// The group bit is set.
    #[error("mac={0} is a multicast address (bit 0 of the first byte); give a unicast one")]
    Multicast(String),
    /// All zeroes.
    #[error("mac={0} is all zeroes; give a real address or leave mac= out for a random one")]
    Zero(String),
}

impl MacAddr {
    /// Parse `aa:bb:cc:dd:ee:ff`; a multicast or all-zero address is
    /// refused (a guest NIC cannot have one).
    pub fn parse(text: &str) -> Result<Self, MacError> {
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts
                .next()
                .filter(|p| p.len() == 2)
                .ok_or_else(|| MacError::Syntax(text.into()))?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacError::Syntax(text.into()))?;
        }
        if parts.next().is_some() {
            return Err(MacError::Syntax(text.into()));
        }
        if bytes[0] & 1 != 0 {
            return Err(MacError::Multicast(text.into()));
        }
        if bytes == [0; 6] {
            return Err(MacError::Zero(text.into()));
        }
        Ok(MacAddr(bytes))
    }

    /// A random locally administered unicast address. The bits come from
    /// std's randomly keyed SipHash (seeded by getrandom(2), which every
    /// seccomp filter here allows): no file is opened, so the API thread,
    /// which may open none, can call this at `vm.create`.
    pub fn random() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let mut bytes = [0u8; 6];
        bytes.copy_from_slice(&hasher.finish().to_le_bytes()[..6]);
        bytes[0] = (bytes[0] & !0x01) | 0x02;
        MacAddr(bytes)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}
