//! Notification suppression: what the worker publishes (avail_event, the
//! NO_NOTIFY flag) and when it interrupts (used_event), on a queue laid out
//! as a guest driver would.

use std::io::ErrorKind;
use std::sync::Arc;

use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::{Progress, QueueHandler, Signal, add_used_batch, serve_chains, serve_kick};
use crate::test_chain::chain;
use crate::{GuestMemory, QueueInterrupt};

const SIZE: u16 = 16;

fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

/// Makes `n` one-descriptor chains available from descriptor `first`.
fn offer(mock: &MockSplitQueue<'_, GuestMemory>, first: u16, n: u16) {
    for i in first..first + n {
        let desc = chain(i, &[(0x8_0000 + u64::from(i) * 0x100, 0x100, true)]);
        mock.add_desc_chains(&desc, i).unwrap();
    }
}

/// virtq_used.avail_event: after the used ring's `SIZE` elements.
fn avail_event(mock: &MockSplitQueue<'_, GuestMemory>, mem: &GuestMemory) -> u16 {
    let at = mock.used_addr().0 + 4 + 8 * u64::from(SIZE);
    mem.read_obj::<u16>(GuestAddress(at)).unwrap()
}

/// virtq_avail.used_event, written as a driver does.
fn set_used_event(mock: &MockSplitQueue<'_, GuestMemory>, mem: &GuestMemory, value: u16) {
    let at = mock.avail_addr().0 + 4 + 2 * u64::from(SIZE);
    mem.write_obj(value, GuestAddress(at)).unwrap();
}

fn used_flags(mock: &MockSplitQueue<'_, GuestMemory>, mem: &GuestMemory) -> u16 {
    mem.read_obj::<u16>(mock.used_addr()).unwrap()
}

/// Serves every chain; on its first call a driver on another CPU makes one
/// more chain available just after the handler's last look.
struct TakeAll {
    mem: GuestMemory,
    late: Option<(GuestAddress, u16)>,
    calls: usize,
}

impl QueueHandler for TakeAll {
    fn process_queue(&mut self, queue: &mut Queue, mem: &GuestMemory, _: Progress<'_>) -> bool {
        self.calls += 1;
        let used = serve_chains(queue, mem, "test", |_| 0);
        if let Some((avail, head)) = self.late.take() {
            let idx: u16 = self.mem.read_obj(avail.unchecked_add(2)).unwrap();
            let slot = avail.unchecked_add(4 + 2 * u64::from(idx % SIZE));
            self.mem.write_obj(head, slot).unwrap();
            self.mem.write_obj(idx + 1, avail.unchecked_add(2)).unwrap();
        }
        used
    }
}

/// Takes nothing (a receive queue with no frame to deliver).
struct Leave(usize);

impl QueueHandler for Leave {
    fn process_queue(&mut self, _queue: &mut Queue, _mem: &GuestMemory, _: Progress<'_>) -> bool {
        self.0 += 1;
        false
    }
}

#[test]
fn a_chain_made_available_while_serving_is_served_without_a_new_notification() {
    for event_idx in [false, true] {
        let mem = memory();
        let mock = MockSplitQueue::create(&mem, GuestAddress(0), SIZE);
        offer(&mock, 0, 3);
        // Descriptor 3 exists; the handler makes it available late.
        mock.desc_table()
            .store(3, chain(3, &[(0x9_0000, 0x100, true)])[0])
            .unwrap();
        let mut queue: Queue = mock.create_queue().unwrap();
        queue.set_event_idx(event_idx);
        let mut handler = TakeAll {
            mem: mem.clone(),
            late: Some((mock.avail_addr(), 3)),
            calls: 0,
        };
        assert!(serve_kick(&mut handler, &mut queue, &mem, Progress::QUIET));
        assert_eq!(mock.used().idx().load(), 4, "event_idx={event_idx}");
        assert_eq!(handler.calls, 2);
        assert_eq!(queue.next_avail(), 4);
        if event_idx {
            // The driver notifies again once it passes what was read.
            assert_eq!(avail_event(&mock, &mem), 4);
        } else {
            assert_eq!(used_flags(&mock, &mem), 0, "NO_NOTIFY left set");
        }
    }
}

#[test]
fn buffers_the_handler_leaves_end_the_round_with_notifications_on() {
    for event_idx in [false, true] {
        let mem = memory();
        let mock = MockSplitQueue::create(&mem, GuestAddress(0), SIZE);
        offer(&mock, 0, 2);
        let mut queue: Queue = mock.create_queue().unwrap();
        queue.set_event_idx(event_idx);
        let mut handler = Leave(0);
        assert!(!serve_kick(&mut handler, &mut queue, &mem, Progress::QUIET));
        assert_eq!(handler.0, 2, "served once, retried once, then left");
        assert_eq!(mock.used().idx().load(), 0);
        assert_eq!(
            used_flags(&mock, &mem),
            0,
            "event_idx={event_idx}: NO_NOTIFY left set"
        );
        if event_idx {
            assert_eq!(avail_event(&mock, &mem), 0);
        }
    }
}

#[test]
fn with_event_idx_the_guest_is_interrupted_only_when_used_event_is_passed() {
    let mem = memory();
    let mock = MockSplitQueue::create(&mem, GuestAddress(0), SIZE);
    let mut queue: Queue = mock.create_queue().unwrap();
    queue.set_event_idx(true);
    let vector = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let signal = Signal::new(
        QueueInterrupt::new(Some(vector.clone()), Default::default()),
        &queue,
    );
    let mut handler = TakeAll {
        mem: mem.clone(),
        late: None,
        calls: 0,
    };
    let signalled = |v: &EventFd| match v.read() {
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
        Err(e) => panic!("{e}"),
    };
    // (virtio-queue's mock lays the used ring right after the avail ring's
    // entries, over used_event: it is written just before each decision.)
    // The driver wants an interrupt once entry 5 is used: two are not it.
    offer(&mock, 0, 2);
    assert!(serve_kick(&mut handler, &mut queue, &mem, Progress::QUIET));
    set_used_event(&mock, &mem, 5);
    signal.notify(&queue, &mem);
    assert_eq!(signalled(&vector), 0);
    // Four more pass it: one interrupt for the batch.
    offer(&mock, 2, 4);
    assert!(serve_kick(&mut handler, &mut queue, &mem, Progress::QUIET));
    set_used_event(&mock, &mem, 5);
    signal.notify(&queue, &mem);
    assert_eq!(signalled(&vector), 1);
    assert_eq!(mock.used().idx().load(), 6);
}

#[test]
fn without_event_idx_every_round_that_used_buffers_interrupts() {
    let mem = memory();
    let mock = MockSplitQueue::create(&mem, GuestAddress(0), SIZE);
    let mut queue: Queue = mock.create_queue().unwrap();
    let vector = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let signal = Signal::new(
        QueueInterrupt::new(Some(vector.clone()), Default::default()),
        &queue,
    );
    set_used_event(&mock, &mem, 5);
    offer(&mock, 0, 1);
    let mut handler = Leave(0);
    let _ = serve_kick(&mut handler, &mut queue, &mem, Progress::QUIET);
    queue.add_used(&mem, 0, 0).unwrap();
    signal.notify(&queue, &mem);
    assert_eq!(vector.read().unwrap(), 1);
}

#[test]
fn a_batch_goes_on_the_used_ring_with_one_index_update_and_counts_for_the_interrupt() {
    let mem = memory();
    let mock = MockSplitQueue::create(&mem, GuestAddress(0), SIZE);
    let mut queue: Queue = mock.create_queue().unwrap();
    queue.set_event_idx(true);
    let (signal, vector) = super::counted::signal(&queue);
    // Wrap around the ring's end: entries at slots SIZE-1, 0 and 1.
    queue.set_next_used(SIZE - 1);
    mock.used().idx().store(SIZE - 1);
    add_used_batch(&mut queue, &mem, &[(3, 100), (7, 200), (2, 0)]).unwrap();
    assert_eq!(mock.used().idx().load(), SIZE + 2);
    assert_eq!(queue.next_used(), SIZE + 2);
    let ring = mock.used().ring();
    let got: Vec<(u32, u32)> = [SIZE - 1, 0, 1]
        .iter()
        .map(|&i| {
            let e = ring.ref_at(usize::from(i)).unwrap().load();
            (e.id(), e.len())
        })
        .collect();
    assert_eq!(got, [(3, 100), (7, 200), (2, 0)]);
    // The driver asked for an interrupt at the batch's second entry: the
    // decision sees all three (the signal started at 0, so this decision
    // covers every entry up to SIZE + 2).
    set_used_event(&mock, &mem, SIZE);
    signal.notify(&queue, &mem);
    assert_eq!(vector.read().unwrap(), 1);
    // Nothing used since: no second interrupt, whatever used_event says.
    set_used_event(&mock, &mem, SIZE + 1);
    signal.notify(&queue, &mem);
    assert_eq!(vector.read().unwrap_err().kind(), ErrorKind::WouldBlock);
    // A head past the ring is refused and nothing is written.
    assert!(add_used_batch(&mut queue, &mem, &[(1, 0), (SIZE, 0)]).is_err());
    assert_eq!(mock.used().idx().load(), SIZE + 2);
}
