//! A committed entry is never lost: when any member applies a transaction, a
//! quorum must hold it durably (on disk or in durable applied state), so
//! every crash pattern that leaves a quorum's disks keeps it. Also the
//! driver contract: `Commit{upto}` never passes the member's durable log.

use super::{Txn, Violation};
use crate::{NodeId, Zxid};

/// Judges each delivery against the number of durable holders.
#[derive(Debug)]
pub struct QuorumDurability {
    quorum: usize,
}

impl QuorumDurability {
    /// For an ensemble whose quorum is `quorum`.
    pub fn new(quorum: usize) -> QuorumDurability {
        QuorumDurability { quorum }
    }

    /// `node` applies `txn`, which `holders` members hold durably.
    pub fn on_deliver(&mut self, node: NodeId, txn: Txn, holders: usize) -> Result<(), Violation> {
        if holders < self.quorum {
            return Err(Violation::new(
                "QuorumDurability",
                format!(
                    "member {node} applied {}#{} held durably by {holders} members (quorum {})",
                    txn.0, txn.1, self.quorum
                ),
            ));
        }
        Ok(())
    }

    /// `node` was told to commit up to `upto` with only `persisted` durable.
    pub fn on_commit(
        &mut self,
        node: NodeId,
        upto: Zxid,
        persisted: Zxid,
    ) -> Result<(), Violation> {
        if upto > persisted {
            return Err(Violation::new(
                "CommitBeyondPersisted",
                format!("member {node} got Commit{{{upto}}} with only {persisted} durable"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_applying_an_entry_a_quorum_does_not_hold_and_commit_past_disk() {
        let mut c = QuorumDurability::new(2);
        assert!(c.on_deliver(1, (Zxid::new(1, 1), 1), 2).is_ok());
        assert!(c.on_deliver(1, (Zxid::new(1, 2), 2), 1).is_err());
        assert!(c.on_commit(1, Zxid::new(1, 2), Zxid::new(1, 1)).is_err());
        assert!(c.on_commit(1, Zxid::new(1, 1), Zxid::new(1, 1)).is_ok());
    }
}
