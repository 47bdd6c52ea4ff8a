//! LocalPrimaryOrder and GlobalPrimaryOrder (Zab.tla). A primary broadcasts
//! its epoch's transactions with consecutive counters from 1, so "delivered
//! in broadcast order, none skipped" means: in the global delivered sequence
//! each transaction follows its predecessor in the same epoch by one counter,
//! and a new epoch (which must be larger: global order) starts at counter 1.

use super::{Txn, Violation};
use crate::core::follows;
use crate::{NodeId, Zxid};

/// Stateless: judges each extension of the global sequence.
#[derive(Debug, Default)]
pub struct PrimaryOrder;

impl PrimaryOrder {
    /// `txn` extends the global sequence whose last element is `prev`.
    pub fn on_new_global(
        &mut self,
        node: NodeId,
        prev: Option<Txn>,
        txn: Txn,
    ) -> Result<(), Violation> {
        let p = prev.map_or(Zxid::ZERO, |t| t.0);
        if follows(p, txn.0) {
            return Ok(());
        }
        let name =
            if txn.0.epoch() < p.epoch() || (txn.0.epoch() > p.epoch() && txn.0.counter() == 1) {
                "GlobalPrimaryOrder"
            } else {
                "LocalPrimaryOrder"
            };
        Err(Violation::new(
            name,
            format!("member {node} delivered {} right after {}", txn.0, p),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_a_skipped_transaction_and_an_older_epoch_after_a_newer_one() {
        let mut c = PrimaryOrder;
        let t = |e, n| (Zxid::new(e, n), 0);
        assert!(c.on_new_global(1, None, t(1, 1)).is_ok());
        assert!(c.on_new_global(1, Some(t(1, 1)), t(1, 2)).is_ok());
        assert_eq!(
            c.on_new_global(1, Some(t(1, 1)), t(1, 3))
                .unwrap_err()
                .invariant,
            "LocalPrimaryOrder"
        );
        assert_eq!(
            c.on_new_global(1, Some(t(2, 1)), t(1, 1))
                .unwrap_err()
                .invariant,
            "GlobalPrimaryOrder"
        );
        assert!(c.on_new_global(1, Some(t(1, 4)), t(3, 1)).is_ok());
        assert!(c.on_new_global(1, Some(t(1, 4)), t(3, 2)).is_err());
    }
}
