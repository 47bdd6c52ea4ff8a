//! Wire messages between members: election notifications and the discovery,
//! synchronization and broadcast messages of ZAB.
//!
//! The core produces these inside [`Action::Send`](crate::Action::Send) and
//! consumes them in [`Core::step`](crate::Core::step). They derive serde so the
//! server can frame them (postcard) on its peer links; they carry no socket
//! knowledge. Every message after discovery carries the leader epoch it belongs
//! to, so a receiver can drop messages from an older leadership.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::Zxid;

/// A member's id in the ensemble (ZooKeeper's `myid`).
pub type NodeId = u64;

/// One transaction in the log: its zxid and the opaque payload the server encoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// Position of the entry in the total order.
    pub zxid: Zxid,
    /// Opaque transaction bytes (the server's own encoding).
    pub data: Bytes,
}

/// What one entry adds to a message beyond its payload, at most (a compact
/// encoding such as postcard: a varint zxid and a varint length).
pub const ENTRY_OVERHEAD_BYTES: usize = 16;

impl Entry {
    /// The bytes this entry counts for in the byte bounds of batches and
    /// DIFF messages (`Config::max_batch_bytes`, `max_sync_batch_bytes`,
    /// `max_diff_bytes`): its payload plus [`ENTRY_OVERHEAD_BYTES`].
    pub fn wire_bytes(&self) -> usize {
        wire_bytes(self.data.len())
    }
}

/// [`Entry::wire_bytes`] of an entry whose payload is `payload_bytes` long.
pub fn wire_bytes(payload_bytes: usize) -> usize {
    payload_bytes.saturating_add(ENTRY_OVERHEAD_BYTES)
}

/// A vote in leader election: who should lead, and the (epoch, zxid) that
/// candidate reported. Votes are totally ordered by (epoch, zxid, leader), as in
/// ZooKeeper's FastLeaderElection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Vote {
    /// The proposed leader.
    pub leader: NodeId,
    /// The proposed leader's last logged zxid.
    pub zxid: Zxid,
    /// The proposed leader's `currentEpoch`.
    pub epoch: u32,
}

impl Vote {
    fn key(&self) -> (u32, Zxid, NodeId) {
        (self.epoch, self.zxid, self.leader)
    }
}

impl PartialOrd for Vote {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Vote {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// The state a member reports in its election notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServerState {
    /// Taking part in an election.
    Looking,
    /// Following the leader named in the vote.
    Following,
    /// Leading (the vote names this member).
    Leading,
    /// Observing (non-voting). Reserved: observers are not implemented yet.
    Observing,
}

/// Every message the core exchanges with its peers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Message {
    /// Election: the sender's current vote, election round and state.
    Notification {
        /// The sender's vote.
        vote: Vote,
        /// The sender's election round (ZooKeeper's logical clock).
        round: u64,
        /// The sender's state.
        state: ServerState,
    },
    /// Discovery, follower -> leader: FOLLOWERINFO.
    FollowerInfo {
        /// The follower's persisted acceptedEpoch.
        accepted_epoch: u32,
        /// The follower's last logged zxid.
        last_zxid: Zxid,
    },
    /// Discovery, leader -> follower: LEADERINFO with the proposed new epoch.
    LeaderInfo {
        /// The new epoch.
        epoch: u32,
    },
    /// Discovery, follower -> leader: ACKEPOCH. Sent only after the follower
    /// persisted `acceptedEpoch = epoch`.
    AckEpoch {
        /// The epoch being acknowledged.
        epoch: u32,
        /// The follower's persisted currentEpoch.
        current_epoch: u32,
        /// The follower's last logged zxid.
        last_zxid: Zxid,
        /// True when this ack moved the follower's acceptedEpoch to `epoch`.
        /// Only fresh acks count toward the leader's discovery quorum (a member
        /// that had already accepted `epoch` may rejoin but not vote twice).
        fresh: bool,
    },
    /// Sync, leader -> follower: drop every entry after `to`.
    Trunc {
        /// Leader epoch.
        epoch: u32,
        /// Last zxid to keep.
        to: Zxid,
    },
    /// Sync, leader -> follower: entries the follower lacks (DIFF).
    Diff {
        /// Leader epoch.
        epoch: u32,
        /// The zxid right before the first entry; the follower's log must end there.
        prev: Zxid,
        /// Consecutive entries, in zxid order.
        entries: Vec<Entry>,
    },
    /// Sync, leader -> follower: a snapshot follows on this link (SNAP). The
    /// driver streams it; the follower's driver installs it and calls
    /// [`Core::snapshot_installed`](crate::Core::snapshot_installed).
    Snap {
        /// Leader epoch.
        epoch: u32,
    },
    /// Sync done, leader -> follower: NEWLEADER. The follower's log must now end at `last_zxid`.
    NewLeader {
        /// Leader epoch.
        epoch: u32,
        /// The last zxid of the synchronized history.
        last_zxid: Zxid,
    },
    /// Follower -> leader: ack of NEWLEADER, sent after the synced log and
    /// `currentEpoch` are durable.
    AckNewLeader {
        /// Leader epoch.
        epoch: u32,
        /// The follower's durable last zxid.
        zxid: Zxid,
    },
    /// Leader -> follower: UPTODATE, the leader is established; start serving.
    UpToDate {
        /// Leader epoch.
        epoch: u32,
        /// The leader's commit zxid.
        commit: Zxid,
    },
    /// Broadcast, leader -> follower: a batch of proposals.
    Proposal {
        /// Leader epoch.
        epoch: u32,
        /// The zxid right before the first entry; the follower's log must end
        /// there (a gap means a lost message: the follower resynchronizes).
        prev: Zxid,
        /// Consecutive entries, in zxid order.
        entries: Vec<Entry>,
        /// The leader's commit zxid (piggybacked).
        commit: Zxid,
    },
    /// Broadcast, follower -> leader: every entry up to `zxid` is durable here (cumulative).
    Ack {
        /// Leader epoch.
        epoch: u32,
        /// Highest durable zxid.
        zxid: Zxid,
    },
    /// Broadcast, leader -> follower: everything up to `zxid` is committed.
    Commit {
        /// Leader epoch.
        epoch: u32,
        /// Commit zxid.
        zxid: Zxid,
    },
    /// Leader -> follower liveness ping; also carries the read-barrier round.
    Heartbeat {
        /// Leader epoch.
        epoch: u32,
        /// The leader's commit zxid.
        commit: Zxid,
        /// The leader's last proposed zxid: every entry up to it went to
        /// this follower before this heartbeat, on the same FIFO link. A
        /// follower whose log ends below it lost a message and resyncs.
        last: Zxid,
        /// The leader's current read round.
        read_round: u64,
    },
    /// Follower -> leader answer to a heartbeat.
    HeartbeatAck {
        /// Leader epoch.
        epoch: u32,
        /// The read round echoed back.
        read_round: u64,
        /// The follower's acked (durable) zxid, so a lost ACK is repaired.
        acked: Zxid,
    },
    /// Follower -> leader: please run a read barrier for `ctx`.
    ReadRequest {
        /// Leader epoch.
        epoch: u32,
        /// Caller-chosen context id.
        ctx: u64,
    },
    /// Leader -> follower: result of a read barrier (`None` = failed).
    ReadResponse {
        /// Leader epoch.
        epoch: u32,
        /// Caller-chosen context id.
        ctx: u64,
        /// The commit zxid a read must wait for, or `None` if the barrier failed.
        zxid: Option<Zxid>,
    },
}

impl Message {
    /// A short name for traces and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Notification { .. } => "NOTIFICATION",
            Message::FollowerInfo { .. } => "FOLLOWERINFO",
            Message::LeaderInfo { .. } => "LEADERINFO",
            Message::AckEpoch { .. } => "ACKEPOCH",
            Message::Trunc { .. } => "TRUNC",
            Message::Diff { .. } => "DIFF",
            Message::Snap { .. } => "SNAP",
            Message::NewLeader { .. } => "NEWLEADER",
            Message::AckNewLeader { .. } => "ACK_NEWLEADER",
            Message::UpToDate { .. } => "UPTODATE",
            Message::Proposal { .. } => "PROPOSAL",
            Message::Ack { .. } => "ACK",
            Message::Commit { .. } => "COMMIT",
            Message::Heartbeat { .. } => "PING",
            Message::HeartbeatAck { .. } => "PING_ACK",
            Message::ReadRequest { .. } => "READ_REQUEST",
            Message::ReadResponse { .. } => "READ_RESPONSE",
        }
    }
}
