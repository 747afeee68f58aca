//! Which checksum and segmentation offloads the device offers (virtio 1.2
//! section 5.1.3), and what the tap is told (TUNSETOFFLOAD) once the
//! driver accepted some.
//!
//! Three groups, as cloud-hypervisor's `offload_csum`, `offload_tso` and
//! `offload_ufo`, each offered both ways only when the operator allows it
//! and the host's tap takes the matching TUN_F_* flags:
//! - checksum: CSUM (the guest may send partial checksums) and GUEST_CSUM
//!   (it takes them: TUN_F_CSUM);
//! - TSO: HOST_TSO4/6 + HOST_ECN (the guest may send TCP segments up to
//!   64 KiB) and GUEST_TSO4/6 + GUEST_ECN (it takes them: TUN_F_TSO4,
//!   TUN_F_TSO6, TUN_F_TSO_ECN);
//! - UFO: HOST_UFO and GUEST_UFO (TUN_F_UFO; Linux's tap accepts the flag
//!   and never sends a UFO frame, and segments one it is given).
//!
//! Each TSO and UFO feature depends on the checksum one of its direction
//! (the spec's rule), so TSO and UFO are offered only with checksum.
//! A guest's transmit offloads need nothing of the tap: it takes GSO
//! frames and partial checksums from its writer whatever TUNSETOFFLOAD
//! says.

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_UFO,
};

use crate::feature;

/// TUN_F_* flags (linux/if_tun.h; `libc` has the same values).
pub const TUN_F_CSUM: u32 = 0x01;
/// TCPv4 segmentation.
pub const TUN_F_TSO4: u32 = 0x02;
/// TCPv6 segmentation.
pub const TUN_F_TSO6: u32 = 0x04;
/// TSO with ECN bits.
pub const TUN_F_TSO_ECN: u32 = 0x08;
/// UDP fragmentation.
pub const TUN_F_UFO: u32 = 0x10;

/// The offloads the operator allows (`offload_csum=`, `offload_tso=`,
/// `offload_ufo=`; each on by default, as in cloud-hypervisor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offloads {
    /// Checksum offload both ways.
    pub csum: bool,
    /// TCP segmentation both ways (needs `csum`).
    pub tso: bool,
    /// UDP fragmentation both ways (needs `csum`).
    pub ufo: bool,
}

impl Offloads {
    /// Every offload allowed.
    pub const ALL: Offloads = Offloads {
        csum: true,
        tso: true,
        ufo: true,
    };
    /// None.
    pub const NONE: Offloads = Offloads {
        csum: false,
        tso: false,
        ufo: false,
    };

    /// The feature bits to offer, given `tap_supports` (the TUN_F_* flags
    /// [`super::Tap::probe_offloads`] found).
    pub fn features(self, tap_supports: u32) -> u64 {
        let csum = self.csum && tap_supports & TUN_F_CSUM != 0;
        if !csum {
            return 0;
        }
        let mut f = feature(VIRTIO_NET_F_CSUM) | feature(VIRTIO_NET_F_GUEST_CSUM);
        let tso = TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
        if self.tso && tap_supports & tso == tso {
            f |= feature(VIRTIO_NET_F_HOST_TSO4)
                | feature(VIRTIO_NET_F_HOST_TSO6)
                | feature(VIRTIO_NET_F_HOST_ECN)
                | feature(VIRTIO_NET_F_GUEST_TSO4)
                | feature(VIRTIO_NET_F_GUEST_TSO6)
                | feature(VIRTIO_NET_F_GUEST_ECN);
        }
        if self.ufo && tap_supports & TUN_F_UFO != 0 {
            f |= feature(VIRTIO_NET_F_HOST_UFO) | feature(VIRTIO_NET_F_GUEST_UFO);
        }
        f
    }
}

/// Whether the driver accepted `bit`.
fn has(features: u64, bit: u32) -> bool {
    features & feature(bit) != 0
}

/// The TUNSETOFFLOAD flags for the receive offloads the driver accepted
/// (`features`). A segmentation flag without GUEST_CSUM, or ECN without
/// TSO, is left out: the spec forbids the driver that combination, and the
/// tap refuses it (EINVAL).
pub fn tap_flags(features: u64) -> u32 {
    if !has(features, VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut flags = TUN_F_CSUM;
    if has(features, VIRTIO_NET_F_GUEST_TSO4) {
        flags |= TUN_F_TSO4;
    }
    if has(features, VIRTIO_NET_F_GUEST_TSO6) {
        flags |= TUN_F_TSO6;
    }
    if has(features, VIRTIO_NET_F_GUEST_ECN) && flags & (TUN_F_TSO4 | TUN_F_TSO6) != 0 {
        flags |= TUN_F_TSO_ECN;
    }
    if has(features, VIRTIO_NET_F_GUEST_UFO) {
        flags |= TUN_F_UFO;
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_TUN: u32 = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO;

    #[test]
    fn the_flags_match_linuxs_if_tun_h() {
        assert_eq!(TUN_F_CSUM, libc::TUN_F_CSUM);
        assert_eq!(TUN_F_TSO4, libc::TUN_F_TSO4);
        assert_eq!(TUN_F_TSO6, libc::TUN_F_TSO6);
        assert_eq!(TUN_F_TSO_ECN, libc::TUN_F_TSO_ECN);
        assert_eq!(TUN_F_UFO, libc::TUN_F_UFO);
    }

    #[test]
    fn offered_features_follow_the_options_and_what_the_tap_takes() {
        // Bits 0, 1, 7..=14.
        assert_eq!(Offloads::ALL.features(ALL_TUN), 0x7f83);
        assert_eq!(Offloads::NONE.features(ALL_TUN), 0);
        assert_eq!(Offloads::ALL.features(0), 0, "a tap without offloads");
        let no_ufo = Offloads {
            ufo: false,
            ..Offloads::ALL
        };
        assert_eq!(no_ufo.features(ALL_TUN), 0x3b83);
        assert_eq!(Offloads::ALL.features(ALL_TUN & !TUN_F_UFO), 0x3b83);
        let csum_only = Offloads {
            csum: true,
            ..Offloads::NONE
        };
        assert_eq!(csum_only.features(ALL_TUN), 0x3);
        assert_eq!(Offloads::ALL.features(TUN_F_CSUM), 0x3);
        let no_csum = Offloads {
            csum: false,
            ..Offloads::ALL
        };
        assert_eq!(no_csum.features(ALL_TUN), 0, "TSO and UFO need checksum");
    }

    #[test]
    fn the_tap_gets_the_receive_offloads_the_driver_accepted() {
        assert_eq!(tap_flags(Offloads::ALL.features(ALL_TUN)), ALL_TUN);
        assert_eq!(tap_flags(0), 0);
        // Transmit offloads alone change nothing on the tap.
        assert_eq!(
            tap_flags(feature(VIRTIO_NET_F_CSUM) | feature(VIRTIO_NET_F_HOST_TSO4)),
            0
        );
        assert_eq!(tap_flags(feature(VIRTIO_NET_F_GUEST_CSUM)), TUN_F_CSUM);
        assert_eq!(
            tap_flags(feature(VIRTIO_NET_F_GUEST_CSUM) | feature(VIRTIO_NET_F_GUEST_TSO6)),
            TUN_F_CSUM | TUN_F_TSO6
        );
        // A driver breaking the dependencies gets what the tap takes.
        assert_eq!(
            tap_flags(feature(VIRTIO_NET_F_GUEST_TSO4) | feature(VIRTIO_NET_F_GUEST_ECN)),
            0
        );
        assert_eq!(
            tap_flags(feature(VIRTIO_NET_F_GUEST_CSUM) | feature(VIRTIO_NET_F_GUEST_ECN)),
            TUN_F_CSUM
        );
    }
}
