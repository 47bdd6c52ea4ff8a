//! The store's public vocabulary: log entries (what is replicated), their
//! results (what apply computes, identically on every member), znode stats,
//! and the change events that feed watches.
//!
//! An [`Entry`] is what the leader stamps and the log carries. It is encoded
//! with [`Entry::encode`] into the opaque payload that `keeper-zab` replicates;
//! every member decodes it and calls `Store::apply(zxid, &entry)`.

use bytes::Bytes;
use keeper_zab::Zxid;
use serde::{Deserialize, Serialize};

/// A session id. Session ids are the zxid of the `CreateSession` entry that
/// made them, so every member derives the same id. `0` means "no session".
pub type SessionId = u64;

/// How a znode lives and dies (ZooKeeper's `CreateMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeMode {
    Persistent,
    Ephemeral,
    PersistentSequential,
    EphemeralSequential,
    /// Deleted by the server once it has had a child and has none left.
    Container,
    /// Deleted by the server when it has no children and no change for `ttl_ms`.
    Ttl,
    TtlSequential,
}

impl NodeMode {
    pub fn is_ephemeral(self) -> bool {
        matches!(self, NodeMode::Ephemeral | NodeMode::EphemeralSequential)
    }
    pub fn is_sequential(self) -> bool {
        matches!(
            self,
            NodeMode::PersistentSequential
                | NodeMode::EphemeralSequential
                | NodeMode::TtlSequential
        )
    }
    pub fn is_ttl(self) -> bool {
        matches!(self, NodeMode::Ttl | NodeMode::TtlSequential)
    }
}

/// ZooKeeper's Stat, all 11 fields, with ZooKeeper's semantics.
/// Times are milliseconds since the Unix epoch, taken from the entry's
/// leader-stamped `time_ms` (never from a local clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stat {
    pub czxid: u64,
    pub mzxid: u64,
    pub pzxid: u64,
    pub ctime: u64,
    pub mtime: u64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: u64,
    pub data_length: u32,
    pub num_children: u32,
}

/// One operation on the tree. A single op and each element of a multi.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `path` is the requested path; for sequential modes the store appends
    /// the parent's 10-digit counter. `session` must be non-zero for
    /// ephemeral modes. `ttl_ms` is required for ttl modes and refused for others.
    Create {
        path: String,
        data: Bytes,
        mode: NodeMode,
        session: SessionId,
        ttl_ms: Option<u64>,
    },
    /// `version == -1` means any version.
    Set {
        path: String,
        data: Bytes,
        version: i32,
    },
    /// `version == -1` means any version.
    Delete { path: String, version: i32 },
    /// Succeeds iff the node exists and (version == -1 or matches).
    Check { path: String, version: i32 },
}

/// A node the server believes is due for automatic deletion (an empty
/// container, or an expired ttl node). Apply re-checks the condition
/// deterministically with the entry's time, so a stale candidate is a no-op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReapCandidate {
    pub path: String,
    /// The candidate's czxid when it was found: a re-created node is not reaped.
    pub czxid: u64,
}

/// What the log carries: one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Txn {
    Op(Op),
    /// All ops apply or none do.
    Multi(Vec<Op>),
    /// The new session's id is the zxid of this entry.
    CreateSession {
        timeout_ms: u64,
    },
    /// Close (or expire) a session; deletes its ephemerals in the same batch.
    CloseSession {
        id: SessionId,
    },
    /// Deletes those candidates that are still due.
    Reap {
        candidates: Vec<ReapCandidate>,
    },
    /// Does nothing (a new leader's first entry, barriers, tests).
    Noop,
    /// `txn` (an `Op` or a `Multi`) guarded by a fence: it applies only if
    /// `fence.token` is the czxid of the current holder of lock
    /// `fence.lock` (see [`lock_holder`](crate::Store::lock_holder)),
    /// otherwise the outcome is `Fenced` and nothing changes. Checked at
    /// apply time, so no write of a deposed holder can slip in. (Appended
    /// last: postcard numbers variants, so older logs still decode.)
    Fenced {
        fence: Fence,
        txn: Box<Txn>,
    },
    /// [`Txn::Fenced`] for any recipe: `txn` applies only if `fence.token`
    /// is the czxid of the lowest contender of `scope`'s `fence.lock`
    /// (a lock's holder, an election's leader); otherwise `Fenced`.
    /// (Appended last, like `Fenced`; locks keep using `Fenced`.)
    FencedBy {
        scope: FenceScope,
        fence: Fence,
        txn: Box<Txn>,
    },
}

/// What a fence names: a lock or an election (both are a directory of
/// ephemeral sequential contenders whose lowest one holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceScope {
    Lock,
    Election,
}

impl FenceScope {
    /// The directory of `name` in this scope ([`lock_dir`], [`election_dir`]).
    pub fn dir(self, name: &str, max_path_bytes: usize) -> Result<String, TxnError> {
        match self {
            FenceScope::Lock => lock_dir(name, max_path_bytes),
            FenceScope::Election => election_dir(name, max_path_bytes),
        }
    }
}

/// Where the contender nodes of every lock live: lock `name` is the
/// directory `/.keeper/locks/{name}`, its contenders are its children named
/// by a 10-digit sequence number, and the lowest one holds the lock.
pub const LOCKS_PREFIX: &str = "/.keeper/locks";

/// Where the contenders of every election live (`/.keeper/elections/{name}`,
/// the lowest contender leads; its data is the leader's value).
pub const ELECTIONS_PREFIX: &str = "/.keeper/elections";

/// Where the contenders of every semaphore live (`/.keeper/semaphores/{name}`;
/// the directory's data is the semaphore's `permits_max`).
pub const SEMAPHORES_PREFIX: &str = "/.keeper/semaphores";

/// A fence: the write applies only while `token` is the czxid of the node
/// holding lock `lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub lock: String,
    pub token: u64,
}

/// The directory of lock `name`, or why `name` is not a lock name (empty,
/// contains `/`, or makes an invalid path).
pub fn lock_dir(name: &str, max_path_bytes: usize) -> Result<String, TxnError> {
    recipe_dir(LOCKS_PREFIX, "lock", name, max_path_bytes)
}

/// The directory of election `name` (see [`lock_dir`]).
pub fn election_dir(name: &str, max_path_bytes: usize) -> Result<String, TxnError> {
    recipe_dir(ELECTIONS_PREFIX, "election", name, max_path_bytes)
}

/// The directory of semaphore `name` (see [`lock_dir`]).
pub fn semaphore_dir(name: &str, max_path_bytes: usize) -> Result<String, TxnError> {
    recipe_dir(SEMAPHORES_PREFIX, "semaphore", name, max_path_bytes)
}

fn recipe_dir(
    prefix: &str,
    what: &str,
    name: &str,
    max_path_bytes: usize,
) -> Result<String, TxnError> {
    if name.is_empty() || name.contains('/') {
        return Err(TxnError::BadArguments {
            message: format!("{what} name {name:?} must be one non-empty path segment"),
        });
    }
    let dir = format!("{prefix}/{name}");
    crate::path::validate_path(&format!("{dir}/0000000000"), max_path_bytes)?;
    Ok(dir)
}

/// True for a contender node name: exactly 10 ASCII digits (the suffix a
/// sequential create of `{dir}/` gets), so bytewise order is sequence order.
pub fn is_contender_name(name: &str) -> bool {
    name.len() == 10 && name.bytes().all(|b| b.is_ascii_digit())
}

impl Txn {
    /// Whether applying this txn reads or changes the session and
    /// ephemeral indexes in RocksDB (rather than only the tree): such an
    /// entry is applied on its own, never batched with others.
    pub fn reads_session_indexes(&self) -> bool {
        // A fence reads the lock's contenders from the applied tree, so
        // the entries before it must be written first.
        matches!(
            self,
            Txn::CreateSession { .. }
                | Txn::CloseSession { .. }
                | Txn::Fenced { .. }
                | Txn::FencedBy { .. }
        )
    }
}

/// A replicated log entry: a transaction plus the leader's timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Milliseconds since the Unix epoch, stamped by the leader.
    pub time_ms: u64,
    pub txn: Txn,
}

impl Entry {
    /// The entry's bytes as the log and ZAB carry them (postcard).
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain structs, enums, strings and bytes into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_else(|e| unreachable!("encoding an entry: {e}"))
    }

    /// Decodes bytes made by [`Entry::encode`]; anything else is `Corrupt`.
    pub fn decode(bytes: &[u8]) -> Result<Entry, crate::StoreError> {
        postcard::from_bytes(bytes).map_err(|e| crate::StoreError::Corrupt {
            what: "log entry",
            detail: e.to_string(),
        })
    }
}

/// The deterministic outcome of one op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Created { path: String, stat: Stat },
    Set { path: String, stat: Stat },
    Deleted { path: String },
    Checked { path: String },
}

/// The deterministic outcome of applying an entry: identical on every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOutcome {
    Op(Result<OpResult, TxnError>),
    /// On failure: the index of the first failing op and its error; nothing applied.
    Multi(Result<Vec<OpResult>, MultiError>),
    SessionCreated {
        id: SessionId,
        timeout_ms: u64,
    },
    /// `Err(SessionExpired)` if the session did not exist.
    SessionClosed(Result<Vec<String>, TxnError>),
    Reaped {
        paths: Vec<String>,
    },
    Noop,
}

/// A failed multi: which op failed and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiError {
    pub index: usize,
    pub error: TxnError,
}

/// Errors that are part of a transaction's deterministic result (never fatal).
/// Named after ZooKeeper's codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TxnError {
    #[error("node does not exist: {path}")]
    NoNode { path: String },
    #[error("node already exists: {path}")]
    NodeExists { path: String },
    #[error("version mismatch at {path}: expected {expected}, actual {actual}")]
    BadVersion {
        path: String,
        expected: i32,
        actual: i32,
    },
    #[error("node has children: {path}")]
    NotEmpty { path: String },
    #[error("ephemeral nodes may not have children: {path}")]
    NoChildrenForEphemerals { path: String },
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("bad arguments: {message}")]
    BadArguments { message: String },
    #[error("session {id} does not exist or has expired")]
    SessionExpired { id: SessionId },
    #[error("data is {size} bytes, above the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// A fenced write whose token is not the current holder's of the lock
    /// (or the leader's of the election) named `lock`. `holder` is the
    /// current holder's token (`None`: nobody holds it).
    #[error("fenced: token {token} is not the current holder's of {lock:?} (holder: {holder:?})")]
    Fenced {
        lock: String,
        token: u64,
        holder: Option<u64>,
    },
}

/// What changed in the tree, for watches (ZooKeeper's event types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Created,
    Deleted,
    DataChanged,
    ChildrenChanged,
}

/// One change made by an applied entry, in the order apply made them.
/// Every member computes the same list for the same entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    pub zxid: Zxid,
    pub path: String,
    pub kind: ChangeKind,
    /// The node's stat right after this change: the new node's (`Created`),
    /// the node's (`DataChanged`), the parent's (`ChildrenChanged`); `None`
    /// for `Deleted`.
    pub stat: Option<Stat>,
    /// The node's data right after this change (`Created`, `DataChanged`);
    /// `None` otherwise.
    pub data: Option<Bytes>,
}

/// Everything `Store::apply` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub zxid: Zxid,
    pub outcome: TxnOutcome,
    pub events: Vec<ChangeEvent>,
}

/// A page of children (names only, sorted bytewise) and the parent's stat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildrenPage {
    pub children: Vec<String>,
    pub stat: Stat,
    /// True if more children follow the last one returned.
    pub more: bool,
}

/// A session as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: SessionId,
    pub timeout_ms: u64,
}
