//! Guest RAM: one anonymous mapping at the layout's RAM base, optionally on
//! huge pages (which a real host needs so that a VCMDQ is physically
//! contiguous, and which the kernel pins for each HW queue).

use arch::layout::Layout;
use devices::GuestMemory;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestRegionMmap};

/// Why guest RAM could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Not enough free huge pages.
    #[error(
        "hugepages=on needs {needed:#x} bytes of free huge pages but the host has {free:#x} \
         ({pages} free pages of {page_size:#x}); reserve more with \
         'echo N > /proc/sys/vm/nr_hugepages' or use hugepages=off"
    )]
    NotEnoughHugePages {
        /// Bytes of RAM requested.
        needed: u64,
        /// Bytes of free huge pages.
        free: u64,
        /// Free huge pages.
        pages: u64,
        /// Huge page size.
        page_size: u64,
    },
    /// RAM that is not whole huge pages (512 MiB each on a 64 KiB-page
    /// arm64 host).
    #[error(
        "hugepages=on needs --memory size= to be whole huge pages of {page_size:#x} bytes, but \
         it is {size:#x}; round it to a multiple of {page_size:#x} or use hugepages=off"
    )]
    NotWholeHugePages {
        /// Bytes of RAM requested.
        size: u64,
        /// Huge page size.
        page_size: u64,
    },
    /// The host has no huge page support at all.
    #[error("hugepages=on but the host reports no huge pages in /proc/meminfo; use hugepages=off")]
    NoHugePages,
    /// A zone could not be bound to its host node.
    #[error(
        "memory zone {zone}: cannot bind it to host NUMA node {node} ({reason}); \
         /sys/devices/system/node/ lists the host's nodes"
    )]
    Bind {
        /// The zone.
        zone: String,
        /// The node.
        node: u32,
        /// Why.
        reason: String,
    },
    /// The mapping failed.
    #[error("cannot map {size:#x} bytes of guest RAM: {reason}")]
    Map {
        /// Bytes requested.
        size: u64,
        /// The error.
        reason: String,
    },
}

/// Free huge pages and their size, from /proc/meminfo text.
fn huge_pages(meminfo: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    let free = field("HugePages_Free:")?;
    let size_kib = field("Hugepagesize:")?;
    Some((free, size_kib * 1024))
}

/// The host's default huge page size (/proc/meminfo `Hugepagesize`), if any.
pub fn huge_page_size() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    huge_pages(&meminfo).map(|(_, size)| size)
}

/// The size of one page backing guest RAM as [`create`] maps it: the
/// default huge page size with `hugepages` (2 MiB on a 4 KiB host, 512 MiB
/// on a 64 KiB one), the host's page size `host_page` otherwise (read once:
/// `crate::host_topology`). Only one such page is known to be physically
/// contiguous.
pub fn backing_page_size(hugepages: bool, host_page: u64) -> Result<u64, MemoryError> {
    if hugepages {
        huge_page_size().ok_or(MemoryError::NoHugePages)
    } else {
        Ok(host_page)
    }
}

fn check_huge_pages(size: u64, meminfo: &str) -> Result<(), MemoryError> {
    let (pages, page_size) = huge_pages(meminfo).ok_or(MemoryError::NoHugePages)?;
    if page_size == 0 || size % page_size != 0 {
        return Err(MemoryError::NotWholeHugePages { size, page_size });
    }
    let free = pages.saturating_mul(page_size);
    if free < size {
        return Err(MemoryError::NotEnoughHugePages {
            needed: size,
            free,
            pages,
            page_size,
        });
    }
    Ok(())
}

/// A stretch of guest RAM whose pages must come from one host NUMA node
/// (`--memory-zone host_numa_node=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostNodeBinding {
    /// The zone's id (for the error).
    pub zone: String,
    /// Offset from the start of RAM.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
    /// The host node.
    pub node: u32,
}

/// The bindings of `zones` laid out one after the other from RAM's start.
pub fn zone_bindings(zones: &[crate::config::MemoryZoneConfig]) -> Vec<HostNodeBinding> {
    let mut offset = 0;
    let mut bindings = Vec::new();
    for zone in zones {
        if let Some(node) = zone.host_numa_node {
            bindings.push(HostNodeBinding {
                zone: zone.id.clone(),
                offset,
                len: zone.size,
                node,
            });
        }
        offset += zone.size;
    }
    bindings
}

/// mbind(2) flags, defined here because the libc crate lacks them
/// (linux/mempolicy.h): fail on pages that cannot follow the policy, and
/// move pages already placed elsewhere.
const MPOL_MF_STRICT: libc::c_ulong = 1 << 0;
const MPOL_MF_MOVE: libc::c_ulong = 1 << 1;

/// Host nodes a binding can name: the mbind node mask here is one word.
const MAX_HOST_NODE: u32 = u64::BITS - 1;

/// Bind `binding`'s pages of the RAM mapping at `ram` (not touched yet) to
/// its host node, strictly: a page that cannot come from that node fails
/// the fault instead of landing elsewhere.
fn bind(ram: *mut u8, ram_len: u64, binding: &HostNodeBinding) -> Result<(), MemoryError> {
    let bad = |reason: String| MemoryError::Bind {
        zone: binding.zone.clone(),
        node: binding.node,
        reason,
    };
    if binding.node > MAX_HOST_NODE {
        return Err(bad(format!(
            "host nodes above {MAX_HOST_NODE} are not supported"
        )));
    }
    let end = binding
        .offset
        .checked_add(binding.len)
        .filter(|&e| e <= ram_len);
    let (Some(_), Ok(offset), Ok(len)) = (
        end,
        usize::try_from(binding.offset),
        usize::try_from(binding.len),
    ) else {
        return Err(bad("the zone lies outside guest RAM".into()));
    };
    let mask: [libc::c_ulong; 1] = [1 << binding.node];
    // SAFETY: [offset, offset + len) lies inside the RAM mapping `ram`
    // (checked above), which this process created and still holds; mbind
    // only sets the NUMA policy of those pages and reads `mask`, a live
    // one-word array whose bit count (64) is `maxnode - 1`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            ram.wrapping_add(offset),
            len,
            libc::MPOL_BIND,
            mask.as_ptr(),
            u64::from(u64::BITS) + 1,
            MPOL_MF_STRICT | MPOL_MF_MOVE,
        )
    };
    if rc != 0 {
        return Err(bad(std::io::Error::last_os_error().to_string()));
    }
    Ok(())
}

/// How guest RAM is backed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backing {
    /// On the host's default huge pages.
    pub hugepages: bool,
    /// A memfd mapped shared (`memory.shared`): another process given the
    /// fd (a vhost-user back-end) sees the guest's RAM. Private anonymous
    /// memory otherwise.
    pub shared: bool,
}

/// An anonymous memory file of `size` bytes for shared guest RAM.
fn ram_memfd(size: u64, hugepages: bool) -> Result<std::fs::File, std::io::Error> {
    use std::os::fd::FromRawFd;
    let mut flags = libc::MFD_CLOEXEC;
    if hugepages {
        flags |= libc::MFD_HUGETLB;
    }
    // SAFETY: the name is a NUL-terminated literal that outlives the call;
    // memfd_create takes no other pointer.
    let fd = unsafe { libc::memfd_create(c"ch-guest-ram".as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create just returned this fd and nothing else owns it.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.set_len(size)?;
    Ok(file)
}

/// Map guest RAM for `layout`, with `bindings` applied before any page is
/// touched.
pub fn create(
    layout: &Layout,
    backing: Backing,
    bindings: &[HostNodeBinding],
) -> Result<GuestMemory, MemoryError> {
    let size = layout.ram.size;
    let map_err = |reason: String| MemoryError::Map { size, reason };
    let len = usize::try_from(size).map_err(|e| map_err(e.to_string()))?;
    let mut flags = if backing.shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS
    };
    if backing.hugepages {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        check_huge_pages(size, &meminfo)?;
        if !backing.shared {
            flags |= libc::MAP_HUGETLB;
        }
    } else {
        flags |= libc::MAP_NORESERVE;
    }
    let mut builder = MmapRegionBuilder::new(len)
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(flags);
    if backing.shared {
        let file =
            ram_memfd(size, backing.hugepages).map_err(|e| map_err(format!("memfd: {e}")))?;
        builder = builder.with_file_offset(vm_memory::FileOffset::new(file, 0));
    }
    let region = builder.build().map_err(|e| map_err(e.to_string()))?;
    for binding in bindings {
        bind(region.as_ptr(), size, binding)?;
    }
    let region = GuestRegionMmap::new(region, GuestAddress(layout.ram.base))
        .ok_or_else(|| map_err("region wraps the address space".into()))?;
    GuestMemory::from_regions(vec![region]).map_err(|e| map_err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use arch::layout::Topology;
    use vm_memory::{Bytes, GuestMemoryBackend as _};

    use super::*;

    const MEMINFO: &str =
        "MemTotal: 100 kB\nHugePages_Total: 8\nHugePages_Free: 4\nHugepagesize: 2048 kB\n";

    #[test]
    fn huge_page_check_names_what_is_missing() {
        assert!(check_huge_pages(8 << 20, MEMINFO).is_ok());
        let err = check_huge_pages(16 << 20, MEMINFO).unwrap_err();
        assert!(
            err.to_string()
                .contains("needs 0x1000000 bytes of free huge pages but the host has 0x800000"),
            "{err}"
        );
        assert!(matches!(
            check_huge_pages(1, "MemTotal: 1 kB\n"),
            Err(MemoryError::NoHugePages)
        ));
    }

    #[test]
    fn huge_page_backed_ram_must_be_whole_huge_pages() {
        // A 64 KiB-page host: 512 MiB huge pages; 768 MiB is one and a half.
        let grace = "HugePages_Free: 32\nHugepagesize: 524288 kB\n";
        assert!(check_huge_pages(1 << 30, grace).is_ok());
        let err = check_huge_pages(768 << 20, grace).unwrap_err();
        assert!(
            matches!(err, MemoryError::NotWholeHugePages { size, page_size }
                if size == 768 << 20 && page_size == 512 << 20),
            "{err}"
        );
        assert!(err.to_string().contains("multiple of 0x20000000"), "{err}");
        assert!(
            check_huge_pages(768 << 20, MEMINFO).is_err(),
            "not enough free ones"
        );
        assert!(check_huge_pages(6 << 20, MEMINFO).is_ok(), "2 MiB pages");
    }

    #[test]
    fn small_pages_back_ram_with_the_hosts_page_size() {
        let host_page = crate::host_topology::host_page_size().unwrap();
        let page = backing_page_size(false, host_page).unwrap();
        assert!(page.is_power_of_two() && page >= 4 << 10, "{page:#x}");
        // What the mapping itself says: the RAM of a VM without
        // hugepages=on sits on pages of exactly this size.
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let kernel_page = smaps
            .lines()
            .find_map(|l| l.strip_prefix("KernelPageSize:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .unwrap();
        assert_eq!(page, kernel_page * 1024);
    }

    #[test]
    fn huge_pages_back_ram_with_the_meminfo_huge_page_size() {
        assert_eq!(huge_pages(MEMINFO), Some((4, 2 << 20)));
        let gigantic = "HugePages_Free: 1\nHugepagesize: 1048576 kB\n";
        assert_eq!(huge_pages(gigantic), Some((1, 1 << 30)));
        // A 64 KiB-page arm64 host's default huge page is 512 MiB.
        let grace = "HugePages_Free: 32\nHugepagesize: 524288 kB\n";
        assert_eq!(huge_pages(grace), Some((32, 512 << 20)));
        assert_eq!(backing_page_size(false, 64 << 10).unwrap(), 64 << 10);
    }

    #[test]
    fn ram_is_mapped_at_the_layout_base() {
        let layout = Layout::new(Topology {
            vcpus: 1,
            ram_size: 64 << 20,
            pci_segments: 1,
            vsmmus: 0,
        })
        .unwrap();
        let mem = create(&layout, crate::memory::Backing::default(), &[]).unwrap();
        assert_eq!(mem.last_addr(), GuestAddress(layout.ram.end() - 1));
        mem.write_obj(0xdead_beefu32, GuestAddress(layout.ram.base))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(layout.ram.base)).unwrap(),
            0xdead_beef
        );
    }

    #[test]
    fn shared_ram_is_a_memfd_mapped_shared() {
        let layout = Layout::new(Topology {
            vcpus: 1,
            ram_size: 64 << 20,
            pci_segments: 1,
            vsmmus: 0,
        })
        .unwrap();
        let backing = Backing {
            shared: true,
            ..Backing::default()
        };
        let mem = create(&layout, backing, &[]).unwrap();
        mem.write_obj(0x5a5a_u16, GuestAddress(layout.ram.base))
            .unwrap();
        let region = mem.iter().next().unwrap();
        let file = region.file_offset().expect("shared RAM has its file");
        // Another mapping of the same file sees the guest's write.
        let mut seen = [0u8; 2];
        std::os::unix::fs::FileExt::read_exact_at(file.file(), &mut seen, 0).unwrap();
        assert_eq!(u16::from_le_bytes(seen), 0x5a5a);
        let private = create(&layout, Backing::default(), &[]).unwrap();
        assert!(private.iter().next().unwrap().file_offset().is_none());
    }

    fn zone(id: &str, size: u64, node: Option<u32>) -> crate::config::MemoryZoneConfig {
        crate::config::MemoryZoneConfig {
            id: id.into(),
            size,
            hugepages: false,
            host_numa_node: node,
        }
    }

    #[test]
    fn zones_are_laid_out_in_order_and_bound_where_asked() {
        let zones = [
            zone("a", 32 << 20, Some(0)),
            zone("b", 16 << 20, None),
            zone("c", 16 << 20, Some(1)),
        ];
        let bindings = zone_bindings(&zones);
        assert_eq!(
            bindings
                .iter()
                .map(|b| (b.zone.as_str(), b.offset, b.len, b.node))
                .collect::<Vec<_>>(),
            vec![("a", 0, 32 << 20, 0), ("c", 48 << 20, 16 << 20, 1)]
        );
    }

    #[test]
    fn a_zone_binds_to_an_existing_host_node_and_not_to_a_missing_one() {
        let layout = Layout::new(Topology {
            vcpus: 1,
            ram_size: 64 << 20,
            pci_segments: 1,
            vsmmus: 0,
        })
        .unwrap();
        let missing = zone_bindings(&[zone("far", 64 << 20, Some(MAX_HOST_NODE))]);
        let err = create(&layout, crate::memory::Backing::default(), &missing).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("memory zone far: cannot bind it to host NUMA node 63 ("),
            "{err}"
        );
        let outside = [HostNodeBinding {
            zone: "big".into(),
            offset: 32 << 20,
            len: 64 << 20,
            node: 0,
        }];
        assert!(
            create(&layout, crate::memory::Backing::default(), &outside)
                .unwrap_err()
                .to_string()
                .contains("outside guest RAM")
        );
        if std::path::Path::new("/sys/devices/system/node/node0").exists() {
            let near = zone_bindings(&[zone("near", 64 << 20, Some(0))]);
            let mem = match create(&layout, crate::memory::Backing::default(), &near) {
                Ok(mem) => mem,
                // qemu-user (the aarch64 lane) does not emulate mbind.
                Err(MemoryError::Bind { reason, .. })
                    if reason == std::io::Error::from_raw_os_error(libc::ENOSYS).to_string() =>
                {
                    return;
                }
                Err(e) => panic!("{e}"),
            };
            mem.write_obj(1u64, GuestAddress(layout.ram.base)).unwrap();
            // The kernel shows the policy on the mapping.
            let maps = std::fs::read_to_string("/proc/self/numa_maps").unwrap();
            assert!(maps.lines().any(|l| l.contains("bind:0")), "{maps}");
        }
    }
}
