//! Invariant checkers of the simulator, one file per property (the names are
//! those of ZooKeeper's `Zab.tla` where one exists). The simulator reports
//! events (broadcast, deliver, establish, snapshot, read) as they happen and
//! every checker judges them incrementally, so a violation is caught at the
//! step that caused it.

mod durability;
mod integrity;
mod leaders;
mod prefix;
mod primary_integrity;
mod primary_order;
mod reads;

pub use durability::QuorumDurability;
pub use integrity::Integrity;
pub use leaders::OneLeaderPerEpoch;
pub use prefix::PrefixConsistency;
pub use primary_integrity::PrimaryIntegrity;
pub use primary_order::PrimaryOrder;
pub use reads::ReadIndexLinearizable;

use crate::{NodeId, Zxid};

/// A broken invariant: which one, and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's name (e.g. `PrefixConsistency`).
    pub invariant: &'static str,
    /// What the history did.
    pub detail: String,
}

impl Violation {
    pub fn new(invariant: &'static str, detail: String) -> Violation {
        Violation { invariant, detail }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

/// A transaction as the checkers see it: zxid and payload id.
pub type Txn = (Zxid, u64);

/// All checkers together, fed by the simulator.
#[derive(Debug)]
pub struct Checker {
    /// Agreement, TotalOrder, PrefixConsistency.
    pub prefix: PrefixConsistency,
    /// Integrity (and one payload per zxid).
    pub integrity: Integrity,
    /// LocalPrimaryOrder and GlobalPrimaryOrder.
    pub order: PrimaryOrder,
    /// PrimaryIntegrity.
    pub primary_integrity: PrimaryIntegrity,
    /// At most one established leader per epoch.
    pub leaders: OneLeaderPerEpoch,
    /// Committed entries are on a quorum of disks; commits never pass persistence.
    pub durability: QuorumDurability,
    /// Read barriers return a zxid covering every earlier commit.
    pub reads: ReadIndexLinearizable,
}

impl Checker {
    /// A checker for `nodes` members (ids 1..=nodes).
    pub fn new(nodes: usize) -> Checker {
        Checker {
            prefix: PrefixConsistency::new(nodes),
            integrity: Integrity::default(),
            order: PrimaryOrder,
            primary_integrity: PrimaryIntegrity::default(),
            leaders: OneLeaderPerEpoch::default(),
            durability: QuorumDurability::new(nodes / 2 + 1),
            reads: ReadIndexLinearizable::default(),
        }
    }

    /// A leader broadcast these transactions (in this order).
    pub fn on_broadcast(&mut self, leader: NodeId, txns: &[Txn]) -> Result<(), Violation> {
        self.integrity.on_broadcast(leader, txns)
    }

    /// `node` delivered (applied) `txn`; `durable_holders` members hold it on disk.
    pub fn on_deliver(
        &mut self,
        node: NodeId,
        txn: Txn,
        durable_holders: usize,
    ) -> Result<(), Violation> {
        self.integrity.on_deliver(node, txn)?;
        self.durability.on_deliver(node, txn, durable_holders)?;
        let position = self.prefix.position(node);
        let is_new = position == self.prefix.global().len();
        if is_new {
            self.order
                .on_new_global(node, self.prefix.global().last().copied(), txn)?;
            self.primary_integrity.on_new_global(txn)?;
        }
        self.prefix.on_deliver(node, txn)
    }

    /// `node` installed a snapshot holding the first `len` globally delivered transactions.
    pub fn on_snapshot(&mut self, node: NodeId, len: usize) -> Result<(), Violation> {
        self.prefix.on_snapshot(node, len)
    }

    /// `leader` became established in `epoch` with this history: the first
    /// `applied_len` globally delivered transactions plus `log` entries.
    pub fn on_established(
        &mut self,
        leader: NodeId,
        epoch: u32,
        applied_len: usize,
        log: &[Txn],
    ) -> Result<(), Violation> {
        self.leaders.on_established(leader, epoch)?;
        self.primary_integrity
            .on_established(leader, epoch, applied_len, log, self.prefix.global())
    }
}
