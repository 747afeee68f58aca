//! virtio-net's queues over guest-built descriptor chains, a datagram
//! socketpair standing in for the tap: the input is a header (how many
//! frames the host sends, bit 7: MRG_RXBUF accepted; and their length)
//! plus guest RAM holding the transmit queue (descriptor table, available
//! ring) at 0x0, the receive queue at 0x400 and the control queue at
//! 0x800, and the buffers. Every available transmit chain is sent, the
//! host's frames are delivered into the receive chains, every control
//! chain is answered. Besides "never panics": every frame the host sees
//! has a whole header and fits a frame; every host frame is delivered,
//! dropped or still waiting, and the byte counters match the frames
//! delivered and sent; the one pair stays enabled whatever the commands.
#![no_main]

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use libfuzzer_sys::fuzz_target;
use std::sync::atomic::AtomicU64;

use virtio_devices::net::{
    Control, HEADER_LEN, MAX_FRAME, NetCounters, PairLink, Pairs, Receive, Transmit,
};
use virtio_devices::worker::{Progress, QueueHandler};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const RAM: usize = 0x1_0000;
const QUEUE_SIZE: u16 = 16;
const TX_BASE: u64 = 0x0;
const RX_BASE: u64 = 0x400;
const CTRL_BASE: u64 = 0x800;
/// VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MQ.
const MRG_RXBUF: u64 = 1 << 15;
const MQ: u64 = 1 << 22;
/// Host frames per input at most.
const MAX_HOST_FRAMES: u8 = 8;

/// A queue whose descriptor table, available and used rings start at
/// `base`, `base + 0x100` and `base + 0x200`.
fn queue(base: u64) -> Queue {
    let mut q = Queue::new(QUEUE_SIZE).unwrap();
    q.set_size(QUEUE_SIZE);
    q.set_desc_table_address(Some(base as u32), Some(0));
    q.set_avail_ring_address(Some((base + 0x100) as u32), Some(0));
    q.set_used_ring_address(Some((base + 0x200) as u32), Some(0));
    q.set_ready(true);
    q
}

fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fuzz_target!(|data: &[u8]| {
    let [frames, len_lo, len_hi, ram @ ..] = data else {
        return;
    };
    let features = if frames & 0x80 != 0 { MRG_RXBUF | MQ } else { MQ };
    let frames = (frames & 0x7f) % (MAX_HOST_FRAMES + 1);
    let frame_len = usize::from(u16::from_le_bytes([*len_lo, *len_hi]));
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
    let len = ram.len().min(RAM);
    mem.write_slice(&ram[..len], GuestAddress(0)).unwrap();
    let (device, host) = UnixDatagram::pair().unwrap();
    device.set_nonblocking(true).unwrap();
    host.set_nonblocking(true).unwrap();
    let device = Arc::new(device);
    let counters = Arc::new(NetCounters::default());
    let mut tx = Transmit::new(device.clone(), counters.clone());
    let features = Arc::new(AtomicU64::new(features));
    let link = Arc::new(PairLink::new(true).unwrap());
    let mut rx = Receive::new(device.clone(), counters.clone(), link, features.clone());
    let pairs = Arc::new(Pairs::new(vec![device]).unwrap());
    pairs.enable(1).unwrap();
    let mut control = Control::new(pairs.clone(), features);
    let mut ctrlq = queue(CTRL_BASE);
    control.process_queue(&mut ctrlq, &mem, Progress::QUIET);
    assert_eq!(pairs.enabled(), 1, "one pair, whatever the commands");

    let mut txq = queue(TX_BASE);
    tx.process_queue(&mut txq, &mem, Progress::QUIET);
    let mut seen = 0u64;
    let mut seen_bytes = 0u64;
    let mut buf = vec![0u8; HEADER_LEN + MAX_FRAME + 1];
    while let Ok(n) = host.recv(&mut buf) {
        assert!(n >= HEADER_LEN && n <= HEADER_LEN + MAX_FRAME, "{n}-byte frame sent");
        seen += 1;
        seen_bytes += (n - HEADER_LEN) as u64;
    }
    assert_eq!(seen, load(&counters.tx_frames));
    assert_eq!(seen_bytes, load(&counters.tx_bytes));

    let mut rxq = queue(RX_BASE);
    let frame: Vec<u8> = (0..frame_len).map(|i| i as u8).collect();
    let mut sent = 0u64;
    for _ in 0..frames {
        if host.send(&frame).is_ok() {
            sent += 1;
        }
    }
    // Deliver what fits, then a "kick" with the same buffers.
    let _ = rx.input_ready(&mut rxq, &mem, Progress::QUIET);
    rx.process_queue(&mut rxq, &mem, Progress::QUIET);
    let delivered = load(&counters.rx_frames);
    let dropped = load(&counters.rx_dropped);
    assert!(delivered + dropped <= sent, "{delivered} + {dropped} > {sent}");
    if frame_len >= HEADER_LEN {
        assert_eq!(load(&counters.rx_bytes), delivered * (frame_len - HEADER_LEN) as u64);
    } else {
        assert_eq!(delivered, 0, "a runt was delivered");
    }
});
