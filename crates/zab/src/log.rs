//! The read-only view of the log that the core needs. The driver owns the log;
//! the core only reads it and asks for writes through actions.
//!
//! # To ensure correctness
//! The view must reflect every `Append`/`Truncate` action already executed and
//! every snapshot already installed, durable or not. Entries are retained
//! contiguously from `snapshot_zxid()` (exclusive) to `last_zxid()`.

use crate::error::LogError;
use crate::message::Entry;
use crate::Zxid;

/// What the core reads from the log: enough for election votes and for the
/// leader's DIFF / TRUNC / SNAP choice (ZooKeeper's `syncFollower`).
pub trait LogReader {
    /// The last entry's zxid, or `snapshot_zxid()` if no entry is retained.
    fn last_zxid(&self) -> Result<Zxid, LogError>;
    /// The zxid the retained log starts after: entries at or below it were
    /// compacted into a snapshot. `Zxid::ZERO` if nothing was compacted.
    fn snapshot_zxid(&self) -> Result<Zxid, LogError>;
    /// The first retained entry's zxid, if any.
    fn first_retained(&self) -> Result<Option<Zxid>, LogError>;
    /// The largest zxid `<= zxid` that is a retained entry or the snapshot
    /// point; `None` if `zxid < snapshot_zxid()`.
    fn floor(&self, zxid: Zxid) -> Result<Option<Zxid>, LogError>;
    /// Whether `zxid` is a retained entry.
    fn contains(&self, zxid: Zxid) -> Result<bool, LogError>;
    /// Retained entries with zxid `> after`, in order: at most
    /// `max_entries` of them, and no more than `max_bytes` of
    /// [`Entry::wire_bytes`] in all, except that the first entry is
    /// returned whatever its size. Errors if `after < snapshot_zxid()`
    /// (those entries are gone).
    fn entries_after(
        &self,
        after: Zxid,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogError>;
}
