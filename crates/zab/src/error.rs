//! The crate's one error type, returned at the API boundary of [`Core`](crate::Core).

use crate::message::NodeId;

/// Why the core refused an input. `Log` is fatal (storage is broken: stop the
/// member and restart it from disk); the others are operating conditions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZabError {
    /// Only an established leader accepts proposals; `leader` is a hint.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The leader this member follows, if known.
        leader: Option<NodeId>,
    },
    /// Too many proposals are in flight (uncommitted); retry later.
    #[error("too many proposals in flight ({in_flight}, max {max})")]
    Backpressure {
        /// Entries currently proposed and not committed.
        in_flight: u64,
        /// The configured bound.
        max: u64,
    },
    /// The batch is empty or larger than `max_batch_entries`.
    #[error("batch of {len} entries is outside 1..={max}")]
    BadBatch {
        /// Entries offered.
        len: usize,
        /// The configured bound.
        max: usize,
    },
    /// The batch's entries add up to more than `max_batch_bytes`
    /// (counted as `Entry::wire_bytes`).
    #[error("batch of {bytes} bytes is larger than {max}")]
    BatchTooLarge {
        /// Bytes offered.
        bytes: usize,
        /// The configured bound.
        max: usize,
    },
    /// The epoch's zxid counter is exhausted; the leader steps down so that a
    /// new epoch starts. Retry on the next leader.
    #[error("zxid counter of epoch {epoch} exhausted; a new epoch is being elected")]
    EpochExhausted {
        /// The exhausted epoch.
        epoch: u32,
    },
    /// The configuration or bootstrap state is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Reading the log failed. Fatal.
    #[error("log read failed: {0}")]
    Log(#[from] LogError),
}

/// A failure of the [`LogReader`](crate::LogReader).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LogError(pub String);
