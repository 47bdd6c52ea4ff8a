//! The write path's front door: the [`Proposer`] trait.
//!
//! Every change to the tree (HTTP writes, session create/close, session expiry,
//! the reaper) is a [`Txn`] handed to `Proposer::propose`. There is exactly
//! one write path: an implementation orders the txn, makes it durable (on a
//! quorum), and hands the committed entry to the shared
//! [`Applier`](crate::applier::Applier), which applies it to the store and
//! answers the proposer's caller.
//!
//! Implementations: [`StandaloneProposer`](crate::standalone::StandaloneProposer)
//! (one member: a group-committing log writer) and [`ZabProposer`](crate::zab_driver::ZabProposer) (a cluster member).
//!
//! # Contract (to ensure correctness)
//! - `propose` returns `Ok(applied)` only after the entry is durable on a
//!   quorum (standalone: fsynced locally) AND applied on THIS member, so that
//!   a read on this member right after sees the write, and `applied.zxid` is
//!   at most this member's applied zxid.
//! - Entries are applied in zxid order, each exactly once; the txn's
//!   deterministic result (a version conflict included) is in
//!   `applied.outcome`, never in `Err`.
//! - `Err(Unavailable)` means the txn was NOT committed, or its fate is
//!   unknown (leader lost after sending): callers report 503 and may retry.
//!   `Err(Storage)` means this member's disk failed: the member is broken.
//! - `read_barrier` returns a zxid `z` such that every txn committed (anywhere)
//!   before the call has zxid <= `z`, after this member has applied up to `z`.
//! - Implementations bound the number of txns waiting (`max_inflight_proposals`):
//!   `propose` waits for room instead of queueing without limit.

use futures::future::BoxFuture;
use keeper_store::{Applied, Txn};
use keeper_zab::Zxid;
use serde::Serialize;

/// Why a txn could not be committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// No leader, no quorum, or shutting down: not committed (or fate unknown).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// This member's storage failed; it cannot write or apply any more.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The txn is larger than any log entry may be (`max_batch_bytes`):
    /// not committed, and retrying cannot help.
    #[error("too large: {0}")]
    TooLarge(String),
}

/// The role of this member, as shown by `/v1/cluster`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Standalone,
    Leader,
    Follower,
    Looking,
    /// The member's replication stopped on a fatal error (storage broken):
    /// it serves nothing as replicated and is about to exit.
    Failed,
}

/// One member of the ensemble as `/v1/cluster` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    /// The member's role, when this member knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// A snapshot of this member's view of the ensemble (the `/v1/cluster` body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    pub id: u64,
    pub role: Role,
    pub leader: Option<u64>,
    pub epoch: u32,
    pub last_logged_zxid: u64,
    pub committed_zxid: u64,
    pub applied_zxid: u64,
    pub members: Vec<MemberStatus>,
}

impl ClusterStatus {
    /// True when this member can serve writes and linearizable reads now.
    pub fn has_leader(&self) -> bool {
        self.leader.is_some()
    }
}

/// The one write path. See the module docs for the contract.
///
/// Object-safe: the server holds an `Arc<dyn Proposer>`.
pub trait Proposer: Send + Sync + 'static {
    /// Orders, persists and commits `txn`, then waits until this member has
    /// applied it, and returns what apply computed.
    fn propose(&self, txn: Txn) -> BoxFuture<'_, Result<Applied, ProposeError>>;

    /// Waits until this member has applied everything committed before the
    /// call; returns the zxid it waited for.
    fn read_barrier(&self) -> BoxFuture<'_, Result<Zxid, ProposeError>>;

    /// This member's current view (role, leader, zxids, members).
    fn status(&self) -> ClusterStatus;

    /// True when this member owns session deadlines and the reaper: the
    /// standalone member, or the established leader of a cluster.
    fn is_leader(&self) -> bool {
        matches!(self.status().role, Role::Standalone | Role::Leader)
    }

    /// True once this member's write path stopped on a fatal error: writes,
    /// keepalives and readiness answer 503 Unavailable.
    fn failed(&self) -> bool {
        false
    }

    /// Confirms a keepalive for session `id` with the member that owns
    /// session deadlines: the leader touches the session, confirms its
    /// leadership with a quorum round that starts after the touch, and
    /// settles the verdict (see "The session contract" in
    /// `docs/ARCHITECTURE.md`). Resolves within the configured
    /// `keepalive_confirm_wait_ms`, `Unavailable` when not confirmed.
    ///
    /// `None`: this write path owns the deadlines itself (standalone), and
    /// the caller settles the keepalive against its own leases. The default.
    fn keepalive(
        &self,
        id: keeper_store::SessionId,
    ) -> Option<BoxFuture<'_, crate::sessions::KeepaliveVerdict>> {
        let _ = id;
        None
    }

    /// Encodes this write path's own metric families into the scrape (called at
    /// every `GET /metrics`; see [`crate::metrics`]).
    fn encode_metrics(
        &self,
        encoder: &mut crate::metrics::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let _ = encoder;
        Ok(())
    }
}
