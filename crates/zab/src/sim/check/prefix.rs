//! Agreement, TotalOrder and PrefixConsistency (Zab.tla): the sequences of
//! transactions delivered by any two members are prefixes of one another.
//! Checked against one global sequence: every member's deliveries (across
//! crashes, since applied state is durable) must be a prefix of it.

use super::{Txn, Violation};
use crate::NodeId;

/// The global delivered sequence and each member's position in it.
#[derive(Debug)]
pub struct PrefixConsistency {
    global: Vec<Txn>,
    len: Vec<usize>,
}

impl PrefixConsistency {
    /// For members 1..=nodes.
    pub fn new(nodes: usize) -> PrefixConsistency {
        PrefixConsistency {
            global: Vec::new(),
            len: vec![0; nodes + 1],
        }
    }

    /// The longest delivered sequence so far.
    pub fn global(&self) -> &[Txn] {
        &self.global
    }

    /// How many transactions `node` delivered.
    pub fn position(&self, node: NodeId) -> usize {
        self.len.get(node as usize).copied().unwrap_or(0)
    }

    /// `node` delivers its next transaction.
    pub fn on_deliver(&mut self, node: NodeId, txn: Txn) -> Result<(), Violation> {
        let i = self.position(node);
        match self.global.get(i) {
            Some(g) if *g != txn => {
                return Err(Violation::new(
                    "PrefixConsistency",
                    format!(
                        "member {node} delivered {}#{} at position {i}, another member delivered {}#{} there",
                        txn.0, txn.1, g.0, g.1
                    ),
                ))
            }
            Some(_) => {}
            None => self.global.push(txn),
        }
        if let Some(l) = self.len.get_mut(node as usize) {
            *l = i + 1;
        }
        Ok(())
    }

    /// `node` restarted from a disk that holds only its first `len`
    /// deliveries (its applied state was not all durable; the whole-member
    /// simulator's stores lose what was not flushed). It delivers the rest
    /// again, and each must match the global sequence as before.
    pub fn on_restart(&mut self, node: NodeId, len: usize) -> Result<(), Violation> {
        let have = self.position(node);
        if len > have {
            return Err(Violation::new(
                "PrefixConsistency",
                format!("member {node} restarted with {len} transactions applied, more than the {have} it delivered"),
            ));
        }
        if let Some(l) = self.len.get_mut(node as usize) {
            *l = len;
        }
        Ok(())
    }

    /// `node`'s state was replaced by the first `len` global transactions.
    pub fn on_snapshot(&mut self, node: NodeId, len: usize) -> Result<(), Violation> {
        let have = self.position(node);
        if len < have || len > self.global.len() {
            return Err(Violation::new(
                "PrefixConsistency",
                format!("member {node} installed a snapshot of {len} transactions over its {have} delivered"),
            ));
        }
        if let Some(l) = self.len.get_mut(node as usize) {
            *l = len;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Zxid;

    #[test]
    fn rejects_two_members_delivering_different_transactions_at_one_position() {
        let mut c = PrefixConsistency::new(3);
        c.on_deliver(1, (Zxid::new(1, 1), 10)).unwrap();
        c.on_deliver(2, (Zxid::new(1, 1), 10)).unwrap();
        c.on_deliver(1, (Zxid::new(1, 2), 11)).unwrap();
        let v = c.on_deliver(2, (Zxid::new(1, 2), 99)).unwrap_err();
        assert_eq!(v.invariant, "PrefixConsistency");
    }

    #[test]
    fn a_restart_rewinds_but_never_advances_a_member() {
        let mut c = PrefixConsistency::new(2);
        c.on_deliver(1, (Zxid::new(1, 1), 1)).unwrap();
        c.on_deliver(1, (Zxid::new(1, 2), 2)).unwrap();
        assert!(c.on_restart(1, 3).is_err());
        c.on_restart(1, 1).unwrap();
        assert!(c.on_deliver(1, (Zxid::new(1, 2), 9)).is_err());
        c.on_deliver(1, (Zxid::new(1, 2), 2)).unwrap();
    }

    #[test]
    fn rejects_a_snapshot_that_moves_state_backwards() {
        let mut c = PrefixConsistency::new(2);
        c.on_deliver(1, (Zxid::new(1, 1), 1)).unwrap();
        c.on_deliver(1, (Zxid::new(1, 2), 2)).unwrap();
        assert!(c.on_snapshot(1, 1).is_err());
        assert!(c.on_snapshot(2, 2).is_ok());
    }
}
