//! virtio-net's queues on virtio-queue's mock queues, a datagram
//! socketpair standing in for the tap (one frame per datagram, as a tap).

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};

use virtio_bindings::virtio_net::VIRTIO_NET_F_MQ;
use virtio_queue::Queue;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::test_chain::chain;
use crate::worker::{Progress, QueueHandler};
use crate::{ActiveQueue, GuestMemory};

fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
}

/// The device's end and the host's end.
fn pair() -> (Arc<UnixDatagram>, UnixDatagram) {
    let (device, host) = UnixDatagram::pair().unwrap();
    device.set_nonblocking(true).unwrap();
    host.set_nonblocking(true).unwrap();
    (Arc::new(device), host)
}

/// A frame as the tap gives it: a zero header (num_buffers left at
/// 0xffff: the tap does not write it) and `len` bytes of pattern.
fn host_frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; HEADER_LEN];
    f[10] = 0xff;
    f[11] = 0xff;
    f.extend((0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
    f
}

pub(super) fn used(mock: &MockSplitQueue<'_, GuestMemory>, n: usize) -> (u32, u32) {
    let e = mock.used().ring().ref_at(n).unwrap().load();
    (e.id(), e.len())
}

/// A receive side on an enabled pair; `features` as the driver accepted.
pub(super) fn receive<T: FrameIo>(
    io: Arc<T>,
    counters: Arc<NetCounters>,
    features: u64,
) -> Receive<T> {
    let link = Arc::new(PairLink::new(true).unwrap());
    Receive::new(io, counters, link, Arc::new(AtomicU64::new(features)))
}

/// Every TUN_F_* flag this device asks for.
pub(super) const ALL_TUN: u32 = offloads::TUN_F_CSUM
    | offloads::TUN_F_TSO4
    | offloads::TUN_F_TSO6
    | offloads::TUN_F_TSO_ECN
    | offloads::TUN_F_UFO;

pub(super) fn params(mac: &str, offloads: Offloads) -> NetParams {
    NetParams {
        id: "net0".into(),
        mac: MacAddr::parse(mac).unwrap(),
        queue_size: 256,
        offloads,
        host_offloads: ALL_TUN,
    }
}

fn net(mac: &str) -> Net {
    let (device, _host) = UnixDatagram::pair().unwrap();
    Net::new(vec![device], params(mac, Offloads::NONE)).unwrap()
}

#[test]
fn one_pair_offers_version_1_mac_status_mrg_rxbuf_event_idx_and_holds_mac_and_link_up() {
    let dev = net("52:54:00:ab:cd:ef");
    let f = dev.features();
    assert_eq!(
        f,
        feature(VIRTIO_F_VERSION_1)
            | feature(VIRTIO_NET_F_MAC)
            | feature(VIRTIO_NET_F_STATUS)
            | feature(VIRTIO_NET_F_MRG_RXBUF)
            | feature(virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX)
    );
    assert_eq!(f & feature(VIRTIO_NET_F_MQ), 0, "one queue pair, no MQ");
    assert_eq!(dev.device_type(), 1);
    assert_eq!(dev.queue_max_sizes(), vec![256, 256]);
    let mut config = [0xaau8; 10];
    dev.read_config(0, &mut config);
    assert_eq!(config, [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 1, 0, 0, 0]);
    let mut status = [0u8; 2];
    dev.read_config(6, &mut status);
    assert_eq!(u16::from_le_bytes(status), VIRTIO_NET_S_LINK_UP as u16);
    let mut past = [0xaau8; 4];
    dev.read_config(64, &mut past);
    assert_eq!(past, [0; 4]);
}

#[test]
fn mac_addresses_parse_and_multicast_zero_or_malformed_ones_are_refused() {
    assert_eq!(
        MacAddr::parse("02:00:0A:0b:0c:0d").unwrap().to_string(),
        "02:00:0a:0b:0c:0d"
    );
    for bad in [
        "02:00:00:00:00",
        "02:00:00:00:00:00:00",
        "02-00-00-00-00-01",
        "0g:00:00:00:00:01",
        "2:00:00:00:00:01",
    ] {
        assert_eq!(
            MacAddr::parse(bad),
            Err(MacError::Syntax(bad.into())),
            "{bad}"
        );
    }
    assert!(matches!(
        MacAddr::parse("01:00:5e:00:00:01"),
        Err(MacError::Multicast(_))
    ));
    assert!(matches!(
        MacAddr::parse("00:00:00:00:00:00"),
        Err(MacError::Zero(_))
    ));
    assert_ne!(MacAddr::random(), MacAddr::random());
    for _ in 0..32 {
        let mac = MacAddr::random();
        assert_eq!(mac.0[0] & 0x03, 0x02, "{mac}: locally administered unicast");
        assert_eq!(MacAddr::parse(&mac.to_string()), Ok(mac));
    }
}

#[test]
fn a_transmit_chain_reaches_the_host_as_one_frame_header_included() {
    let mem = memory();
    let (device, host) = pair();
    let counters = Arc::new(NetCounters::default());
    let mut tx = Transmit::new(device, counters.clone());
    let frame = host_frame(100, 3);
    mem.write_slice(&frame[..HEADER_LEN], GuestAddress(0x10_0000))
        .unwrap();
    mem.write_slice(&frame[HEADER_LEN..60], GuestAddress(0x20_0000))
        .unwrap();
    mem.write_slice(&frame[60..], GuestAddress(0x30_0000))
        .unwrap();
    let mock = MockSplitQueue::new(&mem, 16);
    mock.add_desc_chains(
        &chain(
            0,
            &[
                (0x10_0000, HEADER_LEN as u32, false),
                (0x20_0000, 60 - HEADER_LEN as u32, false),
                (0x30_0000, (frame.len() - 60) as u32, false),
            ],
        ),
        0,
    )
    .unwrap();
    let mut queue: Queue = mock.create_queue().unwrap();
    assert!(tx.process_queue(&mut queue, &mem, Progress::QUIET));
    let mut got = vec![0u8; 4096];
    let n = host.recv(&mut got).unwrap();
    assert_eq!(&got[..n], &frame[..]);
    assert_eq!(used(&mock, 0), (0, 0));
    assert_eq!(counters.tx_frames.load(Ordering::Relaxed), 1);
    assert_eq!(counters.tx_bytes.load(Ordering::Relaxed), 100);
}

#[test]
fn a_write_only_descriptor_or_a_short_header_in_a_transmit_chain_drops_the_frame() {
    let mem = memory();
    let (device, host) = pair();
    let counters = Arc::new(NetCounters::default());
    let mut tx = Transmit::new(device, counters.clone());
    let mock = MockSplitQueue::new(&mem, 16);
    let mut descs = chain(
        0,
        &[(0x10_0000, HEADER_LEN as u32, false), (0x20_0000, 64, true)],
    );
    descs.extend(chain(2, &[(0x10_0000, HEADER_LEN as u32 - 1, false)]));
    // A chain whose buffer is not RAM.
    descs.extend(chain(3, &[(0x4000_0000, 64, false)]));
    mock.add_desc_chains(&descs, 0).unwrap();
    let mut queue: Queue = mock.create_queue().unwrap();
    assert!(tx.process_queue(&mut queue, &mem, Progress::QUIET));
    assert_eq!(mock.used().idx().load(), 3, "every chain is returned");
    assert_eq!(used(&mock, 0), (0, 0));
    assert_eq!(used(&mock, 1), (2, 0));
    assert_eq!(used(&mock, 2), (3, 0));
    assert_eq!(
        host.recv(&mut [0u8; 64]).unwrap_err().kind(),
        io::ErrorKind::WouldBlock,
        "nothing sent"
    );
    assert_eq!(counters.tx_dropped.load(Ordering::Relaxed), 3);
    assert_eq!(counters.tx_frames.load(Ordering::Relaxed), 0);
}

#[test]
fn a_host_frame_fills_a_receive_chain_across_descriptors_with_num_buffers_1() {
    let mem = memory();
    let (device, host) = pair();
    let counters = Arc::new(NetCounters::default());
    let mut rx = receive(device, counters.clone(), 0);
    let mock = MockSplitQueue::new(&mem, 16);
    mock.add_desc_chains(
        &chain(0, &[(0x10_0000, 10, true), (0x20_0000, 2048, true)]),
        0,
    )
    .unwrap();
    let mut queue: Queue = mock.create_queue().unwrap();
    let frame = host_frame(200, 9);
    host.send(&frame).unwrap();
    assert!(rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap());
    let mut got = vec![0u8; frame.len()];
    mem.read_slice(&mut got[..10], GuestAddress(0x10_0000))
        .unwrap();
    mem.read_slice(&mut got[10..], GuestAddress(0x20_0000))
        .unwrap();
    assert_eq!(&got[..10], &frame[..10]);
    assert_eq!(&got[10..12], &[1, 0], "num_buffers");
    assert_eq!(&got[12..], &frame[12..]);
    assert_eq!(used(&mock, 0), (0, frame.len() as u32));
    assert_eq!(counters.rx_frames.load(Ordering::Relaxed), 1);
    assert_eq!(counters.rx_bytes.load(Ordering::Relaxed), 200);
    assert!(rx.wants_input());
}

#[test]
fn a_frame_larger_than_the_chain_is_dropped_and_counted_and_the_next_one_delivered() {
    let mem = memory();
    let (device, host) = pair();
    let counters = Arc::new(NetCounters::default());
    let mut rx = receive(device, counters.clone(), 0);
    let mock = MockSplitQueue::new(&mem, 16);
    let mut descs = chain(0, &[(0x10_0000, 64, true)]);
    descs.extend(chain(1, &[(0x20_0000, 1600, true)]));
    mock.add_desc_chains(&descs, 0).unwrap();
    let mut queue: Queue = mock.create_queue().unwrap();
    host.send(&host_frame(1000, 1)).unwrap();
    host.send(&host_frame(40, 2)).unwrap();
    assert!(rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap());
    assert_eq!(used(&mock, 0), (0, 0), "too small: nothing written");
    assert_eq!(used(&mock, 1), (1, (HEADER_LEN + 40) as u32));
    let mut got = vec![0u8; 40];
    mem.read_slice(&mut got, GuestAddress(0x20_0000 + HEADER_LEN as u64))
        .unwrap();
    assert_eq!(got, host_frame(40, 2)[HEADER_LEN..]);
    assert_eq!(counters.rx_dropped.load(Ordering::Relaxed), 1);
    assert_eq!(counters.rx_frames.load(Ordering::Relaxed), 1);
    assert_eq!(counters.rx_bytes.load(Ordering::Relaxed), 40);
}

#[test]
fn a_read_only_receive_buffer_is_never_written_and_the_frame_dropped() {
    let mem = memory();
    let (device, host) = pair();
    let counters = Arc::new(NetCounters::default());
    let mut rx = receive(device, counters.clone(), 0);
    let mock = MockSplitQueue::new(&mem, 16);
    mem.write_slice(&[0x5a; 64], GuestAddress(0x20_0000))
        .unwrap();
    mock.add_desc_chains(
        &chain(0, &[(0x10_0000, 64, true), (0x20_0000, 64, false)]),
        0,
    )
    .unwrap();
    let mut queue: Queue = mock.create_queue().unwrap();
    host.send(&host_frame(20, 0)).unwrap();
    assert!(rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap());
    assert_eq!(used(&mock, 0), (0, 0));
    let mut after = [0u8; 64];
    mem.read_slice(&mut after, GuestAddress(0x20_0000)).unwrap();
    assert_eq!(after, [0x5a; 64]);
    assert_eq!(counters.rx_dropped.load(Ordering::Relaxed), 1);
}

#[test]
fn with_no_receive_buffer_a_frame_waits_the_host_is_not_read_and_a_kick_delivers_it() {
    let mem = memory();
    let (device, host) = pair();
    let counters = Arc::new(NetCounters::default());
    let mut rx = receive(device, counters.clone(), 0);
    let mock = MockSplitQueue::new(&mem, 16);
    let mut queue: Queue = mock.create_queue().unwrap();
    host.send(&host_frame(30, 4)).unwrap();
    host.send(&host_frame(31, 5)).unwrap();
    assert!(
        !rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap(),
        "no buffer"
    );
    assert!(!rx.wants_input(), "the host is not polled meanwhile");
    assert!(
        !rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap(),
        "a spurious wake-up reads nothing"
    );
    assert!(
        !rx.process_queue(&mut queue, &mem, Progress::QUIET),
        "a kick with no buffer"
    );
    // The guest posts a buffer and kicks.
    mock.add_desc_chains(&chain(0, &[(0x10_0000, 2048, true)]), 0)
        .unwrap();
    assert!(rx.process_queue(&mut queue, &mem, Progress::QUIET));
    assert_eq!(used(&mock, 0), (0, (HEADER_LEN + 30) as u32));
    assert!(rx.wants_input());
    // The second frame was left in the host's queue, not lost.
    mock.add_desc_chains(&chain(1, &[(0x20_0000, 2048, true)]), 1)
        .unwrap();
    assert!(rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap());
    assert_eq!(used(&mock, 1), (1, (HEADER_LEN + 31) as u32));
    assert_eq!(counters.rx_frames.load(Ordering::Relaxed), 2);
    assert_eq!(counters.rx_dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn a_runt_from_the_host_is_dropped_without_using_a_chain() {
    let mem = memory();
    let (device, host) = pair();
    let counters = Arc::new(NetCounters::default());
    let mut rx = receive(device, counters.clone(), 0);
    let mock = MockSplitQueue::new(&mem, 16);
    mock.add_desc_chains(&chain(0, &[(0x10_0000, 2048, true)]), 0)
        .unwrap();
    let mut queue: Queue = mock.create_queue().unwrap();
    host.send(&[0u8; 5]).unwrap();
    assert!(!rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap());
    assert_eq!(mock.used().idx().load(), 0);
    assert_eq!(counters.rx_dropped.load(Ordering::Relaxed), 1);
}

/// The whole device over a real tap: its two worker threads serve queues
/// handed over as on DRIVER_OK. The host's ARP request for the guest's
/// address reaches a receive buffer; a broadcast frame the guest posts
/// reaches the tap (its rx_packets).
#[test]
#[ignore = "needs /dev/net/tun and CAP_NET_ADMIN"]
fn frames_cross_a_real_tap_through_the_queue_workers() {
    use std::time::{Duration, Instant};

    use vmm_sys_util::eventfd::EventFd;

    use crate::QueueInterrupt;

    let tap = Tap::open(Some("chnet%d")).unwrap();
    tap.set_ipv4(
        std::net::Ipv4Addr::new(10, 253, 0, 1),
        std::net::Ipv4Addr::new(255, 255, 255, 0),
    )
    .unwrap();
    tap.bring_up().unwrap();
    let name = tap.name().to_string();
    let stat = |what: &str| -> u64 {
        std::fs::read_to_string(format!("/sys/class/net/{name}/statistics/{what}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let mem = memory();
    let mac = MacAddr::parse("52:54:00:00:00:02").unwrap();
    let params = NetParams {
        id: "net-real".into(),
        mac,
        queue_size: 16,
        offloads: Offloads::NONE,
        host_offloads: 0,
    };
    let mut dev = Net::new(vec![tap], params).unwrap();
    let rx_mock = MockSplitQueue::create(&mem, GuestAddress(0), 16);
    let tx_mock = MockSplitQueue::create(&mem, GuestAddress(0x8000), 16);
    let mut rx_chains = Vec::new();
    for i in 0..8u16 {
        rx_chains.extend(chain(i, &[(0x10_0000 + u64::from(i) * 0x1000, 2048, true)]));
    }
    rx_mock.add_desc_chains(&rx_chains, 0).unwrap();
    let isr = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let active = |index: u16, queue: Queue| ActiveQueue {
        index,
        queue,
        kick: EventFd::new(0).unwrap(),
        interrupt: QueueInterrupt::new(None, isr.clone()),
    };
    let rxq = active(0, rx_mock.create_queue().unwrap());
    let txq = active(1, tx_mock.create_queue().unwrap());
    let tx_kick = txq.kick.try_clone().unwrap();
    dev.activate(mem.clone(), dev.features(), vec![rxq, txq])
        .unwrap();

    // The host talks to 10.253.0.2: its kernel asks the tap who has it.
    let udp = std::net::UdpSocket::bind("10.253.0.1:0").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut arp = false;
    while !arp && Instant::now() < deadline {
        let _ = udp.send_to(b"ping", "10.253.0.2:9");
        std::thread::sleep(Duration::from_millis(100));
        for n in 0..usize::from(rx_mock.used().idx().load()) {
            let (id, len) = used(&rx_mock, n);
            let mut frame = vec![0u8; len as usize];
            mem.read_slice(&mut frame, GuestAddress(0x10_0000 + u64::from(id) * 0x1000))
                .unwrap();
            // num_buffers 1, ethertype ARP, target protocol address.
            arp |= len as usize >= HEADER_LEN + 42
                && frame[10..12] == [1, 0]
                && frame[HEADER_LEN + 12..HEADER_LEN + 14] == [0x08, 0x06]
                && frame[HEADER_LEN + 38..HEADER_LEN + 42] == [10, 253, 0, 2];
        }
    }
    assert!(
        arp,
        "no ARP request for 10.253.0.2 reached a receive buffer"
    );
    assert!(dev.counters().rx_frames.load(Ordering::Relaxed) >= 1);

    // The guest broadcasts a frame: 12-byte header, then 60 bytes.
    let before = stat("rx_packets");
    let mut frame = vec![0u8; HEADER_LEN];
    frame.extend([0xff; 6]);
    frame.extend(mac.0);
    frame.extend([0x88, 0xb5]); // local experimental ethertype
    frame.resize(HEADER_LEN + 60, 0xab);
    mem.write_slice(&frame, GuestAddress(0x30_0000)).unwrap();
    tx_mock
        .add_desc_chains(&chain(0, &[(0x30_0000, frame.len() as u32, false)]), 0)
        .unwrap();
    tx_kick.write(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while tx_mock.used().idx().load() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(tx_mock.used().idx().load(), 1);
    assert_eq!(dev.counters().tx_frames.load(Ordering::Relaxed), 1);
    assert_eq!(dev.counters().tx_bytes.load(Ordering::Relaxed), 60);
    assert!(
        stat("rx_packets") > before,
        "the tap did not receive the guest's frame"
    );
    dev.reset();
}

#[test]
fn the_guest_hears_of_each_64_kib_received_before_the_round_ends() {
    use crate::worker::counted;
    for quiet in [false, true] {
        let mem = memory();
        let (device, host) = pair();
        let mut rx = receive(device, Arc::new(NetCounters::default()), 0);
        let mock = MockSplitQueue::new(&mem, 16);
        let mut descs = Vec::new();
        for i in 0..3u16 {
            descs.extend(chain(
                i,
                &[(0x10_0000 * (u64::from(i) + 1), 0x1_0000, true)],
            ));
        }
        mock.add_desc_chains(&descs, 0).unwrap();
        let mut queue: Queue = mock.create_queue().unwrap();
        for seed in 0..3 {
            host.send(&host_frame(40_000, seed)).unwrap();
        }
        let (signal, vector) = counted::signal(&queue);
        let progress = if quiet {
            Progress::QUIET
        } else {
            Progress::new(&signal)
        };
        assert!(rx.input_ready(&mut queue, &mem, progress).unwrap());
        assert_eq!(mock.used().idx().load(), 3);
        // The second frame passes 64 KiB: one interrupt then (no
        // EVENT_IDX); the third is left for the worker's end of round.
        assert_eq!(
            counted::interrupts(&vector),
            u64::from(!quiet),
            "quiet {quiet}"
        );
    }
}
