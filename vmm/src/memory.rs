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

/// Map guest RAM for `layout`.
pub fn create(layout: &Layout, hugepages: bool) -> Result<GuestMemory, MemoryError> {
    let size = layout.ram.size;
    let map_err = |reason: String| MemoryError::Map { size, reason };
    let len = usize::try_from(size).map_err(|e| map_err(e.to_string()))?;
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    if hugepages {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        check_huge_pages(size, &meminfo)?;
        flags |= libc::MAP_HUGETLB;
    } else {
        flags |= libc::MAP_NORESERVE;
    }
    let region = MmapRegionBuilder::new(len)
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(flags)
        .build()
        .map_err(|e| map_err(e.to_string()))?;
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
        let mem = create(&layout, false).unwrap();
        assert_eq!(mem.last_addr(), GuestAddress(layout.ram.end() - 1));
        mem.write_obj(0xdead_beefu32, GuestAddress(layout.ram.base))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(layout.ram.base)).unwrap(),
            0xdead_beef
        );
    }
}
