//! A read-only snapshot of the core's state for `/v1/cluster` and metrics.

use serde::{Deserialize, Serialize};

use crate::action::Role;
use crate::message::NodeId;
use crate::Zxid;

/// Where the core stands. Cheap to build; take it after any call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This member.
    pub id: NodeId,
    /// Current role.
    pub role: Role,
    /// The leader this member follows (itself when leading), if known.
    pub leader: Option<NodeId>,
    /// True when serving (established leader, or follower after UPTODATE).
    pub serving: bool,
    /// Persisted acceptedEpoch.
    pub accepted_epoch: u32,
    /// Persisted currentEpoch.
    pub current_epoch: u32,
    /// The epoch of the current leadership (0 while unknown).
    pub leader_epoch: u32,
    /// Last zxid in the log (durable or not).
    pub last_zxid: Zxid,
    /// Last durable zxid.
    pub persisted_zxid: Zxid,
    /// Highest zxid known committed.
    pub committed_zxid: Zxid,
    /// Leader only: per-follower progress.
    pub followers: Vec<FollowerStatus>,
}

/// A leader's view of one follower.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerStatus {
    /// The follower.
    pub id: NodeId,
    /// True once it acked NEWLEADER (counts toward commit quorums).
    pub active: bool,
    /// Highest zxid it acked as durable.
    pub acked_zxid: Zxid,
    /// Ticks since the leader last heard from it.
    pub idle_ticks: u64,
}
