//! Linearizable reads: the zxid a read barrier returns must cover every
//! transaction that any member had applied when the read started.

use std::collections::BTreeMap;

use super::Violation;
use crate::{NodeId, Zxid};

/// Pending reads and their lower bounds.
#[derive(Debug, Default)]
pub struct ReadIndexLinearizable {
    pending: BTreeMap<(NodeId, u64), Zxid>,
    /// Reads confirmed.
    pub ready: u64,
    /// Reads failed.
    pub failed: u64,
}

impl ReadIndexLinearizable {
    /// `node` started read `ctx` when the highest applied zxid anywhere was `applied`.
    pub fn on_start(&mut self, node: NodeId, ctx: u64, applied: Zxid) {
        self.pending.insert((node, ctx), applied);
    }

    /// Read `ctx` on `node` was confirmed at `zxid`.
    pub fn on_ready(&mut self, node: NodeId, ctx: u64, zxid: Zxid) -> Result<(), Violation> {
        self.ready += 1;
        match self.pending.remove(&(node, ctx)) {
            Some(bound) if zxid < bound => Err(Violation::new(
                "ReadIndexLinearizable",
                format!("read {ctx} on member {node} answered {zxid}, but {bound} was applied before it started"),
            )),
            Some(_) => Ok(()),
            None => Err(Violation::new("ReadIndexLinearizable", format!("read {ctx} on member {node} resolved twice"))),
        }
    }

    /// Read `ctx` on `node` failed.
    pub fn on_failed(&mut self, node: NodeId, ctx: u64) {
        self.failed += 1;
        self.pending.remove(&(node, ctx));
    }

    /// Forget the reads of a crashed member.
    pub fn on_crash(&mut self, node: NodeId) {
        self.pending.retain(|(n, _), _| *n != node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_a_read_index_below_an_earlier_commit_and_double_resolution() {
        let mut c = ReadIndexLinearizable::default();
        c.on_start(1, 7, Zxid::new(1, 5));
        assert!(c.on_ready(1, 7, Zxid::new(1, 4)).is_err());
        c.on_start(1, 8, Zxid::new(1, 5));
        assert!(c.on_ready(1, 8, Zxid::new(1, 5)).is_ok());
        assert!(c.on_ready(1, 8, Zxid::new(1, 6)).is_err());
    }
}
