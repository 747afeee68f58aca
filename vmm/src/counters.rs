//! Live counters of a running VM, per device, for `GET /api/v1/vm.counters`
//! and the stop-time statistics. The JSON keeps cloud-hypervisor's shape,
//! an object of devices each holding an object of integer counters
//! (`{"vsmmu0": {"mmio_exits": 12, ...}, "cmdqv0": {...}}`), so its clients
//! read ours.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::device_manager::DeviceManager;

/// One vSMMUv3: its trapped command queue and its host backend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsmmuCounters {
    /// VM exits on its MMIO window.
    pub mmio_exits: u64,
    /// Commands the trapped SMMU CMDQ consumed.
    pub trapped_commands: u64,
    /// CMD_SYNCs among them.
    pub trapped_syncs: u64,
    /// Event records written into the guest's event queue.
    pub events_delivered: u64,
    /// STEs the host refused and after which it would not put the device
    /// on abort either: such a device may still DMA through its previous
    /// translation. Anything but 0 is a host problem (logged as an error).
    #[serde(default)]
    pub ste_abort_failures: u64,
    /// Host backend calls by kind, as `backend_calls.<kind>` (the kinds
    /// are the kernel calls: `invalidate` = IOMMU_HWPT_INVALIDATE,
    /// `install_ste`, `vdevice_alloc`, `hw_queue_alloc`, ...).
    #[serde(flatten)]
    pub backend_calls: BTreeMap<String, u64>,
}

/// One Tegra241 CMD-QV beside a vSMMU.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmdqvCounters {
    /// VM exits on its 0x50000 window (page0 accesses cause none while the
    /// host page0 is mapped into the guest).
    pub mmio_exits: u64,
    /// Host HW queues that exist now (the model's allocated queues).
    pub hw_queues_allocated: u64,
    /// HW queue allocations the host accepted since the VM was built
    /// (refused ones: `backend_calls.hw_queue_alloc` of the vSMMU counts
    /// every IOMMU_HW_QUEUE_ALLOC call).
    pub hw_queue_allocs: u64,
    /// HW queue frees the host accepted since the VM was built.
    pub hw_queue_frees: u64,
    /// Commands the VCMDQs executed (the emulated backend's engine; a
    /// hardware VCMDQ is not counted by anyone).
    pub vcmdq_commands: u64,
    /// CMD_SYNCs among them.
    pub vcmdq_syncs: u64,
    /// Host queue-error events mirrored into the guest's error maps.
    pub error_events_delivered: u64,
}

/// One virtio-blk disk, with cloud-hypervisor's counter names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskCounters {
    /// Bytes read from the image for the guest.
    pub read_bytes: u64,
    /// Bytes written to the image.
    pub write_bytes: u64,
    /// Read requests completed.
    pub read_ops: u64,
    /// Write requests completed.
    pub write_ops: u64,
    /// Of those and the flushes, the requests served through the disk's
    /// io_uring (0 on the synchronous path); ours, beside
    /// cloud-hypervisor's four.
    #[serde(default)]
    pub io_uring_ops: u64,
    /// Of the IN and OUT requests, those a helper thread of the
    /// synchronous path served beside the queue's worker; ours.
    #[serde(default)]
    pub helper_ops: u64,
    /// Of `helper_ops`, the OUT requests (0 on a buffered image file,
    /// whose writes stay with the worker); ours.
    #[serde(default)]
    pub helper_write_ops: u64,
}

/// One virtio-net device, with cloud-hypervisor's counter names plus
/// the frames dropped each way.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetCounters {
    /// Frame bytes delivered to the guest (virtio headers excluded).
    pub rx_bytes: u64,
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Frame bytes the guest sent (virtio headers excluded).
    pub tx_bytes: u64,
    /// Frames the guest sent.
    pub tx_frames: u64,
    /// Frames for the guest dropped (no room in its buffer, a bad buffer).
    pub rx_dropped: u64,
    /// Guest frames dropped (a malformed chain, refused by the tap).
    pub tx_dropped: u64,
}

/// Any other device window: only its exits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioCounters {
    /// VM exits on its MMIO window(s).
    pub mmio_exits: u64,
}

/// The VMM's own: log lines a guest caused that the rate limit left out
/// (`devices::guest_log`; since the VMM started, not per VM).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestLogCounters {
    /// Lines left out, every call site together.
    pub dropped_lines: u64,
}

/// The counters of one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DeviceCounters {
    /// A vSMMUv3.
    Vsmmu(VsmmuCounters),
    /// A CMD-QV.
    Cmdqv(CmdqvCounters),
    /// A virtio-blk disk, by its id.
    Disk(DiskCounters),
    /// A virtio-net device, by its id.
    Net(NetCounters),
    /// The console, the ECAM windows.
    Mmio(MmioCounters),
    /// The rate limit of guest-caused log lines (`guest_log`).
    GuestLog(GuestLogCounters),
}

/// Every device's counters, by device name (`vsmmu0`, `cmdqv0`, `uart`,
/// `pci-ecam`, `unclaimed` for accesses no device answered, `guest_log`,
/// each virtio disk's and net device's id).
pub type VmCounters = BTreeMap<String, DeviceCounters>;

/// Prefix of the per-kind backend call counters.
const BACKEND_CALLS: &str = "backend_calls.";

/// Read every counter of `devices` now.
pub fn collect(devices: &DeviceManager) -> VmCounters {
    let mut all = VmCounters::new();
    let (windows, unclaimed) = devices.bus.exit_counts();
    for (name, exits) in windows {
        if name == "smmuv3" || name == "cmdqv" {
            continue;
        }
        let entry = all
            .entry(name.to_string())
            .or_insert(DeviceCounters::Mmio(MmioCounters::default()));
        if let DeviceCounters::Mmio(m) = entry {
            m.mmio_exits += exits;
        }
    }
    all.insert(
        "unclaimed".into(),
        DeviceCounters::Mmio(MmioCounters {
            mmio_exits: unclaimed,
        }),
    );
    all.insert(
        "guest_log".into(),
        DeviceCounters::GuestLog(GuestLogCounters {
            dropped_lines: devices::guest_log::dropped(),
        }),
    );
    for v in &devices.vsmmus {
        let index = v.description.index;
        let calls = v.backend.call_counts();
        let count = |key: &str| calls.get(key).copied().unwrap_or(0);
        let (cmdq, events, ste_abort_failures) = {
            let smmu = devices::lock_unpoisoned(&v.smmu);
            (
                smmu.cmdq_stats(),
                smmu.events_delivered(),
                smmu.abort_fallback_failures(),
            )
        };
        let backend_calls = calls
            .iter()
            .filter(|(kind, _)| !kind.contains(':'))
            .map(|(kind, n)| (format!("{BACKEND_CALLS}{kind}"), *n))
            .collect();
        all.insert(
            format!("vsmmu{index}"),
            DeviceCounters::Vsmmu(VsmmuCounters {
                mmio_exits: devices.bus.exits_in(v.description.layout.smmu),
                trapped_commands: cmdq.commands,
                trapped_syncs: cmdq.syncs,
                events_delivered: events,
                ste_abort_failures,
                backend_calls,
            }),
        );
        if let Some(cmdqv) = &v.cmdqv {
            // From the model, not the backend's ioctl counts: those include
            // refused allocations, and the iommufd backend counts no frees.
            let (held, allocs, frees, errors) = {
                let model = devices::lock_unpoisoned(cmdqv);
                let (held, allocs, frees) = model.hw_queue_stats();
                (held, allocs, frees, model.error_events_delivered())
            };
            all.insert(
                format!("cmdqv{index}"),
                DeviceCounters::Cmdqv(CmdqvCounters {
                    mmio_exits: devices.bus.exits_in(v.description.layout.cmdqv),
                    hw_queues_allocated: held,
                    hw_queue_allocs: allocs,
                    hw_queue_frees: frees,
                    vcmdq_commands: count("vcmdq_exec"),
                    vcmdq_syncs: count("vcmdq_exec:CMD_SYNC"),
                    error_events_delivered: errors,
                }),
            );
        }
    }
    for (id, disk) in &devices.disks {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        all.insert(
            id.clone(),
            DeviceCounters::Disk(DiskCounters {
                read_bytes: load(&disk.read_bytes),
                write_bytes: load(&disk.write_bytes),
                read_ops: load(&disk.read_ops),
                write_ops: load(&disk.write_ops),
                io_uring_ops: load(&disk.uring_ops),
                helper_ops: load(&disk.helper_ops),
                helper_write_ops: load(&disk.helper_write_ops),
            }),
        );
    }
    for (id, net) in &devices.nets {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        all.insert(
            id.clone(),
            DeviceCounters::Net(NetCounters {
                rx_bytes: load(&net.rx_bytes),
                rx_frames: load(&net.rx_frames),
                tx_bytes: load(&net.tx_bytes),
                tx_frames: load(&net.tx_frames),
                rx_dropped: load(&net.rx_dropped),
                tx_dropped: load(&net.tx_dropped),
            }),
        );
    }
    all
}

/// Every device's counters as `vm:counters` events (one per device).
pub fn events(counters: &VmCounters) -> Vec<crate::events::Event> {
    counters
        .iter()
        .map(|(device, values)| crate::events::Event::VmCounters {
            device: device.clone(),
            counters: serde_json::to_value(values)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(name, value)| Some((name, value.as_u64()?)))
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_an_object_of_integer_objects() {
        let mut counters = VmCounters::new();
        counters.insert(
            "vsmmu0".into(),
            DeviceCounters::Vsmmu(VsmmuCounters {
                mmio_exits: 3,
                backend_calls: [("backend_calls.invalidate".to_string(), 7)].into(),
                ..VsmmuCounters::default()
            }),
        );
        counters.insert(
            "uart".into(),
            DeviceCounters::Mmio(MmioCounters { mmio_exits: 1 }),
        );
        let json = serde_json::to_value(&counters).unwrap();
        for device in json.as_object().unwrap().values() {
            assert!(
                device.as_object().unwrap().values().all(|v| v.is_u64()),
                "{json}"
            );
        }
        assert_eq!(json["vsmmu0"]["backend_calls.invalidate"], 7);
        assert_eq!(json["uart"]["mmio_exits"], 1);
        let events = events(&counters);
        assert_eq!(events.len(), 2);
        let events = &events;
        let crate::events::Event::VmCounters { device, counters } = &events[1] else {
            panic!("{events:?}");
        };
        assert_eq!(device, "vsmmu0");
        assert_eq!(counters["backend_calls.invalidate"], 7);
        assert_eq!(counters["mmio_exits"], 3);
    }

    #[test]
    fn a_disk_shows_cloud_hypervisors_four_counters_and_its_io_uring_ops_and_reads_back() {
        let mut counters = VmCounters::new();
        let disk = DiskCounters {
            read_bytes: 4096,
            write_bytes: 512,
            read_ops: 2,
            write_ops: 1,
            io_uring_ops: 3,
            helper_ops: 2,
            helper_write_ops: 1,
        };
        counters.insert("root".into(), DeviceCounters::Disk(disk.clone()));
        let json = serde_json::to_value(&counters).unwrap();
        assert_eq!(
            json["root"],
            serde_json::json!({"read_bytes": 4096, "write_bytes": 512, "read_ops": 2, "write_ops": 1, "io_uring_ops": 3, "helper_ops": 2, "helper_write_ops": 1})
        );
        // cloud-hypervisor's four alone still read as a disk.
        let upstream =
            serde_json::json!({"read_bytes": 1, "write_bytes": 2, "read_ops": 3, "write_ops": 4});
        assert!(matches!(
            serde_json::from_value::<DeviceCounters>(upstream).unwrap(),
            DeviceCounters::Disk(DiskCounters {
                io_uring_ops: 0,
                helper_ops: 0,
                helper_write_ops: 0,
                ..
            })
        ));
        let back: VmCounters = serde_json::from_value(json).unwrap();
        assert_eq!(back["root"], DeviceCounters::Disk(disk));
    }

    #[test]
    fn a_net_device_shows_cloud_hypervisors_counters_and_reads_back_as_net() {
        let mut counters = VmCounters::new();
        let net = NetCounters {
            rx_bytes: 1500,
            rx_frames: 1,
            tx_bytes: 60,
            tx_frames: 1,
            rx_dropped: 0,
            tx_dropped: 2,
        };
        counters.insert("eth0".into(), DeviceCounters::Net(net.clone()));
        let json = serde_json::to_value(&counters).unwrap();
        assert_eq!(
            json["eth0"],
            serde_json::json!({"rx_bytes": 1500, "rx_frames": 1, "tx_bytes": 60, "tx_frames": 1,
                               "rx_dropped": 0, "tx_dropped": 2})
        );
        let back: VmCounters = serde_json::from_value(json).unwrap();
        assert_eq!(back["eth0"], DeviceCounters::Net(net));
        let events = events(&counters);
        let crate::events::Event::VmCounters { device, counters } = &events[0] else {
            panic!("{events:?}");
        };
        assert_eq!(device, "eth0");
        assert_eq!(counters["tx_bytes"], 60);
    }
}
