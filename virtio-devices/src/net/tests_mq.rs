//! Multiqueue, the control queue, MRG_RXBUF and offload negotiation, on
//! virtio-queue's mock queues; a recording stand-in for the tap shows
//! which queues the device attaches and which offloads it sets.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_net::{
    VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, VIRTIO_NET_CTRL_MQ,
    VIRTIO_NET_CTRL_MQ_RSS_CONFIG, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, VIRTIO_NET_CTRL_RX,
    VIRTIO_NET_CTRL_RX_PROMISC, VIRTIO_NET_CTRL_VLAN, VIRTIO_NET_ERR, VIRTIO_NET_F_CSUM,
    VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_OK,
};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::tests::{params, receive, used};
use super::*;
use crate::test_chain::chain;
use crate::worker::{Progress, QueueHandler};
use crate::{ActiveQueue, QueueInterrupt};

fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
}

/// A host queue that records what the device asks of it.
struct Recorder {
    socket: UnixDatagram,
    queue: usize,
    log: Arc<Mutex<Vec<String>>>,
}

impl AsRawFd for Recorder {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl FrameIo for Recorder {
    fn recv_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.recv(buf)
    }

    fn send_frame(&self, frame: &[u8]) -> io::Result<usize> {
        self.socket.send(frame)
    }

    fn set_offloads(&self, flags: u32) -> io::Result<()> {
        self.log.lock().unwrap().push(format!("offload {flags:#x}"));
        Ok(())
    }

    fn set_attached(&self, attached: bool) -> io::Result<()> {
        let what = if attached { "attach" } else { "detach" };
        self.log
            .lock()
            .unwrap()
            .push(format!("{what} {}", self.queue));
        Ok(())
    }
}

fn recorders(pairs: usize) -> (Vec<Recorder>, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let ios = (0..pairs)
        .map(|queue| {
            let (socket, _) = UnixDatagram::pair().unwrap();
            socket.set_nonblocking(true).unwrap();
            Recorder {
                socket,
                queue,
                log: log.clone(),
            }
        })
        .collect();
    (ios, log)
}

fn take(log: &Mutex<Vec<String>>) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[test]
fn four_pairs_offer_mq_and_ctrl_vq_with_max_virtqueue_pairs_4_and_nine_queues() {
    let (ios, log) = recorders(4);
    let dev = Net::new(ios, params("52:54:00:00:00:04", Offloads::ALL)).unwrap();
    let f = dev.features();
    assert_eq!(f & feature(VIRTIO_NET_F_MQ), feature(VIRTIO_NET_F_MQ));
    assert_eq!(
        f & feature(VIRTIO_NET_F_CTRL_VQ),
        feature(VIRTIO_NET_F_CTRL_VQ)
    );
    assert_eq!(
        f & feature(VIRTIO_NET_F_MRG_RXBUF),
        feature(VIRTIO_NET_F_MRG_RXBUF)
    );
    assert_eq!(f & 0x7f83, 0x7f83, "every offload the tap takes");
    assert_eq!(
        dev.queue_max_sizes(),
        vec![256; 9],
        "4 pairs and the control queue"
    );
    let mut config = [0xaau8; 12];
    dev.read_config(0, &mut config);
    assert_eq!(config, [0x52, 0x54, 0, 0, 0, 4, 1, 0, 4, 0, 0, 0]);
    let mut pairs = [0u8; 2];
    dev.read_config(8, &mut pairs);
    assert_eq!(u16::from_le_bytes(pairs), 4);
    assert_eq!(
        take(&log),
        ["detach 1", "detach 2", "detach 3"],
        "only pair 0 attached before the driver enables more"
    );
    let (ios, _) = recorders(MAX_QUEUE_PAIRS + 1);
    assert!(Net::new(ios, params("52:54:00:00:00:04", Offloads::ALL)).is_err());
    let none: Vec<Recorder> = Vec::new();
    assert!(Net::new(none, params("52:54:00:00:00:04", Offloads::ALL)).is_err());
}

/// A control command at 0x10_0000 (header, then data), its status byte at
/// 0x20_0000 (pre-set to 0xee), as Linux's virtnet_send_command lays it out.
fn command(
    mem: &GuestMemory,
    class: u32,
    cmd: u32,
    data: &[u8],
) -> Vec<virtio_queue::desc::RawDescriptor> {
    mem.write_slice(&[class as u8, cmd as u8], GuestAddress(0x10_0000))
        .unwrap();
    mem.write_slice(data, GuestAddress(0x11_0000)).unwrap();
    mem.write_obj(0xeeu8, GuestAddress(0x20_0000)).unwrap();
    let mut descs = vec![(0x10_0000, 2, false)];
    if !data.is_empty() {
        descs.push((0x11_0000, data.len() as u32, false));
    }
    descs.push((0x20_0000, 1, true));
    chain(0, &descs)
}

/// Run one chain through a control queue; (used length, status byte).
fn control(
    ctl: &mut Control<Recorder>,
    mem: &GuestMemory,
    descs: &[virtio_queue::desc::RawDescriptor],
) -> (u32, u8) {
    let mock = MockSplitQueue::new(mem, 16);
    mock.add_desc_chains(descs, 0).unwrap();
    let mut queue: Queue = mock.create_queue().unwrap();
    assert!(ctl.process_queue(&mut queue, mem, Progress::QUIET));
    assert_eq!(mock.used().idx().load(), 1, "the chain is returned");
    let status: u8 = mem.read_obj(GuestAddress(0x20_0000)).unwrap();
    (used(&mock, 0).1, status)
}

/// A control queue over `pairs` recorded host queues, pair 0 enabled.
type ControlSetup = (
    Control<Recorder>,
    Arc<Pairs<Recorder>>,
    Arc<Mutex<Vec<String>>>,
);

fn control_of(pairs: usize, features: u64) -> ControlSetup {
    let (ios, log) = recorders(pairs);
    let pairs = Arc::new(Pairs::new(ios.into_iter().map(Arc::new).collect()).unwrap());
    pairs.enable(1).unwrap();
    take(&log);
    let ctl = Control::new(pairs.clone(), Arc::new(AtomicU64::new(features)));
    (ctl, pairs, log)
}

const OK: u8 = VIRTIO_NET_OK as u8;
const ERR: u8 = VIRTIO_NET_ERR as u8;

#[test]
fn vq_pairs_set_enables_that_many_pairs_and_refuses_0_and_more_than_max() {
    let mem = memory();
    let (mut ctl, pairs, log) = control_of(4, feature(VIRTIO_NET_F_MQ));
    let set = |n: u16| {
        command(
            &mem,
            VIRTIO_NET_CTRL_MQ,
            VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
            &n.to_le_bytes(),
        )
    };
    assert_eq!(control(&mut ctl, &mem, &set(3)), (1, OK));
    assert_eq!(pairs.enabled(), 3);
    assert_eq!(take(&log), ["attach 1", "attach 2"]);
    assert_eq!(control(&mut ctl, &mem, &set(4)), (1, OK));
    assert_eq!(take(&log), ["attach 3"]);
    assert_eq!(control(&mut ctl, &mem, &set(1)), (1, OK));
    assert_eq!(pairs.enabled(), 1);
    assert_eq!(take(&log), ["detach 1", "detach 2", "detach 3"]);
    for bad in [0u16, 5, 0x8000, 0xffff] {
        assert_eq!(control(&mut ctl, &mem, &set(bad)), (1, ERR), "{bad}");
    }
    assert_eq!(pairs.enabled(), 1, "a refused count changes nothing");
    assert!(take(&log).is_empty());
    // The same command in one descriptor (header and data together).
    mem.write_slice(&[4, 0, 2, 0], GuestAddress(0x10_0000))
        .unwrap();
    let one = chain(0, &[(0x10_0000, 4, false), (0x20_0000, 1, true)]);
    assert_eq!(control(&mut ctl, &mem, &one), (1, OK));
    assert_eq!(pairs.enabled(), 2);
}

#[test]
fn vq_pairs_set_without_mq_negotiated_and_unsupported_classes_answer_err() {
    let mem = memory();
    let (mut no_mq, pairs, _) = control_of(2, feature(VIRTIO_NET_F_CTRL_VQ));
    let set2 = command(
        &mem,
        VIRTIO_NET_CTRL_MQ,
        VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
        &[2, 0],
    );
    assert_eq!(control(&mut no_mq, &mem, &set2), (1, ERR));
    assert_eq!(pairs.enabled(), 1);
    let (mut ctl, pairs, _) = control_of(2, feature(VIRTIO_NET_F_MQ));
    for (class, cmd, data) in [
        (VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, &[1u8][..]),
        (
            VIRTIO_NET_CTRL_MAC,
            VIRTIO_NET_CTRL_MAC_TABLE_SET,
            &[0, 0, 0, 0, 0, 0, 0, 0][..],
        ),
        (VIRTIO_NET_CTRL_VLAN, 0, &[1, 0][..]),
        (
            VIRTIO_NET_CTRL_MQ,
            VIRTIO_NET_CTRL_MQ_RSS_CONFIG,
            &[0; 16][..],
        ),
        (200, 7, &[][..]),
    ] {
        let descs = command(&mem, class, cmd, data);
        assert_eq!(
            control(&mut ctl, &mem, &descs),
            (1, ERR),
            "class {class} cmd {cmd}"
        );
    }
    assert_eq!(pairs.enabled(), 1);
}

#[test]
fn malformed_control_chains_are_answered_err_or_returned_and_never_panic() {
    let mem = memory();
    let (mut ctl, pairs, _) = control_of(4, feature(VIRTIO_NET_F_MQ));
    mem.write_slice(&[4, 0, 2, 0, 9, 9], GuestAddress(0x10_0000))
        .unwrap();
    for (what, descs, answer) in [
        // One byte of header.
        (
            "short header",
            chain(0, &[(0x10_0000, 1, false), (0x20_0000, 1, true)]),
            (1, ERR),
        ),
        // No command at all.
        ("no command", chain(0, &[(0x20_0000, 1, true)]), (1, ERR)),
        // VQ_PAIRS_SET with 3 and 1 bytes of data.
        (
            "long data",
            chain(0, &[(0x10_0000, 5, false), (0x20_0000, 1, true)]),
            (1, ERR),
        ),
        (
            "short data",
            chain(0, &[(0x10_0000, 3, false), (0x20_0000, 1, true)]),
            (1, ERR),
        ),
        // Readable after writable.
        (
            "order",
            chain(
                0,
                &[
                    (0x10_0000, 2, false),
                    (0x20_0000, 1, true),
                    (0x11_0000, 2, false),
                ],
            ),
            (1, ERR),
        ),
        // The command outside RAM.
        (
            "bad address",
            chain(0, &[(0x4000_0000, 4, false), (0x20_0000, 1, true)]),
            (1, ERR),
        ),
        // No status byte: nothing to answer into.
        ("no status", chain(0, &[(0x10_0000, 4, false)]), (0, 0xee)),
        (
            "empty status",
            chain(0, &[(0x10_0000, 4, false), (0x20_0000, 0, true)]),
            (0, 0xee),
        ),
    ] {
        mem.write_obj(0xeeu8, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(control(&mut ctl, &mem, &descs), answer, "{what}");
    }
    // A status byte outside RAM: returned with nothing written.
    let mock = MockSplitQueue::new(&mem, 16);
    mock.add_desc_chains(
        &chain(0, &[(0x10_0000, 4, false), (0x4000_0000, 1, true)]),
        0,
    )
    .unwrap();
    let mut queue: Queue = mock.create_queue().unwrap();
    assert!(ctl.process_queue(&mut queue, &mem, Progress::QUIET));
    assert_eq!(used(&mock, 0), (0, 0));
    assert_eq!(
        pairs.enabled(),
        2,
        "only the outside-RAM-status command took effect"
    );
}

/// A frame as the tap gives it: header (num_buffers left 0xffff) and
/// `len` bytes of pattern.
fn host_frame(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; HEADER_LEN];
    f[10] = 0xff;
    f[11] = 0xff;
    f.extend((0..len).map(|i| (i % 251) as u8));
    f
}

/// A receive side with MRG_RXBUF accepted, and the host end of its socket.
fn merged_receive() -> (Receive<UnixDatagram>, UnixDatagram, Arc<NetCounters>) {
    let (device, host) = UnixDatagram::pair().unwrap();
    device.set_nonblocking(true).unwrap();
    let counters = Arc::new(NetCounters::default());
    let rx = receive(
        Arc::new(device),
        counters.clone(),
        feature(VIRTIO_NET_F_MRG_RXBUF),
    );
    (rx, host, counters)
}

/// Two 1000-byte receive buffers, descriptors 0 and 1.
fn post_two_short_buffers(mock: &MockSplitQueue<'_, GuestMemory>) {
    let mut descs = chain(0, &[(0x10_0000, 1000, true)]);
    descs.extend(chain(1, &[(0x11_0000, 1000, true)]));
    mock.add_desc_chains(&descs, 0).unwrap();
}

#[test]
fn with_mrg_rxbuf_a_frame_spreads_over_chains_and_num_buffers_counts_them() {
    let mem = memory();
    let (mut rx, host, counters) = merged_receive();
    let mock = MockSplitQueue::new(&mem, 16);
    // Two 1000-byte buffers: too few for a 2500-byte frame.
    post_two_short_buffers(&mock);
    let mut queue: Queue = mock.create_queue().unwrap();
    let frame = host_frame(2500 - HEADER_LEN);
    host.send(&frame).unwrap();
    assert!(
        !rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap(),
        "waits for more buffers"
    );
    assert_eq!(mock.used().idx().load(), 0);
    assert!(!rx.wants_input());
    // The guest posts a third; the frame goes out over all three.
    mock.add_desc_chains(&chain(2, &[(0x12_0000, 1000, true)]), 2)
        .unwrap();
    assert!(rx.process_queue(&mut queue, &mem, Progress::QUIET));
    assert_eq!(mock.used().idx().load(), 3);
    assert_eq!(used(&mock, 0), (0, 1000));
    assert_eq!(used(&mock, 1), (1, 1000));
    assert_eq!(used(&mock, 2), (2, 500));
    let mut got = vec![0u8; 2500];
    for (i, at) in [0x10_0000u64, 0x11_0000, 0x12_0000].iter().enumerate() {
        let end = (1000 * (i + 1)).min(2500);
        mem.read_slice(&mut got[1000 * i..end], GuestAddress(*at))
            .unwrap();
    }
    assert_eq!(&got[10..12], &[3, 0], "num_buffers");
    assert_eq!(&got[12..], &frame[12..]);
    assert_eq!(counters.rx_frames.load(Ordering::Relaxed), 1);
    assert_eq!(
        counters.rx_bytes.load(Ordering::Relaxed),
        2500 - HEADER_LEN as u64
    );
    // A small frame takes one buffer, num_buffers 1.
    mock.add_desc_chains(&chain(3, &[(0x13_0000, 1000, true)]), 3)
        .unwrap();
    host.send(&host_frame(60)).unwrap();
    assert!(rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap());
    assert_eq!(used(&mock, 3), (3, (HEADER_LEN + 60) as u32));
    let mut num = [0u8; 2];
    mem.read_slice(&mut num, GuestAddress(0x13_0000 + 10))
        .unwrap();
    assert_eq!(num, [1, 0]);
}

#[test]
fn with_event_idx_a_merged_frame_short_of_buffers_asks_to_be_notified_past_the_drivers_index() {
    let mem = memory();
    let (mut rx, host, counters) = merged_receive();
    let mock = MockSplitQueue::new(&mem, 16);
    post_two_short_buffers(&mock);
    let mut queue: Queue = mock.create_queue().unwrap();
    queue.set_event_idx(true);
    // virtq_used.avail_event, after the used ring's 16 elements.
    let avail_event = GuestAddress(mock.used_addr().0 + 4 + 8 * 16);
    host.send(&host_frame(2500 - HEADER_LEN)).unwrap();
    assert!(
        !rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap(),
        "waits"
    );
    assert_eq!(queue.next_avail(), 0, "the two chains stay posted");
    // The driver (at index 2) notifies when it passes avail_event: 2, not
    // the 0 where the device's reading stopped, which it already passed.
    assert_eq!(mem.read_obj::<u16>(avail_event).unwrap(), 2);
    mock.add_desc_chains(&chain(2, &[(0x12_0000, 1000, true)]), 2)
        .unwrap();
    assert!(rx.process_queue(&mut queue, &mem, Progress::QUIET));
    assert_eq!(mock.used().idx().load(), 3);
    assert_eq!(counters.rx_frames.load(Ordering::Relaxed), 1);
}

#[test]
fn with_mrg_rxbuf_a_frame_larger_than_a_full_ring_is_dropped_and_a_bad_buffer_returned() {
    let mem = memory();
    let (device, host) = UnixDatagram::pair().unwrap();
    device.set_nonblocking(true).unwrap();
    let counters = Arc::new(NetCounters::default());
    let mut rx = receive(
        Arc::new(device),
        counters.clone(),
        feature(VIRTIO_NET_F_MRG_RXBUF),
    );
    // A 16-entry ring full of 50-byte buffers never holds 1000 bytes.
    let mock = MockSplitQueue::new(&mem, 16);
    let mut descs = Vec::new();
    for i in 0..16u16 {
        descs.extend(chain(i, &[(0x10_0000 + u64::from(i) * 0x1000, 50, true)]));
    }
    mock.add_desc_chains(&descs, 0).unwrap();
    let mut queue: Queue = mock.create_queue().unwrap();
    host.send(&host_frame(1000)).unwrap();
    assert!(!rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap());
    assert_eq!(counters.rx_dropped.load(Ordering::Relaxed), 1);
    // (The mock's used ring overlaps a full avail ring: its index is not
    // read here.)
    assert_eq!(queue.next_avail(), 0, "the buffers stay for the next frame");
    host.send(&host_frame(30)).unwrap();
    assert!(rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap());
    assert_eq!(used(&mock, 0), (0, (HEADER_LEN + 30) as u32));

    // A read-only buffer in the middle: it is returned unused and the
    // frame dropped, the buffers before it too.
    let mock = MockSplitQueue::new(&mem, 16);
    let mut descs = chain(0, &[(0x10_0000, 100, true)]);
    descs.extend(chain(1, &[(0x11_0000, 100, false)]));
    mock.add_desc_chains(&descs, 0).unwrap();
    let mut queue: Queue = mock.create_queue().unwrap();
    host.send(&host_frame(500)).unwrap();
    assert!(rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap());
    assert_eq!(mock.used().idx().load(), 2);
    assert_eq!(used(&mock, 0), (1, 0), "the bad buffer first");
    assert_eq!(used(&mock, 1), (0, 0));
    assert_eq!(counters.rx_dropped.load(Ordering::Relaxed), 2);
}

#[test]
fn a_disabled_pair_does_not_read_the_host_and_drops_a_waiting_frame() {
    let mem = memory();
    let (device, host) = UnixDatagram::pair().unwrap();
    device.set_nonblocking(true).unwrap();
    let counters = Arc::new(NetCounters::default());
    let link = Arc::new(PairLink::new(true).unwrap());
    let mut rx = Receive::new(
        Arc::new(device),
        counters.clone(),
        link.clone(),
        Arc::new(AtomicU64::new(0)),
    );
    let mock = MockSplitQueue::new(&mem, 16);
    let mut queue: Queue = mock.create_queue().unwrap();
    host.send(&host_frame(40)).unwrap();
    assert!(
        !rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap(),
        "no buffer: it waits"
    );
    // The control queue disables the pair.
    let pairs_link = link.clone();
    pairs_link.set_for_test(false);
    assert!(!rx.woken(&mut queue, &mem));
    assert_eq!(counters.rx_dropped.load(Ordering::Relaxed), 1);
    assert!(!rx.wants_input(), "the host queue is not polled");
    host.send(&host_frame(41)).unwrap();
    mock.add_desc_chains(&chain(0, &[(0x10_0000, 2048, true)]), 0)
        .unwrap();
    assert!(
        !rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap(),
        "not read while disabled"
    );
    // Enabled again: the host is read.
    pairs_link.set_for_test(true);
    assert!(rx.wants_input());
    assert!(rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap());
    assert_eq!(used(&mock, 0), (0, (HEADER_LEN + 41) as u32));
}

/// Entries of the queues [`activate`] makes. virtio-queue 0.18's mock
/// places the used ring over the second half of the avail ring's entries,
/// so at most RING / 2 - 1 chains are posted on one.
const RING: u16 = 64;

/// A device whose queues run on their workers as after DRIVER_OK:
/// returns the mocks' memory layout through `queue(index)`.
struct Running {
    mem: GuestMemory,
    kicks: Vec<EventFd>,
}

fn activate(
    dev: &mut Net,
    features: u64,
    indices: &[u16],
    mem: &GuestMemory,
) -> Result<Running, crate::ActivateError> {
    let isr = Arc::new(AtomicU8::new(0));
    let mut queues = Vec::new();
    let mut kicks = Vec::new();
    for index in indices {
        let mock = MockSplitQueue::create(mem, GuestAddress(u64::from(*index) * 0x8000), RING);
        let kick = EventFd::new(0).unwrap();
        kicks.push(kick.try_clone().unwrap());
        queues.push(ActiveQueue {
            index: *index,
            queue: mock.create_queue().unwrap(),
            kick,
            interrupt: QueueInterrupt::new(None, isr.clone()),
        });
    }
    dev.activate(mem.clone(), features, queues)?;
    Ok(Running {
        mem: mem.clone(),
        kicks,
    })
}

/// Post one control command on the control queue at `index` (ring at
/// index * 0x8000, as [`activate`] made it), kick it and wait for the
/// status byte.
fn post_command(run: &Running, index: u16, kick: usize, bytes: &[u8]) -> u8 {
    let mem = &run.mem;
    let mock = MockSplitQueue::create(mem, GuestAddress(u64::from(index) * 0x8000), RING);
    mem.write_slice(bytes, GuestAddress(0x30_0000)).unwrap();
    mem.write_obj(0xeeu8, GuestAddress(0x31_0000)).unwrap();
    mock.add_desc_chains(
        &chain(
            0,
            &[(0x30_0000, bytes.len() as u32, false), (0x31_0000, 1, true)],
        ),
        0,
    )
    .unwrap();
    run.kicks[kick].write(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status: u8 = mem.read_obj(GuestAddress(0x31_0000)).unwrap();
        if status != 0xee || Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn driver_ok_sets_the_taps_offloads_from_the_guest_bits_and_reset_clears_them() {
    let mem = memory();
    let (ios, log) = recorders(2);
    let mut dev = Net::new(ios, params("52:54:00:00:00:05", Offloads::ALL)).unwrap();
    take(&log);
    let features = feature(VIRTIO_NET_F_CSUM)
        | feature(VIRTIO_NET_F_HOST_TSO4)
        | feature(VIRTIO_NET_F_GUEST_CSUM)
        | feature(VIRTIO_NET_F_GUEST_TSO4)
        | feature(VIRTIO_NET_F_GUEST_TSO6);
    let _run = activate(&mut dev, features, &[0, 1], &mem).unwrap();
    assert_eq!(take(&log), [format!("offload {:#x}", 0x7)]);
    dev.reset();
    assert_eq!(take(&log), ["offload 0x0"]);
    let _run = activate(&mut dev, 0, &[0, 1], &mem).unwrap();
    assert_eq!(take(&log), ["offload 0x0"]);
    dev.reset();
}

#[test]
fn the_control_queue_is_the_last_with_mq_and_queue_2_without_and_serves_vq_pairs_set() {
    let mem = memory();
    let (ios, log) = recorders(3);
    let mut dev = Net::new(ios, params("52:54:00:00:00:06", Offloads::NONE)).unwrap();
    take(&log);
    let mq = feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_NET_F_MQ) | feature(VIRTIO_NET_F_CTRL_VQ);
    let run = activate(&mut dev, mq, &[0, 1, 2, 3, 4, 5, 6], &mem).unwrap();
    take(&log);
    assert_eq!(post_command(&run, 6, 6, &[4, 0, 3, 0]), OK);
    assert_eq!(take(&log), ["attach 1", "attach 2"]);
    dev.reset();
    // A new driver: pair 0 alone until it asks again.
    assert_eq!(take(&log), ["offload 0x0"]);
    let run = activate(&mut dev, mq, &[0, 1, 2, 3, 4, 5, 6], &mem).unwrap();
    assert_eq!(take(&log), ["offload 0x0", "detach 1", "detach 2"]);
    drop(run);
    dev.reset();
    // CTRL_VQ without MQ: the control queue is queue 2, one pair.
    let ctrl_only = feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_NET_F_CTRL_VQ);
    let run = activate(&mut dev, ctrl_only, &[0, 1, 2], &mem).unwrap();
    take(&log);
    assert_eq!(
        post_command(&run, 2, 2, &[4, 0, 2, 0]),
        ERR,
        "no MQ negotiated"
    );
    assert!(take(&log).is_empty());
    dev.reset();
    // Without CTRL_VQ there is no queue 2.
    assert!(matches!(
        activate(&mut dev, feature(VIRTIO_F_VERSION_1), &[0, 1, 2], &mem),
        Err(crate::ActivateError::NoSuchQueue(2))
    ));
}

/// The host's UDP broadcasts to port 9 from `flows` source ports, as the
/// receive queues of pairs 0 and 1 got them: (frames on each, whether
/// every one carried VIRTIO_NET_HDR_F_NEEDS_CSUM).
fn udp_flows(
    run: &Running,
    flows: usize,
    rx: &[&MockSplitQueue<'_, GuestMemory>; 2],
    seen: &mut [usize; 2],
) -> ([usize; 2], bool) {
    let sockets: Vec<std::net::UdpSocket> = (0..flows)
        .map(|_| {
            let s = std::net::UdpSocket::bind("10.253.2.1:0").unwrap();
            s.set_broadcast(true).unwrap();
            s
        })
        .collect();
    for s in &sockets {
        s.send_to(b"flow", "10.253.2.255:9").unwrap();
    }
    let mut got = [0usize; 2];
    let mut needs_csum = true;
    let deadline = Instant::now() + Duration::from_secs(5);
    while got[0] + got[1] < flows && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        for (pair, mock) in rx.iter().enumerate() {
            let idx = usize::from(mock.used().idx().load());
            for n in seen[pair]..idx {
                let (id, len) = used(mock, n);
                let at = 0x10_0000 + pair as u64 * 0x10_0000 + u64::from(id) * 0x1000;
                let mut frame = vec![0u8; len as usize];
                run.mem.read_slice(&mut frame, GuestAddress(at)).unwrap();
                let ip = HEADER_LEN + 14;
                let udp_to_9 = frame.len() >= ip + 24
                    && frame[HEADER_LEN + 12..ip] == [0x08, 0x00]
                    && frame[ip + 9] == 17
                    && frame[ip + 22..ip + 24] == [0, 9];
                if udp_to_9 {
                    got[pair] += 1;
                    needs_csum &= frame[0] & 1 == 1;
                }
            }
            seen[pair] = idx;
        }
    }
    (got, needs_csum)
}

/// Two pairs over a real multi-queue tap, run by their workers: before
/// VQ_PAIRS_SET every host frame reaches pair 0; after VQ_PAIRS_SET 2 the
/// host's flows spread over both; with GUEST_CSUM the tap hands over
/// partial checksums (NEEDS_CSUM), so its offloads were set.
#[test]
#[ignore = "needs /dev/net/tun and CAP_NET_ADMIN"]
fn host_flows_reach_only_enabled_pairs_of_a_real_multi_queue_tap() {
    let taps = Tap::open_queues(Some("chmqd%d"), 2).unwrap();
    taps[0]
        .set_ipv4(
            std::net::Ipv4Addr::new(10, 253, 2, 1),
            std::net::Ipv4Addr::new(255, 255, 255, 0),
        )
        .unwrap();
    taps[0].bring_up().unwrap();
    let host_offloads = taps[0].probe_offloads().unwrap();
    let mut p = params("52:54:00:00:00:07", Offloads::ALL);
    p.host_offloads = host_offloads;
    let mut dev = Net::new(taps, p).unwrap();
    let mem = memory();
    let features = feature(VIRTIO_F_VERSION_1)
        | feature(VIRTIO_NET_F_MQ)
        | feature(VIRTIO_NET_F_CTRL_VQ)
        | feature(VIRTIO_NET_F_MRG_RXBUF)
        | feature(VIRTIO_NET_F_CSUM)
        | feature(VIRTIO_NET_F_GUEST_CSUM);
    let run = activate(&mut dev, features, &[0, 1, 2, 3, 4], &mem).unwrap();
    // The guest posts receive buffers on both pairs and kicks.
    let rx0 = MockSplitQueue::create(&mem, GuestAddress(0), RING);
    let rx1 = MockSplitQueue::create(&mem, GuestAddress(2 * 0x8000), RING);
    for (pair, mock) in [&rx0, &rx1].iter().enumerate() {
        let mut descs = Vec::new();
        for i in 0..24u16 {
            let at = 0x10_0000 + pair as u64 * 0x10_0000 + u64::from(i) * 0x1000;
            descs.extend(chain(i, &[(at, 2048, true)]));
        }
        mock.add_desc_chains(&descs, 0).unwrap();
        run.kicks[2 * pair].write(1).unwrap();
    }
    let mut seen = [0usize; 2];
    let (got, csum) = udp_flows(&run, 8, &[&rx0, &rx1], &mut seen);
    assert_eq!(got, [8, 0], "pair 1 is not enabled yet");
    assert!(csum, "GUEST_CSUM: the tap hands over partial checksums");
    assert_eq!(post_command(&run, 4, 4, &[4, 0, 2, 0]), OK);
    let (got, _) = udp_flows(&run, 12, &[&rx0, &rx1], &mut seen);
    assert_eq!(got[0] + got[1], 12);
    assert!(got[1] > 0, "no flow reached pair 1: {got:?}");
    dev.reset();
}

#[test]
fn a_gso_or_partial_checksum_frame_the_driver_did_not_accept_is_dropped() {
    let mem = memory();
    let (device, host) = UnixDatagram::pair().unwrap();
    device.set_nonblocking(true).unwrap();
    let counters = Arc::new(NetCounters::default());
    let mut rx = receive(Arc::new(device), counters.clone(), 0);
    let mock = MockSplitQueue::new(&mem, 16);
    mock.add_desc_chains(&chain(0, &[(0x10_0000, 4096, true)]), 0)
        .unwrap();
    let mut queue: Queue = mock.create_queue().unwrap();
    // NEEDS_CSUM, then a TCPv4 GSO frame, then a plain one.
    let mut csum = host_frame(100);
    csum[0] = 1;
    let mut tso = host_frame(3000);
    tso[1] = 1;
    host.send(&csum).unwrap();
    host.send(&tso).unwrap();
    host.send(&host_frame(100)).unwrap();
    assert!(rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap());
    assert_eq!(counters.rx_dropped.load(Ordering::Relaxed), 2);
    assert_eq!(mock.used().idx().load(), 1);
    assert_eq!(used(&mock, 0), (0, (HEADER_LEN + 100) as u32));
    // Accepted, the same frames go through.
    let (device, host) = UnixDatagram::pair().unwrap();
    device.set_nonblocking(true).unwrap();
    let accepted = feature(VIRTIO_NET_F_GUEST_CSUM) | feature(VIRTIO_NET_F_GUEST_TSO4);
    let mut rx = receive(Arc::new(device), counters.clone(), accepted);
    mock.add_desc_chains(&chain(1, &[(0x20_0000, 4096, true)]), 1)
        .unwrap();
    mock.add_desc_chains(&chain(2, &[(0x30_0000, 4096, true)]), 2)
        .unwrap();
    host.send(&csum).unwrap();
    host.send(&tso).unwrap();
    assert!(rx.input_ready(&mut queue, &mem, Progress::QUIET).unwrap());
    assert_eq!(used(&mock, 1), (1, csum.len() as u32));
    assert_eq!(used(&mock, 2), (2, tso.len() as u32));
    assert_eq!(counters.rx_dropped.load(Ordering::Relaxed), 2);
}
