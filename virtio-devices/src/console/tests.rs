//! The console's queues on virtio-queue's mock queues.

use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::GuestAddress;

use super::*;

/// A `Write` into a shared vector.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
}

#[test]
fn guest_output_reaches_the_sink() {
    let mem = memory();
    let sink = Shared::default();
    let mut tx = Transmit {
        output: Arc::new(Mutex::new(Box::new(sink.clone()))),
    };
    mem.write_slice(b"hello hvc0\n", GuestAddress(0x10_0000))
        .unwrap();
    let mock = MockSplitQueue::new(&mem, 16);
    let desc = RawDescriptor::from(SplitDescriptor::new(0x10_0000, 11, 0, 0));
    mock.add_desc_chains(&[desc], 0).unwrap();
    let mut queue: Queue = mock.create_queue().unwrap();
    assert!(tx.process_queue(&mut queue, &mem, Progress::QUIET));
    assert_eq!(sink.0.lock().unwrap().as_slice(), b"hello hvc0\n");
    assert_eq!(mock.used().idx().load(), 1);
}

#[test]
fn input_waits_for_a_receive_buffer_and_fills_it() {
    let mem = memory();
    let mut rx = Receive {
        input: None,
        pending: VecDeque::new(),
    };
    let mock = MockSplitQueue::new(&mem, 16);
    let mut queue: Queue = mock.create_queue().unwrap();
    rx.pending.extend(b"typed");
    assert!(
        !rx.process_queue(&mut queue, &mem, Progress::QUIET),
        "no buffer yet"
    );
    let flags = VRING_DESC_F_WRITE as u16;
    let desc = RawDescriptor::from(SplitDescriptor::new(0x10_0000, 3, flags, 0));
    let desc2 = RawDescriptor::from(SplitDescriptor::new(0x20_0000, 64, flags, 0));
    mock.add_desc_chains(&[desc, desc2], 0).unwrap();
    assert!(rx.process_queue(&mut queue, &mem, Progress::QUIET));
    let mut got = [0u8; 5];
    mem.read_slice(&mut got[..3], GuestAddress(0x10_0000))
        .unwrap();
    mem.read_slice(&mut got[3..], GuestAddress(0x20_0000))
        .unwrap();
    assert_eq!(&got, b"typed");
    assert_eq!(mock.used().ring().ref_at(0).unwrap().load().len(), 3);
    assert_eq!(mock.used().ring().ref_at(1).unwrap().load().len(), 2);
    assert!(rx.pending.is_empty());
}

#[test]
fn the_config_announces_one_port() {
    let console = Console::new("c".into(), Box::new(io::sink()), None).unwrap();
    let mut ports = [0u8; 4];
    console.read_config(4, &mut ports);
    assert_eq!(u32::from_le_bytes(ports), 1);
    assert_eq!(console.queue_max_sizes().len(), 2);
}
