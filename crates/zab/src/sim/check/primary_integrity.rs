//! PrimaryIntegrity (Zab.tla): if a primary of epoch `e` broadcasts, then every
//! transaction of an earlier epoch that any member delivers is in that
//! primary's initial history. Checked when a primary is established (against
//! what was delivered so far) and whenever the global sequence grows (against
//! every primary established in a later epoch).

use std::collections::{BTreeMap, BTreeSet};

use super::{Txn, Violation};
use crate::NodeId;

#[derive(Debug)]
struct History {
    leader: NodeId,
    /// The first `applied_len` global transactions are in the history.
    applied_len: usize,
    /// Plus these log entries.
    log: BTreeSet<Txn>,
    /// Global sequence length when recorded (later deliveries are checked).
    seen: usize,
}

/// The initial histories of established primaries.
#[derive(Debug, Default)]
pub struct PrimaryIntegrity {
    histories: BTreeMap<u32, History>,
    global_len: usize,
}

impl PrimaryIntegrity {
    /// A primary was established in `epoch` with this history.
    pub fn on_established(
        &mut self,
        leader: NodeId,
        epoch: u32,
        applied_len: usize,
        log: &[Txn],
        global: &[Txn],
    ) -> Result<(), Violation> {
        let h = History {
            leader,
            applied_len,
            log: log.iter().copied().collect(),
            seen: global.len(),
        };
        for (i, t) in global.iter().enumerate() {
            if t.0.epoch() < epoch && !h.contains(i, t) {
                return Err(Violation::new(
                    "PrimaryIntegrity",
                    format!(
                        "primary {leader} of epoch {epoch} lacks delivered {}#{}",
                        t.0, t.1
                    ),
                ));
            }
        }
        self.histories.entry(epoch).or_insert(h);
        Ok(())
    }

    /// The global sequence grew by `txn`.
    pub fn on_new_global(&mut self, txn: Txn) -> Result<(), Violation> {
        let i = self.global_len;
        self.global_len += 1;
        for (epoch, h) in self.histories.range(txn.0.epoch() + 1..) {
            if i >= h.seen && !h.contains(i, &txn) {
                return Err(Violation::new(
                    "PrimaryIntegrity",
                    format!(
                        "{}#{} delivered but missing from primary {} of epoch {epoch}",
                        txn.0, txn.1, h.leader
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl History {
    fn contains(&self, index: usize, t: &Txn) -> bool {
        index < self.applied_len || self.log.contains(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Zxid;

    #[test]
    fn rejects_a_primary_missing_an_earlier_delivered_transaction() {
        let t1 = (Zxid::new(1, 1), 1);
        let t2 = (Zxid::new(1, 2), 2);
        let mut c = PrimaryIntegrity::default();
        c.on_new_global(t1).unwrap();
        assert!(c.on_established(2, 2, 0, &[], &[t1]).is_err());
        let mut c = PrimaryIntegrity::default();
        c.on_new_global(t1).unwrap();
        c.on_established(2, 2, 1, &[], &[t1]).unwrap();
        // t2 (epoch 1) gets delivered later, but primary 2 of epoch 2 never had it.
        assert!(c.on_new_global(t2).is_err());
    }
}
