//! What the core asks its driver to do. The core never performs I/O itself:
//! every effect leaves it as an [`Action`], in the order it must happen.
//!
//! # To ensure correctness (the driver's contract)
//! - **Execute actions in order.** Before the next call into the core, every
//!   action returned by the previous call has been executed, so that the
//!   [`LogReader`](crate::LogReader) the core reads reflects every
//!   [`Action::Append`] and [`Action::Truncate`] (even if not yet durable).
//! - **Synchronous persistence.** [`Action::PersistAcceptedEpoch`],
//!   [`Action::PersistCurrentEpoch`] and [`Action::Truncate`] must be durable
//!   (fsynced) before the driver executes the next action. The core relies on
//!   this: the `Send` that follows a persist (e.g. ACKEPOCH after
//!   acceptedEpoch) may only leave once the persist is on disk. Installing a
//!   snapshot (see [`Core::snapshot_installed`](crate::Core::snapshot_installed))
//!   is synchronous too.
//! - **Asynchronous appends.** [`Action::Append`] may complete later (group
//!   commit). The driver reports durability with
//!   [`Core::on_persisted`](crate::Core::on_persisted)`(upto)`, meaning every
//!   entry of the current log with zxid `<= upto` is durable. Durability is
//!   prefix-ordered: entries become durable in log order. A completion that was
//!   in flight when a snapshot was installed must be dropped, not reported.
//!   Every send that depends on durability (ACK, ACKEPOCH, the NEWLEADER ack)
//!   is emitted by the core only after the relevant persistence is reported.
//! - **Commit.** [`Action::Commit`] never exceeds what this member has durably
//!   persisted, so the driver can read committed entries back from its own log.
//!   Commits arrive in increasing order; a driver that restarted may see a
//!   `Commit` at or below what it already applied and must skip those entries.

use serde::{Deserialize, Serialize};

use crate::message::{Entry, Message, NodeId};
use crate::Zxid;

/// The role of a member, as reported in [`Action::RoleChanged`] and [`Status`](crate::Status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Electing a leader.
    Looking,
    /// Following a leader (discovery, sync or broadcast).
    Following,
    /// Leading (discovery, sync or broadcast).
    Leading,
}

/// One effect for the driver to perform. See the module docs for ordering rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send `msg` to peer `to` over the FIFO peer link. Loss is tolerated.
    Send {
        /// Destination member.
        to: NodeId,
        /// The message.
        msg: Message,
    },
    /// Append these consecutive entries to the log (visible at once to the
    /// `LogReader`; durability reported later through `on_persisted`).
    Append {
        /// Entries in zxid order, following the current last entry.
        entries: Vec<Entry>,
    },
    /// Remove every log entry with zxid greater than `to`. Synchronous.
    Truncate {
        /// Last zxid to keep.
        to: Zxid,
    },
    /// Durably store `acceptedEpoch = epoch`. Synchronous.
    PersistAcceptedEpoch {
        /// The new acceptedEpoch.
        epoch: u32,
    },
    /// Durably store `currentEpoch = epoch`. Synchronous.
    PersistCurrentEpoch {
        /// The new currentEpoch.
        epoch: u32,
    },
    /// Every entry up to `upto` is committed: apply them in zxid order.
    /// Never beyond this member's durable log.
    Commit {
        /// Highest committed zxid (inclusive).
        upto: Zxid,
    },
    /// Leader only: stream a snapshot of the applied state to `to` on the same
    /// FIFO link, then call [`Core::snapshot_sent`](crate::Core::snapshot_sent)`(to, Z)`
    /// where `Z` is the snapshot's zxid. The snapshot must include every
    /// `Commit` emitted before this action (apply them first), so that
    /// `Z` is at least that commit point and the follower's state never moves
    /// backwards.
    SendSnapshot {
        /// The follower that needs a snapshot.
        to: NodeId,
    },
    /// The member changed role, leader, epoch or serving state.
    RoleChanged {
        /// New role.
        role: Role,
        /// The leader this member believes in, if any.
        leader: Option<NodeId>,
        /// The leader epoch (0 while unknown).
        epoch: u32,
        /// True once the leader is established (leader) or UPTODATE was
        /// received (follower): writes and reads may be served.
        serving: bool,
    },
    /// The read barrier `ctx` passed: a linearizable read may be answered once
    /// this member has applied `zxid`.
    ReadReady {
        /// Caller-chosen context id.
        ctx: u64,
        /// The commit zxid the read must wait for.
        zxid: Zxid,
    },
    /// The read barrier `ctx` failed (no leader, step-down or timeout).
    ReadFailed {
        /// Caller-chosen context id.
        ctx: u64,
    },
}
