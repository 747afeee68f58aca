//! SMMUv3 circular queue pointers (SMMUv3 spec 3.5 "Command and Event queues").
//!
//! A PROD or CONS register holds an index in bits `[log2size-1:0]` and a wrap
//! flag in bit `log2size`. The queue is empty when index and wrap are equal,
//! full when the indexes are equal and the wraps differ. The same arithmetic
//! serves the trapped SMMU command queue, the event queue and the CMDQ-V's
//! VCMDQs, whose PROD/CONS registers use the same encoding.

/// The largest LOG2SIZE a queue may have (5-bit field; the architecture caps
/// real queues at 19, IDR1.CMDQS/EVTQS caps them further).
pub const MAX_LOG2SIZE: u32 = 19;

/// Pointer arithmetic for one queue of `1 << log2size` entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueGeometry {
    log2size: u32,
}

impl QueueGeometry {
    /// A geometry for `1 << log2size` entries; `log2size` is clamped to
    /// [`MAX_LOG2SIZE`] the way hardware clamps a too-large LOG2SIZE to its
    /// own maximum.
    pub fn new(log2size: u32) -> Self {
        QueueGeometry {
            log2size: log2size.min(MAX_LOG2SIZE),
        }
    }

    /// LOG2SIZE of the queue.
    pub fn log2size(self) -> u32 {
        self.log2size
    }

    /// Number of entries.
    pub fn entries(self) -> u32 {
        1 << self.log2size
    }

    /// The bits of a PROD/CONS register that hold index plus wrap flag.
    pub fn pointer_mask(self) -> u32 {
        (2u32 << self.log2size) - 1
    }

    /// The entry index part of a pointer.
    pub fn index(self, pointer: u32) -> u32 {
        pointer & (self.entries() - 1)
    }

    /// The wrap flag of a pointer.
    pub fn wrap(self, pointer: u32) -> bool {
        pointer & self.entries() != 0
    }

    /// True when no entry is between `cons` and `prod`.
    pub fn is_empty(self, prod: u32, cons: u32) -> bool {
        prod & self.pointer_mask() == cons & self.pointer_mask()
    }

    /// True when every entry is between `cons` and `prod`.
    pub fn is_full(self, prod: u32, cons: u32) -> bool {
        self.index(prod) == self.index(cons) && self.wrap(prod) != self.wrap(cons)
    }

    /// Number of entries between `cons` and `prod`.
    pub fn pending(self, prod: u32, cons: u32) -> u32 {
        let prod = prod & self.pointer_mask();
        let cons = cons & self.pointer_mask();
        prod.wrapping_sub(cons) & self.pointer_mask()
    }

    /// The pointer after `pointer`, toggling the wrap flag past the last entry.
    pub fn next(self, pointer: u32) -> u32 {
        pointer.wrapping_add(1) & self.pointer_mask()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_when_index_and_wrap_match() {
        let q = QueueGeometry::new(3);
        assert!(q.is_empty(5, 5));
        assert!(q.is_empty(0x8 | 2, 0x8 | 2));
        assert!(!q.is_empty(0x8 | 2, 2));
    }

    #[test]
    fn full_when_index_matches_and_wrap_differs() {
        let q = QueueGeometry::new(3);
        assert!(q.is_full(0x8 | 4, 4));
        assert!(q.is_full(4, 0x8 | 4));
        assert!(!q.is_full(4, 4));
    }

    #[test]
    fn next_toggles_wrap_after_last_entry() {
        let q = QueueGeometry::new(2);
        assert_eq!(q.next(3), 0x4);
        assert_eq!(q.next(0x4 | 3), 0);
        assert_eq!(q.next(1), 2);
    }

    #[test]
    fn pending_counts_across_wrap() {
        let q = QueueGeometry::new(2);
        assert_eq!(q.pending(0x4 | 1, 3), 2);
        assert_eq!(q.pending(0x4 | 3, 3), 4);
        assert_eq!(q.pending(2, 2), 0);
    }

    #[test]
    fn pointer_bits_above_wrap_are_ignored() {
        let q = QueueGeometry::new(2);
        assert!(q.is_empty(0x7f00_0001, 1));
        assert_eq!(q.pending(0x8000_0003, 0x0100_0001), 2);
    }

    #[test]
    fn log2size_is_clamped() {
        assert_eq!(QueueGeometry::new(31).log2size(), MAX_LOG2SIZE);
    }
}
