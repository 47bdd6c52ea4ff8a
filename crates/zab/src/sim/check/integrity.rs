//! Integrity (Zab.tla): a delivered transaction was broadcast by a primary,
//! with that payload. Also: no zxid is ever broadcast with two payloads (which
//! would mean two primaries in one epoch).

use std::collections::BTreeMap;

use super::{Txn, Violation};
use crate::{NodeId, Zxid};

/// Every transaction ever broadcast.
#[derive(Debug, Default)]
pub struct Integrity {
    broadcast: BTreeMap<Zxid, (u64, NodeId)>,
}

impl Integrity {
    /// A primary broadcast these transactions.
    pub fn on_broadcast(&mut self, leader: NodeId, txns: &[Txn]) -> Result<(), Violation> {
        for (z, p) in txns {
            if let Some((q, other)) = self.broadcast.insert(*z, (*p, leader)) {
                if q != *p {
                    return Err(Violation::new(
                        "Integrity",
                        format!("zxid {z} broadcast twice: #{q} by {other} and #{p} by {leader}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A member delivered a transaction.
    pub fn on_deliver(&mut self, node: NodeId, (z, p): Txn) -> Result<(), Violation> {
        match self.broadcast.get(&z) {
            Some((q, _)) if *q == p => Ok(()),
            Some((q, _)) => Err(Violation::new(
                "Integrity",
                format!("member {node} delivered {z}#{p} but {z} was broadcast as #{q}"),
            )),
            None => Err(Violation::new(
                "Integrity",
                format!("member {node} delivered {z}#{p}, never broadcast"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_delivery_of_a_transaction_nobody_broadcast_and_zxid_reuse() {
        let mut c = Integrity::default();
        c.on_broadcast(1, &[(Zxid::new(1, 1), 5)]).unwrap();
        c.on_deliver(2, (Zxid::new(1, 1), 5)).unwrap();
        assert!(c.on_deliver(2, (Zxid::new(1, 2), 6)).is_err());
        assert!(c.on_deliver(2, (Zxid::new(1, 1), 6)).is_err());
        assert!(c.on_broadcast(3, &[(Zxid::new(1, 1), 7)]).is_err());
    }
}
