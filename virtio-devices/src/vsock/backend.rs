//! The data path of the virtio-vsock device: the host kernel's vhost-vsock
//! (drivers/vhost/vsock.c) behind `/dev/vhost-vsock`, driven through
//! rust-vmm's `vhost` crate (its `vhost_kern::vsock::Vsock` issues every
//! ioctl). The guest's rx and tx rings are handed to the kernel, which
//! reads and writes them in guest RAM itself, is kicked by the queues'
//! notify eventfds (KVM ioeventfds) and signals the queues' MSI-X vector
//! eventfds (KVM irqfds): no VMM thread touches a packet.
//!
//! Order, as the kernel needs it: open, VHOST_SET_OWNER, the guest CID
//! (VHOST_VSOCK_SET_GUEST_CID) when the device is built; on DRIVER_OK the
//! features, the memory table, each ring (num, addresses, base, call,
//! kick) and VHOST_VSOCK_SET_RUNNING(1); on reset SET_RUNNING(0). Closing
//! the fd (drop) frees the CID for the next VM.

use std::io;
use std::sync::Arc;

use vhost::vhost_kern::vsock::Vsock as VhostVsockFd;
use vhost::vsock::VhostVsock;
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
use vmm_sys_util::eventfd::EventFd;

use crate::GuestMemory;

/// The device vhost-vsock is reached through.
pub const VHOST_VSOCK_PATH: &str = "/dev/vhost-vsock";

/// Why vhost-vsock could not be set up or started.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// /dev/vhost-vsock is missing.
    #[error(
        "{VHOST_VSOCK_PATH} does not exist; load vhost_vsock (modprobe vhost_vsock) or build \
         the host kernel with CONFIG_VHOST_VSOCK"
    )]
    Missing,
    /// /dev/vhost-vsock could not be opened.
    #[error("cannot open {VHOST_VSOCK_PATH}: {0}; the VMM needs read and write access to it")]
    Open(io::Error),
    /// Another VM (or this host itself) has the CID.
    #[error("cid={0} is in use by another VM on this host; give each VM its own cid= (3 or more)")]
    CidInUse(u64),
    /// The host is a guest itself with this CID.
    #[error("cid={0} is this host's own CID (it is a guest itself); give another cid=")]
    CidIsLocal(u64),
    /// The kernel refused the CID otherwise.
    #[error("cid={cid}: VHOST_VSOCK_SET_GUEST_CID: {err}")]
    Cid {
        /// The CID.
        cid: u64,
        /// The kernel's answer.
        err: io::Error,
    },
    /// Another vhost call failed.
    #[error("vhost-vsock {call}: {err}")]
    Call {
        /// Which call.
        call: &'static str,
        /// What the crate or the kernel said.
        err: String,
    },
}

fn call(call: &'static str) -> impl FnOnce(vhost::Error) -> BackendError {
    move |e| BackendError::Call {
        call,
        err: e.to_string(),
    }
}

/// One ring as the driver set it up, with its eventfds.
pub struct Ring<'a> {
    /// The split virtqueue (size, addresses, next index).
    pub queue: &'a Queue,
    /// Signalled by the guest's notify writes (a KVM ioeventfd).
    pub kick: &'a EventFd,
    /// Interrupts the guest (its MSI-X vector's irqfd).
    pub call: &'a EventFd,
}

/// An open vhost-vsock instance owning the guest's CID.
pub struct Backend {
    vhost: VhostVsockFd<Arc<GuestMemory>>,
}

impl Backend {
    /// Open vhost-vsock for the guest RAM `mem` and give it `cid`.
    pub fn open(mem: Arc<GuestMemory>, cid: u64) -> Result<Self, BackendError> {
        if !std::path::Path::new(VHOST_VSOCK_PATH).exists() {
            return Err(BackendError::Missing);
        }
        let vhost = VhostVsockFd::new(mem).map_err(|e| match e {
            vhost::Error::VhostOpen(err) => BackendError::Open(err),
            other => BackendError::Call {
                call: "open",
                err: other.to_string(),
            },
        })?;
        vhost.set_owner().map_err(call("VHOST_SET_OWNER"))?;
        vhost.set_guest_cid(cid).map_err(|e| match e {
            vhost::Error::IoctlError(err) => match err.raw_os_error() {
                Some(libc::EADDRINUSE) => BackendError::CidInUse(cid),
                Some(libc::EADDRNOTAVAIL) => BackendError::CidIsLocal(cid),
                _ => BackendError::Cid { cid, err },
            },
            other => BackendError::Call {
                call: "VHOST_VSOCK_SET_GUEST_CID",
                err: other.to_string(),
            },
        })?;
        Ok(Backend { vhost })
    }

    /// The feature bits the kernel offers (VHOST_GET_FEATURES).
    pub fn features(&self) -> Result<u64, BackendError> {
        self.vhost
            .get_features()
            .map_err(call("VHOST_GET_FEATURES"))
    }

    /// Hand the kernel the negotiated features, guest RAM and `rings`
    /// (rx then tx) and start it.
    pub fn start(
        &self,
        mem: &GuestMemory,
        features: u64,
        rings: &[Ring<'_>],
    ) -> Result<(), BackendError> {
        self.vhost
            .set_features(features)
            .map_err(call("VHOST_SET_FEATURES"))?;
        self.vhost
            .set_mem_table(&memory_table(mem))
            .map_err(call("VHOST_SET_MEM_TABLE"))?;
        for (index, ring) in rings.iter().enumerate() {
            let q = ring.queue;
            self.vhost
                .set_vring_num(index, q.size())
                .map_err(call("VHOST_SET_VRING_NUM"))?;
            let config = VringConfigData {
                queue_max_size: q.max_size(),
                queue_size: q.size(),
                flags: 0,
                desc_table_addr: q.desc_table(),
                used_ring_addr: q.used_ring(),
                avail_ring_addr: q.avail_ring(),
                log_addr: None,
            };
            self.vhost
                .set_vring_addr(index, &config)
                .map_err(call("VHOST_SET_VRING_ADDR"))?;
            self.vhost
                .set_vring_base(index, q.next_avail())
                .map_err(call("VHOST_SET_VRING_BASE"))?;
            self.vhost
                .set_vring_call(index, ring.call)
                .map_err(call("VHOST_SET_VRING_CALL"))?;
            self.vhost
                .set_vring_kick(index, ring.kick)
                .map_err(call("VHOST_SET_VRING_KICK"))?;
        }
        self.vhost
            .start()
            .map_err(call("VHOST_VSOCK_SET_RUNNING(1)"))
    }

    /// Stop the kernel touching the rings (device reset).
    pub fn stop(&self) -> Result<(), BackendError> {
        self.vhost
            .stop()
            .map_err(call("VHOST_VSOCK_SET_RUNNING(0)"))
    }
}

/// Every RAM region as the kernel's memory table: guest-physical start,
/// size and where this process has it mapped.
fn memory_table(mem: &GuestMemory) -> Vec<VhostUserMemoryRegionInfo> {
    mem.iter()
        .filter_map(|region| {
            let host = region.get_host_address(MemoryRegionAddress(0)).ok()?;
            Some(VhostUserMemoryRegionInfo {
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
                mmap_offset: 0,
                mmap_handle: -1,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestAddress;

    use super::*;

    #[test]
    fn the_memory_table_lists_every_region_where_this_process_maps_it() {
        let mem = GuestMemory::from_ranges(&[
            (GuestAddress(0x4000_0000), 0x10_0000),
            (GuestAddress(0x1_0000_0000), 0x20_0000),
        ])
        .unwrap();
        let table = memory_table(&mem);
        assert_eq!(table.len(), 2);
        assert_eq!(
            (table[1].guest_phys_addr, table[1].memory_size),
            (0x1_0000_0000, 0x20_0000)
        );
        let first = mem.iter().next().unwrap();
        assert_eq!(
            table[0].userspace_addr,
            first.get_host_address(MemoryRegionAddress(0)).unwrap() as u64
        );
    }

    #[test]
    fn a_host_without_vhost_vsock_is_told_to_load_it() {
        if std::path::Path::new(VHOST_VSOCK_PATH).exists() {
            return;
        }
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let err = Backend::open(Arc::new(mem), 3).err().unwrap();
        assert!(matches!(err, BackendError::Missing));
        assert!(err.to_string().contains("modprobe vhost_vsock"), "{err}");
    }
}
