//! The VM's virtio functions, from `--disk`, `--console`, `--rng`,
//! `--net` and `--vsock` to devices of the `virtio-devices` crate on the
//! PCI transport: images opened and locked, the console's sink and input
//! chosen, taps opened and configured, vhost-vsock opened with the guest's
//! CID and the hybrid vsock socket listening, each function wired to the
//! VM's MSI router (irqfds) and ioeventfd registrar (KVM).
//!
//! Virtio functions are never behind a vSMMU: they read guest-physical
//! addresses, and the IORT maps their RIDs straight to the ITS.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::Arc;

use devices::mapping::Sentence;
use pci::PciDevice;
use pci::vfio::MsiRouter;
use virtio_devices::block::{
    Block, BlockCounters, BlockParams, DiskImage, ImageError, ImageFormat,
};
use virtio_devices::console::Console;
use virtio_devices::net::{Net, NetCounters, NetParams, Tap, TapError};
use virtio_devices::rng::Rng;
use virtio_devices::transport::TransportWiring;
use virtio_devices::vsock::{ProxyError, Vsock, VsockError};
use virtio_devices::{NotifyRegistrar, VirtioDevice, VirtioPciDevice};

use crate::config::{ConsoleConfig, DiskConfig, ImageType, NetConfig, RngConfig, VsockConfig};
use crate::description::{PlacedDevice, VmDescription};

/// Why a virtio function could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    /// The image cannot be used (missing, locked, empty).
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The console's sink or input cannot be opened.
    #[error("--console: {what}: {cause}")]
    Console {
        /// What was opened.
        what: String,
        /// The host's error.
        cause: std::io::Error,
    },
    /// The entropy source cannot be opened.
    #[error("--rng src={}: {cause}; give a readable entropy source such as /dev/urandom", path.display())]
    Rng {
        /// The source.
        path: std::path::PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The tap cannot be opened or configured.
    #[error("--net id={id}: {err}")]
    Net {
        /// Device id.
        id: String,
        /// What failed.
        err: TapError,
    },
    /// vhost-vsock or the hybrid socket cannot be set up.
    #[error("--vsock id={id}: {err}")]
    Vsock {
        /// Device id.
        id: String,
        /// What failed.
        err: VsockError,
    },
    /// The PCI transport could not be set up.
    #[error("virtio device {id}: {}", Sentence(cause))]
    Transport {
        /// Device id.
        id: String,
        /// What failed.
        cause: virtio_devices::TransportError,
    },
    /// The device's queue workers could not be started.
    #[error("virtio device {id}: its queue workers: {cause}")]
    Workers {
        /// Device id.
        id: String,
        /// The host's error.
        cause: std::io::Error,
    },
    /// The description names a `--disk` / `--net` entry the config lacks
    /// (the two are built from one another: a bug, not an input error).
    #[error("virtio device {id}: no such {option} entry {index}")]
    NoConfig {
        /// Device id.
        id: String,
        /// The option.
        option: &'static str,
        /// Its index in the config.
        index: usize,
    },
}

/// Open and lock every disk image of `config` once, and close them again:
/// `vm.create` and the command line refuse a missing, empty or locked
/// image before anything else of the VM exists.
pub fn check_images(config: &crate::config::VmConfig) -> Result<(), VirtioError> {
    for disk in &config.disks {
        open_image(disk)?;
    }
    Ok(())
}

/// What the vsock needs from the file system, checked when the VM is
/// defined (`vm.create`, `vm.add-vsock`, the command line) so that a
/// client learns it before `vm.boot`: the socket path free and its
/// directory there. vhost-vsock itself (the device node, the CID) is
/// checked when the device is built at boot, as upstream creates it then.
pub fn check_vsock(config: Option<&VsockConfig>) -> Result<(), VirtioError> {
    let Some(vsock) = config else {
        return Ok(());
    };
    let failed = |err: VsockError| VirtioError::Vsock {
        id: vsock.id.clone(),
        err,
    };
    let path = vsock.socket.as_path();
    if path.symlink_metadata().is_ok() {
        return Err(failed(ProxyError::PathExists(path.to_path_buf()).into()));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        return Err(failed(
            ProxyError::Bind {
                path: path.to_path_buf(),
                err: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} is not a directory", dir.display()),
                ),
            }
            .into(),
        ));
    }
    Ok(())
}

/// What the VM's virtio functions need from it.
pub struct VirtioWiring {
    /// GSI routes and irqfds (the VM's, as VFIO functions use).
    pub router: Arc<dyn MsiRouter>,
    /// KVM ioeventfds.
    pub notify: Arc<dyn NotifyRegistrar>,
    /// The console's pty (mode Pty), opened when the VM was defined and
    /// kept across its boots, so that `vm.info` can name it.
    pub console_pty: Option<Arc<crate::pty::Pty>>,
}

/// The virtio-blk function of `device` (a `--disk`), with its I/O
/// counters.
pub fn block(
    vm: &VmDescription,
    device: &PlacedDevice,
    mem: &devices::GuestMemory,
    wiring: &VirtioWiring,
) -> Result<(Box<dyn PciDevice>, Arc<BlockCounters>), VirtioError> {
    let config = vm
        .config
        .disks
        .get(device.config_index)
        .ok_or_else(|| no_config(device, "--disk"))?;
    let block = block_model(config).map_err(|e| match e {
        BlockError::Image(e) => VirtioError::Image(e),
        BlockError::Io(cause) => VirtioError::Workers {
            id: device.id.clone(),
            cause,
        },
    })?;
    let counters = block.counters();
    Ok((
        on_transport(device, mem, wiring, Box::new(block))?,
        counters,
    ))
}

/// The virtio-console function (`--console`).
pub fn console(
    vm: &VmDescription,
    device: &PlacedDevice,
    mem: &devices::GuestMemory,
    wiring: &VirtioWiring,
) -> Result<Box<dyn PciDevice>, VirtioError> {
    let model = console_model(&vm.config.console, wiring.console_pty.as_deref())?;
    on_transport(device, mem, wiring, Box::new(model))
}

/// The virtio-rng function (`--rng`).
pub fn rng(
    vm: &VmDescription,
    device: &PlacedDevice,
    mem: &devices::GuestMemory,
    wiring: &VirtioWiring,
) -> Result<Box<dyn PciDevice>, VirtioError> {
    let model = rng_model(vm.config.rng.as_ref(), &device.id)?;
    on_transport(device, mem, wiring, Box::new(model))
}

/// The virtio-net function of `device` (a `--net`), with its traffic
/// counters.
pub fn net(
    vm: &VmDescription,
    device: &PlacedDevice,
    mem: &devices::GuestMemory,
    wiring: &VirtioWiring,
) -> Result<(Box<dyn PciDevice>, Arc<NetCounters>), VirtioError> {
    let config = vm
        .config
        .net
        .get(device.config_index)
        .ok_or_else(|| no_config(device, "--net"))?;
    let model = net_model(config)?;
    let counters = model.counters();
    Ok((
        on_transport(device, mem, wiring, Box::new(model))?,
        counters,
    ))
}

/// The virtio-vsock function (`--vsock`): vhost-vsock opened with the
/// guest's CID, the hybrid socket listening.
pub fn vsock(
    vm: &VmDescription,
    device: &PlacedDevice,
    mem: &devices::GuestMemory,
    wiring: &VirtioWiring,
) -> Result<Box<dyn PciDevice>, VirtioError> {
    let config = vm
        .config
        .vsock
        .as_ref()
        .ok_or_else(|| no_config(device, "--vsock"))?;
    let model = Vsock::new(config.id.clone(), config.cid, &config.socket, mem).map_err(|e| {
        VirtioError::Vsock {
            id: config.id.clone(),
            err: e,
        }
    })?;
    on_transport(device, mem, wiring, Box::new(model))
}

/// The description names a config entry of `option` that is not there.
fn no_config(device: &PlacedDevice, option: &'static str) -> VirtioError {
    VirtioError::NoConfig {
        id: device.id.clone(),
        option,
        index: device.config_index,
    }
}

/// `model` as a PCI function at `device`'s place, wired to the VM's MSI
/// routes and ioeventfds.
fn on_transport(
    device: &PlacedDevice,
    mem: &devices::GuestMemory,
    wiring: &VirtioWiring,
    model: Box<dyn VirtioDevice>,
) -> Result<Box<dyn PciDevice>, VirtioError> {
    let transport = TransportWiring {
        name: device.id.clone(),
        devid: arch::layout::pci_its_device_id(device.segment, device.bdf.rid()),
        router: wiring.router.clone(),
        notify: wiring.notify.clone(),
        mem: mem.clone(),
    };
    let function =
        VirtioPciDevice::new(model, transport).map_err(|cause| VirtioError::Transport {
            id: device.id.clone(),
            cause,
        })?;
    log::info!(
        target: "vmm",
        "virtio {} at {:04x}:{} (not behind a vSMMU)",
        device.id, device.segment, device.bdf
    );
    Ok(Box::new(function))
}

/// Open `disk`'s image in the format it names (detected when none).
fn open_image(disk: &DiskConfig) -> Result<DiskImage, ImageError> {
    let format = disk.image_type.map(|t| match t {
        ImageType::Raw => ImageFormat::Raw,
        ImageType::Qcow2 => ImageFormat::Qcow2,
    });
    DiskImage::open(&disk.path, disk.readonly, disk.direct, format)
}

enum BlockError {
    Image(ImageError),
    Io(std::io::Error),
}

fn block_model(config: &DiskConfig) -> Result<Block, BlockError> {
    let image = open_image(config).map_err(BlockError::Image)?;
    log::info!(
        target: "vmm",
        "disk {}: {} ({:?}, {} sectors{}{})",
        config.id, config.path.display(), image.format(), image.sectors(),
        if config.readonly { ", read-only" } else { "" },
        if config.direct { ", O_DIRECT" } else { "" }
    );
    let params = BlockParams {
        id: config.id.clone(),
        readonly: config.readonly,
        num_queues: config.num_queues,
        queue_size: config.queue_size,
        serial: config.serial.clone().unwrap_or_else(|| config.id.clone()),
        io_uring: !config.disable_io_uring,
        helper_threads: None,
    };
    let block = Block::new(image, params).map_err(BlockError::Io)?;
    log::info!(target: "vmm", "disk {}: {}", config.id, block.io_engine());
    Ok(block)
}

/// Open (or take) the tap queues of `config` (one per queue pair), give
/// its host side the address asked for, bring it up, find the offloads it
/// takes, and build the device over it.
fn net_model(config: &NetConfig) -> Result<Net, VirtioError> {
    let failed = |err: TapError| VirtioError::Net {
        id: config.id.clone(),
        err,
    };
    let taps = match config.fds.as_deref() {
        Some(fds) => {
            let taps = fds
                .iter()
                .map(|fd| Tap::from_borrowed_fd(*fd))
                .collect::<Result<Vec<_>, _>>()
                .map_err(failed)?;
            Tap::check_queues(&taps, fds).map_err(failed)?;
            taps
        }
        None => Tap::open_queues(config.tap.as_deref(), config.pairs()).map_err(failed)?,
    };
    let Some(tap) = taps.first() else {
        return Err(failed(TapError::NoQueues));
    };
    if let Some(ip) = config.ip {
        let mask = config.mask.unwrap_or(crate::config::net::DEFAULT_MASK);
        tap.set_ipv4(ip, mask).map_err(failed)?;
    }
    tap.bring_up().map_err(failed)?;
    let host_offloads = tap.probe_offloads().map_err(failed)?;
    let mac = config.mac_addr();
    log::info!(
        target: "vmm",
        "net {}: tap {} ({} queue pair{}, offloads {host_offloads:#x}), guest mac {mac}{}",
        config.id, tap.name(), taps.len(), if taps.len() == 1 { "" } else { "s" },
        config.ip.map(|ip| format!(", host {ip}")).unwrap_or_default()
    );
    let params = NetParams {
        id: config.id.clone(),
        mac,
        queue_size: config.queue_size,
        offloads: config.offloads(),
        host_offloads,
    };
    Net::new(taps, params).map_err(|cause| VirtioError::Workers {
        id: config.id.clone(),
        cause,
    })
}

/// The virtio-rng over its entropy source.
fn rng_model(config: Option<&RngConfig>, id: &str) -> Result<Rng, VirtioError> {
    let path = config.map_or_else(
        || std::path::PathBuf::from(crate::config::virtio::DEFAULT_RNG_SOURCE),
        |c| c.src.clone(),
    );
    let failed = |cause: std::io::Error| VirtioError::Rng {
        path: path.clone(),
        cause,
    };
    let source = File::open(&path).map_err(failed)?;
    Rng::new(id.to_string(), source).map_err(failed)
}

/// The console's output sink and input for `mode`; mode Pty uses `pty`
/// (the VM's), or a pty of its own when there is none.
fn console_model(
    mode: &ConsoleConfig,
    pty: Option<&crate::pty::Pty>,
) -> Result<Console, VirtioError> {
    let failed = |what: &str, cause: std::io::Error| VirtioError::Console {
        what: what.to_string(),
        cause,
    };
    let (output, input): (Box<dyn Write + Send>, Option<File>) = match mode {
        ConsoleConfig::Tty => {
            let stdin = std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| failed("stdin", e))?;
            (Box::new(std::io::stdout()), Some(File::from(stdin)))
        }
        ConsoleConfig::File(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| failed(&format!("file={}", path.display()), e))?;
            (Box::new(file), None)
        }
        ConsoleConfig::Pty => {
            let own;
            let pty = match pty {
                Some(pty) => pty,
                None => {
                    own = crate::pty::Pty::open().map_err(|e| failed("pty", e))?;
                    &own
                }
            };
            log::info!(target: "vmm", "virtio-console pty: {}", pty.path().display());
            let writer = pty.writer().map_err(|e| failed("pty", e))?;
            let input = pty.input().map_err(|e| failed("pty", e))?;
            (Box::new(writer), Some(input))
        }
        ConsoleConfig::Null | ConsoleConfig::Off => (Box::new(std::io::sink()), None),
    };
    Console::new(crate::description::CONSOLE_ID.into(), output, input)
        .map_err(|e| failed("eventfd", e))
}

/// A real guest driver's first write, by hand, for the tests here and the
/// seccomp tests: program the common configuration, lay out one split
/// virtqueue in guest RAM, post an OUT of one sector, notify (trapped),
/// wait for the used ring.
#[cfg(test)]
pub(crate) mod test_support {
    use std::time::{Duration, Instant};

    use pci::vfio::MsiError;
    use pci::vfio::caps::MsiMessage;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
    use vmm_sys_util::eventfd::EventFd;

    use super::*;

    /// Routes nothing, refuses nothing.
    pub struct NullRouter;

    impl MsiRouter for NullRouter {
        fn allocate_gsi(&self) -> Option<u32> {
            Some(0)
        }
        fn set_msi_route(&self, _: u32, _: MsiMessage, _: u32) -> Result<(), MsiError> {
            Ok(())
        }
        fn free_gsi(&self, _: u32) {}
        fn irqfd(&self, _: &EventFd, _: u32, _: bool) -> Result<(), MsiError> {
            Ok(())
        }
    }

    /// No ioeventfds: notifications trap.
    pub struct NoIoeventfd;

    impl NotifyRegistrar for NoIoeventfd {
        fn register(&self, _: u64, _: &EventFd) -> std::io::Result<()> {
            Err(std::io::Error::other("no KVM"))
        }
        fn unregister(&self, _: u64, _: &EventFd) -> std::io::Result<()> {
            Err(std::io::Error::other("no KVM"))
        }
    }

    /// Wiring with the two above.
    pub fn wiring() -> VirtioWiring {
        VirtioWiring {
            router: Arc::new(NullRouter),
            notify: Arc::new(NoIoeventfd),
            console_pty: None,
        }
    }

    fn write(f: &mut dyn PciDevice, offset: u64, value: u64, len: usize) {
        f.bar_write(0, offset, &value.to_le_bytes()[..len]);
    }

    /// A driver's start: ACKNOWLEDGE | DRIVER, the feature words `low`
    /// and `high` (select 0 then 1), FEATURES_OK, queue `queue` (8
    /// entries) at `desc`/`avail`/`used` enabled, DRIVER_OK.
    fn start(f: &mut dyn PciDevice, low: u64, high: u64, queue: u64, rings: [u64; 3]) {
        write(f, 0x14, 3, 1);
        write(f, 0x08, 0, 4);
        write(f, 0x0c, low, 4);
        write(f, 0x08, 1, 4);
        write(f, 0x0c, high, 4);
        write(f, 0x14, 0xb, 1);
        write(f, 0x16, queue, 2);
        write(f, 0x18, 8, 2);
        write(f, 0x20, rings[0], 8);
        write(f, 0x28, rings[1], 8);
        write(f, 0x30, rings[2], 8);
        write(f, 0x1c, 1, 2);
        write(f, 0x14, 0xf, 1);
    }

    /// One chain of `(addr, len, flags, next)` descriptors at `desc`, made
    /// available as avail entry 0; the addresses are offsets from `base`.
    fn post(
        mem: &devices::GuestMemory,
        base: u64,
        (desc, avail): (u64, u64),
        chain: &[(u64, u32, u16, u16)],
    ) {
        for (i, (addr, len, flags, next)) in chain.iter().enumerate() {
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&(base + addr).to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..].copy_from_slice(&next.to_le_bytes());
            mem.write_slice(&d, GuestAddress(base + desc + 16 * i as u64))
                .unwrap();
        }
        mem.write_obj(0u16, GuestAddress(base + avail + 4)).unwrap();
        mem.write_obj(1u16, GuestAddress(base + avail + 2)).unwrap();
    }

    /// Drive `f` (a virtio-blk function) like a driver: write `byte` over
    /// sector `sector`; the status byte the device answered.
    pub fn write_sector(
        f: &mut dyn PciDevice,
        mem: &devices::GuestMemory,
        sector: u64,
        byte: u8,
    ) -> u8 {
        sector_request(f, mem, sector, Some(byte)).0
    }

    /// The same with a read of sector `sector`: the status byte and the
    /// 512 bytes the device put in the guest's buffer.
    pub fn read_sector(
        f: &mut dyn PciDevice,
        mem: &devices::GuestMemory,
        sector: u64,
    ) -> (u8, [u8; 512]) {
        sector_request(f, mem, sector, None)
    }

    /// One request on queue 0 of a freshly started `f`: OUT of 512 bytes of
    /// `out`'s byte, or IN when `None`; the status and the data buffer.
    fn sector_request(
        f: &mut dyn PciDevice,
        mem: &devices::GuestMemory,
        sector: u64,
        out: Option<u8>,
    ) -> (u8, [u8; 512]) {
        let base = mem.iter().next().map(|r| r.start_addr().0).unwrap_or(0);
        let at = |o: u64| GuestAddress(base + o);
        let (desc, avail, used, header, data, status) =
            (0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0x6000);
        // VERSION_1 only, queue 0.
        start(f, 0, 1, 0, [base + desc, base + avail, base + used]);
        let mut h = [0u8; 16];
        // VIRTIO_BLK_T_OUT (1) or VIRTIO_BLK_T_IN (0).
        h[..4].copy_from_slice(&u32::from(out.is_some()).to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, at(header)).unwrap();
        mem.write_slice(&[out.unwrap_or(0); 512], at(data)).unwrap();
        mem.write_obj(0xffu8, at(status)).unwrap();
        // (addr, len, flags NEXT=1 WRITE=2, next): the device writes the
        // data buffer of an IN.
        let data_flags = if out.is_some() { 1 } else { 3 };
        let chain = [
            (header, 16u32, 1u16, 1u16),
            (data, 512, data_flags, 2),
            (status, 1, 2, 0),
        ];
        post(mem, base, (desc, avail), &chain);
        write(f, 0x3000, 0, 2);
        let deadline = Instant::now() + Duration::from_secs(5);
        while mem.read_obj::<u16>(at(used + 2)).unwrap() != 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut back = [0u8; 512];
        mem.read_slice(&mut back, at(data)).unwrap();
        (mem.read_obj(at(status)).unwrap(), back)
    }

    /// Drive `f` (a virtio-net function with two queue pairs) like
    /// Linux's driver on its control queue (queue 4): features VERSION_1,
    /// MQ, CTRL_VQ and GUEST_CSUM accepted, DRIVER_OK (the tap's offloads
    /// set), VQ_PAIRS_SET 2 (pair 1 attached by the control queue's
    /// worker), reset (offloads cleared), DRIVER_OK again (pair 1
    /// detached). The status byte VQ_PAIRS_SET got.
    pub fn net_pairs_set(f: &mut dyn PciDevice, mem: &devices::GuestMemory) -> u8 {
        let base = mem.iter().next().map(|r| r.start_addr().0).unwrap_or(0);
        let at = |o: u64| GuestAddress(base + o);
        let (desc, avail, used, command, status) = (0x1000, 0x2000, 0x3000, 0x4000, 0x5000);
        // Features GUEST_CSUM (1), CTRL_VQ (17), MQ (22); VERSION_1 (32);
        // the control queue.
        let rings = [base + desc, base + avail, base + used];
        let low = (1 << 1) | (1 << 17) | (1 << 22);
        start(f, low, 1, 4, rings);
        mem.write_slice(&[4, 0, 2, 0], at(command)).unwrap();
        mem.write_obj(0xffu8, at(status)).unwrap();
        post(
            mem,
            base,
            (desc, avail),
            &[(command, 4, 1, 1), (status, 1, 2, 0)],
        );
        // Queue 4's notify address: queue_notify_off 4, multiplier 4.
        write(f, 0x3000 + 16, 4, 2);
        let deadline = Instant::now() + Duration::from_secs(5);
        while mem.read_obj::<u16>(at(used + 2)).unwrap() != 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let answer = mem.read_obj(at(status)).unwrap();
        write(f, 0x14, 0, 1);
        mem.write_slice(&[0u8; 16], at(avail)).unwrap();
        mem.write_slice(&[0u8; 16], at(used)).unwrap();
        start(f, low, 1, 4, rings);
        answer
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use vm_memory::GuestAddress;
    use vmm_sys_util::tempfile::TempFile;

    use super::*;
    use crate::config::{DiskConfig, VmConfig};
    use crate::description::DeviceKind;

    fn vm(disks: &[String], console: ConsoleConfig) -> VmDescription {
        let config = VmConfig {
            disks: disks
                .iter()
                .enumerate()
                .map(|(i, d)| DiskConfig::parse(d, i).unwrap())
                .collect(),
            console,
            ..VmConfig::default()
        };
        let host = crate::host_topology::HostTopology::emulated(&config, 4 << 10);
        VmDescription::new(config, &host, 16).unwrap()
    }

    fn memory() -> devices::GuestMemory {
        devices::GuestMemory::from_ranges(&[(GuestAddress(0x4000_0000), 0x10_0000)]).unwrap()
    }

    fn image() -> TempFile {
        let file = TempFile::new().unwrap();
        file.as_file().set_len(8 * 512).unwrap();
        file
    }

    #[test]
    fn a_disk_function_writes_its_image_through_the_transport() {
        let img = image();
        let vm = vm(
            &[format!("path={}", img.as_path().display())],
            ConsoleConfig::Off,
        );
        let mem = memory();
        let (mut function, counters) =
            block(&vm, &vm.devices[0], &mem, &test_support::wiring()).unwrap();
        let status = test_support::write_sector(&mut *function, &mem, 2, 0x77);
        assert_eq!(status, 0);
        let mut back = [0u8; 512];
        img.as_file().read_exact_at(&mut back, 1024).unwrap();
        assert_eq!(back, [0x77; 512]);
        assert_eq!(
            counters
                .write_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            512
        );
    }

    #[test]
    fn virtio_functions_follow_the_others_and_sit_behind_no_vsmmu() {
        let img = image();
        let vm = vm(
            &[format!("path={},id=root", img.as_path().display())],
            ConsoleConfig::Null,
        );
        let placed: Vec<_> = vm
            .devices
            .iter()
            .map(|d| (d.kind, d.id.as_str(), d.bdf.rid(), d.vsmmu))
            .collect();
        assert_eq!(
            placed,
            [
                (DeviceKind::VirtioBlock, "root", 0x08, None),
                (DeviceKind::VirtioConsole, "_console", 0x10, None),
            ]
        );
        assert!(console(&vm, &vm.devices[1], &memory(), &test_support::wiring()).is_ok());
    }

    #[test]
    fn a_vsock_sits_behind_no_vsmmu_and_is_refused_on_a_host_without_vhost_vsock() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let socket = dir.as_path().join("v.sock");
        let config = VmConfig {
            vsock: Some(
                crate::config::VsockConfig::parse(&format!("cid=3,socket={}", socket.display()))
                    .unwrap(),
            ),
            ..VmConfig::default()
        };
        let host = crate::host_topology::HostTopology::emulated(&config, 4 << 10);
        let vm = VmDescription::new(config, &host, 16).unwrap();
        let placed: Vec<_> = vm.devices.iter().map(|d| (d.kind, d.vsmmu)).collect();
        assert_eq!(placed, [(DeviceKind::VirtioVsock, None)]);
        if std::path::Path::new(virtio_devices::vsock::VHOST_VSOCK_PATH).exists() {
            return;
        }
        let err = vsock(&vm, &vm.devices[0], &memory(), &test_support::wiring())
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "--vsock id=_vsock0: /dev/vhost-vsock does not exist; load vhost_vsock (modprobe \
             vhost_vsock) or build the host kernel with CONFIG_VHOST_VSOCK"
        );
        // Nothing was left listening.
        assert!(!socket.exists());
    }

    #[test]
    fn a_missing_or_locked_image_is_one_sentence_and_leaves_nothing_open() {
        let vm1 = vm(&["path=/nonexistent/disk.img".into()], ConsoleConfig::Off);
        let err = block(&vm1, &vm1.devices[0], &memory(), &test_support::wiring())
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("--disk path=/nonexistent/disk.img: cannot open the image"),
            "{err}"
        );
        let img = image();
        let vm2 = vm(
            &[format!("path={}", img.as_path().display())],
            ConsoleConfig::Off,
        );
        let first = block(&vm2, &vm2.devices[0], &memory(), &test_support::wiring()).unwrap();
        let err = block(&vm2, &vm2.devices[0], &memory(), &test_support::wiring())
            .err()
            .unwrap();
        assert!(err.to_string().contains("in use by another VM"), "{err}");
        drop(first);
        // The first VM's lock went with it.
        assert!(block(&vm2, &vm2.devices[0], &memory(), &test_support::wiring()).is_ok());
    }
}
