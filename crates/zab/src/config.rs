//! Tunables of the core (all time bounds in ticks) and the ensemble membership.
//! The server maps ticks to wall time (about 10-50 ms per tick).

use serde::{Deserialize, Serialize};

use crate::error::ZabError;
use crate::message::NodeId;

/// Bounds and timeouts of the protocol. Every field names its unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Leader -> follower heartbeat period.
    pub heartbeat_interval_ticks: u64,
    /// A follower that hears nothing from its leader for this long (plus a
    /// random extra of up to the same amount, drawn from the seed) returns to
    /// election.
    pub election_timeout_ticks: u64,
    /// After a quorum agrees on a vote, wait this long for a better vote
    /// before deciding (FastLeaderElection's finalize wait).
    pub finalize_wait_ticks: u64,
    /// While looking, re-send our notification this often (lost messages).
    pub notification_resend_ticks: u64,
    /// A leader that has not heard from a quorum within this many ticks steps down.
    pub step_down_ticks: u64,
    /// Discovery plus synchronization must complete within this many ticks
    /// (ZooKeeper's initLimit), or the member returns to election.
    pub sync_timeout_ticks: u64,
    /// A read barrier not confirmed within this many ticks fails.
    pub read_timeout_ticks: u64,
    /// Most entries proposed and not yet committed.
    pub max_in_flight_entries: u64,
    /// Most entries in one `propose` call (one PROPOSAL message, one persist).
    pub max_batch_entries: usize,
    /// Most bytes in one `propose` call, counted as the sum of
    /// [`Entry::wire_bytes`](crate::Entry::wire_bytes): a PROPOSAL message
    /// carries this much plus a few bytes of its own.
    pub max_batch_bytes: usize,
    /// Most entries in one DIFF message during synchronization.
    pub max_sync_batch_entries: usize,
    /// Most bytes (as for `max_batch_bytes`) in one DIFF message; a single
    /// entry goes alone whatever its size, so this must be at least
    /// `max_batch_bytes`.
    pub max_sync_batch_bytes: usize,
    /// A follower missing more entries than this gets a SNAP instead of a DIFF.
    pub max_diff_entries: usize,
    /// A follower missing more bytes (as for `max_batch_bytes`) than this
    /// gets a SNAP instead of a DIFF: the leader holds a whole DIFF in
    /// memory and queues it on the link at once.
    pub max_diff_bytes: usize,
    /// Most read barriers pending at once on this member.
    pub max_pending_reads: usize,
    /// When the zxid counter of an epoch would pass this value, the leader
    /// stops accepting proposals and steps down so a new epoch starts.
    pub epoch_counter_limit: u32,
    /// Test-only protocol mutations, to prove the simulator catches bugs.
    #[cfg(test)]
    pub(crate) mutation: Option<crate::core::Mutation>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            heartbeat_interval_ticks: 2,
            election_timeout_ticks: 10,
            finalize_wait_ticks: 2,
            notification_resend_ticks: 4,
            step_down_ticks: 10,
            sync_timeout_ticks: 40,
            read_timeout_ticks: 20,
            max_in_flight_entries: 10_000,
            max_batch_entries: 1_000,
            max_batch_bytes: 8 << 20,
            max_sync_batch_entries: 1_000,
            max_sync_batch_bytes: 8 << 20,
            max_diff_entries: 100_000,
            max_diff_bytes: 128 << 20,
            max_pending_reads: 10_000,
            epoch_counter_limit: 0xFFFF_F000,
            #[cfg(test)]
            mutation: None,
        }
    }
}

impl Config {
    /// Checks that every bound is usable.
    pub fn validate(&self) -> Result<(), ZabError> {
        let positive = [
            ("heartbeat_interval_ticks", self.heartbeat_interval_ticks),
            ("election_timeout_ticks", self.election_timeout_ticks),
            ("notification_resend_ticks", self.notification_resend_ticks),
            ("step_down_ticks", self.step_down_ticks),
            ("sync_timeout_ticks", self.sync_timeout_ticks),
            ("read_timeout_ticks", self.read_timeout_ticks),
            ("max_in_flight_entries", self.max_in_flight_entries),
            ("max_batch_entries", self.max_batch_entries as u64),
            ("max_batch_bytes", self.max_batch_bytes as u64),
            ("max_sync_batch_entries", self.max_sync_batch_entries as u64),
            ("max_sync_batch_bytes", self.max_sync_batch_bytes as u64),
            ("max_diff_entries", self.max_diff_entries as u64),
            ("max_diff_bytes", self.max_diff_bytes as u64),
            ("max_pending_reads", self.max_pending_reads as u64),
            ("epoch_counter_limit", u64::from(self.epoch_counter_limit)),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(ZabError::Config(format!("{name} must be > 0")));
            }
        }
        if self.heartbeat_interval_ticks >= self.election_timeout_ticks {
            return Err(ZabError::Config(
                "heartbeat_interval_ticks must be < election_timeout_ticks".into(),
            ));
        }
        if self.max_sync_batch_bytes < self.max_batch_bytes {
            return Err(ZabError::Config(
                "max_sync_batch_bytes must be >= max_batch_bytes (an entry a batch can carry must fit a DIFF message)".into(),
            ));
        }
        if self.max_diff_bytes < self.max_sync_batch_bytes {
            return Err(ZabError::Config(
                "max_diff_bytes must be >= max_sync_batch_bytes".into(),
            ));
        }
        if self.heartbeat_interval_ticks >= self.step_down_ticks {
            return Err(ZabError::Config(
                "heartbeat_interval_ticks must be < step_down_ticks".into(),
            ));
        }
        Ok(())
    }
}

/// Whether a member votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberKind {
    /// Votes in elections and counts toward quorums.
    Participant,
    /// Receives committed state, never votes. Reserved: not implemented yet,
    /// `Bootstrap::validate` rejects it.
    Observer,
}

/// One member of the ensemble.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The member's id.
    pub id: NodeId,
    /// Participant or observer.
    pub kind: MemberKind,
}

/// What a member starts from: identity, membership, and its persisted state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// This member's id.
    pub id: NodeId,
    /// Every member, this one included.
    pub members: Vec<Member>,
    /// Persisted acceptedEpoch (0 on a fresh disk).
    pub accepted_epoch: u32,
    /// Persisted currentEpoch (0 on a fresh disk).
    pub current_epoch: u32,
    /// The zxid the state machine has applied (committed by definition).
    pub applied_zxid: crate::Zxid,
    /// Seed for the randomized timeouts. Use a different one per member.
    pub seed: u64,
}

impl Bootstrap {
    /// Checks membership and persisted epochs.
    pub fn validate(&self) -> Result<(), ZabError> {
        let mut ids: Vec<NodeId> = self.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.members.len() {
            return Err(ZabError::Config("duplicate member id".into()));
        }
        if !ids.contains(&self.id) {
            return Err(ZabError::Config(format!(
                "member {} is not in the member list",
                self.id
            )));
        }
        if self.members.iter().any(|m| m.kind == MemberKind::Observer) {
            return Err(ZabError::Config("observers are not supported yet".into()));
        }
        if self.current_epoch > self.accepted_epoch {
            return Err(ZabError::Config(
                "currentEpoch is greater than acceptedEpoch".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_validates_and_zero_bounds_do_not() {
        assert!(Config::default().validate().is_ok());
        let c = Config {
            step_down_ticks: 0,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            heartbeat_interval_ticks: 10,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            max_sync_batch_bytes: Config::default().max_batch_bytes - 1,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            max_diff_bytes: Config::default().max_sync_batch_bytes - 1,
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn bootstrap_rejects_unknown_self_duplicates_and_observers() {
        let p = |id| Member {
            id,
            kind: MemberKind::Participant,
        };
        let mut b = Bootstrap {
            id: 1,
            members: vec![p(1), p(2)],
            accepted_epoch: 0,
            current_epoch: 0,
            applied_zxid: crate::Zxid::ZERO,
            seed: 0,
        };
        assert!(b.validate().is_ok());
        b.id = 3;
        assert!(b.validate().is_err());
        b.id = 1;
        b.members.push(p(2));
        assert!(b.validate().is_err());
        b.members.pop();
        b.members.push(Member {
            id: 4,
            kind: MemberKind::Observer,
        });
        assert!(b.validate().is_err());
    }
}
