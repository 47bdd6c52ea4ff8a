//! Batching by count and by bytes: the leader's queue of writes waiting for
//! the next proposal, and a follower's queue of writes to forward to the
//! leader. Plain state, no I/O: the driver pushes writes and takes batches.
//!
//! Every batch holds at most `max_entries` writes and `max_bytes` bytes,
//! each write counted as [`txn_wire_bytes`]; so a PROPOSAL, a DIFF message
//! (the core bounds those by the same measure) and a `Forward` message stay
//! within a peer frame (`Config::validate` checks that `max_bytes` plus
//! `PEER_MESSAGE_OVERHEAD_BYTES` fits `max_frame_bytes`). A write too large
//! for any batch is refused when it is pushed, never proposed: proposing it
//! would fail (the core refuses the batch) or could never be sent.

use keeper_store::Txn;
use std::collections::VecDeque;

/// The most bytes a timestamp adds to an encoded entry (a varint u64).
const TIMESTAMP_BYTES: usize = 10;

/// What a write counts for in batch bounds: the size of the log entry made
/// from it (its encoded txn and a timestamp, at most), plus
/// `keeper_zab::ENTRY_OVERHEAD_BYTES` — the same measure the core applies to
/// a proposal (`keeper_zab::Entry::wire_bytes`), never below it. It also
/// covers the write's request id in a `Forward` message.
pub(crate) fn txn_wire_bytes(txn: &Txn) -> usize {
    // Counting bytes allocates nothing; it cannot fail for our types.
    let encoded = postcard::experimental::serialized_size(txn).unwrap_or(usize::MAX);
    keeper_zab::wire_bytes(encoded.saturating_add(TIMESTAMP_BYTES))
}

/// A FIFO of writes cut into batches bounded by count and bytes.
#[derive(Debug)]
pub(crate) struct BatchQueue<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl<T> BatchQueue<T> {
    /// An empty queue whose batches hold at most `max_entries` writes and
    /// `max_bytes` bytes (both at least 1).
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> BatchQueue<T> {
        BatchQueue {
            items: VecDeque::new(),
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Queues a write that counts for `bytes`. A write larger than a whole
    /// batch is handed back: it could never be proposed.
    pub(crate) fn push(&mut self, item: T, bytes: usize) -> Result<(), T> {
        if bytes > self.max_bytes {
            return Err(item);
        }
        self.bytes += bytes;
        self.items.push_back((item, bytes));
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// A whole batch is waiting: the next batch would be cut by a bound.
    pub(crate) fn has_full_batch(&self) -> bool {
        self.items.len() >= self.max_entries || self.bytes >= self.max_bytes
    }

    /// Takes the next batch: the longest prefix of the queue within both
    /// bounds (one write at least, if any is queued).
    pub(crate) fn take_batch(&mut self) -> Vec<T> {
        let mut n = 0;
        let mut bytes = 0usize;
        for (_, b) in &self.items {
            if n == self.max_entries || bytes + b > self.max_bytes {
                break;
            }
            bytes += b;
            n += 1;
        }
        self.bytes -= bytes;
        self.items.drain(..n).map(|(item, _)| item).collect()
    }

    /// Takes every queued write (to fail them).
    pub(crate) fn take_all(&mut self) -> Vec<T> {
        self.bytes = 0;
        self.items.drain(..).map(|(item, _)| item).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use keeper_store::{Entry, Op};

    fn set(bytes: usize) -> Txn {
        Txn::Op(Op::Set {
            path: "/a/b".into(),
            data: Bytes::from(vec![7u8; bytes]),
            version: -1,
        })
    }

    /// Issue 9, problem 10: the leader proposed its whole queue as one batch,
    /// which could exceed `max_batch_entries`; the core refused it and every
    /// queued write got 503. Batches never exceed either bound.
    #[test]
    fn batches_never_exceed_the_entry_or_byte_bound() {
        let mut q = BatchQueue::new(4, 1000);
        for i in 0..10 {
            q.push(i, 10).unwrap();
        }
        assert!(q.has_full_batch());
        assert_eq!(q.take_batch(), vec![0, 1, 2, 3]);
        assert_eq!(q.take_batch(), vec![4, 5, 6, 7]);
        assert!(!q.has_full_batch());
        assert_eq!(q.take_batch(), vec![8, 9]);
        assert!(q.is_empty());
        assert!(q.take_batch().is_empty());

        let mut q = BatchQueue::new(100, 1000);
        for (i, bytes) in [400, 400, 300, 1000, 1, 999].into_iter().enumerate() {
            q.push(i, bytes).unwrap();
        }
        assert!(q.has_full_batch());
        assert_eq!(q.take_batch(), vec![0, 1]);
        assert_eq!(q.take_batch(), vec![2]);
        assert_eq!(q.take_batch(), vec![3], "a write of exactly max_bytes");
        assert_eq!(q.take_batch(), vec![4, 5]);
        assert!(q.is_empty() && !q.has_full_batch());
    }

    /// Issue 9, problem 11: a write that fits no batch is refused at once,
    /// never proposed.
    #[test]
    fn a_write_larger_than_a_batch_is_handed_back() {
        let mut q = BatchQueue::new(10, 100);
        assert_eq!(q.push("big", 101), Err("big"));
        q.push("small", 100).unwrap();
        assert_eq!(q.take_all(), vec!["small"]);
        assert!(!q.has_full_batch());
    }

    /// The measure is never below what the core counts for the entry made
    /// from the write (else the core could refuse a batch we cut).
    #[test]
    fn a_write_counts_at_least_as_much_as_its_entry() {
        for bytes in [0, 1, 127, 128, 70_000, 1 << 20] {
            let txn = set(bytes);
            let entry = Entry {
                time_ms: u64::MAX,
                txn: txn.clone(),
            }
            .encode();
            let counted = txn_wire_bytes(&txn);
            assert!(counted >= keeper_zab::wire_bytes(entry.len()));
            assert!(counted <= keeper_zab::wire_bytes(entry.len()) + TIMESTAMP_BYTES);
        }
    }
}
