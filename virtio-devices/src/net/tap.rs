//! The host side of a virtio-net device: a Linux tap (drivers/net/tun.c)
//! opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR (and IFF_MULTI_QUEUE when
//! the device has more than one queue pair: one tap file per pair), so
//! that every read returns, and every write takes, one Ethernet frame
//! preceded by a virtio-net header of [`super::HEADER_LEN`] bytes
//! (TUNSETVNETHDRSZ).
//!
//! Offloads: a tap takes GSO frames and partial checksums from its writer
//! whatever its TUNSETOFFLOAD says (the header describes them), so the
//! guest's transmit offloads need nothing here. TUNSETOFFLOAD says which
//! ones the tap may hand its reader, the guest's receive offloads: it is 0
//! from opening until the driver accepts features (DRIVER_OK), then the
//! flags of [`super::offloads::tap_flags`]. [`Tap::probe_offloads`] finds
//! which flags this kernel takes, so only those are offered.
//!
//! Queue pairs the driver has not enabled are detached (TUNSETQUEUE with
//! IFF_DETACH_QUEUE): the kernel steers no frame to them.
//!
//! The ioctls here are the only `unsafe` of the device. `libc` has the TUN
//! ioctl numbers and flags, `ifreq` and the SIOC* numbers; nothing is
//! defined by hand.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref};

use super::HEADER_LEN;

/// The clone device every tap is created through.
const TUN_PATH: &str = "/dev/net/tun";

/// Why a tap could not be opened or configured.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// /dev/net/tun could not be opened.
    #[error(
        "cannot open {TUN_PATH}: {0}; the host needs the tun module (modprobe tun) and the \
         VMM CAP_NET_ADMIN, or pass an open tap with fd="
    )]
    OpenTun(io::Error),
    /// The interface name does not fit IFNAMSIZ.
    #[error("tap={0}: an interface name is 1 to 15 bytes without '/' or whitespace")]
    BadName(String),
    /// An ioctl on the tap failed.
    #[error("tap {name}: {call}: {err}")]
    Ioctl {
        /// The interface (or `fd=N`).
        name: String,
        /// Which call.
        call: &'static str,
        /// The kernel's answer.
        err: io::Error,
    },
    /// An existing tap= whose multi-queue flag differs from what the
    /// queue count needs (TUNSETIFF answers EINVAL).
    #[error(
        "tap {name}: TUNSETIFF{with}: {err}; an existing tap must match num_queues: made with \
         `multi_queue` for more than one queue pair, without it for one (ip tuntap add {name} \
         mode tap vnet_hdr [multi_queue]), or use another name"
    )]
    MultiQueueMismatch {
        /// The interface.
        name: String,
        /// " with IFF_MULTI_QUEUE" or "".
        with: &'static str,
        /// The kernel's answer.
        err: io::Error,
    },
    /// Several `fd=` that are not queues of one multi-queue tap.
    #[error(
        "fd={fd}: {why}; every fd= of one device must be a queue of the same tap opened with \
         IFF_MULTI_QUEUE (libvirt does so for <driver queues='N'/>)"
    )]
    NotOneMultiQueueTap {
        /// The descriptor given.
        fd: RawFd,
        /// What is wrong with it.
        why: String,
    },
    /// No tap queue at all.
    #[error("no tap descriptor given; fd= takes one per queue pair")]
    NoQueues,
    /// `fd=` is not a tap opened as this device needs.
    #[error(
        "fd={fd}: {why}; open it with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR (libvirt does so for \
         <interface type='ethernet'>)"
    )]
    NotAVnetTap {
        /// The descriptor given.
        fd: RawFd,
        /// What is wrong with it.
        why: String,
    },
}

/// An open tap (one queue of it), non-blocking, with a [`HEADER_LEN`]-byte
/// virtio-net header on every frame and no offloads until the driver
/// accepts some.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    multi_queue: bool,
}

/// Every offload flag this device may set (what the guest's receive
/// offloads map to), most first: [`Tap::probe_offloads`] tries them in
/// this order.
const OFFLOAD_SETS: [libc::c_uint; 3] = [
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN | libc::TUN_F_UFO,
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN,
    libc::TUN_F_CSUM,
];

/// `struct ifreq` with `name` in `ifr_name`.
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (arrays, integers and a union of
    // them); all-zero is a valid value of each field.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

/// TUNGETIFF into `req`: its return value.
fn tun_get_iff(file: &File, req: &mut libc::ifreq) -> i32 {
    // SAFETY: TUNGETIFF writes one `struct ifreq` (name and flags) into
    // `req`; on a descriptor that is no tun fd the kernel answers ENOTTY
    // or EBADFD and writes nothing.
    unsafe { ioctl_with_mut_ref(file, libc::TUNGETIFF as _, req) }
}

/// The name in `req.ifr_name` (NUL-terminated by the kernel).
fn ifr_name(req: &libc::ifreq) -> String {
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| u8::from_ne_bytes(c.to_ne_bytes()))
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Whether `name` is a valid interface name (what dev_valid_name accepts,
/// with `%d` allowed: the kernel numbers it).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
}

impl Tap {
    /// Create (or attach to) the tap `name`, or one the kernel names
    /// (`tap%d`) when `None`: one queue, no IFF_MULTI_QUEUE.
    pub fn open(name: Option<&str>) -> Result<Tap, TapError> {
        Tap::open_one(name.unwrap_or("tap%d"), false)
    }

    /// `pairs` queues of the tap `name` (or one the kernel names): with
    /// more than one, each is opened with IFF_MULTI_QUEUE on the name the
    /// first one got.
    pub fn open_queues(name: Option<&str>, pairs: usize) -> Result<Vec<Tap>, TapError> {
        let multi_queue = pairs > 1;
        let first = Tap::open_one(name.unwrap_or("tap%d"), multi_queue)?;
        let name = first.name.clone();
        let mut taps = vec![first];
        for _ in 1..pairs {
            taps.push(Tap::open_one(&name, multi_queue)?);
        }
        Ok(taps)
    }

    fn open_one(name: &str, multi_queue: bool) -> Result<Tap, TapError> {
        if !valid_name(name) {
            return Err(TapError::BadName(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(TapError::OpenTun)?;
        let mut req = ifreq(name);
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        if multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        req.ifr_ifru.ifru_flags = flags as i16;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req`
        // is, on the tun fd `file` owns.
        let ret = unsafe { ioctl_with_mut_ref(&file, libc::TUNSETIFF as _, &mut req) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINVAL) && !name.contains('%') {
                return Err(TapError::MultiQueueMismatch {
                    name: name.to_string(),
                    with: if multi_queue {
                        " with IFF_MULTI_QUEUE"
                    } else {
                        ""
                    },
                    err,
                });
            }
            return Err(TapError::Ioctl {
                name: name.to_string(),
                call: "TUNSETIFF",
                err,
            });
        }
        let tap = Tap {
            file,
            name: ifr_name(&req),
            multi_queue,
        };
        tap.set_vnet_header()?;
        Ok(tap)
    }

    /// Take `fd`, a tap someone else opened (libvirt): checked with
    /// TUNGETIFF to be an IFF_TAP with IFF_NO_PI and IFF_VNET_HDR, then
    /// given this device's header size, no offloads, and made
    /// non-blocking. A queue of a multi-queue tap left detached (TUNGETIFF
    /// adds IFF_DETACH_QUEUE: a VM this VMM ran on it before had that
    /// pair disabled) is attached again, as the device expects its queues.
    pub fn from_fd(fd: OwnedFd) -> Result<Tap, TapError> {
        let raw = fd.as_raw_fd();
        let file = File::from(fd);
        let mut req = ifreq("");
        if tun_get_iff(&file, &mut req) < 0 {
            return Err(TapError::NotAVnetTap {
                fd: raw,
                why: format!("TUNGETIFF: {}", io::Error::last_os_error()),
            });
        }
        // SAFETY: TUNGETIFF filled `ifru_flags`; reading a c_short of the
        // zeroed union is valid whichever member the kernel wrote.
        let flags = i32::from(unsafe { req.ifr_ifru.ifru_flags }) & 0xffff;
        let needed = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        if flags & needed != needed {
            return Err(TapError::NotAVnetTap {
                fd: raw,
                why: format!("its flags are {flags:#x}, not all of {needed:#x}"),
            });
        }
        let tap = Tap {
            file,
            name: ifr_name(&req),
            multi_queue: flags & libc::IFF_MULTI_QUEUE != 0,
        };
        if flags & libc::IFF_DETACH_QUEUE != 0 {
            tap.set_attached(true)
                .map_err(|_| tap.failed("TUNSETQUEUE(IFF_ATTACH_QUEUE)"))?;
        }
        tap.set_vnet_header()?;
        // SAFETY: F_GETFL / F_SETFL take and return integers on the fd the
        // tap owns.
        let ret = unsafe {
            let fl = libc::fcntl(tap.file.as_raw_fd(), libc::F_GETFL);
            if fl < 0 {
                fl
            } else {
                libc::fcntl(tap.file.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK)
            }
        };
        if ret < 0 {
            return Err(tap.failed("fcntl(O_NONBLOCK)"));
        }
        Ok(tap)
    }

    /// [`Tap::from_fd`] on a duplicate of `fd`, which stays open for
    /// whoever gave it (a VM rebuilt on reset attaches to it again).
    pub fn from_borrowed_fd(fd: RawFd) -> Result<Tap, TapError> {
        // SAFETY: F_DUPFD_CLOEXEC reads no memory; on a number that is not
        // an open descriptor it fails with EBADF.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(TapError::NotAVnetTap {
                fd,
                why: format!("not an open descriptor ({})", io::Error::last_os_error()),
            });
        }
        // SAFETY: `dup` is a new descriptor nobody else owns.
        Tap::from_fd(unsafe { OwnedFd::from_raw_fd(dup) }).map_err(|e| match e {
            TapError::NotAVnetTap { why, .. } => TapError::NotAVnetTap { fd, why },
            other => other,
        })
    }

    /// Check that `taps`, given as `fds`, are the queues of one tap: all
    /// of the same interface, each opened with IFF_MULTI_QUEUE when there
    /// are several.
    pub fn check_queues(taps: &[Tap], fds: &[RawFd]) -> Result<(), TapError> {
        let Some(first) = taps.first() else {
            return Err(TapError::NoQueues);
        };
        for (tap, fd) in taps.iter().zip(fds) {
            if taps.len() > 1 && !tap.multi_queue {
                return Err(TapError::NotOneMultiQueueTap {
                    fd: *fd,
                    why: format!(
                        "tap {} was opened without IFF_MULTI_QUEUE, and {} queue pairs need it",
                        tap.name,
                        taps.len()
                    ),
                });
            }
            if tap.name != first.name {
                return Err(TapError::NotOneMultiQueueTap {
                    fd: *fd,
                    why: format!(
                        "it is tap {}, the first fd= is tap {}",
                        tap.name, first.name
                    ),
                });
            }
        }
        Ok(())
    }

    /// The interface's name, as the kernel has it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this queue was opened with IFF_MULTI_QUEUE.
    pub fn multi_queue(&self) -> bool {
        self.multi_queue
    }

    /// The TUN_F_* offloads this kernel's tap takes, of those the device
    /// may ask for ([`OFFLOAD_SETS`], tried most first: a kernel answers
    /// EINVAL to a flag it does not know); the tap is left at none.
    pub fn probe_offloads(&self) -> Result<u32, TapError> {
        let mut supported = 0;
        for flags in OFFLOAD_SETS {
            if self.set_offloads(flags).is_ok() {
                supported = flags;
                break;
            }
        }
        self.set_offloads(0)
            .map_err(|_| self.failed("TUNSETOFFLOAD"))?;
        Ok(supported)
    }

    /// TUNSETOFFLOAD: which GSO and partial-checksum frames the tap may
    /// hand the device (the offloads of the whole interface, whichever
    /// queue sets them).
    pub fn set_offloads(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its flags by value, reads no memory.
        let ret = unsafe {
            vmm_sys_util::ioctl::ioctl_with_val(
                &self.file,
                libc::TUNSETOFFLOAD as _,
                libc::c_ulong::from(flags),
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// TUNSETQUEUE: attach this queue to its tap (the kernel steers frames
    /// to it and takes its writes) or detach it.
    pub fn set_attached(&self, attached: bool) -> io::Result<()> {
        let mut req = ifreq("");
        let flag = if attached {
            libc::IFF_ATTACH_QUEUE
        } else {
            libc::IFF_DETACH_QUEUE
        };
        req.ifr_ifru.ifru_flags = flag as i16;
        // SAFETY: TUNSETQUEUE reads one `struct ifreq`, which `req` is.
        let ret = unsafe { ioctl_with_ref(&self.file, libc::TUNSETQUEUE as _, &req) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn failed(&self, call: &'static str) -> TapError {
        TapError::Ioctl {
            name: self.name.clone(),
            call,
            err: io::Error::last_os_error(),
        }
    }

    /// TUNSETVNETHDRSZ to [`HEADER_LEN`] (virtio_net_hdr_v1: VERSION_1
    /// always carries num_buffers) and TUNSETOFFLOAD to none.
    fn set_vnet_header(&self) -> Result<(), TapError> {
        let size = HEADER_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer given.
        let ret = unsafe { ioctl_with_ref(&self.file, libc::TUNSETVNETHDRSZ as _, &size) };
        if ret < 0 {
            return Err(self.failed("TUNSETVNETHDRSZ"));
        }
        self.set_offloads(0)
            .map_err(|_| self.failed("TUNSETOFFLOAD"))
    }

    /// An AF_INET datagram socket: the SIOC*IF* calls on an interface go
    /// through one (SIOCSIFADDR and SIOCSIFNETMASK only through AF_INET).
    fn inet_socket(&self) -> Result<OwnedFd, TapError> {
        // SAFETY: socket(2) takes integers and returns a new descriptor,
        // owned from here on.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(self.failed("socket(AF_INET)"));
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Bring the interface up (IFF_UP) unless it already is: a tap that is
    /// down answers every write with EIO. A tap someone else set up (fd=)
    /// is usually up already, so the VMM needs no CAP_NET_ADMIN then.
    pub fn bring_up(&self) -> Result<(), TapError> {
        let socket = self.inet_socket()?;
        let mut req = ifreq(&self.name);
        // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of one
        // `struct ifreq`, which `req` is.
        let ret = unsafe { ioctl_with_mut_ref(&socket, libc::SIOCGIFFLAGS as _, &mut req) };
        if ret < 0 {
            return Err(self.failed("SIOCGIFFLAGS"));
        }
        // SAFETY: the kernel wrote `ifru_flags` just above.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        if flags & libc::IFF_UP as i16 != 0 {
            return Ok(());
        }
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as i16;
        // SAFETY: SIOCSIFFLAGS reads one `struct ifreq`.
        let ret = unsafe { ioctl_with_ref(&socket, libc::SIOCSIFFLAGS as _, &req) };
        if ret < 0 {
            return Err(self.failed("SIOCSIFFLAGS(IFF_UP)"));
        }
        Ok(())
    }

    /// Give the host side of the tap `addr`/`netmask` (SIOCSIFADDR,
    /// SIOCSIFNETMASK), as cloud-hypervisor's `ip=` and `mask=`.
    pub fn set_ipv4(&self, addr: Ipv4Addr, netmask: Ipv4Addr) -> Result<(), TapError> {
        let socket = self.inet_socket()?;
        for (call, request, value) in [
            ("SIOCSIFADDR", libc::SIOCSIFADDR, addr),
            ("SIOCSIFNETMASK", libc::SIOCSIFNETMASK, netmask),
        ] {
            let mut req = ifreq(&self.name);
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(value).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in (16 bytes) fits the union's 16-byte
            // `sockaddr` member and both are plain old data; the kernel
            // reads the member as a sockaddr_in for AF_INET.
            unsafe {
                std::ptr::write_unaligned(
                    std::ptr::addr_of_mut!(req.ifr_ifru.ifru_addr).cast::<libc::sockaddr_in>(),
                    sin,
                );
            }
            // SAFETY: both requests read one `struct ifreq`.
            let ret = unsafe { ioctl_with_ref(&socket, request as _, &req) };
            if ret < 0 {
                return Err(self.failed(call));
            }
        }
        Ok(())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl super::FrameIo for Tap {
    fn recv_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut &self.file, buf)
    }

    fn send_frame(&self, frame: &[u8]) -> io::Result<usize> {
        io::Write::write(&mut &self.file, frame)
    }

    fn set_offloads(&self, flags: u32) -> io::Result<()> {
        Tap::set_offloads(self, flags)
    }

    fn set_attached(&self, attached: bool) -> io::Result<()> {
        Tap::set_attached(self, attached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::FrameIo;

    #[test]
    fn interface_names_follow_the_kernels_rules() {
        for good in ["vmtap0", "tap%d", "a", "fifteen-chars15"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "a:b", "sixteen-chars-16"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(matches!(
            Tap::open(Some("a/b")),
            Err(TapError::BadName(n)) if n == "a/b"
        ));
    }

    #[test]
    fn a_descriptor_that_is_no_tap_is_refused_naming_it() {
        let file = File::open("/dev/null").unwrap();
        let fd = OwnedFd::from(file);
        let raw = fd.as_raw_fd();
        let err = Tap::from_fd(fd).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!("fd={raw}: TUNGETIFF")),
            "{err}"
        );
    }

    /// A real tap: created, given an address, up, and readable through
    /// the frame interface (the host's own IPv6 router solicitations or
    /// nothing: a non-blocking read answers WouldBlock).
    #[test]
    #[ignore = "needs /dev/net/tun and CAP_NET_ADMIN"]
    fn a_tap_is_created_configured_and_attached_again_by_fd() {
        let tap = Tap::open(Some("chtest%d")).unwrap();
        assert!(tap.name().starts_with("chtest"), "{}", tap.name());
        tap.set_ipv4(
            Ipv4Addr::new(192, 168, 251, 1),
            Ipv4Addr::new(255, 255, 255, 0),
        )
        .unwrap();
        tap.bring_up().unwrap();
        let mut buf = [0u8; 2048];
        match tap.recv_frame(&mut buf) {
            Ok(n) => assert!(n >= HEADER_LEN),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
        }
        let dup = tap.file.try_clone().unwrap();
        let again = Tap::from_fd(OwnedFd::from(dup)).unwrap();
        assert_eq!(again.name(), tap.name());
    }

    /// ETHTOOL_GTSO (0x1e) or ETHTOOL_GTXCSUM (0x16) of the interface:
    /// whether the kernel may hand it TSO frames / partial checksums,
    /// which is what TUNSETOFFLOAD sets on a tap.
    fn ethtool_get(tap: &Tap, cmd: u32) -> u32 {
        let socket = tap.inet_socket().unwrap();
        let mut value = [cmd, 0u32];
        let mut req = ifreq(tap.name());
        req.ifr_ifru.ifru_data = value.as_mut_ptr().cast();
        // SAFETY: SIOCETHTOOL reads the name and `ifru_data`, then reads
        // and writes one `struct ethtool_value` (two u32) there: `value`,
        // which lives across the call.
        let ret = unsafe { ioctl_with_ref(&socket, libc::SIOCETHTOOL as _, &req) };
        assert_eq!(ret, 0, "SIOCETHTOOL: {}", io::Error::last_os_error());
        value[1]
    }

    const ETHTOOL_GTXCSUM: u32 = 0x16;
    const ETHTOOL_GTSO: u32 = 0x1e;

    /// A multi-queue tap: its queues share a name, the kernel flags it
    /// multi_queue, offloads set on it show in ethtool's view, a detached
    /// queue takes no write and is attached again when taken by fd.
    #[test]
    #[ignore = "needs /dev/net/tun and CAP_NET_ADMIN"]
    fn a_multi_queue_tap_takes_offloads_and_detaches_and_attaches_its_queues() {
        let taps = Tap::open_queues(Some("chmq%d"), 3).unwrap();
        let name = taps[0].name().to_string();
        assert!(taps.iter().all(|t| t.name() == name && t.multi_queue()));
        let flags = std::fs::read_to_string(format!("/sys/class/net/{name}/tun_flags")).unwrap();
        let flags = i32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
        assert_eq!(
            flags & libc::IFF_MULTI_QUEUE,
            libc::IFF_MULTI_QUEUE,
            "{flags:#x}"
        );
        let raw: Vec<RawFd> = taps.iter().map(AsRawFd::as_raw_fd).collect();
        Tap::check_queues(&taps, &raw).unwrap();

        let all = taps[0].probe_offloads().unwrap();
        assert_eq!(all & OFFLOAD_SETS[2], libc::TUN_F_CSUM, "{all:#x}");
        assert_eq!(
            ethtool_get(&taps[0], ETHTOOL_GTSO),
            0,
            "probing leaves none"
        );
        taps[1]
            .set_offloads(libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6)
            .unwrap();
        assert_eq!(ethtool_get(&taps[0], ETHTOOL_GTSO), 1);
        assert_eq!(ethtool_get(&taps[0], ETHTOOL_GTXCSUM), 1);
        taps[1].set_offloads(0).unwrap();
        assert_eq!(ethtool_get(&taps[0], ETHTOOL_GTSO), 0);
        assert_eq!(ethtool_get(&taps[0], ETHTOOL_GTXCSUM), 0);

        let detached = |tap: &Tap| {
            let mut req = ifreq("");
            assert_eq!(tun_get_iff(&tap.file, &mut req), 0);
            // SAFETY: TUNGETIFF wrote `ifru_flags`.
            i32::from(unsafe { req.ifr_ifru.ifru_flags }) & libc::IFF_DETACH_QUEUE != 0
        };
        assert!(!detached(&taps[2]));
        taps[2].set_attached(false).unwrap();
        assert!(detached(&taps[2]));
        assert!(taps[2].set_attached(false).is_err(), "already detached");
        // Taken by fd (a VM rebuilt over libvirt's taps): attached again.
        let again = Tap::from_borrowed_fd(taps[2].as_raw_fd()).unwrap();
        assert_eq!(again.name(), name);
        assert!(again.multi_queue());
        assert!(!detached(&taps[2]));

        // A single-queue tap is no queue of a multi-queue one.
        let single = Tap::open(Some("chsq%d")).unwrap();
        let mixed = [Tap::from_borrowed_fd(taps[0].as_raw_fd()).unwrap(), single];
        let err = Tap::check_queues(&mixed, &[7, 8]).unwrap_err().to_string();
        assert!(err.starts_with("fd=8: tap chsq"), "{err}");
        // An existing single-queue tap asked for several queues.
        let err = Tap::open_queues(Some(mixed[1].name()), 2).unwrap_err();
        assert!(matches!(err, TapError::MultiQueueMismatch { .. }), "{err}");
        assert!(err.to_string().contains("multi_queue"), "{err}");
    }
}
