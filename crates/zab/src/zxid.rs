//! Transaction ids: `zxid = epoch << 32 | counter`, totally ordered.

use serde::{Deserialize, Serialize};

/// A ZooKeeper transaction id: the high 32 bits are the leader epoch, the low
/// 32 bits a counter within that epoch. Ordered as a `u64`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Zxid(pub u64);

impl Zxid {
    /// The zxid before any transaction.
    pub const ZERO: Zxid = Zxid(0);

    /// Builds a zxid from an epoch and a counter.
    pub fn new(epoch: u32, counter: u32) -> Zxid {
        Zxid((u64::from(epoch) << 32) | u64::from(counter))
    }

    /// The epoch of the leader that stamped this zxid.
    pub fn epoch(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The position within the epoch.
    pub fn counter(self) -> u32 {
        self.0 as u32
    }
}

impl std::fmt::Display for Zxid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zxid_splits_into_epoch_and_counter_and_orders_by_epoch_first() {
        let z = Zxid::new(3, 7);
        assert_eq!(z.epoch(), 3);
        assert_eq!(z.counter(), 7);
        assert!(Zxid::new(2, u32::MAX) < Zxid::new(3, 0));
    }
}
