//! `keeper-store`: the znode tree, the transaction log and sessions on RocksDB.
//!
//! Where it sits in the write path: the server's proposer gets an [`Entry`]
//! committed at a zxid (by the single-node log or by ZAB), then calls
//! [`Store::apply`], which computes the deterministic [`TxnOutcome`] and writes
//! the changed znodes together with `last_applied` in one RocksDB batch.
//!
//! CONTRACT SKELETON written by the lead: the signatures below are what the
//! server codes against. Bodies are filled in by the store work.

mod types;

pub use types::*;

use keeper_zab::Zxid;
use std::path::Path;

/// Fatal storage errors (disk, corruption). Never part of a txn's result.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(String),
    #[error("corrupt record in {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Bounds and options of the store. Every bound has a name and a default.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Largest znode data accepted, in bytes (default 1 MiB).
    pub max_data_bytes: usize,
    /// Longest path accepted, in bytes (default 4096).
    pub max_path_bytes: usize,
    /// Largest page of children returned by one listing (default 10_000).
    pub max_children_page: usize,
    /// fsync the log on append (default true; tests of pure logic may turn it off).
    pub sync_log: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_data_bytes: 1 << 20,
            max_path_bytes: 4096,
            max_children_page: 10_000,
            sync_log: true,
        }
    }
}

/// Durable ZAB metadata (see docs/zab.md): persisted with fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZabMeta {
    pub accepted_epoch: u32,
    pub current_epoch: u32,
}

/// One member's RocksDB: column families `log`, `nodes`, `sessions`, `meta`
/// (and whatever indexes the implementation needs). Cheap to share behind an
/// `Arc`; all methods take `&self` and are safe to call from many threads,
/// except that `apply` calls must be serialized by the caller (one applier).
pub struct Store {
    _private: (),
}

#[allow(unused_variables, clippy::todo)]
impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Store, StoreError> {
        todo!()
    }

    // ---- transaction log -------------------------------------------------

    /// Appends encoded entries (ascending zxids, above `last_logged`) in ONE
    /// write batch, fsynced when `sync_log` (group commit: the caller passes
    /// everything that is waiting). Returns after the data is durable.
    pub fn append_log(&self, entries: &[(Zxid, Vec<u8>)]) -> Result<(), StoreError> {
        todo!()
    }
    /// Highest zxid in the log (or the snapshot's zxid if the log is empty).
    pub fn last_logged(&self) -> Zxid {
        todo!()
    }
    /// Lowest zxid still in the log, if any (older ones are compacted away).
    pub fn first_logged(&self) -> Option<Zxid> {
        todo!()
    }
    /// Log entries with zxid > `after`, ascending, at most `limit` of them.
    pub fn read_log(&self, after: Zxid, limit: usize) -> Result<Vec<(Zxid, Vec<u8>)>, StoreError> {
        todo!()
    }
    /// Removes every log entry with zxid > `zxid` (ZAB TRUNC), durably.
    pub fn truncate_log_after(&self, zxid: Zxid) -> Result<(), StoreError> {
        todo!()
    }
    /// Removes log entries with zxid < `zxid` (compaction behind a snapshot).
    pub fn compact_log_before(&self, zxid: Zxid) -> Result<(), StoreError> {
        todo!()
    }

    // ---- ZAB metadata ----------------------------------------------------

    pub fn zab_meta(&self) -> ZabMeta {
        todo!()
    }
    /// Persists the epochs with fsync before returning.
    pub fn set_zab_meta(&self, meta: ZabMeta) -> Result<(), StoreError> {
        todo!()
    }

    // ---- apply (the deterministic state machine) -------------------------

    /// Applies a committed entry. `zxid` must be above `last_applied`.
    /// Deterministic: same tree + same (zxid, entry) => same outcome on every
    /// member. Writes all changed keys and `last_applied = zxid` in one batch.
    pub fn apply(&self, zxid: Zxid, entry: &Entry) -> Result<Applied, StoreError> {
        todo!()
    }
    /// The zxid of the last applied entry.
    pub fn last_applied(&self) -> Zxid {
        todo!()
    }

    // ---- reads -----------------------------------------------------------

    /// Data and stat of `path`, or `Ok(None)` if it does not exist.
    /// Path validity is checked by [`validate_path`] first.
    pub fn get(&self, path: &str) -> Result<Option<(bytes::Bytes, Stat)>, StoreError> {
        todo!()
    }
    /// A page of children of `path` (a prefix scan), starting after the child
    /// name `after`, at most `limit` (capped by `max_children_page`).
    /// `Ok(None)` if `path` does not exist.
    pub fn children(
        &self,
        path: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<ChildrenPage>, StoreError> {
        todo!()
    }
    /// All live sessions (used by the leader to rebuild expiry tracking).
    pub fn sessions(&self) -> Result<Vec<SessionInfo>, StoreError> {
        todo!()
    }
    /// Containers and ttl nodes that are due at `now_ms`, at most `limit`.
    /// Must not scan the whole tree (keep an index).
    pub fn reap_candidates(&self, now_ms: u64, limit: usize) -> Result<Vec<ReapCandidate>, StoreError> {
        todo!()
    }
    /// A checksum over the whole tree and sessions (for comparing members).
    pub fn tree_digest(&self) -> Result<u64, StoreError> {
        todo!()
    }

    // ---- snapshots ------------------------------------------------------

    /// Writes a RocksDB checkpoint of the whole store into `dir` (which must not exist).
    pub fn checkpoint(&self, dir: &Path) -> Result<Zxid, StoreError> {
        todo!()
    }
}

/// Checks a path against DESIGN.md's rules: absolute, `/`-separated, no empty,
/// `.` or `..` segments, no trailing `/` (except root), no NUL or control
/// characters, at most `max_bytes` long.
#[allow(unused_variables, clippy::todo)]
pub fn validate_path(path: &str, max_bytes: usize) -> Result<(), TxnError> {
    todo!()
}
